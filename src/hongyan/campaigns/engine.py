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
        self._builder: asyncio.Task[None] | None = None
        self._stopping = False
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
        if self._builder is None or self._builder.done():
            if self._builder is not None:
                self._builder.result()  # a failed build round is logged by the caller; the next one retries
                self._builder = None
            if await runs.pending_materialization(self.db):
                # runs are built beside the releases, so the queue is fed while the next chunk is written
                self._builder = asyncio.create_task(self.build_runs())
                busy = True
        busy = await self.pump.release_once() > 0 or busy
        if now - self._finish_at >= FINISH_CHECK_S or not busy:
            self._finish_at = now
            for run in await self.pump.active_runs():
                await runs.finish_if_done(self.db, run.id)
        return busy

    async def build_runs(self) -> None:
        """Materialize pending runs chunk by chunk (round robin) until none is left or the engine stops."""
        while not self._stopping and self.leader:
            pending = await runs.pending_materialization(self.db)
            if not pending:
                return
            for run_id in pending:
                if self._stopping:
                    return
                await runs.materialize_step(self.db, self.settings, run_id=run_id)
                self.wakeup.set()

    async def close(self) -> None:
        """Finish the chunk being written, then give the lease up so another worker takes over at once."""
        self._stopping = True
        if self._builder is not None:
            try:
                await self._builder
            except Exception:
                log.exception("building a campaign run failed")
            self._builder = None
        if self.leader:
            await lease.release(self.db, LEASE, self.holder)
            self.leader = False
