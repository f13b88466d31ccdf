"""Reading messages and batches (API, console), and cancel."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.core.clock import isoformat
from hongyan.core.crypto import blind_index
from hongyan.core.errors import Conflict, NotFound, Unprocessable
from hongyan.core.money import format_micros
from hongyan.messaging.models import Batch, Message, MessageEvent
from hongyan.messaging.states import CANCELABLE, FINAL, Status
from hongyan.messaging.transitions import Transition, apply_transitions

MAX_PAGE = 1000


_CODE_DIGITS = re.compile(r"(?<!\d)\d{4,10}(?!\d)")


def visible_text(message_type: str, client_ref: str | None, body: str) -> str:
    """The text as the API and console show it: a code sent by the verification service (client_ref ver_…)
    is masked — anyone who may read messages could otherwise use it; the carrier got the real text."""
    if message_type == "verification" and client_ref and client_ref.startswith("ver_"):
        return _CODE_DIGITS.sub(lambda d: "•" * len(d.group()), body)
    return body


def message_public(m: Message, events: list[MessageEvent] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id,
        "batch_id": m.batch_id,
        "to": m.to_number,
        "country": m.to_country,
        "sender": m.sender,
        "text": visible_text(m.message_type, m.client_ref, m.body),
        "message_type": m.message_type,
        "status": m.status,
        "encoding": m.encoding,
        "segments": m.segment_count,
        "price": format_micros(m.price_micros, m.currency),
        "price_micros": m.price_micros,
        "currency": m.currency,
        "error_code": m.error_code,
        "carrier_error_code": m.carrier_error_code,
        "client_ref": m.client_ref,
        "created_at": isoformat(m.created_at),
        "scheduled_at": isoformat(m.scheduled_at),
        "sent_at": isoformat(m.sent_at),
        "done_at": isoformat(m.done_at),
        "expires_at": isoformat(m.expires_at),
    }
    if events is not None:
        history = [{"status": Status.ACCEPTED.value, "at": isoformat(m.created_at), "error_code": None,
                    "carrier_error_code": None}]
        history += [
            {"status": e.status, "at": isoformat(e.occurred_at), "error_code": e.error_code,
             "carrier_error_code": e.carrier_error_code}
            for e in events
        ]
        out["events"] = history
    return out


async def get_message(session: AsyncSession, *, account_id: str, message_id: str) -> tuple[Message, list[MessageEvent]]:
    message = await session.scalar(select(Message).where(Message.id == message_id, Message.account_id == account_id))
    if message is None:
        raise NotFound("message_not_found", f"No message {message_id} in this account.", field="id")
    events = list(
        (await session.scalars(select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id))).all()
    )
    return message, events


async def list_messages(
    session: AsyncSession,
    *,
    account_id: str,
    statuses: list[str] | None = None,
    to: str | None = None,
    batch_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Message], str | None]:
    """Newest first; `cursor` is the id of the last message of the previous page (ids sort by time)."""
    for i, s in enumerate(statuses or []):
        if s not in Status.__members__.values():
            raise Unprocessable("invalid_status", f"Unknown status '{s}'.", field=f"status[{i}]" if len(statuses or []) > 1 else "status")
    if not 1 <= limit <= MAX_PAGE:
        raise Unprocessable("value_out_of_range", f"limit must be between 1 and {MAX_PAGE}.", field="limit")
    query = select(Message).where(Message.account_id == account_id)
    if statuses:
        query = query.where(Message.status.in_(statuses))
    if to:
        query = query.where(Message.to_bidx == blind_index(to))
    if batch_id:
        query = query.where(Message.batch_id == batch_id)
    if since:
        query = query.where(Message.created_at >= since)
    if until:
        query = query.where(Message.created_at < until)
    if cursor:
        query = query.where(Message.id < cursor)
    rows = list((await session.scalars(query.order_by(Message.id.desc()).limit(limit + 1))).all())
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


async def batch_summary(session: AsyncSession, *, account_id: str, batch_id: str) -> dict[str, Any]:
    batch = await session.scalar(select(Batch).where(Batch.id == batch_id, Batch.account_id == account_id))
    if batch is None:
        raise NotFound("batch_not_found", f"No batch {batch_id} in this account.", field="id")
    counts = dict(
        (await session.execute(
            select(Message.status, func.count()).where(Message.batch_id == batch_id).group_by(Message.status)
        )).all()
    )
    final = sum(v for k, v in counts.items() if Status(k) in FINAL)
    return {
        "id": batch.id,
        "source": batch.source,
        "message_type": batch.message_type,
        "text": batch.body_template,
        "sender": batch.sender,
        "recipients_total": batch.recipients_total,
        "accepted": batch.accepted_count,
        "rejected_count": batch.rejected_count,
        "rejected": batch.rejected,
        "segments": batch.segments_total,
        "price_total": format_micros(batch.price_micros_total, batch.currency),
        "price_total_micros": batch.price_micros_total,
        "currency": batch.currency,
        "counts": {s.value: counts.get(s.value, 0) for s in Status},
        "completed": final == batch.accepted_count,
        "client_ref": batch.client_ref,
        "scheduled_at": isoformat(batch.scheduled_at),
        "created_at": isoformat(batch.created_at),
    }


async def cancel_message(session: AsyncSession, *, account_id: str, message_id: str) -> None:
    outcome = await apply_transitions(
        session, [Transition(message_id, Status.CANCELED, error_code="canceled_by_user")], account_id=account_id
    )
    if outcome.applied:
        return
    current = await session.scalar(select(Message.status).where(Message.id == message_id, Message.account_id == account_id))
    if current is None:
        raise NotFound("message_not_found", f"No message {message_id} in this account.", field="id")
    raise Conflict(
        "message_not_cancelable",
        f"The message is {current}; only {', '.join(sorted(s.value for s in CANCELABLE))} messages can be canceled.",
        field="id",
    )


async def cancel_batch(session: AsyncSession, *, account_id: str, batch_id: str) -> int:
    exists = await session.scalar(select(Batch.id).where(Batch.id == batch_id, Batch.account_id == account_id))
    if exists is None:
        raise NotFound("batch_not_found", f"No batch {batch_id} in this account.", field="id")
    ids_ = (await session.scalars(
        select(Message.id).where(Message.batch_id == batch_id, Message.status.in_([s.value for s in CANCELABLE]))
    )).all()
    outcome = await apply_transitions(
        session, [Transition(i, Status.CANCELED, error_code="canceled_by_user") for i in ids_], account_id=account_id
    )
    return len(outcome.applied)
