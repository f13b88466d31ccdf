"""Campaign runs: firing an occurrence, materializing its audience into one batch, and its lifecycle.

A run is `running` → `completed`, or `paused` / `canceled`, or `skipped` (missed occurrence) / `failed`.
Materialization writes the audience as `scheduled` messages, a chunk per transaction (holds included);
`audience_total` stays None until it is done and `cursor` (the last contact id) makes it resumable after a
crash. Release to the queue is the pump's job (campaigns.pump), at the campaign's pace; the builder
(campaigns.engine) stays at most HONGYAN_CAMPAIGN_BUILD_AHEAD messages ahead of it (build_backlog).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.billing import charging
from hongyan.billing.rates import load_price_list
from hongyan.campaigns import audience, quiet_hours
from hongyan.campaigns.contacts import field_types
from hongyan.campaigns.models import Campaign, CampaignRun
from hongyan.campaigns.recurrence import next_occurrence, parse_rrule
from hongyan.compliance import holds
from hongyan.compliance.gate import load_gate, screen
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from hongyan.messaging.models import Batch, Message
from hongyan.messaging.states import Status
from hongyan.messaging.submit import message_row
from hongyan.messaging.transitions import record_history

ACTIVE = ("running", "paused")
REJECTED_KEPT = 1000  # problems listed per run (all are counted)
WAIT_LIMIT = timedelta(days=30)  # a campaign message not released this long after its planned time expires
UNSENT = (Status.ACCEPTED.value, Status.SCHEDULED.value, Status.QUEUED.value, Status.SENDING.value)


def _for_update(query: Any, db: Database) -> Any:
    return query.with_for_update() if db.dialect == "postgresql" else query


def following(campaign: Campaign, occurrence: datetime) -> datetime | None:
    """The occurrence after `occurrence` (None for one-off campaigns or an exhausted rule)."""
    schedule = campaign.schedule or {}
    if schedule.get("mode") != "recurring":
        return None
    return next_occurrence(parse_rrule(schedule["rrule"]), start_local=datetime.fromisoformat(schedule["start"]),
                           tz=campaign.time_zone, after=occurrence)


async def account_window(session: AsyncSession, settings: Settings, account_id: str) -> quiet_hours.QuietWindow | None:
    from hongyan.accounts.models import Account

    own = await session.scalar(select(Account.quiet_hours).where(Account.id == account_id))
    return quiet_hours.parse_window(own if own is not None else settings.quiet_hours)


# -- firing ----------------------------------------------------------------------------------------
async def fire_due(db: Database, settings: Settings, *, now: datetime | None = None) -> int:
    """Fire every due occurrence; returns how many runs started. Safe with several schedulers at once: the
    campaign row is locked and re-checked, and (campaign, occurrence) is unique on runs."""
    now = now or utcnow()
    async with db.read() as session:
        due = (await session.scalars(select(Campaign.id).where(
            Campaign.next_fire_at <= now, Campaign.status.in_(("scheduled", "running"))).limit(100))).all()
    started = 0
    for campaign_id in due:
        started += await fire(db, settings, campaign_id=campaign_id, now=now)
    return started


async def fire(db: Database, settings: Settings, *, campaign_id: str, now: datetime) -> int:
    """Start the run of a campaign's due occurrence.

    Catch-up rule: when several occurrences passed while no scheduler ran, only the latest one is a
    candidate (the earlier ones are recorded as `skipped`, reason `superseded`); it fires if it is at most
    HONGYAN_CAMPAIGN_MISFIRE_GRACE_S late, else it is skipped too (reason `missed`)."""
    grace = timedelta(seconds=settings.campaign_misfire_grace_s)
    async with db.write() as session:
        campaign = await session.scalar(_for_update(select(Campaign).where(Campaign.id == campaign_id), db))
        if (campaign is None or campaign.next_fire_at is None or campaign.next_fire_at > now
                or campaign.status not in ("scheduled", "running")):
            return 0
        occurrence = campaign.next_fire_at
        later = following(campaign, occurrence)
        superseded: list[datetime] = []
        while later is not None and later <= now:
            superseded.append(occurrence)
            occurrence, later = later, following(campaign, later)
        for missed in superseded[-REJECTED_KEPT:]:
            session.add(_run(campaign, missed, now, status="skipped",
                             error={"code": "superseded", "message": "A later occurrence was due when the "
                                    "scheduler ran again; only the latest one is sent."}))
        fired = now - occurrence <= grace
        if fired:
            await _start_run(session, settings, campaign, occurrence, now)
        else:
            session.add(_run(campaign, occurrence, now, status="skipped",
                             error={"code": "missed", "message": f"The scheduler ran {int((now - occurrence).total_seconds())} s "
                                    f"after the planned time, more than the {int(grace.total_seconds())} s grace."}))
        campaign.next_fire_at = later
        campaign.runs_fired += int(fired)
        await session.flush()
        await refresh_campaign(session, campaign.id, now=now)
    return int(fired)


def _run(campaign: Campaign, occurrence: datetime, now: datetime, *, status: str,
         error: dict[str, Any] | None = None, batch_id: str = "") -> CampaignRun:
    return CampaignRun(id=ids.new_id("run"), campaign_id=campaign.id, account_id=campaign.account_id,
                       occurrence_at=occurrence, batch_id=batch_id, status=status, audience_total=None if status ==
                       "running" else 0, materialized=0, accepted_count=0, rejected_count=0, cursor=None,
                       estimate_micros=0, currency="", error=error, rejected=[], created_at=now,
                       started_at=now if status == "running" else None,
                       finished_at=None if status == "running" else now, updated_at=now)


async def _start_run(session: AsyncSession, settings: Settings, campaign: Campaign, occurrence: datetime,
                     now: datetime) -> CampaignRun:
    batch_id = ids.new_id("bat")
    run = _run(campaign, occurrence, now, status="running", batch_id=batch_id)
    run.currency = settings.currency
    session.add(run)
    session.add(Batch(id=batch_id, account_id=campaign.account_id, source="campaign", campaign_id=campaign.id,
                      message_type=campaign.message_type, sender=campaign.sender, body_template=campaign.text,
                      recipients_total=0, accepted_count=0, rejected_count=0, segments_total=0,
                      price_micros_total=0, currency=settings.currency, rejected=[], client_ref=run.id,
                      scheduled_at=occurrence, created_at=now))
    await session.flush()
    return run


# -- materializing ---------------------------------------------------------------------------------
async def pending_materialization(db: Database, *, holder: str | None = None,
                                  now: datetime | None = None) -> list[tuple[str, str]]:
    """Active runs still to build, as (run id, status). With `holder`: only those it may claim (their build
    lease is free, expired or its own), so a worker does not keep trying a run another one is building."""
    query = select(CampaignRun.id, CampaignRun.status).where(CampaignRun.status.in_(ACTIVE),
                                                             CampaignRun.audience_total.is_(None))
    if holder is not None:
        query = query.where(or_(CampaignRun.lease_until.is_(None), CampaignRun.lease_until < (now or utcnow()),
                                CampaignRun.lease_holder == holder))
    async with db.read() as session:
        return [(run_id, status) for run_id, status in (await session.execute(query.order_by(CampaignRun.id))).all()]


async def claim_build(db: Database, *, run_id: str, holder: str, ttl_s: float, min_age_s: float = 0.0,
                      now: datetime | None = None) -> bool:
    """Take (or renew) the run's build lease: one builder per run at a time, in any worker process, so runs
    can be built beside the leader that releases and dispatches. `min_age_s`: only a run that nobody claimed
    for that long since it started (the leader leaves runs to other workers first)."""
    now = now or utcnow()
    free = or_(CampaignRun.lease_until.is_(None), CampaignRun.lease_until < now, CampaignRun.lease_holder == holder)
    query = (update(CampaignRun).where(CampaignRun.id == run_id, CampaignRun.audience_total.is_(None),
                                       CampaignRun.status.in_(ACTIVE), free)
             .values(lease_holder=holder, lease_until=now + timedelta(seconds=ttl_s)))
    if min_age_s:
        query = query.where(or_(CampaignRun.lease_holder == holder,
                                CampaignRun.started_at <= now - timedelta(seconds=min_age_s)))
    async with db.write() as session:
        result = await session.execute(query, execution_options={"synchronize_session": False})
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_builds(db: Database, *, holder: str) -> None:
    """Give up the build leases `holder` has (a worker stopping): another worker takes the runs over at once."""
    async with db.write() as session:
        await session.execute(update(CampaignRun).where(CampaignRun.lease_holder == holder,
                                                        CampaignRun.audience_total.is_(None))
                              .values(lease_until=None), execution_options={"synchronize_session": False})


@dataclass(slots=True, frozen=True)
class Backlog:
    """A run's built messages not released yet (status `scheduled`), each count capped by the query's limit:
    `due` are waiting for the pump, `total` also counts those planned later (quiet hours at the recipient)."""

    due: int
    total: int

    def room(self, build_ahead: int) -> int:
        """How many more messages the builder may write before this run waits for the pump (≤ 0: wait).
        Messages planned later count against twice the limit: a run whose messages wait for the morning is
        neither built whole at night nor stopped before build_ahead messages that can go now."""
        return min(build_ahead - self.due, 2 * build_ahead - self.total)


async def build_backlog(db: Database, *, run_id: str, build_ahead: int, now: datetime | None = None) -> Backlog:
    """The pacing check before a chunk: one index range scan of ix_message_batch_status (batch_id, status,
    scheduled_at) stopped after 2 × build_ahead rows, whatever the size of the run."""
    now = now or utcnow()
    batch_id = select(CampaignRun.batch_id).where(CampaignRun.id == run_id).scalar_subquery()  # one statement
    waiting = (select(Message.scheduled_at).where(Message.batch_id == batch_id,
                                                  Message.status == Status.SCHEDULED.value)
               .limit(2 * build_ahead).subquery())
    async with db.read() as session:
        total, due = (await session.execute(select(
            func.count(), func.count(case((waiting.c.scheduled_at <= now, 1)))).select_from(waiting))).one()
    return Backlog(int(due), int(total))


_FROM_RUN: Any = object()  # prepare_chunk: continue from the run's stored cursor


@dataclass(slots=True)
class Chunk:
    """The next contacts of a run, rendered and priced, not stored yet (`last_id` None: audience exhausted)."""

    run_id: str
    cursor: str | None  # the run's cursor this chunk follows; storing checks it under the run's lock
    last_id: str | None
    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    held: dict[str, Any] = field(default_factory=dict)  # message id → content-filter verdict (status held)


async def prepare_chunk(db: Database, settings: Settings, *, run_id: str, after: Any = _FROM_RUN,
                        now: datetime | None = None) -> Chunk | None:
    """Read and render the contacts after `after` (default: the run's cursor). None: nothing to build (the
    run is gone, stopped or built). A builder prepares chunk N+1 while chunk N is being stored."""
    now = now or utcnow()
    async with db.read() as session:
        run = await session.get(CampaignRun, run_id)
        if run is None or run.status not in ACTIVE or run.audience_total is not None:
            return None
        cursor = run.cursor if after is _FROM_RUN else after
        campaign = await session.get(Campaign, run.campaign_id)
        assert campaign is not None
        groups = await audience.audience_groups(session, campaign)
        contacts = await audience.audience_chunk(session, campaign, groups, after=cursor,
                                                 limit=settings.campaign_chunk)
        if not contacts:
            return Chunk(run_id, cursor, None, [], [])
        prices = await load_price_list(session, settings, account_id=campaign.account_id,
                                       currency=run.currency, at=now)
        template = audience.check_variables(campaign.text, await field_types(session, campaign.account_id))
        if campaign.on_missing == "empty":
            template = audience.with_empty_defaults(template)
        window = await account_window(session, settings, campaign.account_id)
        gate = await load_gate(session, settings, account_id=campaign.account_id)
    renderer = audience.Renderer(template, prices, campaign.message_type, window, settings.max_text_chars, gate)
    planned = max(run.occurrence_at, now)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    message_ids = ids.new_ids("msg", len(contacts))
    held: dict[str, Any] = {}
    signature_ids: set[str] = set()
    position: dict[str, int] = {}
    for index, contact in enumerate(contacts):
        out = renderer.render(contact, planned)
        if isinstance(out, audience.Skipped):
            skipped.append({"position": index, "to": out.to, "code": out.code, "message": out.message,
                            "field": out.field, "contact_id": out.contact_id})
            continue
        if out.held is not None:
            held[message_ids[index]] = out.held
        if out.signature_id:
            signature_ids.add(out.signature_id)
        position[message_ids[index]] = index
        rows.append(message_row(
            message_ids[index], account_id=campaign.account_id, batch_id=run.batch_id, message_type=campaign.message_type,
            to=out.to, country=out.country, sender=campaign.sender, text=out.text, seg=out.seg,
            price_micros=out.price_micros, currency=run.currency,
            status=Status.HELD if out.held is not None else Status.SCHEDULED, scheduled_at=out.release_at,
            expires_at=out.release_at + WAIT_LIMIT, now=now, campaign_id=campaign.id,
            time_zone=quiet_hours.pack_zones(out.zones), client_ref=out.contact_id))
    if rows:  # compliance: suppression list, consent, frequency cap, unverified limits
        async with db.read() as session:
            refusals = await screen(session, gate, rows, message_type=campaign.message_type, now=now,
                                    signature_ids=signature_ids)
        if refusals:
            for r in rows:
                refusal = refusals.get(r["id"])
                if refusal is not None:
                    skipped.append({"position": position[r["id"]], "to": r["to_number"], "code": refusal.code,
                                    "message": refusal.message, "field": "to", "contact_id": r["client_ref"]})
                    held.pop(r["id"], None)
            skipped.sort(key=lambda p: p["position"])
            rows = [r for r in rows if r["id"] not in refusals]
    return Chunk(run_id, cursor, contacts[-1].id, rows, skipped, held)


async def store_prepared(db: Database, chunk: Chunk, *, now: datetime | None = None) -> bool:
    """Store a prepared chunk (holds, messages, cursor) if the run is still where the chunk follows; an
    exhausted audience completes the build. True when the run has more to build."""
    now = now or utcnow()
    if chunk.last_id is None:
        same_cursor = CampaignRun.cursor.is_(None) if chunk.cursor is None else CampaignRun.cursor == chunk.cursor
        async with db.write() as session:
            await session.execute(update(CampaignRun).where(
                CampaignRun.id == chunk.run_id, same_cursor, CampaignRun.audience_total.is_(None))
                .values(audience_total=CampaignRun.materialized, updated_at=now))
        return False
    try:
        return await _store_chunk(db, chunk, now=now)
    except HongyanError as exc:
        if exc.code not in ("insufficient_balance", "spend_limit_exceeded"):
            raise
        await _stop_for_funds(db, chunk.run_id, chunk.cursor, exc, now=now)
        return False


async def materialize_step(db: Database, settings: Settings, *, run_id: str, now: datetime | None = None) -> bool:
    """Turn the next chunk of the run's audience into held `scheduled` messages; False when nothing is left."""
    chunk = await prepare_chunk(db, settings, run_id=run_id, now=now)
    return chunk is not None and await store_prepared(db, chunk, now=now)


async def _store_chunk(db: Database, chunk: Chunk, *, now: datetime) -> bool:
    rows, skipped = chunk.rows, chunk.skipped
    async with db.write() as session:
        run = await session.scalar(_for_update(select(CampaignRun).where(CampaignRun.id == chunk.run_id), db))
        if run is None or run.cursor != chunk.cursor or run.audience_total is not None or run.status not in ACTIVE:
            return False  # another builder stored this chunk, or the run was canceled meanwhile
        for problem in skipped:  # numbered within the whole audience
            problem["index"] = run.materialized + problem.pop("position")
        if rows:
            await charging.hold_batch(session, rows, account_id=run.account_id, currency=run.currency,
                                      batch_id=run.batch_id, actor=f"campaign:{run.campaign_id}")
            conn = await session.connection()
            await conn.execute(insert(Message.__table__), rows)
            await record_history(session, rows, now, db.dialect == "postgresql")
            if chunk.held:
                await holds.record_holds(session, [r for r in rows if r["id"] in chunk.held], chunk.held, now=now)
        price = sum(r["price_micros"] for r in rows)
        segments = sum(r["segment_count"] for r in rows)
        run.cursor = chunk.last_id
        run.materialized += len(rows) + len(skipped)
        run.accepted_count += len(rows)
        run.rejected_count += len(skipped)
        run.estimate_micros += price
        if skipped and len(run.rejected) < REJECTED_KEPT:
            run.rejected = [*run.rejected, *skipped][:REJECTED_KEPT]
        run.updated_at = now
        batch = await session.get(Batch, run.batch_id)
        assert batch is not None
        batch.recipients_total += len(rows) + len(skipped)
        batch.accepted_count += len(rows)
        batch.rejected_count += len(skipped)
        batch.segments_total += segments
        batch.price_micros_total += price
        if skipped and len(batch.rejected) < REJECTED_KEPT:
            batch.rejected = [*batch.rejected, *skipped][:REJECTED_KEPT]
        return True


async def _stop_for_funds(db: Database, run_id: str, cursor: str | None, exc: HongyanError, *, now: datetime) -> None:
    """The balance ran out part-way: what is held goes out; the rest of the audience is counted as rejected."""
    async with db.write() as session:
        run = await session.scalar(_for_update(select(CampaignRun).where(CampaignRun.id == run_id), db))
        if run is None or run.cursor != cursor or run.audience_total is not None:
            return
        campaign = await session.get(Campaign, run.campaign_id)
        assert campaign is not None
        groups = await audience.audience_groups(session, campaign)
        ids_ = audience.audience_ids(groups)
        left_query = select(func.count()).select_from(ids_)
        if cursor is not None:
            left_query = left_query.where(ids_.c[0] > cursor)
        left = int(await session.scalar(left_query) or 0)
        run.rejected_count += left
        run.audience_total = run.materialized + left
        run.error = {"code": exc.code, "message": f"{exc.message} {left} recipients were not sent."}
        run.updated_at = now
        batch = await session.get(Batch, run.batch_id)
        if batch is not None:
            batch.recipients_total += left
            batch.rejected_count += left


# -- progress and lifecycle -----------------------------------------------------------------------
async def status_counts(session: AsyncSession, batch_id: str) -> dict[str, int]:
    rows = (await session.execute(select(Message.status, func.count()).where(Message.batch_id == batch_id)
                                  .group_by(Message.status))).all()
    return {status: int(n) for status, n in rows}


async def finish_if_done(db: Database, run_id: str, *, now: datetime | None = None) -> bool:
    """A running run whose audience is all materialized and has nothing left to send is completed (its
    delivery counts still change as receipts arrive)."""
    now = now or utcnow()
    async with db.write() as session:
        run = await session.scalar(_for_update(select(CampaignRun).where(CampaignRun.id == run_id), db))
        if run is None or run.status != "running" or run.audience_total is None:
            return False
        unsent = await session.scalar(select(Message.id).where(Message.batch_id == run.batch_id,
                                                               Message.status.in_(UNSENT)).limit(1))
        if unsent is not None:
            return False
        run.status = "completed"
        run.finished_at = run.updated_at = now
        await refresh_campaign(session, run.campaign_id, now=now)
    return True


async def refresh_campaign(session: AsyncSession, campaign_id: str, *, now: datetime) -> None:
    """A campaign is running while one of its runs is; completed when none is and nothing is due later."""
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None or campaign.status in ("canceled", "draft", "paused"):
        return
    active = await session.scalar(select(CampaignRun.id).where(CampaignRun.campaign_id == campaign_id,
                                                               CampaignRun.status.in_(ACTIVE)).limit(1))
    if active is not None:
        campaign.status = "running"
    elif campaign.next_fire_at is not None:
        campaign.status = "scheduled"
    else:
        campaign.status = "completed"
        campaign.finished_at = now
    campaign.updated_at = now
