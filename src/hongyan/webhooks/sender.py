"""Delivers the webhook outbox: claims due events with a lease, POSTs them signed, retries with backoff.

Schedule: 10 s, 20 s, 40 s … doubling, capped at 1 h between attempts, until `webhook_retry_hours`
(24 h) after the event; then the event is `failed` (visible in the console, can be replayed).
A 2xx answer is success; anything else, a timeout or a connection error is retried.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import bindparam, select, update

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.webhooks import service
from hongyan.webhooks.models import WebhookEndpoint, WebhookEvent
from hongyan.webhooks.signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

BASE_DELAY_S = 10
MAX_DELAY_S = 3600


def retry_delay(attempts: int, base_s: float = BASE_DELAY_S) -> timedelta:
    """Delay before attempt number `attempts + 1` (attempts already made ≥ 1)."""
    return timedelta(seconds=min(MAX_DELAY_S, base_s * 2 ** max(0, attempts - 1)))


class WebhookSender:
    def __init__(self, db: Database, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self.db = db
        self.settings = settings
        self.client = client or httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self.wakeup = asyncio.Event()
        self._sem = asyncio.Semaphore(settings.webhook_concurrency)
        self._stopping = False
        self._written_seen = service.events_written()

    def nudge(self) -> None:
        """After a commit that may have written events: wake the sender if this process wrote any since it
        last looked. Events written by other processes are found by the sender's poll (every second)."""
        written = service.events_written()
        if written != self._written_seen:
            self._written_seen = written
            self.wakeup.set()

    def stop(self) -> None:
        """Finish the current round and leave `run` (events not yet sent stay in the outbox)."""
        self._stopping = True
        self.wakeup.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                sent = await self.deliver_due()
            except Exception:  # keep the loop alive; the events stay in the outbox
                log.exception("webhook delivery round failed")
                sent = 0
            if sent == 0 and not self._stopping:
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=1.0)
                except TimeoutError:
                    pass

    async def deliver_due(self, limit: int = 200) -> int:
        """Claim up to `limit` due events and deliver them; returns how many were attempted."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_s * 3)
        async with self.db.write() as session:
            query = (
                select(WebhookEvent.id, WebhookEvent.payload, WebhookEvent.event_type, WebhookEvent.attempts,
                       WebhookEvent.created_at, WebhookEndpoint.url, WebhookEndpoint.secret)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookEvent.endpoint_id)
                .where(WebhookEvent.status == "pending", WebhookEvent.next_attempt_at <= now)
                .order_by(WebhookEvent.next_attempt_at)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(of=WebhookEvent, skip_locked=True)
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            await session.execute(
                update(WebhookEvent).where(WebhookEvent.id.in_([r.id for r in rows])).values(next_attempt_at=lease)
            )
        results = await asyncio.gather(*(self._deliver(r) for r in rows))
        table = WebhookEvent.__table__
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                last_attempt_at=bindparam("b_at"),
                last_status_code=bindparam("b_code"),
                last_error=bindparam("b_error"),
                next_attempt_at=bindparam("b_next"),
                delivered_at=bindparam("b_delivered"),
            )
        )
        async with self.db.write() as session:
            await (await session.connection()).execute(stmt, results)
        return len(rows)

    async def _deliver(self, row: Any) -> dict[str, Any]:
        body = row.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Hongyan-Webhooks/1",
            SIGNATURE_HEADER: sign(row.secret, body),
            EVENT_ID_HEADER: row.id,
            EVENT_TYPE_HEADER: row.event_type,
        }
        status_code: int | None = None
        error: str | None = None
        async with self._sem:
            try:
                response = await self.client.post(row.url, content=body, headers=headers)
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
        now = utcnow()
        attempts = row.attempts + 1
        result: dict[str, Any] = {"b_id": row.id, "b_attempts": attempts, "b_at": now, "b_code": status_code,
                                  "b_error": error, "b_status": "pending", "b_next": now, "b_delivered": None}
        if error is None:
            result.update(b_status="delivered", b_delivered=now)
        else:
            next_at = now + retry_delay(attempts, self.settings.webhook_retry_base_s)
            if next_at > row.created_at + timedelta(hours=self.settings.webhook_retry_hours):
                result.update(b_status="failed")
            else:
                result.update(b_next=next_at)
        return result

    async def close(self) -> None:
        await self.client.aclose()
