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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import orjson
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError

from hongyan.billing import recharge
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


def _bad_signature() -> InvalidRequest:  # a fresh instance per raise: a shared one would pile up tracebacks
    return InvalidRequest("invalid_payment_signature", "The payment notification's signature is not valid.",
                          field=SIGNATURE_HEADER)


class SandboxProvider:
    """Built-in provider for the embedded default and tests: signed notifications, no real money."""

    name = "sandbox"

    def __init__(self, settings: Settings) -> None:
        # the effective key: with HONGYAN_SECRET_KEY unset, `secret_key` is "" and anyone could sign
        secret = settings.effective_secret_key().encode()
        self._key = hmac.new(secret, b"payments-sandbox", hashlib.sha256).digest()
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
        parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
        try:
            t = int(parts.get("t", ""))
        except ValueError:
            raise _bad_signature() from None
        expected = hmac.new(self._key, f"{t}.".encode() + body, hashlib.sha256).hexdigest().encode()
        # bytes, not str: compare_digest raises TypeError on non-ASCII text (headers arrive as latin-1)
        if not hmac.compare_digest(expected, parts.get("v1", "").encode("utf-8", "replace")):
            raise _bad_signature()
        if abs(time.time() - t) > TOLERANCE_S:
            raise InvalidRequest("payment_signature_expired", "The payment notification is too old (over 5 minutes).",
                                 field=SIGNATURE_HEADER)
        try:
            data = orjson.loads(body)
            notice = PaidNotice(data["order_id"], data["transaction_id"], data["amount_micros"], data["currency"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise InvalidRequest("invalid_payment_notification", "The payment notification is malformed.",
                                 field="body") from None
        if not _well_formed(notice):
            raise InvalidRequest("invalid_payment_notification", "The payment notification is malformed.",
                                 field="body")
        if data.get("status") != "paid":
            raise InvalidRequest("invalid_payment_notification", "The notification does not say the order was paid.",
                                 field="status")
        return notice


def _well_formed(notice: PaidNotice) -> bool:
    """Exact types: an amount of 20000000.9 must not pass as 20000000, nor `true` as 1."""
    return (
        isinstance(notice.order_id, str) and 0 < len(notice.order_id) <= 30
        and isinstance(notice.provider_ref, str) and 0 < len(notice.provider_ref) <= 128
        and type(notice.amount_micros) is int and isinstance(notice.currency, str)
    )


PROVIDERS: dict[str, Callable[[Settings], PaymentProvider]] = {"sandbox": SandboxProvider}
# providers that move no real money: usable only while configured, so switching to a real provider
# leaves no way to turn the old sandbox orders into free credit
NO_REAL_MONEY = frozenset({"sandbox"})


def provider_for(settings: Settings, name: str | None = None) -> PaymentProvider:
    """The configured provider, or a named one (callbacks): a real provider's late notifications for orders
    made before a switch are still money received; a sandbox is accepted only while it is configured."""
    name = name or settings.payment_provider
    if name == "none" and not recharge.payments_enabled(settings):
        recharge.raise_payments_disabled()
    cls = PROVIDERS.get(name)
    if cls is None or (name in NO_REAL_MONEY and name != settings.payment_provider):
        raise NotFound("payment_provider_not_found", f"No payment provider '{name}'.", field="provider")
    return cls(settings)


def accepts_payments(settings: Settings, name: str) -> bool:
    """Whether orders of provider `name` can still be paid (and show a pay_url)."""
    return name in PROVIDERS and (name not in NO_REAL_MONEY or name == settings.payment_provider)


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
