"""Dashboard: today's messages of the account per status (UTC day), and the latest batches."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from hongyan.console.context import SignedIn
from hongyan.console.verification import dashboard_banner
from hongyan.core.clock import utcnow
from hongyan.messaging.models import Batch, Message
from hongyan.messaging.states import FINAL, Status

router = APIRouter(prefix="/console", include_in_schema=False)

RECENT_BATCHES = 8
FAILED = frozenset({Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED})


def today_start() -> datetime:
    """00:00 UTC today: the dashboard's day is the UTC day, like every stored time."""
    now = utcnow()
    return datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)


def summarize(counts: dict[str, int]) -> dict[str, int | None]:
    """Totals for the cards: all, delivered, still in flight, failed, and the delivery rate in ‰."""
    total = sum(counts.values())
    delivered = counts.get(Status.DELIVERED.value, 0)
    failed = sum(counts.get(s.value, 0) for s in FAILED)
    pending = sum(v for k, v in counts.items() if Status(k) not in FINAL)
    finished = delivered + failed
    return {
        "total": total,
        "delivered": delivered,
        "pending": pending,
        "failed": failed,
        "rate_permille": round(1000 * delivered / finished) if finished else None,
    }


@router.get("")
async def dashboard(console: SignedIn) -> Any:
    async with console.db.read() as session:
        counts = {
            status: count
            for status, count in (
                await session.execute(
                    select(Message.status, func.count())
                    .where(Message.account_id == console.account_id, Message.created_at >= today_start())
                    .group_by(Message.status)
                )
            ).all()
        }
        batches = list(
            (
                await session.scalars(
                    select(Batch)
                    .where(Batch.account_id == console.account_id)
                    .order_by(Batch.id.desc())
                    .limit(RECENT_BATCHES)
                )
            ).all()
        )
    return console.render(
        "dashboard.html",
        active="dashboard",
        counts=counts,
        summary=summarize(counts),
        batches=batches,
        statuses=[s.value for s in Status],
        kyc=await dashboard_banner(console),
    )
