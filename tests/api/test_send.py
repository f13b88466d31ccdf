"""POST /v1/messages and /v1/batches against real SQLite and PostgreSQL, with the embedded workers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from support import wait_until

DELIVERED = "+8613800000001"


async def _status(client: httpx.AsyncClient, message_id: str) -> str:
    r = await client.get(f"/v1/messages/{message_id}")
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


async def test_send_one_reaches_delivered(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/messages", json={"to": "13800000001", "text": "您好,鸿雁"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"].startswith("msg_") and body["batch_id"].startswith("bat_")
    assert body["to"] == DELIVERED
    assert body["encoding"] == "ucs2" and body["segments"] == 1
    assert body["price"] == "0.04" and body["currency"] == "CNY" and body["status"] == "accepted"

    async def delivered() -> bool:
        return await _status(client, body["id"]) == "delivered"

    await wait_until(delivered, message="message delivered")
    detail = (await client.get(f"/v1/messages/{body['id']}")).json()
    assert [e["status"] for e in detail["events"]] == ["accepted", "queued", "sending", "sent", "delivered"]
    assert detail["sent_at"] and detail["done_at"]


@pytest.mark.parametrize(
    ("suffix", "final", "error_code"),
    [
        ("00002", "undelivered", "carrier_undelivered"),
        ("00003", "rejected", "carrier_rejected"),
        ("00004", "rejected", "carrier_rejected"),
        ("00005", "expired", "carrier_expired"),
        ("00007", "failed", "carrier_system_error"),
        ("00008", "delivered", None),
    ],
)
async def test_sandbox_magic_numbers(client: httpx.AsyncClient, suffix: str, final: str, error_code: str | None) -> None:
    r = await client.post("/v1/messages", json={"to": f"138000{suffix}", "text": "hello"})
    assert r.status_code == 202, r.text
    mid = r.json()["id"]

    async def done() -> bool:
        return await _status(client, mid) == final

    await wait_until(done, message=f"{suffix} → {final}")
    detail = (await client.get(f"/v1/messages/{mid}")).json()
    assert detail["error_code"] == error_code
    if suffix == "00008":  # throttled once: back to queued, then sent again
        statuses = [e["status"] for e in detail["events"]]
        assert statuses.count("sending") == 2 and "queued" in statuses[3:]


async def test_batch_with_variables_and_bad_recipients(client: httpx.AsyncClient, db: Database) -> None:
    payload = {
        "text": "尊敬的{客户姓名},您的订单{订单号}已发货。",
        "recipients": [
            {"to": "+8613800000001", "vars": {"客户姓名": "张三", "订单号": "A1001"}},
            {"to": "13800000001", "vars": {"客户姓名": "张三", "订单号": "A1001"}},  # duplicate after normalizing
            {"to": "12345", "vars": {"客户姓名": "李四", "订单号": "A1002"}},
            {"to": "13900000001", "vars": {"客户姓名": "王五"}},
            {"to": "01088886666", "vars": {"客户姓名": "赵六", "订单号": "A1004"}},
            {"to": "13700000001", "vars": {"客户姓名": "钱七", "订单号": 1005}},
        ],
    }
    r = await client.post("/v1/batches", json=payload)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"].startswith("bat_")
    assert body["accepted"] == 2 and body["rejected_count"] == 4
    assert [m["index"] for m in body["messages"]] == [0, 5]
    assert body["messages"][0]["text"] == "尊敬的张三,您的订单A1001已发货。"
    assert body["messages"][1]["text"] == "尊敬的钱七,您的订单1005已发货。"
    rejected = {x["index"]: x for x in body["rejected"]}
    assert rejected[1]["code"] == "duplicate_phone_number" and rejected[1]["field"] == "recipients[1].to"
    assert rejected[2]["code"] == "invalid_phone_number" and rejected[2]["field"] == "recipients[2].to"
    assert rejected[3]["code"] == "template_variable_missing" and rejected[3]["field"] == "recipients[3].vars.订单号"
    assert rejected[4]["code"] == "not_mobile_number"
    async with db.read() as session:
        count = await session.scalar(select(func.count()).select_from(Message).where(Message.batch_id == body["id"]))
    assert count == 2

    async def batch_done() -> dict[str, Any] | None:
        b = (await client.get(f"/v1/batches/{body['id']}")).json()
        return b if b["completed"] else None

    summary = await wait_until(batch_done, message="batch completed")
    assert summary["counts"]["delivered"] + summary["counts"]["undelivered"] + summary["counts"]["rejected"] == 2
    assert summary["rejected_count"] == 4 and len(summary["rejected"]) == 4


async def test_batch_plain_strings_and_price(client: httpx.AsyncClient) -> None:
    long_text = "a" * 161  # two GSM segments
    r = await client.post("/v1/batches", json={"text": long_text, "recipients": ["13800000001", "13800000011"]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["segments"] == 4 and body["price_total"] == "0.16" and body["price_per_segment"] == "0.04"
    assert all(m["encoding"] == "gsm7" and m["segments"] == 2 and "text" not in m for m in body["messages"])


async def test_idempotency_key_replays_and_sends_once(client: httpx.AsyncClient, db: Database) -> None:
    payload = {"to": "13800000001", "text": "once"}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/v1/messages", json=payload, headers=headers)
    second = await client.post("/v1/messages", json=payload, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 1
    other = await client.post("/v1/messages", json={"to": "13800000001", "text": "different"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


async def test_concurrent_retries_with_one_key_send_once(client: httpx.AsyncClient, db: Database) -> None:
    payload = {"recipients": ["13800000001", "13800000011"], "text": "race"}
    results = await asyncio.gather(
        *(client.post("/v1/batches", json=payload, headers={"Idempotency-Key": "same"}) for _ in range(4))
    )
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["id"] for r in results}) == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 2


async def test_scheduled_message_waits_and_can_be_canceled(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/messages", json={"to": "13800000001", "text": "later",
                                                "scheduled_at": "2099-01-01T08:00:00+08:00"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "scheduled" and body["scheduled_at"] == "2099-01-01T00:00:00Z"
    c = await client.post(f"/v1/messages/{body['id']}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "canceled"
    again = await client.post(f"/v1/messages/{body['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "message_not_cancelable"


async def test_cannot_cancel_delivered(client: httpx.AsyncClient) -> None:
    mid = (await client.post("/v1/messages", json={"to": "13800000001", "text": "x"})).json()["id"]

    async def delivered() -> bool:
        return await _status(client, mid) == "delivered"

    await wait_until(delivered)
    r = await client.post(f"/v1/messages/{mid}/cancel")
    assert r.status_code == 409
    assert r.json()["error"] == {
        "code": "message_not_cancelable",
        "message": "The message is delivered; only accepted, held, queued, scheduled messages can be canceled.",
        "field": "id",
    }


async def test_list_filters_and_cursor(client: httpx.AsyncClient) -> None:
    numbers = ["13800000001", "13900000001", "13700000001", "13600000001", "13500000001", "13800000002"]
    r = await client.post("/v1/batches", json={"text": "hi", "recipients": numbers})
    batch = r.json()["id"]

    async def all_final() -> bool:
        return bool((await client.get(f"/v1/batches/{batch}")).json()["completed"])

    await wait_until(all_final)
    page1 = (await client.get("/v1/messages", params={"batch": batch, "limit": 4})).json()
    assert len(page1["data"]) == 4 and page1["has_more"]
    page2 = (await client.get("/v1/messages", params={"batch": batch, "limit": 4, "cursor": page1["next_cursor"]})).json()
    assert len(page2["data"]) == 2 and not page2["has_more"]
    ids_ = [m["id"] for m in page1["data"] + page2["data"]]
    assert ids_ == sorted(ids_, reverse=True) and len(set(ids_)) == 6
    undelivered = (await client.get("/v1/messages", params={"status": "undelivered"})).json()["data"]
    assert [m["to"] for m in undelivered] == ["+8613800000002"]
    by_to = (await client.get("/v1/messages", params={"to": "13900000001"})).json()["data"]
    assert [m["to"] for m in by_to] == ["+8613900000001"]
    both = (await client.get("/v1/messages", params={"status": "delivered,undelivered", "batch": batch})).json()
    assert len(both["data"]) == 6
    none = (await client.get("/v1/messages", params={"until": "2000-01-01T00:00:00Z"})).json()
    assert none["data"] == []
