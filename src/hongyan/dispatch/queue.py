"""The work queue interface and its in-process backend (the RabbitMQ backend implements the same).

Items carry chunks of message ids, never message bodies: workers load rows in one query. Lanes are
priorities: 0 verification > 1 notification > 2 marketing; a lower lane number is always served first,
and a consumer may take only the low lanes (`max_lane`) so that some workers are kept for verification
codes. How lanes work end to end, and how they map to RabbitMQ: docs/lanes.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hongyan.dispatch.codes_first import CodeSignal

DISPATCH = "dispatch"  # the topic of dispatch items (chunks of message ids); the only one so far
LANES = (0, 1, 2)
LANE_NAMES = {0: "verification", 1: "notification", 2: "marketing"}
LANE_BY_NAME = {name: lane for lane, name in LANE_NAMES.items()}
MAX_DELIVERIES = 5  # a durable backend dead-letters an item whose handling failed this many times


def parse_lanes(spec: str) -> tuple[int, ...]:
    """"verification,marketing" or "0,2" or "all" → sorted lane numbers (for `hongyan worker --lanes`)."""
    if not spec.strip() or spec.strip() == "all":
        return LANES
    lanes: set[int] = set()
    for part in spec.split(","):
        name = part.strip().lower()
        if name.isdigit() and int(name) in LANES:
            lanes.add(int(name))
        elif name in LANE_BY_NAME:
            lanes.add(LANE_BY_NAME[name])
        elif name:
            raise ValueError(f"unknown lane {part.strip()!r}: use verification, notification, marketing or 0-2")
    return tuple(sorted(lanes))


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class QueueItem:
    """One delivered item. Consumers call `ack()` once the state change it caused is committed, or
    `retry()` when handling failed (a durable backend redelivers it later, and dead-letters it after
    MAX_DELIVERIES failures). `redelivered`: a consumer took it before and did not ack (it died): the
    messages it names may be stuck in `sending` and are taken over (docs/production.md)."""

    topic: str
    lane: int
    body: dict[str, Any]
    redelivered: bool = False
    ack: Callable[[], Awaitable[None]] = _nothing
    retry: Callable[[], Awaitable[None]] = _nothing
    received: float = field(default_factory=time.monotonic)  # when this process got it (codes_first's `dispatch` stage)


class Queue(Protocol):
    durable: bool
    signal: CodeSignal  # how fast codes move, here and (RabbitMQ) as other processes announce it: codes_first

    async def publish(self, topic: str, lane: int, body: dict[str, Any]) -> None: ...

    async def get(self, topic: str, *, max_lane: int = 2) -> QueueItem:
        """The oldest item of the lowest lane that is not above `max_lane` (waits for one)."""
        ...

    def depth(self, topic: str) -> dict[int, int]:
        """Items waiting per lane (a durable backend: the broker's count, refreshed about every second)."""
        ...

    async def ping(self) -> None:
        """Raise if the backend is unreachable (readiness checks)."""
        ...

    async def close(self) -> None: ...


class MemoryQueue:
    """A FIFO per (topic, lane); `get` serves the lowest lane first. Not durable: after a crash the runtime
    rebuilds it from the database.

    `get(topic, max_lane=0)` takes verification items only: the runtime's verification dispatchers wait on
    it, so a code is picked up the moment it is published even while every general dispatcher is busy with
    a marketing chunk (a single priority queue would only reorder what waits, not free a worker)."""

    durable = False

    def __init__(self) -> None:
        self.signal = CodeSignal()
        self._lanes: dict[str, dict[int, deque[QueueItem]]] = {}
        # waiters per topic: (max_lane, seq, future); a publish to lane L wakes the oldest waiter that
        # accepts L, preferring those restricted to low lanes (they exist only for those lanes)
        self._waiters: dict[str, list[tuple[int, int, asyncio.Future[QueueItem]]]] = {}
        self._seq = itertools.count()

    def _topic(self, topic: str) -> dict[int, deque[QueueItem]]:
        lanes = self._lanes.get(topic)
        if lanes is None:
            lanes = self._lanes[topic] = {lane: deque() for lane in LANES}
            self._waiters[topic] = []
        return lanes

    async def publish(self, topic: str, lane: int, body: dict[str, Any]) -> None:
        self.put(QueueItem(topic, lane, body))

    def put(self, item: QueueItem) -> None:
        """Hand an item to the oldest suitable waiter, or keep it in its lane (the RabbitMQ backend buffers
        delivered messages here too)."""
        topic, lane = item.topic, item.lane
        waiters = self._waiters.get(topic) or []
        for max_lane, _seq, fut in sorted(waiters, key=lambda w: (w[0], w[1])):
            if lane <= max_lane and not fut.done():
                waiters.remove((max_lane, _seq, fut))
                fut.set_result(item)  # handed over directly: never sits in a lane behind anything
                return
        self._topic(topic).setdefault(lane, deque()).append(item)

    def drop_buffered(self) -> int:
        """Forget every waiting item (the RabbitMQ backend after a reconnect: the broker redelivers them)."""
        dropped = 0
        for lanes in self._lanes.values():
            for items in lanes.values():
                dropped += len(items)
                items.clear()
        return dropped

    def _take(self, topic: str, max_lane: int) -> QueueItem | None:
        for lane, items in sorted(self._topic(topic).items()):
            if lane > max_lane:
                break
            if items:
                return items.popleft()
        return None

    async def get(self, topic: str, *, max_lane: int = LANES[-1]) -> QueueItem:
        item = self._take(topic, max_lane)
        if item is not None:
            return item
        fut: asyncio.Future[QueueItem] = asyncio.get_running_loop().create_future()
        entry = (max_lane, next(self._seq), fut)
        self._waiters[topic].append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            if entry in self._waiters[topic]:
                self._waiters[topic].remove(entry)
            elif fut.done() and not fut.cancelled():  # handed an item while being cancelled: keep it
                self._topic(topic)[fut.result().lane].appendleft(fut.result())
            raise

    def depth(self, topic: str) -> dict[int, int]:
        return {lane: len(items) for lane, items in self._topic(topic).items()}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        for waiters in self._waiters.values():
            for _lane, _seq, fut in waiters:
                fut.cancel()
        self._lanes.clear()
        self._waiters.clear()


def create_queue(url: str, *, lanes: tuple[int, ...] = LANES, prefetch: int = 2, verification_prefetch: int = 64,
                 prefix: str = "hongyan") -> Queue:
    """memory:// → MemoryQueue; amqp:// or amqps:// → RabbitQueue consuming `lanes` (connects lazily)."""
    if url.startswith("memory:"):
        return MemoryQueue()
    if url.startswith(("amqp://", "amqps://")):
        from hongyan.dispatch.rabbit import RabbitQueue

        return RabbitQueue(url, lanes=lanes, prefetch=prefetch, verification_prefetch=verification_prefetch, prefix=prefix)
    raise ValueError(f"unsupported queue URL {url!r}: use memory:// or amqp://user:password@host:5672/vhost")


def queue_for(settings: Any, *, lanes: tuple[int, ...] = LANES) -> Queue:
    """The queue a process of this installation uses (HONGYAN_QUEUE_URL and the queue settings)."""
    return create_queue(settings.queue_url, lanes=lanes, prefetch=settings.queue_prefetch,
                        verification_prefetch=settings.queue_verification_prefetch, prefix=settings.queue_prefix)
