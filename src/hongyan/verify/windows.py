"""Every sliding-window figure a verification send needs, read in one statement (UNION ALL of indexed ranges).

A start used to read them one query each (per-number sends, per-IP, per-key, the prefix and the country
velocity counts): five round trips inside the send transaction. The branches are the same indexed reads as
before, each bounded by its own LIMIT; the decisions stay where they were (verify.limits for the limits,
verify.pumping for the velocity), now pure functions of these figures.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, cast, func, literal, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.messaging.models import Message
from hongyan.verify.limits import EffectiveLimits
from hongyan.verify.models import Verification, VerifyThrottle

VELOCITY_REREAD_S = 1.0  # a destination's velocity count is read from the database at most this often
VELOCITY_CACHE_MAX = 20_000  # (account, kind, value) entries per process
# (account, "prefix" | "country", value) → (monotonic time read, count): read once, then this process's own
# sends are added to it until VELOCITY_REREAD_S has passed. The count is a range of every verification in
# the window (30,000 rows for a 50/s sender over 10 minutes): reading it for every send made the database
# the bottleneck of a busy sender, while a pumping burst lasts minutes, not a second.
_velocity: dict[tuple[str, str, str], tuple[float, int]] = {}


def clear_velocity_cache() -> None:
    _velocity.clear()


@dataclass(slots=True)
class Windows:
    """This account's verification messages to the number in the last day, newest first (at most
    max(per_number_day, per_number_hour) of them); verifications started from the client IP in the last
    hour and with the API key in the last minute (how many, counted up to the limit, and the oldest of
    those: when it leaves the window a slot frees); verifications to the prefix and to the country in the
    velocity window (the country's without prefixes throttled now)."""

    number_sends: list[datetime] = field(default_factory=list)
    ip_starts: tuple[int, datetime | None] = (0, None)  # (count up to the limit, the oldest of those)
    key_starts: tuple[int, datetime | None] = (0, None)
    recent: dict[tuple[str, str], int] = field(default_factory=dict)  # ("prefix" | "country", value) → count


@functools.cache
def _statement(ip: bool, key: bool, prefix: bool, country: bool) -> Any:
    """The statement for one combination of branches, built once with bound parameters: composing it per
    call (subqueries, column collections, coercions) cost more CPU than running it."""
    when = Message.created_at.type

    def rows(tag: str, query: Any, limit: str) -> Any:
        sub = query.limit(bindparam(limit)).subquery()
        return select(literal(tag).label("tag"), sub.c.at.label("at"), literal(0).label("n")).select_from(sub)

    def newest(tag: str, query: Any, limit: str) -> Any:  # how many (up to `limit`) and the oldest of them
        sub = query.limit(bindparam(limit)).subquery()
        return select(literal(tag), func.min(sub.c.at), func.count()).select_from(sub)

    def count(tag: str, query: Any) -> Any:
        return query.with_only_columns(literal(tag).label("tag"), cast(null(), when).label("at"), func.count())

    account = bindparam("w_account")
    branches = [
        rows(
            "number",
            select(Message.created_at.label("at"))
            .where(
                Message.to_bidx == bindparam("w_bidx"),
                Message.account_id == account,
                Message.message_type == "verification",
                Message.created_at >= bindparam("w_day", type_=when),
            )
            .order_by(Message.created_at.desc()),
            "w_number_n",
        )
    ]
    if ip:
        branches.append(
            newest(
                "ip",
                select(Verification.created_at.label("at"))
                .where(
                    Verification.client_ip == bindparam("w_ip"),
                    Verification.created_at >= bindparam("w_hour", type_=when),
                    Verification.account_id == account,
                )
                .order_by(Verification.created_at.desc()),
                "w_ip_n",
            )
        )
    if key:
        branches.append(
            newest(
                "key",
                select(Verification.created_at.label("at"))
                .where(Verification.api_key_id == bindparam("w_key"),
                       Verification.created_at >= bindparam("w_minute", type_=when))
                .order_by(Verification.created_at.desc()),
                "w_key_n",
            )
        )
    since = bindparam("w_since", type_=when)
    if prefix:
        branches.append(
            count(
                "prefix",
                select(Verification.id).where(
                    Verification.to_prefix == bindparam("w_prefix"),
                    Verification.created_at >= since,
                    Verification.account_id == account,
                ),
            )
        )
    if country:
        throttled = select(VerifyThrottle.value).where(  # as pumping._recent_count: a throttled prefix's
            VerifyThrottle.kind == "prefix",  # burst is that prefix's business, not the whole country's
            VerifyThrottle.until > bindparam("w_now", type_=when),
            VerifyThrottle.lifted_at.is_(None),
            or_(VerifyThrottle.account_id.is_(None), VerifyThrottle.account_id == account),
        )
        branches.append(
            count(
                "country",
                select(Verification.id).where(
                    Verification.to_country == bindparam("w_country"),
                    Verification.created_at >= since,
                    Verification.account_id == account,
                    or_(Verification.to_prefix.is_(None), Verification.to_prefix.not_in(throttled)),
                ),
            )
        )
    return union_all(*branches)


async def read_windows(
    session: AsyncSession,
    lim: EffectiveLimits,
    *,
    account_id: str,
    to_bidx: str,
    client_ip: str | None,
    api_key_id: str | None,
    prefix: str | None,
    country: str | None,
    velocity_window_s: int,
    now: datetime,
) -> Windows:
    """One statement; `client_ip`/`api_key_id` None (a resend) or `prefix` None skip their branches, and
    so do the velocity counts read less than VELOCITY_REREAD_S ago by this process (their figure then is
    the one read, plus this process's sends since)."""
    since = now - timedelta(seconds=velocity_window_s)
    params = {
        "w_bidx": to_bidx, "w_account": account_id, "w_day": now - timedelta(days=1),
        "w_number_n": max(lim.per_number_day, lim.per_number_hour, 1),
        "w_ip": client_ip, "w_hour": now - timedelta(hours=1), "w_ip_n": max(lim.per_ip_hour, 1),
        "w_key": api_key_id, "w_minute": now - timedelta(minutes=1), "w_key_n": max(lim.per_key_minute, 1),
        "w_prefix": prefix, "w_country": country, "w_since": since, "w_now": now,
    }
    mono = time.monotonic()
    wanted = [("prefix", prefix), ("country", country)] if prefix and country else [("prefix", prefix)] if prefix else []
    cached: dict[tuple[str, str], int] = {}
    read_at: dict[tuple[str, str], float] = {}  # when each figure was read (now for those read below)
    for kind, value in wanted:
        hit = _velocity.get((account_id, kind, value or ""))
        if hit is not None and mono - hit[0] < VELOCITY_REREAD_S:
            read_at[(kind, value or "")], cached[(kind, value or "")] = hit
    read_prefix = bool(prefix) and ("prefix", prefix or "") not in cached
    read_country = bool(prefix and country) and ("country", country or "") not in cached
    stmt = _statement(bool(client_ip), bool(api_key_id), read_prefix, read_country)
    out = Windows()
    out.recent.update(cached)
    for tag, at, n in (await session.execute(stmt, params)).all():
        if tag == "number":
            out.number_sends.append(at)
        elif tag == "ip":
            out.ip_starts = (int(n), at)
        elif tag == "key":
            out.key_starts = (int(n), at)
        else:
            out.recent[(tag, prefix if tag == "prefix" else country or "")] = int(n)
    out.number_sends.sort(reverse=True)  # UNION ALL promises no order
    if len(_velocity) > VELOCITY_CACHE_MAX:
        _velocity.clear()
    for (kind, value), n in out.recent.items():  # this send counts in the next sends' figure
        _velocity[(account_id, kind, value)] = (read_at.get((kind, value), mono), n + 1)
    return out
