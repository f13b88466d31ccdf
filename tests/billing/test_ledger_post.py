"""ledger.post on both databases (PostgreSQL posts a whole entry in one statement): a refused entry changes
nothing, accounts are created on first use, lines carry the balances after the entry, and an idempotency key
posts once."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from hongyan.billing import ledger
from hongyan.billing.models import JournalEntry, JournalLine, LedgerAccount
from hongyan.billing.recharge import top_up
from hongyan.db.engine import Database
from support import make_account


async def _balances(db: Database, *ids: str) -> dict[str, int | None]:
    async with db.read() as session:
        rows = {r.id: r.balance for r in await session.scalars(select(LedgerAccount).where(LedgerAccount.id.in_(ids)))}
    return {i: rows.get(i) for i in ids}


async def _journal_problems(db: Database) -> list[ledger.Problem]:
    async with db.read() as session:
        return await ledger.verify(session)


async def _entries(db: Database, account_id: str) -> int:
    async with db.read() as session:
        return int(await session.scalar(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.account_id == account_id)
        ) or 0)


async def test_entry_moves_balances_and_writes_lines_in_id_order(db: Database) -> None:
    acc = await make_account(db, balance_micros=0)
    cash, held = ledger.cash(acc.account_id, "CNY"), ledger.held(acc.account_id, "CNY")
    async with db.write() as session:
        await top_up(session, account_id=acc.account_id, amount_micros=1_000, currency="CNY", actor="test", note="test")
    async with db.write() as session:  # held does not exist yet: created on first use
        posted = await ledger.post(session, account_id=acc.account_id, kind="hold", postings={held: 300, cash: -300},
                                   reference="b1", detail={"messages": 1})
    assert posted.balances == {cash: 700, held: 300}
    async with db.read() as session:
        lines = list(await session.scalars(
            select(JournalLine).where(JournalLine.entry_id == posted.entry_id).order_by(JournalLine.id)
        ))
        entry = await session.get(JournalEntry, posted.entry_id)
    assert [(ln.ledger_account_id, ln.amount, ln.balance_after, ln.currency) for ln in lines] == [
        (cash, -300, 700, "CNY"), (held, 300, 300, "CNY")
    ]
    assert entry is not None and entry.kind == "hold" and entry.reference == "b1" and entry.detail == {"messages": 1}
    assert entry.created_at == lines[0].created_at
    assert await _journal_problems(db) == []


async def test_refused_entry_changes_nothing(db: Database) -> None:
    """The second posting in id order crosses its floor: the first one must not have moved either."""
    acc = await make_account(db, balance_micros=0)
    cash, held = ledger.cash(acc.account_id, "CNY"), ledger.held(acc.account_id, "CNY")
    async with db.write() as session:
        await top_up(session, account_id=acc.account_id, amount_micros=500, currency="CNY", actor="test", note="test")
        await ledger.post(session, account_id=acc.account_id, kind="hold", postings={cash: -200, held: 200})
    before_entries = await _entries(db, acc.account_id)
    with pytest.raises(ledger.InsufficientFunds) as refused:
        async with db.write() as session:  # release more than is held, and add it to cash: held refuses
            await ledger.post(session, account_id=acc.account_id, kind="release", postings={held: -250, cash: 250})
    assert refused.value.ledger_account_id == held
    assert (refused.value.available, refused.value.needed) == (200, 250)
    assert await _balances(db, cash, held) == {cash: 300, held: 200}
    assert await _entries(db, acc.account_id) == before_entries
    assert await _journal_problems(db) == []


async def test_refusal_inside_a_savepoint_keeps_the_rest_of_the_transaction(db: Database) -> None:
    acc = await make_account(db, balance_micros=0)
    cash, held = ledger.cash(acc.account_id, "CNY"), ledger.held(acc.account_id, "CNY")
    async with db.write() as session:
        await top_up(session, account_id=acc.account_id, amount_micros=100, currency="CNY", actor="test", note="test")
        with pytest.raises(ledger.InsufficientFunds):
            async with session.begin_nested():
                await ledger.post(session, account_id=acc.account_id, kind="hold", postings={cash: -101, held: 101})
        await ledger.post(session, account_id=acc.account_id, kind="hold", postings={cash: -100, held: 100})
    assert await _balances(db, cash, held) == {cash: 0, held: 100}
    assert await _journal_problems(db) == []


async def test_credit_floor_allows_going_below_zero(db: Database) -> None:
    acc = await make_account(db, balance_micros=0)
    cash, held = ledger.cash(acc.account_id, "CNY"), ledger.held(acc.account_id, "CNY")
    async with db.write() as session:
        assert await ledger.set_floor(session, cash, -1_000)
    async with db.write() as session:
        posted = await ledger.post(session, account_id=acc.account_id, kind="hold", postings={cash: -1_000, held: 1_000})
    assert posted.balances[cash] == -1_000
    with pytest.raises(ledger.InsufficientFunds) as refused:
        async with db.write() as session:
            await ledger.post(session, account_id=acc.account_id, kind="hold", postings={cash: -1, held: 1})
    assert (refused.value.available, refused.value.needed) == (0, 1)


async def test_idempotency_key_posts_once(db: Database) -> None:
    acc = await make_account(db, balance_micros=0)
    cash = ledger.cash(acc.account_id, "CNY")
    funding = ledger.ledger_id("platform", "funding", "CNY")
    async with db.write() as session:
        await ledger.post(session, account_id=acc.account_id, kind="recharge", postings={cash: 10, funding: -10},
                          idempotency_key=f"test:{acc.account_id}")
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            await ledger.post(session, account_id=acc.account_id, kind="recharge", postings={cash: 10, funding: -10},
                              idempotency_key=f"test:{acc.account_id}")
    assert (await _balances(db, cash))[cash] == 10
