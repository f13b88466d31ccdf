"""What the campaign pages show, computed from the same JSON shapes as /v1/campaigns (campaign_routes):
runs with their per-status counts and a progress bar, times in the campaign's time zone, the money a
cancel would release. No routes here (console.campaigns has them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.campaigns.campaign_routes import campaign_json, campaign_runs, run_json
from hongyan.campaigns.models import Campaign, CampaignRun
from hongyan.campaigns.runs import ACTIVE
from hongyan.console.templating import money
from hongyan.core.clock import utcnow
from hongyan.messaging.models import Message
from hongyan.messaging.states import Status

# messages that have left the campaign (a carrier has them, or they ended): the progress of a run
DONE = ("delivered", "sent", "undelivered", "expired", "rejected", "failed", "canceled")
# still to go: held in the campaign (quiet hours, pacing), on the queue, being handed over
PENDING = ("scheduled", "accepted", "queued", "sending")
HELD = (Status.ACCEPTED.value, Status.SCHEDULED.value, Status.QUEUED.value)  # what a cancel takes back
LIVE_AFTER_FINISH = timedelta(seconds=60)  # delivery receipts keep coming after a run completes
LIVE_BEFORE_FIRE = timedelta(minutes=10)  # a page open just before a run fires shows it start


def _aware(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def local_time(value: datetime | str | None, tz: str) -> str:
    """A UTC instant as wall-clock time in the campaign's zone: 2026-12-01 10:00 (Asia/Shanghai)."""
    moment = _aware(value)
    if moment is None:
        return ""
    return f"{moment.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M} ({tz})"


def building(run: dict[str, Any]) -> bool:
    """A paced run is built while it is sent: its total grows until the build is done (docs/scheduling.md)."""
    return run["audience_total"] is None and run["status"] in ACTIVE


def progress(counts: dict[str, int], accepted: int, *, building: bool = False) -> dict[str, Any]:
    """done / accepted and the bar's segments (status, x, width in % of the run's accepted messages);
    `building`: more messages are still to be built (the total grows)."""
    done = sum(counts.get(s, 0) for s in DONE)
    total = max(accepted, sum(counts.values()))
    bar: list[list[Any]] = []
    x = 0.0
    for status in DONE:
        n = counts.get(status, 0)
        if n and total:
            width = 100.0 * n / total
            bar.append([status, round(x, 3), round(width, 3)])
            x += width
    pct = int(100 * done / total) if total else 0
    return {
        "done": done,
        "total": total,
        "pct": pct,
        "bar": bar,
        "sent": counts.get("sent", 0),
        "delivered": counts.get("delivered", 0),
        "failed": sum(counts.get(s, 0) for s in ("failed", "undelivered", "expired", "rejected")),
        "pending": sum(counts.get(s, 0) for s in PENDING),
        "building": building,
    }


def run_view(run: dict[str, Any], tz: str) -> dict[str, Any]:
    """A run_json with its counts, plus what the runs table shows."""
    counts = run.get("counts") or {}
    return {
        **run,
        "occurrence_local": local_time(run["occurrence_at"], tz),
        "progress": progress(counts, run["accepted"] or 0, building=building(run)),
        "cost": money(run["price_total_micros"], run["currency"]) if run["currency"] else "—",
        "count_list": [[s, counts[s]] for s in (*PENDING, *DONE) if counts.get(s)],
    }


def is_live(campaign: dict[str, Any], runs: list[dict[str, Any]], *, now: datetime) -> bool:
    """Whether the page keeps polling: a run is going, one fires soon, or one just finished."""
    if campaign["status"] == "running" or any(r["status"] in ACTIVE for r in runs):
        return True
    fire = _aware(campaign["next_fire_at"])
    if campaign["status"] == "scheduled" and fire is not None and fire - now <= LIVE_BEFORE_FIRE:
        return True
    finished = [_aware(r["finished_at"]) for r in runs[:1] if r["finished_at"]]
    return bool(finished) and now - finished[0] <= LIVE_AFTER_FINISH  # type: ignore[operator]


async def campaign_progress(session: AsyncSession, campaign: Campaign) -> dict[str, Any]:
    """The detail page's live part: campaign status and runs (also the progress.json answer)."""
    shown = campaign_json(campaign)
    runs = [run_view(r, campaign.time_zone) for r in await campaign_runs(session, campaign.id)]
    return {
        "campaign": {
            "id": shown["id"],
            "status": shown["status"],
            "next_fire_at": shown["next_fire_at"],
            "next_fire_local": local_time(shown["next_fire_at"], campaign.time_zone),
        },
        "runs": runs,
        "live": is_live(shown, runs, now=utcnow()),
    }


async def latest_runs(session: AsyncSession, campaign_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The newest run of each campaign with its counts, in three queries whatever the number of campaigns."""
    if not campaign_ids:
        return {}
    newest = (
        select(func.max(CampaignRun.id))
        .where(CampaignRun.campaign_id.in_(campaign_ids))
        .group_by(CampaignRun.campaign_id)
    )
    runs = (await session.scalars(select(CampaignRun).where(CampaignRun.id.in_(newest)))).all()
    batch_ids = [r.batch_id for r in runs if r.batch_id]
    counts: dict[str, dict[str, int]] = {b: {} for b in batch_ids}
    if batch_ids:
        rows = await session.execute(
            select(Message.batch_id, Message.status, func.count())
            .where(Message.batch_id.in_(batch_ids))
            .group_by(Message.batch_id, Message.status)
        )
        for batch_id, status, n in rows:
            counts[batch_id][status] = int(n)
    return {r.campaign_id: run_json(r, counts.get(r.batch_id, {})) for r in runs}


async def releasable(session: AsyncSession, campaign_id: str) -> dict[str, int]:
    """What a cancel would take back now: messages not yet with a carrier, and the cash held for them
    (messages paid from a package give their units back instead)."""
    batches = select(CampaignRun.batch_id).where(
        CampaignRun.campaign_id == campaign_id, CampaignRun.status.in_(ACTIVE)
    )
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(Message.price_micros).filter(Message.funding == "cash"), 0),
            ).where(Message.batch_id.in_(batches), Message.status.in_(HELD))
        )
    ).one()
    return {"messages": int(row[0]), "cash_micros": int(row[1])}
