"""Around a send: who is calling (`Caller`), the limits and the pumping protection checked inside the send
transaction (`send_checks`; refusals recorded as `VerifyBlock` rows in a transaction of their own before the
error is raised), and the submit call itself (`submit_code`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
from hongyan.messaging.submit import Preloaded, SubmitResult, submit_batch
from hongyan.verify import limits, pumping
from hongyan.verify.models import VerifyBlock
from hongyan.verify.windows import read_windows


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


async def _serialize_number(session: AsyncSession, account_id: str, to_bidx: str) -> None:
    """PostgreSQL: one sender per (account, number) at a time, so two concurrent starts cannot both pass the
    per-number limits (SQLite write transactions are already serialized: BEGIN IMMEDIATE)."""
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"verify:{account_id}:{to_bidx}"}
        )


class Refused(Exception):
    """A send refused by `send_checks` inside the send transaction (which is rolled back): the error to
    answer and the rows to keep (the VerifyBlock, a new VerifyThrottle), written by `submit_code`."""

    def __init__(self, error: HongyanError, records: list[Any]) -> None:
        super().__init__(error.code)
        self.error = error
        self.records = records


def send_checks(
    settings: Settings,
    caller: Caller,
    lim: limits.EffectiveLimits,
    *,
    e164: str,
    country: str | None,
    countries: frozenset[str] | None,
    starting: bool,
) -> Callable[[AsyncSession, SubmitResult], Awaitable[None]]:
    """The limits and the pumping protection as the first step of the send transaction (submit_batch's
    `before_hold`): the per-number lock, then one statement for every window count (verify.windows), one
    for the destination's throttles, the cached 24-hour aggregates. Counting under the per-number lock, in
    the transaction that inserts the message, means two concurrent sends to one number cannot both pass the
    last free slot. A refusal raises `Refused`."""
    to_bidx = blind_index(e164) or ""
    prefix = pumping.prefix_of(e164)

    def block(code: str, now: datetime) -> VerifyBlock:
        return VerifyBlock(
            account_id=caller.account_id,
            to_bidx=to_bidx,
            to_country=country,
            to_prefix=prefix,
            client_ip=caller.client_ip,
            api_key_id=caller.api_key_id,
            code=code,
            created_at=now,
        )

    async def check(session: AsyncSession, _result: SubmitResult) -> None:
        await _serialize_number(session, caller.account_id, to_bidx)
        now = utcnow()
        counts = await read_windows(
            session,
            lim,
            account_id=caller.account_id,
            to_bidx=to_bidx,
            client_ip=caller.client_ip if starting else None,
            api_key_id=caller.api_key_id if starting else None,
            prefix=prefix,
            country=country,
            velocity_window_s=settings.verify_velocity_window_s,
            now=now,
        )
        try:
            limits.check_number_sends(lim, counts.number_sends, now)
            if starting:
                limits.check_caller_starts(
                    lim, caller.client_ip, counts.ip_starts, caller.api_key_id, counts.key_starts, now
                )
        except HongyanError as exc:
            raise Refused(exc, [block(exc.code, now)]) from None
        records: list[Any] = []
        refused = await pumping.assess(
            session,
            settings,
            account_id=caller.account_id,
            e164=e164,
            country=country,
            prefix=prefix,
            client_ip=caller.client_ip,
            api_key_id=caller.api_key_id,
            countries=countries,
            recent=counts.recent,
            record=records.append,
            now=now,
        )
        if refused is not None:
            code, message = refused
            error = HongyanError(code, message, field="to", status_code=pumping.STATUS_BY_CODE.get(code, 429))
            raise Refused(error, records)

    return check


async def submit_code(
    db: Database,
    settings: Settings,
    caller: Caller,
    request: Any,
    store: Any,
    *,
    checks: Callable[[AsyncSession, SubmitResult], Awaitable[None]],
    preloaded: Preloaded | None,
    publisher: Any = None,
) -> None:
    """One send: `checks` first in the transaction, then funds, message, outbox, `store` (the verification
    row). A refusal by the checks is recorded in a transaction of its own and raised. `publisher`: the
    API's outbox relay, so the code is published right after the commit (submit_batch)."""
    try:
        await submit_batch(
            db,
            settings,
            request,
            account_id=caller.account_id,
            source="verify",
            actor=caller.api_key_id or "verify",
            before_hold=checks,
            after_insert=store,
            preloaded=preloaded,
            publisher=publisher,
        )
    except Refused as refused:
        async with db.write() as session:
            session.add_all(refused.records)
        raise refused.error from None
