"""Named leader leases: at most one holder per name does a singleton's work (the campaign scheduler).

A lease is one row of `lease` (name, holder, expires_at). `acquire` is one statement —
INSERT … ON CONFLICT (name) DO UPDATE … WHERE the lease is expired or already ours … RETURNING —
so concurrent callers on PostgreSQL serialize on the row and exactly one of them gets it; on SQLite
write transactions are BEGIN IMMEDIATE, which serializes them anyway.

What a lease guarantees: while `expires_at` is in the future no other holder can take it. What it does
not: a holder that stalls past its ttl (GC pause, lost network) may still be running when another takes
over, so the work done under a lease must itself be idempotent (campaign runs are unique per occurrence).
Renew well before the ttl (e.g. every ttl/3) and stop working when a renewal returns False.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch.models import Lease

MAX_ID_CHARS = 64  # lease.name and lease.holder are String(64)


async def acquire(db: Database, name: str, holder: str, *, ttl_s: float, now: datetime | None = None) -> bool:
    """True if `holder` holds lease `name` until now + ttl_s: created when missing, taken over when
    expired, renewed when already ours. False while someone else holds an unexpired lease."""
    if not name or len(name) > MAX_ID_CHARS or not holder or len(holder) > MAX_ID_CHARS:
        raise ValueError(f"lease name and holder must be 1..{MAX_ID_CHARS} characters")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    expires_at = now + timedelta(seconds=ttl_s)
    insert: Any = pg_insert if db.dialect == "postgresql" else sqlite_insert
    stmt = insert(Lease).values(name=name, holder=holder, expires_at=expires_at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Lease.name],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        # the existing row's values (PostgreSQL locks it first, so this sees the latest committed holder)
        where=or_(Lease.expires_at < now, Lease.holder == holder),
    ).returning(Lease.holder)
    async with db.write() as session:
        got = (await session.execute(stmt)).scalar_one_or_none()
    return got == holder


async def release(db: Database, name: str, holder: str) -> None:
    """Give the lease up (on shutdown) so another holder need not wait for the ttl; no-op if not ours."""
    async with db.write() as session:
        await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def new_holder_id() -> str:
    """hostname:pid:random — tells operators which process holds a lease; unique per call."""
    tail = f":{os.getpid()}:{secrets.token_hex(6)}"
    return socket.gethostname()[: MAX_ID_CHARS - len(tail)] + tail


async def held_by_other(db: Database, name: str, holder: str, *, now: datetime | None = None) -> bool:
    """Whether someone else holds the lease now (e.g. a standby worker announcing itself)."""
    from sqlalchemy import select

    now = now or utcnow()
    async with db.read() as session:
        other = await session.scalar(select(Lease.holder).where(Lease.name == name, Lease.holder != holder,
                                                                Lease.expires_at > now))
    return other is not None
