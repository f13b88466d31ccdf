"""Ledger entries posted by the COMMIT (PostgreSQL's deferred trigger, `ledger.post_at_commit`): nothing moves
before the commit, everything after it; a floor refuses the COMMIT and nothing of the transaction stays;
several entries of one transaction; a verification start whose hold is refused at commit answers 402
`insufficient_balance` with nothing stored, and concurrent starts never overdraw."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from hongyan.billing import ledger
from hongyan.billing.models import DeferredEntry, JournalEntry, JournalLine, LedgerAccount
from hongyan.billing.recharge import top_up
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from hongyan.verify.models import Verification
from support import make_account


@pytest.fixture
def pg(db: Database) -> Database:
    if db.dialect != "postgresql":
        pytest.skip("entries are posted by the COMMIT on PostgreSQL only (SQLite posts at once)")
    return db


async def _balance(db: Database, la: str) -> int | None:
    async with db.read() as session:
        row = await session.get(LedgerAccount, la)
        return None if row is None else row.balance


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _funded(db: Database, micros: int) -> tuple[str, str, str]:
    acc = await make_account(db, balance_micros=0)
    async with db.write() as session:
        await top_up(session, account_id=acc.account_id, amount_micros=micros, currency="CNY", actor="test",
                     note="test")
    return acc.account_id, ledger.cash(acc.account_id, "CNY"), ledger.held(acc.account_id, "CNY")


async def test_nothing_moves_before_the_commit_and_everything_after(pg: Database) -> None:
    account_id, cash, held = await _funded(pg, 1_000)
    async with pg.write() as session:
        entry_id = await ledger.post_at_commit(session, account_id=account_id, kind="hold",
                                               postings={cash: -300, held: 300}, reference="b1",
                                               detail={"messages": 1})
        inside = await session.scalar(select(LedgerAccount.balance).where(LedgerAccount.id == cash))
        pending = await session.scalar(select(func.count()).select_from(DeferredEntry))
    assert (inside, pending) == (1_000, 1)  # in the transaction: only the deferred row
    assert await _balance(pg, cash) == 700
    assert await _balance(pg, held) == 300  # created on first use by the trigger, with its floor
    async with pg.read() as session:
        entry = await session.get(JournalEntry, entry_id)
        lines = list(await session.scalars(
            select(JournalLine).where(JournalLine.entry_id == entry_id).order_by(JournalLine.id)
        ))
        floor = await session.scalar(select(LedgerAccount.min_balance).where(LedgerAccount.id == held))
        problems = await ledger.verify(session)
    assert entry is not None and (entry.kind, entry.reference, entry.detail) == ("hold", "b1", {"messages": 1})
    assert [(ln.ledger_account_id, ln.amount, ln.balance_after) for ln in lines] == [(cash, -300, 700), (held, 300, 300)]
    assert floor == 0
    assert problems == []
    assert await _count(pg, DeferredEntry) == 0  # none outlives its transaction


async def test_a_floor_refuses_the_commit_and_nothing_stays(pg: Database) -> None:
    account_id, cash, held = await _funded(pg, 100)
    with pytest.raises(DBAPIError) as failed:
        async with pg.write() as session:
            await top_up(session, account_id=account_id, amount_micros=5, currency="CNY", actor="test", note="x")
            await ledger.post_at_commit(session, account_id=account_id, kind="hold", postings={cash: -106, held: 106})
    refused = ledger.refused_at_commit(failed.value)
    assert refused is not None
    assert (refused.ledger_account_id, refused.available, refused.needed) == (cash, 105, 106)
    assert await _balance(pg, cash) == 100  # the top-up of the same transaction is gone too
    assert await _count(pg, JournalEntry, JournalEntry.account_id == account_id) == 1
    assert ledger.refused_at_commit(ValueError("other")) is None


async def test_two_entries_of_one_transaction_in_any_order(pg: Database) -> None:
    account_id, cash, held = await _funded(pg, 1_000)
    revenue = ledger.ledger_id(account_id, "revenue", "CNY")
    async with pg.write() as session:
        await ledger.post_at_commit(session, account_id=account_id, kind="hold", postings={cash: -400, held: 400})
        # settles part of it: rows named after the first entry's, some with lower ids
        await ledger.post_at_commit(session, account_id=account_id, kind="settle", postings={held: -150, revenue: 150})
    assert (await _balance(pg, cash), await _balance(pg, held), await _balance(pg, revenue)) == (600, 250, 150)
    async with pg.read() as session:
        assert await ledger.verify(session) == []


async def test_verification_starts_never_overdraw_and_a_refusal_stores_nothing(pg: Database, app: Any) -> None:
    """Each code costs the default price; the balance pays for exactly three. Ten concurrent starts: three
    201, seven 402 insufficient_balance, and only three verifications and messages exist."""
    price = 40_000
    acc = await make_account(pg, balance_micros=3 * price)
    cash = ledger.cash(acc.account_id, "CNY")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 headers=acc.headers) as client:
        answers = await asyncio.gather(*(
            client.post("/v1/verify", json={"to": f"+86138001380{i:02d}", "device_ip": f"10.0.0.{i}"})
            for i in range(10)
        ))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [402] * 7, [r.text for r in answers]
    refused = next(r.json() for r in answers if r.status_code == 402)
    assert refused["error"]["code"] == "insufficient_balance"
    assert await _count(pg, Verification, Verification.account_id == acc.account_id) == 3
    assert await _count(pg, Message, Message.account_id == acc.account_id) == 3
    assert await _balance(pg, cash) == 0
    assert await _count(pg, DeferredEntry) == 0
    async with pg.read() as session:
        assert await ledger.verify(session) == []
