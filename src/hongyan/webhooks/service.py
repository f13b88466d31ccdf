"""Webhook endpoints and the webhook outbox: events are rows written in the state change's transaction."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import WEBHOOKS_MANAGE, Authority, require
from hongyan.audit.service import Actor, record
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import InvalidRequest, NotFound
from hongyan.core.money import format_micros
from hongyan.webhooks.models import WebhookEndpoint, WebhookEvent

MESSAGE_EVENT_TYPES = tuple(
    f"message.{s}"
    for s in (
        "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "expired", "rejected", "failed", "canceled",
    )
)
INBOUND_EVENT_TYPE = "message.received"
# account-level events (billing): not about one message
ACCOUNT_EVENT_TYPES = ("balance.low", "package.expiring", "package.expired", "recharge.succeeded",
                       "subscription.renewed", "subscription.past_due")
# verification (OTP) outcomes (hongyan.verify.events): not about one message either
VERIFY_EVENT_TYPES = ("verify.approved", "verify.failed")
EVENT_TYPES = (*MESSAGE_EVENT_TYPES, INBOUND_EVENT_TYPE, *ACCOUNT_EVENT_TYPES, *VERIFY_EVENT_TYPES)


def validate_url(url: str, *, field: str = "url") -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("invalid_webhook_url", "The webhook URL must be an absolute http(s) URL.", field=field)
    return url.strip()


async def create_endpoint(
    session: AsyncSession, *, account_id: str, url: str, event_types: list[str] | None = None, description: str = "",
    actor: Actor | None = None, authority: Authority | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint; returns it with its signing secret (shown once). Audited when `actor` is given;
    `authority` (a member or key) must be allowed to manage webhooks (None: the platform itself)."""
    if authority is not None:
        require(authority, WEBHOOKS_MANAGE)
    for i, et in enumerate(event_types or []):
        if et not in EVENT_TYPES:
            raise InvalidRequest("invalid_event_type", f"Unknown event type '{et}'.", field=f"event_types[{i}]")
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        id=ids.new_id("whk"),
        account_id=account_id,
        url=validate_url(url),
        secret=secret,
        event_types=list(event_types or []),
        description=description,
        enabled=True,
        created_at=utcnow(),
    )
    session.add(endpoint)
    await session.flush()
    _forget_after_commit(session, account_id)
    if actor is not None:
        await record(session, actor=actor, action="webhook_endpoint.created", account_id=account_id,
                     target_type="webhook_endpoint", target_id=endpoint.id, after=endpoint_view(endpoint))
    return endpoint, secret


def endpoint_view(e: WebhookEndpoint) -> dict[str, Any]:
    """What the audit log keeps of an endpoint (never its signing secret)."""
    return {"url": e.url, "event_types": list(e.event_types or []), "description": e.description, "enabled": e.enabled}


async def list_endpoints(session: AsyncSession, *, account_id: str) -> list[WebhookEndpoint]:
    rows = await session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.account_id == account_id).order_by(WebhookEndpoint.created_at)
    )
    return list(rows)


async def delete_endpoint(
    session: AsyncSession, *, account_id: str, endpoint_id: str, actor: Actor | None = None,
    authority: Authority | None = None,
) -> None:
    if authority is not None:
        require(authority, WEBHOOKS_MANAGE)
    was_enabled = await session.scalar(
        select(WebhookEndpoint.enabled).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == account_id)
    )
    result = await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == account_id)
        .values(enabled=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound("webhook_endpoint_not_found", "No such webhook endpoint.", field="id")
    _forget_after_commit(session, account_id)
    if actor is not None:
        await record(session, actor=actor, action="webhook_endpoint.disabled", account_id=account_id,
                     target_type="webhook_endpoint", target_id=endpoint_id, before={"enabled": was_enabled},
                     after={"enabled": False})


def message_event_payload(event_id: str, row: dict[str, Any], occurred_at: datetime) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": f"message.{row['status']}",
            "created_at": isoformat(occurred_at),
            "data": {
                "message_id": row["id"],
                "batch_id": row["batch_id"],
                "to": row["to_number"],
                "status": row["status"],
                "error_code": row["error_code"],
                "carrier_error_code": row["carrier_error_code"],
                "segments": row["segment_count"],
                "price": format_micros(row["price_micros"], row["currency"]),
                "currency": row["currency"],
                "client_ref": row["client_ref"],
            },
        }
    )


async def subscribed(session: AsyncSession, account_id: str, event_type: str) -> bool:
    """Whether an enabled endpoint of the account receives `event_type` (read through the per-process
    endpoint cache, as enqueue_message_status_events reads it)."""
    endpoints = (await _endpoints_by_account(session, {account_id})).get(account_id, ())
    return any(not ep.event_types or event_type in ep.event_types for ep in endpoints)


async def enqueue_message_status_events(
    session: AsyncSession, rows: Iterable[dict[str, Any]], *, occurred_at: datetime
) -> int:
    """Write one webhook event per (changed message, subscribed endpoint) in the caller's transaction."""
    rows = list(rows)
    by_account = await _endpoints_by_account(session, {r["account_id"] for r in rows})
    if not by_account:
        return 0
    rows = await _with_payload_columns(session, [r for r in rows if r["account_id"] in by_account])
    events = []
    for row in rows:
        event_type = f"message.{row['status']}"
        for ep in by_account.get(row["account_id"], ()):
            if ep.event_types and event_type not in ep.event_types:
                continue
            event_id = ids.new_id("evt")
            events.append(
                {
                    "id": event_id,
                    "account_id": row["account_id"],
                    "endpoint_id": ep.id,
                    "event_type": event_type,
                    "message_id": row["id"],
                    "payload": message_event_payload(event_id, row, occurred_at).decode(),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": occurred_at,
                    "created_at": occurred_at,
                }
            )
    if events:
        await _insert_events(session, events)
    return len(events)


_PAYLOAD_COLUMNS = ("batch_id", "to_number", "client_ref", "segment_count", "price_micros", "currency")


async def _with_payload_columns(session: AsyncSession, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transitions return only what their callers need; a webhook payload also shows the batch, number,
    client reference and price, read here (same transaction) only for messages that have a subscriber."""
    missing = [r["id"] for r in rows if any(c not in r for c in _PAYLOAD_COLUMNS)]
    if not missing:
        return rows
    from hongyan.messaging.models import Message

    table = Message.__table__
    found = {
        row.id: row._asdict()
        for row in await session.execute(
            select(table.c.id, *(table.c[c] for c in _PAYLOAD_COLUMNS)).where(table.c.id.in_(missing)))
    }
    return [{**found.get(r["id"], {}), **r} for r in rows]


# account id → (monotonic time read, its enabled endpoints). Every status change asks; a verification code
# changes status three times, each in its own transaction. A change made in this process is seen at once
# (forget_endpoints after its commit); one made in another process within ENDPOINTS_CACHE_S
# (docs/webhooks.md).
ENDPOINTS_CACHE_S = 2.0
_endpoint_cache: dict[str, tuple[float, list[Any]]] = {}


_written = 0  # events this process has written (WebhookSender.nudge wakes the sender only when it grew)


def events_written() -> int:
    return _written


async def _insert_events(session: AsyncSession, events: list[dict[str, Any]]) -> None:
    global _written
    await (await session.connection()).execute(insert(WebhookEvent.__table__), events)
    _written += len(events)


def forget_endpoints(account_id: str) -> None:
    _endpoint_cache.pop(account_id, None)


def forget_all_endpoints() -> None:
    _endpoint_cache.clear()


def _forget_after_commit(session: AsyncSession, account_id: str) -> None:
    """Forget now and once more after the commit (a read between the two may have cached the old list)."""
    forget_endpoints(account_id)
    event.listen(session.sync_session, "after_commit", lambda _s: forget_endpoints(account_id), once=True)


async def _endpoints_by_account(session: AsyncSession, accounts: set[str]) -> dict[str, list[Any]]:
    if not accounts:
        return {}
    now = time.monotonic()
    by_account: dict[str, list[Any]] = {}
    missing: list[str] = []
    for account_id in accounts:
        cached = _endpoint_cache.get(account_id)
        if cached is not None and now - cached[0] < ENDPOINTS_CACHE_S:
            if cached[1]:
                by_account[account_id] = cached[1]
        else:
            missing.append(account_id)
    if not missing:
        return by_account
    endpoints = (
        await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.account_id, WebhookEndpoint.event_types).where(
                WebhookEndpoint.account_id.in_(missing), WebhookEndpoint.enabled.is_(True)
            ).order_by(WebhookEndpoint.id)
        )
    ).all()
    found: dict[str, list[Any]] = {account_id: [] for account_id in missing}
    for ep in endpoints:
        found[ep.account_id].append(ep)
    if len(_endpoint_cache) > 10_000:
        _endpoint_cache.clear()
    for account_id, eps in found.items():
        _endpoint_cache[account_id] = (now, eps)
        if eps:
            by_account[account_id] = eps
    return by_account


async def enqueue_inbound_events(session: AsyncSession, rows: Iterable[dict[str, Any]], occurred_at: datetime) -> int:
    """One `message.received` event per (inbound message of a known account, subscribed endpoint)."""
    rows = [r for r in rows if r.get("account_id")]
    by_account = await _endpoints_by_account(session, {r["account_id"] for r in rows})
    events = []
    for row in rows:
        for ep in by_account.get(row["account_id"], ()):
            if ep.event_types and INBOUND_EVENT_TYPE not in ep.event_types:
                continue
            event_id = ids.new_id("evt")
            payload = orjson.dumps({
                "id": event_id, "type": INBOUND_EVENT_TYPE, "created_at": isoformat(occurred_at),
                "data": {"inbound_id": row["id"], "from": row["from_number"], "to": row["to_number"],
                         "body": row["body"], "in_reply_to": row["in_reply_to"],
                         "received_at": isoformat(row["received_at"])},
            })
            events.append({
                "id": event_id, "account_id": row["account_id"], "endpoint_id": ep.id, "event_type": INBOUND_EVENT_TYPE,
                "message_id": row["in_reply_to"], "payload": payload.decode(), "status": "pending", "attempts": 0,
                "next_attempt_at": occurred_at, "created_at": occurred_at,
            })
    if events:
        await _insert_events(session, events)
    return len(events)


async def enqueue_account_event(
    session: AsyncSession, *, account_id: str, event_type: str, data: dict[str, Any], occurred_at: datetime
) -> int:
    """One event per subscribed endpoint for something about the account itself (balance, packages)."""
    assert event_type in ACCOUNT_EVENT_TYPES or event_type in VERIFY_EVENT_TYPES, event_type
    by_account = await _endpoints_by_account(session, {account_id})
    events = []
    for ep in by_account.get(account_id, ()):
        if ep.event_types and event_type not in ep.event_types:
            continue
        event_id = ids.new_id("evt")
        payload = orjson.dumps({"id": event_id, "type": event_type, "created_at": isoformat(occurred_at), "data": data})
        events.append({
            "id": event_id, "account_id": account_id, "endpoint_id": ep.id, "event_type": event_type,
            "message_id": None, "payload": payload.decode(), "status": "pending", "attempts": 0,
            "next_attempt_at": occurred_at, "created_at": occurred_at,
        })
    if events:
        await _insert_events(session, events)
    return len(events)
