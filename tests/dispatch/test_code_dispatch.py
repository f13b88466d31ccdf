"""A verification code's queued → sending: one statement without a transaction on PostgreSQL (no BEGIN and
COMMIT round trips for the busy verification worker), and a transaction again whenever something else must
be written with it (a `message.sending` webhook event)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch.queue import MemoryQueue
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from hongyan.ops.metrics import TRANSITIONS
from hongyan.webhooks.models import WebhookEvent
from hongyan.webhooks.service import create_endpoint
from support import AccountFixture, wait_until


def _postgres_only(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite: every status change is in a transaction (its writers are serialized anyway)")


class _Updates:
    """Each UPDATE of messages from `queued` to `sending`: whether it ran outside a transaction (AUTOCOMMIT)."""

    def __init__(self, db: Database) -> None:
        self.autocommit: list[bool] = []
        self.engine = db.engine.sync_engine

        def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any, _many: bool) -> None:
            values = list(parameters or ())  # queued → sending: both states are bound (sending → sent has one)
            if statement.lstrip().startswith(("UPDATE message ", "WITH u AS")) and {"queued", "sending"} <= {
                    v for v in values if isinstance(v, str)}:
                self.autocommit.append(context.execution_options.get("isolation_level") == "AUTOCOMMIT")

        self.listener = seen
        event.listen(self.engine, "before_cursor_execute", seen)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self.listener)


async def _code(db: Database, settings: Settings, account: AccountFixture, runtime: Runtime, to: str) -> str:
    request = SubmitRequest(text="Your code is 123456", recipients=[Recipient(to=to)], message_type="verification")
    result = await submit_batch(db, settings, request, account_id=account.account_id, source="api",
                                publisher=runtime.relay)
    return result.accepted[0].id


async def _history(db: Database, message_id: str) -> list[str]:
    async with db.read() as session:
        return list((await session.scalars(select(MessageEvent.status).where(
            MessageEvent.message_id == message_id).order_by(MessageEvent.id))).all())


async def _delivered(db: Database, message_id: str) -> None:
    async def done() -> bool:
        async with db.read() as session:
            return await session.scalar(select(Message.status).where(Message.id == message_id)) == "delivered"

    await wait_until(done, message=f"{message_id} delivered")


async def test_a_code_goes_to_sending_in_one_statement_without_a_transaction(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    _postgres_only(db)
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    updates = _Updates(db)
    sending_before = TRANSITIONS.labels("sending")._value.get()
    try:
        message_id = await _code(db, settings, account, runtime, "+8613800000001")  # sandbox: delivered
        await _delivered(db, message_id)
    finally:
        updates.close()
        await runtime.stop()
    assert updates.autocommit == [True]
    # the history row came with the change, and the change was counted as committed (ops.metrics)
    assert await _history(db, message_id) == ["queued", "sending", "sent", "delivered"]
    assert TRANSITIONS.labels("sending")._value.get() == sending_before + 1


async def test_a_code_whose_sending_event_is_subscribed_goes_in_a_transaction(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    _postgres_only(db)
    async with db.write() as session:
        await create_endpoint(session, account_id=account.account_id, url="https://hooks.example.com/sms",
                              event_types=["message.sending", "message.delivered"])
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    updates = _Updates(db)
    try:
        message_id = await _code(db, settings, account, runtime, "+8613800000001")
        await _delivered(db, message_id)
    finally:
        updates.close()
        await runtime.stop()
    assert updates.autocommit == [False]  # the event is written in the same transaction as the change
    async with db.read() as session:
        events = (await session.scalars(select(WebhookEvent.event_type).where(
            WebhookEvent.message_id == message_id).order_by(WebhookEvent.created_at))).all()
    assert list(events) == ["message.sending", "message.delivered"]
