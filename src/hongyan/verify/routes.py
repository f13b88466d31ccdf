"""/v1/verify: start a verification, check a code, resend, cancel, get, list. Thin: parse, call, render."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Query, Request

from hongyan.accounts.keys import AccountContext
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.client import client_ip
from hongyan.api.deps import DbDep, ReadAccount, SendAccount, SettingsDep, publisher
from hongyan.api.responses import JsonResponse
from hongyan.core.clock import utcnow
from hongyan.core.errors import Unprocessable
from hongyan.db.engine import Database
from hongyan.verify import check as checking
from hongyan.verify import service
from hongyan.verify.events import verification_json
from hongyan.verify.schemas import (
    VerificationCheck,
    VerificationCreate,
    VerificationPublic,
    VerificationsPublic,
)

router = APIRouter(prefix="/v1/verify", tags=["verify"])
ONE = {
    "model": VerificationPublic,
    "description": "The verification (never its code; `sandbox_code` for test keys)",
}


async def _caller(
    request: Request, db: Database, ctx: AccountContext, device_ip: str | None = None
) -> service.Caller:
    if device_ip is not None:
        try:
            device_ip = str(ipaddress.ip_address(device_ip.strip()))
        except ValueError:
            raise Unprocessable(
                "invalid_value", "device_ip is an IPv4 or IPv6 address.", field="device_ip"
            ) from None
    return service.Caller(
        account_id=ctx.account_id,
        api_key_id=ctx.key_id,
        client_ip=device_ip or client_ip(request),
        sandbox=await service.is_test_key(db, ctx.key_id),
    )


@router.post(
    "",
    status_code=201,
    summary="Send a verification code to a number",
    responses={201: {"model": VerificationPublic, "description": "Started: the code is on its way"}},
    openapi_extra=openapi_body(
        VerificationCreate,
        {"to": "+8613800138000", "code_length": 6, "ttl": 300, "channel": "sms", "locale": "zh-CN"},
    ),
)
async def start(request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, VerificationCreate)
    caller = await _caller(request, db, ctx, data.device_ip)
    sent = await service.start(
        db,
        settings,
        caller,
        to=data.to,
        template_id=data.template,
        code_length=data.code_length,
        ttl_s=data.ttl,
        channel=data.channel,
        locale=data.locale,
        publisher=publisher(request.app),
    )
    return JsonResponse(
        verification_json(sent.verification, utcnow(), sandbox_code=sent.sandbox_code), status_code=201
    )


@router.get(
    "",
    summary="Verifications, newest first (cursor pagination)",
    responses={200: {"model": VerificationsPublic, "description": "A page of verifications"}},
)
async def list_verifications(
    db: DbDep,
    settings: SettingsDep,
    ctx: ReadAccount,
    status: Annotated[
        str | None, Query(description="pending, approved, expired, canceled or failed.")
    ] = None,
    to: Annotated[str | None, Query(max_length=40, description="An exact number.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=40, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JsonResponse:
    async with db.read() as session:
        rows = await service.list_verifications(
            session,
            settings,
            account_id=ctx.account_id,
            limit=limit + 1,
            before=cursor,
            status=status,
            to=to,
            region=ctx.default_region,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    now = utcnow()
    return JsonResponse(
        {
            "data": [verification_json(v, now) for v in rows],
            "has_more": more,
            "next_cursor": rows[-1].id if more else None,
        }
    )


@router.get("/{verification_id}", summary="One verification: status, attempts, sends", responses={200: ONE})
async def get_verification(verification_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    v = await service.get(db, account_id=ctx.account_id, verification_id=verification_id)
    return JsonResponse(verification_json(v, utcnow()))


@router.post(
    "/{verification_id}/check",
    summary="Check a code: 200 with `valid` (approved, or attempts left)",
    responses={200: ONE},
    openapi_extra=openapi_body(VerificationCheck, {"code": "482913"}),
)
async def check_code(
    verification_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount
) -> JsonResponse:
    data = await parse_body(request, VerificationCheck)
    checked = await checking.check(
        db, settings, account_id=ctx.account_id, verification_id=verification_id, code=data.code
    )
    return JsonResponse({**verification_json(checked.verification, utcnow()), "valid": checked.valid})


@router.post(
    "/{verification_id}/resend",
    summary="Send a new code (after the cool-down); the old one stops working",
    responses={200: ONE},
)
async def resend(
    verification_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount
) -> JsonResponse:
    caller = await _caller(request, db, ctx)
    sent = await service.resend(
        db, settings, caller, verification_id=verification_id, publisher=publisher(request.app)
    )
    return JsonResponse(verification_json(sent.verification, utcnow(), sandbox_code=sent.sandbox_code))


@router.post(
    "/{verification_id}/cancel",
    summary="Cancel a pending verification (its code stops working)",
    responses={200: ONE},
)
async def cancel(verification_id: str, db: DbDep, ctx: SendAccount) -> JsonResponse:
    v = await service.cancel(db, account_id=ctx.account_id, verification_id=verification_id)
    return JsonResponse(verification_json(v, utcnow()))

