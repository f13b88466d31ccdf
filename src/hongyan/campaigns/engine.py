"""The campaign engine inside a worker: while it holds the `campaign-scheduler` lease it fires due
occurrences, builds runs chunk by chunk, releases their messages and completes them.

Only the lease holder fires and releases, so with several worker processes one leads and the others wait
to take over (within HONGYAN_CAMPAIGN_LEASE_S of the leader dying). Building runs is shared: any worker
claims a run's build lease (campaign_run.lease_holder/lease_until) and builds it; when another worker is on
standby (it holds the `campaign-standby` lease), the leader leaves a new run to it for LEADER_BUILD_DELAY_S,
so a second worker process builds while the leader releases and dispatches. Firing does not rely on the lease alone:
the campaign row is locked and (campaign, occurrence) is unique, so even two leaders cannot fire an
occurrence twice, and chunks are written under the run's row lock with a cursor check.

Build pacing: a run stays at most HONGYAN_CAMPAIGN_BUILD_AHEAD messages ahead of its release (runs.Backlog,
checked before each chunk), so a large campaign's start does not take the machine from the API and the
verification codes. A paced run keeps its build lease (renewed every BUILD_LEASE_S / 3) while it waits for
the pump — in this process a release wakes the builder, otherwise it looks again every
HONGYAN_CAMPAIGN_POLL_S, less and less often (up to PACED_MAX_WAIT_S) while the run's backlog does not move;
a paused run is not looked at until it is resumed. A stopping worker gives its build leases up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
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
BUILD_LEASE_S = 30.0  # a run's build lease (renewed every chunk and while paced); a dead builder's run is taken over after it
LEADER_BUILD_DELAY_S = 2.0
PACED_MAX_WAIT_S = 5.0  # a paced run whose backlog does not move (waiting for the morning) is looked at this often
DONE, TURN, PACED = "done", "turn", "paced"  # how build() ended: nothing left to do, its turn is up, wait for room


@dataclass(slots=True)
class _Paced:
    """A run this worker builds that waits for the pump to release some of its messages."""

    unreleased: int  # its backlog at the last look (a change: the pump is releasing it)
    wait_s: float
    look_at: float  # monotonic time of the next look
    renewed_at: float  # monotonic time its build lease was last renewed


class CampaignEngine:
    def __init__(self, db: Database, settings: Settings, queue: Queue, *, holder: str | None = None,
                 gate: Any = None) -> None:
        self.db = db
        self.settings = settings
        self.gate = gate  # dispatch.codes_first.BulkGate: while codes are slow, runs are built only a little ahead
        self.holder = holder or lease.new_holder_id()
        self.pump = pump.Pump(db, settings, queue)
        self.leader = False
        self._lease_at = 0.0
        self._finish_at = 0.0
        self._builder: asyncio.Task[None] | None = None
        self._helpers = False  # another worker is on standby (it builds runs first)
        self._stopping = False
        self._paced: dict[str, _Paced] = {}
        self._released = asyncio.Event()  # the pump released messages: paced runs may have room
        self.wakeup = asyncio.Event()

    @property
    def paced_runs(self) -> set[str]:
        """The runs this worker builds that are waiting for the pump (HONGYAN_CAMPAIGN_BUILD_AHEAD reached)."""
        return set(self._paced)

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
            if await runs.pending_materialization(self.db, holder=self.holder):
                # any worker builds runs (one builder per run, by its build lease); the leader meanwhile
                # releases, so the queue is fed while the next chunk is written
                self._builder = asyncio.create_task(self.build_runs())
        if not self.leader:
            return False
        busy = await runs.fire_due(self.db, self.settings) > 0
        if await self.pump.release_once() > 0:
            busy = True
            self._released.set()
        if now - self._finish_at >= FINISH_CHECK_S or not busy:
            self._finish_at = now
            for run in await self.pump.active_runs():
                await runs.finish_if_done(self.db, run.id)
        return busy

    async def build_runs(self) -> None:
        """Build the pending runs this worker can claim; runs take turns every BUILD_TURN chunks. Returns when
        nothing is left to build here; while runs only wait for their release, it waits with them."""
        while not self._stopping:
            self._released.clear()
            more = waiting = False
            pending = await runs.pending_materialization(self.db, holder=self.holder)
            pending_ids = {run_id for run_id, _ in pending}
            self._paced = {run_id: p for run_id, p in self._paced.items() if run_id in pending_ids}
            for run_id, status in pending:
                if self._stopping:
                    return
                room: int | None = None
                paced = self._paced.get(run_id)
                if paced is not None:
                    if status == "paused" or time.monotonic() < paced.look_at:
                        waiting = await self._keep_lease(run_id, paced) or waiting
                        continue
                    room = await self._look(run_id, paced)
                    if room <= 0:
                        waiting = await self._keep_lease(run_id, paced) or waiting
                        continue
                    del self._paced[run_id]
                # the leader (busy releasing) leaves a new run to another worker for LEADER_BUILD_DELAY_S
                if await runs.claim_build(self.db, run_id=run_id, holder=self.holder, ttl_s=BUILD_LEASE_S,
                                          min_age_s=LEADER_BUILD_DELAY_S if self.leader and self._helpers else 0.0):
                    outcome = await self.build(run_id, chunks=BUILD_TURN, room=room)
                    more = more or outcome == TURN
                    waiting = waiting or outcome == PACED
            if more:
                continue
            if not waiting:
                return
            try:  # a release in this process, or the next poll (another process releases, a new run)
                await asyncio.wait_for(self._released.wait(), timeout=self.settings.campaign_poll_s)
            except TimeoutError:
                continue
            for paced in self._paced.values():
                paced.look_at = 0.0

    async def _room(self, run_id: str) -> tuple[int, int]:
        """(room, backlog): how many messages the run may still be built ahead of its release, and how many
        are built and not released (HONGYAN_CAMPAIGN_BUILD_AHEAD 0: no limit)."""
        ahead = self.settings.campaign_build_ahead
        if not ahead:
            return 1 << 62, 0
        if self.gate is not None:
            ahead = self.gate.build_ahead(ahead)
        backlog = await runs.build_backlog(self.db, run_id=run_id, build_ahead=ahead)
        return backlog.room(ahead), backlog.total

    async def _look(self, run_id: str, paced: _Paced) -> int:
        """Look at a paced run again; while its backlog does not move, look less often."""
        room, unreleased = await self._room(run_id)
        poll = self.settings.campaign_poll_s
        paced.wait_s = poll if unreleased != paced.unreleased else min(PACED_MAX_WAIT_S, paced.wait_s * 2)
        paced.unreleased = unreleased
        paced.look_at = time.monotonic() + paced.wait_s
        return room

    async def _keep_lease(self, run_id: str, paced: _Paced) -> bool:
        """Renew a waiting run's build lease in time; False (and forgotten) when it is no longer ours."""
        if time.monotonic() - paced.renewed_at < BUILD_LEASE_S / 3:
            return True
        if await runs.claim_build(self.db, run_id=run_id, holder=self.holder, ttl_s=BUILD_LEASE_S):
            paced.renewed_at = time.monotonic()
            return True
        del self._paced[run_id]
        return False

    async def build(self, run_id: str, *, chunks: int, room: int | None = None) -> str:
        """Up to `chunks` chunks of one run, pipelined: chunk N+1 is read and rendered while N is stored, if
        the run is still less than HONGYAN_CAMPAIGN_BUILD_AHEAD messages ahead of its release with N stored.
        Returns DONE (built, stopped, or another worker's), TURN (its turn is up) or PACED (wait for room)."""
        if room is None:
            room, unreleased = await self._room(run_id)
            if room <= 0:
                return self._pace(run_id, unreleased)
        chunk = await runs.prepare_chunk(self.db, self.settings, run_id=run_id)
        for _ in range(chunks):
            if chunk is None or self._stopping:
                return DONE
            if chunk.last_id is None:
                await runs.store_prepared(self.db, chunk)
                return DONE
            storing = asyncio.create_task(runs.store_prepared(self.db, chunk))
            following = None
            try:  # the chunk being stored is not counted yet (if it is already, this only errs on the safe side)
                room, unreleased = await self._room(run_id)
                room -= len(chunk.rows)
                if room > 0:
                    following = await runs.prepare_chunk(self.db, self.settings, run_id=run_id, after=chunk.last_id)
            finally:
                more = await storing
            if self.gate is not None:
                self.gate.note_built(len(chunk.rows))  # bulk work: not a moment to learn the codes' own latency
            self.wakeup.set()  # the pump has new messages to release
            if not more or not await runs.claim_build(self.db, run_id=run_id, holder=self.holder,
                                                      ttl_s=BUILD_LEASE_S):
                return DONE
            if room <= 0:
                return self._pace(run_id, unreleased + len(chunk.rows))
            chunk = following
        return TURN

    def _pace(self, run_id: str, unreleased: int) -> str:
        """The run waits for the pump; its build lease was just claimed or renewed."""
        now = time.monotonic()
        poll = self.settings.campaign_poll_s
        self._paced[run_id] = _Paced(unreleased, poll, now + poll, now)
        return PACED

    async def close(self) -> None:
        """Finish the chunk being written, then give the lease up so another worker takes over at once."""
        self._stopping = True
        self._released.set()  # a builder waiting for room stops waiting
        if self._builder is not None:
            try:
                await self._builder
            except Exception:
                log.exception("building a campaign run failed")
            self._builder = None
        self._paced.clear()
        await self.pump.relay.forget(now=True)  # outbox rows of what the pump published
        await runs.release_builds(self.db, holder=self.holder)
        if self.leader:
            await lease.release(self.db, LEASE, self.holder)
            self.leader = False


def wake(app: Any) -> None:
    """Embedded workers: the campaign engine looks at once (a campaign started or resumed) instead of at its
    next poll. Without embedded workers there is nothing to wake: the workers poll."""
    engine = getattr(getattr(app.state, "runtime", None), "campaigns", None)
    if engine is not None:
        engine.wakeup.set()
