"""Accounts and users: create, authenticate; first-start bootstrap. API keys live in accounts.keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.keys import create_api_key
from hongyan.accounts.models import Account, Membership, User
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import InvalidRequest, NotFound
from hongyan.db.engine import Database

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create_account(session: AsyncSession, *, name: str, default_region: str = "CN", currency: str = "CNY",
                         kyc_status: str = "unverified") -> Account:
    """A new account; it starts unverified (limited by the compliance gate) unless the platform vouches for it."""
    account = Account(
        id=ids.new_id("acc"), name=name, status="active", default_region=default_region, currency=currency,
        settings={}, created_at=utcnow(), kyc_status=kyc_status,
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
    display_name: str = "", platform_role: str | None = None, locale: str = "zh-CN", min_length: int = 10,
    email_verified: bool = True,
) -> User:
    """A user (and their membership). Only the length is checked here: sign-up, reset and change apply the
    whole policy (accounts.passwords); the first-start administrator's password is random. Users made by
    an operator or an invitation count as verified; self sign-up passes email_verified=False."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidRequest("invalid_email", "Give a valid email address.", field="email")
    if len(password) < min_length:
        raise InvalidRequest(
            "password_too_short", f"The password needs at least {min_length} characters.", field="password"
        )
    if await session.scalar(select(User.id).where(User.email == email)):
        raise InvalidRequest("email_taken", "A user with this email already exists.", field="email")
    user = User(
        id=ids.new_id("usr"), email=email, password_hash=hash_password(password), display_name=display_name,
        locale=locale, status="active", platform_role=platform_role, created_at=utcnow(),
        email_verified_at=utcnow() if email_verified else None,
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
        # the operator's own account: the platform vouches for it (no enterprise verification to wait for)
        account = await create_account(session, name="Default", kyc_status="verified")
        password = secrets.token_urlsafe(12)
        user = await create_user(
            session, email=email, password=password, account_id=account.id, role="owner",
            display_name="Administrator", platform_role="platform_admin",
        )
        created = await create_api_key(session, account_id=account.id, name="default", created_by=user.id)
        # the platform's own signature, approved: the operator's account can send signed messages at once
        from hongyan.compliance.models import Signature

        now = utcnow()
        session.add(Signature(id=ids.new_id("sig"), account_id=account.id, name="鸿雁", purpose="the platform's own "
                              "messages (created on first start)", source="company", status="approved",
                              is_default=False, created_at=now, updated_at=now, reviewed_by="system:bootstrap",
                              reviewed_at=now))
        if trial_credit_micros > 0:
            from hongyan.billing.recharge import grant_bonus

            await grant_bonus(session, account_id=account.id, amount_micros=trial_credit_micros,
                              currency=account.currency, note="trial credit (first start)")
        return Bootstrap(email=email, password=password, api_key=created.token, account_id=account.id)
