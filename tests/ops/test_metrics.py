"""Prometheus metrics on the real app (sandbox carrier, SQLite and PostgreSQL): values move when things happen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.states import Status
from hongyan.messaging.transitions import Transition, apply_transitions
from hongyan.ops import metrics
from support import AccountFixture, free_port, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"metrics_refresh_s": 0.05})


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_metric(client: httpx.AsyncClient, name: str, check: Any, **labels: str) -> Samples:
    async def ok() -> Samples | None:
        samples = await scrape(client)
        return samples if check(value(samples, name, **labels)) else None

    return await wait_until(ok, timeout=15, interval=0.05, message=f"{name}{labels}")


async def send(client: httpx.AsyncClient, to: str, **extra: Any) -> str:
    response = await client.post("/v1/messages", json={"to": to, "text": "metrics", **extra})
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["id"])


async def test_a_delivered_message_moves_the_counters(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await send(client, "13800000001")  # sandbox: …00001 is always delivered
    after = await wait_metric(client, "hongyan_message_transitions_total",
                              lambda v: v > value(before, "hongyan_message_transitions_total", status="delivered"),
                              status="delivered")
    for status in ("queued", "sending", "sent"):
        assert value(after, "hongyan_message_transitions_total", status=status) == \
            value(before, "hongyan_message_transitions_total", status=status) + 1
    # read from the runtime at scrape time: three lanes, the sandbox channel, the pool
    assert {labels for name, labels in after if name == "hongyan_queue_depth"} == {
        (("lane", "verification"),), (("lane", "notification"),), (("lane", "marketing"),)}
    channels = [dict(labels)["channel"] for name, labels in after if name == "hongyan_channel_up"]
    assert channels and all(value(after, "hongyan_channel_up", channel=c) == 1 for c in channels)
    assert value(after, "hongyan_db_pool_size") > 0
    # /metrics is for Prometheus, not for API clients
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_message_counts_follow_the_database(client: httpx.AsyncClient) -> None:
    later = (utcnow() + timedelta(days=1)).isoformat()
    scheduled = await send(client, "13800000001", scheduled_at=later)
    await send(client, "13800000006")  # sandbox: accepted, never a receipt: stays `sent`
    samples = await wait_metric(client, "hongyan_messages", lambda v: v == 1, status="scheduled")
    samples = await wait_metric(client, "hongyan_messages", lambda v: v == 1, status="sent")
    assert value(samples, "hongyan_messages", status="queued") == 0
    assert not any(dict(labels).get("status") == "delivered" for name, labels in samples if name == "hongyan_messages")
    assert (await client.post(f"/v1/messages/{scheduled}/cancel")).status_code == 200
    await wait_metric(client, "hongyan_messages", lambda v: v == 0, status="scheduled")


async def test_webhook_backlog(client: httpx.AsyncClient) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: deliveries stay pending (retried later)
    assert (await client.post("/v1/webhooks", json={"url": nobody})).status_code == 201
    await send(client, "13800000001")
    await wait_metric(client, "hongyan_webhook_backlog", lambda v: v >= 1)


async def test_a_rolled_back_transition_is_not_counted(client: httpx.AsyncClient, db: Database) -> None:
    message_id = await send(client, "13800000001", scheduled_at=(utcnow() + timedelta(days=1)).isoformat())

    def canceled() -> float:
        return REGISTRY.get_sample_value("hongyan_message_transitions_total", {"status": "canceled"}) or 0.0

    before = canceled()
    with pytest.raises(RuntimeError):
        async with db.write() as session:
            outcome = await apply_transitions(session, [Transition(message_id, Status.CANCELED)])
            assert outcome.applied_ids == [message_id]
            raise RuntimeError("roll back")
    assert canceled() == before
    async with db.write() as session:
        await apply_transitions(session, [Transition(message_id, Status.CANCELED)])
    assert canceled() == before + 1


def test_submit_and_receipt_latency() -> None:
    def count(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name + "_count", labels) or 0.0

    submit = {"lane": "verification", "channel": "chn_metrics"}
    receipt = {"channel": "chn_metrics"}
    before = count("hongyan_submit_latency_seconds", submit), count("hongyan_receipt_latency_seconds", receipt)
    metrics.observe_submit("chn_metrics", 0, 0.02)
    metrics.observe_receipt("chn_metrics", 3.0)
    assert count("hongyan_submit_latency_seconds", submit) == before[0] + 1
    assert count("hongyan_receipt_latency_seconds", receipt) == before[1] + 1
    assert REGISTRY.get_sample_value("hongyan_submit_latency_seconds_bucket", {**submit, "le": "0.025"}) >= 1


async def test_worker_metrics_endpoint(app: Any, client: httpx.AsyncClient) -> None:
    """`hongyan worker --metrics-port`: its own endpoint, its runtime, its database counts."""
    server = await metrics.start_metrics_server("127.0.0.1", 0, runtime=app.state.runtime, db=app.state.db,
                                                refresh_s=0.05)
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            async def counted() -> Samples | None:
                response = await http.get("/metrics")
                samples = parse(response.text)
                return samples if ("hongyan_messages", (("status", "queued"),)) in samples else None

            samples = await wait_until(counted, timeout=10, message="database counts on the worker endpoint")
            assert value(samples, "hongyan_queue_depth", lane="verification") == 0
            assert any(name == "hongyan_channel_up" for name, _ in samples)
            assert (await http.get("/health")).json() == {"status": "ok"}
            assert (await http.get("/elsewhere")).status_code == 404
    finally:
        await server.close()


@pytest.fixture
async def api_only(db: Database, settings: Settings, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    from hongyan.app import create_app

    application = create_app(settings, run_workers=False, db=db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=account.headers) as c:
            yield c


async def test_api_only_process(api_only: httpx.AsyncClient) -> None:
    """No runtime: no queue or channel metrics, but the database counts and the HTTP requests."""
    await send(api_only, "13800000001")
    samples = await wait_metric(api_only, "hongyan_messages", lambda v: v == 1, status="accepted")
    assert not any(name in ("hongyan_queue_depth", "hongyan_channel_up") for name, _ in samples)
    assert value(samples, "hongyan_outbox_items") >= 1  # nobody relays in this process

    def requests(route: str, status: str, method: str = "GET") -> float:
        labels = {"method": method, "route": route, "status": status}
        return REGISTRY.get_sample_value("hongyan_http_requests_total", labels) or 0.0

    missing, unrouted = requests("/v1/messages/{message_id}", "4xx"), requests("other", "4xx")
    assert (await api_only.get("/v1/messages/msg_01J000000000000000000000XX")).status_code == 404
    assert (await api_only.get("/no/such/page")).status_code == 404
    assert requests("/v1/messages/{message_id}", "4xx") == missing + 1  # the template, never the id
    assert requests("other", "4xx") == unrouted + 1
    assert requests("/v1/messages", "2xx", "POST") >= 1
    assert REGISTRY.get_sample_value("hongyan_http_request_duration_seconds_count",
                                     {"method": "POST", "route": "/v1/messages"}) >= 1


async def test_database_counts_survive_a_failing_database() -> None:
    """A refresh that fails keeps the last values and counts the error; the task goes on."""
    dead = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing")
    counts = metrics.DatabaseCounts(dead, interval_s=0.05)
    errors = REGISTRY.get_sample_value("hongyan_db_counts_refresh_errors_total") or 0.0
    counts.start()
    try:
        await wait_until(lambda: asyncio.sleep(0, result=(
            REGISTRY.get_sample_value("hongyan_db_counts_refresh_errors_total") or 0.0) >= errors + 2),
            message="two failed refreshes")
        assert counts.refreshed_at is None
        assert list(metrics.LiveCollector(db=dead, counts=counts).collect())  # the pool, no counts: no crash
    finally:
        await counts.stop()
        await dead.dispose()
