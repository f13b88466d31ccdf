"""What an account paid for and when: per-message usage, daily/monthly statements, the account's balance.

Usage is read from the message rows (price, funding, billing_state), statements from the journal lines of
the account's cash and held balances: holds and releases move money between those two and cancel out, so
a statement shows recharges, bonuses, purchases, usage (settled messages) and adjustments — what changed
the account's funds — with opening and closing balances that the journal proves.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.billing import charging, ledger
from hongyan.billing.models import JournalEntry, JournalLine, LedgerAccount
from hongyan.billing.rates import get_profile
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.money import format_micros

USAGE_STATES = (charging.HELD, charging.SETTLED, charging.RELEASED, charging.REFUNDED)
# statement columns: which entry kinds count where (hold/release/refund only move cash ↔ held)
STATEMENT_COLUMNS = {
    "recharge": "recharged",
    "bonus": "bonus",
    "adjustment": "adjustments",
    "package_purchase": "packages",
    "subscription_fee": "packages",
    "settle": "usage",
}


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: datetime | None = None
    end: datetime | None = None
    message_type: str | None = None
    country: str | None = None
    campaign_id: str | None = None
    batch_id: str | None = None
    billing_state: str | None = None


def _usage_query(account_id: str, f: UsageFilter) -> Any:
    from hongyan.messaging.models import Message

    query = select(
        Message.id, Message.batch_id, Message.campaign_id, Message.to_number, Message.to_country,
        Message.message_type, Message.segment_count, Message.price_micros, Message.currency, Message.funding,
        Message.billing_state, Message.status, Message.created_at, Message.done_at,
    ).where(Message.account_id == account_id, Message.billing_state.is_not(None))
    if f.start is not None:
        query = query.where(Message.created_at >= f.start)
    if f.end is not None:
        query = query.where(Message.created_at < f.end)
    if f.message_type:
        query = query.where(Message.message_type == f.message_type)
    if f.country:
        query = query.where(Message.to_country == f.country.upper())
    if f.campaign_id:
        query = query.where(Message.campaign_id == f.campaign_id)
    if f.batch_id:
        query = query.where(Message.batch_id == f.batch_id)
    if f.billing_state:
        query = query.where(Message.billing_state == f.billing_state)
    return query


def usage_row(r: Any) -> dict[str, Any]:
    """One message's consumption: what was charged to cash (micros) or to a package (units)."""
    settled = r.billing_state == charging.SETTLED
    cash = r.funding == charging.CASH
    charged = r.price_micros if settled and cash else 0
    return {
        "message_id": r.id, "batch_id": r.batch_id, "campaign_id": r.campaign_id, "to": r.to_number,
        "country": r.to_country, "message_type": r.message_type, "segments": r.segment_count,
        "price": format_micros(r.price_micros, r.currency), "status": r.status, "billing_state": r.billing_state,
        "paid_by": "cash" if cash else "package", "package_id": None if cash else r.funding,
        "charged": format_micros(charged, r.currency), "charged_micros": charged,
        "package_units": r.segment_count if settled and not cash else 0, "currency": r.currency,
        "created_at": isoformat(r.created_at), "done_at": isoformat(r.done_at),
    }


async def usage(
    session: AsyncSession, *, account_id: str, filters: UsageFilter, limit: int = 100, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    from hongyan.messaging.models import Message

    query = _usage_query(account_id, filters).order_by(Message.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(Message.id < cursor)
    rows = (await session.execute(query)).all()
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return [usage_row(r) for r in rows[:limit]], next_cursor


async def usage_stream(session: AsyncSession, *, account_id: str, filters: UsageFilter, chunk: int = 2000) -> Any:
    """All matching rows, oldest first, in chunks (for CSV export without loading everything)."""
    from hongyan.messaging.models import Message

    after: str | None = None
    while True:
        query = _usage_query(account_id, filters).order_by(Message.id).limit(chunk)
        if after:
            query = query.where(Message.id > after)
        rows = (await session.execute(query)).all()
        if not rows:
            return
        for r in rows:
            yield usage_row(r)
        after = rows[-1].id


USAGE_GROUPS = ("day", "month", "country", "message_type", "batch_id", "campaign_id")


async def usage_summary(
    session: AsyncSession, *, account_id: str, filters: UsageFilter, group_by: list[str]
) -> list[dict[str, Any]]:
    """Messages, segments and charges grouped by day/month/country/type/batch/campaign."""
    from hongyan.messaging.models import Message

    postgres = session.bind.dialect.name == "postgresql"
    columns: list[Any] = []
    for g in group_by:
        if g in ("day", "month"):
            columns.append(_period(Message.created_at, g, postgres).label(g))
        else:
            columns.append((Message.to_country if g == "country" else getattr(Message, g)).label(g))
    settled = Message.billing_state == charging.SETTLED
    cash = Message.funding == charging.CASH
    query = select(
        *columns,
        Message.currency,
        func.count().label("messages"),
        func.sum(Message.segment_count).label("segments"),
        func.sum(_if(settled & cash, Message.price_micros)).label("charged"),
        func.sum(_if(settled & ~cash, Message.segment_count)).label("package_units"),
        func.sum(_if(Message.billing_state == charging.HELD, 1)).label("pending"),
    ).where(*(_usage_query(account_id, filters).whereclause,))
    query = query.group_by(*columns, Message.currency).order_by(*columns)
    out = []
    for r in (await session.execute(query)).all():
        row = {g: getattr(r, g) for g in group_by}
        row.update(
            messages=r.messages, segments=int(r.segments or 0), charged=format_micros(int(r.charged or 0), r.currency),
            charged_micros=int(r.charged or 0), package_units=int(r.package_units or 0), pending=int(r.pending or 0),
            currency=r.currency,
        )
        out.append(row)
    return out


def _if(condition: Any, value: Any) -> Any:
    from sqlalchemy import case

    return case((condition, value), else_=0)


def _period(column: Any, period: str, postgres: bool) -> Any:
    """UTC day `2026-11-25` or month `2026-11` of a timestamp (SQLite stores `YYYY-MM-DD HH:MM:SS…` text)."""
    if postgres:
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD" if period == "day" else "YYYY-MM")
    return func.substr(column, 1, 10 if period == "day" else 7)


@dataclass(slots=True)
class StatementPeriod:
    period: str
    opening: int = 0
    columns: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    closing: int = 0
    closing_available: int = 0
    closing_held: int = 0
    package_units_used: int = 0


async def statement(
    session: AsyncSession, *, account_id: str, currency: str, period: str, start: datetime | None = None,
    end: datetime | None = None,
) -> list[StatementPeriod]:
    """One row per day or month that had movements, between start and end (UTC)."""
    postgres = session.bind.dialect.name == "postgresql"
    cash_id, held_id = ledger.cash(account_id, currency), ledger.held(account_id, currency)
    units_held = ledger.held(account_id, ledger.UNITS)
    line, entry = JournalLine.__table__, JournalEntry.__table__
    bucket = _period(line.c.created_at, period, postgres).label("bucket")
    query = (
        select(bucket, line.c.ledger_account_id, entry.c.kind, func.sum(line.c.amount).label("amount"))
        .select_from(line.join(entry, entry.c.id == line.c.entry_id))
        .where(line.c.ledger_account_id.in_([cash_id, held_id, units_held]))
        .group_by(bucket, line.c.ledger_account_id, entry.c.kind)
        .order_by(bucket)
    )
    if end is not None:
        query = query.where(line.c.created_at < end)
    rows = (await session.execute(query)).all()
    cash_total = held_total = 0
    periods: dict[str, StatementPeriod] = {}
    start_key = None if start is None else start.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
    for r in rows:
        if r.ledger_account_id == units_held:
            if start_key is None or r.bucket >= start_key:
                p = periods.setdefault(r.bucket, StatementPeriod(r.bucket))
                if r.kind == "settle":
                    p.package_units_used += -int(r.amount)
            continue
        if start_key is not None and r.bucket < start_key:  # before the range: only the opening balance
            if r.ledger_account_id == cash_id:
                cash_total += int(r.amount)
            else:
                held_total += int(r.amount)
            continue
        p = periods.get(r.bucket)
        if p is None:
            p = periods[r.bucket] = StatementPeriod(r.bucket)
        column = STATEMENT_COLUMNS.get(r.kind)
        if column is not None:
            p.columns[column] += int(r.amount)
    # walk the periods in order carrying the balances (movement per period = its lines)
    per_period_cash: dict[str, int] = defaultdict(int)
    per_period_held: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.ledger_account_id == units_held or (start_key is not None and r.bucket < start_key):
            continue
        if r.ledger_account_id == cash_id:
            per_period_cash[r.bucket] += int(r.amount)
        else:
            per_period_held[r.bucket] += int(r.amount)
    out = []
    for key in sorted(periods):
        p = periods[key]
        p.opening = cash_total + held_total
        cash_total += per_period_cash[key]
        held_total += per_period_held[key]
        p.closing, p.closing_available, p.closing_held = cash_total + held_total, cash_total, held_total
        out.append(p)
    return out


def statement_json(p: StatementPeriod, currency: str) -> dict[str, Any]:
    money = {name: p.columns.get(name, 0) for name in sorted(set(STATEMENT_COLUMNS.values()))}
    return {
        "period": p.period,
        "currency": currency,
        "opening": format_micros(p.opening, currency),
        **{name: format_micros(value, currency) for name, value in money.items()},
        "closing": format_micros(p.closing, currency),
        "closing_available": format_micros(p.closing_available, currency),
        "closing_held": format_micros(p.closing_held, currency),
        "package_units_used": p.package_units_used,
        "micros": {"opening": p.opening, **money, "closing": p.closing},
    }


async def balance_summary(session: AsyncSession, *, account_id: str, currency: str) -> dict[str, Any]:
    """Cash, held, credit limit and package units of an account, as the API and console show them.

    A sub-account shows its parent's funds (they pay for it) plus its own spend limit and spend."""
    from hongyan.accounts.models import Account
    from hongyan.billing.spend_limits import spend_summary

    account = await session.get(Account, account_id)
    if account is not None and account.parent_id:
        summary = await balance_summary(session, account_id=account.parent_id, currency=currency)
        return {**summary, **await spend_summary(session, account, now=utcnow())}
    accounts = await ledger.balances_of(session, account_id)
    cash_account = accounts.get(ledger.cash(account_id, currency))
    held_account = accounts.get(ledger.held(account_id, currency))
    balance = cash_account.balance if cash_account else 0
    floor = (cash_account.min_balance or 0) if cash_account else 0
    held_amount = held_account.balance if held_account else 0
    units_held = accounts.get(ledger.held(account_id, ledger.UNITS))
    profile = await get_profile(session, account_id)
    package_units = await session.scalar(
        select(func.coalesce(func.sum(LedgerAccount.balance), 0)).where(
            LedgerAccount.account_id.like("pkg_%"), LedgerAccount.kind == "package",
            LedgerAccount.id.in_(_active_package_accounts(account_id)),
        )
    )
    threshold = profile.low_balance_threshold_micros
    return {
        "currency": currency,
        "balance": format_micros(balance, currency),
        "balance_micros": balance,
        "available": format_micros(balance - floor, currency),
        "available_micros": balance - floor,
        "held": format_micros(held_amount, currency),
        "held_micros": held_amount,
        "credit_limit": format_micros(-floor, currency),
        "credit_limit_micros": -floor,
        "package_units": int(package_units or 0),
        "package_units_held": units_held.balance if units_held else 0,
        "low_balance_threshold": None if threshold is None else format_micros(threshold, currency),
        "low_balance": threshold is not None and balance < threshold,
        "draw_order": profile.draw_order,
        "refund_undelivered": profile.refund_undelivered,
        "tier": profile.tier,
    }


def _active_package_accounts(account_id: str) -> Any:
    from hongyan.billing.models import Package

    return select(Package.id.concat(":package:" + ledger.UNITS)).where(
        Package.account_id == account_id, Package.status == "active"
    )


async def journal(
    session: AsyncSession, *, account_id: str, limit: int = 50, cursor: str | None = None, kind: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The account's journal entries, newest first, each with its lines."""
    query = select(JournalEntry).where(JournalEntry.account_id == account_id).order_by(JournalEntry.id.desc())
    if kind:
        query = query.where(JournalEntry.kind == kind)
    if cursor:
        query = query.where(JournalEntry.id < cursor)
    entries = list(await session.scalars(query.limit(limit + 1)))
    next_cursor = entries[limit - 1].id if len(entries) > limit else None
    entries = entries[:limit]
    lines: dict[str, list[JournalLine]] = defaultdict(list)
    if entries:
        for line in await session.scalars(
            select(JournalLine).where(JournalLine.entry_id.in_([e.id for e in entries])).order_by(JournalLine.id)
        ):
            lines[line.entry_id].append(line)
    out = []
    for e in entries:
        out.append({
            "id": e.id, "kind": e.kind, "reference": e.reference, "note": e.note, "actor": e.actor,
            "created_at": isoformat(e.created_at), "detail": e.detail,
            "lines": [
                {"account": ln.ledger_account_id.split(":", 1)[1] if ln.ledger_account_id.startswith(account_id)
                 else ln.ledger_account_id, "currency": ln.currency,
                 "amount": format_micros(ln.amount, ln.currency) if ln.currency != ledger.UNITS else str(ln.amount),
                 "amount_micros" if ln.currency != ledger.UNITS else "units": ln.amount,
                 "balance_after": ln.balance_after}
                for ln in lines[e.id]
            ],
        })
    return out, next_cursor
