"""Opt-out and opt-in replies: the inbound (MO) hook that changes the suppression list, and the optional
automatic confirmation sent back.

The hook runs inside the transaction that stores the reply (messaging.inbound.register_hook), so a reply
is never stored without its effect on the list, nor the other way round. Which scope a reply changes:
- STOPALL (compliance.opt_out.ACCOUNT_WIDE_KEYWORDS): always the whole account ("").
- the account chose `opt_out_per_signature`: the signature of the message replied to (its 【name】 looked
  up among the account's signatures); a message without a known signature: the whole account.
- otherwise the whole account.
An opt-in (START, 订阅) removes the entries that the person's own replies made in that scope and
account-wide; entries a person of the account added (console, API, import) stay until a person removes
them — they may record a complaint or a do-not-contact list that a START must not override.

Confirmations: when the account set `opt_out_reply`, the hook writes an outbox row (topic
`opt_out_reply`, no personal data in it) in the same transaction; after commit the worker runtime
(dispatch.runtime.on_inbound, and a periodic retry) sends it through the normal submit path as a
notification and deletes the row in that submit's own transaction — crash-safe, and sent at most once
even with several workers (the delete is conditional; the loser rolls back its submit).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.compliance import suppression
from hongyan.compliance.models import Signature
from hongyan.compliance.opt_out import MAX_REPLY_CHARS, ReplyMatch, match_reply, signature_name
from hongyan.compliance.settings import ComplianceSettings
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.messaging import inbound
from hongyan.messaging.models import InboundMessage, Message
from hongyan.messaging.numbers import NumberProblem, normalize

log = logging.getLogger(__name__)

CONFIRMATION_TOPIC = "opt_out_reply"
CONFIRMATION_SOURCE = "opt_out_reply"  # Batch.source of confirmations (the gate may exempt it)
CONFIRMATION_RETRY_S = 30.0  # how often a worker looks for confirmations left by a crash
CONFIRMATION_MAX_AGE = timedelta(hours=24)  # an older confirmation is dropped, not sent late


class _AlreadySent(Exception):
    """Another worker sent this confirmation first: this submit must roll back."""


def _e164(number: str, region: str) -> str:
    try:
        return normalize(number, region).e164
    except NumberProblem:
        return number  # a short code or an odd sender: matched as stored, like the reply attribution


async def _signature_of(
    session: AsyncSession, message_id: str | None, choices: ComplianceSettings
) -> str | None:
    """The 【name】 of the message replied to."""
    if not message_id:
        return None
    body = await session.scalar(select(Message.body).where(Message.id == message_id))
    return signature_name(body or "", choices.signature_position)


async def handle_replies(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The MO hook: opt-out replies add the sender to the account's list, opt-ins remove it."""
    candidates = [
        r for r in rows if r.get("account_id") and r.get("body") and len(r["body"]) <= MAX_REPLY_CHARS
    ]
    if not candidates:
        return
    account_ids = sorted({r["account_id"] for r in candidates})
    accounts = {
        a.id: a for a in (await session.scalars(select(Account).where(Account.id.in_(account_ids)))).all()
    }
    for row in candidates:
        account = accounts.get(row["account_id"])
        if account is None:
            continue
        choices = ComplianceSettings.from_account(account)
        found = match_reply(
            row["body"], opt_out_keywords=choices.opt_out_keywords, opt_in_keywords=choices.opt_in_keywords
        )
        if found is not None:
            await _apply(session, account, choices, found, row)


async def _apply(
    session: AsyncSession,
    account: Account,
    choices: ComplianceSettings,
    found: ReplyMatch,
    row: dict[str, Any],
) -> None:
    e164 = _e164(row["from_number"], account.default_region)
    needs_signature = choices.opt_out_per_signature or (found.kind == "opt_out" and choices.opt_out_reply)
    name = await _signature_of(session, row.get("in_reply_to"), choices) if needs_signature else None
    scope = suppression.ACCOUNT_SCOPE
    if choices.opt_out_per_signature and name and not found.account_wide:
        scope = (
            await session.scalar(
                select(Signature.id).where(Signature.account_id == account.id, Signature.name == name)
            )
            or ""
        )
    if found.kind == "opt_in":
        await suppression.remove(
            session, account.id, [e164], scopes=sorted({scope, suppression.ACCOUNT_SCOPE}), sources=("reply",)
        )
        return
    await suppression.add(
        session, account.id, [e164], scope, "reply", keyword=found.keyword, inbound_id=row["id"]
    )
    if choices.opt_out_reply:
        await (await session.connection()).execute(
            insert(OutboxItem.__table__),
            [
                {
                    "topic": CONFIRMATION_TOPIC,
                    "lane": 1,
                    "available_at": utcnow(),
                    "created_at": utcnow(),
                    "payload": {
                        "inbound_id": row["id"],
                        "account_id": account.id,
                        "text": choices.opt_out_reply,
                        "signature": name,
                    },
                }
            ],
        )


inbound.register_hook(handle_replies)


# -- confirmations (after commit) -------------------------------------------------------------------
async def send_confirmations(db: Database, settings: Settings, *, limit: int = 50) -> int:
    """Send pending opt-out confirmations; returns how many were sent. Safe to run from several workers."""
    from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch

    async with db.read() as session:
        items = list(
            (
                await session.scalars(
                    select(OutboxItem)
                    .where(OutboxItem.topic == CONFIRMATION_TOPIC)
                    .order_by(OutboxItem.id)
                    .limit(limit)
                )
            ).all()
        )
    sent = 0
    for item in items:
        payload = item.payload
        async with db.read() as session:
            reply = await session.get(InboundMessage, payload.get("inbound_id"))
            account = await session.get(Account, payload.get("account_id"))
        too_old = utcnow() - item.created_at > CONFIRMATION_MAX_AGE
        if reply is None or account is None or too_old or not reply.from_number.lstrip("+").isdigit():
            await _drop(db, item)  # erased, gone, or no longer worth sending
            continue

        async def claim(session: AsyncSession, _result: Any, item: OutboxItem = item) -> None:
            gone = await session.execute(delete(OutboxItem).where(*_this_item(item)))
            if not gone.rowcount:
                raise _AlreadySent

        text = str(payload["text"])
        # signed like the message replied to, unless the account wrote a signature into the text
        signature = None if "【" in text else payload.get("signature")
        request = SubmitRequest(
            text=text,
            recipients=[Recipient(to=reply.from_number)],
            message_type="notification",
            default_region=account.default_region,
            signature=signature,
        )
        try:
            await submit_batch(
                db, settings, request, account_id=account.id, source=CONFIRMATION_SOURCE, after_insert=claim
            )
            sent += 1
        except _AlreadySent:
            continue
        except HongyanError as exc:  # refused (balance, signature, gate): a confirmation is not retried
            log.warning("opt-out confirmation for %s not sent: %s", payload.get("inbound_id"), exc.code)
            await _drop(db, item)
    return sent


async def _drop(db: Database, item: OutboxItem) -> None:
    async with db.write() as session:
        await session.execute(delete(OutboxItem).where(*_this_item(item)))


def _this_item(item: OutboxItem) -> tuple[Any, ...]:
    """The outbox row read earlier, and not another one that took its id since: SQLite gives a new row the
    highest rowid + 1, so after a delete of the newest row its id comes back (a submit's own dispatch row
    got the id of the confirmation it had just claimed, and a second worker's claim took that row)."""
    return (OutboxItem.id == item.id, OutboxItem.topic == CONFIRMATION_TOPIC, OutboxItem.created_at == item.created_at)
