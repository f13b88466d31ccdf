"""The work queue interface and its in-process backend (the RabbitMQ backend implements the same).

Items carry chunks of message ids, never message bodies: workers load rows in one query. Lanes are
priorities: 0 verification > 1 notification > 2 marketing; a lower lane number is always served first.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, Protocol

LANES = (0, 1, 2)
LANE_NAMES = {0: "verification", 1: "notification", 2: "marketing"}


@dataclass(slots=True)
class QueueItem:
    topic: str
    lane: int
    body: dict[str, Any]


class Queue(Protocol):
    durable: bool

    async def publish(self, topic: str, lane: int, body: dict[str, Any]) -> None: ...

    async def get(self, topic: str) -> QueueItem: ...

    def depth(self, topic: str) -> dict[int, int]: ...

    async def close(self) -> None: ...


class MemoryQueue:
    """asyncio priority queue per topic. Not durable: after a crash the runtime rebuilds it from the DB."""

    durable = False

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, QueueItem]]] = {}
        self._seq = itertools.count()
        self._depth: dict[str, dict[int, int]] = {}

    def _queue(self, topic: str) -> asyncio.PriorityQueue[tuple[int, int, QueueItem]]:
        q = self._queues.get(topic)
        if q is None:
            q = self._queues[topic] = asyncio.PriorityQueue()
            self._depth[topic] = dict.fromkeys(LANES, 0)
        return q

    async def publish(self, topic: str, lane: int, body: dict[str, Any]) -> None:
        q = self._queue(topic)
        self._depth[topic][lane] = self._depth[topic].get(lane, 0) + 1
        q.put_nowait((lane, next(self._seq), QueueItem(topic, lane, body)))

    async def get(self, topic: str) -> QueueItem:
        _, _, item = await self._queue(topic).get()
        self._depth[topic][item.lane] -= 1
        return item

    def depth(self, topic: str) -> dict[int, int]:
        self._queue(topic)
        return dict(self._depth[topic])

    async def close(self) -> None:
        self._queues.clear()


def create_queue(url: str) -> Queue:
    if url.startswith("memory:"):
        return MemoryQueue()
    raise ValueError(f"unsupported queue URL {url!r}: the RabbitMQ backend arrives with production mode")
