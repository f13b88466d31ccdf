"""apply_transitions reuses one statement per shape (messaging.transitions: `_uniform`, `_individual_pg`) with the
values of each call bound: on SQLite and PostgreSQL, no id, time, code, channel or account of a previous call
reaches the next one through the cached statement."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging import transitions
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.states import Status
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from hongyan.messaging.transitions import Transition, apply_transitions
from support import AccountFixture, make_account


async def _messages(db: Database, settings: Settings, account_id: str, n: int, first: int = 100) -> list[str]:
    request = SubmitRequest(text="t", recipients=[Recipient(to=f"+86139000{i + first:05d}") for i in range(n)])
    result = await submit_batch(db, settings, request, account_id=account_id, source="api")
    return [m.id for m in result.accepted]


async def _apply(db: Database, items: list[Transition], **kwargs: Any) -> list[str]:
    async with db.write() as session:
        return (await apply_transitions(session, items, **kwargs)).applied_ids


async def _message(db: Database, mid: str) -> Message:
    async with db.read() as session:
        message = await session.scalar(select(Message).where(Message.id == mid))
    assert message is not None
    return message


async def _last_event(db: Database, mid: str) -> MessageEvent:
    async with db.read() as session:
        event = await session.scalar(select(MessageEvent).where(MessageEvent.message_id == mid)
                                     .order_by(MessageEvent.id.desc()).limit(1))
    assert event is not None
    return event


def _times() -> tuple[datetime, datetime]:
    t1 = utcnow().replace(microsecond=0)
    return t1, t1 + timedelta(seconds=7, microseconds=250_000)


async def test_uniform_shape_binds_each_calls_values(db: Database, settings: Settings, account: AccountFixture) -> None:
    a, b = await _messages(db, settings, account.account_id, 2)
    assert sorted(await _apply(db, [Transition(a, Status.QUEUED), Transition(b, Status.QUEUED)])) == sorted([a, b])
    t1, t2 = _times()
    hits = transitions._uniform.cache_info().hits
    assert await _apply(db, [Transition(a, Status.FAILED, error_code="x", carrier_error_code="cx", channel_id="chn_a")],
                        at=t1) == [a]
    assert await _apply(db, [Transition(b, Status.FAILED, error_code="y", carrier_error_code="cy", channel_id="chn_b")],
                        at=t2) == [b]
    assert transitions._uniform.cache_info().hits > hits  # the second call went through the cached statement

    for mid, at, err, cerr, chn in ((a, t1, "x", "cx", "chn_a"), (b, t2, "y", "cy", "chn_b")):
        m = await _message(db, mid)
        assert (m.status, m.error_code, m.carrier_error_code, m.channel_id) == ("failed", err, cerr, chn)
        assert m.updated_at == at and m.done_at == at and m.sent_at is None
        assert m.billing_state == "released"  # never sent: the hold is released
        event = await _last_event(db, mid)
        assert (event.status, event.error_code, event.carrier_error_code, event.occurred_at) == ("failed", err, cerr, at)


async def test_uniform_shape_without_codes_keeps_the_rows_codes(db: Database, settings: Settings,
                                                                account: AccountFixture) -> None:
    """A shape that does not set error_code leaves the column alone, whatever an earlier call of another shape set."""
    a, b = await _messages(db, settings, account.account_id, 2)
    t1, t2 = _times()
    assert await _apply(db, [Transition(a, Status.SCHEDULED, error_code="e1")], at=t1) == [a]
    assert await _apply(db, [Transition(b, Status.SCHEDULED)], at=t2) == [b]
    assert await _apply(db, [Transition(a, Status.QUEUED)], at=t2) == [a]
    ma, mb = await _message(db, a), await _message(db, b)
    assert (ma.status, ma.error_code, ma.updated_at) == ("queued", "e1", t2)
    assert (mb.status, mb.error_code, mb.updated_at) == ("scheduled", None, t2)


async def test_also_values_are_bound_per_call_and_win(db: Database, settings: Settings, account: AccountFixture) -> None:
    a, b, c = await _messages(db, settings, account.account_id, 3)
    t1, t2 = _times()
    assert await _apply(db, [Transition(a, Status.QUEUED)], at=t1, also={"expires_at": t1 + timedelta(hours=1)}) == [a]
    assert await _apply(db, [Transition(b, Status.QUEUED)], at=t2, also={"expires_at": t2 + timedelta(hours=2)}) == [b]
    ma, mb = await _message(db, a), await _message(db, b)
    assert (ma.expires_at, ma.updated_at) == (t1 + timedelta(hours=1), t1)
    assert (mb.expires_at, mb.updated_at) == (t2 + timedelta(hours=2), t2)
    # `also` overrides what the transition itself sets
    assert await _apply(db, [Transition(c, Status.CANCELED, error_code="mine")], at=t1,
                        also={"error_code": "from_also"}) == [c]
    assert (await _message(db, c)).error_code == "from_also"
    assert (await _last_event(db, c)).error_code == "from_also"


async def test_also_with_an_sql_expression(db: Database, settings: Settings, account: AccountFixture) -> None:
    """Not cacheable (nothing to bind): built for the call, with the same effect."""
    (a,) = await _messages(db, settings, account.account_id, 1)
    t1, _ = _times()
    assert await _apply(db, [Transition(a, Status.QUEUED)], at=t1, also={"attempts": Message.attempts + 5}) == [a]
    m = await _message(db, a)
    assert (m.status, m.attempts, m.updated_at) == ("queued", 5, t1)


async def test_individual_shape_binds_each_calls_values(db: Database, settings: Settings,
                                                        account: AccountFixture) -> None:
    a, b = await _messages(db, settings, account.account_id, 2)
    for to in (Status.QUEUED, Status.SENDING):
        await _apply(db, [Transition(a, to), Transition(b, to)])
    t1, t2 = _times()
    assert await _apply(db, [Transition(a, Status.SENT, carrier_message_id="c_a", channel_id="chn_a")], at=t1) == [a]
    assert await _apply(db, [Transition(b, Status.SENT, carrier_message_id="c_b", error_code="w")], at=t2) == [b]
    ma, mb = await _message(db, a), await _message(db, b)
    assert (ma.carrier_message_id, ma.channel_id, ma.error_code, ma.sent_at, ma.updated_at) == ("c_a", "chn_a", None,
                                                                                                t1, t1)
    assert (mb.carrier_message_id, mb.channel_id, mb.error_code, mb.sent_at, mb.updated_at) == ("c_b", None, "w",
                                                                                                t2, t2)
    assert (await _last_event(db, a)).occurred_at == t1
    event_b = await _last_event(db, b)
    assert (event_b.status, event_b.error_code, event_b.occurred_at) == ("sent", "w", t2)
    # a final status through the uniform path at a third time: done_at and the history follow it
    t3 = t2 + timedelta(seconds=3)
    assert await _apply(db, [Transition(a, Status.DELIVERED)], at=t3) == [a]
    ma = await _message(db, a)
    assert (ma.status, ma.sent_at, ma.done_at, ma.updated_at, ma.billing_state) == ("delivered", t1, t3, t3, "settled")
    assert (await _last_event(db, a)).occurred_at == t3


async def test_account_scope_is_bound_per_call(db: Database, settings: Settings, account: AccountFixture) -> None:
    other = await make_account(db, name="Other")
    (mine_1, mine_2, mine_3) = await _messages(db, settings, account.account_id, 3)
    (theirs_1, theirs_2) = await _messages(db, settings, other.account_id, 2, first=500)
    cancel = [Transition(m, Status.CANCELED, error_code="canceled_by_user") for m in (theirs_1, mine_1, theirs_2)]
    assert await _apply(db, [cancel[0]], account_id=account.account_id) == []  # another account's: refused
    assert await _apply(db, [cancel[1]], account_id=account.account_id) == [mine_1]
    assert await _apply(db, [cancel[0]], account_id=account.account_id) == []  # still refused after a match
    assert await _apply(db, [cancel[2]], account_id=other.account_id) == [theirs_2]
    assert (await _message(db, theirs_1)).status == "accepted"
    assert (await _message(db, theirs_2)).status == "canceled"

    # the per-row path (carrier ids) is scoped too
    for mid in (mine_2, mine_3):
        for to in (Status.QUEUED, Status.SENDING):
            await _apply(db, [Transition(mid, to)])
    sent = Transition(mine_2, Status.SENT, carrier_message_id="c2")
    assert await _apply(db, [sent], account_id=other.account_id) == []
    assert await _apply(db, [Transition(mine_3, Status.SENT, carrier_message_id="c3")],
                        account_id=account.account_id) == [mine_3]
    assert await _apply(db, [sent], account_id=other.account_id) == []
    m2 = await _message(db, mine_2)
    assert (m2.status, m2.carrier_message_id) == ("sending", None)
