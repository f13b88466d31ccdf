"""/v1/account/compliance (the account's sending rules) and /v1/operator/accounts/{id}/compliance (what only
platform staff may change: free text, the opt-out wording rule). Thin routes over compliance.sending_rules."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hongyan.api.body import openapi_body
from hongyan.api.deps import AdminAccount, DbDep, OperatorAccount, ReadAccount, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.compliance import sending_rules
from hongyan.core.errors import InvalidRequest

router = APIRouter(tags=["compliance"])


class RulesUpdate(BaseModel):
    """Any subset of the fields; each is checked (see docs/compliance.md)."""

    model_config = ConfigDict(extra="allow")
    signature_position: str | None = Field(None, description="prefix (default) or suffix")
    opt_out_text_mode: str | None = Field(None, description="append (default) or reject")
    opt_out_text: str | None = Field(None, description="Own opt-out wording, e.g. 拒收请回复R; null: the default")
    strict_consent: bool | None = Field(None, description="Marketing only to contacts with a consent record")
    marketing_daily_cap: int | None = Field(None, description="Marketing messages per number and day; null: none")


class StaffRulesUpdate(BaseModel):
    model_config = ConfigDict(extra="allow")
    free_text_allowed: bool | None = Field(None, description="false: the account may only send approved templates")
    opt_out_text_mode: str | None = Field(None, description="append, reject or off")


async def _object(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise InvalidRequest("invalid_json", "The body is not valid JSON.", field=None) from exc
    if not isinstance(data, dict) or not data:
        raise InvalidRequest("invalid_body", "Send a JSON object with the fields to change.", field=None)
    return data


@router.get("/v1/account/compliance", summary="The account's sending rules, verification status and platform limits")
async def get_rules(db: DbDep, settings: SettingsDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        v = await sending_rules.view(session, ctx.account_id)
    return JsonResponse(sending_rules.rules_json(v, settings))


@router.patch("/v1/account/compliance", summary="Change the account's sending rules",
              openapi_extra=openapi_body(RulesUpdate, {"opt_out_text": "拒收请回复R", "marketing_daily_cap": 2}))
async def patch_rules(request: Request, db: DbDep, settings: SettingsDep, ctx: AdminAccount) -> JsonResponse:
    data = await _object(request)
    async with db.write() as session:
        await sending_rules.change(session, account_id=ctx.account_id, actor=actor_for_api(ctx, request), data=data)
        v = await sending_rules.view(session, ctx.account_id)
    return JsonResponse(sending_rules.rules_json(v, settings))


@router.patch("/v1/operator/accounts/{account_id}/compliance", tags=["operator: compliance"],
              summary="Staff-only sending rules of an account: free text, the opt-out wording rule",
              openapi_extra=openapi_body(StaffRulesUpdate, {"free_text_allowed": False}))
async def patch_staff_rules(account_id: str, request: Request, db: DbDep, settings: SettingsDep,
                            ctx: OperatorAccount) -> JsonResponse:
    data = await _object(request)
    async with db.write() as session:
        await sending_rules.view(session, account_id)  # 404 for an unknown account
        await sending_rules.change(session, account_id=account_id, actor=actor_for_api(ctx, request), data=data,
                                   staff=True)
        v = await sending_rules.view(session, account_id)
    return JsonResponse(sending_rules.rules_json(v, settings))
