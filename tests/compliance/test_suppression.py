"""The suppression list on SQLite and PostgreSQL: replies through store_inbound add and remove numbers
(account-wide, per signature, STOPALL), people's entries outlive START, confirmations are sent once,
suppressed() answers 10,000 numbers in one query, tenants are isolated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select, update

from hongyan.accounts.models import Account
from hongyan.channels.base import InboundSms
from hongyan.compliance import replies, suppression
from hongyan.compliance.models import Signature, Suppression
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.messaging.inbound import store_inbound
from hongyan.messaging.models import Batch, Message
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from support import AccountFixture, make_account

ALICE = "+8613800000001"
BOB = "+8613800000011"


async def _send(db: Database, settings: Settings, account_id: str, to: str, text: str) -> str:
    result = await submit_batch(
        db,
        settings,
        SubmitRequest(text=text, recipients=[Recipient(to=to)]),
        account_id=account_id,
        source="api",
    )
    return result.accepted[0].id


async def _reply(db: Database, number: str, body: str) -> list[dict[str, Any]]:
    async with db.write() as session:
        return await store_inbound(
            session, [InboundSms("chn_sandbox", number.lstrip("+"), "106900", body, utcnow())]
        )


async def _entries(db: Database, account_id: str) -> list[tuple[str, str, str, str | None]]:
    async with db.read() as session:
        rows = (await session.scalars(select(Suppression).where(Suppression.account_id == account_id))).all()
        return sorted((r.number, r.scope, r.source, r.keyword) for r in rows)


async def _choose(db: Database, account_id: str, **choices: Any) -> None:
    async with db.write() as session:
        await session.execute(
            update(Account).where(Account.id == account_id).values(settings={"compliance": choices})
        )


async def _signature(db: Database, account_id: str, name: str) -> str:
    sid = ids.new_id("sig")
    now = utcnow()
    async with db.write() as session:
        session.add(
            Signature(
                id=sid,
                account_id=account_id,
                name=name,
                purpose="test",
                source="company",
                status="approved",
                created_at=now,
                updated_at=now,
            )
        )
    return sid


async def test_reply_opts_out_and_start_opts_back_in(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    await _send(db, settings, account.account_id, ALICE, "您的订单已发货")
    await _reply(db, ALICE, "N号楼在哪")  # contains a keyword: an ordinary reply
    assert await _entries(db, account.account_id) == []
    stored = await _reply(db, ALICE, " 退订。")
    assert await _entries(db, account.account_id) == [(ALICE, "", "reply", "退订")]
    async with db.read() as session:
        entry = (await session.scalars(select(Suppression))).one()
        assert entry.inbound_id == stored[0]["id"]
        assert await suppression.suppressed(session, account.account_id, [blind_index(ALICE)], [""]) == {
            blind_index(ALICE)
        }
    await _reply(db, ALICE, "ＳＴＯＰ")  # again: idempotent, the first reason stays
    assert await _entries(db, account.account_id) == [(ALICE, "", "reply", "退订")]
    await _reply(db, ALICE, "start")
    assert await _entries(db, account.account_id) == []
    await _reply(db, BOB, "TD")  # nobody wrote to Bob: the reply belongs to no account
    async with db.read() as session:
        assert (await session.scalars(select(Suppression))).all() == []


async def test_per_signature_scope_and_stopall(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    acme = await _signature(db, account.account_id, "Acme")
    beta = await _signature(db, account.account_id, "Beta")
    await _choose(db, account.account_id, opt_out_per_signature=True)
    await _send(db, settings, account.account_id, ALICE, "【Acme】双十二大促")
    await _reply(db, ALICE, "TD")
    assert await _entries(db, account.account_id) == [(ALICE, acme, "reply", "td")]
    bidx = blind_index(ALICE)
    async with db.read() as session:
        assert await suppression.suppressed(session, account.account_id, [bidx], ["", beta]) == set()
        assert await suppression.suppressed(session, account.account_id, [bidx], ["", acme]) == {bidx}
    await _send(
        db, settings, account.account_id, ALICE, "hello"
    )  # unsigned (two signatures, no default): account-wide
    await _reply(db, ALICE, "退订")
    assert await _entries(db, account.account_id) == sorted(
        [(ALICE, acme, "reply", "td"), (ALICE, "", "reply", "退订")]
    )
    await _send(db, settings, account.account_id, ALICE, "【Beta】hi")
    await _reply(db, ALICE, "START")  # undoes Beta's (none) and the account-wide reply entry
    assert await _entries(db, account.account_id) == [(ALICE, acme, "reply", "td")]
    await _reply(db, ALICE, "stopall")  # always account-wide, though the reply is to a Beta message
    assert (ALICE, "", "reply", "stopall") in await _entries(db, account.account_id)


async def test_entries_people_added_outlive_a_start_reply(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    await _send(db, settings, account.account_id, ALICE, "hello")
    await _reply(db, ALICE, "STOP")
    async with db.write() as session:  # a person adds the same number: the entry becomes theirs
        outcome = await suppression.add(
            session, account.account_id, [ALICE, BOB], "", "manual", note="complaint"
        )
    assert (outcome.added, outcome.existing) == (1, 1)
    assert await _entries(db, account.account_id) == [
        (ALICE, "", "manual", "stop"),
        (BOB, "", "manual", None),
    ]
    await _reply(db, ALICE, "START")
    assert len(await _entries(db, account.account_id)) == 2


async def test_confirmation_is_sent_once_after_commit(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    await _choose(db, account.account_id, opt_out_reply="您已退订，谢谢。")
    await _send(db, settings, account.account_id, ALICE, "hello")
    await _reply(db, ALICE, "退订")
    async with db.read() as session:
        pending = (
            await session.scalars(select(OutboxItem).where(OutboxItem.topic == replies.CONFIRMATION_TOPIC))
        ).all()
        assert len(pending) == 1 and ALICE not in str(pending[0].payload)  # no personal data in the outbox
    sent = await asyncio.gather(
        replies.send_confirmations(db, settings), replies.send_confirmations(db, settings)
    )
    assert sum(sent) == 1  # two workers at once: one sends, the other's submit rolls back
    assert await replies.send_confirmations(db, settings) == 0
    async with db.read() as session:
        batches = (
            await session.scalars(select(Batch).where(Batch.source == replies.CONFIRMATION_SOURCE))
        ).all()
        assert len(batches) == 1 and batches[0].message_type == "notification"
        bodies = (await session.scalars(select(Message.body).where(Message.batch_id == batches[0].id))).all()
        assert len(bodies) == 1 and "您已退订" in bodies[0]
        assert (
            await session.scalars(select(OutboxItem).where(OutboxItem.topic == replies.CONFIRMATION_TOPIC))
        ).all() == []


async def test_no_confirmation_unless_chosen_and_old_ones_are_dropped(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    await _send(db, settings, account.account_id, ALICE, "hello")
    await _reply(db, ALICE, "退订")
    async with db.read() as session:
        assert (
            await session.scalars(select(OutboxItem).where(OutboxItem.topic == replies.CONFIRMATION_TOPIC))
        ).all() == []
    await _choose(db, account.account_id, opt_out_reply="已退订")
    await _reply(db, ALICE, "TD")
    async with db.write() as session:  # a worker was down for two days
        await session.execute(
            update(OutboxItem)
            .where(OutboxItem.topic == replies.CONFIRMATION_TOPIC)
            .values(created_at=datetime(2020, 1, 1, tzinfo=UTC))
        )
    assert await replies.send_confirmations(db, settings) == 0
    async with db.read() as session:
        assert (
            await session.scalars(select(OutboxItem).where(OutboxItem.topic == replies.CONFIRMATION_TOPIC))
        ).all() == []


async def test_suppressed_answers_ten_thousand_numbers_in_one_query(
    db: Database, account: AccountFixture
) -> None:
    listed = [f"+86138{i:08d}" for i in range(5_000)]
    other = [f"+86139{i:08d}" for i in range(5_000)]
    async with db.write() as session:
        outcome = await suppression.add(session, account.account_id, listed, "", "import")
    assert outcome.added == 5_000
    bidxs = [blind_index(n) for n in listed + other]
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "suppression" in statement:
            statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with db.read() as session:
            found = await suppression.suppressed(session, account.account_id, bidxs, ["", "sig_x"])
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
    assert found == {blind_index(n) for n in listed}
    assert len(statements) == 1
    async with db.read() as session:
        assert await suppression.suppressed(session, account.account_id, [], [""]) == set()
        assert await suppression.suppressed(session, account.account_id, bidxs[:3], ["sig_x"]) == set()


async def test_tenant_isolation(db: Database, settings: Settings, account: AccountFixture) -> None:
    other = await make_account(db, name="Other")
    await _send(db, settings, account.account_id, ALICE, "from acme")
    await _send(db, settings, other.account_id, BOB, "from other")
    await _reply(db, ALICE, "退订")
    async with db.read() as session:
        assert await suppression.suppressed(session, other.account_id, [blind_index(ALICE)], [""]) == set()
        page = await suppression.list_page(session, account_id=other.account_id)
        assert page.total == 0 and page.entries == []
    async with db.write() as session:
        assert await suppression.remove(session, other.account_id, [ALICE], None) == 0
    assert len(await _entries(db, account.account_id)) == 1


async def test_list_paging_is_stable(db: Database, account: AccountFixture) -> None:
    numbers = [f"+86138{i:08d}" for i in range(7)]
    async with db.write() as session:
        await suppression.add(session, account.account_id, numbers, "", "api")  # one timestamp for all
    seen: list[str] = []
    cursor = None
    async with db.read() as session:
        while True:
            page = await suppression.list_page(session, account_id=account.account_id, limit=3, cursor=cursor)
            seen += [e.number for e in page.entries]
            assert page.total == 7
            cursor = page.next_cursor
            if cursor is None:
                break
        found = await suppression.list_page(session, account_id=account.account_id, e164=numbers[4])
    assert sorted(seen) == numbers
    assert [e.number for e in found.entries] == [numbers[4]]


@pytest.mark.parametrize("text", ["【Acme】hello"])
async def test_confirmation_carries_the_signature_replied_to(
    db: Database, settings: Settings, account: AccountFixture, text: str
) -> None:
    await _signature(db, account.account_id, "Acme")
    await _choose(db, account.account_id, opt_out_reply="您已退订。")
    await _send(db, settings, account.account_id, ALICE, text)
    await _reply(db, ALICE, "TD")
    assert await replies.send_confirmations(db, settings) == 1
    async with db.read() as session:
        body = await session.scalar(
            select(Message.body)
            .join(Batch, Batch.id == Message.batch_id)
            .where(Batch.source == replies.CONFIRMATION_SOURCE)
        )
    assert body is not None and body.startswith("【Acme】") and "您已退订" in body
