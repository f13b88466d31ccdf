"""Charging end to end on both databases: hold at submit, settle / release / refund on the final status,
insufficient balance refuses the whole batch, credit limits, concurrent sends against one balance."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hongyan.billing import ledger
from hongyan.billing.charging import verify_all
from hongyan.billing.models import BillingProfile, JournalEntry, LedgerAccount
from hongyan.billing.recharge import set_credit_limit, top_up
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from support import AccountFixture, make_account, wait_until

PRICE = 40_000  # settings.default_price_micros: ¥0.04 per segment


async def _cash(db: Database, account_id: str) -> int:
    async with db.read() as session:
        acc = await session.get(LedgerAccount, ledger.cash(account_id, "CNY"))
        return acc.balance if acc else 0


async def _held(db: Database, account_id: str) -> int:
    async with db.read() as session:
        acc = await session.get(LedgerAccount, ledger.held(account_id, "CNY"))
        return acc.balance if acc else 0


async def _client(app: Any, acc: AccountFixture) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=acc.headers)


async def _final(db: Database, batch_id: str, n: int) -> list[Message]:
    async def done() -> list[Message] | None:
        async with db.read() as session:
            rows = list(await session.scalars(select(Message).where(Message.batch_id == batch_id)))
        return rows if len(rows) == n and all(r.done_at is not None for r in rows) else None

    return await wait_until(done, timeout=15, message="all messages final")  # type: ignore[no-any-return]


async def test_outcomes_settle_or_release(db: Database, app: Any) -> None:
    """Each final status moves the held price to revenue (the carrier took it) or back to the balance."""
    acc = await make_account(db, balance_micros=1_000_000)  # ¥1
    suffixes = {"00001": ("delivered", "settled"), "00002": ("undelivered", "settled"),
                "00003": ("rejected", "released"), "00004": ("rejected", "released"),
                "00005": ("expired", "settled"), "00007": ("failed", "released")}
    async with await _client(app, acc) as client:
        r = await client.post("/v1/batches", json={"text": "hi", "recipients": [f"+86138000{s}" for s in suffixes]})
        assert r.status_code == 202, r.text
        assert await _cash(db, acc.account_id) == 1_000_000 - 6 * PRICE
        assert await _held(db, acc.account_id) <= 6 * PRICE
        rows = await _final(db, r.json()["id"], 6)
    by_suffix = {m.to_number[-5:]: m for m in rows}
    for suffix, (status, billing_state) in suffixes.items():
        assert (by_suffix[suffix].status, by_suffix[suffix].billing_state) == (status, billing_state), suffix
        assert by_suffix[suffix].funding == "cash"
    assert await _held(db, acc.account_id) == 0
    assert await _cash(db, acc.account_id) == 1_000_000 - 3 * PRICE  # three settled, three released
    async with db.read() as session:
        revenue = await session.get(LedgerAccount, ledger.ledger_id(acc.account_id, "revenue", "CNY"))
        kinds = set(await session.scalars(select(JournalEntry.kind).where(JournalEntry.account_id == acc.account_id)))
    assert revenue is not None and revenue.balance == 3 * PRICE
    assert {"recharge", "hold", "settle", "release"} <= kinds
    assert await verify_all(db) == []


async def test_refund_policy_returns_undelivered(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=1_000_000)
    async with db.write() as session:
        session.add(BillingProfile(account_id=acc.account_id, tier="standard", draw_order="packages_first",
                                   refund_undelivered=True, updated_at=utcnow()))
    async with await _client(app, acc) as client:
        r = await client.post("/v1/batches", json={"text": "hi", "recipients": ["+8613800000001", "+8613800000002"]})
        rows = await _final(db, r.json()["id"], 2)
    states = {m.to_number[-5:]: m.billing_state for m in rows}
    assert states == {"00001": "settled", "00002": "refunded"}
    assert await _cash(db, acc.account_id) == 1_000_000 - PRICE
    async with db.read() as session:
        refunds = list(await session.scalars(select(JournalEntry).where(JournalEntry.kind == "refund")))
    assert len(refunds) == 1 and refunds[0].account_id == acc.account_id
    assert await verify_all(db) == []


async def test_insufficient_balance_refuses_whole_batch(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=3 * PRICE)  # covers 3 messages
    async with await _client(app, acc) as client:
        r = await client.post("/v1/batches", json={"text": "hi", "recipients": [f"+86138{i:03d}00001" for i in range(4)]})
        assert r.status_code == 402, r.text
        error = r.json()["error"]
        assert error["code"] == "insufficient_balance"
        assert error["details"]["needed"] == "0.16" and error["details"]["available"] == "0.12"
        assert error["details"]["shortfall_micros"] == PRICE
        assert "0.16" in error["message"] and "0.04" in error["message"]
        async with db.read() as session:
            assert not list(await session.scalars(select(Message.id).where(Message.account_id == acc.account_id)))
        assert await _cash(db, acc.account_id) == 3 * PRICE
        ok = await client.post("/v1/batches", json={"text": "hi", "recipients": [f"+86138{i:03d}00001" for i in range(3)]})
        assert ok.status_code == 202, ok.text
    assert await _cash(db, acc.account_id) == 0
    assert await verify_all(db) == []


async def test_credit_limit_allows_going_below_zero(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=0)
    async with db.write() as session:
        await set_credit_limit(session, account_id=acc.account_id, currency="CNY", limit_micros=2 * PRICE)
    async with await _client(app, acc) as client:
        r = await client.post("/v1/batches", json={"text": "hi", "recipients": ["+8613810000001", "+8613820000001"]})
        assert r.status_code == 202, r.text
        assert await _cash(db, acc.account_id) == -2 * PRICE
        again = await client.post("/v1/messages", json={"to": "+8613830000001", "text": "hi"})
        assert again.status_code == 402 and again.json()["error"]["code"] == "insufficient_balance"
        balance = (await client.get("/v1/billing/balance")).json()
    assert balance["balance"] == "-0.08" and balance["available"] == "0.00" and balance["credit_limit"] == "0.08"
    async with db.write() as session:  # the limit cannot be lowered below what is already owed
        with pytest.raises(Exception, match="below minus this limit"):
            await set_credit_limit(session, account_id=acc.account_id, currency="CNY", limit_micros=PRICE)


async def test_quote_dry_run_says_what_would_pay(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=PRICE)
    async with await _client(app, acc) as client:
        r = await client.post("/v1/messages/quote", json={"text": "hi", "recipients": ["+8613800000010", "+8613800000011", "12"]})
        assert r.status_code == 200, r.text
        batch = r.json()["batch"]
        assert batch["accepted"] == 2 and batch["rejected_count"] == 1
        assert batch["price_total"] == "0.08" and batch["cash"] == "0.08"
        assert batch["sufficient"] is False and batch["shortfall_micros"] == PRICE
        assert batch["rejected"][0]["code"] == "invalid_phone_number"
        assert [m["paid_by"] for m in batch["messages"]] == ["cash", "cash"]
    assert await _cash(db, acc.account_id) == PRICE  # nothing held


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_concurrent_batches_never_overdraw(db: Database, app: Any) -> None:
    """50 concurrent sends of 1-3 messages against a balance for exactly N messages: exactly the batches
    that fit are accepted, the balance ends at exactly zero, the journal balances."""
    n = 40
    acc = await make_account(db, balance_micros=n * PRICE)
    sizes = [1 + i % 3 for i in range(50)]  # 100 messages asked for, 40 affordable

    async def send(i: int, size: int) -> tuple[int, int]:
        async with await _client(app, acc) as client:
            # …00001: the sandbox always delivers, so no release hands money back during the test
            r = await client.post("/v1/batches", json={"text": "hi", "recipients": [
                f"+8613{k}{i:03d}00001" for k in range(size)]})
            return r.status_code, size

    results = await asyncio.gather(*(send(i, s) for i, s in enumerate(sizes)))
    assert {code for code, _ in results} <= {202, 402}
    accepted = sum(size for code, size in results if code == 202)
    async with db.read() as session:
        stored = len(list(await session.scalars(select(Message.id).where(Message.account_id == acc.account_id))))
    assert stored == accepted
    cash = await _cash(db, acc.account_id)
    assert cash == (n - accepted) * PRICE and cash >= 0
    # greedy arrival order may leave a remainder smaller than the next batch; fill it with singles
    async with await _client(app, acc) as client:
        while await _cash(db, acc.account_id) >= PRICE:
            assert (await client.post("/v1/messages", json={"to": f"+86137{accepted:03d}00001", "text": "hi"})).status_code == 202
            accepted += 1
        assert (await client.post("/v1/messages", json={"to": "+8613699999999", "text": "hi"})).status_code == 402
    assert accepted == n
    assert await _cash(db, acc.account_id) == 0
    assert await verify_all(db) == []


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_fifty_single_messages_exactly_n_accepted(db: Database, app: Any) -> None:
    n = 20
    acc = await make_account(db, balance_micros=n * PRICE)

    async def send(i: int) -> int:
        async with await _client(app, acc) as client:
            return (await client.post("/v1/messages", json={"to": f"+86139{i:03d}00001", "text": "hi"})).status_code

    codes = await asyncio.gather(*(send(i) for i in range(50)))
    assert codes.count(202) == n and codes.count(402) == 50 - n
    assert await _cash(db, acc.account_id) == 0
    assert await verify_all(db) == []


async def test_top_up_then_verify_detects_tampering(db: Database) -> None:
    acc = await make_account(db, balance_micros=0)
    async with db.write() as session:
        await top_up(session, account_id=acc.account_id, amount_micros=5_000_000, currency="CNY", actor="test",
                     note="wire")
    assert await verify_all(db) == []
    async with db.write() as session:  # someone edits a balance behind the ledger's back
        acc_row = await session.get(LedgerAccount, ledger.cash(acc.account_id, "CNY"))
        assert acc_row is not None
        acc_row.balance += 1
    problems = await verify_all(db)
    assert [p.check for p in problems] == ["balance_matches_journal"]
    assert problems[0].subject == ledger.cash(acc.account_id, "CNY")


async def test_cancel_releases_and_scheduled_sends_hold(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=1_000_000)
    async with await _client(app, acc) as client:
        r = await client.post("/v1/batches", json={"text": "hi", "scheduled_at": "2099-01-01T00:00:00+08:00",
                                                   "recipients": ["+8613800000010", "+8613800000011"]})
        assert r.status_code == 202, r.text
        assert await _held(db, acc.account_id) == 2 * PRICE  # a scheduled send holds its price now
        canceled = await client.post(f"/v1/batches/{r.json()['id']}/cancel")
        assert canceled.status_code == 200, canceled.text
    assert await _held(db, acc.account_id) == 0 and await _cash(db, acc.account_id) == 1_000_000
    async with db.read() as session:
        states = set(await session.scalars(select(Message.billing_state).where(Message.account_id == acc.account_id)))
    assert states == {"released"}
    assert await verify_all(db) == []


@pytest.mark.parametrize(
    ("status", "sent", "expected"),
    [("delivered", True, "settled"), ("undelivered", True, "settled"), ("undelivered", False, "settled"),
     ("expired", True, "settled"), ("expired", False, "released"), ("rejected", True, "released"),
     ("rejected", False, "released"), ("failed", False, "released"), ("canceled", False, "released")],
)
def test_final_billing_state_table(status: str, sent: bool, expected: str) -> None:
    from hongyan.billing.charging import final_billing_state

    assert final_billing_state(status, sent=sent) == expected


async def test_hold_plans_again_when_a_package_ran_out_meanwhile(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only cash is locked while planning; if a package lost units between the plan and the posting (the
    expiry sweep, a concurrent send), the hold plans again: the messages fall back to cash, not a 402."""
    from hongyan.billing import charging, packages

    acc = await make_account(db, balance_micros=1_000_000)
    async with db.write() as session:
        product = await packages.create_product(session, kind="package", name="5", currency="CNY",
                                                price_micros=100_000, units=5)
        package = await packages.purchase_package(session, account_id=acc.account_id, product_id=product.id,
                                                  actor="t")
    real = charging.eligible_packages
    calls = 0

    async def stale_once(session: Any, account_id: str, *, at: Any) -> list[charging.EligiblePackage]:
        nonlocal calls
        calls += 1
        found = await real(session, account_id, at=at)
        if calls == 1:  # the first plan sees a balance that is already gone
            return [charging.EligiblePackage(p.id, p.remaining + 100, p.countries, p.message_types) for p in found]
        return found

    monkeypatch.setattr(charging, "eligible_packages", stale_once)
    rows = [{"to_country": "CN", "message_type": "notification", "segment_count": 1, "price_micros": PRICE}
            for _ in range(8)]
    async with db.write() as session:
        hold = await charging.hold_batch(session, rows, account_id=acc.account_id, currency="CNY", batch_id="bat_x")
    assert calls == 2
    assert hold.units == {package.id: 5} and hold.cash_micros == 3 * PRICE
    assert [r["funding"] for r in rows] == [package.id] * 5 + ["cash"] * 3
