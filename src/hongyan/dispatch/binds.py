"""Spreading an SMPP channel's binds over several worker processes: one lease per bind in PostgreSQL.

A carrier grants a number of binds and a TPS per bind (channel settings `binds`, `tps`). With N worker
processes each running every bind, the carrier would see N times too many binds and N times the TPS. So
each bind `i` of channel `c` is a lease row `bind:<c>:<i>` (dispatch.lease): a worker runs exactly the binds
it holds. Every worker also holds a presence lease `worker:<id>`; the live count W gives each worker a fair
share of ceil(binds / W) binds: it renews what it has up to its share, gives up the rest (its window drains
and it unbinds first), and takes free binds up to its share. A worker that dies stops renewing: after
HONGYAN_BIND_LEASE_S its binds are free and the others take them at their next round (every third of it).

Why leases in PostgreSQL and not a coordinator: PostgreSQL is already the one shared, durable thing every
worker talks to; a lease is one conditional UPSERT; nothing else must be run or elected. The price: a bind
moves only when its lease expires (15 s by default), and for that long the channel runs below its binds.
Keep binds ≥ workers, or some workers hold no bind of a channel (they leave its traffic to the others).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch import lease
from hongyan.dispatch.models import Lease

WORKER_PREFIX = "worker:"


BIND_PREFIX = "bind:"


def bind_lease_name(channel_id: str, index: int) -> str:
    return f"{BIND_PREFIX}{channel_id}:{index}"


def parse_bind_lease_name(name: str) -> tuple[str, int] | None:
    """(channel id, bind index) of a bind lease's name; None for any other lease."""
    if not name.startswith(BIND_PREFIX):
        return None
    channel_id, _, index = name[len(BIND_PREFIX):].rpartition(":")
    return (channel_id, int(index)) if channel_id and index.isdigit() else None


def worker_lease_name(holder: str) -> str:
    return WORKER_PREFIX + hashlib.sha256(holder.encode()).hexdigest()[:40]


class BindLeases:
    def __init__(self, db: Database, holder: str, *, ttl_s: float = 15.0) -> None:
        self.db = db
        self.holder = holder
        self.ttl_s = ttl_s
        self.held: dict[str, set[int]] = {}

    async def live_workers(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        async with self.db.read() as session:
            n = await session.scalar(select(func.count()).select_from(Lease).where(
                Lease.name.like(WORKER_PREFIX + "%"), Lease.expires_at > now))
        return max(1, int(n or 0))

    async def tick(self, connectors: dict[str, Any]) -> None:
        """One round: presence, then each channel's binds (renew ≤ share, give up the rest, take free ones)."""
        await lease.acquire(self.db, worker_lease_name(self.holder), self.holder, ttl_s=self.ttl_s)
        workers = await self.live_workers()
        for channel_id, connector in connectors.items():
            if not hasattr(connector, "set_active"):
                continue  # sandbox, HTTP carriers: no binds to share
            count = connector.bind_count
            share = math.ceil(count / workers)
            mine = set(connector.active_binds) | self.held.get(channel_id, set())
            held: set[int] = set()
            for index in sorted(mine) + [i for i in range(count) if i not in mine]:
                name = bind_lease_name(channel_id, index)
                if len(held) >= share:
                    if index in mine:
                        await lease.release(self.db, name, self.holder)
                    continue
                if await lease.acquire(self.db, name, self.holder, ttl_s=self.ttl_s):
                    held.add(index)
            self.held[channel_id] = held
            await connector.set_active(held)
        for channel_id in [c for c in self.held if c not in connectors]:
            for index in self.held.pop(channel_id):
                await lease.release(self.db, bind_lease_name(channel_id, index), self.holder)

    async def release_all(self) -> None:
        """On shutdown (after the binds were closed): free everything for the other workers at once."""
        for channel_id, indices in self.held.items():
            for index in indices:
                await lease.release(self.db, bind_lease_name(channel_id, index), self.holder)
        self.held.clear()
        await lease.release(self.db, worker_lease_name(self.holder), self.holder)
