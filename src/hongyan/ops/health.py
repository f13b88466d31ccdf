"""Liveness (/health), readiness (/ready) and the Prometheus endpoint (/metrics); semantics in
docs/observability.md.

/ready answers 503 only when this process cannot do its work: the database or the broker is unreachable.
A channel that is down is a degraded service, not an unready process (another process or channel may carry
the traffic, and restarting this one would not bring a carrier back): 200 with status "degraded".
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import text

from hongyan.api.responses import JsonResponse
from hongyan.ops import metrics

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_S = 2.0  # one check; a load balancer probes every few seconds
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"  # AMQP 0-9-1 §4.2.2: protocol header; the broker answers Connection.Start


@router.get("/health", summary="Liveness: the process answers")
async def health() -> JsonResponse:
    return JsonResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: database and broker reachable; channels reported")
async def ready(request: Request) -> JsonResponse:
    state = request.app.state
    runtime = getattr(state, "runtime", None)
    database = await _check(_database(state.db))
    broker = await _broker(runtime, state.settings.queue_url)
    # an API process in production mode runs only the outbox relay: its carriers are the workers'
    embedded = runtime is not None and not getattr(runtime, "relay_only", False)
    checks: dict[str, Any] = {"database": database, "broker": broker, "workers": "embedded" if embedded else "external"}
    channels: dict[str, str] = {}
    if embedded:
        channels = {cid: "up" if s.get("up") else "down" for cid, s in sorted(runtime.channel_status().items())}
        checks["channels"] = channels
    ok = database == "ok" and broker in ("ok", "in-process", "external")
    status = ("degraded" if "down" in channels.values() else "ok") if ok else "unavailable"
    return JsonResponse({"status": status, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    state = request.app.state
    body = metrics.render(runtime=getattr(state, "runtime", None), db=getattr(state, "db", None),
                          counts=getattr(state, "metrics_counts", None))
    return Response(body, media_type=metrics.CONTENT_TYPE)


async def _check(probe: Any) -> str:
    """'ok', or 'error: <what>' (readiness reports, it does not raise)."""
    try:
        await asyncio.wait_for(probe, timeout=CHECK_TIMEOUT_S)
        return "ok"
    except TimeoutError:
        return "error: timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


async def _database(db: Any) -> None:
    async with db.read() as session:
        await session.execute(text("SELECT 1"))


async def _broker(runtime: Any, queue_url: str) -> str:
    """The runtime's queue answers ping() (RabbitMQ); an in-process queue needs no broker; a process without a
    runtime checks that the configured broker speaks AMQP."""
    queue = getattr(runtime, "queue", None)
    ping = getattr(queue, "ping", None)
    if ping is not None:
        return await _check(ping())
    if runtime is not None:
        return "in-process"
    if queue_url.startswith(("amqp://", "amqps://")):
        return await _check(amqp_reachable(queue_url))
    return "external"


async def amqp_reachable(url: str) -> None:
    """Connect and send the AMQP protocol header; a broker answers with a method frame (Connection.Start).
    No login: readiness must not need the broker's credentials to be right to say it is there (a wrong password
    shows in the workers). amqps:// is checked at TCP level only."""
    parts = urlsplit(url)
    tls = parts.scheme == "amqps"
    reader, writer = await asyncio.open_connection(parts.hostname or "localhost", parts.port or (5671 if tls else 5672))
    try:
        if tls:
            return
        writer.write(AMQP_HEADER)
        await writer.drain()
        frame_type = await reader.readexactly(1)
        if frame_type != b"\x01":  # AMQP 0-9-1 §4.2.3: 1 = method frame; anything else is not a 0-9-1 broker
            raise ConnectionError("not an AMQP 0-9-1 broker")
    finally:
        writer.close()
