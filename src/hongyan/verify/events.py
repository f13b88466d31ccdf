"""How a verification is shown (API, console) and announced (webhooks `verify.approved`, `verify.failed`).

Never the code, nor its hash. Webhook payloads carry the full number, like the message events do: they go
to the account's own signed endpoint, which needs it to match the verification to its user; the console
masks numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.core.clock import isoformat
from hongyan.verify.models import Verification
from hongyan.webhooks.service import enqueue_account_event

APPROVED, FAILED = "verify.approved", "verify.failed"
# why a verification ended as it did (status → reason shown next to it)
REASONS = {
    "approved": "code_correct",
    "failed": "max_attempts_reached",
    "expired": "code_expired",
    "canceled": "canceled",
}


def effective_status(v: Verification, now: datetime) -> str:
    """The stored status, except that a pending verification past its expiry reads as expired (it is written
    as such the next time someone checks, resends or cancels it)."""
    return "expired" if v.status == "pending" and v.expires_at <= now else v.status


def verification_json(v: Verification, now: datetime, *, sandbox_code: str | None = None) -> dict[str, Any]:
    status = effective_status(v, now)
    out: dict[str, Any] = {
        "id": v.id,
        "status": status,
        "reason": REASONS.get(status),
        "to": v.to_number,
        "country": v.to_country,
        "channel": v.channel,
        "locale": v.locale,
        "template_id": v.template_id,
        "code_length": v.code_length,
        "ttl": v.ttl_s,
        "attempts": v.attempts,
        "max_attempts": v.max_attempts,
        "attempts_left": max(0, v.max_attempts - v.attempts) if status == "pending" else 0,
        "sends": v.sends,
        "message_id": v.message_id,
        "sandbox": v.sandbox,
        "created_at": isoformat(v.created_at),
        "last_sent_at": isoformat(v.last_sent_at),
        "expires_at": isoformat(v.expires_at),
        "approved_at": isoformat(v.approved_at),
        "updated_at": isoformat(v.updated_at),
    }
    if sandbox_code is not None:
        out["sandbox_code"] = sandbox_code  # test API keys only (docs/verify.md: sandbox codes)
    return out


def event_data(v: Verification) -> dict[str, Any]:
    return {
        "verification_id": v.id,
        "status": v.status,
        "reason": REASONS.get(v.status),
        "to": v.to_number,
        "channel": v.channel,
        "attempts": v.attempts,
        "max_attempts": v.max_attempts,
        "sends": v.sends,
        "created_at": isoformat(v.created_at),
        "approved_at": isoformat(v.approved_at),
        "expires_at": isoformat(v.expires_at),
        "updated_at": isoformat(v.updated_at),
    }


async def announce(session: AsyncSession, v: Verification, event_type: str, *, occurred_at: datetime) -> int:
    """Webhook events for the change, written in the caller's transaction (sent after it commits)."""
    return await enqueue_account_event(
        session, account_id=v.account_id, event_type=event_type, data=event_data(v), occurred_at=occurred_at
    )
