"""Recharges through the sandbox payment provider on both databases: order → pay page → signed callback →
credited exactly once (also with 20 concurrent deliveries), bad callbacks refused, invoices as PDF."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from hongyan.billing import ledger, payments
from hongyan.billing.models import JournalEntry, LedgerAccount, PaymentOrder
from hongyan.billing.routes import verify_all
from hongyan.config import Settings
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
