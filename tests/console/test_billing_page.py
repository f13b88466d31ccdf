"""The billing console page on SQLite and PostgreSQL: the figures equal /v1/billing's, recharge and alert
forms (errors next to the field, worded as the API words them), the CSV downloads are the API's own
bytes, and another account's invoice stays out of reach."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from console_pages import csrf_of, field_error, signed_in_client, text_of
from hongyan.billing import ledger
from hongyan.billing.models import JournalEntry, Package, PaymentOrder, Product
from hongyan.billing.recharge import top_up
from hongyan.billing.routes import USAGE_CSV_COLUMNS
from hongyan.console.templating import money
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from support import AccountFixture, make_account, wait_until


def signed(micros: int) -> str:
    """How the page writes a statement amount: -¥0.16 for money out."""
    return f"-{money(-micros, 'CNY')}" if micros < 0 else money(micros, "CNY")


def kpi(page: str, name: str) -> str:
    match = re.search(rf'data-kpi="{name}">([^<]*)<', page)
    assert match, f"no KPI {name}"
    return html.unescape(match.group(1))


@pytest.fixture
async def member(app: Any, db: Database, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in_client(app, db, account)
    yield client
    await client.aclose()


async def post_form(client: httpx.AsyncClient, url: str, data: dict[str, str]) -> httpx.Response:
    page = await client.get("/console/billing")
    return await client.post(url, data={**data, "csrf_token": csrf_of(page.text)})


async def orders_of(db: Database, account_id: str, status: str) -> list[PaymentOrder]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(PaymentOrder).where(
                    PaymentOrder.account_id == account_id, PaymentOrder.status == status
                )
            )
        )


async def _all_final(db: Database, account_id: str) -> bool:
    async with db.read() as session:
        pending = await session.scalar(
            select(Message.id).where(Message.account_id == account_id, Message.done_at.is_(None)).limit(1)
        )
    return pending is None


async def test_not_signed_in_leads_to_the_login_form(app: Any) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        for path in ("/console/billing", "/console/billing/usage.csv", "/console/billing/statements.csv"):
            response = await c.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/console/login?next=%2Fconsole%2Fbilling")


async def test_the_page_shows_the_api_figures(
    db: Database, account: AccountFixture, client: httpx.AsyncClient, member: httpx.AsyncClient
) -> None:
    sent = await client.post(
        "/v1/batches",
        json={
            "text": "你好",
            "message_type": "marketing",
            "recipients": ["+8613800000001", "+8613800000003", "+12025550101"],
        },
    )
    assert sent.status_code == 202, sent.text
    await wait_until(lambda: _all_final(db, account.account_id), message="messages final")
    balance = (await client.get("/v1/billing/balance")).json()
    usage = (await client.get("/v1/billing/usage")).json()["data"]
    monthly = (await client.get("/v1/billing/statements")).json()["data"]

    page = await member.get("/console/billing")
    assert page.status_code == 200
    assert "<h1>费用中心</h1>" in page.text
    assert 'href="/console/billing" aria-current="page"' in page.text
    assert kpi(page.text, "available") == money(balance["available_micros"], "CNY")
    assert kpi(page.text, "held") == money(balance["held_micros"], "CNY")
    assert kpi(page.text, "package_units") == str(balance["package_units"])
    assert 'data-kpi="credit_limit"' not in page.text  # no credit limit, no card
    assert "data-low-balance" not in page.text

    rows = dict(re.findall(r'<tr data-usage="([^"]+)">(.*?)</tr>', page.text, re.S))
    assert set(rows) == {u["message_id"] for u in usage} and len(rows) == 3
    for u in usage:
        row = rows[u["message_id"]]
        assert f'data-charged="{u["charged_micros"]}"' in row
        assert u["to"] in row and u["country"] in row
        state = {"settled": "已结算", "released": "已退回", "held": "预扣中", "refunded": "已退款"}[
            u["billing_state"]
        ]
        assert f"badge-billing-{u['billing_state']}" in row and state in row

    statement = re.search(rf'<tr data-period="{monthly[0]["period"]}">(.*?)</tr>', page.text, re.S)
    assert statement is not None
    cells = [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", statement.group(1), re.S)]
    month = monthly[0]["micros"]
    assert cells[1] == signed(month["opening"]) and cells[-1] == signed(month["closing"])
    assert cells[2] == signed(month["recharged"]) and cells[5] == signed(month["usage"])
    assert month["usage"] < 0 and cells[5].startswith("-¥")

    # the operator top-up of the test account is a paid order with its invoice link
    assert re.search(r'href="/console/billing/invoices/pay_[^"]+\.pdf"', page.text)

    only_us = await member.get("/console/billing", params={"country": "us"})
    assert re.findall(r'<tr data-usage="([^"]+)">', only_us.text) == [
        u["message_id"] for u in usage if u["country"] == "US"
    ]
    bad_day = await member.get("/console/billing", params={"day": "yesterday"})
    assert field_error(bad_day.text, "day") == "日期无效 day is a date such as 2026-11-25."
    assert "没有符合条件的消费记录。" in bad_day.text

    member.cookies.set("hongyan_lang", "en", path="/console")
    english = await member.get("/console/billing")
    assert "<h1>Billing</h1>" in english.text and "Available balance" in english.text


async def test_the_daily_statement(member: httpx.AsyncClient) -> None:
    monthly = await member.get("/console/billing")
    daily = await member.get("/console/billing", params={"period": "day"})
    month = re.findall(r'<tr data-period="([^"]+)">', monthly.text)
    days = re.findall(r'<tr data-period="([^"]+)">', daily.text)
    assert len(month) == 1 and len(month[0]) == 7
    assert len(days) == 1 and days[0].startswith(month[0]) and len(days[0]) == 10
    assert 'href="/console/billing/statements.csv?period=day"' in daily.text


async def test_recharge_refuses_a_bad_amount_next_to_the_field(
    db: Database, account: AccountFixture, member: httpx.AsyncClient
) -> None:
    response = await post_form(member, "/console/billing/recharge", {"amount": "abc"})
    assert response.status_code == 422
    assert field_error(response.text, "amount") == "金额无效 amount: 'abc' is not a number."
    assert (
        'id="recharge-amount" name="amount" type="text" inputmode="decimal" class="mono" value="abc"'
        in response.text
    )
    too_small = await post_form(member, "/console/billing/recharge", {"amount": "5"})
    assert too_small.status_code == 422
    assert field_error(too_small.text, "amount") == "低于最低充值金额 The minimum recharge is 10.00 CNY."
    assert await orders_of(db, account.account_id, "pending") == []

    member.cookies.set("hongyan_lang", "en", path="/console")
    english = await post_form(member, "/console/billing/recharge", {"amount": "0"})
    assert field_error(english.text, "amount") == "amount: the amount must be greater than zero."


async def test_recharge_creates_a_pending_order_and_goes_to_the_pay_page(
    db: Database, account: AccountFixture, member: httpx.AsyncClient
) -> None:
    response = await post_form(member, "/console/billing/recharge", {"amount": "100.50"})
    assert response.status_code == 303
    location = response.headers["location"]
    assert re.fullmatch(r"/pay/sandbox/pay_\w+", location)
    [order] = await orders_of(db, account.account_id, "pending")
    assert location.endswith(order.id)
    assert order.amount_micros == 100_500_000 and order.provider == "sandbox" and order.currency == "CNY"
    assert order.created_by.startswith("user:usr_")
    page = await member.get("/console/billing")
    row = re.search(rf'<tr data-order="{order.id}">(.*?)</tr>', page.text, re.S)
    assert row and "待支付" in row.group(1) and "¥100.50" in row.group(1)
    assert f'href="/pay/sandbox/{order.id}"' in row.group(1)


async def test_low_balance_threshold(
    db: Database, account: AccountFixture, member: httpx.AsyncClient
) -> None:
    bad = await post_form(member, "/console/billing/alert", {"low_balance_threshold": "-5"})
    assert bad.status_code == 422
    assert field_error(bad.text, "low_balance_threshold") == (
        "金额无效 low_balance_threshold: the amount must be greater than zero."
    )
    high = await post_form(member, "/console/billing/alert", {"low_balance_threshold": "2000000"})
    assert high.status_code == 303 and high.headers["location"] == "/console/billing#alert"
    page = await member.get("/console/billing")
    assert "余额提醒已设置为 ¥2000000.00。" in page.text
    assert "data-low-balance" in page.text and "余额已低于提醒阈值 ¥2000000.00" in page.text
    assert (
        'name="low_balance_threshold" type="text" inputmode="decimal" class="mono" value="2000000.00"'
        in page.text
    )
    off = await post_form(member, "/console/billing/alert", {"low_balance_threshold": ""})
    assert off.status_code == 303
    page = await member.get("/console/billing")
    assert "余额提醒已关闭。" in page.text and "data-low-balance" not in page.text


async def test_csv_downloads_are_the_api_ones(client: httpx.AsyncClient, member: httpx.AsyncClient) -> None:
    for console_url, api_url, params in (
        ("/console/billing/statements.csv", "/v1/billing/statements", {"period": "month"}),
        ("/console/billing/statements.csv", "/v1/billing/statements", {"period": "day"}),
        ("/console/billing/usage.csv", "/v1/billing/usage", {}),
        ("/console/billing/usage.csv", "/v1/billing/usage", {"message_type": "marketing", "country": "CN"}),
    ):
        ours = await member.get(console_url, params=params)
        theirs = await client.get(api_url, params={**params, "format": "csv"})
        assert ours.status_code == 200 and ours.headers["content-type"] == "text/csv; charset=utf-8"
        assert ours.headers["content-disposition"] == theirs.headers["content-disposition"]
        assert ours.content == theirs.content
    usage = await member.get("/console/billing/usage.csv")
    assert usage.content.decode("utf-8-sig").splitlines()[0] == ",".join(USAGE_CSV_COLUMNS)
    statement = await member.get("/console/billing/statements.csv")
    assert statement.content.decode("utf-8-sig").splitlines()[0].startswith("period,currency,opening,")
    bad = await member.get("/console/billing/usage.csv", params={"message_type": "spam"})
    assert bad.status_code == 303 and bad.headers["location"] == "/console/billing#usage"


async def test_another_accounts_invoice_is_not_found(db: Database, member: httpx.AsyncClient) -> None:
    other = await make_account(db, name="Other", balance_micros=0)
    async with db.write() as session:
        order = await top_up(
            session,
            account_id=other.account_id,
            amount_micros=50_000_000,
            currency="CNY",
            actor="test",
            note="other account",
        )
    response = await member.get(f"/console/billing/invoices/{order.id}.pdf")
    assert response.status_code == 404
    assert "当前账户中没有这张发票。" in response.text
    assert (await member.get("/console/billing/invoices/pay_nothing.pdf")).status_code == 404


async def give_package(
    db: Database, account_id: str, *, name: str, units: int, used: int, expired: bool = False
) -> str:
    """A package as a purchase leaves it: the row and its units on its ledger account; `used` units went to
    messages, and an expired package's rest went to the expiry sweep."""
    now = utcnow()
    package_id = ids.new_id("pkg")
    units_account = ledger.package_account(package_id)
    async with db.write() as session:
        session.add(
            Package(
                id=package_id,
                account_id=account_id,
                product_id=None,
                subscription_id=None,
                name=name,
                units_total=units,
                units_expired=units - used if expired else 0,
                price_micros=units * 40_000,
                currency="CNY",
                countries=["CN"],
                message_types=[],
                status="expired" if expired else "active",
                starts_at=now - timedelta(days=40),
                created_at=now - timedelta(days=40),
                expires_at=now + timedelta(days=-10 if expired else 20),
                expiry_notified_at=None,
            )
        )
        await session.flush()
        await ledger.post(
            session,
            account_id=account_id,
            kind="package_purchase",
            reference=package_id,
            postings={units_account: units, ledger.ledger_id(package_id, "issued", ledger.UNITS): -units},
        )
        await ledger.post(
            session,
            account_id=account_id,
            kind="hold",
            reference=package_id,
            postings={units_account: -used, ledger.held(account_id, ledger.UNITS): used},
        )
        if expired:
            await ledger.post(
                session,
                account_id=account_id,
                kind="expiry",
                reference=package_id,
                postings={
                    units_account: used - units,
                    ledger.ledger_id(package_id, "expired", ledger.UNITS): units - used,
                },
            )
    return package_id


async def test_packages_and_the_catalog(
    db: Database, account: AccountFixture, client: httpx.AsyncClient, member: httpx.AsyncClient
) -> None:
    active = await give_package(db, account.account_id, name="国内通知包", units=1000, used=250)
    expired = await give_package(db, account.account_id, name="旧套餐", units=500, used=200, expired=True)
    async with db.write() as session:
        for name, price, units, active_flag in (
            ("验证码包 1 万条", 350_000_000, 10_000, True),
            ("零头包", 100_000_000, 3, True),
            ("下架包", 1_000_000, 10, False),
        ):
            session.add(
                Product(
                    id=ids.new_id("prd"),
                    kind="package",
                    name=name,
                    currency="CNY",
                    price_micros=price,
                    units=units,
                    validity_days=90,
                    countries=[],
                    message_types=[],
                    active=active_flag,
                    created_at=utcnow(),
                )
            )
    page = await member.get("/console/billing")
    balance = (await client.get("/v1/billing/balance")).json()
    assert balance["package_units"] == 750 and kpi(page.text, "package_units") == "750"

    row = re.search(rf'<tr data-package="{active}">(.*?)</tr>', page.text, re.S)
    assert row and "国内通知包" in row.group(1) and "<b>750</b> / 1,000" in row.group(1)
    assert 'aria-label="75%"' in row.group(1) and 'class="units-bar-fill" width="75"' in row.group(1)
    assert "生效中" in row.group(1) and '<td class="num">250</td>' in row.group(1)
    old = re.search(rf'<tr data-package="{expired}" class="is-muted">(.*?)</tr>', page.text, re.S)
    assert old and "已过期" in old.group(1) and "units-bar-fill" not in old.group(1)
    assert "<b>0</b> / 500" in old.group(1) and '<td class="num">200</td>' in old.group(1)

    catalog = re.search(r'<table class="table table-compact" id="catalog">(.*?)</table>', page.text, re.S)
    assert catalog
    assert "验证码包 1 万条" in catalog.group(1) and "下架包" not in catalog.group(1)
    assert (
        "¥350.00" in catalog.group(1) and "¥0.035" in catalog.group(1) and "≈¥33.333333" in catalog.group(1)
    )


async def test_operator_top_up_box_for_platform_admins_only(
    app: Any, db: Database, account: AccountFixture, member: httpx.AsyncClient
) -> None:
    customer = await make_account(db, name="Customer", balance_micros=0)
    page = await member.get("/console/billing")
    assert 'id="operator-top-up"' not in page.text  # a customer member does not see it …
    denied = await post_form(member, "/console/billing/operator/top-up",
                             {"account_id": customer.account_id, "top_up_amount": "100", "note": "x"})
    assert denied.status_code in (403, 404)  # … nor can post it
    staff = await signed_in_client(app, db, account, email="ops@example.com", platform_role="platform_admin")
    try:
        page = await staff.get("/console/billing")
        assert 'id="operator-top-up"' in page.text
        no_note = await post_form(staff, "/console/billing/operator/top-up",
                                  {"account_id": customer.account_id, "top_up_amount": "100", "note": " "})
        assert no_note.status_code == 422 and field_error(no_note.text, "note")
        unknown = await post_form(staff, "/console/billing/operator/top-up",
                                  {"account_id": "acc_nope", "top_up_amount": "100", "note": "wire"})
        assert unknown.status_code == 422 and field_error(unknown.text, "account_id")
        bad = await post_form(staff, "/console/billing/operator/top-up",
                              {"account_id": customer.account_id, "top_up_amount": "1.0000001", "note": "wire"})
        assert bad.status_code == 422 and field_error(bad.text, "top_up_amount")
        ok = await post_form(staff, "/console/billing/operator/top-up",
                             {"account_id": customer.account_id, "top_up_amount": "100", "note": "wire 8812"})
        assert ok.status_code == 303
    finally:
        await staff.aclose()
    orders = await orders_of(db, customer.account_id, "paid")
    assert [o.amount_micros for o in orders] == [100_000_000] and orders[0].created_by.startswith("user:usr_")
    async with db.read() as session:
        entry = await session.scalar(select(JournalEntry).where(JournalEntry.reference == orders[0].id))
    assert entry is not None and entry.note == "wire 8812" and entry.actor_ip is not None
