"""Before and around a send: who is calling (`Caller`), the limits and the pumping protection (`screen`,
refusals recorded as `VerifyBlock` rows and committed before the error is raised), the per-number re-check
inside the submit transaction, and the submit call itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from hongyan.messaging.submit import SubmitResult, submit_batch
from hongyan.verify import limits, pumping
from hongyan.verify.models import VerifyBlock


@dataclass(frozen=True, slots=True)
class Caller:
    """Who starts or resends: the account, its API key (None from the console), the client IP the per-IP
    limit counts (the `device_ip` given, else the connection's), and whether the key is a test key."""

    account_id: str
    api_key_id: str | None = None
    client_ip: str | None = None
    sandbox: bool = False


async def record_block(
    db: Database, caller: Caller, e164: str | None, country: str | None, code: str
) -> None:
    async with db.write() as session:
        session.add(
            VerifyBlock(
                account_id=caller.account_id,
                to_bidx=blind_index(e164) if e164 else None,
                to_country=country,
                to_prefix=pumping.prefix_of(e164) if e164 else None,
                client_ip=caller.client_ip,
                api_key_id=caller.api_key_id,
                code=code,
                created_at=utcnow(),
            )
        )


async def screen(
    db: Database,
    settings: Settings,
    caller: Caller,
    lim: limits.EffectiveLimits,
    *,
    e164: str,
    country: str | None,
    starting: bool,
) -> None:
    """Limits, then pumping protection, in one write transaction that keeps what it records (blocks,
    throttles) even when the answer is a refusal."""
    refusal: HongyanError | None = None
    now = utcnow()
    async with db.write() as session:
        try:
            await limits.check_number(
                session, lim, account_id=caller.account_id, to_bidx=blind_index(e164) or "", now=now
            )
            if starting:
                await limits.check_caller(
                    session,
                    lim,
                    account_id=caller.account_id,
                    client_ip=caller.client_ip,
                    api_key_id=caller.api_key_id,
                    now=now,
                )
        except HongyanError as exc:
            refusal = exc
            session.add(
                VerifyBlock(
                    account_id=caller.account_id,
                    to_bidx=blind_index(e164),
                    to_country=country,
                    to_prefix=pumping.prefix_of(e164),
                    client_ip=caller.client_ip,
                    api_key_id=caller.api_key_id,
                    code=exc.code,
                    created_at=now,
                )
            )
        if refusal is None:
            refused = await pumping.assess(
                session,
                settings,
                account_id=caller.account_id,
                e164=e164,
                country=country,
                prefix=pumping.prefix_of(e164),
                client_ip=caller.client_ip,
                api_key_id=caller.api_key_id,
            )
            if refused is not None:
                code, message = refused
                refusal = HongyanError(
                    code, message, field="to", status_code=pumping.STATUS_BY_CODE.get(code, 429)
                )
    if refusal is not None:
        raise refusal


async def _serialize_number(session: AsyncSession, account_id: str, to_bidx: str) -> None:
    """PostgreSQL: one sender per (account, number) at a time, so two concurrent starts cannot both pass the
    per-number limits (SQLite write transactions are already serialized: BEGIN IMMEDIATE)."""
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"verify:{account_id}:{to_bidx}"}
        )


async def recheck_number(
    session: AsyncSession,
    lim: limits.EffectiveLimits,
    caller: Caller,
    to_bidx: str,
    result: SubmitResult,
    now: datetime,
) -> None:
    await _serialize_number(session, caller.account_id, to_bidx)
    await limits.check_number(
        session,
        lim,
        account_id=caller.account_id,
        to_bidx=to_bidx,
        now=now,
        exclude_message_id=result.accepted[0].id,
    )


async def submit_code(
    db: Database,
    settings: Settings,
    caller: Caller,
    request: Any,
    store: Any,
    *,
    e164: str,
    country: str | None,
) -> None:
    try:
        await submit_batch(
            db,
            settings,
            request,
            account_id=caller.account_id,
            source="verify",
            actor=caller.api_key_id or "verify",
            after_insert=store,
        )
    except HongyanError as exc:
        if (
            exc.code in limits.RATE_LIMIT_CODES
        ):  # lost the race to a concurrent send: record it like the others
            await record_block(db, caller, e164, country, exc.code)
        raise
