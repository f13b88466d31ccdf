"""/v1/campaigns: create a draft, preview and estimate it, start, pause, resume, cancel; runs and progress."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import Authority
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import AdminAccount, DbDep, ReadAccount, SendAccount, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.campaigns import runs, service
from hongyan.campaigns.engine import wake
from hongyan.campaigns.models import Campaign, CampaignRun
from hongyan.core.clock import isoformat
from hongyan.core.errors import NotFound
from hongyan.core.money import format_micros

router = APIRouter(tags=["campaigns"])
PRIORITY_NAMES = {v: k for k, v in service.PRIORITIES.items()}


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["now", "at", "recurring"] = "now"
    at: Annotated[StrictStr, Field(max_length=40)] | None = None
    start: Annotated[StrictStr, Field(max_length=40)] | None = None
    rrule: Annotated[StrictStr, Field(max_length=200)] | None = None


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=100)]
    text: Annotated[StrictStr, Field(max_length=2000)]
    message_type: Literal["marketing", "notification"] = "marketing"
    sender: Annotated[StrictStr, Field(max_length=32)] | None = None
    group_ids: Annotated[list[Annotated[StrictStr, Field(max_length=40)]], Field(max_length=50)] = []
    numbers: Annotated[list[Annotated[StrictStr, Field(max_length=40)]], Field(max_length=10_000)] = []
    on_missing: Literal["skip", "empty"] = "skip"
    schedule: Schedule = Schedule()
    time_zone: Annotated[StrictStr, Field(max_length=64)] | None = None
    priority: Literal["high", "normal", "low"] = "normal"
    tps_cap: Annotated[int, Field(ge=1, le=10_000)] | None = None
    validity_hours: Annotated[int, Field(ge=1, le=72)] | None = None


def campaign_json(c: Campaign) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "status": c.status, "message_type": c.message_type, "sender": c.sender,
            "text": c.text, "on_missing": c.on_missing, "group_ids": c.group_ids,
            "audience_group_id": c.audience_group_id, "schedule": c.schedule, "time_zone": c.time_zone,
            "next_fire_at": isoformat(c.next_fire_at) if c.next_fire_at else None, "runs_fired": c.runs_fired,
            "priority": PRIORITY_NAMES.get(c.priority, "normal"), "tps_cap": c.tps_cap,
            "validity_hours": c.validity_hours, "created_at": isoformat(c.created_at),
            "updated_at": isoformat(c.updated_at), "finished_at": isoformat(c.finished_at) if c.finished_at else None}


def run_json(r: CampaignRun, counts: dict[str, int] | None = None) -> dict[str, Any]:
    out = {"id": r.id, "campaign_id": r.campaign_id, "batch_id": r.batch_id or None, "status": r.status,
           "occurrence_at": isoformat(r.occurrence_at), "audience_total": r.audience_total,
           "materialized": r.materialized, "accepted": r.accepted_count, "rejected": r.rejected_count,
           "price_total": format_micros(r.estimate_micros, r.currency) if r.currency else None,
           "price_total_micros": r.estimate_micros, "currency": r.currency or None, "error": r.error,
           "started_at": isoformat(r.started_at) if r.started_at else None,
           "finished_at": isoformat(r.finished_at) if r.finished_at else None}
    if counts is not None:
        out["counts"] = counts
    return out


async def campaign_runs(session: AsyncSession, campaign_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
    rows = (await session.scalars(select(CampaignRun).where(CampaignRun.campaign_id == campaign_id)
                                  .order_by(CampaignRun.id.desc()).limit(limit))).all()
    return [run_json(r, await runs.status_counts(session, r.batch_id) if r.batch_id else {}) for r in rows]


def estimate_json(e: service.Estimate) -> dict[str, Any]:
    return {"audience": e.audience, "messages": e.messages, "skipped": e.skipped, "segments": e.segments,
            "price_total": format_micros(e.price_micros, e.currency), "price_total_micros": e.price_micros,
            "currency": e.currency, "samples": e.samples, "problems": e.problems, "sampled": e.sampled}


@router.post("/v1/campaigns", status_code=201, summary="Create a campaign (a draft: preview it, then start it)",
             openapi_extra=openapi_body(CampaignCreate, {
                 "name": "双十二促销", "text": "{name|客户}您好，您的订单{订单号}已发货。拒收请回复R",
                 "group_ids": ["grp_01…"], "schedule": {"mode": "recurring", "start": "2026-12-01T10:00",
                                                        "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=4"},
                 "time_zone": "Asia/Shanghai", "tps_cap": 200}))
async def create_campaign(request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, CampaignCreate)
    body = data.model_dump()
    body["schedule"] = data.schedule.model_dump(exclude_none=True)
    async with db.write() as session:
        campaign = await service.create_campaign(session, settings, authority=Authority.of_api(ctx),
                                                 actor=actor_for_api(ctx, request),
                                                 data=service.CampaignInput(**body))
        return JsonResponse(campaign_json(campaign), status_code=201)


@router.get("/v1/campaigns", summary="Campaigns, newest first")
async def list_campaigns(db: DbDep, ctx: ReadAccount, cursor: Annotated[str | None, Query(max_length=40)] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50) -> JsonResponse:
    async with db.read() as session:
        rows = await service.list_campaigns(session, account_id=ctx.account_id, limit=limit + 1, before=cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    return JsonResponse({"data": [campaign_json(c) for c in rows], "has_more": more,
                         "next_cursor": rows[-1].id if more else None})


@router.get("/v1/campaigns/{campaign_id}", summary="A campaign with its latest runs and their per-status counts")
async def get_campaign(campaign_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        campaign = await service.get_campaign(session, account_id=ctx.account_id, campaign_id=campaign_id)
        return JsonResponse({**campaign_json(campaign), "runs": await campaign_runs(session, campaign.id)})


@router.post("/v1/campaigns/{campaign_id}/preview",
             summary="Render the first messages and estimate the whole audience (messages, segments, cost)")
async def preview(campaign_id: str, db: DbDep, settings: SettingsDep, ctx: ReadAccount,
                  n: Annotated[int, Query(ge=1, le=50)] = 5) -> JsonResponse:
    async with db.read() as session:
        campaign = await service.get_campaign(session, account_id=ctx.account_id, campaign_id=campaign_id)
        return JsonResponse(estimate_json(await service.estimate(session, settings, campaign, samples=n)))


async def _then_show(db: DbDep, account_id: str, campaign_id: str, extra: dict[str, Any] | None = None) -> JsonResponse:
    async with db.read() as session:
        campaign = await service.get_campaign(session, account_id=account_id, campaign_id=campaign_id)
        return JsonResponse({**campaign_json(campaign), "runs": await campaign_runs(session, campaign.id),
                             **(extra or {})})


@router.post("/v1/campaigns/{campaign_id}/start", summary="Start a draft (checked, cost estimated against the balance)")
async def start(campaign_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount) -> JsonResponse:
    await service.start_campaign(db, settings, authority=Authority.of_api(ctx), actor=actor_for_api(ctx, request),
                                 campaign_id=campaign_id)
    wake(request.app)
    return await _then_show(db, ctx.account_id, campaign_id)


@router.post("/v1/campaigns/{campaign_id}/pause", summary="Pause: nothing more is released or fired")
async def pause(campaign_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    out = await service.pause_campaign(db, authority=Authority.of_api(ctx), actor=actor_for_api(ctx, request),
                                       campaign_id=campaign_id)
    return await _then_show(db, ctx.account_id, campaign_id, out)


@router.post("/v1/campaigns/{campaign_id}/resume", summary="Resume a paused campaign")
async def resume(campaign_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    await service.resume_campaign(db, authority=Authority.of_api(ctx), actor=actor_for_api(ctx, request),
                                  campaign_id=campaign_id)
    wake(request.app)
    return await _then_show(db, ctx.account_id, campaign_id)


@router.post("/v1/campaigns/{campaign_id}/cancel",
             summary="Cancel: unsent messages are canceled and their holds released (counts in the answer)")
async def cancel(campaign_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    out = await service.cancel_campaign(db, authority=Authority.of_api(ctx), actor=actor_for_api(ctx, request),
                                        campaign_id=campaign_id)
    return await _then_show(db, ctx.account_id, campaign_id, out)


@router.get("/v1/campaigns/{campaign_id}/runs/{run_id}", summary="One run: progress and per-status counts")
async def get_run(campaign_id: str, run_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        run = await session.scalar(select(CampaignRun).where(CampaignRun.id == run_id,
                                                             CampaignRun.campaign_id == campaign_id,
                                                             CampaignRun.account_id == ctx.account_id))
        if run is None:
            raise NotFound("run_not_found", "No such run of this campaign.", field="run_id")
        counts = await runs.status_counts(session, run.batch_id) if run.batch_id else {}
        return JsonResponse({**run_json(run, counts), "problems": run.rejected[:100]})


class QuietHoursUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quiet_hours: Annotated[StrictStr, Field(max_length=20)] | None = Field(
        description='Local-time window, e.g. "21:00-08:00"; null: the platform default.')


@router.get("/v1/account/quiet-hours", summary="The account's quiet window for marketing (recipient's local time)")
async def get_quiet_hours(db: DbDep, settings: SettingsDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        own = await session.scalar(select(Account.quiet_hours).where(Account.id == ctx.account_id))
    return JsonResponse({"quiet_hours": service.effective_quiet_hours(settings, own), "own": own,
                         "platform_default": settings.quiet_hours})


@router.patch("/v1/account/quiet-hours", summary="Change the account's quiet window (null: platform default)",
              openapi_extra=openapi_body(QuietHoursUpdate, {"quiet_hours": "22:00-08:30"}))
async def update_quiet_hours(request: Request, db: DbDep, settings: SettingsDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, QuietHoursUpdate)
    async with db.write() as session:
        effective = await service.set_quiet_hours(session, settings, authority=Authority.of_api(ctx),
                                                  actor=actor_for_api(ctx, request), value=data.quiet_hours)
        own = await session.scalar(select(Account.quiet_hours).where(Account.id == ctx.account_id))
    return JsonResponse({"quiet_hours": effective, "own": own, "platform_default": settings.quiet_hours})
