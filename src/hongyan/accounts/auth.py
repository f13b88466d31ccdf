"""Sign-up, email verification, password reset and change, and sign-in throttling (no HTTP here).

One-time link tokens are random 32-byte strings; only their SHA-256 is stored (like API secrets), and a
conditional UPDATE marks one used, so a link works once even when clicked twice at the same moment.
Unknown, used and expired tokens all answer the same `token_invalid`.

Throttling counts failed sign-ins per email (hashed: the table must not become a list of addresses) and
per client IP, in `login_throttle` rows shared by every process. Too many failures lock the key for
HONGYAN_LOGIN_LOCKOUT_S, doubling on each repeated lockout (24 h at most); while locked even the right
password is refused (`login_locked`, 429, Retry-After).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.email import queue_email
from hongyan.accounts.models import AuthToken, LoginThrottle, Membership, User
from hongyan.accounts.passwords import check_password_policy
from hongyan.accounts.service import check_password, create_account, create_user, hash_password
from hongyan.audit.service import Actor, record
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import Forbidden, HongyanError, InvalidRequest

__all__ = [
    "check_password_policy", "register", "send_verification_email", "verify_email", "request_password_reset",
    "reset_password", "change_password", "check_login_allowed", "record_login_failure", "record_login_success",
]

VERIFY_TTL = timedelta(hours=24)
RESET_TTL = timedelta(hours=1)
MAX_LOCKOUT_S = 24 * 3600
IP_FAILURE_FACTOR = 4  # an office behind one address gets more room than a single email
FORGET_AFTER = timedelta(hours=24)  # failures and lockouts older than this no longer count


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _actor(user: User, ip: str | None) -> Actor:
    return Actor("user", user.id, user.email, ip)


# -- one-time tokens -------------------------------------------------------------------------------
async def _issue_token(session: AsyncSession, *, purpose: str, user: User, account_id: str | None, ttl: timedelta) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(AuthToken(
        id=ids.new_id("tok"), purpose=purpose, token_hash=_token_hash(token), user_id=user.id, account_id=account_id,
        email=user.email, role=None, created_by=user.id, created_at=now, expires_at=now + ttl, used_at=None,
    ))
    await session.flush()
    return token


def _token_invalid() -> InvalidRequest:
    return InvalidRequest(
        "token_invalid", "This link is not valid: it was already used, has expired or is incomplete.", field="token"
    )


async def _valid_token(session: AsyncSession, token: str, purpose: str) -> AuthToken:
    """The unused, unexpired token of this purpose (not yet consumed), or token_invalid."""
    row = await session.scalar(
        select(AuthToken).where(AuthToken.token_hash == _token_hash(token or ""), AuthToken.purpose == purpose)
    ) if token else None
    if row is None or row.used_at is not None or row.expires_at <= utcnow() or row.user_id is None:
        raise _token_invalid()
    return row


async def _consume(session: AsyncSession, row: AuthToken) -> None:
    """Mark the token used; a concurrent use of the same link loses here (rowcount 0)."""
    result = await session.execute(
        update(AuthToken).where(AuthToken.id == row.id, AuthToken.used_at.is_(None)).values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _token_invalid()


# -- registration and verification ---------------------------------------------------------------
def _verification_email(locale: str, link: str) -> tuple[str, str]:
    if locale == "en":
        return "Confirm your email address · Hongyan", (
            f"Welcome to Hongyan.\n\nOpen this link within 24 hours to confirm your email address:\n\n{link}\n\n"
            "If you did not sign up, ignore this email."
        )
    return "请确认您的邮箱地址 · 鸿雁", (
        f"欢迎使用鸿雁短信平台。\n\n请在 24 小时内打开下面的链接，确认您的邮箱地址：\n\n{link}\n\n"
        "如果您没有注册，请忽略这封邮件。"
    )


def _reset_email(locale: str, link: str) -> tuple[str, str]:
    if locale == "en":
        return "Reset your password · Hongyan", (
            f"Someone asked to reset the password of this Hongyan account.\n\nOpen this link within one hour to "
            f"choose a new password:\n\n{link}\n\nIf it was not you, ignore this email: the password stays as it is."
        )
    return "重置密码 · 鸿雁", (
        f"有人申请重置此鸿雁账号的密码。\n\n请在 1 小时内打开下面的链接设置新密码：\n\n{link}\n\n"
        "如果不是您本人操作，请忽略这封邮件，密码不会改变。"
    )


async def send_verification_email(session: AsyncSession, settings: Settings, user: User) -> None:
    """A new verification link for an unverified user (sign-up, or "resend" from the console banner)."""
    if user.email_verified_at is not None:
        return
    token = await _issue_token(session, purpose="verify_email", user=user, account_id=None, ttl=VERIFY_TTL)
    subject, body = _verification_email(user.locale, f"{settings.effective_public_url}/console/verify-email?token={token}")
    await queue_email(session, backend=settings.email_backend, to=user.email, subject=subject, body=body,
                      kind="verify_email")


async def register(
    session: AsyncSession, settings: Settings, *, email: str, password: str, company_name: str, locale: str,
    ip: str | None = None,
) -> User:
    """A new account with its owner (email not yet verified) and a verification email in the outbox."""
    if settings.registration == "invite":
        raise Forbidden("registration_closed", "Sign-up is by invitation only on this platform.", status_code=403)
    company_name = company_name.strip()
    if not company_name:
        raise InvalidRequest("company_name_required", "Enter the name of your company.", field="company_name")
    email = email.strip().lower()
    if "@" not in email.strip("@"):
        raise InvalidRequest("invalid_email", "Give a valid email address.", field="email")
    check_password_policy(password, email=email, min_length=settings.password_min_length)
    account = await create_account(session, name=company_name[:200])
    user = await create_user(
        session, email=email, password=password, account_id=account.id, role="owner",
        locale="en" if locale == "en" else "zh-CN", min_length=settings.password_min_length,
        email_verified=False,
    )
    await send_verification_email(session, settings, user)
    await record(session, actor=_actor(user, ip), action="user.registered", account_id=account.id,
                 target_type="user", target_id=user.id, after={"email": user.email, "account_name": account.name})
    return user


async def verify_email(session: AsyncSession, token: str) -> User:
    row = await _valid_token(session, token, "verify_email")
    await _consume(session, row)
    user = await session.get(User, row.user_id)
    if user is None or user.email != row.email:  # the address changed since the link was sent
        raise _token_invalid()
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    return user


# -- passwords -------------------------------------------------------------------------------------
async def request_password_reset(session: AsyncSession, settings: Settings, email: str) -> None:
    """Email a reset link; says nothing (no error, same work) when no active user has this address."""
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or user.status != "active":
        return
    token = await _issue_token(session, purpose="reset_password", user=user, account_id=None, ttl=RESET_TTL)
    subject, body = _reset_email(user.locale, f"{settings.effective_public_url}/console/reset-password?token={token}")
    await queue_email(session, backend=settings.email_backend, to=user.email, subject=subject, body=body,
                      kind="reset_password")


async def check_reset_token(session: AsyncSession, token: str) -> None:
    """token_invalid unless the reset link can still be used (the console checks before showing the form)."""
    await _valid_token(session, token, "reset_password")


async def _set_password(session: AsyncSession, user: User, password: str) -> None:
    user.password_hash = hash_password(password)  # a new hash: sessions carrying the old fingerprint end
    user.password_changed_at = utcnow()
    await session.flush()


async def reset_password(
    session: AsyncSession, settings: Settings, token: str, new_password: str, *, ip: str | None = None
) -> User:
    row = await _valid_token(session, token, "reset_password")
    user = await session.get(User, row.user_id)
    if user is None or user.email != row.email or user.status != "active":
        raise _token_invalid()
    check_password_policy(new_password, email=user.email, min_length=settings.password_min_length)
    await _consume(session, row)
    await _set_password(session, user, new_password)
    if user.email_verified_at is None:  # the link reached the mailbox: that proves the address too
        user.email_verified_at = utcnow()
    await _reset_failures(session, email_key(user.email))  # the owner proved themselves: lift the lockout
    await record(session, actor=_actor(user, ip), action="user.password_reset", account_id=None,
                 target_type="user", target_id=user.id)
    return user


async def change_password(
    session: AsyncSession, settings: Settings, user_id: str, current: str, new: str, *, ip: str | None = None
) -> User:
    user = await session.get(User, user_id)
    if user is None or not check_password(user.password_hash, current):
        raise InvalidRequest("password_incorrect", "The current password is not correct.", field="current_password")
    check_password_policy(new, email=user.email, min_length=settings.password_min_length)
    await _set_password(session, user, new)
    await record(session, actor=_actor(user, ip), action="user.password_changed", account_id=None,
                 target_type="user", target_id=user.id)
    return user


# -- sign-in throttling ----------------------------------------------------------------------------
def email_key(email: str) -> str:
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def ip_key(ip: str) -> str:
    return f"ip:{ip}"


@dataclass(frozen=True, slots=True)
class Lockout:
    until: datetime
    retry_after_s: int


def login_locked(lockout: Lockout) -> HongyanError:
    minutes = max(1, -(-lockout.retry_after_s // 60))
    return HongyanError(
        "login_locked",
        f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''} "
        f"(after {lockout.until.strftime('%H:%M')} UTC).",
        field="email", status_code=429, headers={"Retry-After": str(lockout.retry_after_s)},
        details={"retry_after_s": lockout.retry_after_s},
    )


def _keys(email: str, ip: str | None) -> list[tuple[str, int]]:
    return [(email_key(email), 1)] + ([(ip_key(ip), IP_FAILURE_FACTOR)] if ip else [])


async def check_login_allowed(
    session: AsyncSession, settings: Settings, *, email: str, ip: str | None, now: datetime | None = None
) -> None:
    """Raise login_locked (429) while the email or the IP is locked, before any password is checked."""
    now = now or utcnow()
    rows = (await session.scalars(
        select(LoginThrottle).where(LoginThrottle.key.in_([key for key, _ in _keys(email, ip)]))
    )).all()
    until = max((r.locked_until for r in rows if r.locked_until is not None and r.locked_until > now), default=None)
    if until is not None:
        raise login_locked(Lockout(until, max(1, int((until - now).total_seconds() + 0.999))))


async def _locked_row(session: AsyncSession, key: str) -> LoginThrottle:
    """The throttle row of `key`, created if missing, locked for this transaction (PostgreSQL FOR UPDATE;
    SQLite write transactions are serialized already)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(LoginThrottle).values(key=key, failures=0, lockouts=0).on_conflict_do_nothing(index_elements=["key"])
    )
    query = select(LoginThrottle).where(LoginThrottle.key == key).execution_options(populate_existing=True)
    if dialect == "postgresql":
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one()


async def record_login_failure(
    session: AsyncSession, settings: Settings, *, email: str, ip: str | None, now: datetime | None = None
) -> Lockout | None:
    """Count one failed sign-in (wrong password or MFA code) for the email and the IP; the lockout it
    started, if any."""
    now = now or utcnow()
    started: Lockout | None = None
    for key, factor in _keys(email, ip):
        row = await _locked_row(session, key)
        if row.last_failure_at is not None and now - row.last_failure_at > FORGET_AFTER:
            row.failures, row.lockouts = 0, 0
        row.failures += 1
        row.last_failure_at = now
        if row.failures >= settings.login_max_failures * factor:
            seconds = min(settings.login_lockout_s * 2 ** min(row.lockouts, 20), MAX_LOCKOUT_S)
            row.failures, row.lockouts = 0, row.lockouts + 1
            row.locked_until = now + timedelta(seconds=seconds)
            if started is None or row.locked_until > started.until:
                started = Lockout(row.locked_until, seconds)
    await session.flush()
    if started is not None:
        await _audit_lockout(session, email=email, ip=ip, lockout=started)
    return started


async def _audit_lockout(session: AsyncSession, *, email: str, ip: str | None, lockout: Lockout) -> None:
    """A lockout is a security event for the account concerned (if the email is a member's; an unknown
    email is not written down: the log must not collect addresses people typed)."""
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    account_id = await session.scalar(
        select(Membership.account_id).where(Membership.user_id == user.id).order_by(Membership.created_at).limit(1)
    ) if user is not None else None
    await record(session, actor=Actor("user", user.id if user else None, user.email if user else None, ip),
                 action="user.locked_out", account_id=account_id, target_type="user" if user else "ip",
                 target_id=user.id if user else ip,
                 after={"locked_until": lockout.until.isoformat(), "seconds": lockout.retry_after_s})


async def _reset_failures(session: AsyncSession, key: str) -> None:
    await session.execute(
        update(LoginThrottle).where(LoginThrottle.key == key).values(failures=0, locked_until=None)
        .execution_options(synchronize_session=False)
    )


async def record_login_success(
    session: AsyncSession, *, email: str, signed_in: User | None = None, account_id: str | None = None,
    ip: str | None = None, method: str = "password",
) -> None:
    """A successful step clears the email's failure count. The IP's count stays: one valid account must
    not let an attacker at the same address reset the counter it is guessing other accounts under.
    `signed_in` (the last step passed) puts `user.signed_in` in the audit log."""
    await session.execute(
        update(LoginThrottle).where(LoginThrottle.key == email_key(email)).values(failures=0)
        .execution_options(synchronize_session=False)
    )
    if signed_in is not None:
        await record(session, actor=_actor(signed_in, ip), action="user.signed_in", account_id=account_id,
                     target_type="user", target_id=signed_in.id, after={"method": method})
