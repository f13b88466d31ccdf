"""What the worker processes of a production installation are doing, read from their leases in PostgreSQL
(dispatch.lease, dispatch.binds): which workers are alive, which one leads the campaign scheduler, which
worker runs each SMPP bind. Any process can answer it — the API's channels page and /v1/operator/system do,
since in production mode the API runs no carriers itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from hongyan.campaigns.engine import LEASE as SCHEDULER_LEASE
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch.binds import WORKER_PREFIX, parse_bind_lease_name
from hongyan.dispatch.models import Lease


@dataclass(slots=True)
class Fleet:
    workers: list[dict[str, Any]] = field(default_factory=list)  # holder, lease expiry
    scheduler: str | None = None
    binds: dict[str, dict[int, str]] = field(default_factory=dict)  # channel id → bind index → holder

    def json(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "campaign_scheduler": self.scheduler,
            "binds": {cid: [{"index": i, "holder": h} for i, h in sorted(b.items())] for cid, b in self.binds.items()},
        }


async def snapshot(db: Database, *, now: datetime | None = None) -> Fleet:
    now = now or utcnow()
    async with db.read() as session:
        rows = (await session.execute(select(Lease.name, Lease.holder, Lease.expires_at)
                                      .where(Lease.expires_at > now).order_by(Lease.name))).all()
    fleet = Fleet()
    for name, holder, expires_at in rows:
        if name.startswith(WORKER_PREFIX):
            fleet.workers.append({"holder": holder, "lease_expires_at": expires_at.isoformat()})
        elif name == SCHEDULER_LEASE:
            fleet.scheduler = holder
        elif (bind := parse_bind_lease_name(name)) is not None:
            channel_id, index = bind
            fleet.binds.setdefault(channel_id, {})[index] = holder
    fleet.workers.sort(key=lambda w: w["holder"])
    return fleet
