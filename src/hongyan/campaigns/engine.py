"""The campaign engine inside a worker: while it holds the `campaign-scheduler` lease it fires due
occurrences, builds runs chunk by chunk, releases their messages and completes them.

Only the lease holder works, so with several worker processes one leads and the others wait to take
over (within HONGYAN_CAMPAIGN_LEASE_S of the leader dying). Firing does not rely on the lease alone:
the campaign row is locked and (campaign, occurrence) is unique, so even two leaders cannot fire an
occurrence twice, and chunks are written under the run's row lock with a cursor check.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hongyan.campaigns import pump, runs
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch import lease
from hongyan.dispatch.queue import Queue

log = logging.getLogger(__name__)
LEASE = "campaign-scheduler"
FINISH_CHECK_S = 1.0


class CampaignEngine:
    def __init__(self, db: Database, settings: Settings, queue: Queue, *, holder: str | None = None) -> None:
        self.db = db
        self.settings = settings
        self.holder = holder or lease.new_holder_id()
        self.pump = pump.Pump(db, settings, queue)
        self.leader = False
        self._lease_at = 0.0
        self._finish_at = 0.0
        self.wakeup = asyncio.Event()

    async def tick(self) -> bool:
        """One round; True when it did work (the caller loops again at once)."""
        now = time.monotonic()
        if now - self._lease_at >= self.settings.campaign_lease_s / 3 or not self.leader:
            self.leader = await lease.acquire(self.db, LEASE, self.holder, ttl_s=self.settings.campaign_lease_s)
            self._lease_at = now
        if not self.leader:
            return False
        busy = await runs.fire_due(self.db, self.settings) > 0
        for run_id in await runs.pending_materialization(self.db):
            busy = await runs.materialize_step(self.db, self.settings, run_id=run_id) or busy
        busy = await self.pump.release_once() > 0 or busy
        if now - self._finish_at >= FINISH_CHECK_S or not busy:
            self._finish_at = now
            for run in await self.pump.active_runs():
                await runs.finish_if_done(self.db, run.id)
        return busy

    async def release_lease(self) -> None:
        if self.leader:
            await lease.release(self.db, LEASE, self.holder)
            self.leader = False
