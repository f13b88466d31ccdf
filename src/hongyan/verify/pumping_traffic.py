"""The operator's side of pumping protection: blocked verification traffic by code/country/prefix, conversion by
destination, and destination throttles set or lifted by a person (audited). The API routes
(verify/pumping_routes.py) and the console page (console/verify_blocked.py) both call these functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.audit.service import Actor, record
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import Conflict, NotFound, Unprocessable
from hongyan.verify.models import Verification, VerifyBlock, VerifyThrottle
from hongyan.verify.pumping_rules import country_code_of

MAX_THROTTLE_MINUTES = 30 * 24 * 60  # a manual throttle lasts at most 30 days: renew it if it must stay
_PREFIX = re.compile(r"\+[1-9]\d{0,14}")


# -- blocked traffic ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlockGroup:
    code: str
    country: str | None
    prefix: str | None
    count: int
    last_at: datetime


async def blocked_groups(
    session: AsyncSession, *, since: datetime, account_id: str | None = None, limit: int = 100
) -> list[BlockGroup]:
    """Refused verification requests since `since`, grouped by error code, country and prefix, most first
    (read through ix_verify_block_time)."""
    count = func.count().label("n")
    query = (
        select(
            VerifyBlock.code,
            VerifyBlock.to_country,
            VerifyBlock.to_prefix,
            count,
            func.max(VerifyBlock.created_at),
        )
        .where(VerifyBlock.created_at >= since)
        .group_by(VerifyBlock.code, VerifyBlock.to_country, VerifyBlock.to_prefix)
        .order_by(count.desc(), VerifyBlock.code, VerifyBlock.to_prefix)
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(VerifyBlock.account_id == account_id)
    return [
        BlockGroup(code, country, prefix, int(n), last)
        for code, country, prefix, n, last in await session.execute(query)
    ]


async def latest_blocks(
    session: AsyncSession, *, since: datetime, account_id: str | None = None, limit: int = 50
) -> list[VerifyBlock]:
    query = (
        select(VerifyBlock)
        .where(VerifyBlock.created_at >= since)
        .order_by(VerifyBlock.id.desc())
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(VerifyBlock.account_id == account_id)
    return list((await session.execute(query)).scalars())


def block_json(block: VerifyBlock, *, operator: bool) -> dict[str, Any]:
    """A refused attempt; the number itself is never stored (only its blind index), so it is never shown."""
    out: dict[str, Any] = {
        "id": block.id,
        "code": block.code,
        "country": block.to_country,
        "prefix": block.to_prefix,
        "client_ip": block.client_ip,
        "api_key_id": block.api_key_id,
        "created_at": isoformat(block.created_at),
    }
    if operator:
        out["account_id"] = block.account_id
    return out


def group_json(group: BlockGroup) -> dict[str, Any]:
    return {
        "code": group.code,
        "country": group.country,
        "prefix": group.prefix,
        "count": group.count,
        "last_at": isoformat(group.last_at),
    }


# -- conversion by destination ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Conversion:
    """Verifications to one destination: started, judged (approved or past their lifetime) and approved."""

    destination: str
    started: int
    judged: int
    approved: int

    @property
    def rate(self) -> float | None:
        return self.approved / self.judged if self.judged else None


async def conversion_by_destination(
    session: AsyncSession, *, kind: str, since: datetime, account_id: str | None = None, limit: int = 50
) -> list[Conversion]:
    """Conversion per country or prefix since `since`, busiest first (sandbox verifications left out). An
    operator's view over all accounts reads every verification of the period: fine for a page, not a hot path."""
    now = utcnow()
    column = Verification.to_country if kind == "country" else Verification.to_prefix
    judged = or_(Verification.status != "pending", Verification.expires_at <= now)
    started = func.count().label("started")
    query = (
        select(
            column,
            started,
            func.coalesce(func.sum(case((judged, 1), else_=0)), 0),
            func.coalesce(func.sum(case((Verification.status == "approved", 1), else_=0)), 0),
        )
        .where(Verification.created_at >= since, Verification.sandbox.is_(False))
        .group_by(column)
        .order_by(started.desc(), column)
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(Verification.account_id == account_id)
    return [Conversion(dest or "?", int(s), int(j), int(a)) for dest, s, j, a in await session.execute(query)]


def conversion_json(row: Conversion) -> dict[str, Any]:
    rate = row.rate
    return {
        "destination": row.destination,
        "started": row.started,
        "judged": row.judged,
        "approved": row.approved,
        "conversion": None if rate is None else round(rate, 4),
    }


# -- throttles --------------------------------------------------------------------------------------------------
async def list_throttles(
    session: AsyncSession, *, active: bool = True, account_id: str | None = None, limit: int = 200
) -> list[VerifyThrottle]:
    """Throttles newest first; `active`: only those not lifted and not yet expired."""
    query = select(VerifyThrottle).order_by(VerifyThrottle.id.desc()).limit(limit)
    if active:
        query = query.where(VerifyThrottle.lifted_at.is_(None), VerifyThrottle.until > utcnow())
    if account_id is not None:
        query = query.where(VerifyThrottle.account_id == account_id)
    return list((await session.execute(query)).scalars())


def throttle_json(throttle: VerifyThrottle) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": throttle.id,
        "account_id": throttle.account_id,
        "kind": throttle.kind,
        "value": throttle.value,
        "reason": throttle.reason,
        "detail": throttle.detail,
        "max_per_hour": throttle.max_per_hour,
        "until": isoformat(throttle.until),
        "active": throttle.lifted_at is None and throttle.until > now,
        "created_by": throttle.created_by,
        "created_at": isoformat(throttle.created_at),
        "lifted_at": isoformat(throttle.lifted_at),
    }


def checked_destination(kind: str, value: str) -> str:
    """A country (ISO code) or a prefix ("+" and digits starting with a country code), normalized."""
    value = value.strip()
    if kind == "country":
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise Unprocessable(
                "verify_throttle_invalid", f"'{value}' is not an ISO country code.", field="value"
            )
        return value
    if kind != "prefix":
        raise Unprocessable("verify_throttle_invalid", "kind is 'country' or 'prefix'.", field="kind")
    if not _PREFIX.fullmatch(value) or country_code_of(value) is None:
        raise Unprocessable(
            "verify_throttle_invalid",
            f"'{value}' is not a number prefix: '+', a country code and up to 15 digits (e.g. +23480).",
            field="value",
        )
    return value


async def create_throttle(
    session: AsyncSession,
    *,
    kind: str,
    value: str,
    account_id: str | None,
    max_per_hour: int | None,
    minutes: int,
    note: str | None,
    actor: Actor,
) -> VerifyThrottle:
    """An operator's throttle: blocked outright (max_per_hour None) or capped per hour, for `minutes`."""
    value = checked_destination(kind, value)
    if not 1 <= minutes <= MAX_THROTTLE_MINUTES:
        raise Unprocessable(
            "verify_throttle_invalid", f"minutes is 1 to {MAX_THROTTLE_MINUTES} (30 days).", field="minutes"
        )
    if max_per_hour is not None and max_per_hour < 1:
        raise Unprocessable(
            "verify_throttle_invalid",
            "max_per_hour is at least 1 (omit it to block outright).",
            field="max_per_hour",
        )
    if account_id is not None and await session.get(Account, account_id) is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    now = utcnow()
    throttle = VerifyThrottle(
        account_id=account_id,
        kind=kind,
        value=value,
        reason="operator",
        detail=(note or "").strip()[:200] or None,
        max_per_hour=max_per_hour,
        until=now + timedelta(minutes=minutes),
        created_by=f"{actor.type}:{actor.id}" if actor.id else actor.type,
        created_at=now,
    )
    session.add(throttle)
    await session.flush()
    await record(
        session,
        actor=actor,
        action="verify.throttle_created",
        account_id=account_id,
        target_type="verify_throttle",
        target_id=str(throttle.id),
        after={k: v for k, v in throttle_json(throttle).items() if k not in ("id", "active", "lifted_at")},
    )
    return throttle


async def lift_throttle(session: AsyncSession, throttle_id: int, *, actor: Actor) -> VerifyThrottle:
    """End a throttle now (automatic or manual); verifications to the destination resume at once."""
    throttle = await session.get(VerifyThrottle, throttle_id, with_for_update=True)
    if throttle is None:
        raise NotFound("verify_throttle_not_found", "No such throttle.", field="id")
    now = utcnow()
    if throttle.lifted_at is not None or throttle.until <= now:
        raise Conflict("verify_throttle_not_active", "This throttle has already ended.", field="id")
    throttle.lifted_at = now
    await record(
        session,
        actor=actor,
        action="verify.throttle_lifted",
        account_id=throttle.account_id,
        target_type="verify_throttle",
        target_id=str(throttle.id),
        before={
            "kind": throttle.kind,
            "value": throttle.value,
            "reason": throttle.reason,
            "until": isoformat(throttle.until),
        },
        after={"lifted_at": isoformat(now)},
    )
    return throttle
