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

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.config import Settings
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.crypto import blind_index
from hongyan.verify.models import Verification, VerifyBlock, VerifyThrottle

COUNTRY_NOT_ALLOWED = "verify_country_not_allowed"  # 403
DESTINATION_THROTTLED = "verify_destination_throttled"  # 429
STATUS_BY_CODE = {COUNTRY_NOT_ALLOWED: 403, DESTINATION_THROTTLED: 429}

# National digits kept after the country code in a prefix. Three is the block a carrier (or a premium
# range) is allocated in most numbering plans: the area code in NANP (+1 415), the mobile network code in
# China (+86 138) and Nigeria (+234 803). Countries listed here use another length.
PREFIX_NATIONAL_DIGITS: dict[int, int] = {}
DEFAULT_PREFIX_NATIONAL_DIGITS = 3
# A country spans many prefixes; its cold-start minimum is this many times the prefix minimum
COUNTRY_MIN_FACTOR = 5
DAY_S = 86_400
STATS_CACHE_S = 30.0  # the 24-hour aggregate (baseline and conversion) is re-read at most this often


# -- pure rules ---------------------------------------------------------------------------------------
def country_code_of(e164: str) -> int | None:
    """The ITU country calling code of an E.164 number (codes are prefix-free: 1 to 3 digits)."""
    digits = e164.lstrip("+")
    for length in (1, 2, 3):
        code = digits[:length]
        if code.isdigit() and int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return int(code)
    return None


def prefix_of(e164: str) -> str:
    """`+8613800138000` → `+86138`: the country code and the first national digits (3 by default, see
    PREFIX_NATIONAL_DIGITS), never more than leaves 4 subscriber digits. Velocity is counted per prefix."""
    digits = "".join(ch for ch in e164 if ch.isdigit())
    code = country_code_of(e164)
    if code is None:
        return "+" + digits[:4]
    national = digits[len(str(code)) :]
    keep = min(PREFIX_NATIONAL_DIGITS.get(code, DEFAULT_PREFIX_NATIONAL_DIGITS), max(len(national) - 4, 0))
    return f"+{code}{national[:keep]}"


def velocity_threshold(*, baseline_24h: int, window_s: int, factor: float, minimum: int) -> float:
    """Verifications in the window from which a spike is declared: `factor` × the baseline scaled to the
    window, but never below `minimum` (cold start: with no history the threshold is the minimum itself)."""
    expected = baseline_24h * window_s / DAY_S
    return max(factor * expected, float(minimum))


def is_velocity_spike(*, recent: int, baseline_24h: int, window_s: int, factor: float, minimum: int) -> bool:
    """`recent` (including the request being judged) reaches the threshold and exceeds factor × baseline."""
    expected = baseline_24h * window_s / DAY_S
    return recent >= minimum and recent > factor * expected


def is_conversion_collapse(*, judged: int, approved: int, floor: float, min_started: int) -> bool:
    """Enough judged verifications and too few approved: codes are going to numbers nobody reads."""
    return judged >= min_started and approved < floor * judged


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


_stats_cache: dict[tuple[str, str, str], tuple[float, DestinationStats]] = {}


def clear_stats_cache() -> None:
    """Forget the per-process aggregates (tests; an operator lift does not need it: throttles are read live)."""
    _stats_cache.clear()


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
    session: AsyncSession, *, account_id: str, kind: str, value: str, now: datetime, window_s: int
) -> DestinationStats:
    """The 24-hour aggregate in one indexed query, cached per process for STATS_CACHE_S (it moves slowly;
    the fast-moving recent count is read live)."""
    key = (account_id, kind, value)
    hit = _stats_cache.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    window_start = now - timedelta(seconds=window_s)
    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
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
    _stats_cache[key] = (time.monotonic() + STATS_CACHE_S, stats)
    return stats


# -- allow-list ----------------------------------------------------------------------------------------
def platform_countries(settings: Settings) -> frozenset[str]:
    """HONGYAN_VERIFY_COUNTRIES as a set of ISO codes (empty: every country)."""
    raw = settings.verify_countries
    return frozenset(c.strip().upper() for c in raw.split(",") if c.strip())


def account_countries(account: Account | None) -> frozenset[str]:
    """account.settings["verify"]["countries"] (empty or absent: every country the platform allows)."""
    verify = (account.settings or {}).get("verify") if account is not None else None
    countries = verify.get("countries") if isinstance(verify, dict) else None
    if not isinstance(countries, list):
        return frozenset()
    return frozenset(str(c).strip().upper() for c in countries if str(c).strip())


def country_refusal(country: str | None, *, platform: frozenset[str], account: frozenset[str]) -> str | None:
    """Why `country` may not receive codes, or None. The platform list bounds every account; an account's
    list narrows it further (it can never widen it)."""
    label = country or "unknown"
    if platform and (country is None or country not in platform):
        return f"Verification codes to {label} numbers are not offered on this platform."
    if account and (country is None or country not in account):
        return (
            f"Verification codes to {label} numbers are not enabled for this account "
            f"(allowed: {', '.join(sorted(account))})."
        )
    return None


# -- throttles ---------------------------------------------------------------------------------------
def _targets(country: str | None, prefix: str) -> list[tuple[str, str]]:
    return ([("country", country)] if country else []) + [("prefix", prefix)]


async def active_throttles(
    session: AsyncSession, *, account_id: str, country: str | None, prefix: str, now: datetime
) -> list[VerifyThrottle]:
    """Unlifted, unexpired throttles for the destination: platform-wide ones and this account's."""
    targets = or_(
        *(and_(VerifyThrottle.kind == k, VerifyThrottle.value == v) for k, v in _targets(country, prefix))
    )
    query = (
        select(VerifyThrottle)
        .where(
            targets,
            VerifyThrottle.until > now,
            VerifyThrottle.lifted_at.is_(None),
            or_(VerifyThrottle.account_id.is_(None), VerifyThrottle.account_id == account_id),
        )
        .order_by(VerifyThrottle.id)
    )
    return list((await session.execute(query)).scalars())


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
    session: AsyncSession,
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
    session.add(throttle)
    return throttle


# -- the check ------------------------------------------------------------------------------------------
async def _anomaly(
    session: AsyncSession, settings: Settings, *, account_id: str, kind: str, value: str, now: datetime
) -> tuple[str, str] | None:
    """(reason, detail) when the destination's velocity jumped or its conversion collapsed, else None."""
    window_s = settings.verify_velocity_window_s
    minimum = settings.verify_velocity_min * (COUNTRY_MIN_FACTOR if kind == "country" else 1)
    recent = 1 + await _recent_count(
        session,
        account_id=account_id,
        kind=kind,
        value=value,
        since=now - timedelta(seconds=window_s),
        skip_throttled_prefixes_at=now if kind == "country" else None,
    )
    stats = await destination_stats(
        session, account_id=account_id, kind=kind, value=value, now=now, window_s=window_s
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
    session: AsyncSession,
    *,
    account_id: str,
    e164: str,
    country: str | None,
    prefix: str,
    client_ip: str | None,
    code: str,
    now: datetime,
) -> None:
    session.add(
        VerifyBlock(
            account_id=account_id,
            to_bidx=blind_index(e164),
            to_country=country,
            to_prefix=prefix,
            client_ip=client_ip,
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
) -> tuple[str, str] | None:
    """Refuse `(error_code, message)` or allow (None) a verification code to `e164`, before it is sent.

    A refusal is recorded in `session` (a VerifyBlock row, and a new VerifyThrottle when an anomaly was
    just detected): the caller must COMMIT the session before turning the refusal into an error response,
    or the record and the throttle are lost. HTTP status per code: STATUS_BY_CODE (403 country, 429
    throttled). Cost per allowed request: one account read (usually in the session already), one throttle
    lookup, two indexed counts (prefix and country in the window), plus a cached 24-hour aggregate.
    """
    now = utcnow()

    def refuse(code: str, message: str) -> tuple[str, str]:
        _record_block(
            session,
            account_id=account_id,
            e164=e164,
            country=country,
            prefix=prefix,
            client_ip=client_ip,
            code=code,
            now=now,
        )
        return code, message

    account = await session.get(Account, account_id)
    why = country_refusal(country, platform=platform_countries(settings), account=account_countries(account))
    if why is not None:
        return refuse(COUNTRY_NOT_ALLOWED, why)

    throttles = await active_throttles(
        session, account_id=account_id, country=country, prefix=prefix, now=now
    )
    why = await throttle_refusal(session, throttles, now=now)
    if why is not None:
        return refuse(DESTINATION_THROTTLED, why)

    for kind, value in reversed(_targets(country, prefix)):  # the prefix first: pumping targets ranges
        anomaly = await _anomaly(session, settings, account_id=account_id, kind=kind, value=value, now=now)
        if anomaly is not None:
            reason, detail = anomaly
            throttle = _new_throttle(
                session,
                settings,
                account_id=account_id,
                kind=kind,
                value=value,
                reason=reason,
                detail=detail,
                now=now,
            )
            clear_stats_cache_for(account_id, kind, value)
            return refuse(
                DESTINATION_THROTTLED,
                f"Verification codes to {_throttle_label(throttle)} are paused until "
                f"{isoformat(throttle.until)}: {reason.replace('_', ' ')} ({detail}).",
            )
    return None


def clear_stats_cache_for(account_id: str, kind: str, value: str) -> None:
    _stats_cache.pop((account_id, kind, value), None)
