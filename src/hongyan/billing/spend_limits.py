"""Sub-accounts pay from their parent: who pays for an account, and the sub-account's spend limit per period.

A sub-account (account.parent_id set) has no money of its own: its messages hold, settle and release on
the parent's ledger accounts (cash, held, packages). Its `spend_limit_micros` caps what its messages may
cost per UTC day or month: spend = the price of its messages created in the period whose hold still
counts (billing_state held or settled; released and refunded messages give the money back). The check
runs inside `charging.hold_batch` after the parent's cash row is locked, so two batches of the same
sub-account (or of two sub-accounts of one parent) are serialized and cannot pass the limit together.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.core import ids
from hongyan.core.errors import HongyanError
from hongyan.core.money import format_micros

PERIODS = ("day", "month")
COUNTING_STATES = ("held", "settled")


async def payer_of(session: AsyncSession, account_id: str) -> str:
    """The account whose balance pays for `account_id`'s messages: its parent, or itself."""
    account = await session.get(Account, account_id)
    return account.parent_id if account is not None and account.parent_id else account_id


def period_start(period: str, now: datetime) -> datetime:
    """Pure: the start (UTC) of the day or month that contains `now`."""
    now = now.astimezone(UTC)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def first_id_at(prefix: str, at: datetime) -> str:
    """Pure: the smallest id of `prefix` created at or after `at` (ids are time-sortable: 48-bit ms first)."""
    sample = ids.new_id(prefix, at_ms=int(at.timestamp() * 1000))
    return sample[: len(prefix) + 1 + 10] + "0" * 16  # 10 base32 chars hold the 48-bit time (+2 zero bits)


async def spent_in_period(session: AsyncSession, account_id: str, *, period: str, now: datetime) -> int:
    """What the account's messages of the current period cost (held or settled).

    Reads the (account_id, id) index from the period's first id on: a range scan of that account's messages
    of the period, not of the whole table."""
    from hongyan.messaging.models import Message  # messaging imports billing; keep this one lazy

    lower = first_id_at("msg", period_start(period, now))
    total = await session.scalar(
        select(func.coalesce(func.sum(Message.price_micros), 0))
        .where(Message.account_id == account_id, Message.id >= lower, Message.billing_state.in_(COUNTING_STATES))
    )
    return int(total or 0)


def spend_limit_exceeded(*, currency: str, period: str, limit: int, spent: int, needed: int) -> HongyanError:
    remaining = max(limit - spent, 0)
    return HongyanError(
        "spend_limit_exceeded",
        f"This send costs {format_micros(needed, currency)} {currency} but the sub-account's "
        f"{'daily' if period == 'day' else 'monthly'} spend limit of {format_micros(limit, currency)} {currency} "
        f"leaves {format_micros(remaining, currency)} {currency} (spent {format_micros(spent, currency)}); "
        "ask an admin of the parent account to raise the limit, or send to fewer recipients.",
        status_code=402,
        details={"currency": currency, "period": period, "limit": format_micros(limit, currency), "limit_micros": limit,
                 "spent": format_micros(spent, currency), "spent_micros": spent,
                 "needed": format_micros(needed, currency), "needed_micros": needed,
                 "remaining_micros": remaining},
    )


async def check_spend_limit(session: AsyncSession, account_id: str, *, currency: str, needed: int,
                            now: datetime) -> None:
    """Refuse (402 `spend_limit_exceeded`) when a sub-account's period spend plus `needed` passes its limit.

    Call with the payer's cash row locked (see module doc)."""
    account = await session.get(Account, account_id)
    if account is None or account.parent_id is None or account.spend_limit_micros is None:
        return
    spent = await spent_in_period(session, account_id, period=account.spend_limit_period, now=now)
    if spent + needed > account.spend_limit_micros:
        raise spend_limit_exceeded(currency=currency, period=account.spend_limit_period,
                                   limit=account.spend_limit_micros, spent=spent, needed=needed)


async def spend_summary(session: AsyncSession, account: Account, *, now: datetime) -> dict[str, object]:
    """A sub-account's limit and spend this period, as the balance endpoint and console show them."""
    spent = await spent_in_period(session, account.id, period=account.spend_limit_period, now=now)
    limit = account.spend_limit_micros
    cur = account.currency
    return {
        "paid_by": account.parent_id,
        "spend_limit_period": account.spend_limit_period,
        "spend_limit": None if limit is None else format_micros(limit, cur),
        "spend_limit_micros": limit,
        "spent": format_micros(spent, cur),
        "spent_micros": spent,
        "spend_remaining_micros": None if limit is None else max(limit - spent, 0),
        "period_start": period_start(account.spend_limit_period, now).isoformat().replace("+00:00", "Z"),
    }
