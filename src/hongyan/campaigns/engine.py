"""The campaign engine inside a worker: while it holds the `campaign-scheduler` lease it fires due
occurrences, builds runs chunk by chunk, releases their messages and completes them.

Only the lease holder fires and releases, so with several worker processes one leads and the others wait
to take over (within HONGYAN_CAMPAIGN_LEASE_S of the leader dying). Building runs is shared: any worker
claims a run's build lease (campaign_run.lease_holder/lease_until) and builds it; when another worker is on
standby (it holds the `campaign-standby` lease), the leader leaves a new run to it for LEADER_BUILD_DELAY_S,
so a second worker process builds while the leader releases and dispatches. Firing does not rely on the lease alone:
the campaign row is locked and (campaign, occurrence) is unique, so even two leaders cannot fire an
occurrence twice, and chunks are written under the run's row lock with a cursor check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hongyan.campaigns import pump, runs
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch import lease
from hongyan.dispatch.queue import Queue

log = logging.getLogger(__name__)
LEASE = "campaign-scheduler"
STANDBY = "campaign-standby"  # held by a worker that is not the leader: it builds runs
FINISH_CHECK_S = 1.0
BUILD_TURN = 25  # chunks of one run before the next pending run gets its turn
BUILD_LEASE_S = 30.0  # a run's build lease (renewed every chunk); a dead builder's run is taken over after it
LEADER_BUILD_DELAY_S = 2.0


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
        self._helpers = False  # another worker is on standby (it builds runs first)
        self._stopping = False
        self.wakeup = asyncio.Event()

    async def tick(self) -> bool:
        """One round; True when it did work (the caller loops again at once)."""
        now = time.monotonic()
        if now - self._lease_at >= self.settings.campaign_lease_s / 3 or not self.leader:
            self.leader = await lease.acquire(self.db, LEASE, self.holder, ttl_s=self.settings.campaign_lease_s)
            if self.leader:  # is another worker there to build runs while this one releases them?
                self._helpers = await lease.held_by_other(self.db, STANDBY, self.holder)
            else:  # say so to the leader
                await lease.acquire(self.db, STANDBY, self.holder, ttl_s=self.settings.campaign_lease_s)
            self._lease_at = now
        busy = False
        if self._builder is None or self._builder.done():
            if self._builder is not None:
                self._builder.result()  # a failed build round is logged by the caller; the next one retries
                self._builder = None
            if await runs.pending_materialization(self.db):
                # any worker builds runs (one builder per run, by its build lease); the leader meanwhile
                # releases, so the queue is fed while the next chunk is written
                self._builder = asyncio.create_task(self.build_runs())
        if not self.leader:
            return False
        busy = await runs.fire_due(self.db, self.settings) > 0
        busy = await self.pump.release_once() > 0 or busy
        if now - self._finish_at >= FINISH_CHECK_S or not busy:
            self._finish_at = now
            for run in await self.pump.active_runs():
                await runs.finish_if_done(self.db, run.id)
        return busy

    async def build_runs(self) -> None:
        """Build the pending runs this worker can claim; runs take turns every BUILD_TURN chunks."""
        while not self._stopping:
            built = False
            for run_id in await runs.pending_materialization(self.db):
                if self._stopping:
                    return
                # the leader (busy releasing) leaves a new run to another worker for LEADER_BUILD_DELAY_S
                if await runs.claim_build(self.db, run_id=run_id, holder=self.holder, ttl_s=BUILD_LEASE_S,
                                          min_age_s=LEADER_BUILD_DELAY_S if self.leader and self._helpers else 0.0):
                    await self.build(run_id, chunks=BUILD_TURN)
                    built = True
            if not built:
                return

    async def build(self, run_id: str, *, chunks: int) -> None:
        """Up to `chunks` chunks of one run, pipelined: chunk N+1 is read and rendered while N is stored."""
        chunk = await runs.prepare_chunk(self.db, self.settings, run_id=run_id)
        for _ in range(chunks):
            if chunk is None or self._stopping:
                return
            if chunk.last_id is None:
                await runs.store_prepared(self.db, chunk)
                return
            storing = asyncio.create_task(runs.store_prepared(self.db, chunk))
            try:
                following = await runs.prepare_chunk(self.db, self.settings, run_id=run_id, after=chunk.last_id)
            finally:
                more = await storing
            self.wakeup.set()  # the pump has new messages to release
            if not more or not await runs.claim_build(self.db, run_id=run_id, holder=self.holder,
                                                      ttl_s=BUILD_LEASE_S):
                return
            chunk = following

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


def wake(app: Any) -> None:
    """Embedded workers: the campaign engine looks at once (a campaign started or resumed) instead of at its
    next poll. Without embedded workers there is nothing to wake: the workers poll."""
    engine = getattr(getattr(app.state, "runtime", None), "campaigns", None)
    if engine is not None:
        engine.wakeup.set()
