"""A verification code's queued → sending, and the record of an accepted submit (sending → sent with its
carrier ids): each one statement without a transaction on PostgreSQL (no BEGIN and COMMIT round trips for
the busy verification worker), and a transaction again whenever something else must be written with it (a
`message.sending` or `message.sent` webhook event)."""

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
    """Each UPDATE of messages from `queued` to `sending` (`sent=True`: each record of an accepted submit, the
    change that sets carrier ids): whether it ran outside a transaction (AUTOCOMMIT)."""

    def __init__(self, db: Database, *, sent: bool = False) -> None:
        self.autocommit: list[bool] = []
        self.engine = db.engine.sync_engine

        def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any, _many: bool) -> None:
            values = list(parameters or ())  # queued → sending: both states are bound (sending → sent has one)
            if sent:
                matched = "carrier_message_id=v.v_cid" in statement and "sent" in values
            else:
                matched = statement.lstrip().startswith(("UPDATE message ", "WITH u AS")) and {
                    "queued", "sending"} <= {v for v in values if isinstance(v, str)}
            if matched:
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


async def _watched_code(db: Database, settings: Settings, account: AccountFixture, *,
                        sent: bool = False) -> tuple[str, list[bool]]:
    """Send one code through a runtime (sandbox: delivered) and return it with `_Updates.autocommit` of its
    queued → sending change (`sent=True`: of its submit's record)."""
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    updates = _Updates(db, sent=sent)
    try:
        message_id = await _code(db, settings, account, runtime, "+8613800000001")
        await _delivered(db, message_id)
    finally:
        updates.close()
        await runtime.stop()
    return message_id, updates.autocommit


async def _subscribe(db: Database, account: AccountFixture, event_types: list[str]) -> None:
    async with db.write() as session:
        await create_endpoint(session, account_id=account.account_id, url="https://hooks.example.com/sms",
                              event_types=event_types)


async def _webhook_events(db: Database, message_id: str) -> list[str]:
    async with db.read() as session:
        return list((await session.scalars(select(WebhookEvent.event_type).where(
            WebhookEvent.message_id == message_id).order_by(WebhookEvent.created_at))).all())


async def test_a_code_goes_to_sending_in_one_statement_without_a_transaction(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    _postgres_only(db)
    sending_before = TRANSITIONS.labels("sending")._value.get()
    message_id, autocommit = await _watched_code(db, settings, account)
    assert autocommit == [True]
    # the history row came with the change, and the change was counted as committed (ops.metrics)
    assert await _history(db, message_id) == ["queued", "sending", "sent", "delivered"]
    assert TRANSITIONS.labels("sending")._value.get() == sending_before + 1


async def test_a_code_whose_sending_event_is_subscribed_goes_in_a_transaction(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    _postgres_only(db)
    await _subscribe(db, account, ["message.sending", "message.delivered"])
    message_id, autocommit = await _watched_code(db, settings, account)
    assert autocommit == [False]  # the event is written in the same transaction as the change
    assert await _webhook_events(db, message_id) == ["message.sending", "message.delivered"]


async def test_an_accepted_submit_is_recorded_in_one_statement_without_a_transaction(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    _postgres_only(db)
    sent_before = TRANSITIONS.labels("sent")._value.get()
    message_id, autocommit = await _watched_code(db, settings, account, sent=True)
    assert autocommit == [True]
    assert await _history(db, message_id) == ["queued", "sending", "sent", "delivered"]
    assert TRANSITIONS.labels("sent")._value.get() == sent_before + 1
    async with db.read() as session:
        carrier_id = await session.scalar(select(Message.carrier_message_id).where(Message.id == message_id))
    assert carrier_id


async def test_an_accepted_submit_whose_sent_event_is_subscribed_is_recorded_in_a_transaction(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    _postgres_only(db)
    await _subscribe(db, account, ["message.sent"])
    message_id, autocommit = await _watched_code(db, settings, account, sent=True)
    assert autocommit == [False]
    assert await _webhook_events(db, message_id) == ["message.sent"]


async def test_a_code_submit_writes_its_rows_in_one_statement(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    """The submit's batch, message, history and claimed outbox row (db.gathered): one INSERT statement on
    PostgreSQL, whose claimed outbox id is what the publish after the commit names."""
    _postgres_only(db)
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    inserts: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if any(f"INSERT INTO {table} " in statement for table in ("batch", "message", "outbox")):
            inserts.append(statement)  # the submit's rows (not the runtime's own: leases, …)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        message_id = await _code(db, settings, account, runtime, "+8613800000001")
        written = list(inserts)
        await _delivered(db, message_id)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
        await runtime.stop()
    assert len(written) == 1, written
    for table in ("batch", "message", "message_event", "outbox"):
        assert f"INSERT INTO {table} " in written[0]
    assert await _history(db, message_id) == ["queued", "sending", "sent", "delivered"]
