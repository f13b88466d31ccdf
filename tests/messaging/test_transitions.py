"""apply_transitions on real SQLite and PostgreSQL: guarded, recorded, race-free."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from hongyan.config import Settings
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
