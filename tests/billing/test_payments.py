"""Recharges through the sandbox payment provider on both databases: order → pay page → signed callback →
credited exactly once (also with 20 concurrent deliveries), bad callbacks refused, invoices as PDF."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from hongyan.billing import ledger, payments
from hongyan.billing.charging import verify_all
from hongyan.billing.models import JournalEntry, LedgerAccount, PaymentOrder
from hongyan.config import Settings
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from support import make_account


def _client(app: Any, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers or {})


async def _cash(db: Database, account_id: str) -> int:
    async with db.read() as session:
        row = await session.get(LedgerAccount, ledger.cash(account_id, "CNY"))
        return row.balance if row else 0


async def _recharge_entries(db: Database, order_id: str) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(JournalEntry).where(
            JournalEntry.kind == "recharge", JournalEntry.reference == order_id)) or 0)


async def test_order_pay_page_credit_and_invoice(db: Database, app: Any, settings: Settings) -> None:
    settings.recharge_bonus_rules = "100=5"
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        r = await client.post("/v1/billing/recharges", json={"amount": "200.50"})
        assert r.status_code == 201, r.text
        order = r.json()
        assert order["status"] == "pending" and order["amount"] == "200.50" and order["bonus"] == "10.025"
        assert order["pay_url"].endswith(f"/pay/sandbox/{order['id']}")
        page = await client.get(f"/pay/sandbox/{order['id']}")
        assert page.status_code == 200 and "200.50 CNY" in page.text
        early = await client.get(f"/v1/billing/recharges/{order['id']}/invoice.pdf")
        assert early.status_code == 404 and early.json()["error"]["code"] == "invoice_not_found"
        paid = await client.post(f"/pay/sandbox/{order['id']}", data={"action": "pay"})
        assert paid.status_code == 200 and "210.525 CNY" in paid.text
        again = await client.post(f"/pay/sandbox/{order['id']}", data={"action": "pay"})  # the page posted twice
        assert again.status_code == 200
        assert await _cash(db, acc.account_id) == 210_525_000
        assert await _recharge_entries(db, order["id"]) == 1
        shown = (await client.get(f"/v1/billing/recharges/{order['id']}")).json()
        assert shown["status"] == "paid" and shown["invoice_number"].startswith("INV-") and "pay_url" not in shown
        pdf = await client.get(shown["invoice_url"])
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
        assert shown["invoice_number"] in text and "200.50" in text and "10.025" in text
        listed = (await client.get("/v1/billing/recharges")).json()["data"]
        assert [o["id"] for o in listed] == [order["id"]]
    other = await make_account(db, name="Other", balance_micros=0)
    async with _client(app, other.headers) as theirs:
        assert (await theirs.get(f"/v1/billing/recharges/{order['id']}")).status_code == 404
        assert (await theirs.get(f"/v1/billing/recharges/{order['id']}/invoice.pdf")).status_code == 404
    assert await verify_all(db) == []


async def test_twenty_concurrent_callbacks_credit_once(db: Database, app: Any, settings: Settings) -> None:
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        order_id = (await client.post("/v1/billing/recharges", json={"amount": "50"})).json()["id"]
    async with db.read() as session:
        order = await session.get(PaymentOrder, order_id)
    assert order is not None
    headers, body = payments.SandboxProvider(settings).notification(order)

    async def deliver() -> httpx.Response:
        async with _client(app, headers) as c:
            return await c.post("/v1/billing/payments/sandbox/callback", content=body)

    responses = await asyncio.gather(*(deliver() for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    statuses = [r.json()["status"] for r in responses]
    assert statuses.count("credited") == 1 and statuses.count("already_credited") == 19
    assert await _cash(db, acc.account_id) == 50_000_000
    assert await _recharge_entries(db, order_id) == 1
    assert await verify_all(db) == []


@pytest.mark.parametrize(
    ("tamper", "status", "code"),
    [
        ("signature", 400, "invalid_payment_signature"),
        ("stale", 400, "payment_signature_expired"),
        ("amount", 409, "payment_amount_mismatch"),
        ("unknown_order", 404, "payment_order_not_found"),
        ("malformed", 400, "invalid_payment_notification"),
    ],
)
async def test_bad_callbacks_are_refused(db: Database, app: Any, settings: Settings, tamper: str, status: int,
                                         code: str) -> None:
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        order_id = (await client.post("/v1/billing/recharges", json={"amount": "20"})).json()["id"]
    async with db.read() as session:
        order = await session.get(PaymentOrder, order_id)
    assert order is not None
    provider = payments.SandboxProvider(settings)
    headers, body = provider.notification(order)
    if tamper == "signature":
        headers = {payments.SIGNATURE_HEADER: headers[payments.SIGNATURE_HEADER][:-2] + "00"}
    elif tamper == "stale":
        headers, body = provider.notification(order, at=int(time.time()) - 3600)
    elif tamper in ("amount", "unknown_order", "malformed"):
        data = orjson.loads(body)
        if tamper == "amount":
            data["amount_micros"] = 2_000_000_000
        elif tamper == "unknown_order":
            data["order_id"] = "pay_01JNOPE0000000000000000000"
        else:
            del data["currency"]
        body = orjson.dumps(data)
        headers = {payments.SIGNATURE_HEADER: provider.sign(body)}
    async with _client(app, headers) as c:
        r = await c.post("/v1/billing/payments/sandbox/callback", content=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert await _cash(db, acc.account_id) == 0


@pytest.mark.parametrize(
    ("amount", "code"),
    [("abc", "invalid_amount"), ("-5", "invalid_amount"), ("0", "invalid_amount"), ("1.0000001", "invalid_amount"),
     ("9.99", "recharge_below_minimum")],
)
async def test_recharge_amount_errors(db: Database, app: Any, amount: str, code: str) -> None:
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        r = await client.post("/v1/billing/recharges", json={"amount": amount})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["field"] == "amount"
    async with db.read() as session:
        assert not list(await session.scalars(select(PaymentOrder.id).where(PaymentOrder.account_id == acc.account_id)))


async def test_payment_confirmed_after_cancel_or_expiry_is_still_credited(db: Database, app: Any,
                                                                          settings: Settings) -> None:
    """Money the provider confirms was received is never refused: a canceled or expired order is credited."""
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        first = (await client.post("/v1/billing/recharges", json={"amount": "20"})).json()["id"]
        second = (await client.post("/v1/billing/recharges", json={"amount": "30"})).json()["id"]
        canceled = await client.post(f"/pay/sandbox/{first}", data={"action": "cancel"})
        assert canceled.status_code == 200 and "canceled" in canceled.text
    async with db.write() as session:  # the second one is a day old
        order = await session.get(PaymentOrder, second)
        assert order is not None
        order.created_at = order.created_at - timedelta(hours=settings.payment_order_ttl_hours + 1)
    assert await payments.expire_stale_orders(db, settings) == 1
    provider = payments.SandboxProvider(settings)
    for order_id in (first, second):
        async with db.read() as session:
            order = await session.get(PaymentOrder, order_id)
        assert order is not None and order.status in ("canceled", "expired")
        headers, body = provider.notification(order)
        async with _client(app, headers) as c:
            r = await c.post("/v1/billing/payments/sandbox/callback", content=body)
        assert r.status_code == 200 and r.json()["status"] == "credited", r.text
    assert await _cash(db, acc.account_id) == 50_000_000
    assert await verify_all(db) == []


async def _order(db: Database, order_id: str) -> PaymentOrder:
    async with db.read() as session:
        order = await session.get(PaymentOrder, order_id)
    assert order is not None
    return order


async def test_bonus_rule_from_1000(db: Database, app: Any, settings: Settings) -> None:
    """`1000=5`: 5 % extra from ¥1,000 up, nothing below; the bonus is its own entry on the same order."""
    settings.recharge_bonus_rules = "1000=5"
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        below = (await client.post("/v1/billing/recharges", json={"amount": "999.99"})).json()
        order = (await client.post("/v1/billing/recharges", json={"amount": "1000"})).json()
        assert below["bonus"] == "0.00" and order["bonus"] == "50.00" and order["amount_micros"] == 1_000_000_000
        assert (await client.post(f"/pay/sandbox/{order['id']}", data={"action": "pay"})).status_code == 200
    async with db.read() as session:
        balances = await ledger.balances_of(session, acc.account_id)
        kinds = list(await session.scalars(select(JournalEntry.kind).where(JournalEntry.reference == order["id"])
                                           .order_by(JournalEntry.id)))
    assert balances[ledger.cash(acc.account_id, "CNY")].balance == 1_050_000_000
    assert kinds == ["recharge", "bonus"]
    assert (await _order(db, below["id"])).status == "pending"


async def test_concurrent_callbacks_under_repeatable_read(db: Database, db_url: str, app: Any,
                                                          settings: Settings) -> None:
    """Twenty deliveries through the handler, each in its own session. On PostgreSQL the sessions run at
    REPEATABLE READ, so the losers fail with a serialization error instead of waiting and seeing `paid`:
    the path that must answer "already credited" (never a 500) after re-reading the order."""
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        order_id = (await client.post("/v1/billing/recharges", json={"amount": "75.5"})).json()["id"]
    provider = payments.SandboxProvider(settings)
    headers, body = provider.notification(await _order(db, order_id))
    racing = Database(db_url, pool_size=10)
    if not racing.is_sqlite:  # SQLite serializes writers (BEGIN IMMEDIATE): the losers wait, then see `paid`
        racing.engine.sync_engine.update_execution_options(isolation_level="REPEATABLE READ")
    try:
        results = await asyncio.gather(*(payments.handle_callback(racing, provider, headers, body)
                                         for _ in range(20)), return_exceptions=True)
    finally:
        await racing.dispose()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    credited = [c for r in results if not isinstance(r, BaseException) for c in [r[1]]]
    assert credited.count(True) == 1 and credited.count(False) == 19
    assert await _cash(db, acc.account_id) == 75_500_000
    assert await _recharge_entries(db, order_id) == 1
    assert await verify_all(db) == []


async def test_pay_page_actions(db: Database, app: Any, settings: Settings) -> None:
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        order_id = (await client.post("/v1/billing/recharges", json={"amount": "20"})).json()["id"]
        odd = await client.post(f"/pay/sandbox/{order_id}", data={"action": "refund"})
        assert odd.status_code == 400 and (await _order(db, order_id)).status == "pending"
        assert (await client.post(f"/pay/sandbox/{order_id}", data={"action": "pay"})).status_code == 200
        late = await client.post(f"/pay/sandbox/{order_id}", data={"action": "cancel"})  # a second tab
        assert late.status_code == 409 and "paid" in late.text and "已取消" not in late.text
        assert (await client.get(f"/pay/sandbox/{order_id}")).status_code == 200  # shows "paid", no buttons
        assert (await client.get("/pay/sandbox/pay_01JNOPE0000000000000000000")).status_code == 404
    assert (await _order(db, order_id)).status == "paid"
    assert await _cash(db, acc.account_id) == 20_000_000


async def test_sandbox_closed_after_switching_provider(db: Database, app: Any, settings: Settings) -> None:
    """Sandbox orders made before a switch to a real provider cannot become free credit afterwards."""
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        order_id = (await client.post("/v1/billing/recharges", json={"amount": "20"})).json()["id"]
        headers, body = payments.SandboxProvider(settings).notification(await _order(db, order_id))
        settings.payment_provider = "alipay"
        assert (await client.get(f"/pay/sandbox/{order_id}")).status_code == 404
        assert (await client.post(f"/pay/sandbox/{order_id}", data={"action": "pay"})).status_code == 404
        assert "pay_url" not in (await client.get(f"/v1/billing/recharges/{order_id}")).json()
        r = await client.post("/v1/billing/payments/sandbox/callback", content=body, headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "payment_provider_not_found"
        unknown = await client.post("/v1/billing/payments/paypal/callback", content=body, headers=headers)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "payment_provider_not_found"
    assert await _cash(db, acc.account_id) == 0


# -- the sandbox signature, without a database ------------------------------------------------------------


def _sandbox(tmp_path: Path, secret_key: str = "k") -> payments.SandboxProvider:
    return payments.SandboxProvider(Settings(data_dir=tmp_path, secret_key=secret_key))


def _notice(**changes: Any) -> bytes:
    data = {"order_id": "pay_01JTEST0000000000000000000", "transaction_id": "sbx_1", "amount_micros": 20_000_000,
            "currency": "CNY", "status": "paid", **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not None})


def _code(provider: payments.SandboxProvider, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(HongyanError) as caught:
        provider.verify_callback(headers, body)
    assert caught.value.status_code == 400
    return caught.value.code


def test_signature_format_integrators_can_reproduce(tmp_path: Path) -> None:
    """The recipe in docs/payments.md, computed independently of the provider class."""
    body, t = _notice(), int(time.time())
    key = hmac.new(b"k", b"payments-sandbox", hashlib.sha256).digest()
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    notice = _sandbox(tmp_path).verify_callback({"X-Sandbox-Signature": f"t={t}, v1={mac}"}, body)
    assert notice == payments.PaidNotice("pay_01JTEST0000000000000000000", "sbx_1", 20_000_000, "CNY")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "invalid_payment_signature"),
        ("", "invalid_payment_signature"),
        ("t=abc,v1=00", "invalid_payment_signature"),
        ("t={t},v1=ünïcödé", "invalid_payment_signature"),  # latin-1 header text: no TypeError, no 500
        ("t={t},v1={mac_other_key}", "invalid_payment_signature"),
        ("t={future},v1={mac_future}", "payment_signature_expired"),
        ("t={stale},v1={mac_stale}", "payment_signature_expired"),
    ],
)
def test_signature_refusals(tmp_path: Path, header: str | None, code: str) -> None:
    provider, body, now = _sandbox(tmp_path), _notice(), int(time.time())
    values = {
        "t": now, "future": now + 600, "stale": now - 301,
        "mac_other_key": _sandbox(tmp_path, "other").sign(body, now).split("v1=")[1],
        "mac_future": provider.sign(body, now + 600).split("v1=")[1],
        "mac_stale": provider.sign(body, now - 301).split("v1=")[1],
    }
    headers = {} if header is None else {payments.SIGNATURE_HEADER: header.format(**values)}
    assert _code(provider, headers, body) == code


@pytest.mark.parametrize(
    "body",
    [
        b"not json", b"[]", b'"paid"',
        _notice(amount_micros=20_000_000.9), _notice(amount_micros=True), _notice(amount_micros="20000000"),
        _notice(order_id=123), _notice(order_id="x" * 31), _notice(transaction_id=""), _notice(currency=None),
        _notice(status="refunded"),
    ],
)
def test_malformed_notifications(tmp_path: Path, body: bytes) -> None:
    provider = _sandbox(tmp_path)
    assert _code(provider, {payments.SIGNATURE_HEADER: provider.sign(body)}, body) == "invalid_payment_notification"


def test_unset_secret_key_still_signs_with_a_secret(tmp_path: Path) -> None:
    """With HONGYAN_SECRET_KEY unset the key comes from <data_dir>/secret_key, never from the empty string."""
    body = _notice()
    forged = payments.SandboxProvider(Settings(data_dir=tmp_path / "elsewhere", secret_key="x")).sign(body)
    empty_key = hmac.new(b"", b"payments-sandbox", hashlib.sha256).digest()
    t = int(time.time())
    with_empty = f"t={t},v1={hmac.new(empty_key, f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"
    provider = _sandbox(tmp_path, secret_key="")
    for header in (forged, with_empty):
        assert _code(provider, {payments.SIGNATURE_HEADER: header}, body) == "invalid_payment_signature"
    same_dir = _sandbox(tmp_path, secret_key="")  # a restart reads the same generated key
    assert same_dir.verify_callback({payments.SIGNATURE_HEADER: provider.sign(body)}, body).amount_micros == 20_000_000


async def test_payments_none_means_operator_top_ups_only(db: Database, app: Any, settings: Settings) -> None:
    settings.payment_provider = "none"
    acc = await make_account(db, balance_micros=0)
    async with _client(app, acc.headers) as client:
        r = await client.post("/v1/billing/recharges", json={"amount": "100"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "payments_disabled"
    assert r.json()["error"]["field"] == "amount"
    async with db.read() as session:
        assert not list(await session.scalars(select(PaymentOrder.id).where(PaymentOrder.account_id == acc.account_id)))


def test_invoice_keeps_a_long_customer_name_on_the_page() -> None:
    from datetime import UTC, datetime

    from hongyan.billing.invoice import InvoiceData, render_invoice

    pdf = render_invoice(InvoiceData(invoice_number="INV-20261125-ABCDEFGHJK", order_id="pay_x",
                                     paid_at=datetime(2026, 11, 25, tzinfo=UTC), account_id="acc_x",
                                     account_name="鸿雁科技有限公司" * 20, amount_micros=100_000_000, bonus_micros=0,
                                     currency="CNY", provider="sandbox"))
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "INV-20261125-ABCDEFGHJK" in text and "…" in text and "鸿雁科技有限公司" * 20 not in text
