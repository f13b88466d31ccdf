"""The verification (OTP) service: start, resend, cancel, get, list (checking a code: verify.check).

A code is sent through the one submit path (`submit_batch`, message type "verification": the fastest lane,
the compliance gate, prices and funds like any message). The verification row is written in the submit's
own transaction (`after_insert`), so a verification exists iff its message was accepted. Before a send:
the limits (verify.limits) and the pumping protection (verify.pumping.assess); a refusal is recorded as a
`VerifyBlock` row (committed) and answered 429 (or 403 for a country the account may not reach).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account, ApiKey
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import Conflict, HongyanError, NotFound, Unprocessable
from hongyan.db.engine import Database
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.messaging.submit import SubmitResult, submit_batch
from hongyan.verify import codes, limits, pumping
from hongyan.verify.events import effective_status
from hongyan.verify.models import VERIFICATION_STATUSES, Verification, VerifyBlock
from hongyan.verify.texts import LOCALES, VerifyText, default_locale, verify_template

CHANNELS = ("sms",)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who starts or resends: the account, its API key (None from the console), the client IP the per-IP
    limit counts (the `device_ip` given, else the connection's), and whether the key is a test key."""

    account_id: str
    api_key_id: str | None = None
    client_ip: str | None = None
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class Sent:
    verification: Verification
    sandbox_code: str | None  # the code, for verifications started with a test key only


async def is_test_key(db: Database, key_id: str | None) -> bool:
    if key_id is None:
        return False
    async with db.read() as session:
        return bool(await session.scalar(select(ApiKey.is_test).where(ApiKey.id == key_id)))


def state_error(v: Verification, now: datetime) -> HongyanError | None:
    """Why nothing more can be done with `v` (checked, resent, canceled), or None while it is pending."""
    status = effective_status(v, now)
    if status == "approved":
        return Conflict("verification_already_approved", f"{v.id} was already approved; a verification is "
                        "approved once.", field="id")
    if status == "failed":
        return Conflict("verification_failed", f"{v.id} failed after {v.attempts} wrong codes; start a new "
                        "verification.", field="id")
    if status == "canceled":
        return Conflict("verification_canceled", f"{v.id} was canceled.", field="id")
    if status == "expired":
        return Conflict("verification_expired", f"The code of {v.id} has expired; resend it or start a new "
                        "verification.", field="id")
    return None


async def load(session: AsyncSession, *, account_id: str, verification_id: str) -> Verification:
    row = await session.scalar(select(Verification).where(Verification.id == verification_id,
                                                          Verification.account_id == account_id))
    if row is None:
        raise NotFound("verification_not_found", "No such verification in this account.", field="id")
    return row


async def mark_expired(session: AsyncSession, verification_id: str, now: datetime) -> None:
    await session.execute(update(Verification).where(
        Verification.id == verification_id, Verification.status == "pending", Verification.expires_at <= now,
    ).values(status="expired", updated_at=now))


async def _record_block(db: Database, caller: Caller, e164: str | None, country: str | None, code: str) -> None:
    async with db.write() as session:
        session.add(VerifyBlock(account_id=caller.account_id, to_bidx=blind_index(e164) if e164 else None,
                                to_country=country, to_prefix=pumping.prefix_of(e164) if e164 else None,
                                client_ip=caller.client_ip, api_key_id=caller.api_key_id, code=code,
                                created_at=utcnow()))


async def _screen(db: Database, settings: Settings, caller: Caller, lim: limits.EffectiveLimits, *, e164: str,
                  country: str | None, starting: bool) -> None:
    """Limits, then pumping protection, in one write transaction that keeps what it records (blocks,
    throttles) even when the answer is a refusal."""
    refusal: HongyanError | None = None
    now = utcnow()
    async with db.write() as session:
        try:
            await limits.check_number(session, lim, account_id=caller.account_id, to_bidx=blind_index(e164) or "",
                                      now=now)
            if starting:
                await limits.check_caller(session, lim, account_id=caller.account_id, client_ip=caller.client_ip,
                                          api_key_id=caller.api_key_id, now=now)
        except HongyanError as exc:
            refusal = exc
            session.add(VerifyBlock(account_id=caller.account_id, to_bidx=blind_index(e164), to_country=country,
                                    to_prefix=pumping.prefix_of(e164), client_ip=caller.client_ip,
                                    api_key_id=caller.api_key_id, code=exc.code, created_at=now))
        if refusal is None:
            refused = await pumping.assess(session, settings, account_id=caller.account_id, e164=e164,
                                           country=country, prefix=pumping.prefix_of(e164), client_ip=caller.client_ip)
            if refused is not None:
                code, message = refused
                refusal = HongyanError(code, message, field="to", status_code=pumping.STATUS_BY_CODE.get(code, 429))
    if refusal is not None:
        raise refusal


async def _serialize_number(session: AsyncSession, account_id: str, to_bidx: str) -> None:
    """PostgreSQL: one sender per (account, number) at a time, so two concurrent starts cannot both pass the
    per-number limits (SQLite write transactions are already serialized: BEGIN IMMEDIATE)."""
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"verify:{account_id}:{to_bidx}"})


async def _recheck_number(session: AsyncSession, lim: limits.EffectiveLimits, caller: Caller, to_bidx: str,
                          result: SubmitResult, now: datetime) -> None:
    await _serialize_number(session, caller.account_id, to_bidx)
    await limits.check_number(session, lim, account_id=caller.account_id, to_bidx=to_bidx, now=now,
                              exclude_message_id=result.accepted[0].id)


async def _account_choices(session: AsyncSession, settings: Settings, account_id: str) -> tuple[Account, limits.EffectiveLimits]:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    return account, limits.effective(settings, limits.VerifySettings.from_account(account))


async def start(db: Database, settings: Settings, caller: Caller, *, to: str, template_id: str | None = None,
                code_length: int | None = None, ttl_s: int | None = None, channel: str = "sms",
                locale: str | None = None) -> Sent:
    """Send a new code to `to`; returns the pending verification (and the code for test keys only)."""
    if channel not in CHANNELS:
        raise Unprocessable("channel_not_supported", f"Channel '{channel}' is not supported; use \"sms\".",
                            field="channel")
    if locale is not None and locale not in LOCALES:
        raise Unprocessable("invalid_value", f"locale is one of {', '.join(LOCALES)}.", field="locale")
    async with db.read() as session:
        account, lim = await _account_choices(session, settings, caller.account_id)
        length = code_length or lim.code_length
        ttl = ttl_s or lim.ttl_s
        if not codes.MIN_LENGTH <= length <= codes.MAX_LENGTH:
            raise Unprocessable("value_out_of_range", "code_length is 4 to 10.", field="code_length")
        if not limits.TTL_RANGE[0] <= ttl <= limits.TTL_RANGE[1]:
            raise Unprocessable("value_out_of_range", "ttl is 30 to 3600 seconds.", field="ttl")
        try:
            number = normalize(to, account.default_region or settings.default_region)
        except NumberProblem as problem:
            raise Unprocessable(problem.code, problem.message, field="to") from None
        chosen = template_id or lim.template_id
        template = None
        if chosen:
            template = await verify_template(session, account_id=caller.account_id, template_id=chosen,
                                             code_length=length, field="template" if template_id else "template_id")
    e164 = number.e164
    await _screen(db, settings, caller, lim, e164=e164, country=number.region, starting=True)

    verification_id = ids.new_id("ver")
    code = codes.generate_code(length)
    secret = settings.effective_secret_key()
    chosen_locale = locale or default_locale(account.default_region)
    to_bidx = blind_index(e164) or ""

    async def store(session: AsyncSession, result: SubmitResult) -> None:
        now = result.created_at or utcnow()
        await _recheck_number(session, lim, caller, to_bidx, result, now)
        row = {"id": verification_id, "account_id": caller.account_id, "to_number": e164, "to_bidx": to_bidx,
               "to_country": number.region, "to_prefix": pumping.prefix_of(e164), "channel": channel,
               "locale": chosen_locale, "template_id": template.id if template else None,
               "code_hash": codes.code_hash(secret, verification_id, code), "code_length": length, "ttl_s": ttl,
               "expires_at": now + timedelta(seconds=ttl), "status": "pending", "attempts": 0,
               "max_attempts": lim.max_attempts, "sends": 1, "last_sent_at": now,
               "message_id": result.accepted[0].id, "api_key_id": caller.api_key_id, "client_ip": caller.client_ip,
               "sandbox": caller.sandbox, "created_at": now, "updated_at": now, "approved_at": None}
        await session.execute(insert(Verification), [row])

    request = VerifyText(chosen_locale, template).request(e164, code, ttl)
    await _submit(db, settings, caller, request, store, e164=e164, country=number.region)
    async with db.read() as session:
        v = await load(session, account_id=caller.account_id, verification_id=verification_id)
    return Sent(v, code if caller.sandbox else None)


async def _submit(db: Database, settings: Settings, caller: Caller, request: Any, store: Any, *, e164: str,
                  country: str | None) -> None:
    try:
        await submit_batch(db, settings, request, account_id=caller.account_id, source="verify",
                           actor=caller.api_key_id or "verify", after_insert=store)
    except HongyanError as exc:
        if exc.code in limits.RATE_LIMIT_CODES:  # lost the race to a concurrent send: record it like the others
            await _record_block(db, caller, e164, country, exc.code)
        raise


async def resend(db: Database, settings: Settings, caller: Caller, *, verification_id: str) -> Sent:
    """A new code for a pending (or expired) verification, after the cool-down; the old code stops working
    unless the account keeps the previous one. Attempts are not reset: wrong codes count across resends."""
    now = utcnow()
    async with db.read() as session:
        v = await load(session, account_id=caller.account_id, verification_id=verification_id)
        _account, lim = await _account_choices(session, settings, caller.account_id)
    why = state_error(v, now)
    if why is not None and why.code != "verification_expired":
        raise why
    wait = (v.last_sent_at + timedelta(seconds=lim.resend_cooldown_s) - now).total_seconds()
    if wait > 0:
        await _record_block(db, caller, v.to_number, v.to_country, "verify_resend_too_soon")
        raise limits.rate_limited("verify_resend_too_soon", f"The last code was sent less than "
                                  f"{lim.resend_cooldown_s} seconds ago; resend after the cool-down.", wait,
                                  field="id", limit=1, window=f"{lim.resend_cooldown_s}s")
    await _screen(db, settings, caller, lim, e164=v.to_number, country=v.to_country, starting=False)
    template = None
    if v.template_id:
        async with db.read() as session:
            template = await verify_template(session, account_id=caller.account_id, template_id=v.template_id,
                                             code_length=v.code_length)
    code = codes.generate_code(v.code_length)
    new_hash = codes.code_hash(settings.effective_secret_key(), v.id, code)
    if lim.keep_previous_code and v.status == "pending" and v.expires_at > now:
        new_hash = codes.keep_previous(new_hash, v.code_hash)

    async def store(session: AsyncSession, result: SubmitResult) -> None:
        sent_at = result.created_at or utcnow()
        await _recheck_number(session, lim, caller, v.to_bidx, result, sent_at)
        changed = await session.execute(update(Verification).where(
            Verification.id == v.id, Verification.sends == v.sends, Verification.status.in_(("pending", "expired")),
        ).values(code_hash=new_hash, sends=Verification.sends + 1, last_sent_at=sent_at, status="pending",
                 message_id=result.accepted[0].id, expires_at=sent_at + timedelta(seconds=v.ttl_s),
                 updated_at=sent_at))
        if changed.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent resend or check won
            raise limits.rate_limited("verify_resend_too_soon", "Another code for this verification was just "
                                      "sent.", lim.resend_cooldown_s, field="id", limit=1,
                                      window=f"{lim.resend_cooldown_s}s")

    request = VerifyText(v.locale if v.locale in LOCALES else "zh-CN", template).request(v.to_number, code, v.ttl_s)
    await _submit(db, settings, caller, request, store, e164=v.to_number, country=v.to_country)
    async with db.read() as session:
        fresh = await load(session, account_id=caller.account_id, verification_id=v.id)
    return Sent(fresh, code if caller.sandbox else None)


async def cancel(db: Database, *, account_id: str, verification_id: str) -> Verification:
    now = utcnow()
    async with db.write() as session:
        changed = await session.execute(update(Verification).where(
            Verification.id == verification_id, Verification.account_id == account_id,
            Verification.status == "pending", Verification.expires_at > now,
        ).values(status="canceled", updated_at=now))
        await mark_expired(session, verification_id, now)
    async with db.read() as session:
        v = await load(session, account_id=account_id, verification_id=verification_id)
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        why = state_error(v, now)
        if why is not None:
            raise why
    return v


async def get(db: Database, *, account_id: str, verification_id: str) -> Verification:
    async with db.read() as session:
        return await load(session, account_id=account_id, verification_id=verification_id)


async def list_verifications(session: AsyncSession, settings: Settings, *, account_id: str, limit: int,
                             before: str | None = None, status: str | None = None, to: str | None = None,
                             region: str | None = None) -> list[Verification]:
    """Newest first, `limit` rows before the cursor id; `status` as shown (an overdue pending one is expired),
    `to` an exact number in any common format."""
    now = utcnow()
    query = select(Verification).where(Verification.account_id == account_id)
    if status is not None:
        if status not in VERIFICATION_STATUSES:
            raise Unprocessable("invalid_value", f"status is one of {', '.join(VERIFICATION_STATUSES)}.",
                                field="status")
        if status == "pending":
            query = query.where(Verification.status == "pending", Verification.expires_at > now)
        elif status == "expired":
            query = query.where(or_(Verification.status == "expired",
                                    (Verification.status == "pending") & (Verification.expires_at <= now)))
        else:
            query = query.where(Verification.status == status)
    if to:
        try:
            e164 = normalize(to, region or settings.default_region).e164
        except NumberProblem as problem:
            raise Unprocessable(problem.code, problem.message, field="to") from None
        query = query.where(Verification.to_bidx == blind_index(e164))
    if before:
        query = query.where(Verification.id < before)
    return list((await session.scalars(query.order_by(Verification.id.desc()).limit(limit))).all())
