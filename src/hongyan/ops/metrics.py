"""Prometheus metrics: what a process counts as it works, what it reads from its runtime at scrape time, and
the message counts a background refresher reads from the database.

Three sources, one exposition (docs/observability.md lists every metric):
- counters and histograms in the default registry, updated where things happen: state transitions (counted
  when their transaction commits), submit and receipt latency (`observe_submit`, `observe_receipt`), HTTP
  requests (`HttpMetrics`, a pure ASGI middleware);
- `LiveCollector`, built per scrape for one process's runtime and database: queue depth per lane, channels and
  binds, throttling, the DB connection pool — plain attribute reads on the event loop, no I/O;
- `DatabaseCounts`, a refresher task: non-final messages by status, the webhook backlog, outbox rows, every
  HONGYAN_METRICS_REFRESH_S (one `GROUP BY status` on the (status, expires_at) index, not one query per scrape).

Per-app objects are never registered in the default registry (a second app in one process, as in the tests,
would collide): `render()` and `start_metrics_server()` build a registry that reads the default one plus a
`LiveCollector` for the given runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from hongyan.db.engine import Database
from hongyan.dispatch.codes_first import REQUEST_STARTED
from hongyan.dispatch.queue import DISPATCH, LANE_NAMES
from hongyan.messaging.states import FINAL, Status

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
NON_FINAL = tuple(s.value for s in Status if s not in FINAL)

# no `*_created` series beside every counter and histogram: they double the exposition and nothing here uses them
disable_created_metrics()

# -- counted where it happens ------------------------------------------------------------------------------------
TRANSITIONS = Counter(
    "hongyan_message_transitions", "Message status changes applied (committed), by target status.", ["status"])
SUBMIT_LATENCY = Histogram(
    "hongyan_submit_latency_seconds", "Connector submit of one message: call to the carrier's answer.",
    ["lane", "channel"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
RECEIPT_LATENCY = Histogram(
    "hongyan_receipt_latency_seconds", "Carrier acceptance (sent) to delivery receipt.", ["channel"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))
HTTP_REQUESTS = Counter(
    "hongyan_http_requests", "HTTP requests answered, by route template and status class.",
    ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "hongyan_http_request_duration_seconds", "HTTP request handling time, by route template.", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
REFRESH_ERRORS = Counter(
    "hongyan_db_counts_refresh_errors", "Database count refreshes that failed (the last good values are kept).")


def lane_label(lane: int) -> str:
    return LANE_NAMES.get(lane, str(lane))


def observe_submit(channel_id: str, lane: int, seconds: float) -> None:
    """One message submitted to a channel (answered, accepted or not): how long the carrier took."""
    SUBMIT_LATENCY.labels(lane_label(lane), channel_id).observe(seconds)


def observe_receipt(channel_id: str, seconds: float) -> None:
    """A final delivery receipt: seconds from the carrier's acceptance of the message to its receipt."""
    RECEIPT_LATENCY.labels(channel_id).observe(seconds)


# -- transitions, counted on commit ------------------------------------------------------------------------------
_PENDING = "hongyan_metrics_transitions"


def count_transitions(session: Any, rows: Iterable[dict[str, Any]]) -> None:
    """Called by messaging.transitions.apply_transitions with the rows it changed; the counts reach the counter
    when the session's transaction commits (a rolled-back change is not counted)."""
    sync_session = getattr(session, "sync_session", session)
    pending: Tally[str] = sync_session.info.setdefault(_PENDING, Tally())
    pending.update(row["status"] for row in rows)


@event.listens_for(Session, "after_commit")
def _count_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        for status, n in pending.items():
            TRANSITIONS.labels(status).inc(n)


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outer transaction ended without a commit (after_commit ran first)
        session.info.pop(_PENDING, None)


# -- database counts ---------------------------------------------------------------------------------------------
class DatabaseCounts:
    """Counts read from the database every `interval_s` by a background task: the last good values are what a
    scrape sees (a scrape never waits for the database)."""

    def __init__(self, db: Database, interval_s: float = 15.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self.messages: dict[str, int] = {}
        self.webhook_backlog: int | None = None
        self.outbox_items: int | None = None
        self.refreshed_at: float | None = None  # unix time of the last good refresh
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def refresh(self) -> None:
        from hongyan.dispatch.models import OutboxItem
        from hongyan.messaging.models import Message
        from hongyan.webhooks.models import WebhookEvent

        async with self.db.read() as session:
            # index-only on PostgreSQL: ix_message_status_expires (status, expires_at); final statuses are skipped
            by_status = (await session.execute(
                select(Message.status, func.count()).where(Message.status.in_(NON_FINAL)).group_by(Message.status)
            )).all()
            backlog = await session.scalar(  # ix_webhook_event_due (status, next_attempt_at)
                select(func.count()).select_from(WebhookEvent).where(WebhookEvent.status == "pending"))
            outbox = await session.scalar(select(func.count()).select_from(OutboxItem))
        counts = dict.fromkeys(NON_FINAL, 0)
        counts.update({status: int(n) for status, n in by_status})
        self.messages, self.webhook_backlog, self.outbox_items = counts, int(backlog or 0), int(outbox or 0)
        self.refreshed_at = time.time()

    async def run(self, stop_event: asyncio.Event) -> None:
        """Refresh until `stop_event` is set; a failure is logged and counted, the next round tries again."""
        while not stop_event.is_set():
            try:
                await asyncio.wait_for(self.refresh(), timeout=max(5.0, self.interval_s))
            except Exception as exc:  # the metrics must never take the process down
                REFRESH_ERRORS.inc()
                log.warning("metrics: database counts refresh failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=self.interval_s)

    def start(self) -> DatabaseCounts:
        self._stop.clear()
        self._task = asyncio.create_task(self.run(self._stop), name="metrics-db-counts")
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None


async def run_refresher(db: Database, stop_event: asyncio.Event, *, interval_s: float = 15.0,
                        counts: DatabaseCounts | None = None) -> None:
    """The refresher as a plain coroutine (for a worker's task list); pass `counts` to read its values."""
    await (counts or DatabaseCounts(db, interval_s)).run(stop_event)


# -- read at scrape time -----------------------------------------------------------------------------------------
class LiveCollector(Collector):
    """What one process's runtime and database say right now; the runtime is absent in an API-only process."""

    def __init__(self, *, runtime: Callable[[], Any] | Any = None, db: Database | None = None,
                 counts: DatabaseCounts | None = None) -> None:
        self._runtime = runtime if callable(runtime) else (lambda: runtime)
        self.db = db
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime()
        if runtime is not None:
            yield from _queue_metrics(runtime)
            yield from _channel_metrics(runtime)
            yield from _runtime_metrics(runtime)
            yield from _codes_first_metrics(runtime)
        if self.db is not None:
            yield from _pool_metrics(self.db)
        if self.counts is not None:
            yield from _count_metrics(self.counts)


def _queue_metrics(runtime: Any) -> Iterator[Metric]:
    try:
        depth = runtime.queue.depth(DISPATCH)
    except Exception as exc:  # a backend that cannot tell right now: no sample rather than a failed scrape
        log.debug("metrics: queue depth unavailable: %s", exc)
        return
    family = GaugeMetricFamily("hongyan_queue_depth", "Dispatch queue items waiting, by lane (an item carries "
                               "up to HONGYAN_DISPATCH_CHUNK message ids).", labels=["lane"])
    for lane in sorted(set(LANE_NAMES) | set(depth)):
        family.add_metric([lane_label(lane)], depth.get(lane, 0))
    yield family


RUNTIME_EVENTS = {
    "relayed": "message ids published from the outbox",
    "submitted": "messages a carrier accepted",
    "receipts": "delivery receipts stored",
    "receipts_parked": "receipts that arrived before their submit was committed (retried)",
    "retries": "submits answered with a temporary error or a link loss (queued again)",
    "recovered_sending": "messages taken over from a worker that died after moving them to sending "
                         "(they may reach the carrier twice)",
    "recovered_queued": "queued messages re-published at start (in-process queue only)",
    "expired": "messages expired at the end of their validity",
    "errors": "failed rounds of a worker loop (see the log)",
}


def _runtime_metrics(runtime: Any) -> Iterator[Metric]:
    stats = getattr(runtime, "stats", None)
    if stats is None:
        return
    family = CounterMetricFamily("hongyan_worker_events", "What this process's workers did since it started, by "
                                 "event: " + "; ".join(f"{k}: {v}" for k, v in RUNTIME_EVENTS.items()) + ".",
                                 labels=["event"])
    for name in RUNTIME_EVENTS:
        value = getattr(stats, name, None)
        if isinstance(value, int):
            family.add_metric([name], value)
    yield family


def _codes_first_metrics(runtime: Any) -> Iterator[Metric]:
    gate = getattr(runtime, "gate", None)
    if gate is None:
        return
    yield GaugeMetricFamily("hongyan_codes_latency_ms", "Verification codes' latency as this process's codes-first "
                            "gate sees it (p90 per stage over the last second, summed over stages; 0: no code moved).",
                            value=gate.latency or 0.0)
    yield GaugeMetricFamily("hongyan_bulk_cap_tps", "Cap on this process's notification and marketing submits while "
                            "codes are slower than HONGYAN_CODES_FIRST_TARGET_MS (0: not capped).", value=gate.cap or 0.0)


def _channel_metrics(runtime: Any) -> Iterator[Metric]:
    up = GaugeMetricFamily("hongyan_channel_up", "1 if the channel can take messages.", labels=["channel"])
    binds_up = GaugeMetricFamily("hongyan_channel_binds_up", "SMPP binds bound now.", labels=["channel"])
    binds = GaugeMetricFamily("hongyan_channel_binds", "SMPP binds this process runs for the channel.",
                              labels=["channel"])
    throttled = CounterMetricFamily("hongyan_channel_throttled", "Throttling answers from the carrier "
                                    "(ESME_RTHROTTLED), since the connector started.", labels=["channel"])
    for channel_id, status in sorted(runtime.channel_status().items()):
        up.add_metric([channel_id], 1 if status.get("up") else 0)
        binds_up.add_metric([channel_id], status.get("binds_up", 0))
        binds.add_metric([channel_id], len(status.get("binds", ())))
        count = status.get("counters", {}).get("throttled")
        if isinstance(count, int):
            throttled.add_metric([channel_id], count)
    yield from (up, binds_up, binds, throttled)


def _pool_metrics(db: Database) -> Iterator[Metric]:
    pool = db.engine.sync_engine.pool
    if not hasattr(pool, "checkedout"):  # NullPool / StaticPool: nothing to size
        return
    yield GaugeMetricFamily("hongyan_db_pool_size", "Connections the pool keeps (HONGYAN_DB_POOL_SIZE).",
                            value=pool.size())
    yield GaugeMetricFamily("hongyan_db_pool_checked_out", "Connections in use now.", value=pool.checkedout())
    yield GaugeMetricFamily("hongyan_db_pool_overflow", "Connections open beyond the pool size (negative: "
                            "pool slots not yet opened).", value=pool.overflow())


def _count_metrics(counts: DatabaseCounts) -> Iterator[Metric]:
    if counts.refreshed_at is None:
        return
    messages = GaugeMetricFamily("hongyan_messages", "Messages in a non-final status (database, refreshed every "
                                 "HONGYAN_METRICS_REFRESH_S).", labels=["status"])
    for status, n in counts.messages.items():
        messages.add_metric([status], n)
    yield messages
    yield GaugeMetricFamily("hongyan_webhook_backlog", "Webhook deliveries pending (not yet delivered or given up).",
                            value=counts.webhook_backlog or 0)
    yield GaugeMetricFamily("hongyan_outbox_items", "Outbox rows the relay has not published yet.",
                            value=counts.outbox_items or 0)
    yield GaugeMetricFamily("hongyan_db_counts_refreshed_timestamp_seconds", "When the database counts were read.",
                            value=counts.refreshed_at)


def registry_for(*, runtime: Callable[[], Any] | Any = None, db: Database | None = None,
                 counts: DatabaseCounts | None = None) -> CollectorRegistry:
    """A registry with everything of the default one plus this process's live values."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(REGISTRY)  # type: ignore[arg-type]  # a registry is a collector (it has collect())
    registry.register(LiveCollector(runtime=runtime, db=db, counts=counts))
    return registry


def render(*, runtime: Any = None, db: Database | None = None, counts: DatabaseCounts | None = None) -> bytes:
    """The text exposition for GET /metrics."""
    return generate_latest(registry_for(runtime=runtime, db=db, counts=counts))


# -- a metrics endpoint for processes without HTTP ---------------------------------------------------------------
class MetricsServer:
    """GET /metrics (and /health) on host:port, served from the running event loop so that the runtime is read
    on its own thread (prometheus_client's threaded server would read its dicts concurrently)."""

    def __init__(self, registry: CollectorRegistry, counts: DatabaseCounts | None, owns_counts: bool) -> None:
        self.registry = registry
        self.counts = counts
        self._owns_counts = owns_counts
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
            path = path.split(b"?", 1)[0]
            if method != b"GET":
                status, ctype, body = b"405 Method Not Allowed", b"text/plain", b"GET only\n"
            elif path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE.encode(), generate_latest(self.registry)
            elif path == b"/health":
                status, ctype, body = b"200 OK", b"application/json", b'{"status":"ok"}'
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.counts is not None and self._owns_counts:
            await self.counts.stop()


async def start_metrics_server(host: str, port: int, *, runtime: Callable[[], Any] | Any = None,
                               db: Database | None = None, counts: DatabaseCounts | None = None,
                               refresh_s: float | None = None) -> MetricsServer:
    """Serve this process's metrics on host:port (port 0: any free port, see `.port`). With `db` and no `counts`
    it also runs the database-count refresher (every `refresh_s`, default the runtime's
    HONGYAN_METRICS_REFRESH_S). Stop with `await server.close()`."""
    owns = counts is None and db is not None
    if owns:
        settings = getattr(runtime, "settings", None)
        interval = refresh_s or getattr(settings, "metrics_refresh_s", 15.0)
        counts = DatabaseCounts(db, interval).start()  # type: ignore[arg-type]  # db is not None here
    metrics = MetricsServer(registry_for(runtime=runtime, db=db, counts=counts), counts, owns)
    metrics.server = await asyncio.start_server(metrics.answer, host, port)
    return metrics


# -- HTTP requests -----------------------------------------------------------------------------------------------
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Pure ASGI middleware: counts requests by method, route template (`/v1/messages/{message_id}`, never the
    raw path: bounded labels, no ids or numbers) and status class; `other` for paths no route matched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        REQUEST_STARTED.set(started)  # a code's `api` stage (dispatch.codes_first), measured where it is published
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            method = scope["method"] if scope.get("method") in _METHODS else "other"
            HTTP_REQUESTS.labels(method, route, f"{status // 100}xx").inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
