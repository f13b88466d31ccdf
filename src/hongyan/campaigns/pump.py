"""The campaign pump: releases running runs' due `scheduled` messages to the dispatch queue.

Pace: a campaign with a TPS cap gets a token bucket (cap per second, 1 s of burst); without a cap, runs
share what the queue can take (HONGYAN_CAMPAIGN_RELEASE_WINDOW messages waiting at most), so a paused or
canceled campaign has little in flight and verification traffic is never stuck behind a campaign.
Priority: runs of high-priority campaigns are served first. Quiet hours: a marketing message whose
recipient is inside the account's quiet window now is not released; its scheduled_at moves to the end of
the window (checked at release, not only when the run was built, so a slow or paused campaign cannot
drift into the night).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from hongyan.campaigns import quiet_hours
from hongyan.campaigns.models import Campaign, CampaignRun
from hongyan.campaigns.runs import WAIT_LIMIT, account_window
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch import outbox
from hongyan.dispatch.models import OutboxItem
from hongyan.dispatch.queue import DISPATCH, Queue
from hongyan.messaging.models import Message
from hongyan.messaging.states import Status
from hongyan.messaging.submit import LANES
from hongyan.messaging.transitions import Transition, apply_transitions

WINDOW_CACHE_S = 30.0
_M = Message.__table__


class WindowCache:
    """Accounts' quiet windows, re-read every WINDOW_CACHE_S (an account's change applies within that)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._windows: dict[str, tuple[quiet_hours.QuietWindow | None, float]] = {}

    async def get(self, account_id: str) -> quiet_hours.QuietWindow | None:
        hit = self._windows.get(account_id)
        if hit is not None and time.monotonic() - hit[1] < WINDOW_CACHE_S:
            return hit[0]
        async with self.db.read() as session:
            window = await account_window(session, self.settings, account_id)
        self._windows[account_id] = (window, time.monotonic())
        return window


async def hold_back_quiet(session: Any, rows: list[dict[str, Any]], windows: WindowCache, *,
                          now: datetime) -> list[dict[str, Any]]:
    """The last check before a carrier (dispatch, just after queued → sending): a marketing message whose
    recipient's quiet window has begun since its release (a slow channel, retries) goes back to `scheduled`
    until the window ends — a campaign's pump releases it again, other messages get an outbox item then.
    Returns the rows that may be sent now."""
    send: list[dict[str, Any]] = []
    later: list[tuple[dict[str, Any], datetime]] = []
    for row in rows:
        zones = quiet_hours.unpack_zones(row.get("time_zone"))
        if row["message_type"] == "marketing" and zones:
            window = await windows.get(row["account_id"])
            if window is not None and quiet_hours.is_quiet(window, zones, now):
                later.append((row, quiet_hours.next_allowed(window, zones, now)))
                continue
        send.append(row)
    if later:
        back = [r["id"] for r, _ in later]
        await apply_transitions(session, [Transition(m, Status.QUEUED) for m in back])
        await apply_transitions(session, [Transition(m, Status.SCHEDULED) for m in back])
        await session.execute(
            update(_M).where(_M.c.id == bindparam("mid")).values(
                scheduled_at=bindparam("at"), expires_at=bindparam("exp"), attempts=_M.c.attempts - 1),
            [{"mid": r["id"], "at": at, "exp": at + WAIT_LIMIT} for r, at in later],
            execution_options={"synchronize_session": False})
        outbox = [{"topic": DISPATCH, "lane": LANES[r["message_type"]], "payload": {"ids": [r["id"]]},
                   "available_at": at, "created_at": now} for r, at in later if r.get("campaign_id") is None]
        if outbox:
            await session.execute(insert(OutboxItem.__table__), outbox)
    return send


@dataclass(slots=True)
class ActiveRun:
    id: str
    batch_id: str
    account_id: str
    message_type: str
    tps_cap: int | None
    validity_hours: int | None


class Pump:
    def __init__(self, db: Database, settings: Settings, queue: Queue) -> None:
        self.db = db
        self.settings = settings
        self.queue = queue
        self.relay = outbox.Relay(db, queue)
        self._buckets: dict[str, tuple[float, float]] = {}  # run id -> (tokens, monotonic time)
        self.windows = WindowCache(db, settings)
        self.released = 0
        self.deferred = 0

    async def active_runs(self) -> list[ActiveRun]:
        async with self.db.read() as session:
            rows = (await session.execute(
                select(CampaignRun.id, CampaignRun.batch_id, CampaignRun.account_id, Campaign.message_type,
                       Campaign.tps_cap, Campaign.validity_hours)
                .join(Campaign, Campaign.id == CampaignRun.campaign_id)
                .where(CampaignRun.status == "running")
                .order_by(Campaign.priority, CampaignRun.id))).all()
        return [ActiveRun(*row) for row in rows]

    def _room(self) -> int:
        depth = self.queue.depth(DISPATCH)
        waiting = sum(depth.get(lane, 0) for lane in (1, 2)) * self.settings.dispatch_chunk
        return max(0, self.settings.campaign_release_window - waiting)

    def _budget(self, run: ActiveRun) -> int:
        if not run.tps_cap:
            return 1 << 30
        now = time.monotonic()
        tokens, last = self._buckets.get(run.id, (float(run.tps_cap) * 0.1, now))
        tokens = min(float(run.tps_cap), tokens + (now - last) * run.tps_cap)
        self._buckets[run.id] = (tokens, now)
        return int(tokens)

    def _spend(self, run: ActiveRun, n: int) -> None:
        if run.tps_cap and run.id in self._buckets:
            tokens, last = self._buckets[run.id]
            self._buckets[run.id] = (tokens - n, last)

    async def release_once(self, *, now: datetime | None = None) -> int:
        """One round over the running runs; returns how many messages went to the queue."""
        now = now or utcnow()
        room = self._room()
        total = 0
        runs = await self.active_runs()
        self._buckets = {r.id: self._buckets[r.id] for r in runs if r.id in self._buckets}
        for run in runs:
            if room <= 0:
                break
            n = min(room, self._budget(run), 5 * self.settings.dispatch_chunk)
            if n <= 0:
                continue
            released = await self.release_run(run, n, now=now)
            self._spend(run, released)
            room -= released
            total += released
        await self.relay.forget()  # published rows, in batches (also after the last release of a run)
        return total

    async def release_run(self, run: ActiveRun, limit: int, *, now: datetime) -> int:
        window = await self.windows.get(run.account_id) if run.message_type == "marketing" else None
        lane = LANES[run.message_type]
        validity = timedelta(hours=run.validity_hours or self.settings.default_validity_hours)
        async with self.db.write() as session:
            query = select(CampaignRun.status).where(CampaignRun.id == run.id)
            if self.db.dialect == "postgresql":
                query = query.with_for_update()  # pause and cancel lock the same row: no release after them
            if await session.scalar(query) != "running":
                return 0
            rows = (await session.execute(
                select(_M.c.id, _M.c.time_zone).where(_M.c.batch_id == run.batch_id,
                                                      _M.c.status == Status.SCHEDULED.value, _M.c.scheduled_at <= now)
                .order_by(_M.c.scheduled_at).limit(limit))).all()
            if not rows:
                return 0
            go: list[str] = []
            later: list[dict[str, Any]] = []
            for message_id, zones in rows:
                unpacked = quiet_hours.unpack_zones(zones)
                if window is not None and quiet_hours.is_quiet(window, unpacked, now):
                    at = quiet_hours.next_allowed(window, unpacked, now)
                    later.append({"mid": message_id, "at": at, "exp": at + WAIT_LIMIT})
                else:
                    go.append(message_id)
            if later:
                await session.execute(
                    update(_M).where(_M.c.id == bindparam("mid")).values(scheduled_at=bindparam("at"),
                                                                         expires_at=bindparam("exp")),
                    later, execution_options={"synchronize_session": False})
                self.deferred += len(later)
            claimed: list[tuple[int, int, dict[str, Any]]] = []
            if go:  # the validity period counts from the release
                outcome = await apply_transitions(session, [Transition(mid, Status.QUEUED) for mid in go],
                                                  also={"expires_at": now + validity})
                go = outcome.applied_ids
                # claimed outbox rows: if this process dies before publishing, a relay publishes them
                claimed = await outbox.add_claimed(session, lane, go, chunk=self.settings.dispatch_chunk, now=now)
        await self.relay.publish(claimed)
        await self.relay.forget()
        self.released += len(go)
        return len(go)
