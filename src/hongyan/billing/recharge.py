"""Money in and out by people: operator top-ups and adjustments, payment orders credited exactly once.

Every recharge is a `payment_order` (provider `operator` for top-ups), so each has an invoice and one
audit trail. An order is credited by the conditional UPDATE pending → paid; only the transaction that
wins it posts the journal entry (whose idempotency key `order:<id>` is a second guard), so a callback
delivered twice, or twenty times at once, credits once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import BILLING_MANAGE, Authority, require
from hongyan.audit.service import Actor, record
from hongyan.billing import ledger
from hongyan.billing.models import PaymentOrder
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hongyan.core.money import MICROS, format_micros

PAYABLE = ("pending", "canceled", "expired")  # statuses a confirmed payment may still turn into `paid`
MAX_RECHARGE_MICROS = 10**16  # 10 billion units: far above any real order, far below int64 overflow


@dataclass(frozen=True, slots=True)
class BonusRule:
    min_micros: int
    percent: int


def parse_bonus_rules(text: str) -> list[BonusRule]:
    """`"1000=5,5000=8"`: recharges of at least 1000 (currency units) get 5 % extra, from 5000 8 %."""
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        amount, _, percent = part.partition("=")
        rules.append(BonusRule(int(amount.strip()) * MICROS, int(percent.strip().rstrip("%"))))
    return sorted(rules, key=lambda r: r.min_micros)


def bonus_for(amount_micros: int, rules: list[BonusRule]) -> int:
    percent = 0
    for rule in rules:
        if amount_micros >= rule.min_micros:
            percent = rule.percent
    return amount_micros * percent // 100


def payments_enabled(settings: Settings) -> bool:
    """`HONGYAN_PAYMENT_PROVIDER=none`: customers cannot recharge online (operator top-ups only)."""
    return settings.payment_provider != "none"


def raise_payments_disabled() -> None:
    raise Forbidden("payments_disabled", "Recharging online is turned off on this platform; ask the platform "
                    "operator to top up your account.", field="amount")


def check_amount(amount_micros: int, *, minimum: int, currency: str, field_name: str = "amount") -> None:
    if amount_micros <= 0:
        raise InvalidRequest("invalid_amount", "The amount must be greater than zero.", field=field_name)
    if amount_micros > MAX_RECHARGE_MICROS:
        raise InvalidRequest("invalid_amount", "The amount is too large.", field=field_name)
    if amount_micros < minimum:
        raise InvalidRequest(
            "recharge_below_minimum",
            f"The minimum recharge is {format_micros(minimum, currency)} {currency}.",
            field=field_name,
            details={"minimum": format_micros(minimum, currency), "minimum_micros": minimum},
        )


async def refuse_sub_account(session: AsyncSession, account_id: str) -> None:
    """A sub-account spends its parent's balance (billing.spend_limits): money or packages put on the
    sub-account itself would never be used, so recharges, top-ups and purchases go to the parent."""
    parent_id = await session.scalar(select(Account.parent_id).where(Account.id == account_id))
    if parent_id is not None:
        raise Conflict("sub_account_uses_parent_balance", f"This sub-account spends the balance of its parent "
                       f"{parent_id}: recharge or buy packages there.", field="account_id")


async def create_order(
    session: AsyncSession, settings: Settings, *, account_id: str, amount_micros: int, currency: str, provider: str,
    created_by: str, audit_actor: Actor | None = None, authority: Authority | None = None,
) -> PaymentOrder:
    """A pending order for a customer recharge (the provider's pay page will settle it)."""
    if authority is not None:
        require(authority, BILLING_MANAGE)
    if not payments_enabled(settings):
        raise_payments_disabled()
    check_amount(amount_micros, minimum=settings.min_recharge_micros, currency=currency)
    await refuse_sub_account(session, account_id)
    order = PaymentOrder(
        id=ids.new_id("pay"), account_id=account_id, provider=provider, amount_micros=amount_micros,
        bonus_micros=bonus_for(amount_micros, parse_bonus_rules(settings.recharge_bonus_rules)), currency=currency,
        status="pending", provider_ref=None, journal_entry_id=None, invoice_number=None, created_by=created_by,
        created_at=utcnow(), paid_at=None,
    )
    session.add(order)
    await session.flush()
    if audit_actor is not None:
        await record(session, actor=audit_actor, action="billing.recharge_order_created", account_id=account_id,
                     target_type="payment_order", target_id=order.id,
                     after={"amount": format_micros(amount_micros, currency), "bonus": format_micros(order.bonus_micros, currency),
                            "currency": currency, "provider": provider, "status": "pending"})
    return order


async def credit_order(
    session: AsyncSession, *, order_id: str, provider: str, provider_ref: str | None, amount_micros: int,
    currency: str, actor: str, actor_ip: str | None = None,
) -> tuple[PaymentOrder, bool]:
    """Mark an order paid and credit it; (order, True) for the one call that credited, False for repeats.

    A provider's confirmed payment is money received, so it is credited even when the order had been
    canceled or had expired here (the customer paid in another tab, or late); only a `failed` order, or a
    notification whose amount or currency differs from the order, is refused."""
    order = await session.get(PaymentOrder, order_id)
    if order is None or order.provider != provider:
        raise NotFound("payment_order_not_found", "No such payment order.", field="order_id")
    if order.amount_micros != amount_micros or order.currency != currency:
        raise Conflict("payment_amount_mismatch", "The paid amount does not match the order.", field="amount")
    now = utcnow()
    won = await session.execute(
        update(PaymentOrder).where(PaymentOrder.id == order_id, PaymentOrder.status.in_(PAYABLE))
        .values(status="paid", paid_at=now, provider_ref=provider_ref)
        .execution_options(synchronize_session=False)
    )
    if won.rowcount == 0:  # type: ignore[attr-defined]
        await session.refresh(order)
        if order.status != "paid":
            raise Conflict("payment_order_closed", f"The order is {order.status}; it cannot be paid.", field="order_id")
        return order, False
    entry = await _post_recharge(session, order, actor=actor, actor_ip=actor_ip, note=None, at=now)
    await session.execute(
        update(PaymentOrder).where(PaymentOrder.id == order_id)
        .values(journal_entry_id=entry, invoice_number=invoice_number(order_id, now))
        .execution_options(synchronize_session=False)
    )
    await session.refresh(order)
    return order, True


async def top_up(
    session: AsyncSession, *, account_id: str, amount_micros: int, currency: str, actor: str, note: str | None,
    actor_ip: str | None = None, bonus_micros: int = 0, audit_actor: Actor | None = None,
) -> PaymentOrder:
    """An operator credits an account (bank transfer received, contract…): a paid order plus its entry."""
    check_amount(amount_micros, minimum=1, currency=currency)
    if not note or not note.strip():
        raise InvalidRequest("note_required", "Say why (the note is kept in the journal).", field="note")
    await refuse_sub_account(session, account_id)
    now = utcnow()
    order = PaymentOrder(
        id=ids.new_id("pay"), account_id=account_id, provider="operator", amount_micros=amount_micros,
        bonus_micros=bonus_micros, currency=currency, status="paid", provider_ref=None, journal_entry_id=None,
        invoice_number=None, created_by=actor, created_at=now, paid_at=now,
    )
    order.invoice_number = invoice_number(order.id, now)
    session.add(order)
    await session.flush()
    order.journal_entry_id = await _post_recharge(session, order, actor=actor, actor_ip=actor_ip, note=note.strip(), at=now)
    await session.flush()
    if audit_actor is not None:
        await record(session, actor=audit_actor, action="billing.top_up", account_id=account_id,
                     target_type="payment_order", target_id=order.id,
                     after={"amount": format_micros(amount_micros, currency), "bonus": format_micros(bonus_micros, currency),
                            "currency": currency, "note": note.strip(), "invoice_number": order.invoice_number,
                            "journal_entry_id": order.journal_entry_id})
    return order


async def _post_recharge(
    session: AsyncSession, order: PaymentOrder, *, actor: str, actor_ip: str | None, note: str | None, at: datetime
) -> str:
    account_id, currency = order.account_id, order.currency
    posted = await ledger.post(
        session, account_id=account_id, kind="recharge", reference=order.id, note=note, actor=actor, actor_ip=actor_ip,
        idempotency_key=f"order:{order.id}", at=at,
        postings={ledger.ledger_id(account_id, "funding", currency): -order.amount_micros,
                  ledger.cash(account_id, currency): order.amount_micros},
        detail={"provider": order.provider},
    )
    if order.bonus_micros:
        await ledger.post(
            session, account_id=account_id, kind="bonus", reference=order.id, actor="system", at=at,
            idempotency_key=f"order-bonus:{order.id}", note="recharge bonus",
            postings={ledger.ledger_id(account_id, "bonus", currency): -order.bonus_micros,
                      ledger.cash(account_id, currency): order.bonus_micros},
        )
    if order.provider != "operator":
        from hongyan.webhooks import service as webhooks

        await webhooks.enqueue_account_event(
            session, account_id=account_id, event_type="recharge.succeeded", occurred_at=at,
            data={"order_id": order.id, "amount": format_micros(order.amount_micros, currency),
                  "bonus": format_micros(order.bonus_micros, currency), "currency": currency},
        )
    return posted.entry_id


def invoice_number(order_id: str, at: datetime) -> str:
    """`INV-20261125-7G4K2M9QXA`: date paid + the order id's random tail; unique without a counter to race on."""
    return f"INV-{at:%Y%m%d}-{order_id[-10:]}"


async def adjust(
    session: AsyncSession, *, account_id: str, amount_micros: int, currency: str, actor: str, note: str,
    actor_ip: str | None = None, audit_actor: Actor | None = None,
) -> str:
    """An operator correction (goodwill credit, manual charge); negative amounts cannot overdraw."""
    if amount_micros == 0 or abs(amount_micros) > MAX_RECHARGE_MICROS:
        raise InvalidRequest("invalid_amount", "The adjustment must be a non-zero amount.", field="amount")
    if not note or not note.strip():
        raise InvalidRequest("note_required", "Say why (the note is kept in the journal).", field="note")
    try:
        posted = await ledger.post(
            session, account_id=account_id, kind="adjustment", note=note.strip(), actor=actor, actor_ip=actor_ip,
            postings={ledger.ledger_id(account_id, "adjustment", currency): -amount_micros,
                      ledger.cash(account_id, currency): amount_micros},
        )
    except ledger.InsufficientFunds as exc:
        raise InvalidRequest(
            "insufficient_balance",
            f"The balance is {format_micros(exc.available, currency)} {currency}; it cannot go below zero.",
            field="amount", status_code=402,
        ) from exc
    if audit_actor is not None:
        await record(session, actor=audit_actor, action="billing.adjusted", account_id=account_id,
                     target_type="journal_entry", target_id=posted.entry_id,
                     after={"amount": format_micros(amount_micros, currency), "currency": currency, "note": note.strip()})
    return posted.entry_id


async def set_credit_limit(
    session: AsyncSession, *, account_id: str, currency: str, limit_micros: int, audit_actor: Actor | None = None
) -> None:
    if limit_micros < 0 or limit_micros > MAX_RECHARGE_MICROS:
        raise InvalidRequest("invalid_amount", "The credit limit is zero or a positive amount.", field="credit_limit")
    cash = ledger.cash(account_id, currency)
    current = await ledger.lock_for_update(session, cash)
    floor_before = current[1] if current is not None else 0
    if not await ledger.set_floor(session, cash, -limit_micros):
        raise InvalidRequest("credit_limit_below_balance",
                             "The balance is already below minus this limit; recharge first or choose a higher limit.",
                             field="credit_limit")
    if audit_actor is not None and -floor_before != limit_micros:
        await record(session, actor=audit_actor, action="billing.credit_limit_set", account_id=account_id,
                     target_type="account", target_id=account_id,
                     before={"credit_limit": format_micros(-floor_before, currency)},
                     after={"credit_limit": format_micros(limit_micros, currency)})


async def grant_bonus(
    session: AsyncSession, *, account_id: str, amount_micros: int, currency: str, note: str, actor: str = "system"
) -> str:
    """Promotional credit (trial credit on first start, goodwill): platform bonus → cash."""
    posted = await ledger.post(
        session, account_id=account_id, kind="bonus", note=note, actor=actor,
        postings={ledger.ledger_id(account_id, "bonus", currency): -amount_micros,
                  ledger.cash(account_id, currency): amount_micros},
    )
    return posted.entry_id
