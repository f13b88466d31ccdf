"""Data subject requests for one phone number in one account: export everything stored about it, erase it.

Numbers and content are sealed at rest (core.crypto), so rows are found by the number's blind index
(`message.to_bidx`, `inbound_message.from_bidx`); documents without an index (webhook payloads, a batch's
rejected recipients, idempotent responses) are found through the message ids, or decrypted and filtered
here, a page at a time. Each kind of stored data is one *collector* (`COLLECTORS`): it exports and erases
its own rows, so a later table (contacts, opt-outs) adds a collector instead of changing this flow.

Erasure replaces the number and content and keeps everything else (status, segments, price, times,
country), so statistics, statements and the billing ledger stay exact. It is idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.audit.service import Actor, record
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import NotFound
from hongyan.core.money import format_micros
from hongyan.messaging.models import Batch, IdempotencyRecord, InboundMessage, Message, MessageEvent
from hongyan.messaging.numbers import NumberProblem, normalize, normalize_field
from hongyan.messaging.states import CANCELABLE, Status
from hongyan.messaging.transitions import Transition, apply_transitions
from hongyan.privacy.scrub import ERASED_NUMBER, ERASED_TEXT, scrub_event_payload, scrub_rejected
from hongyan.webhooks.models import WebhookEvent

EXPORT_MESSAGE_LIMIT = 5_000  # newest first; a longer history says so (`truncated`) and points to the API
EXPORT_EVENT_LIMIT = 20_000
PAGE = 500  # ids per IN (…) list and batches per decrypt-and-filter page
ERASED_ERROR_CODE = "erased_on_request"  # error_code of a not-yet-sent message canceled by an erasure


@dataclass(slots=True)
class Subject:
    """Whose data: one E.164 number in one account, with what the collectors learned along the way."""

    account_id: str
    e164: str
    region: str  # the account's default region: how numbers typed without +country were read
    bidx: str
    message_ids: list[str] = field(default_factory=list)

    def matches_typed(self, raw: str) -> bool:
        """Whether a number as someone typed it (`138 0013 8000`, `0086…`) is this subject's number."""
        try:
            if normalize(raw, self.region).e164 == self.e164:
                return True
        except NumberProblem:
            pass
        digits = "".join(c for c in raw if c.isdigit())
        national = str(phonenumbers.parse(self.e164).national_number)
        return bool(digits) and digits in (self.e164[1:], national)


@dataclass(frozen=True, slots=True)
class Collector:
    """One kind of stored personal data: `export` adds its section, `erase` returns counts per table."""

    name: str
    export: Callable[[AsyncSession, Subject], Awaitable[dict[str, Any]]]
    erase: Callable[[AsyncSession, Subject], Awaitable[dict[str, int]]]


def parse_number(raw: str, region: str, *, field_name: str = "phone_number") -> str:
    """The E.164 form of a number given in a request; 422 with the messaging error codes otherwise."""
    return normalize_field(raw, region, field=field_name).e164


async def subject_for(session: AsyncSession, *, account_id: str, e164: str) -> Subject:
    region = await session.scalar(select(Account.default_region).where(Account.id == account_id))
    if region is None:
        raise NotFound("account_not_found", f"No account {account_id}.", field="account")
    bidx = blind_index(e164)
    assert bidx is not None
    return Subject(account_id=account_id, e164=e164, region=region, bidx=bidx)


def _chunks(values: Sequence[str], size: int = PAGE) -> list[Sequence[str]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


# -- messages ----------------------------------------------------------------------------------
async def _export_messages(session: AsyncSession, s: Subject) -> dict[str, Any]:
    rows = list((await session.scalars(
        select(Message).where(Message.account_id == s.account_id, Message.to_bidx == s.bidx)
        .order_by(Message.id.desc()).limit(EXPORT_MESSAGE_LIMIT + 1)
    )).all())
    truncated = len(rows) > EXPORT_MESSAGE_LIMIT
    rows = rows[:EXPORT_MESSAGE_LIMIT]
    s.message_ids = [m.id for m in rows]
    events: dict[str, list[dict[str, Any]]] = {}
    for chunk in _chunks(s.message_ids):
        for e in (await session.scalars(
            select(MessageEvent).where(MessageEvent.message_id.in_(chunk)).order_by(MessageEvent.id)
        )).all():
            events.setdefault(e.message_id, []).append(
                {"status": e.status, "at": isoformat(e.occurred_at), "error_code": e.error_code})
    return {
        "messages": [
            {"id": m.id, "batch_id": m.batch_id, "created_at": isoformat(m.created_at), "to": m.to_number,
             "country": m.to_country, "sender": m.sender, "text": m.body, "message_type": m.message_type,
             "status": m.status, "error_code": m.error_code, "segments": m.segment_count,
             "price": format_micros(m.price_micros, m.currency), "currency": m.currency,
             "sent_at": isoformat(m.sent_at), "done_at": isoformat(m.done_at),
             "events": [{"status": Status.ACCEPTED.value, "at": isoformat(m.created_at), "error_code": None},
                        *events.get(m.id, [])]}
            for m in rows
        ],
        "messages_truncated": truncated,
    }


async def _message_ids(session: AsyncSession, s: Subject) -> list[str]:
    return list((await session.scalars(
        select(Message.id).where(Message.account_id == s.account_id, Message.to_bidx == s.bidx)
    )).all())


async def _erase_messages(session: AsyncSession, s: Subject) -> dict[str, int]:
    s.message_ids = await _message_ids(session, s)
    # what has not left yet is canceled, not sent to a blank number (billing releases the hold as usual)
    pending = list((await session.scalars(
        select(Message.id).where(Message.account_id == s.account_id, Message.to_bidx == s.bidx,
                                 Message.status.in_([st.value for st in CANCELABLE]))
    )).all())
    canceled = await apply_transitions(
        session, [Transition(mid, Status.CANCELED, error_code=ERASED_ERROR_CODE) for mid in pending],
        account_id=s.account_id,
    )
    result = await session.execute(
        update(Message).where(Message.account_id == s.account_id, Message.to_bidx == s.bidx)
        .values(to_number=ERASED_NUMBER, to_bidx=None, body=ERASED_TEXT)
        .execution_options(synchronize_session=False)
    )
    # a one-recipient batch's text is that person's message: blank it too (templates of larger ones stay)
    batch_ids = set()
    for chunk in _chunks(s.message_ids):
        batch_ids |= set((await session.scalars(
            select(Message.batch_id).where(Message.id.in_(chunk), Message.batch_id.is_not(None)))).all())
    single = 0
    for chunk in _chunks(sorted(batch_ids)):
        done = await session.execute(
            update(Batch).where(Batch.id.in_(chunk), Batch.account_id == s.account_id, Batch.accepted_count == 1)
            .values(body_template=ERASED_TEXT).execution_options(synchronize_session=False)
        )
        single += done.rowcount or 0  # type: ignore[attr-defined]
    return {"messages": result.rowcount or 0, "messages_canceled": len(canceled.applied),  # type: ignore[attr-defined]
            "batch_texts": single}


# -- inbound -----------------------------------------------------------------------------------
async def _export_inbound(session: AsyncSession, s: Subject) -> dict[str, Any]:
    rows = (await session.scalars(
        select(InboundMessage).where(InboundMessage.account_id == s.account_id, InboundMessage.from_bidx == s.bidx)
        .order_by(InboundMessage.id.desc()).limit(EXPORT_MESSAGE_LIMIT)
    )).all()
    return {"inbound_messages": [
        {"id": r.id, "received_at": isoformat(r.received_at), "from": r.from_number, "to": r.to_number,
         "text": r.body, "in_reply_to": r.in_reply_to}
        for r in rows
    ]}


async def _erase_inbound(session: AsyncSession, s: Subject) -> dict[str, int]:
    result = await session.execute(
        update(InboundMessage).where(InboundMessage.account_id == s.account_id, InboundMessage.from_bidx == s.bidx)
        .values(from_number=ERASED_NUMBER, from_bidx=None, body=ERASED_TEXT)
        .execution_options(synchronize_session=False)
    )
    return {"inbound_messages": result.rowcount or 0}  # type: ignore[attr-defined]


# -- contacts (address book) -------------------------------------------------------------------
async def _export_contacts(session: AsyncSession, s: Subject) -> dict[str, Any]:
    from hongyan.campaigns.contacts import contact_json
    from hongyan.campaigns.models import Contact

    rows = (await session.scalars(
        select(Contact).where(Contact.account_id == s.account_id, Contact.phone_bidx == s.bidx)
    )).all()
    return {"contacts": [contact_json(c) for c in rows]}


async def _erase_contacts(session: AsyncSession, s: Subject) -> dict[str, int]:
    """A contact is the person: it is deleted (group memberships with it), not blanked."""
    from hongyan.campaigns.models import Contact, GroupMember

    ids = select(Contact.id).where(Contact.account_id == s.account_id, Contact.phone_bidx == s.bidx)
    await session.execute(delete(GroupMember).where(GroupMember.contact_id.in_(ids)))
    result = await session.execute(delete(Contact).where(Contact.account_id == s.account_id,
                                                         Contact.phone_bidx == s.bidx))
    return {"contacts": result.rowcount or 0}  # type: ignore[attr-defined]


# -- webhook events ----------------------------------------------------------------------------
# Status events and replies (`message.received`, linked by in_reply_to) name a message of the number, so the
# message ids find every event that carries it; the payload itself is sealed and cannot be searched.
async def _export_webhook_events(session: AsyncSession, s: Subject) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for chunk in _chunks(s.message_ids):
        rows = (await session.execute(
            select(WebhookEvent.id, WebhookEvent.event_type, WebhookEvent.message_id, WebhookEvent.endpoint_id,
                   WebhookEvent.status, WebhookEvent.created_at, WebhookEvent.delivered_at)
            .where(WebhookEvent.account_id == s.account_id, WebhookEvent.message_id.in_(chunk))
            .order_by(WebhookEvent.id)
        )).all()
        out += [{"id": r.id, "type": r.event_type, "message_id": r.message_id, "endpoint_id": r.endpoint_id,
                 "status": r.status, "created_at": isoformat(r.created_at), "delivered_at": isoformat(r.delivered_at)}
                for r in rows]
        if len(out) >= EXPORT_EVENT_LIMIT:
            return {"webhook_events": out[:EXPORT_EVENT_LIMIT], "webhook_events_truncated": True}
    return {"webhook_events": out, "webhook_events_truncated": False}


async def rewrite_event_payloads(session: AsyncSession, rows: Sequence[Any]) -> int:
    """Write scrubbed payloads back for (id, payload) rows; one executemany."""
    params = [{"b_id": r.id, "b_payload": scrub_event_payload(r.payload)} for r in rows]
    if params:
        table = WebhookEvent.__table__
        await session.execute(
            update(table).where(table.c.id == bindparam("b_id")).values(payload=bindparam("b_payload")), params
        )
    return len(params)


async def _erase_webhook_events(session: AsyncSession, s: Subject) -> dict[str, int]:
    count = 0
    for chunk in _chunks(s.message_ids):
        rows = (await session.execute(
            select(WebhookEvent.id, WebhookEvent.payload)
            .where(WebhookEvent.account_id == s.account_id, WebhookEvent.message_id.in_(chunk))
        )).all()
        count += await rewrite_event_payloads(session, rows)
    return {"webhook_events": count}


# -- batches' rejected recipients ---------------------------------------------------------------
async def _rejected_pages(session: AsyncSession, s: Subject) -> Any:
    """The account's batches that refused someone, a page at a time (the list is sealed: filtered here)."""
    last = ""
    while True:
        rows = (await session.execute(
            select(Batch.id, Batch.rejected, Batch.created_at)
            .where(Batch.account_id == s.account_id, Batch.rejected_count > 0, Batch.id > last)
            .order_by(Batch.id).limit(PAGE)
        )).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


async def _export_rejections(session: AsyncSession, s: Subject) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    async for rows in _rejected_pages(session, s):
        for row in rows:
            for entry in row.rejected or []:
                raw = entry.get("to")
                if isinstance(raw, str) and s.matches_typed(raw):
                    out.append({"batch_id": row.id, "created_at": isoformat(row.created_at), "index": entry.get("index"),
                                "to": raw, "code": entry.get("code"), "field": entry.get("field")})
    return {"batch_rejections": out}


async def _erase_rejections(session: AsyncSession, s: Subject) -> dict[str, int]:
    changed_entries = 0
    updates: list[dict[str, Any]] = []
    async for rows in _rejected_pages(session, s):
        for row in rows:
            entries, changed = scrub_rejected(list(row.rejected or []), s.matches_typed)
            if changed:
                changed_entries += changed
                updates.append({"b_id": row.id, "b_rejected": entries})
    if updates:
        table = Batch.__table__
        await session.execute(
            update(table).where(table.c.id == bindparam("b_id")).values(rejected=bindparam("b_rejected")), updates
        )
    return {"batch_rejections": changed_entries}


# -- idempotency records (responses replayed for 24 h echo numbers) ------------------------------
async def _export_nothing(_session: AsyncSession, _s: Subject) -> dict[str, Any]:
    return {}  # replay copies of API responses: the same messages as above, not separate data


async def _erase_idempotency(session: AsyncSession, s: Subject) -> dict[str, int]:
    needles = [s.e164.encode(), *(mid.encode() for mid in s.message_ids)]
    rows = (await session.execute(
        select(IdempotencyRecord.key, IdempotencyRecord.response_body)
        .where(IdempotencyRecord.account_id == s.account_id)
    )).all()  # at most a day of the account's keyed requests (the sweep drops older ones)
    doomed = [r.key for r in rows if any(n in r.response_body for n in needles)]
    for chunk in _chunks(doomed):
        await session.execute(delete(IdempotencyRecord).where(
            IdempotencyRecord.account_id == s.account_id, IdempotencyRecord.key.in_(chunk)))
    return {"idempotency_records": len(doomed)}


# order matters: messages first (they find the ids the webhook events and idempotency records need)
COLLECTORS: list[Collector] = [
    Collector("messages", _export_messages, _erase_messages),
    Collector("inbound_messages", _export_inbound, _erase_inbound),
    Collector("webhook_events", _export_webhook_events, _erase_webhook_events),
    Collector("batch_rejections", _export_rejections, _erase_rejections),
    Collector("idempotency_records", _export_nothing, _erase_idempotency),
    Collector("contacts", _export_contacts, _erase_contacts),
]


def register_collector(collector: Collector) -> None:
    """Add a kind of stored personal data (contacts, opt-outs) to every export and erasure."""
    if all(c.name != collector.name for c in COLLECTORS):
        COLLECTORS.append(collector)


# -- the two requests ----------------------------------------------------------------------------
async def export_number(session: AsyncSession, *, account_id: str, e164: str) -> dict[str, Any]:
    """Everything this account stores about the number, as a JSON-able document (newest first, capped)."""
    subject = await subject_for(session, account_id=account_id, e164=e164)
    document: dict[str, Any] = {
        "phone_number": e164,
        "account_id": account_id,
        "generated_at": isoformat(utcnow()),
        "limits": {"messages": EXPORT_MESSAGE_LIMIT, "webhook_events": EXPORT_EVENT_LIMIT},
    }
    for collector in COLLECTORS:
        document.update(await collector.export(session, subject))
    if document.get("messages_truncated"):
        document["note"] = (f"Only the newest {EXPORT_MESSAGE_LIMIT} messages are included; list the rest with "
                            "GET /v1/messages?to=<number> (cursor pagination).")
    return document


async def erase_number(session: AsyncSession, *, account_id: str, e164: str, actor: Actor) -> dict[str, int]:
    """Replace the number and content everywhere this account stores them; counts per table. Audited with the
    blind index as target (the log never holds the number). Run inside one write transaction."""
    subject = await subject_for(session, account_id=account_id, e164=e164)
    counts: dict[str, int] = {}
    for collector in COLLECTORS:
        counts.update(await collector.erase(session, subject))
    await record(session, actor=actor, action="privacy.erased", account_id=account_id,
                 target_type="phone_number", target_id=subject.bidx, after=dict(counts))
    return counts
