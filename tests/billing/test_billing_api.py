"""The account-facing billing API (balance, usage, CSV, statements, journal, settings, low-balance alert)
and the operator one (top-up, adjustment, credit limit, refund policy), on both databases."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from hongyan.accounts import keys
from hongyan.accounts import service as accounts
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from hongyan.webhooks import service as webhooks
from hongyan.webhooks.models import WebhookEvent
from support import AccountFixture, make_account, wait_until


def _client(app: Any, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers)


@pytest.fixture
async def operator(db: Database, app: Any) -> httpx.AsyncClient:
    async with db.write() as session:
        staff = await accounts.create_account(session, name="Platform")
        created = await keys.create_api_key(session, account_id=staff.id, name="ops", scopes=("operator",),
                                                allow_operator=True)
    return _client(app, {"Authorization": f"Bearer {created.token}"})


async def _all_final(db: Database, account_id: str) -> bool:
    async with db.read() as session:
        pending = await session.scalar(select(Message.id).where(Message.account_id == account_id,
                                                                Message.done_at.is_(None)).limit(1))
    return pending is None


async def test_usage_statements_and_journal(db: Database, app: Any, operator: httpx.AsyncClient) -> None:
    acc = await make_account(db, balance_micros=0)
    async with operator:
        r = await operator.post(f"/v1/operator/billing/accounts/{acc.account_id}/top-ups",
                                json={"amount": "10", "note": "wire 42"})
        assert r.status_code == 201, r.text
        assert r.json()["balance"]["balance"] == "10.00" and r.json()["invoice_number"].startswith("INV-")
    async with _client(app, acc.headers) as client:
        sent = await client.post("/v1/batches", json={"text": "你好", "message_type": "marketing", "recipients": [
            "+8613800000001", "+8613800000003", "+12025550101"]})
        assert sent.status_code == 202, sent.text
        await wait_until(lambda: _all_final(db, acc.account_id), message="final")
        usage = (await client.get("/v1/billing/usage")).json()["data"]
        by_to = {u["to"]: u for u in usage}
        assert by_to["+8613800000001"]["billing_state"] == "settled" and by_to["+8613800000001"]["charged"] == "0.04"
        assert by_to["+8613800000003"]["billing_state"] == "released" and by_to["+8613800000003"]["charged"] == "0.00"
        assert by_to["+12025550101"]["country"] == "US"
        only_us = (await client.get("/v1/billing/usage", params={"country": "us"})).json()["data"]
        assert [u["to"] for u in only_us] == ["+12025550101"]
        assert (await client.get("/v1/billing/usage", params={"message_type": "verification"})).json()["data"] == []
        bad = await client.get("/v1/billing/usage", params={"day": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "day"
        exported = await client.get("/v1/billing/usage", params={"format": "csv"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
        assert sorted(r["to"] for r in rows) == sorted(by_to)
        summary = (await client.get("/v1/billing/usage/summary", params={"group_by": "country"})).json()["data"]
        assert {s["country"]: s["messages"] for s in summary} == {"CN": 2, "US": 1}
        assert sum(s["charged_micros"] for s in summary) == sum(u["charged_micros"] for u in usage)
        monthly = (await client.get("/v1/billing/statements", params={"period": "month"})).json()["data"]
        assert len(monthly) == 1
        month = monthly[0]
        charged = sum(u["charged_micros"] for u in usage)
        assert month["opening"] == "0.00" and month["recharged"] == "10.00"
        assert month["micros"]["usage"] == -charged
        assert month["micros"]["closing"] == 10_000_000 - charged
        balance = (await client.get("/v1/billing/balance")).json()
        assert balance["balance_micros"] == month["micros"]["closing"] and balance["held_micros"] == 0
        daily = await client.get("/v1/billing/statements", params={"period": "day", "format": "csv"})
        assert daily.status_code == 200 and "closing_available" in daily.content.decode("utf-8-sig").splitlines()[0]
        journal = (await client.get("/v1/billing/ledger")).json()["data"]
        kinds = [e["kind"] for e in journal]
        assert kinds[-1] == "recharge" and "hold" in kinds and "settle" in kinds
        recharge_entry = journal[-1]
        assert recharge_entry["note"] == "wire 42" and recharge_entry["actor"].startswith("key:")
        assert sum(line["amount_micros"] for line in recharge_entry["lines"]) == 0


async def test_operator_adjustments_and_policy(db: Database, app: Any, operator: httpx.AsyncClient) -> None:
    acc = await make_account(db, balance_micros=1_000_000)
    async with operator:
        base = f"/v1/operator/billing/accounts/{acc.account_id}"
        no_note = await operator.post(f"{base}/adjustments", json={"amount": "1", "note": " "})
        assert no_note.status_code == 400 and no_note.json()["error"]["field"] == "note"
        overdraw = await operator.post(f"{base}/adjustments", json={"amount": "-2", "note": "fix"})
        assert overdraw.status_code == 402 and overdraw.json()["error"]["code"] == "insufficient_balance"
        ok = await operator.post(f"{base}/adjustments", json={"amount": "-0.25", "note": "duplicate top-up"})
        assert ok.status_code == 201 and ok.json()["balance"]["balance"] == "0.75"
        bad_amount = await operator.post(f"{base}/top-ups", json={"amount": "1.0000001", "note": "x"})
        assert bad_amount.status_code == 400 and bad_amount.json()["error"]["code"] == "invalid_amount"
        policy = await operator.patch(base, json={"credit_limit": "5", "refund_undelivered": True, "tier": "premium"})
        assert policy.status_code == 200, policy.text
        assert policy.json()["credit_limit"] == "5.00" and policy.json()["refund_undelivered"] is True
        assert policy.json()["available"] == "5.75" and policy.json()["tier"] == "premium"
        unknown = await operator.get("/v1/operator/billing/accounts/acc_01JNOTANACCOUNT0000000000")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "account_not_found"
        verified = await operator.get("/v1/operator/billing/verify")
        assert verified.json() == {"ok": True, "problems": []}
    async with _client(app, acc.headers) as client:  # a customer key cannot use operator routes
        denied = await client.post(f"/v1/operator/billing/accounts/{acc.account_id}/top-ups",
                                   json={"amount": "1000", "note": "free money"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"


async def test_accounts_see_only_their_own_billing(db: Database, app: Any, account: AccountFixture) -> None:
    other = await make_account(db, name="Other", balance_micros=2_000_000)
    async with _client(app, account.headers) as mine, _client(app, other.headers) as theirs:
        sent = await mine.post("/v1/messages", json={"to": "+8613800000001", "text": "secret"})
        assert sent.status_code == 202
        assert (await theirs.get("/v1/billing/usage")).json()["data"] == []
        assert (await theirs.get("/v1/billing/usage", params={"batch_id": sent.json()["batch_id"]})).json()["data"] == []
        their_journal = (await theirs.get("/v1/billing/ledger")).json()["data"]
        assert [e["kind"] for e in their_journal] == ["recharge"]
        assert (await theirs.get("/v1/billing/balance")).json()["balance"] == "2.00"


async def test_low_balance_alert_once_when_crossing(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=200_000)  # ¥0.20
    async with db.write() as session:
        await webhooks.create_endpoint(session, account_id=acc.account_id, url="http://127.0.0.1:9/hook",
                                       event_types=["balance.low"])
    async with _client(app, acc.headers) as client:
        set_threshold = await client.patch("/v1/billing/settings", json={"low_balance_threshold": "0.10"})
        assert set_threshold.status_code == 200 and set_threshold.json()["low_balance_threshold"] == "0.10"
        bad = await client.patch("/v1/billing/settings", json={"low_balance_threshold": "ten"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "low_balance_threshold"
        for i in range(4):  # 0.20 → 0.16 → 0.12 → 0.08 (crosses) → 0.04
            assert (await client.post("/v1/messages", json={"to": f"+86138{i:03d}00001", "text": "hi"})).status_code == 202
        assert (await client.get("/v1/billing/balance")).json()["low_balance"] is True
    async with db.read() as session:
        events = list(await session.scalars(select(WebhookEvent).where(WebhookEvent.event_type == "balance.low")))
    assert len(events) == 1
    payload = orjson.loads(events[0].payload)
    assert payload["data"]["balance"] == "0.08" and payload["data"]["threshold"] == "0.10"
