"""Messages the content filter held for review: stored `held` with their funds on hold, no outbox item
until a reviewer decides. Approved → an outbox item (the relay makes them `queued`; `scheduled` first when
their time is still ahead); rejected → `rejected` (`content_rejected`), which releases the hold like any unsent final
status. A message not decided before its validity ends expires (the expiry sweep treats `held` like
`scheduled`). Every decision is in the audit log with the reviewer and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.service import Actor, record
from hongyan.compliance.models import MessageHold
from hongyan.core.clock import utcnow
from hongyan.core.errors import Unprocessable
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.dispatch.queue import DISPATCH
from hongyan.messaging.models import Message
from hongyan.messaging.states import Status
from hongyan.messaging.transitions import Transition, apply_transitions

DECISIONS = ("approved", "rejected")


@dataclass(frozen=True, slots=True)
class HeldMessage:
    message_id: str
    account_id: str
    batch_id: str | None
    message_type: str
    to: str
    body: str
    segments: int
    matched: str | None
    rule_id: str | None
    created_at: datetime
    decision: str | None
    reason: str | None
    decided_by: str | None
    decided_at: datetime | None


async def record_holds(session: AsyncSession, rows: list[dict[str, Any]], verdicts: dict[str, Any], *,
                       now: datetime) -> None:
    """Store why each held message (status `held`) was held; `verdicts` maps message id → filter verdict."""
    await session.execute(insert(MessageHold.__table__), [
        {"message_id": r["id"], "account_id": r["account_id"], "batch_id": r["batch_id"],
         "rule_id": getattr(verdicts.get(r["id"]), "rule_id", None),
         "matched": (getattr(verdicts.get(r["id"]), "pattern", None) or "")[:200] or None,
         "created_at": now, "decision": None, "reason": None, "decided_by": None, "decided_at": None}
        for r in rows])


async def list_holds(session: AsyncSession, *, account_id: str | None = None, open_only: bool = True,
                     limit: int = 50, before: str | None = None) -> list[HeldMessage]:
    """Held messages, newest first; `account_id` None: every account (platform reviewers)."""
    q = (select(MessageHold, Message.message_type, Message.to_number, Message.body, Message.segment_count)
         .join(Message, Message.id == MessageHold.message_id))
    if account_id is not None:
        q = q.where(MessageHold.account_id == account_id)
    if open_only:
        q = q.where(MessageHold.decided_at.is_(None))
    if before:
        q = q.where(MessageHold.message_id < before)
    rows = (await session.execute(q.order_by(MessageHold.message_id.desc()).limit(limit))).all()
    return [HeldMessage(h.message_id, h.account_id, h.batch_id, mt, to, body, seg, h.matched, h.rule_id,
                        h.created_at, h.decision, h.reason, h.decided_by, h.decided_at)
            for h, mt, to, body, seg in rows]


async def count_open(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(MessageHold)
                                    .where(MessageHold.decided_at.is_(None))) or 0)


async def decide(db: Database, *, message_ids: list[str], decision: str, actor: Actor,
                 reason: str | None = None, now: datetime | None = None) -> int:
    """Approve or reject held messages; returns how many were still held and are now decided."""
    if decision not in DECISIONS:
        raise Unprocessable("invalid_decision", "decision must be approved or rejected.", field="decision")
    if decision == "rejected" and not (reason and reason.strip()):
        raise Unprocessable("reason_required", "Say why the messages are rejected.", field="reason")
    if not message_ids:
        raise Unprocessable("message_ids_empty", "Choose at least one held message.", field="message_ids")
    now = now or utcnow()
    async with db.write() as session:
        query = (select(Message.id, Message.account_id, Message.priority, Message.scheduled_at)
                 .join(MessageHold, MessageHold.message_id == Message.id)
                 .where(Message.id.in_(message_ids), Message.status == Status.HELD.value,
                        MessageHold.decided_at.is_(None)))
        if db.dialect == "postgresql":  # two reviewers deciding the same message: the second waits, finds it decided
            query = query.with_for_update(of=MessageHold)
        held = (await session.execute(query)).all()
        if not held:
            return 0
        ids_ = [h.id for h in held]
        if decision == "rejected":
            await apply_transitions(session, [Transition(i, Status.REJECTED, error_code="content_rejected")
                                              for i in ids_], at=now)
        else:
            # released through the outbox like any accepted message: the relay moves held → queued (now) and
            # a message whose time is still ahead waits as scheduled
            later = {h.id for h in held if h.scheduled_at is not None and h.scheduled_at > now}
            await apply_transitions(session, [Transition(i, Status.SCHEDULED) for i in ids_ if i in later], at=now)
            await session.execute(insert(OutboxItem.__table__), [
                {"topic": DISPATCH, "lane": h.priority, "payload": {"ids": [h.id]},
                 "available_at": h.scheduled_at if h.id in later else now, "created_at": now} for h in held])
        await session.execute(update(MessageHold).where(MessageHold.message_id.in_(ids_)).values(
            decision=decision, reason=reason, decided_by=_who(actor), decided_at=now))
        for account_id in sorted({h.account_id for h in held}):
            mine = [h.id for h in held if h.account_id == account_id]
            await record(session, actor=actor, action=f"message_hold.{decision}", account_id=account_id,
                         target_type="message", target_id=mine[0] if len(mine) == 1 else None,
                         after={"decision": decision, "reason": reason, "messages": len(mine),
                                "message_ids": mine[:100]}, occurred_at=now)
    return len(held)


def _who(actor: Actor) -> str:
    return f"{actor.type}:{actor.id or actor.label or ''}"[:40]
