"""SMS packages and monthly subscriptions: the product catalog, purchases, expiry and renewal.

A package is units (segments) bought for cash and valid until `expires_at`; its remainder is the ledger
account `<pkg>:package:SMS`, drawn by sends before cash (billing.charging). Expiry writes the remainder
off with an `expiry` entry after a `package.expiring` notice; a subscription charges its fee each month
and grants an allowance package that ends with the period, so allowances reset.

Every change is a conditional UPDATE in its own transaction (status='active', or the period being
renewed), so two sweepers — several workers, or a restart mid-sweep — never expire or renew twice.
"""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import BILLING_MANAGE, Authority, require
from hongyan.audit.service import Actor, changes, record
from hongyan.billing import ledger
from hongyan.billing.charging import insufficient_balance
from hongyan.billing.models import LedgerAccount, Package, Product, Subscription
from hongyan.billing.rates import RATE_MESSAGE_TYPES
from hongyan.billing.recharge import refuse_sub_account
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import HongyanError, InvalidRequest, NotFound
from hongyan.core.money import MICROS, format_micros
from hongyan.db.engine import Database

log = logging.getLogger(__name__)
PRODUCT_KINDS = ("package", "subscription")


def add_months(start: datetime, months: int, anchor_day: int) -> datetime:
    """Same time `months` later on `anchor_day`, clamped to the month's end (Jan 31 → Feb 28 → Mar 31)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


# -- catalog --------------------------------------------------------------------------------------------------


async def create_product(
    session: AsyncSession, *, kind: str, name: str, currency: str, price_micros: int, units: int,
    validity_days: int = 365, countries: list[str] | None = None, message_types: list[str] | None = None,
    audit_actor: Actor | None = None,
) -> Product:
    if kind not in PRODUCT_KINDS:
        raise InvalidRequest("invalid_product_kind", "kind is package or subscription.", field="kind")
    if not name.strip():
        raise InvalidRequest("name_required", "Give the product a name.", field="name")
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidRequest("invalid_currency", "currency is an ISO 4217 code such as CNY.", field="currency")
    if price_micros < 0:
        raise InvalidRequest("invalid_amount", "The price cannot be negative.", field="price")
    if units <= 0 or units > 10**10:
        raise InvalidRequest("invalid_units", "units is a positive number of segments.", field="units")
    if kind == "package" and not 1 <= validity_days <= 3660:
        raise InvalidRequest("invalid_validity", "validity_days is between 1 and 3660.", field="validity_days")
    countries = [c.upper() for c in countries or []]
    for i, c in enumerate(countries):
        if len(c) != 2 or not c.isalpha():
            raise InvalidRequest("invalid_country", f"'{c}' is not an ISO 3166 two-letter code.", field=f"countries[{i}]")
    for i, t in enumerate(message_types or []):
        if t not in RATE_MESSAGE_TYPES:
            raise InvalidRequest("invalid_message_type", f"message_types[{i}] is one of {', '.join(RATE_MESSAGE_TYPES)}.",
                                 field=f"message_types[{i}]")
    product = Product(
        id=ids.new_id("prd"), kind=kind, name=name.strip()[:200], currency=currency.upper(), price_micros=price_micros,
        units=units, validity_days=validity_days if kind == "package" else 0, countries=countries,
        message_types=list(message_types or []), active=True, created_at=utcnow(),
    )
    session.add(product)
    await session.flush()
    if audit_actor is not None:  # the catalog is the platform's: no account
        await record(session, actor=audit_actor, action="product.created", account_id=None, target_type="product",
                     target_id=product.id, after=product_view(product))
    return product


def product_view(p: Product) -> dict[str, Any]:
    return {"kind": p.kind, "name": p.name, "currency": p.currency, "price": format_micros(p.price_micros, p.currency),
            "units": p.units, "validity_days": p.validity_days, "countries": list(p.countries or []),
            "message_types": list(p.message_types or []), "active": p.active}


async def list_products(session: AsyncSession, *, currency: str | None = None, active_only: bool = True) -> list[Product]:
    query = select(Product).order_by(Product.kind, Product.units, Product.id)
    if currency:
        query = query.where(Product.currency == currency)
    if active_only:
        query = query.where(Product.active.is_(True))
    return list(await session.scalars(query))


async def set_product_active(
    session: AsyncSession, product_id: str, active: bool, *, audit_actor: Actor | None = None
) -> Product:
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFound("product_not_found", "No such product.", field="product_id")
    was = product.active
    product.active = active
    if audit_actor is not None and was != active:
        await record(session, actor=audit_actor, action="product.activated" if active else "product.deactivated",
                     account_id=None, target_type="product", target_id=product.id, before={"active": was},
                     after={"active": active})
    return product


def unit_price_micros(p: Product) -> int:
    """Price of one unit (segment) in micro-units, rounded down: what tiers are compared by."""
    return p.price_micros // p.units


def unit_price_text(p: Product) -> str:
    """The exact unit price for display: a decimal when it ends (¥400 / 10,000 → "0.04"), otherwise rounded
    to 6 places with the exact fraction of the currency unit (¥0.10 / 3 → "≈0.033333 (1/30)")."""
    exact = Fraction(p.price_micros, p.units * MICROS)
    denominator = exact.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:  # a terminating decimal: show every digit (at most ~60 of them for 10^16 / 2^53)
        with localcontext(prec=100):
            return format(Decimal(exact.numerator) / Decimal(exact.denominator), "f")
    return f"≈{format_micros(round(exact * MICROS), p.currency)} ({exact.numerator}/{exact.denominator})"


def product_json(p: Product) -> dict[str, Any]:
    return {
        "id": p.id, "kind": p.kind, "name": p.name, "currency": p.currency,
        "price": format_micros(p.price_micros, p.currency), "price_micros": p.price_micros, "units": p.units,
        "unit_price": unit_price_text(p), "unit_price_micros": unit_price_micros(p),
        "unit_price_exact": p.price_micros % p.units == 0,
        "validity_days": p.validity_days or None, "period": "month" if p.kind == "subscription" else None,
        "countries": p.countries, "message_types": p.message_types, "active": p.active,
        "created_at": isoformat(p.created_at),
    }


# -- purchases ------------------------------------------------------------------------------------------------


async def _sellable(session: AsyncSession, product_id: str, kind: str, account_id: str, currency: str | None) -> Product:
    if currency is None:  # the account's own currency (callers with an AccountContext pass it)
        from hongyan.accounts.service import get_account

        currency = (await get_account(session, account_id)).currency
    await refuse_sub_account(session, account_id)
    product = await session.get(Product, product_id)
    if product is None or not product.active or product.kind != kind:
        raise NotFound("product_not_found", f"No such {kind} on sale.", field="product_id")
    if product.currency != currency:
        raise InvalidRequest("currency_mismatch", f"The product is sold in {product.currency}; the account pays in "
                             f"{currency}.", field="product_id")
    return product


async def _charge_and_grant(
    session: AsyncSession, *, account_id: str, currency: str, product: Product, entry_kind: str, starts_at: datetime,
    expires_at: datetime, subscription_id: str | None, actor: str, idempotency_key: str | None = None,
) -> Package:
    """Cash pays the price; the units go to a new package (one entry, balanced in money and in units)."""
    package = Package(
        id=ids.new_id("pkg"), account_id=account_id, product_id=product.id, subscription_id=subscription_id,
        name=product.name, units_total=product.units, price_micros=product.price_micros, currency=currency,
        countries=list(product.countries or []), message_types=list(product.message_types or []), status="active",
        units_expired=0, starts_at=starts_at, expires_at=expires_at, expiry_notified_at=None, created_at=utcnow(),
    )
    session.add(package)
    await session.flush()
    try:
        await ledger.post(
            session, account_id=account_id, kind=entry_kind, reference=package.id, actor=actor,
            idempotency_key=idempotency_key, detail={"product_id": product.id, "units": product.units},
            postings={
                ledger.cash(account_id, currency): -product.price_micros,
                ledger.ledger_id(account_id, "sales", currency): product.price_micros,
                ledger.ledger_id(account_id, "issued", ledger.UNITS): -product.units,
                ledger.package_account(package.id): product.units,
            },
        )
    except ledger.InsufficientFunds as exc:
        raise insufficient_balance(currency=currency, needed=exc.needed, available=exc.available) from exc
    return package


async def purchase_package(
    session: AsyncSession, *, account_id: str, product_id: str, actor: str, currency: str | None = None,
    audit_actor: Actor | None = None, authority: Authority | None = None,
) -> Package:
    """Buy a package from the cash balance: one `package_purchase` entry; 402 (nothing created) when short."""
    if authority is not None:
        require(authority, BILLING_MANAGE)
    product = await _sellable(session, product_id, "package", account_id, currency)
    now = utcnow()
    package = await _charge_and_grant(
        session, account_id=account_id, currency=product.currency, product=product, entry_kind="package_purchase",
        starts_at=now, expires_at=now + timedelta(days=product.validity_days), subscription_id=None, actor=actor,
    )
    if audit_actor is not None:
        await record(session, actor=audit_actor, action="package.purchased", account_id=account_id,
                     target_type="package", target_id=package.id,
                     after={"product_id": product.id, "name": product.name, "units": product.units,
                            "price": format_micros(product.price_micros, product.currency),
                            "currency": product.currency, "expires_at": package.expires_at})
    return package


async def subscribe(
    session: AsyncSession, *, account_id: str, product_id: str, actor: str, currency: str | None = None,
    audit_actor: Actor | None = None, authority: Authority | None = None,
) -> Subscription:
    """Start a monthly plan: the first month is charged now and its allowance granted until the period end."""
    if authority is not None:
        require(authority, BILLING_MANAGE)
    product = await _sellable(session, product_id, "subscription", account_id, currency)
    now = utcnow()
    end = add_months(now, 1, now.day)
    subscription = Subscription(
        id=ids.new_id("sub"), account_id=account_id, product_id=product.id, status="active", period_start=now,
        period_end=end, anchor_day=now.day, cancel_at_period_end=False, created_at=now, canceled_at=None,
    )
    session.add(subscription)
    await session.flush()
    await _charge_and_grant(
        session, account_id=account_id, currency=product.currency, product=product, entry_kind="subscription_fee",
        starts_at=now, expires_at=end, subscription_id=subscription.id, actor=actor,
        idempotency_key=f"sub:{subscription.id}:{isoformat(now)}",
    )
    if audit_actor is not None:
        await record(session, actor=audit_actor, action="subscription.created", account_id=account_id,
                     target_type="subscription", target_id=subscription.id,
                     after={"product_id": product.id, "name": product.name, "units": product.units,
                            "price": format_micros(product.price_micros, product.currency), "currency": product.currency,
                            "period_end": end})
    return subscription


async def cancel_subscription(
    session: AsyncSession, *, account_id: str, subscription_id: str, at_period_end: bool = True,
    audit_actor: Actor | None = None, authority: Authority | None = None,
) -> Subscription:
    """Stop renewing. `at_period_end` (default): the sweep cancels it at the period end; either way the paid
    period's allowance stays usable until it expires (no refund). A past_due plan is canceled at once."""
    if authority is not None:
        require(authority, BILLING_MANAGE)
    subscription = await get_subscription(session, account_id=account_id, subscription_id=subscription_id)
    before = {"status": subscription.status, "cancel_at_period_end": subscription.cancel_at_period_end}
    if subscription.status == "active" and at_period_end:
        subscription.cancel_at_period_end = True
    elif subscription.status in ("active", "past_due"):
        subscription.status, subscription.canceled_at = "canceled", utcnow()
    await session.flush()
    old, new = changes(before, {"status": subscription.status, "cancel_at_period_end": subscription.cancel_at_period_end})
    if audit_actor is not None and new:
        await record(session, actor=audit_actor, action="subscription.canceled", account_id=account_id,
                     target_type="subscription", target_id=subscription.id, before=old, after=new)
    return subscription


async def get_subscription(session: AsyncSession, *, account_id: str, subscription_id: str) -> Subscription:
    """The account's own subscription; another account's is "not found" (never a hint that it exists)."""
    subscription = await session.get(Subscription, subscription_id)
    if subscription is None or subscription.account_id != account_id:
        raise NotFound("subscription_not_found", "No such subscription.", field="subscription_id")
    return subscription


async def account_packages(session: AsyncSession, account_id: str) -> list[dict[str, Any]]:
    la = LedgerAccount.__table__
    rows = (await session.execute(
        select(Package, la.c.balance)
        .outerjoin(la, la.c.id == Package.id.concat(":package:" + ledger.UNITS))
        .where(Package.account_id == account_id)
        .order_by(Package.status, Package.expires_at, Package.id)
    )).all()
    out = []
    for package, balance in rows:
        remaining = int(balance or 0) if package.status == "active" else 0
        out.append({
            "id": package.id, "name": package.name, "product_id": package.product_id,
            "subscription_id": package.subscription_id, "status": package.status, "units_total": package.units_total,
            "units_remaining": remaining, "units_expired": package.units_expired,
            "units_used": package.units_total - int(balance or 0) - package.units_expired,
            "price": format_micros(package.price_micros, package.currency), "price_micros": package.price_micros,
            "currency": package.currency, "countries": package.countries, "message_types": package.message_types,
            "starts_at": isoformat(package.starts_at), "expires_at": isoformat(package.expires_at),
            "created_at": isoformat(package.created_at),
        })
    return out


async def list_subscriptions(session: AsyncSession, account_id: str) -> list[tuple[Subscription, Product | None]]:
    """The account's subscriptions, newest first, each with its plan (for the fee and allowance)."""
    rows = await session.execute(
        select(Subscription, Product).outerjoin(Product, Product.id == Subscription.product_id)
        .where(Subscription.account_id == account_id).order_by(Subscription.created_at.desc(), Subscription.id)
    )
    return [(s, p) for s, p in rows.all()]


def subscription_json(s: Subscription, plan: Product | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s.id, "product_id": s.product_id, "status": s.status, "period_start": isoformat(s.period_start),
        "period_end": isoformat(s.period_end), "anchor_day": s.anchor_day,
        "cancel_at_period_end": s.cancel_at_period_end, "created_at": isoformat(s.created_at),
        "canceled_at": isoformat(s.canceled_at),
    }
    if plan is not None:
        out.update({"name": plan.name, "fee": format_micros(plan.price_micros, plan.currency),
                    "fee_micros": plan.price_micros, "currency": plan.currency, "units_per_period": plan.units})
    return out


# -- sweep ----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SweepReport:
    expired: int = 0
    notified: int = 0
    renewed: int = 0
    past_due: int = 0
    canceled: int = 0
    errors: list[str] = field(default_factory=list)


async def sweep_once(db: Database, settings: Settings, now: datetime | None = None) -> SweepReport:
    """Expire due packages (and units released back to already expired ones), send expiry notices, renew
    subscriptions. Each item in its own transaction."""
    now = now or utcnow()
    report = SweepReport()
    la = LedgerAccount.__table__
    async with db.read() as session:
        due = list(await session.scalars(
            select(Package.id).outerjoin(la, la.c.id == Package.id.concat(":package:" + ledger.UNITS)).where(
                ((Package.status == "active") & (Package.expires_at <= now))
                | ((Package.status == "expired") & (la.c.balance > 0))
            ).limit(1000)
        ))
        notice_before = now + timedelta(days=settings.package_expiry_notice_days)
        to_notify = list(await session.scalars(
            select(Package.id).where(Package.status == "active", Package.expiry_notified_at.is_(None),
                                     Package.expires_at > now, Package.expires_at <= notice_before).limit(1000)
        ))
        renewals = list(await session.scalars(
            select(Subscription.id).where(Subscription.status == "active", Subscription.period_end <= now).limit(1000)
        ))
    for package_id in due:
        await _guarded(report, f"expire {package_id}", _expire(db, package_id, now, report))
    for package_id in to_notify:
        await _guarded(report, f"notice {package_id}", _notify_expiring(db, package_id, now, report))
    for subscription_id in renewals:
        await _guarded(report, f"renew {subscription_id}", _renew(db, subscription_id, now, report))
    return report


async def _guarded(report: SweepReport, what: str, work: Any) -> None:
    try:
        await work
    except IntegrityError as exc:
        # the journal's unique idempotency key (uq_journal_entry_idempotency_key / journal_entry.idempotency_key):
        # a concurrent sweeper already posted this period's fee; anything else is a real failure
        if "idempotency_key" not in str(exc.orig):
            log.exception("billing sweep: %s failed", what)
            report.errors.append(f"{what}: {exc.orig}")
    except Exception as exc:  # one bad item must not stop the others
        log.exception("billing sweep: %s failed", what)
        report.errors.append(f"{what}: {exc}")


async def _expire(db: Database, package_id: str, now: datetime, report: SweepReport) -> None:
    from hongyan.webhooks import service as webhooks

    async with db.write() as session:
        won = await session.execute(
            update(Package).where(Package.id == package_id, Package.status == "active", Package.expires_at <= now)
            .values(status="expired").execution_options(synchronize_session=False)
        )
        first_time = bool(won.rowcount)  # type: ignore[attr-defined]
        package = await session.get(Package, package_id)
        assert package is not None
        if first_time is False and package.status != "expired":
            return
        locked = await ledger.lock_for_update(session, ledger.package_account(package_id))
        remaining = locked[0] if locked else 0
        if remaining > 0:
            await session.execute(
                update(Package).where(Package.id == package_id)
                .values(units_expired=Package.units_expired + remaining).execution_options(synchronize_session=False)
            )
            await ledger.post(
                session, account_id=package.account_id, kind="expiry", reference=package_id, at=now,
                detail={"units": remaining},
                postings={ledger.package_account(package_id): -remaining,
                          ledger.ledger_id(package.account_id, "expired", ledger.UNITS): remaining},
            )
        if first_time:
            report.expired += 1
            await webhooks.enqueue_account_event(
                session, account_id=package.account_id, event_type="package.expired", occurred_at=now,
                data={"package_id": package_id, "name": package.name, "units_expired": remaining,
                      "expires_at": isoformat(package.expires_at)},
            )


async def _notify_expiring(db: Database, package_id: str, now: datetime, report: SweepReport) -> None:
    from hongyan.webhooks import service as webhooks

    async with db.write() as session:
        won = await session.execute(
            update(Package).where(Package.id == package_id, Package.status == "active",
                                  Package.expiry_notified_at.is_(None))
            .values(expiry_notified_at=now).execution_options(synchronize_session=False)
        )
        if not won.rowcount:  # type: ignore[attr-defined]
            return
        package = await session.get(Package, package_id)
        assert package is not None
        remaining = await session.scalar(
            select(LedgerAccount.balance).where(LedgerAccount.id == ledger.package_account(package_id))) or 0
        await webhooks.enqueue_account_event(
            session, account_id=package.account_id, event_type="package.expiring", occurred_at=now,
            data={"package_id": package_id, "name": package.name, "subscription_id": package.subscription_id,
                  "units_total": package.units_total, "units_remaining": remaining,
                  "expires_at": isoformat(package.expires_at)},
        )
        report.notified += 1


def next_period(period_end: datetime, anchor_day: int, now: datetime) -> tuple[datetime, datetime]:
    """The period to renew into: the one that starts at `period_end`, or — when renewal comes late (workers
    were down for more than a month) — the period containing `now`; periods missed entirely are not charged."""
    start = period_end
    end = add_months(start, 1, anchor_day)
    while end <= now:
        start, end = end, add_months(end, 1, anchor_day)
    return start, end


async def _renew(db: Database, subscription_id: str, now: datetime, report: SweepReport) -> None:
    from hongyan.accounts.models import Account
    from hongyan.webhooks import service as webhooks

    async with db.write() as session:
        subscription = await session.get(Subscription, subscription_id)
        if subscription is None or subscription.status != "active" or subscription.period_end > now:
            return
        old_start, old_end = subscription.period_start, subscription.period_end
        # every change below is conditional on the period still being the one read: a concurrent sweeper
        # (or a restart) that already handled it matches no row and stops here
        same_period = (Subscription.id == subscription_id, Subscription.period_end == old_end,
                       Subscription.status == "active")
        if subscription.cancel_at_period_end:
            won = await session.execute(
                update(Subscription).where(*same_period).values(status="canceled", canceled_at=now)
                .execution_options(synchronize_session=False)
            )
            report.canceled += int(bool(won.rowcount))  # type: ignore[attr-defined]
            return
        new_start, new_end = next_period(old_end, subscription.anchor_day, now)
        won = await session.execute(
            update(Subscription).where(*same_period).values(period_start=new_start, period_end=new_end)
            .execution_options(synchronize_session=False)
        )
        if not won.rowcount:  # type: ignore[attr-defined]
            return
        account = await session.get(Account, subscription.account_id)
        product = await session.get(Product, subscription.product_id)
        assert account is not None and product is not None
        fee = {"fee": format_micros(product.price_micros, account.currency), "fee_micros": product.price_micros,
               "currency": account.currency}
        try:
            async with session.begin_nested():  # the charge alone rolls back when cash is short
                await _charge_and_grant(
                    session, account_id=account.id, currency=account.currency, product=product,
                    entry_kind="subscription_fee", starts_at=new_start, expires_at=new_end,
                    subscription_id=subscription_id, actor="system",
                    # a second line of defence: the journal refuses a second fee for the same period
                    idempotency_key=f"sub:{subscription_id}:{isoformat(new_start)}",
                )
        except HongyanError as exc:
            if exc.code != "insufficient_balance":
                raise
            # past_due keeps the last paid period (paid until period_end); no allowance for the new one
            await session.execute(
                update(Subscription).where(Subscription.id == subscription_id)
                .values(status="past_due", period_start=old_start, period_end=old_end)
                .execution_options(synchronize_session=False)
            )
            await webhooks.enqueue_account_event(
                session, account_id=account.id, event_type="subscription.past_due", occurred_at=now,
                data={"subscription_id": subscription_id, "product_id": product.id, **fee,
                      "paid_until": isoformat(old_end), "shortfall": (exc.details or {}).get("shortfall")},
            )
            report.past_due += 1
            return
        await webhooks.enqueue_account_event(
            session, account_id=account.id, event_type="subscription.renewed", occurred_at=now,
            data={"subscription_id": subscription_id, "product_id": product.id, **fee,
                  "period_start": isoformat(new_start), "period_end": isoformat(new_end), "units": product.units},
        )
        report.renewed += 1
