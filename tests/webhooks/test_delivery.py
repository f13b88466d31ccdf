"""Webhooks end to end: a real HTTP receiver on 127.0.0.1, signed events, retries, restart safety."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import select

from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.webhooks.models import WebhookEvent
from hongyan.webhooks.sender import WebhookSender
from hongyan.webhooks.signing import verify
from support import AccountFixture, free_port, wait_until


class Receiver:
    """A tiny ASGI app that records requests; `fail_first` answers 500 to the first N requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.calls += 1
        status = 500 if self.calls <= self.fail_first else 200
        if status == 200:
            self.requests.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: asyncio.sleep(0, result=server.started), message="receiver started")
    yield app, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


async def test_status_events_are_signed_and_unique(
    client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    created = await client.post("/v1/webhooks", json={"url": url})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    assert "secret" not in (await client.get("/v1/webhooks")).json()["data"][0]
    mid = (await client.post("/v1/messages", json={"to": "13800000001", "text": "hook"})).json()["id"]

    async def got_delivered() -> bool:
        return any(orjson.loads(b)["type"] == "message.delivered" for _, b in app.requests)

    await wait_until(got_delivered, message="delivered webhook")
    types = [orjson.loads(b)["type"] for _, b in app.requests]
    assert types == ["message.queued", "message.sending", "message.sent", "message.delivered"]
    event_ids = set()
    for headers, body in app.requests:
        assert verify(secret, body, headers["hongyan-signature"])
        payload = orjson.loads(body)
        assert headers["hongyan-event-id"] == payload["id"]
        assert payload["data"]["message_id"] == mid and payload["data"]["to"] == "+8613800000001"
        event_ids.add(payload["id"])
    assert len(event_ids) == 4


async def test_event_type_filter(client: httpx.AsyncClient, receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    await client.post("/v1/webhooks", json={"url": url, "event_types": ["message.delivered"]})
    await client.post("/v1/messages", json={"to": "13800000001", "text": "hook"})
    await wait_until(lambda: asyncio.sleep(0, result=len(app.requests) == 1), message="one webhook")
    assert orjson.loads(app.requests[0][1])["type"] == "message.delivered"
    bad = await client.post("/v1/webhooks", json={"url": url, "event_types": ["message.exploded"]})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "event_types[0]"
    bad = await client.post("/v1/webhooks", json={"url": "ftp://x"})
    assert bad.json()["error"]["code"] == "invalid_webhook_url"


async def test_failed_post_is_retried_and_survives_a_new_sender(
    db: Database, settings: Settings, account: AccountFixture, receiver: tuple[Receiver, str]
) -> None:
    """Events live in the DB: a receiver that fails gets retried; a fresh sender (after a restart) delivers."""
    from hongyan.webhooks import service

    app, url = receiver
    app.fail_first = 2
    settings.webhook_retry_base_s = 0.05
    async with db.write() as session:
        endpoint, _ = await service.create_endpoint(session, account_id=account.account_id, url=url)
        from hongyan.core.clock import utcnow

        row = {"id": "msg_X", "account_id": account.account_id, "batch_id": None, "to_number": "+8613800000001",
               "status": "delivered", "error_code": None, "carrier_error_code": None, "segment_count": 1,
               "price_micros": 40000, "currency": "CNY", "client_ref": None}
        assert await service.enqueue_message_status_events(session, [row], occurred_at=utcnow()) == 1
    first = WebhookSender(db, settings)
    assert await first.deliver_due() == 1  # attempt 1 fails (HTTP 500)
    await first.close()
    second = WebhookSender(db, settings)  # "after a restart"

    async def delivered() -> bool:
        await second.deliver_due()
        return len(app.requests) == 1

    await wait_until(delivered, message="retried delivery")
    await second.close()
    async with db.read() as session:
        event = await session.scalar(select(WebhookEvent))
    assert event is not None and event.status == "delivered" and event.attempts == 3
    assert app.calls == 3


async def test_gives_up_after_retry_window(db: Database, settings: Settings, account: AccountFixture) -> None:
    from hongyan.core.clock import utcnow
    from hongyan.webhooks import service

    settings.webhook_retry_hours = 0
    async with db.write() as session:
        await service.create_endpoint(session, account_id=account.account_id, url="http://127.0.0.1:9/none")
        row = {"id": "msg_Y", "account_id": account.account_id, "batch_id": None, "to_number": "+8613800000001",
               "status": "sent", "error_code": None, "carrier_error_code": None, "segment_count": 1,
               "price_micros": 40000, "currency": "CNY", "client_ref": None}
        await service.enqueue_message_status_events(session, [row], occurred_at=utcnow())
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    sender = WebhookSender(db, settings, client=httpx.AsyncClient(transport=transport))
    assert await sender.deliver_due() == 1
    await sender.close()
    async with db.read() as session:
        event = await session.scalar(select(WebhookEvent))
    assert event is not None and event.status == "failed" and event.last_status_code == 503
