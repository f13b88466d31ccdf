"""Retention: an account's message content and numbers are purged N days after the messages were accepted.

`account.retention_days` (None: kept) is set by the account's admins. The workers call `purge_expired`
every `privacy_sweep_s`: final messages older than the cutoff get the same treatment as an erasure (number
and text replaced, blind index cleared; status, segments, price and times stay, so statistics and billing
do not change), and so do inbound messages, the webhook payloads that carry them and the batches' texts and
rejected recipients. Work goes in transactions of `batch_size` rows, so no lock is held for long; the
cleared blind index marks a purged row, so each run starts where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.audit.service import Actor, record
from hongyan.core.clock import utcnow
from hongyan.core.errors import NotFound, Unprocessable
from hongyan.db.engine import Database
from hongyan.messaging.models import Batch, InboundMessage, Message
from hongyan.messaging.states import FINAL
from hongyan.privacy.scrub import (
    ERASED_NUMBER,
    ERASED_TEXT,
    INBOUND_EVENT_TYPE,
    inbound_id_of,
    scrub_rejected,
)
from hongyan.privacy.service import rewrite_event_payloads
from hongyan.webhooks.models import WebhookEvent

MIN_DAYS, MAX_DAYS = 1, 3650
_FINAL = [s.value for s in FINAL]


@dataclass(slots=True)
class PurgeCounts:
    accounts: int = 0
    messages: int = 0
    inbound_messages: int = 0
    webhook_events: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"accounts": self.accounts, "messages": self.messages, "inbound_messages": self.inbound_messages,
                "webhook_events": self.webhook_events, "batches": self.batches}


# -- the account setting --------------------------------------------------------------------------
async def get_retention(session: AsyncSession, *, account_id: str) -> int | None:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", f"No account {account_id}.", field="account")
    return account.retention_days


def check_days(days: int | None, *, field_name: str = "retention_days") -> int | None:
    if days is not None and not MIN_DAYS <= days <= MAX_DAYS:
        raise Unprocessable("invalid_retention_days",
                            f"Keep content between {MIN_DAYS} and {MAX_DAYS} days, or null to keep it.",
                            field=field_name)
    return days


async def set_retention(session: AsyncSession, *, account_id: str, days: int | None, actor: Actor) -> int | None:
    """Change the retention period (audited as account.retention_changed when it changes)."""
    check_days(days)
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", f"No account {account_id}.", field="account")
    before = account.retention_days
    if before != days:
        account.retention_days = days
        await record(session, actor=actor, action="account.retention_changed", account_id=account_id,
                     target_type="account", target_id=account_id,
                     before={"retention_days": before}, after={"retention_days": days})
    return days


# -- the sweep ------------------------------------------------------------------------------------
async def _purge_messages(session: AsyncSession, account_id: str, cutoff: datetime, limit: int) -> tuple[int, int, int]:
    rows = (await session.execute(
        select(Message.id, Message.batch_id).where(
            Message.account_id == account_id, Message.status.in_(_FINAL), Message.created_at < cutoff,
            Message.to_bidx.is_not(None),
        ).limit(limit)
    )).all()
    if not rows:
        return 0, 0, 0
    ids = [r.id for r in rows]
    await session.execute(
        update(Message).where(Message.id.in_(ids), Message.to_bidx.is_not(None))
        .values(to_number=ERASED_NUMBER, to_bidx=None, body=ERASED_TEXT)
        .execution_options(synchronize_session=False)
    )
    # the message's own status events; a reply (`message.received`) linked to it goes with its inbound row
    events = (await session.execute(
        select(WebhookEvent.id, WebhookEvent.payload).where(
            WebhookEvent.account_id == account_id, WebhookEvent.message_id.in_(ids),
            WebhookEvent.event_type != INBOUND_EVENT_TYPE)
    )).all()
    rewritten = await rewrite_event_payloads(session, events)
    batch_ids = sorted({r.batch_id for r in rows if r.batch_id})
    batches = 0
    if batch_ids:
        found = (await session.execute(
            select(Batch.id, Batch.rejected).where(Batch.id.in_(batch_ids), Batch.account_id == account_id)
        )).all()
        params = [{"b_id": b.id, "b_text": ERASED_TEXT, "b_rejected": scrub_rejected(list(b.rejected or []))[0]}
                  for b in found]
        table = Batch.__table__
        await session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(body_template=bindparam("b_text"), rejected=bindparam("b_rejected")), params,
        )
        batches = len(params)
    return len(ids), rewritten, batches


async def _purge_inbound(session: AsyncSession, account_id: str, cutoff: datetime, limit: int) -> tuple[int, int]:
    rows = (await session.execute(
        select(InboundMessage.id, InboundMessage.in_reply_to).where(
            InboundMessage.account_id == account_id, InboundMessage.received_at < cutoff,
            InboundMessage.from_bidx.is_not(None),
        ).limit(limit)
    )).all()
    if not rows:
        return 0, 0
    ids = [r.id for r in rows]
    await session.execute(
        update(InboundMessage).where(InboundMessage.id.in_(ids))
        .values(from_number=ERASED_NUMBER, from_bidx=None, body=ERASED_TEXT)
        .execution_options(synchronize_session=False)
    )
    replied_to = sorted({r.in_reply_to for r in rows if r.in_reply_to})
    purged = set(ids)
    events: list[Any] = []
    if replied_to:
        candidates = (await session.execute(
            select(WebhookEvent.id, WebhookEvent.payload).where(
                WebhookEvent.account_id == account_id, WebhookEvent.event_type == INBOUND_EVENT_TYPE,
                WebhookEvent.message_id.in_(replied_to))
        )).all()
        events = [e for e in candidates if inbound_id_of(e.payload) in purged]
    return len(ids), await rewrite_event_payloads(session, events)


async def purge_account(db: Database, *, account_id: str, days: int, now: datetime, batch_size: int) -> PurgeCounts:
    counts = PurgeCounts(accounts=1)
    cutoff = now - timedelta(days=days)
    while True:
        async with db.write() as session:
            messages, events, batches = await _purge_messages(session, account_id, cutoff, batch_size)
        counts.messages += messages
        counts.webhook_events += events
        counts.batches += batches
        if messages < batch_size:
            break
    while True:
        async with db.write() as session:
            inbound, events = await _purge_inbound(session, account_id, cutoff, batch_size)
        counts.inbound_messages += inbound
        counts.webhook_events += events
        if inbound < batch_size:
            break
    return counts


async def purge_expired(db: Database, *, now: datetime | None = None, batch_size: int = 1000) -> PurgeCounts:
    """Purge content past every account's retention period; each `batch_size` rows commit on their own."""
    now = now or utcnow()
    async with db.read() as session:
        accounts = (await session.execute(
            select(Account.id, Account.retention_days).where(Account.retention_days.is_not(None)).order_by(Account.id)
        )).all()
    total = PurgeCounts()
    for account in accounts:
        done = await purge_account(db, account_id=account.id, days=int(account.retention_days), now=now,
                                   batch_size=batch_size)
        total.accounts += 1
        total.messages += done.messages
        total.inbound_messages += done.inbound_messages
        total.webhook_events += done.webhook_events
        total.batches += done.batches
    return total
