"""The verification (OTP) service: start, resend, cancel, get, list (checking a code: verify.check).

A code is sent through the one submit path (`submit_batch`, message type "verification": the fastest lane,
the compliance gate, prices and funds like any message). The verification row is written in the submit's
own transaction (`after_insert`), so a verification exists iff its message was accepted. First in that
transaction: the limits (verify.limits) and the pumping protection (verify.pumping.assess), see
verify.screening; a refusal is recorded as a `VerifyBlock` row (committed) and answered 429 (or 403 for a
country the account may not reach). The account's data comes from a short-lived cache (verify.context).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import Unprocessable
from hongyan.db import gathered
from hongyan.db.engine import Database
from hongyan.db.gathered import Gathered
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.messaging.submit import Preloaded, SubmitResult
from hongyan.verify import codes, context, limits, pumping
from hongyan.verify.context import is_test_key
from hongyan.verify.models import Verification
from hongyan.verify.records import (
    cancel,
    get,
    list_verifications,
    load,
    mark_expired,
    state_error,
)
from hongyan.verify.screening import Caller, record_block, send_checks, submit_code
from hongyan.verify.texts import LOCALES, VerifyText, default_locale, verify_template

__all__ = [
    "Caller",
    "Sent",
    "cancel",
    "get",
    "is_test_key",
    "list_verifications",
    "load",
    "mark_expired",
    "resend",
    "start",
    "state_error",
]
CHANNELS = ("sms",)


@dataclass(frozen=True, slots=True)
class Sent:
    verification: Verification
    sandbox_code: str | None  # the code, for verifications started with a test key only


async def start(
    db: Database,
    settings: Settings,
    caller: Caller,
    *,
    to: str,
    template_id: str | None = None,
    code_length: int | None = None,
    ttl_s: int | None = None,
    channel: str = "sms",
    locale: str | None = None,
    publisher: Any = None,
) -> Sent:
    """Send a new code to `to`; returns the pending verification (and the code for test keys only).

    Cost (PostgreSQL, account data cached: verify.context): one transaction — the per-number lock, one
    statement for the limit and velocity windows, one for throttles, one for the payer's packages, and one
    INSERT for the batch, message, history, claimed outbox, verification rows and the hold posted at commit
    (db.gathered) — and no read after it (the answer is the row just written)."""
    if channel not in CHANNELS:
        raise Unprocessable(
            "channel_not_supported", f"Channel '{channel}' is not supported; use \"sms\".", field="channel"
        )
    if locale is not None and locale not in LOCALES:
        raise Unprocessable("invalid_value", f"locale is one of {', '.join(LOCALES)}.", field="locale")
    ctx = await context.sender_context(db, settings, caller.account_id)
    lim = ctx.limits
    length = code_length or lim.code_length
    ttl = ttl_s or lim.ttl_s
    if not codes.MIN_LENGTH <= length <= codes.MAX_LENGTH:
        raise Unprocessable("value_out_of_range", "code_length is 4 to 10.", field="code_length")
    if not limits.TTL_RANGE[0] <= ttl <= limits.TTL_RANGE[1]:
        raise Unprocessable("value_out_of_range", "ttl is 30 to 3600 seconds.", field="ttl")
    try:
        number = normalize(to, ctx.default_region or settings.default_region)
    except NumberProblem as problem:
        raise Unprocessable(problem.code, problem.message, field="to") from None
    chosen = template_id or lim.template_id
    template = None
    preloaded = ctx.preloaded
    if chosen:
        async with db.read() as session:
            template = await verify_template(
                session,
                account_id=caller.account_id,
                template_id=chosen,
                code_length=length,
                field="template" if template_id else "template_id",
            )
        preloaded = with_template(preloaded, template)
    e164 = number.e164
    verification_id = ids.new_id("ver")
    code = codes.generate_code(length)
    secret = settings.effective_secret_key()
    chosen_locale = locale or default_locale(ctx.default_region)
    to_bidx = blind_index(e164) or ""
    stored: dict[str, Any] = {}

    async def store(session: AsyncSession, result: SubmitResult) -> None:
        now = result.created_at or utcnow()
        stored.clear()
        stored.update(
            {
                "id": verification_id,
                "account_id": caller.account_id,
                "to_number": e164,
                "to_bidx": to_bidx,
                "to_country": number.region,
                "to_prefix": pumping.prefix_of(e164),
                "channel": channel,
                "locale": chosen_locale,
                "template_id": template.id if template else None,
                "code_hash": codes.code_hash(secret, verification_id, code),
                "code_length": length,
                "ttl_s": ttl,
                "expires_at": now + timedelta(seconds=ttl),
                "status": "pending",
                "attempts": 0,
                "max_attempts": lim.max_attempts,
                "sends": 1,
                "last_sent_at": now,
                "message_id": result.accepted[0].id,
                "api_key_id": caller.api_key_id,
                "client_ip": caller.client_ip,
                "sandbox": caller.sandbox,
                "created_at": now,
                "updated_at": now,
                "approved_at": None,
            }
        )
        await gathered.insert(session, Verification.__table__, [stored])  # with the message (db.gathered)

    request = VerifyText(chosen_locale, template).request(e164, code, ttl, verification_id)
    checks = send_checks(
        settings, caller, lim, e164=e164, country=number.region, countries=ctx.countries, starting=True
    )
    await submit_code(
        db, settings, caller, request, store, checks=checks, preloaded=preloaded, publisher=publisher
    )
    return Sent(Verification(**stored), code if caller.sandbox else None)  # as committed: no read back


def with_template(preloaded: Preloaded, template: Any) -> Preloaded:
    """The cached context for a send by template: its own gate (the shared one has no template)."""
    return replace(preloaded, gate=replace(preloaded.gate, template=template, _composed={}))


async def resend(
    db: Database, settings: Settings, caller: Caller, *, verification_id: str, publisher: Any = None
) -> Sent:
    """A new code for a pending (or expired) verification, after the cool-down; the old code stops working
    unless the account keeps the previous one. Attempts are not reset: wrong codes count across resends."""
    now = utcnow()
    async with db.read() as session:
        v = await load(session, account_id=caller.account_id, verification_id=verification_id)
    ctx = await context.sender_context(db, settings, caller.account_id)
    lim = ctx.limits
    why = state_error(v, now)
    if why is not None and why.code != "verification_expired":
        raise why
    wait = (v.last_sent_at + timedelta(seconds=lim.resend_cooldown_s) - now).total_seconds()
    if wait > 0:
        await record_block(db, caller, v.to_number, v.to_country, "verify_resend_too_soon")
        raise limits.rate_limited(
            "verify_resend_too_soon",
            f"The last code was sent less than "
            f"{lim.resend_cooldown_s} seconds ago; resend after the cool-down.",
            wait,
            field="id",
            limit=1,
            window=f"{lim.resend_cooldown_s}s",
        )
    template = None
    preloaded = ctx.preloaded
    if v.template_id:
        async with db.read() as session:
            template = await verify_template(
                session, account_id=caller.account_id, template_id=v.template_id, code_length=v.code_length
            )
        preloaded = with_template(preloaded, template)
    code = codes.generate_code(v.code_length)
    new_hash = codes.code_hash(settings.effective_secret_key(), v.id, code)
    if lim.keep_previous_code and v.status == "pending" and v.expires_at > now:
        new_hash = codes.keep_previous(new_hash, v.code_hash)

    async def store(session: AsyncSession, result: SubmitResult) -> None:
        sent_at = result.created_at or utcnow()
        if (pending := Gathered.of(session)) is not None:
            await pending.flush(session)  # the new message first: the UPDATE's rowcount decides
        changed = await session.execute(
            update(Verification)
            .where(
                Verification.id == v.id,
                Verification.sends == v.sends,
                Verification.status.in_(("pending", "expired")),
            )
            .values(
                code_hash=new_hash,
                sends=Verification.sends + 1,
                last_sent_at=sent_at,
                status="pending",
                message_id=result.accepted[0].id,
                expires_at=sent_at + timedelta(seconds=v.ttl_s),
                updated_at=sent_at,
            )
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent resend or check won
            raise limits.rate_limited(
                "verify_resend_too_soon",
                "Another code for this verification was just sent.",
                lim.resend_cooldown_s,
                field="id",
                limit=1,
                window=f"{lim.resend_cooldown_s}s",
            )

    request = VerifyText(v.locale if v.locale in LOCALES else "zh-CN", template).request(
        v.to_number, code, v.ttl_s, v.id
    )
    checks = send_checks(
        settings, caller, lim, e164=v.to_number, country=v.to_country, countries=ctx.countries, starting=False
    )
    await submit_code(
        db, settings, caller, request, store, checks=checks, preloaded=preloaded, publisher=publisher
    )
    async with db.read() as session:
        fresh = await load(session, account_id=caller.account_id, verification_id=v.id)
    return Sent(fresh, code if caller.sandbox else None)
