"""Quote, API keys, OpenAPI document and explorer, health and readiness."""

from __future__ import annotations

import httpx

from hongyan.db.engine import Database
from support import AccountFixture, approved_signature


async def test_quote(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    r = await client.post("/v1/messages/quote", json={"text": "【鸿雁】您好", "to": "13800138000"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_not_approved"  # as the send would say
    await approved_signature(db, account.account_id)
    r = await client.post("/v1/messages/quote", json={"text": "【鸿雁】" + "好" * 70, "to": "13800138000"})
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["encoding"] == "ucs2" and q["characters"] == 74 and q["segments"] == 2
    assert q["price"] == "0.08" and q["price_per_segment"] == "0.04" and q["currency"] == "CNY"
    assert "".join(q["segment_texts"]) == "【鸿雁】" + "好" * 70
    bad = await client.post("/v1/messages/quote", json={"text": "x", "to": "123"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "to"


async def test_api_keys_lifecycle(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/api-keys", json={"name": "orders", "scopes": ["send"]})
    assert created.status_code == 201, created.text
    token = created.json()["key"]
    listed = (await client.get("/v1/api-keys")).json()["data"]
    assert {k["name"] for k in listed} >= {"orders"}
    assert all("key" not in k and token.split(".")[1] not in str(k) for k in listed)  # secret never listed
    r = await client.post("/v1/messages", json={"to": "13800000001", "text": "x"},
                          headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202
    r = await client.get(f"/v1/messages/{r.json()['id']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"  # no read scope
    bad = await client.post("/v1/api-keys", json={"name": "x", "scopes": ["root"]})
    assert bad.status_code == 400 and bad.json()["error"] == {
        "code": "invalid_scope", "message": "Unknown scope 'root'.", "field": "scopes[0]"}


async def test_openapi_and_explorer(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for path in ("/v1/messages", "/v1/batches", "/v1/messages/{message_id}", "/v1/batches/{batch_id}",
                 "/v1/messages/{message_id}/cancel", "/v1/webhooks", "/v1/api-keys", "/v1/messages/quote"):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"]["text"] == "尊敬的{客户姓名},您的订单{订单号}已发货。"
    assert body["schema"]["$ref"] == "#/components/schemas/BatchCreate"
    assert "RecipientIn" in spec["components"]["schemas"]
    page = await client.get("/docs")
    assert page.status_code == 200 and "openapi.json" in page.text
    assert "cdn" not in page.text.lower()


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = (await client.get("/ready")).json()
    assert ready["status"] == "ok" and ready["checks"]["database"] == "ok"
