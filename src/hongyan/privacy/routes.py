"""/v1/privacy (export and erase everything about one phone number) and /v1/account/privacy (retention).

All admin scope: an export is personal data, an erasure cannot be undone. Thin routes over privacy.service
and privacy.retention."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import AdminAccount, DbDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.core.errors import Unprocessable
from hongyan.privacy import retention, service

router = APIRouter(tags=["privacy"])


class PrivacyExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone_number: Annotated[StrictStr, Field(max_length=32, description="E.164, or national with the account's region.")]


class PrivacyErasureCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone_number: Annotated[StrictStr, Field(max_length=32, description="E.164, or national with the account's region.")]
    confirm: StrictBool = Field(description="Must be true: the erasure cannot be undone.")


class AccountPrivacyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_days: StrictInt | None = Field(
        None, ge=retention.MIN_DAYS, le=retention.MAX_DAYS,
        description="Purge message content and numbers this many days after sending; null keeps them.")


def _confirmed(confirm: bool) -> None:
    if not confirm:
        raise Unprocessable("confirmation_required", "Set confirm to true: an erasure cannot be undone.",
                            field="confirm")


@router.post("/v1/privacy/exports", summary="Everything this account stores about one phone number (JSON)",
             openapi_extra=openapi_body(PrivacyExportCreate, {"phone_number": "+8613800138000"}))
async def export_number(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, PrivacyExportCreate)
    e164 = service.parse_number(data.phone_number, ctx.default_region)
    async with db.read() as session:
        document = await service.export_number(session, account_id=ctx.account_id, e164=e164)
    return JsonResponse(document)


@router.post("/v1/privacy/erasures", summary="Erase one phone number and its message content from this account",
             openapi_extra=openapi_body(PrivacyErasureCreate, {"phone_number": "+8613800138000", "confirm": True}))
async def erase_number(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, PrivacyErasureCreate)
    e164 = service.parse_number(data.phone_number, ctx.default_region)
    _confirmed(data.confirm)
    async with db.write() as session:
        counts = await service.erase_number(session, account_id=ctx.account_id, e164=e164,
                                            actor=actor_for_api(ctx, request))
    return JsonResponse({"erased": counts})


@router.get("/v1/account/privacy", summary="The account's retention period")
async def get_privacy(db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        days = await retention.get_retention(session, account_id=ctx.account_id)
    return JsonResponse({"retention_days": days})


@router.patch("/v1/account/privacy", summary="Change the retention period (null: keep content)",
              openapi_extra=openapi_body(AccountPrivacyUpdate, {"retention_days": 90}))
async def update_privacy(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, AccountPrivacyUpdate)
    async with db.write() as session:
        if "retention_days" in data.model_fields_set:
            await retention.set_retention(session, account_id=ctx.account_id, days=data.retention_days,
                                          actor=actor_for_api(ctx, request))
        days = await retention.get_retention(session, account_id=ctx.account_id)
    return JsonResponse({"retention_days": days})
