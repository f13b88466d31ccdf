"""Sub-accounts pay from the parent's balance and are capped by their spend limit (billing.spend_limits)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from hongyan.accounts.models import Account
from hongyan.billing import ledger
from hongyan.billing.charging import verify_all
from hongyan.billing.models import BillingProfile, LedgerAccount
from hongyan.billing.spend_limits import first_id_at, period_start
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from support import AccountFixture, make_account, wait_until

PRICE = 40_000  # settings.default_price_micros
START = 100 * 1_000_000


@pytest.fixture
def settings(settings: Any) -> Any:
    """Ordinary numbers always delivered: which messages count against a limit must not depend on the
    sandbox's random 3 % undelivered / 2 % rejected (magic numbers such as …00002 still decide their own fate)."""
    return settings.model_copy(update={"sandbox_outcomes": "delivered:100"})


def _client(app: Any, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers)


async def _sub_with_key(app: Any, parent: AccountFixture, *, limit: str | None, period: str = "month") -> tuple[str, dict[str, str]]:
    async with _client(app, parent.headers) as c:
        r = await c.post("/v1/sub-accounts", json={"name": "Shop", "spend_limit": limit, "spend_limit_period": period})
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
        k = await c.post(f"/v1/sub-accounts/{sub_id}/api-keys", json={"name": "shop", "scopes": ["send", "read", "billing"]})
        assert k.status_code == 201, k.text
        assert k.json()["account_id"] == sub_id
    return sub_id, {"Authorization": f"Bearer {k.json()['key']}"}


async def _balance(db: Database, owner: str, kind: str) -> int:
    async with db.read() as session:
        acc = await session.get(LedgerAccount, ledger.ledger_id(owner, kind, "CNY"))
        return acc.balance if acc else 0


async def _send(app: Any, headers: dict[str, str], suffixes: list[str]) -> httpx.Response:
    async with _client(app, headers) as c:
        return await c.post("/v1/batches", json={"text": "hi", "recipients": [f"+86138000{s}" for s in suffixes]})


async def _all_final(db: Database, account_id: str, n: int) -> list[Message]:
    async def done() -> list[Message] | None:
        async with db.read() as session:
            rows = list(await session.scalars(select(Message).where(Message.account_id == account_id)))
        return rows if len(rows) == n and all(r.done_at is not None for r in rows) else None

    return await wait_until(done, timeout=15, message="all messages final")  # type: ignore[no-any-return]


def test_period_start_and_first_id() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 3, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert period_start("day", now) == datetime(2026, 3, 31, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 3, 1, tzinfo=UTC)
    lower = first_id_at("msg", now)
    at_ms = int(now.timestamp() * 1000)
    assert ids.id_time_ms(lower) == at_ms
    assert ids.new_id("msg", at_ms=at_ms) >= lower > ids.new_id("msg", at_ms=at_ms - 1)


async def test_limit_is_enforced_at_the_boundary(db: Database, app: Any) -> None:
    parent = await make_account(db, balance_micros=START)
    sub_id, headers = await _sub_with_key(app, parent, limit="0.12")  # exactly 3 messages
    assert (await _send(app, headers, ["00001", "00011"])).status_code == 202
    r = await _send(app, headers, ["00021"])
    assert r.status_code == 202, r.text  # spent + needed == limit: allowed
    r = await _send(app, headers, ["00031"])
    assert r.status_code == 402, r.text
    error = r.json()["error"]
    assert error["code"] == "spend_limit_exceeded"
    assert (error["details"]["limit_micros"], error["details"]["spent_micros"], error["details"]["needed_micros"]) == (
        3 * PRICE, 3 * PRICE, PRICE)
    # paid by the parent: its cash went down, the sub-account has no ledger of its own
    assert await _balance(db, parent.account_id, "cash") == START - 3 * PRICE
    assert await _balance(db, sub_id, "cash") == 0 and await _balance(db, sub_id, "held") == 0
    # one micro over: the whole batch is refused, nothing is stored
    second_id, second = await _sub_with_key(app, parent, limit=None)
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == second_id).values(spend_limit_micros=3 * PRICE - 1))
    r = await _send(app, second, ["00041", "00051", "00061"])
    assert r.status_code == 402 and r.json()["error"]["details"]["needed_micros"] == 3 * PRICE
    r = await _send(app, second, ["00041", "00051"])
    assert r.status_code == 202
    async with db.read() as session:
        stored = list(await session.scalars(select(Message.id).where(Message.account_id == second_id)))
    assert len(stored) == 2
    await _all_final(db, sub_id, 3)
    assert await verify_all(db) == []


async def test_balance_of_a_sub_account_shows_the_parents_funds_and_its_limit(db: Database, app: Any) -> None:
    parent = await make_account(db, balance_micros=START)
    sub_id, headers = await _sub_with_key(app, parent, limit="1.00", period="day")
    assert (await _send(app, headers, ["00001"])).status_code == 202
    async with _client(app, headers) as c:
        body = (await c.get("/v1/billing/balance")).json()
    assert body["paid_by"] == parent.account_id
    assert body["available_micros"] == START - PRICE
    assert (body["spend_limit_micros"], body["spent_micros"], body["spend_limit_period"]) == (1_000_000, PRICE, "day")
    assert body["spend_remaining_micros"] == 1_000_000 - PRICE
    async with _client(app, parent.headers) as c:
        listed = (await c.get("/v1/sub-accounts")).json()["data"]
    assert [(s["id"], s["spent_micros"]) for s in listed] == [(sub_id, PRICE)]


async def test_settle_release_and_refund_go_back_to_the_parent(db: Database, app: Any) -> None:
    parent = await make_account(db, balance_micros=START)
    async with db.write() as session:  # the PARENT's refund policy applies to its sub-accounts
        session.add(BillingProfile(account_id=parent.account_id, rate_card_id=None, tier="standard",
                                   draw_order="packages_first", refund_undelivered=True,
                                   low_balance_threshold_micros=None, updated_at=utcnow()))
    sub_id, headers = await _sub_with_key(app, parent, limit="0.16")  # 4 messages
    # delivered (settled), undelivered (refunded by the parent's policy), rejected and failed (released)
    assert (await _send(app, headers, ["00001", "00002", "00003", "00007"])).status_code == 202
    rows = await _all_final(db, sub_id, 4)
    states = {m.to_number[-5:]: m.billing_state for m in rows}
    assert states == {"00001": "settled", "00002": "refunded", "00003": "released", "00007": "released"}
    assert await _balance(db, parent.account_id, "held") == 0
    assert await _balance(db, parent.account_id, "revenue") == PRICE
    assert await _balance(db, parent.account_id, "cash") == START - PRICE
    assert await _balance(db, sub_id, "revenue") == 0
    # released and refunded messages give the limit back: 3 more fit under the 4-message cap
    assert (await _send(app, headers, ["00011", "00021", "00031"])).status_code == 202
    assert (await _send(app, headers, ["00041"])).status_code == 402
    await _all_final(db, sub_id, 7)
    assert await verify_all(db) == []


async def test_verify_catches_a_sub_accounts_hold_missing_from_the_parent(db: Database, app: Any) -> None:
    parent = await make_account(db, balance_micros=START)
    sub_id, headers = await _sub_with_key(app, parent, limit=None)
    async with _client(app, headers) as c:
        r = await c.post("/v1/messages", json={"to": "+8613800000001", "text": "later",
                                               "scheduled_at": "2099-01-01T00:00:00Z"})
    assert r.status_code == 202, r.text
    assert await _balance(db, parent.account_id, "held") == PRICE
    assert await verify_all(db) == []  # the sub-account's held message is matched on the parent's held balance
    async with db.write() as session:
        await session.execute(update(Message).where(Message.account_id == sub_id).values(price_micros=PRICE + 1))
    problems = await verify_all(db)
    assert [p.check for p in problems] == ["held_matches_messages"]


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
async def test_concurrent_batches_cannot_pass_the_limit_together(db: Database, app: Any) -> None:
    """30 concurrent sends of 1-2 messages against a limit of 12 messages: the accepted ones fit exactly
    under the limit, however they interleave (the parent's cash row serializes the check)."""
    parent = await make_account(db, balance_micros=START)
    sub_id, headers = await _sub_with_key(app, parent, limit="0.48")  # 12 messages
    sizes = [1 + i % 2 for i in range(30)]

    async def send(i: int, size: int) -> tuple[int, int]:
        r = await _send(app, headers, [f"{i:03d}{k}1" for k in range(size)])
        return r.status_code, size

    results = await asyncio.gather(*(send(i, s) for i, s in enumerate(sizes)))
    assert {code for code, _ in results} <= {202, 402}
    accepted = sum(size for code, size in results if code == 202)
    assert 11 <= accepted <= 12  # a 2-message batch may be refused when 1 message of room is left
    async with db.read() as session:
        stored = len(list(await session.scalars(select(Message.id).where(Message.account_id == sub_id))))
    assert stored == accepted
    if accepted == 11:
        assert (await _send(app, headers, ["99991"])).status_code == 202
    assert (await _send(app, headers, ["99981"])).status_code == 402
    await _all_final(db, sub_id, 12)
    assert await _balance(db, parent.account_id, "held") == 0
    assert await _balance(db, parent.account_id, "cash") + await _balance(db, parent.account_id, "revenue") == START
    assert await verify_all(db) == []


async def test_parents_packages_pay_for_sub_account_messages(db: Database, app: Any) -> None:
    from hongyan.billing import packages

    parent = await make_account(db, balance_micros=START)
    async with db.write() as session:
        product = await packages.create_product(session, kind="package", name="100 SMS", currency="CNY",
                                                price_micros=1_000_000, units=100)
        package = await packages.purchase_package(session, account_id=parent.account_id, product_id=product.id,
                                                  actor="test")
    cash_before = await _balance(db, parent.account_id, "cash")
    sub_id, headers = await _sub_with_key(app, parent, limit="0.08")
    assert (await _send(app, headers, ["00001", "00011"])).status_code == 202
    # the limit counts the messages' price even when a package pays them
    r = await _send(app, headers, ["00021"])
    assert r.status_code == 402 and r.json()["error"]["code"] == "spend_limit_exceeded"
    rows = await _all_final(db, sub_id, 2)
    assert {m.funding for m in rows} == {package.id}
    assert await _balance(db, parent.account_id, "cash") == cash_before
    async with db.read() as session:
        units = await session.get(LedgerAccount, ledger.package_account(package.id))
    assert units is not None and units.balance == 98
    assert await verify_all(db) == []


async def test_money_for_a_sub_account_goes_to_its_parent(app: Any, db: Database, account: AccountFixture) -> None:
    """Recharges, operator top-ups and purchases on a sub-account are refused: that cash would never be spent."""
    from hongyan.billing import packages
    from hongyan.billing.recharge import top_up

    sub_id, headers = await _sub_with_key(app, account, limit=None)
    async with _client(app, headers) as c:
        r = await c.post("/v1/billing/recharges", json={"amount": "100"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "sub_account_uses_parent_balance"
    assert account.account_id in r.json()["error"]["message"]
    async with db.write() as session:
        plan = await packages.create_product(session, kind="package", name="p", currency="CNY", price_micros=1, units=10)
    for attempt in (
        lambda s: top_up(s, account_id=sub_id, amount_micros=1_000_000, currency="CNY", actor="ops", note="x"),
        lambda s: packages.purchase_package(s, account_id=sub_id, product_id=plan.id, actor="t"),
    ):
        with pytest.raises(Exception, match="spends the balance of its parent"):
            async with db.write() as session:
                await attempt(session)
    assert await _balance(db, sub_id, "cash") == 0
