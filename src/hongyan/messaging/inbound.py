"""Inbound (mobile-originated) messages: store, attribute to an account, notify, hand to hooks.

An MO is attributed to the account that most recently sent a message to its sender's number (a reply),
and linked to that message (`in_reply_to`). Hooks registered with `register_hook` run in the same
transaction as the insert; the compliance module registers opt-out keyword handling there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.channels.base import InboundSms
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.messaging.models import InboundMessage, Message
from hongyan.webhooks import service as webhooks

InboundHook = Callable[[AsyncSession, list[dict[str, Any]]], Awaitable[None]]
_hooks: list[InboundHook] = []


def register_hook(hook: InboundHook) -> None:
    """Run `hook(session, rows)` for every stored batch of inbound messages (rows as stored)."""
    if hook not in _hooks:
        _hooks.append(hook)


def normalize_msisdn(number: str) -> str:
    """Carrier addresses come without '+' (TON international) — store E.164 when it looks like one."""
    number = number.strip()
    if number.isdigit() and len(number) > 8:
        return "+" + number
    return number


async def store_inbound(session: AsyncSession, messages: Sequence[InboundSms]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sms in messages:
        sender = normalize_msisdn(sms.from_number)
        last = (
            await session.execute(
                select(Message.id, Message.account_id).where(Message.to_bidx == blind_index(sender)).order_by(Message.id.desc()).limit(1)
            )
        ).first()
        rows.append({
            "id": ids.new_id("inb"), "account_id": last.account_id if last else None, "channel_id": sms.channel_id,
            "from_number": sender[:32], "from_bidx": blind_index(sender[:32]), "to_number": sms.to_number[:32], "body": sms.body,
            "in_reply_to": last.id if last else None, "received_at": sms.received_at,
        })
    if rows:
        await (await session.connection()).execute(insert(InboundMessage.__table__), rows)
        await webhooks.enqueue_inbound_events(session, rows, utcnow())
        for hook in _hooks:
            await hook(session, rows)
    return rows


async def list_inbound(session: AsyncSession, *, account_id: str, limit: int = 50,
                       before: str | None = None, from_number: str | None = None) -> list[InboundMessage]:
    query = select(InboundMessage).where(InboundMessage.account_id == account_id)
    if before:
        query = query.where(InboundMessage.id < before)
    if from_number:
        query = query.where(InboundMessage.from_bidx == blind_index(from_number))
    return list((await session.scalars(query.order_by(InboundMessage.id.desc()).limit(limit))).all())
