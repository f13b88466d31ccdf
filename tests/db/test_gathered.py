"""db.gathered: inserts gathered during a write transaction and sent at its end — on PostgreSQL one statement
for a few rows (data-modifying CTEs), elsewhere (and for many rows) one INSERT per part, in order."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, select

from hongyan.core.clock import utcnow
from hongyan.db import gathered as gathered_module
from hongyan.db.engine import Database
from hongyan.db.gathered import Gathered, insert
from hongyan.dispatch.models import OutboxItem
from hongyan.messaging.models import Batch, MessageEvent
from support import AccountFixture


class _Inserts:
    """The INSERT statements sent (a combined one starts with WITH)."""

    def __init__(self, db: Database) -> None:
        self.sent: list[str] = []
        self.engine = db.engine.sync_engine

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().startswith(("INSERT", "WITH")):
                self.sent.append(statement)

        self.listener = seen
        event.listen(self.engine, "before_cursor_execute", seen)

    def __enter__(self) -> _Inserts:
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self.listener)


def _batch(batch_id: str, account_id: str) -> dict[str, Any]:
    return {"id": batch_id, "account_id": account_id, "source": "api", "campaign_id": None,
            "message_type": "verification", "sender": None, "body_template": "x", "recipients_total": 1,
            "accepted_count": 1, "rejected_count": 0, "segments_total": 1, "price_micros_total": 0,
            "currency": "CNY", "rejected": [], "client_ref": None, "scheduled_at": None, "created_at": utcnow()}


def _outbox(n: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"topic": "dispatch", "lane": 0, "payload": {"ids": [f"msg_{i}"]}, "available_at": now + timedelta(
        seconds=30), "created_at": now} for i in range(n)]


def _events(message_id: str, n: int) -> list[dict[str, Any]]:
    return [{"message_id": message_id, "status": "queued", "occurred_at": utcnow(), "error_code": None,
             "carrier_error_code": None} for _ in range(n)]


async def test_a_few_rows_of_several_tables_are_one_statement_on_postgresql(
    db: Database, account: AccountFixture
) -> None:
    with _Inserts(db) as inserts:
        async with db.write() as session:
            gathered = Gathered.begin(session)
            gathered.add(Batch.__table__, [_batch("bat_g1", account.account_id)])
            gathered.add(OutboxItem.__table__, _outbox(1), returning="id")
            gathered.add(MessageEvent.__table__, _events("msg_g1", 2))
            assert inserts.sent == []  # nothing is sent before the flush
            returned = await gathered.flush(session)
    assert len(inserts.sent) == (3 if db.is_sqlite else 1)
    if not db.is_sqlite:
        assert inserts.sent[0].lstrip().startswith("WITH")
    async with db.read() as session:
        assert await session.scalar(select(Batch.id).where(Batch.id == "bat_g1")) == "bat_g1"
        outbox_ids = list((await session.scalars(select(OutboxItem.id))).all())
        assert await session.scalar(select(func.count()).select_from(MessageEvent).where(
            MessageEvent.message_id == "msg_g1")) == 2
    assert returned == outbox_ids and len(returned) == 1


async def test_many_rows_go_one_insert_per_part_and_ids_come_back_in_row_order(db: Database) -> None:
    n = gathered_module.MAX_ROWS + 3
    rows = _outbox(n)
    with _Inserts(db) as inserts:
        async with db.write() as session:
            gathered = Gathered.begin(session)
            gathered.add(MessageEvent.__table__, _events("msg_g2", 1))
            gathered.add(OutboxItem.__table__, rows, returning="id")
            returned = await gathered.flush(session)
    assert not any(s.lstrip().startswith("WITH") for s in inserts.sent)
    async with db.read() as session:
        stored = {oid: payload for oid, payload in (await session.execute(
            select(OutboxItem.id, OutboxItem.payload))).all()}
    assert [stored[oid] for oid in returned] == [r["payload"] for r in rows]


async def test_a_second_flush_sends_nothing_and_keeps_the_returned_ids(db: Database) -> None:
    async with db.write() as session:
        gathered = Gathered.begin(session)
        gathered.add(OutboxItem.__table__, _outbox(1), returning="id")
        gathered.add(MessageEvent.__table__, _events("msg_g3", 1))
        first = await gathered.flush(session)
        with _Inserts(db) as inserts:
            await insert(session, MessageEvent.__table__, _events("msg_g3", 1))  # gathered again
            assert inserts.sent == []
            again = await gathered.flush(session)
        assert len(inserts.sent) == 1
    assert again == first and len(first) == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(MessageEvent).where(
            MessageEvent.message_id == "msg_g3")) == 2


async def test_insert_without_gathering_is_sent_at_once(db: Database) -> None:
    async with db.write() as session:
        with _Inserts(db) as inserts:
            await insert(session, MessageEvent.__table__, _events("msg_g4", 2))
        assert len(inserts.sent) == 1
        assert await session.scalar(select(func.count()).select_from(MessageEvent).where(
            MessageEvent.message_id == "msg_g4")) == 2


async def test_a_failing_part_stores_none_of_them(db: Database, account: AccountFixture) -> None:
    async with db.write() as session:
        session.add(Batch(**_batch("bat_dup", account.account_id)))
    try:
        async with db.write() as session:
            gathered = Gathered.begin(session)
            gathered.add(MessageEvent.__table__, _events("msg_g5", 1))
            gathered.add(Batch.__table__, [_batch("bat_dup", account.account_id)])  # primary key taken
            await gathered.flush(session)
    except Exception as exc:
        assert "bat_dup" in str(exc) or "UNIQUE" in str(exc).upper()
    else:
        raise AssertionError("the duplicate batch id was stored")
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(MessageEvent).where(
            MessageEvent.message_id == "msg_g5")) == 0
