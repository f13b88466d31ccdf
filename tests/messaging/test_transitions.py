"""apply_transitions on real SQLite and PostgreSQL: guarded, recorded, race-free."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, select

from hongyan.channels.models import CarrierMessage
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.states import Status
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from hongyan.messaging.transitions import Transition, apply_transitions
from support import AccountFixture


async def _messages(db: Database, settings: Settings, account: AccountFixture, n: int) -> list[str]:
    request = SubmitRequest(text="t", recipients=[Recipient(to=f"+86139000{i + 100:05d}") for i in range(n)])
    result = await submit_batch(db, settings, request, account_id=account.account_id, source="api")
    return [m.id for m in result.accepted]


async def _status(db: Database, mid: str) -> str:
    async with db.read() as session:
        return str(await session.scalar(select(Message.status).where(Message.id == mid)))


async def test_illegal_transitions_change_nothing(db: Database, settings: Settings, account: AccountFixture) -> None:
    (mid,) = await _messages(db, settings, account, 1)
    async with db.write() as session:
        out = await apply_transitions(session, [Transition(mid, Status.DELIVERED)])
    assert out.applied == [] and [t.message_id for t in out.skipped] == [mid]
    assert await _status(db, mid) == "accepted"
    for to in (Status.QUEUED, Status.SENDING):
        async with db.write() as session:
            assert (await apply_transitions(session, [Transition(mid, to)])).applied_ids == [mid]
    async with db.write() as session:  # per-row path (carrier id) is guarded too
        out = await apply_transitions(session, [Transition(mid, Status.DELIVERED, carrier_message_id="c1")])
    assert out.applied == [] and await _status(db, mid) == "sending"
    async with db.write() as session:
        out = await apply_transitions(session, [Transition(mid, Status.SENT, carrier_message_id="c1", channel_id="chn_x")])
    assert out.applied_ids == [mid]
    async with db.read() as session:
        m = await session.scalar(select(Message).where(Message.id == mid))
        events = (await session.scalars(select(MessageEvent.status).where(MessageEvent.message_id == mid)
                                        .order_by(MessageEvent.id))).all()
    assert m is not None and m.carrier_message_id == "c1" and m.channel_id == "chn_x" and m.sent_at is not None
    assert m.attempts == 1
    assert list(events) == ["queued", "sending", "sent"]


async def test_racing_final_statuses_apply_once(db: Database, settings: Settings, account: AccountFixture) -> None:
    ids = await _messages(db, settings, account, 50)
    for to in (Status.QUEUED, Status.SENDING, Status.SENT):
        async with db.write() as session:
            await apply_transitions(session, [Transition(i, to) for i in ids])

    async def apply(to: Status) -> int:
        async with db.write() as session:
            return len((await apply_transitions(session, [Transition(i, to) for i in ids])).applied)

    counts = await asyncio.gather(apply(Status.DELIVERED), apply(Status.UNDELIVERED), apply(Status.EXPIRED))
    assert sum(counts) == 50
    async with db.read() as session:
        finals = (await session.scalars(select(MessageEvent.message_id).where(
            MessageEvent.status.in_(["delivered", "undelivered", "expired"])))).all()
    assert sorted(finals) == sorted(ids)  # exactly one final event per message


async def test_account_scope(db: Database, settings: Settings, account: AccountFixture) -> None:
    (mid,) = await _messages(db, settings, account, 1)
    async with db.write() as session:
        out = await apply_transitions(session, [Transition(mid, Status.CANCELED)], account_id="acc_other")
    assert out.applied == [] and await _status(db, mid) == "accepted"


async def test_carrier_refs_are_written_with_the_sent_change(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    """A submit's record: the `sent` change, its history and the carrier_message rows of its parts — on
    PostgreSQL all in the one statement of the change (the dispatcher runs it without a transaction)."""
    mid, other = await _messages(db, settings, account, 2)
    for to in (Status.QUEUED, Status.SENDING):
        async with db.write() as session:
            await apply_transitions(session, [Transition(i, to) for i in (mid, other)])
    now = utcnow()
    refs = [{"channel_id": "chn_x", "carrier_message_id": cid, "message_id": mid, "group_ref": "c1", "part": part,
             "parts": 2, "status": None, "carrier_error_code": None, "created_at": now}
            for part, cid in ((1, "c1"), (2, "c2"))]
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with db.write() as session:
            out = await apply_transitions(session, [
                Transition(mid, Status.SENT, carrier_message_id="c1", channel_id="chn_x"),
                Transition(other, Status.DELIVERED, carrier_message_id="c9"),  # not from sending: skipped
            ], carrier_refs=refs)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert out.applied_ids == [mid] and [t.message_id for t in out.skipped] == [other]
    writes = [s for s in statements if "INSERT INTO carrier_message " in s]
    if not db.is_sqlite:  # one statement for the change, its history and the refs
        assert len(writes) == 1 and "UPDATE message" in writes[0] and "INSERT INTO message_event" in writes[0]
    async with db.read() as session:
        stored = (await session.execute(select(CarrierMessage.carrier_message_id, CarrierMessage.part,
                                               CarrierMessage.parts, CarrierMessage.message_id)
                                        .order_by(CarrierMessage.part))).all()
        events = (await session.scalars(select(MessageEvent.status).where(MessageEvent.message_id == mid)
                                        .order_by(MessageEvent.id))).all()
    assert [tuple(r) for r in stored] == [("c1", 1, 2, mid), ("c2", 2, 2, mid)]
    assert list(events) == ["queued", "sending", "sent"]
    assert await _status(db, mid) == "sent" and await _status(db, other) == "sending"
