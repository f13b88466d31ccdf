"""Publish after commit: a submit given this process's outbox relay stores its messages `queued` with their
outbox rows claimed and publishes them right after the commit (no relay round); a failed publish leaves
them to the relay; messages that may not leave yet keep the ordinary outbox. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.dispatch.outbox import CLAIM_S, Relay
from hongyan.dispatch.queue import DISPATCH, MemoryQueue
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from support import AccountFixture

CODE = "您的验证码是123456,5分钟内有效。"


class BrokenQueue(MemoryQueue):
    """The broker went away between the commit and the publish."""

    async def publish(self, topic: str, lane: int, body: dict[str, Any]) -> None:
        raise ConnectionError("broker unreachable")


async def _state(db: Database, message_id: str) -> tuple[str, list[str], list[OutboxItem]]:
    async with db.read() as session:
        status = await session.scalar(select(Message.status).where(Message.id == message_id))
        history = list((await session.scalars(
            select(MessageEvent.status).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id))).all())
        items = list((await session.scalars(select(OutboxItem))).all())
    return str(status), history, [i for i in items if message_id in i.payload["ids"]]


async def _send(db: Database, settings: Settings, account: AccountFixture, relay: Relay, **extra: Any) -> str:
    request = SubmitRequest(text=CODE, recipients=[Recipient("+8613800138000")], message_type="verification",
                            **extra)
    result = await submit_batch(db, settings, request, account_id=account.account_id, source="api",
                                publisher=relay)
    return result.accepted[0].id


async def test_a_code_is_queued_and_published_at_its_commit(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    queue = MemoryQueue()
    relay = Relay(db, queue)
    before = utcnow()
    message_id = await _send(db, settings, account, relay)
    # on the queue already, on lane 0, without any relay round
    assert queue.depth(DISPATCH) == {0: 1, 1: 0, 2: 0}
    assert (await queue.get(DISPATCH, max_lane=0)).body == {"ids": [message_id], "account": account.account_id}
    assert relay.published == 1
    status, history, items = await _state(db, message_id)
    assert status == "queued" and history == ["queued"]  # as if the relay had moved it
    # its outbox row was stored claimed (a crash before the publish: the relay sends it after CLAIM_S) …
    assert len(items) == 1 and items[0].available_at >= before + timedelta(seconds=CLAIM_S - 1)
    # … and is deleted with the relay's published rows
    assert await relay.once() == 0  # nothing due: the claimed row is not published twice
    await relay.forget(now=True)
    assert (await _state(db, message_id))[2] == []


async def test_a_failed_publish_leaves_the_code_to_the_relay(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    message_id = await _send(db, settings, account, Relay(db, BrokenQueue()))  # accepted all the same
    status, _history, items = await _state(db, message_id)
    assert status == "queued"
    assert len(items) == 1 and items[0].available_at <= utcnow()  # un-claimed at once: due now
    queue = MemoryQueue()
    relay = Relay(db, queue)
    assert await relay.once() == 1
    assert (await queue.get(DISPATCH, max_lane=0)).body == {"ids": [message_id], "account": account.account_id}  # the relay keeps the account
    assert relay.republished == 1  # it was `queued` already: published as it is


async def test_a_scheduled_message_keeps_the_ordinary_outbox(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    queue = MemoryQueue()
    relay = Relay(db, queue)
    at = utcnow() + timedelta(hours=2)
    message_id = await _send(db, settings, account, relay, scheduled_at=at)
    assert queue.depth(DISPATCH) == {0: 0, 1: 0, 2: 0} and relay.published == 0
    status, history, items = await _state(db, message_id)
    assert status == "scheduled" and history == ["scheduled"]
    assert len(items) == 1 and abs((items[0].available_at - at).total_seconds()) < 1
