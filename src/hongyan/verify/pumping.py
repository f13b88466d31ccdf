"""SMS pumping protection for verification codes: decide, before a code is sent, whether a destination
is allowed, throttled, or suddenly far busier than usual (artificially inflated traffic: an attacker makes
a customer's sign-up form send codes to premium-rate ranges and earns a share of the termination fee).

`assess()` is called by the verify service for every code it is about to send; it returns a refusal
`(code, message)` or None. Four checks, cheapest first:

1. the account's country allow-list (and the platform's, HONGYAN_VERIFY_COUNTRIES);
2. active `VerifyThrottle` rows for the destination's country or prefix (platform-wide or the account's);
3. velocity: this account's verifications to the prefix (and country) in the last
   `verify_velocity_window_s` against its baseline of the 24 hours before, scaled to the window;
4. conversion: approved / judged verifications to the destination over the last hour and day.

A spike or a collapse creates an account-scoped `VerifyThrottle` (blocked outright until now +
`verify_throttle_minutes`) and refuses. Every refusal decided here is written as a `VerifyBlock` row in the
caller's session. See docs/pumping-protection.md for the rules and their reasons.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.config import Settings
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.crypto import blind_index
from hongyan.verify import windows
from hongyan.verify.models import Verification, VerifyBlock, VerifyThrottle
from hongyan.verify.pumping_rules import (
    COUNTRY_MIN_FACTOR,
    COUNTRY_NOT_ALLOWED,
    DAY_S,
    DESTINATION_THROTTLED,
    STATUS_BY_CODE,
    account_countries,
    country_refusal,
    is_conversion_collapse,
    is_velocity_spike,
    platform_countries,
    prefix_of,
)

__all__ = ["COUNTRY_NOT_ALLOWED", "DESTINATION_THROTTLED", "STATUS_BY_CODE", "assess", "prefix_of"]

STATS_CACHE_S = 30.0  # the 24-hour aggregate (baseline and conversion) is re-read at most this often
STATS_CACHE_MAX = 20_000  # (account, destination) entries per process


# -- figures ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DestinationStats:
    """One account's history for one destination: the 24 h before the window (baseline) and conversion
    over the last hour and day. `judged` counts codes that were approved or can no longer be (expired,
    failed, canceled): a code still pending within its lifetime is neither a success nor a failure yet."""

    baseline_24h: int
    judged_1h: int
    approved_1h: int
    judged_24h: int
    approved_24h: int


_stats_cache: dict[tuple[str, str, str, datetime | None], tuple[float, DestinationStats]] = {}


def clear_stats_cache() -> None:
    """Forget the per-process aggregates and velocity counts (tests; an operator lift does not need it:
    throttles are read live)."""
    _stats_cache.clear()
    windows.clear_velocity_cache()


def _column(kind: str) -> Any:
    return Verification.to_country if kind == "country" else Verification.to_prefix


async def _recent_count(
    session: AsyncSession,
    *,
    account_id: str | None,
    kind: str,
    value: str,
    since: datetime,
    skip_throttled_prefixes_at: datetime | None = None,
) -> int:
    """Verifications to a destination since `since` (the account's, or every account's): an index range.

    With `skip_throttled_prefixes_at` (country velocity), traffic to prefixes already throttled then is left
    out: a burst to one prefix is dealt with by that prefix's throttle and must not pause the whole country."""
    query = (
        select(func.count())
        .select_from(Verification)
        .where(_column(kind) == value, Verification.created_at >= since)
    )
    if account_id is not None:
        query = query.where(Verification.account_id == account_id)
    if skip_throttled_prefixes_at is not None:
        throttled = select(VerifyThrottle.value).where(
            VerifyThrottle.kind == "prefix",
            VerifyThrottle.until > skip_throttled_prefixes_at,
            VerifyThrottle.lifted_at.is_(None),
            or_(VerifyThrottle.account_id.is_(None), VerifyThrottle.account_id == account_id),
        )
        query = query.where(or_(Verification.to_prefix.is_(None), Verification.to_prefix.not_in(throttled)))
    return int((await session.execute(query)).scalar_one())


async def destination_stats(
    session: AsyncSession,
    *,
    account_id: str,
    kind: str,
    value: str,
    now: datetime,
    window_s: int,
    judged_since: datetime | None = None,
) -> DestinationStats:
    """The 24-hour aggregate in one indexed query, cached per process for STATS_CACHE_S (it moves slowly;
    the fast-moving recent count is read live). Conversion counts no verification created before
    `judged_since` (an operator's lift: what came before was judged by a person)."""
    key = (account_id, kind, value, judged_since)
    hit = _stats_cache.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    window_start = now - timedelta(seconds=window_s)
    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
    if judged_since is not None:
        hour_ago, day_ago = max(hour_ago, judged_since), max(day_ago, judged_since)
    settled = and_(
        Verification.sandbox.is_(False), or_(Verification.status != "pending", Verification.expires_at <= now)
    )
    approved = Verification.status == "approved"

    def n(*conditions: Any) -> Any:
        return func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0)

    row = (
        await session.execute(
            select(
                n(
                    Verification.created_at < window_start,
                    Verification.created_at >= window_start - timedelta(days=1),
                ),
                n(Verification.created_at >= hour_ago, settled),
                n(Verification.created_at >= hour_ago, approved),
                n(Verification.created_at >= day_ago, settled),
                n(Verification.created_at >= day_ago, approved),
            ).where(
                _column(kind) == value,
                Verification.account_id == account_id,
                Verification.created_at >= window_start - timedelta(days=1),
            )
        )
    ).one()
    stats = DestinationStats(*(int(v) for v in row))
    if len(_stats_cache) >= STATS_CACHE_MAX:  # bounded: entries are cheap to rebuild
        _stats_cache.clear()
    _stats_cache[key] = (time.monotonic() + STATS_CACHE_S, stats)
    return stats


# -- throttles ---------------------------------------------------------------------------------------
def _targets(country: str | None, prefix: str) -> list[tuple[str, str]]:
    return ([("country", country)] if country else []) + [("prefix", prefix)]


@dataclass(frozen=True, slots=True)
class DestinationThrottles:
    """The throttles in force for a destination, and when an operator last lifted one per target (kind,
    value) within the day: the detector then judges only the traffic that came after the lift."""

    active: list[VerifyThrottle]
    lifted_at: dict[tuple[str, str], datetime]


@functools.cache
def _throttles_query(targets: int) -> Any:
    """destination_throttles' query for `targets` (kind, value) pairs, built once with bound parameters."""
    when = VerifyThrottle.until.type
    now = bindparam("t_now", type_=when)
    return (
        select(VerifyThrottle)
        .where(
            or_(*(and_(VerifyThrottle.kind == bindparam(f"t_kind{i}"), VerifyThrottle.value == bindparam(f"t_value{i}"))
                  for i in range(targets))),
            or_(and_(VerifyThrottle.until > now, VerifyThrottle.lifted_at.is_(None)),
                VerifyThrottle.lifted_at >= bindparam("t_day", type_=when)),
            or_(VerifyThrottle.account_id.is_(None), VerifyThrottle.account_id == bindparam("t_account")),
        )
        .order_by(VerifyThrottle.id)
    )


async def destination_throttles(
    session: AsyncSession, *, account_id: str, country: str | None, prefix: str, now: datetime
) -> DestinationThrottles:
    """One query (ix_verify_throttle_target): platform-wide and this account's throttles for the country
    and the prefix that are in force, or were lifted in the last 24 hours."""
    targets = _targets(country, prefix)
    params: dict[str, Any] = {"t_account": account_id, "t_now": now, "t_day": now - timedelta(days=1)}
    for i, (kind, value) in enumerate(targets):
        params[f"t_kind{i}"], params[f"t_value{i}"] = kind, value
    query = _throttles_query(len(targets))
    active: list[VerifyThrottle] = []
    lifted: dict[tuple[str, str], datetime] = {}
    for throttle in (await session.execute(query, params)).scalars():
        target = (throttle.kind, throttle.value)
        if throttle.lifted_at is None:
            active.append(throttle)
        elif target not in lifted or throttle.lifted_at > lifted[target]:
            lifted[target] = throttle.lifted_at
    return DestinationThrottles(active, lifted)


def _throttle_label(throttle: VerifyThrottle) -> str:
    return f"{'country' if throttle.kind == 'country' else 'prefix'} {throttle.value}"


async def throttle_refusal(
    session: AsyncSession, throttles: list[VerifyThrottle], *, now: datetime
) -> str | None:
    """A message if a throttle blocks this request: blocked outright, or its hourly allowance is used up
    (counted over the account's traffic for an account throttle, everyone's for a platform one)."""
    for throttle in throttles:
        until = isoformat(throttle.until)
        if throttle.max_per_hour is None:
            return (
                f"Verification codes to {_throttle_label(throttle)} are paused until {until} "
                f"({throttle.reason.replace('_', ' ')})."
            )
        sent = await _recent_count(
            session,
            account_id=throttle.account_id,
            kind=throttle.kind,
            value=throttle.value,
            since=now - timedelta(hours=1),
        )
        if sent >= throttle.max_per_hour:
            return (
                f"Verification codes to {_throttle_label(throttle)} are limited to {throttle.max_per_hour} "
                f"an hour until {until} ({throttle.reason.replace('_', ' ')})."
            )
    return None


def _new_throttle(
    record: Callable[[Any], None],
    settings: Settings,
    *,
    account_id: str,
    kind: str,
    value: str,
    reason: str,
    detail: str,
    now: datetime,
) -> VerifyThrottle:
    throttle = VerifyThrottle(
        account_id=account_id,
        kind=kind,
        value=value,
        reason=reason,
        detail=detail[:200],
        max_per_hour=None,
        until=now + timedelta(minutes=settings.verify_throttle_minutes),
        created_by="system",
        created_at=now,
    )
    record(throttle)
    return throttle


# -- the check ------------------------------------------------------------------------------------------
async def _anomaly(
    session: AsyncSession,
    settings: Settings,
    *,
    account_id: str,
    kind: str,
    value: str,
    now: datetime,
    lifted_at: datetime | None,
    counted: int | None = None,
) -> tuple[str, str] | None:
    """(reason, detail) when the destination's velocity jumped or its conversion collapsed, else None.
    After an operator's lift (`lifted_at`) only the verifications created since count. `counted`: the
    window's count already read (verify.windows), used unless a lift falls inside the window."""
    window_s = settings.verify_velocity_window_s
    minimum = settings.verify_velocity_min * (COUNTRY_MIN_FACTOR if kind == "country" else 1)
    since = now - timedelta(seconds=window_s)
    if counted is None or (lifted_at is not None and lifted_at > since):
        counted = await _recent_count(
            session,
            account_id=account_id,
            kind=kind,
            value=value,
            since=since if lifted_at is None else max(since, lifted_at),
            skip_throttled_prefixes_at=now if kind == "country" else None,
        )
    recent = 1 + counted
    stats = await destination_stats(
        session,
        account_id=account_id,
        kind=kind,
        value=value,
        now=now,
        window_s=window_s,
        judged_since=lifted_at,
    )
    factor = settings.verify_velocity_factor
    if is_velocity_spike(
        recent=recent, baseline_24h=stats.baseline_24h, window_s=window_s, factor=factor, minimum=minimum
    ):
        expected = stats.baseline_24h * window_s / DAY_S
        return "velocity_spike", (
            f"{recent} in {window_s // 60} min vs {expected:.1f} expected "
            f"({stats.baseline_24h} in the 24 h before); limit {factor:g}x, min {minimum}"
        )
    floor, min_started = settings.verify_conversion_floor, settings.verify_conversion_min_started
    for label, judged, approved in (
        ("1 h", stats.judged_1h, stats.approved_1h),
        ("24 h", stats.judged_24h, stats.approved_24h),
    ):
        if is_conversion_collapse(judged=judged, approved=approved, floor=floor, min_started=min_started):
            return "conversion_collapse", (
                f"{approved}/{judged} approved in {label} "
                f"({approved / judged:.0%}) below the {floor:.0%} floor"
            )
    return None


def _record_block(
    record: Callable[[Any], None],
    *,
    account_id: str,
    e164: str,
    country: str | None,
    prefix: str,
    client_ip: str | None,
    api_key_id: str | None,
    code: str,
    now: datetime,
) -> None:
    record(
        VerifyBlock(
            account_id=account_id,
            to_bidx=blind_index(e164),
            to_country=country,
            to_prefix=prefix,
            client_ip=client_ip,
            api_key_id=api_key_id,
            code=code,
            created_at=now,
        )
    )


async def assess(
    session: AsyncSession,
    settings: Settings,
    *,
    account_id: str,
    e164: str,
    country: str | None,
    prefix: str,
    client_ip: str | None,
    api_key_id: str | None = None,
    countries: frozenset[str] | None = None,
    recent: dict[tuple[str, str], int] | None = None,
    record: Callable[[Any], None] | None = None,
    now: datetime | None = None,
) -> tuple[str, str] | None:
    """Refuse `(error_code, message)` or allow (None) a verification code to `e164`, before it is sent.

    A refusal is recorded in `session` (a VerifyBlock row, and a new VerifyThrottle when an anomaly was
    just detected): the caller must COMMIT the session before turning the refusal into an error response,
    or the record and the throttle are lost. HTTP status per code: STATUS_BY_CODE (403 country, 429
    throttled). `api_key_id` (optional) is stored on the block for the operator view.

    Cost per allowed request: one account read (usually in the session already), one throttle lookup, two
    indexed counts (prefix and country in the window), plus a cached 24-hour aggregate per destination.
    The verify service passes what it already has: the account's allow-list (`countries`), the window counts
    (`recent`, verify.windows) — then the throttle lookup is the only statement. `record` receives the
    VerifyBlock (and new VerifyThrottle) of a refusal instead of `session.add` (the service writes them in
    a transaction of their own, its send transaction being rolled back).
    """
    now = now or utcnow()
    record = record or session.add

    def refuse(code: str, message: str) -> tuple[str, str]:
        _record_block(
            record,
            account_id=account_id,
            e164=e164,
            country=country,
            prefix=prefix,
            client_ip=client_ip,
            api_key_id=api_key_id,
            code=code,
            now=now,
        )
        return code, message

    if countries is None:
        countries = account_countries(await session.get(Account, account_id))
    why = country_refusal(country, platform=platform_countries(settings), account=countries)
    if why is not None:
        return refuse(COUNTRY_NOT_ALLOWED, why)

    throttles = await destination_throttles(
        session, account_id=account_id, country=country, prefix=prefix, now=now
    )
    why = await throttle_refusal(session, throttles.active, now=now)
    if why is not None:
        return refuse(DESTINATION_THROTTLED, why)

    for kind, value in reversed(_targets(country, prefix)):  # the prefix first: pumping targets ranges
        anomaly = await _anomaly(
            session,
            settings,
            account_id=account_id,
            kind=kind,
            value=value,
            now=now,
            lifted_at=throttles.lifted_at.get((kind, value)),
            counted=None if recent is None else recent.get((kind, value)),
        )
        if anomaly is not None:
            reason, detail = anomaly
            throttle = _new_throttle(
                record,
                settings,
                account_id=account_id,
                kind=kind,
                value=value,
                reason=reason,
                detail=detail,
                now=now,
            )
            return refuse(
                DESTINATION_THROTTLED,
                f"Verification codes to {_throttle_label(throttle)} are paused until "
                f"{isoformat(throttle.until)}: {reason.replace('_', ' ')} ({detail}).",
            )
    return None
