"""Packages and subscriptions on both databases: purchase, drawn before cash (oldest-expiring first, only
where eligible), expiry with a notice beforehand, monthly renewal exactly once, past_due when cash is short."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hongyan.accounts import keys
from hongyan.billing import ledger, packages
from hongyan.billing.charging import verify_all
from hongyan.billing.models import JournalEntry, LedgerAccount, Package, Product, Subscription
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from hongyan.webhooks import service as webhooks
from hongyan.webhooks.models import WebhookEvent
from support import AccountFixture, make_account, wait_until


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (datetime(2026, 1, 31, 9, tzinfo=UTC), [datetime(2026, 2, 28, 9, tzinfo=UTC), datetime(2026, 3, 31, 9, tzinfo=UTC)]),
        (datetime(2028, 1, 31, tzinfo=UTC), [datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 31, tzinfo=UTC)]),
        (datetime(2026, 11, 30, tzinfo=UTC), [datetime(2026, 12, 30, tzinfo=UTC), datetime(2027, 1, 30, tzinfo=UTC)]),
        (datetime(2026, 12, 15, tzinfo=UTC), [datetime(2027, 1, 15, tzinfo=UTC), datetime(2027, 2, 15, tzinfo=UTC)]),
    ],
)
def test_month_end_anchoring(start: datetime, expected: list[datetime]) -> None:
    first = packages.add_months(start, 1, start.day)
    second = packages.add_months(first, 1, start.day)  # anchored on the original day, not the clamped one
    assert [first, second] == expected


@pytest.mark.parametrize(
    ("period_end", "now", "expected"),
    [
        # on time: the period that starts where the last one ended
        (datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 1, 31, 0, 1, tzinfo=UTC),
         (datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC))),
        # renewed two months late: only the period containing now is charged
        (datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 3, 31, 12, tzinfo=UTC),
         (datetime(2026, 3, 31, tzinfo=UTC), datetime(2026, 4, 30, tzinfo=UTC))),
    ],
)
def test_next_period(period_end: datetime, now: datetime, expected: tuple[datetime, datetime]) -> None:
    assert packages.next_period(period_end, 31, now) == expected


@pytest.mark.parametrize(
    ("price_micros", "units", "text", "micros", "exact"),
    [
        (45_000_000, 1_000, "0.045", 45_000, True),
        (400_000_000, 10_000, "0.04", 40_000, True),
        (3_500_000_000, 100_000, "0.035", 35_000, True),
        (1_000, 8_000, "0.000000125", 0, False),  # exact decimal below a micro-unit
        (100_000, 3, "≈0.033333 (1/30)", 33_333, False),
        (200_000, 3, "≈0.066667 (1/15)", 66_666, False),
    ],
)
def test_tier_unit_prices(price_micros: int, units: int, text: str, micros: int, exact: bool) -> None:
    product = Product(id="prd_x", kind="package", name="x", currency="CNY", price_micros=price_micros, units=units,
                      validity_days=365, countries=[], message_types=[], active=True)
    shown = packages.product_json(product)
    assert (shown["unit_price"], shown["unit_price_micros"], shown["unit_price_exact"]) == (text, micros, exact)


async def _balance(db: Database, ledger_account_id: str) -> int:
    async with db.read() as session:
        row = await session.get(LedgerAccount, ledger_account_id)
        return row.balance if row else 0


async def _units(db: Database, package_id: str) -> int:
    return await _balance(db, ledger.package_account(package_id))


async def _cash(db: Database, account_id: str) -> int:
    return await _balance(db, ledger.cash(account_id, "CNY"))


async def _product(db: Database, **kw: Any) -> str:
    values: dict[str, Any] = {"kind": "package", "name": "1,000 SMS", "currency": "CNY", "price_micros": 35_000_000,
                              "units": 1000, "validity_days": 365, "countries": ["CN"]}
    values.update(kw)
    async with db.write() as session:
        return (await packages.create_product(session, **values)).id


async def test_package_drawn_before_cash_oldest_first_and_only_where_eligible(
    db: Database, app: Any, client: httpx.AsyncClient, account: AccountFixture
) -> None:
    small = await _product(db, name="3 SMS", units=3, price_micros=100_000, validity_days=10)
    big = await _product(db, name="1,000 SMS", validity_days=365)
    listed = (await client.get("/v1/billing/products")).json()["data"]
    assert {p["name"]: p["unit_price"] for p in listed} == {"3 SMS": "≈0.033333 (1/30)", "1,000 SMS": "0.035"}
    cash0 = await _cash(db, account.account_id)
    late = (await client.post("/v1/billing/packages", json={"product_id": big})).json()
    early = (await client.post("/v1/billing/packages", json={"product_id": small})).json()
    assert early["units_remaining"] == 3 and late["units_remaining"] == 1000
    assert await _cash(db, account.account_id) == cash0 - 35_100_000
    sent = await client.post("/v1/batches", json={"text": "hi", "recipients": [
        "+8613800000001", "+8613810000001", "+8613820000001", "+8613830000001", "+12025550123"]})
    assert sent.status_code == 202, sent.text
    async with db.read() as session:
        funding = {m.to_number: m.funding for m in await session.scalars(
            select(Message).where(Message.batch_id == sent.json()["id"]))}
    # the package expiring first pays first; a US number is not covered by CN packages: cash
    assert sorted(funding.values()) == sorted([early["id"]] * 3 + [late["id"], "cash"])
    assert funding["+12025550123"] == "cash"
    assert await _units(db, early["id"]) == 0 and await _units(db, late["id"]) == 999

    async def all_final() -> bool:
        async with db.read() as session:
            return not list(await session.scalars(select(Message.id).where(Message.done_at.is_(None))))

    held_units = await _balance(db, ledger.held(account.account_id, ledger.UNITS))
    assert held_units == 4  # in flight: held until the final status settles or releases them

    await wait_until(all_final, message="final")
    assert await _balance(db, ledger.held(account.account_id, ledger.UNITS)) == 0
    mine = {p["id"]: p for p in (await client.get("/v1/billing/packages")).json()["data"]}
    for package in mine.values():  # settled units count as used, released ones went back to the package
        assert package["units_used"] + package["units_remaining"] == package["units_total"]
    assert await verify_all(db) == []


async def test_cash_first_draw_order(db: Database, client: httpx.AsyncClient, account: AccountFixture) -> None:
    pack = (await client.post("/v1/billing/packages", json={"product_id": await _product(db)})).json()
    r = await client.patch("/v1/billing/settings", json={"draw_order": "cash_first"})
    assert r.status_code == 200, r.text
    sent = await client.post("/v1/batches", json={"text": "hi", "recipients": ["+8613800000001"]})
    assert sent.status_code == 202, sent.text
    async with db.read() as session:
        funding = list(await session.scalars(select(Message.funding).where(Message.batch_id == sent.json()["id"])))
    assert funding == ["cash"] and await _units(db, pack["id"]) == 1000
    assert await verify_all(db) == []


async def test_purchase_needs_cash_and_the_right_currency(db: Database, app: Any) -> None:
    poor = await make_account(db, balance_micros=1_000_000)
    product = await _product(db)
    usd = await _product(db, currency="USD", name="USD pack")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=poor.headers) as c:
        r = await c.post("/v1/billing/packages", json={"product_id": product})
        assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_balance"
        assert r.json()["error"]["details"]["shortfall"] == "34.00"
        wrong = await c.post("/v1/billing/packages", json={"product_id": usd})
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "currency_mismatch"
        gone = await c.post("/v1/billing/packages", json={"product_id": "prd_01JNOPE00000000000000000000"})
        assert gone.status_code == 404 and gone.json()["error"]["field"] == "product_id"
        assert (await c.get("/v1/billing/packages")).json()["data"] == []
    assert await _cash(db, poor.account_id) == 1_000_000
    async with db.read() as session:  # the refused purchase left nothing behind
        assert list(await session.scalars(select(Package.id))) == []
        assert list(await session.scalars(select(JournalEntry.id).where(JournalEntry.kind == "package_purchase"))) == []
    assert await verify_all(db) == []


async def test_purchase_posts_one_balanced_entry(db: Database, account: AccountFixture) -> None:
    product = await _product(db, units=1000, price_micros=35_000_000, validity_days=30)
    async with db.write() as session:  # the account's currency is looked up when not given
        package = await packages.purchase_package(session, account_id=account.account_id, product_id=product,
                                                  actor="test")
    assert package.status == "active" and package.expires_at - package.starts_at == timedelta(days=30)
    acc = account.account_id
    assert await _units(db, package.id) == 1000
    assert await _balance(db, ledger.ledger_id(acc, "issued", ledger.UNITS)) == -1000
    assert await _balance(db, ledger.ledger_id(acc, "sales", "CNY")) == 35_000_000
    async with db.read() as session:
        entries = list(await session.scalars(select(JournalEntry).where(JournalEntry.reference == package.id)))
    assert [(e.kind, e.actor) for e in entries] == [("package_purchase", "test")]
    assert await verify_all(db) == []


async def test_expiry_notice_once_then_remainder_written_off(db: Database, settings: Settings, account: AccountFixture) -> None:
    product = await _product(db, units=50, validity_days=30)
    async with db.write() as session:
        package = await packages.purchase_package(session, account_id=account.account_id, currency="CNY",
                                                  product_id=product, actor="test")
        await webhooks.create_endpoint(session, account_id=account.account_id, url="http://127.0.0.1:9/h")
        # a message in flight holds 2 of its units
        await ledger.post(session, account_id=account.account_id, kind="hold", postings={
            ledger.package_account(package.id): -2, ledger.held(account.account_id, ledger.UNITS): 2})
    now = package.expires_at - timedelta(days=40)
    assert (await packages.sweep_once(db, settings, now=now)).notified == 0  # not yet within the notice window
    soon = package.expires_at - timedelta(days=3)
    assert (await packages.sweep_once(db, settings, now=soon)).notified == 1
    assert (await packages.sweep_once(db, settings, now=soon + timedelta(hours=1))).notified == 0  # once
    after = package.expires_at + timedelta(seconds=1)
    report = await packages.sweep_once(db, settings, now=after)
    assert report.expired == 1 and report.errors == []
    assert (await packages.sweep_once(db, settings, now=after)).expired == 0
    assert await _units(db, package.id) == 0
    async with db.read() as session:
        types = [e.event_type for e in await session.scalars(select(WebhookEvent).order_by(WebhookEvent.created_at))]
        expired = await session.get(Package, package.id)
        entries = list(await session.scalars(select(JournalEntry).where(JournalEntry.kind == "expiry")))
    assert types == ["package.expiring", "package.expired"]
    assert expired is not None and expired.status == "expired" and expired.units_expired == 48
    assert len(entries) == 1 and entries[0].reference == package.id
    # units a message still held come back after expiry (released): the next sweep writes them off too
    async with db.write() as session:
        await ledger.post(session, account_id=account.account_id, kind="release", postings={
            ledger.held(account.account_id, ledger.UNITS): -2, ledger.package_account(package.id): 2})
    await packages.sweep_once(db, settings, now=after)
    assert await _units(db, package.id) == 0
    async with db.read() as session:
        assert (await session.get(Package, package.id)).units_expired == 50  # type: ignore[union-attr]
        entries = list(await session.scalars(select(JournalEntry).where(JournalEntry.kind == "expiry")))
        types = [e.event_type for e in await session.scalars(select(WebhookEvent))]
    assert len(entries) == 2 and types.count("package.expired") == 1  # written off again, announced once
    assert await _balance(db, ledger.ledger_id(account.account_id, "expired", ledger.UNITS)) == 50
    assert await verify_all(db) == []


async def _subscription(db: Database, account_id: str, price: int = 20_000_000) -> Subscription:
    plan = await _product(db, kind="subscription", name="Monthly 500", units=500, price_micros=price)
    async with db.write() as session:
        return await packages.subscribe(session, account_id=account_id, currency="CNY", product_id=plan, actor="test")


async def test_renewal_charges_once_with_concurrent_sweepers(db: Database, settings: Settings, account: AccountFixture) -> None:
    """Four sweepers at once (real concurrency on PostgreSQL; serialized writers on SQLite): one renewal."""
    async with db.write() as session:
        await webhooks.create_endpoint(session, account_id=account.account_id, url="http://127.0.0.1:9/h")
    sub = await _subscription(db, account.account_id)
    cash_after_first = await _cash(db, account.account_id)
    at = sub.period_end + timedelta(minutes=1)
    reports = await asyncio.gather(*(packages.sweep_once(db, settings, now=at) for _ in range(4)))
    assert sum(r.renewed for r in reports) == 1 and all(not r.errors for r in reports)
    assert sum(r.expired for r in reports) == 1  # the first month's allowance, at its own expires_at
    assert await _cash(db, account.account_id) == cash_after_first - 20_000_000
    async with db.read() as session:
        renewed = await session.get(Subscription, sub.id)
        allowances = list(await session.scalars(select(Package).where(Package.subscription_id == sub.id)
                                                .order_by(Package.starts_at)))
    assert renewed is not None and renewed.period_start == sub.period_end
    assert [p.expires_at for p in allowances] == [sub.period_end, renewed.period_end]
    async with db.read() as session:
        fees = list(await session.scalars(select(JournalEntry).where(JournalEntry.kind == "subscription_fee")))
        events = [e.event_type for e in await session.scalars(select(WebhookEvent))]
    assert len(fees) == 2 and events.count("subscription.renewed") == 1
    assert [p.status for p in allowances] == ["expired", "active"]
    assert await _units(db, allowances[0].id) == 0 and await _units(db, allowances[1].id) == 500
    report = await packages.sweep_once(db, settings, now=at)  # nothing left to do
    assert (report.expired, report.renewed, report.errors) == (0, 0, [])
    assert await verify_all(db) == []


async def test_renewal_past_due_and_cancel(db: Database, settings: Settings) -> None:
    acc = await make_account(db, balance_micros=25_000_000)
    sub = await _subscription(db, acc.account_id)  # 20 paid, 5 left: the next month cannot be paid
    report = await packages.sweep_once(db, settings, now=sub.period_end + timedelta(seconds=1))
    assert report.past_due == 1 and report.renewed == 0
    async with db.read() as session:
        past_due = await session.get(Subscription, sub.id)
        allowances = list(await session.scalars(select(Package).where(Package.subscription_id == sub.id)))
    assert past_due is not None and past_due.status == "past_due" and len(allowances) == 1
    assert await _cash(db, acc.account_id) == 5_000_000
    other = await _subscription(db, (await make_account(db, name="B")).account_id)
    async with db.write() as session:
        await packages.cancel_subscription(session, account_id=other.account_id, subscription_id=other.id)
        with pytest.raises(Exception, match="No such subscription"):
            await packages.cancel_subscription(session, account_id=acc.account_id, subscription_id=other.id)
    report = await packages.sweep_once(db, settings, now=other.period_end + timedelta(seconds=1))
    assert report.canceled == 1 and report.renewed == 0
    assert await verify_all(db) == []


async def test_operator_catalog(db: Database, app: Any, account: AccountFixture) -> None:
    async with db.write() as session:
        created = await keys.create_api_key(session, account_id=account.account_id, name="ops",
                                                scopes=("operator",), allow_operator=True)
    headers = {"Authorization": f"Bearer {created.token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers) as op:
        bad = await op.post("/v1/operator/billing/products", json={"name": "x", "price": "1", "units": 0})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "units"
        bad_country = await op.post("/v1/operator/billing/products",
                                    json={"name": "x", "price": "1", "units": 5, "countries": ["China"]})
        assert bad_country.json()["error"]["field"] == "countries[0]"
        r = await op.post("/v1/operator/billing/products", json={
            "name": "10,000 SMS", "price": "400.00", "units": 10000, "validity_days": 365, "countries": ["CN"]})
        assert r.status_code == 201 and r.json()["unit_price"] == "0.04"
        off = await op.post(f"/v1/operator/billing/products/{r.json()['id']}/deactivate")
        assert off.json()["active"] is False
        assert [p["active"] for p in (await op.get("/v1/operator/billing/products")).json()["data"]] == [False]
    async with db.write() as session:  # a deactivated product cannot be bought
        with pytest.raises(Exception, match="No such package on sale"):
            await packages.purchase_package(session, account_id=account.account_id, currency="CNY",
                                            product_id=r.json()["id"], actor="t")


async def test_subscriptions_api(db: Database, settings: Settings, app: Any, client: httpx.AsyncClient,
                                 account: AccountFixture) -> None:
    plan = await _product(db, kind="subscription", name="Monthly 500", units=500, price_micros=20_000_000)
    cash0 = await _cash(db, account.account_id)
    r = await client.post("/v1/billing/subscriptions", json={"product_id": plan})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert (sub["status"], sub["fee"], sub["fee_micros"], sub["currency"]) == ("active", "20.00", 20_000_000, "CNY")
    assert await _cash(db, account.account_id) == cash0 - 20_000_000
    allowance = [p for p in (await client.get("/v1/billing/packages")).json()["data"] if p["subscription_id"] == sub["id"]]
    assert len(allowance) == 1 and allowance[0]["units_remaining"] == 500
    assert allowance[0]["expires_at"] == sub["period_end"]
    assert [s["id"] for s in (await client.get("/v1/billing/subscriptions")).json()["data"]] == [sub["id"]]
    # a package product is not a plan, and another account's subscription does not exist for this one
    package_product = await _product(db)
    assert (await client.post("/v1/billing/subscriptions", json={"product_id": package_product})).status_code == 404
    other = await make_account(db, name="Other")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=other.headers) as c:
        stranger = await c.post(f"/v1/billing/subscriptions/{sub['id']}/cancel")
        assert stranger.status_code == 404 and stranger.json()["error"]["code"] == "subscription_not_found"
        assert (await c.get("/v1/billing/subscriptions")).json()["data"] == []
    canceled = await client.post(f"/v1/billing/subscriptions/{sub['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["cancel_at_period_end"] is True
    assert canceled.json()["status"] == "active"  # runs to the end of the paid period
    end = datetime.fromisoformat(sub["period_end"].replace("Z", "+00:00"))
    report = await packages.sweep_once(db, settings, now=end + timedelta(seconds=1))
    assert (report.canceled, report.renewed, report.expired) == (1, 0, 1)
    assert (await client.get("/v1/billing/subscriptions")).json()["data"][0]["status"] == "canceled"
    assert await _cash(db, account.account_id) == cash0 - 20_000_000  # charged once
    # canceling at once (at_period_end false) ends a fresh one immediately; its paid allowance stays
    second = (await client.post("/v1/billing/subscriptions", json={"product_id": plan})).json()
    now = await client.post(f"/v1/billing/subscriptions/{second['id']}/cancel", json={"at_period_end": False})
    assert now.json()["status"] == "canceled" and now.json()["canceled_at"] is not None
    remaining = [p["units_remaining"] for p in (await client.get("/v1/billing/packages")).json()["data"]
                 if p["subscription_id"] == second["id"]]
    assert remaining == [500]
    assert await verify_all(db) == []
