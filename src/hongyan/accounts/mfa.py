"""Two-step sign-in with TOTP (RFC 6238: 30 s steps, 6 digits, one step of clock drift either way) and
single-use recovery codes.

The shared secret is sealed at rest (User.mfa_secret is an AES-GCM column). A code is accepted once: the
time step it matched is stored in mfa_last_step and only later steps pass (RFC 6238 §5.2), with a
conditional UPDATE so two requests racing with the same code cannot both win. Recovery codes are shown
once at enrolment and kept as SHA-256 hashes (they are random, so a plain hash is enough).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

import pyotp
import segno
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account, Membership, User
from hongyan.accounts.service import check_password
from hongyan.audit.service import Actor, record
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, Forbidden, InvalidRequest, NotFound

ISSUER = "Hongyan"
STEP_S = 30
VALID_WINDOW = 1  # steps of drift accepted each way
RECOVERY_CODE_COUNT = 10
ACCOUNT_ADMIN_ROLES = ("owner", "admin")


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What the user needs to add the account to an authenticator app: scan the QR code or type the secret."""

    secret: str
    uri: str
    qr_data_uri: str  # an SVG as a data: URI (the console's CSP allows img-src data:)


class HasEmail(Protocol):
    @property
    def email(self) -> str: ...


def start_enrolment(user: HasEmail) -> Enrolment:
    """A new secret for `user` (a User, or the console's signed-in user); nothing is stored until confirmed."""
    return enrolment_for(pyotp.random_base32(), user.email)


def enrolment_for(secret: str, email: str) -> Enrolment:
    """The provisioning URI (Key URI Format) and its QR code for a secret, drawn locally (no web service)."""
    uri = pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=email, issuer_name=ISSUER)
    qr = segno.make(uri, error="m")
    return Enrolment(secret=secret, uri=uri, qr_data_uri=qr.svg_data_uri(scale=5, border=2, dark="#0f172a"))


def _normalize_recovery(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def _recovery_hash(code: str) -> str:
    return hashlib.sha256(_normalize_recovery(code).encode()).hexdigest()


def new_recovery_codes() -> list[str]:
    """Ten codes like `k7m2q-9xw4f` (50 random bits each)."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def matching_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step (Unix time // 30) whose TOTP equals `code`, within the drift window; else None."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    now = time.time() if now is None else now
    totp = pyotp.TOTP(secret, interval=STEP_S)
    current = int(now // STEP_S)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if hmac.compare_digest(totp.at(step * STEP_S), code):
            return step
    return None


def _code_invalid() -> InvalidRequest:
    return InvalidRequest(
        "mfa_code_invalid", "The code is not correct, or was already used. Enter the current code of your "
        "authenticator app, or one of your recovery codes.", field="code",
    )


async def _user(session: AsyncSession, user_id: str, *, for_update: bool = False) -> User:
    query = select(User).where(User.id == user_id).execution_options(populate_existing=True)
    if for_update and session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    user = await session.scalar(query)
    if user is None:
        raise NotFound("user_not_found", "No such user.", field=None)
    return user


def _actor(user: User, ip: str | None) -> Actor:
    return Actor("user", user.id, user.email, ip)


async def confirm_enrolment(
    session: AsyncSession, user_id: str, secret: str, code: str, *, account_id: str | None = None,
    ip: str | None = None, now: float | None = None,
) -> list[str]:
    """Turn MFA on once the first code from the app matches; the recovery codes (shown once) are returned."""
    user = await _user(session, user_id, for_update=True)
    if user.mfa_enabled_at is not None:
        raise Conflict("mfa_already_enabled", "Two-step verification is already on; turn it off first.", field="code")
    try:
        step = matching_step(secret, code, now=now)
    except Exception:  # a secret that is not base32 (tampered form)
        step = None
    if step is None:
        raise _code_invalid()
    codes = new_recovery_codes()
    user.mfa_secret = secret
    user.mfa_enabled_at = utcnow()
    user.mfa_last_step = step
    user.mfa_recovery_hashes = [_recovery_hash(c) for c in codes]
    await session.flush()
    await record(session, actor=_actor(user, ip), action="mfa.enabled", account_id=account_id,
                 target_type="user", target_id=user.id)
    return codes


async def verify(
    session: AsyncSession, user_id: str, code: str, *, account_id: str | None = None, ip: str | None = None,
    now: float | None = None,
) -> str:
    """Accept a current TOTP code (once) or an unused recovery code (then spent); "totp" or "recovery".
    Anything else: mfa_code_invalid."""
    user = await _user(session, user_id, for_update=True)
    if user.mfa_enabled_at is None or not user.mfa_secret:
        raise _code_invalid()
    step = matching_step(user.mfa_secret, code, now=now)
    if step is not None:
        result = await session.execute(
            update(User)
            .where(User.id == user.id, or_(User.mfa_last_step.is_(None), User.mfa_last_step < step))
            .values(mfa_last_step=step)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]  # this code (or a later one) was used already
            raise _code_invalid()
        return "totp"
    digest = _recovery_hash(code)
    if _normalize_recovery(code) and digest in (user.mfa_recovery_hashes or []):
        user.mfa_recovery_hashes = [h for h in user.mfa_recovery_hashes if h != digest]
        await session.flush()
        await record(session, actor=_actor(user, ip), action="mfa.recovery_code_used", account_id=account_id,
                     target_type="user", target_id=user.id,
                     after={"recovery_codes_left": len(user.mfa_recovery_hashes)})
        return "recovery"
    raise _code_invalid()


async def disable(
    session: AsyncSession, user_id: str, password: str, *, account_id: str | None = None, ip: str | None = None
) -> None:
    user = await _user(session, user_id, for_update=True)
    if not check_password(user.password_hash, password):
        raise InvalidRequest("password_incorrect", "The current password is not correct.", field="password")
    if user.mfa_enabled_at is None:
        return
    user.mfa_secret = None
    user.mfa_enabled_at = None
    user.mfa_last_step = None
    user.mfa_recovery_hashes = []
    await session.flush()
    await record(session, actor=_actor(user, ip), action="mfa.disabled", account_id=account_id,
                 target_type="user", target_id=user.id)


async def set_require_mfa(
    session: AsyncSession, *, account_id: str, user_id: str, enabled: bool, ip: str | None = None
) -> None:
    """Owners and admins may require MFA of every member; they must have it on themselves first (or they
    would lock themselves out of the page that turns it on)."""
    user = await _user(session, user_id)
    role = await session.scalar(
        select(Membership.role).where(Membership.account_id == account_id, Membership.user_id == user_id)
    )
    if role not in ACCOUNT_ADMIN_ROLES:
        raise Forbidden("forbidden", "Only owners and admins can change this setting.", field="require_mfa")
    if enabled and user.mfa_enabled_at is None:
        raise InvalidRequest(
            "mfa_not_enabled", "Turn on two-step verification for yourself first.", field="require_mfa"
        )
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    if account.require_mfa == enabled:
        return
    before = account.require_mfa
    account.require_mfa = enabled
    await session.flush()
    await record(session, actor=_actor(user, ip), action="account.require_mfa_changed", account_id=account_id,
                 target_type="account", target_id=account_id, before={"require_mfa": before},
                 after={"require_mfa": enabled})
