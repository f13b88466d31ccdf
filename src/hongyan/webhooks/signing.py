"""Webhook signatures: HMAC-SHA256 over `<timestamp>.<body>` (Stripe-style; docs/webhooks.md).

Header `Hongyan-Signature: t=<unix seconds>,v1=<hex digest>`; receivers recompute the digest with the
endpoint secret, compare in constant time and reject timestamps older than their tolerance (5 min).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Hongyan-Signature"
EVENT_ID_HEADER = "Hongyan-Event-Id"
EVENT_TYPE_HEADER = "Hongyan-Event-Type"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: int = 300, now: int | None = None) -> bool:
    """True if `header` is a valid signature of `body` made within `tolerance_s` seconds."""
    try:
        fields = dict(item.split("=", 1) for item in header.split(","))
        ts = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)
