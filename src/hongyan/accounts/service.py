"""Accounts, users and API keys: create, authenticate, revoke; first-start bootstrap."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account, ApiKey, Membership, User
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import InvalidRequest, NotFound, Unauthorized
from hongyan.db.engine import Database

ALL_SCOPES = ("send", "read", "billing", "admin")
# platform staff: channels, routes (never part of a customer key by default; `hongyan admin create-key`)
OPERATOR_SCOPE = "operator"
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class AccountContext:
    """Who is calling: the account, and the key or user acting for it."""

    account_id: str
    default_region: str
    currency: str
    key_id: str | None = None
    user_id: str | None = None
    scopes: tuple[str, ...] = ALL_SCOPES


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    token: str  # "<key id>.<secret>", shown once


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _secret_hash(secret: str) -> str:
    # API secrets are 256-bit random: a fast hash is enough (no dictionary to attack), unlike passwords
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_account(session: AsyncSession, *, name: str, default_region: str = "CN", currency: str = "CNY") -> Account:
    account = Account(
        id=ids.new_id("acc"), name=name, status="active", default_region=default_region, currency=currency,
        settings={}, created_at=utcnow(),
    )
    session.add(account)
    await session.flush()
    return account


async def get_account(session: AsyncSession, account_id: str) -> Account:
    """An account by id, or 404 `account_not_found` (operator tools: top-ups, rate cards, purchases)."""
    account = await session.get(Account, account_id) if account_id else None
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    return account


async def create_user(
    session: AsyncSession, *, email: str, password: str, account_id: str | None, role: str = "owner",
    display_name: str = "", platform_role: str | None = None, locale: str = "zh-CN",
) -> User:
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidRequest("invalid_email", "Give a valid email address.", field="email")
    if len(password) < 10:
        raise InvalidRequest("password_too_short", "The password needs at least 10 characters.", field="password")
    if await session.scalar(select(User.id).where(User.email == email)):
        raise InvalidRequest("email_taken", "A user with this email already exists.", field="email")
    user = User(
        id=ids.new_id("usr"), email=email, password_hash=hash_password(password), display_name=display_name,
        locale=locale, status="active", platform_role=platform_role, created_at=utcnow(),
    )
    session.add(user)
    await session.flush()
    if account_id:
        session.add(Membership(account_id=account_id, user_id=user.id, role=role, created_at=utcnow()))
        await session.flush()
    return user


async def authenticate_user(session: AsyncSession, *, email: str, password: str) -> User | None:
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        _hasher.hash(password)  # same work whether or not the user exists
        return None
    if user.status != "active" or not check_password(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    return user


async def primary_account_for(session: AsyncSession, user_id: str) -> Account | None:
    return await session.scalar(
        select(Account).join(Membership, Membership.account_id == Account.id).where(Membership.user_id == user_id)
        .order_by(Membership.created_at).limit(1)
    )


async def create_api_key(
    session: AsyncSession, *, account_id: str, name: str, scopes: tuple[str, ...] = ALL_SCOPES,
    created_by: str | None = None, expires_at: datetime | None = None, allow_operator: bool = False,
) -> CreatedKey:
    if not name.strip():
        raise InvalidRequest("name_required", "Give the key a name.", field="name")
    for i, scope in enumerate(scopes):
        if scope not in ALL_SCOPES and not (allow_operator and scope == OPERATOR_SCOPE):
            raise InvalidRequest("invalid_scope", f"Unknown scope '{scope}'.", field=f"scopes[{i}]")
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=ids.new_id("key"), account_id=account_id, name=name.strip()[:200], secret_hash=_secret_hash(secret),
        secret_hint=secret[-4:], scopes=list(scopes), allowed_cidrs=[], created_by=created_by,
        created_at=utcnow(), expires_at=expires_at, revoked_at=None, last_used_at=None, is_test=False,
    )
    session.add(key)
    await session.flush()
    return CreatedKey(key=key, token=f"{key.id}.{secret}")


async def list_api_keys(session: AsyncSession, *, account_id: str) -> list[ApiKey]:
    rows = await session.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at.desc()))
    return list(rows)


async def revoke_api_key(session: AsyncSession, *, account_id: str, key_id: str) -> None:
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound("api_key_not_found", "No such active API key.", field="key_id")


_INVALID = Unauthorized(
    "invalid_api_key", "The API key is not valid. Send `Authorization: Bearer <key id>.<secret>`.", field="Authorization"
)


async def authenticate_api_key(db: Database, token: str) -> AccountContext:
    """Check a bearer token `<key id>.<secret>`; raises Unauthorized with a precise code."""
    key_id, _, secret = token.strip().partition(".")
    if not secret or not ids.looks_like(key_id, "key"):
        raise _INVALID
    async with db.read() as session:
        row = (
            await session.execute(
                select(ApiKey, Account.default_region, Account.currency, Account.status)
                .join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.id == key_id)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.ApiKey.secret_hash, _secret_hash(secret)):
        raise _INVALID
    key = row.ApiKey
    now = utcnow()
    if key.revoked_at is not None:
        raise Unauthorized("api_key_revoked", "This API key was revoked.", field="Authorization")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("api_key_expired", "This API key has expired.", field="Authorization")
    if row.status != "active":
        raise Unauthorized("account_suspended", "The account of this API key is not active.", field="Authorization")
    return AccountContext(
        account_id=key.account_id, default_region=row.default_region, currency=row.currency, key_id=key.id,
        scopes=tuple(key.scopes),
    )


async def touch_api_key(db: Database, key_id: str) -> None:
    """Record last use at most once a minute per key (keeps the hot path free of writes)."""
    now = utcnow()
    async with db.write() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id).where(
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now.replace(second=0, microsecond=0))
            ).values(last_used_at=now)
        )


@dataclass(frozen=True, slots=True)
class Bootstrap:
    email: str
    password: str
    api_key: str
    account_id: str


async def bootstrap_if_empty(
    db: Database, *, email: str = "admin@hongyan.local", trial_credit_micros: int = 0
) -> Bootstrap | None:
    """On first start: an account, an admin user with a random password and an API key (shown once), and
    an optional trial credit so the sandbox can send at once."""
    async with db.write() as session:
        if await session.scalar(select(func.count()).select_from(User)):
            return None
        account = await create_account(session, name="Default")
        password = secrets.token_urlsafe(12)
        user = await create_user(
            session, email=email, password=password, account_id=account.id, role="owner",
            display_name="Administrator", platform_role="platform_admin",
        )
        created = await create_api_key(session, account_id=account.id, name="default", created_by=user.id)
        if trial_credit_micros > 0:
            from hongyan.billing.recharge import grant_bonus

            await grant_bonus(session, account_id=account.id, amount_micros=trial_credit_micros,
                              currency=account.currency, note="trial credit (first start)")
        return Bootstrap(email=email, password=password, api_key=created.token, account_id=account.id)
