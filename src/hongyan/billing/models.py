"""Billing tables: the double-entry ledger, billing profiles, rate cards, products/packages/subscriptions,
payment orders.

The ledger is zero-sum: every journal entry's lines add up to 0 per currency (or unit), and every ledger
account's `balance` equals the sum of its lines (kept in the same transaction; `hongyan billing verify`
proves it). Customer-side accounts (cash, held, package) have a floor (`min_balance`, 0 or minus the credit
limit) enforced by a conditional UPDATE and a CHECK constraint; platform-side contra accounts (funding,
revenue, …) have none and carry the other side of every movement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.db.base import Base, JsonType, UtcDateTime


class LedgerAccount(Base):
    """One balance in one currency or unit. Id is deterministic: `<owner>:<kind>:<currency>`."""

    __tablename__ = "ledger_account"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(30), index=True)  # the customer it belongs to / is kept for
    kind: Mapped[str] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))  # ISO 4217, or "SMS" for package units (segments)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    min_balance: Mapped[int | None] = mapped_column(BigInteger)  # None: unbounded (platform side)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (CheckConstraint("min_balance IS NULL OR balance >= min_balance", name="floor"),)


class JournalEntry(Base):
    """One balanced movement: recharge, bonus, package_purchase, subscription_fee, hold, settle, release,
    refund, expiry, adjustment. `reference` points at what caused it (batch, order, package…)."""

    __tablename__ = "journal_entry"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # je_… (time-sortable)
    account_id: Mapped[str] = mapped_column(String(30))
    kind: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))  # user:usr_… | key:key_… | system | provider:<name> | cli
    actor_ip: Mapped[str | None] = mapped_column(String(45))
    # unique when set: the same business event (payment callback, renewal of a period) posts at most once
    idempotency_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_journal_entry_account", JournalEntry.account_id, JournalEntry.id)
Index("ix_journal_entry_reference", JournalEntry.reference)


class JournalLine(Base):
    """One side of an entry: a signed amount on one ledger account, with that account's balance after it."""

    __tablename__ = "journal_line"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("journal_entry.id"), index=True)
    ledger_account_id: Mapped[str] = mapped_column(ForeignKey("ledger_account.id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_journal_line_ledger_account", JournalLine.ledger_account_id, JournalLine.id)


class BillingProfile(Base):
    """Per-account billing rules. A missing row means the defaults below."""

    __tablename__ = "billing_profile"

    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    rate_card_id: Mapped[str | None] = mapped_column(String(30))  # None: the platform default for the currency
    tier: Mapped[str] = mapped_column(String(16), default="standard")  # channel quality tier priced
    draw_order: Mapped[str] = mapped_column(String(16), default="packages_first")  # | cash_first
    refund_undelivered: Mapped[bool] = mapped_column(Boolean, default=False)
    low_balance_threshold_micros: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RateCard(Base):
    """A price list in one currency. `account_id` set: an account's override layer (checked first)."""

    __tablename__ = "rate_card"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # rc_…
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    account_id: Mapped[str | None] = mapped_column(String(30), index=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)  # the platform card for its currency
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RateCardVersion(Base):
    """An immutable set of rates, effective from a time; the newest effective version wins."""

    __tablename__ = "rate_card_version"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # rcv_…
    rate_card_id: Mapped[str] = mapped_column(ForeignKey("rate_card.id"))
    effective_from: Mapped[datetime] = mapped_column(UtcDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_rate_card_version_card", RateCardVersion.rate_card_id, RateCardVersion.effective_from)


class Rate(Base):
    """Price per segment; `*` matches any country / message type / tier (the most specific row wins)."""

    __tablename__ = "rate"

    version_id: Mapped[str] = mapped_column(ForeignKey("rate_card_version.id"), primary_key=True)
    country: Mapped[str] = mapped_column(String(2), primary_key=True)  # ISO 3166 alpha-2 or "*"
    message_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    price_micros: Mapped[int] = mapped_column(BigInteger)


class Product(Base):
    """Something sold for cash: an SMS package (units valid N days) or a monthly subscription plan."""

    __tablename__ = "product"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # prd_…
    kind: Mapped[str] = mapped_column(String(16))  # package | subscription
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    price_micros: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int] = mapped_column(BigInteger)  # segments included (per period for subscriptions)
    validity_days: Mapped[int] = mapped_column(Integer)  # packages; subscriptions renew monthly
    countries: Mapped[list[str]] = mapped_column(JsonType, default=list)  # [] = any destination
    message_types: Mapped[list[str]] = mapped_column(JsonType, default=list)  # [] = any type
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Package(Base):
    """Units an account owns until `expires_at`; the remainder is its ledger account `<id>:package:SMS`."""

    __tablename__ = "package"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # pkg_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    product_id: Mapped[str | None] = mapped_column(String(30))
    subscription_id: Mapped[str | None] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(200))
    units_total: Mapped[int] = mapped_column(BigInteger)
    units_expired: Mapped[int] = mapped_column(BigInteger, default=0)  # written off at (or after) expiry
    price_micros: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    countries: Mapped[list[str]] = mapped_column(JsonType, default=list)
    message_types: Mapped[list[str]] = mapped_column(JsonType, default=list)
    status: Mapped[str] = mapped_column(String(12))  # active | expired
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expiry_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_package_account_status", Package.account_id, Package.status, Package.expires_at)
Index("ix_package_status_expires", Package.status, Package.expires_at)


class Subscription(Base):
    """A monthly plan: each period charges the fee and grants an allowance package ending with the period."""

    __tablename__ = "subscription"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # sub_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    product_id: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(12))  # active | past_due | canceled
    period_start: Mapped[datetime] = mapped_column(UtcDateTime)
    period_end: Mapped[datetime] = mapped_column(UtcDateTime)  # renewal happens here
    anchor_day: Mapped[int] = mapped_column(Integer)  # day of month the periods start on
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    canceled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


Index("ix_subscription_status_end", Subscription.status, Subscription.period_end)


class PaymentOrder(Base):
    """A recharge through a payment provider: pending → paid (credited exactly once) | failed | canceled."""

    __tablename__ = "payment_order"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # pay_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    provider: Mapped[str] = mapped_column(String(32))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    bonus_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(12))
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    journal_entry_id: Mapped[str | None] = mapped_column(String(30))
    invoice_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


Index("ix_payment_order_account", PaymentOrder.account_id, PaymentOrder.id)


class DeferredEntry(Base):
    """A ledger entry to post when its transaction commits (PostgreSQL only; `ledger.post_at_commit`).

    The row is written with the rest of the transaction, taking no lock; a deferred constraint trigger
    (migration 0009, `hongyan_ledger_deferred`) posts it at COMMIT — the same locks in id order, floor check,
    balance moves, entry and lines as `ledger.post` — and deletes the row, so none outlives its transaction. A
    busy account's cash and held rows are then locked only for the commit itself, not from a statement in the
    middle of the transaction through the client's round trips to its COMMIT. A floor that would be crossed
    fails the COMMIT (SQLSTATE HY402) and nothing of the transaction stays."""

    __tablename__ = "ledger_deferred"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(30))
    account_id: Mapped[str] = mapped_column(String(30))
    kind: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    postings: Mapped[dict[str, int]] = mapped_column(JsonType)  # ledger account id → signed amount
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
