"""Window slots and TPS tokens of one SMPP bind, handed out by lane (0 verification first), then arrival.

A bind's window (requests awaiting their response) and its TPS budget are the last two places where a
verification code could queue behind a marketing chunk: a 500-message chunk puts 500 submits in front of
the window at once. Both are served here in (lane, arrival) order, so a code waiting for a slot or a token
gets the next one that frees up, whatever is already waiting. Within one lane the order stays FIFO, which
keeps the parts of a long message in order on the wire.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

Waiter = tuple[int, int, "asyncio.Future[None]"]


class PriorityWindow:
    """A counting semaphore (the SMPP window) whose waiters are served by (lane, arrival), with `reserve`
    slots (1 for a window of 2 or more) that only lane 0 may use: marketing PDUs that hold their slots while
    they wait for a TPS token or for the codes-first gate (dispatch.codes_first) cannot fill the whole window,
    so a code never waits for one of them to be answered."""

    def __init__(self, slots: int, *, reserve: int | None = None) -> None:
        self.slots = max(1, slots)
        self.reserve = min(self.slots - 1, (1 if self.slots > 1 else 0) if reserve is None else max(0, reserve))
        self._used = 0
        self._used_bulk = 0  # slots held by lanes 1–2
        self._waiters: list[Waiter] = []  # heap
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _lane, _seq, fut in self._waiters if not fut.done())

    def _fits(self, lane: int) -> bool:
        return self._used < self.slots and (lane == 0 or self._used_bulk < self.slots - self.reserve)

    def _take(self, lane: int) -> None:
        self._used += 1
        if lane > 0:
            self._used_bulk += 1

    async def acquire(self, lane: int) -> None:
        # a request that fits has nobody waiting before it: release() hands slots to waiters that fit at once
        if self._fits(lane):
            self._take(lane)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (lane, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(lane)  # the slot arrived as we were cancelled: pass it on
            raise  # a cancelled waiter stays in the heap until release() skips it

    def release(self, lane: int = 1) -> None:
        """Give back a slot taken for `lane`, and hand free slots to the best waiters that may use them (a
        waiting code comes first; marketing waits while only the reserved slots are free)."""
        self._used -= 1
        if lane > 0:
            self._used_bulk -= 1
        while self._waiters:
            w_lane, _seq, fut = self._waiters[0]
            if fut.done():
                heapq.heappop(self._waiters)  # cancelled
                continue
            if not self._fits(w_lane):
                return  # the best waiter does not fit, so no later one does (lane 0 sorts first)
            heapq.heappop(self._waiters)
            self._take(w_lane)
            fut.set_result(None)


class TokenBucket:
    """At most `rate` acquisitions per second, with a burst of rate/10 (at least 1); while tokens are
    short, waiters get them by (lane, arrival) from one pacing task instead of racing for them."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._waiters: list[Waiter] = []  # heap
        self._seq = itertools.count()
        self._pacer: asyncio.Task[None] | None = None

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def set_rate(self, rate: float) -> None:
        """A new rate, from the next grant on (codes_first.BulkGate moves it while traffic waits)."""
        self._refill()
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self.tokens = min(self.tokens, self.capacity)

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, lane: int = 1) -> None:
        if self.rate <= 0:
            return
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)  # cancelled waiters
        self._refill()
        if self.tokens >= 1 and not self._waiters:
            self.tokens -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (lane, next(self._seq), fut))
        if self._pacer is None or self._pacer.done():
            self._pacer = asyncio.create_task(self._pace())
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.tokens += 1  # granted as we were cancelled: give the token back
            raise

    async def _pace(self) -> None:
        """Grant tokens to the best waiters as they accrue; ends when nobody waits."""
        while self._waiters:
            self._refill()
            while self.tokens >= 1 and self._waiters:
                _lane, _seq, fut = heapq.heappop(self._waiters)
                if not fut.done():
                    self.tokens -= 1
                    fut.set_result(None)
            if self._waiters:
                await asyncio.sleep(max(0.0, (1 - self.tokens) / self.rate))

    def close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
