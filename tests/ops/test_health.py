"""/health and /ready on the real app: database, broker and channels (a real SMSC simulator and a dead port)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from hongyan.channels import service as channels
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.ops import health
from support import free_port, wait_until

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


async def add_smpp_channel(db: Database, name: str, config: dict[str, Any]) -> str:
    async with db.write() as session:
        channel = await channels.create_channel(session, name=name, kind="smpp", config=config)
        await channels.create_route(session, channel=channel.id, priority=10)
        return channel.id


async def test_ready_with_embedded_workers(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    response = await client.get("/ready")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok", body
    assert body["checks"]["database"] == "ok" and body["checks"]["workers"] == "embedded"
    assert body["checks"]["broker"] in ("ok", "in-process")
    assert body["checks"]["channels"] and set(body["checks"]["channels"].values()) == {"up"}


async def test_a_channel_down_is_degraded_not_unready(app: Any, client: httpx.AsyncClient, db: Database,
                                                      smsc: Any) -> None:
    live = await add_smpp_channel(db, "sim", smsc.channel_config(binds=2))
    dead = await add_smpp_channel(db, "dead", {"host": "127.0.0.1", "port": free_port(), "system_id": "x",
                                               "password": "x", "reconnect_min_s": 0.1, "reconnect_max_s": 0.5})
    await app.state.runtime.reload_channels()

    async def bound() -> bool:
        text = (await client.get("/metrics")).text
        return f'hongyan_channel_binds_up{{channel="{live}"}} 2.0' in text

    await wait_until(bound, timeout=15, message="two binds up on the simulator channel")
    text = (await client.get("/metrics")).text
    assert f'hongyan_channel_up{{channel="{dead}"}} 0.0' in text
    assert f'hongyan_channel_binds{{channel="{live}"}} 2.0' in text
    assert f'hongyan_channel_binds_up{{channel="{dead}"}} 0.0' in text
    assert f'hongyan_channel_throttled_total{{channel="{live}"}} 0.0' in text

    response = await client.get("/ready")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded", body
    assert body["checks"]["channels"][dead] == "down" and body["checks"]["channels"][live] == "up"


async def test_unreachable_database_is_unready(settings: Settings) -> None:
    from hongyan.app import create_app

    dead = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing")
    application = create_app(settings, run_workers=False, db=dead)
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                assert (await c.get("/health")).status_code == 200  # alive: do not restart it for this
                response = await c.get("/ready")
                body = response.json()
                assert response.status_code == 503 and body["status"] == "unavailable"
                assert body["checks"]["database"].startswith("error:")
                assert "channels" not in body["checks"] and body["checks"]["workers"] == "external"
    finally:
        await dead.dispose()


async def test_broker_check_without_a_runtime() -> None:
    """An API process with no runtime of its own checks that the broker answers AMQP (no login needed)."""
    try:
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 5672), 2)
    except OSError:
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    assert await health._broker(None, RABBITMQ) == "ok"
    assert await health._broker(None, "amqp://guest:guest@127.0.0.1:1/") == "error: ConnectionRefusedError"
    assert await health._broker(None, "memory://") == "external"


async def test_broker_check_refuses_a_server_that_is_not_amqp() -> None:
    async def not_a_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(8)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_a_broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await health._broker(None, f"amqp://127.0.0.1:{port}/") == "error: ConnectionError"
    finally:
        server.close()
        await server.wait_closed()


async def test_api_process_of_production_mode(db: Database, settings: Settings, amqp_url: str,
                                              rabbit_prefix: str) -> None:
    """`serve --no-workers` on RabbitMQ: its relay-only runtime pings the broker; carriers are the workers'."""
    from hongyan.app import create_app

    split = settings.model_copy(update={"queue_url": amqp_url, "queue_prefix": rabbit_prefix})
    application = create_app(split, run_workers=False, db=db)
    async with application.router.lifespan_context(application):
        assert application.state.runtime.relay_only and application.state.runtime.connectors == {}
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            body = (await c.get("/ready")).json()
    assert body["status"] == "ok" and body["checks"]["broker"] == "ok", body
    assert body["checks"]["workers"] == "external" and "channels" not in body["checks"]
