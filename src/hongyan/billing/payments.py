"""Payment providers: where a customer pays a recharge order, and how the provider tells us it was paid.

A provider is one small class registered by name (`HONGYAN_PAYMENT_PROVIDER`): `checkout_url(order)`
sends the customer to pay; `verify_callback(headers, body)` checks the provider's signed notification and
returns what was paid. `handle_callback` then credits the order exactly once (billing.recharge.credit_order)
— the same code for every provider, for a repeated notification and for twenty arriving at once.

The built-in `sandbox` provider moves no real money: its pay page (payment_routes) plays the provider and
posts a notification signed like a real one, HMAC-SHA256 over `"<unix time>.<body>"` with a key derived
from HONGYAN_SECRET_KEY, header `X-Sandbox-Signature: t=<unix>,v1=<hex>`, refused after 5 minutes.
Alipay, WeChat Pay or Stripe adapters are one module each with the same two methods.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import orjson
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError

from hongyan.billing.models import PaymentOrder
from hongyan.billing.recharge import credit_order
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, InvalidRequest, NotFound
from hongyan.db.engine import Database

SIGNATURE_HEADER = "x-sandbox-signature"
TOLERANCE_S = 300


@dataclass(frozen=True, slots=True)
class PaidNotice:
    order_id: str
    provider_ref: str
    amount_micros: int
    currency: str


class PaymentProvider(Protocol):
    name: str

    def checkout_url(self, order: PaymentOrder) -> str: ...

    def verify_callback(self, headers: dict[str, str], body: bytes) -> PaidNotice: ...


_BAD_SIGNATURE = InvalidRequest("invalid_payment_signature", "The payment notification's signature is not valid.",
                                field=SIGNATURE_HEADER)


class SandboxProvider:
    """Built-in provider for the embedded default and tests: signed notifications, no real money."""

    name = "sandbox"

    def __init__(self, settings: Settings) -> None:
        self._key = hmac.new(settings.secret_key.encode(), b"payments-sandbox", hashlib.sha256).digest()
        self._base = settings.effective_public_url.rstrip("/")

    def checkout_url(self, order: PaymentOrder) -> str:
        return f"{self._base}/pay/sandbox/{order.id}"

    def sign(self, body: bytes, at: int | None = None) -> str:
        t = int(time.time()) if at is None else at
        mac = hmac.new(self._key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"

    def notification(self, order: PaymentOrder, *, at: int | None = None) -> tuple[dict[str, str], bytes]:
        """What the sandbox 'provider' posts when the customer pays: headers and body."""
        body = orjson.dumps({"order_id": order.id, "transaction_id": f"sbx_{order.id[-12:]}",
                             "amount_micros": order.amount_micros, "currency": order.currency, "status": "paid"})
        return {SIGNATURE_HEADER: self.sign(body, at)}, body

    def verify_callback(self, headers: dict[str, str], body: bytes) -> PaidNotice:
        header = {k.lower(): v for k, v in headers.items()}.get(SIGNATURE_HEADER, "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        try:
            t = int(parts.get("t", ""))
        except ValueError:
            raise _BAD_SIGNATURE from None
        expected = hmac.new(self._key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts.get("v1", "")):
            raise _BAD_SIGNATURE
        if abs(time.time() - t) > TOLERANCE_S:
            raise InvalidRequest("payment_signature_expired", "The payment notification is too old (over 5 minutes).",
                                 field=SIGNATURE_HEADER)
        try:
            data = orjson.loads(body)
            notice = PaidNotice(str(data["order_id"]), str(data["transaction_id"]), int(data["amount_micros"]),
                                str(data["currency"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise InvalidRequest("invalid_payment_notification", "The payment notification is malformed.",
                                 field="body") from None
        if data.get("status") != "paid":
            raise InvalidRequest("invalid_payment_notification", "The notification does not say the order was paid.",
                                 field="status")
        return notice


PROVIDERS = {"sandbox": SandboxProvider}


def provider_for(settings: Settings, name: str | None = None) -> PaymentProvider:
    name = name or settings.payment_provider
    cls = PROVIDERS.get(name)
    if cls is None:
        raise NotFound("payment_provider_not_found", f"No payment provider '{name}'.", field="provider")
    return cls(settings)


async def handle_callback(
    db: Database, provider: PaymentProvider, headers: dict[str, str], body: bytes, *, ip: str | None = None
) -> tuple[PaymentOrder, bool]:
    """Verify a notification and credit its order once; (order, True) only for the call that credited."""
    notice = provider.verify_callback(headers, body)
    try:
        async with db.write() as session:
            return await credit_order(
                session, order_id=notice.order_id, provider=provider.name, provider_ref=notice.provider_ref,
                amount_micros=notice.amount_micros, currency=notice.currency, actor=f"provider:{provider.name}",
                actor_ip=ip,
            )
    except (IntegrityError, DBAPIError) as exc:
        # a concurrent delivery of the same notification won the order (journal idempotency key, or a
        # serialization failure); whatever happened, the order says whether it is paid
        async with db.read() as session:
            order = await session.get(PaymentOrder, notice.order_id)
        if order is not None and order.status == "paid":
            return order, False
        raise Conflict("payment_retry", "The notification collided with another; send it again.",
                       field="order_id") from exc


async def cancel_order(db: Database, *, order_id: str, account_id: str | None = None) -> PaymentOrder:
    """A pending order the customer gave up (a payment confirmed later is still credited: money received)."""
    async with db.write() as session:
        order = await session.get(PaymentOrder, order_id)
        if order is None or (account_id is not None and order.account_id != account_id):
            raise NotFound("payment_order_not_found", "No such payment order.", field="order_id")
        await session.execute(
            update(PaymentOrder).where(PaymentOrder.id == order_id, PaymentOrder.status == "pending")
            .values(status="canceled").execution_options(synchronize_session=False)
        )
        await session.refresh(order)
        return order


async def expire_stale_orders(db: Database, settings: Settings, *, now: datetime | None = None) -> int:
    """Pending orders older than HONGYAN_PAYMENT_ORDER_TTL_HOURS become `expired` (so lists stop showing them
    as awaiting payment); a late confirmed payment is still credited (recharge.PAYABLE)."""
    cutoff = (now or utcnow()) - timedelta(hours=settings.payment_order_ttl_hours)
    async with db.write() as session:
        result = await session.execute(
            update(PaymentOrder).where(PaymentOrder.status == "pending", PaymentOrder.created_at < cutoff)
            .values(status="expired").execution_options(synchronize_session=False)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
