"""Blocked verification traffic and destination throttles: /v1/operator/verify/… for platform staff (API key
scope `operator`), and /v1/verify/blocked for a customer's own refused attempts. Thin routes over
verify.pumping_traffic; every change is audited there."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import DbDep, OperatorAccount, ReadAccount
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import NotFound
from hongyan.verify import pumping_traffic as traffic

router = APIRouter(tags=["verify: pumping protection"])

Hours = Annotated[int, Query(ge=1, le=168, description="How far back, in hours (1–168).")]


class ThrottleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["country", "prefix"]
    value: Annotated[StrictStr, Field(max_length=16, description='"NG" (ISO country) or "+23480" (prefix).')]
    account_id: Annotated[StrictStr, Field(max_length=30)] | None = Field(
        None, description="Only this account's verifications; omit for every account."
    )
    max_per_hour: StrictInt | None = Field(
        None, description="Allow this many an hour; omit to block outright."
    )
    minutes: StrictInt = Field(60, description=f"How long (1–{traffic.MAX_THROTTLE_MINUTES}).")
    note: Annotated[StrictStr, Field(max_length=200)] | None = Field(
        None, description="Why; shown to operators."
    )


async def _traffic(db: Any, *, hours: int, account_id: str | None, operator: bool) -> dict[str, Any]:
    since = utcnow() - timedelta(hours=hours)
    async with db.read() as session:
        groups = await traffic.blocked_groups(session, since=since, account_id=account_id)
        latest = await traffic.latest_blocks(session, since=since, account_id=account_id)
        throttles = await traffic.list_throttles(session, account_id=account_id)
    by_code: dict[str, int] = {}
    for group in groups:
        by_code[group.code] = by_code.get(group.code, 0) + group.count
    return {
        "since": isoformat(since),
        "total": sum(by_code.values()),
        "by_code": by_code,
        "groups": [traffic.group_json(g) for g in groups],
        "latest": [traffic.block_json(b, operator=operator) for b in latest],
        "throttles": [traffic.throttle_json(t) for t in throttles],
    }


@router.get(
    "/v1/operator/verify/blocked",
    summary="Refused verification requests: counts by code, country and prefix, and the latest ones",
)
async def operator_blocked(
    db: DbDep,
    ctx: OperatorAccount,
    hours: Hours = 24,
    account_id: Annotated[str | None, Query(max_length=30)] = None,
) -> JsonResponse:
    return JsonResponse(await _traffic(db, hours=hours, account_id=account_id, operator=True))


@router.get(
    "/v1/operator/verify/conversion",
    summary="Verifications started, judged and approved per country or prefix (conversion)",
)
async def operator_conversion(
    db: DbDep,
    ctx: OperatorAccount,
    kind: Literal["country", "prefix"] = "country",
    hours: Hours = 24,
    account_id: Annotated[str | None, Query(max_length=30)] = None,
) -> JsonResponse:
    since = utcnow() - timedelta(hours=hours)
    async with db.read() as session:
        rows = await traffic.conversion_by_destination(session, kind=kind, since=since, account_id=account_id)
    return JsonResponse(
        {"since": isoformat(since), "kind": kind, "data": [traffic.conversion_json(r) for r in rows]}
    )


@router.get("/v1/operator/verify/throttles", summary="Destination throttles (in force by default)")
async def operator_throttles(
    db: DbDep,
    ctx: OperatorAccount,
    active: bool = True,
    account_id: Annotated[str | None, Query(max_length=30)] = None,
) -> JsonResponse:
    async with db.read() as session:
        throttles = await traffic.list_throttles(session, active=active, account_id=account_id)
    return JsonResponse({"data": [traffic.throttle_json(t) for t in throttles]})


@router.post(
    "/v1/operator/verify/throttles",
    status_code=201,
    summary="Throttle or block verification codes to a country or prefix (for one account or all)",
    openapi_extra=openapi_body(
        ThrottleCreate,
        {"kind": "prefix", "value": "+23480", "max_per_hour": 20, "minutes": 240, "note": "ticket 812"},
    ),
)
async def operator_create_throttle(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, ThrottleCreate)
    async with db.write() as session:
        throttle = await traffic.create_throttle(
            session,
            kind=data.kind,
            value=data.value,
            account_id=data.account_id,
            max_per_hour=data.max_per_hour,
            minutes=data.minutes,
            note=data.note,
            actor=actor_for_api(ctx, request),
        )
        body = traffic.throttle_json(throttle)
    return JsonResponse(body, status_code=201)


@router.post(
    "/v1/operator/verify/throttles/{throttle_id}/lift",
    summary="End a throttle now; the detector then judges only traffic after the lift",
)
async def operator_lift_throttle(
    throttle_id: str, request: Request, db: DbDep, ctx: OperatorAccount
) -> JsonResponse:
    if not throttle_id.isdigit() or len(throttle_id) > 12:
        raise NotFound("verify_throttle_not_found", "No such throttle.", field="id")
    async with db.write() as session:
        throttle = await traffic.lift_throttle(session, int(throttle_id), actor=actor_for_api(ctx, request))
        body = traffic.throttle_json(throttle)
    return JsonResponse(body)


@router.get(
    "/v1/verify/blocked",
    tags=["verify"],
    summary="This account's refused verification requests (limits, pumping protection) and its throttles",
)
async def account_blocked(db: DbDep, ctx: ReadAccount, hours: Hours = 24) -> JsonResponse:
    return JsonResponse(await _traffic(db, hours=hours, account_id=ctx.account_id, operator=False))
