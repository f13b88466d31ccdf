"""Tenants (accounts, with sub-accounts), people (users, memberships) and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedText
from hongyan.db.base import Base, JsonType, UtcDateTime


class Account(Base):
    """A customer organization or one of its sub-accounts (parent_id); owns messages, keys, balance."""

    __tablename__ = "account"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended | closed
    default_region: Mapped[str] = mapped_column(String(2), default="CN")
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    settings: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # every member must have MFA on before the console opens this account
    require_mfa: Mapped[bool] = mapped_column(Boolean, default=False)
    # sub-accounts: spend drawn from the parent's balance, capped per period (None: no cap)
    spend_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    spend_limit_period: Mapped[str] = mapped_column(String(8), default="month")  # day | month
    # privacy: message content and numbers of final messages older than this are purged (None: kept)
    retention_days: Mapped[int | None] = mapped_column(Integer)
    # marketing is not delivered inside this window of the recipient's local time ("21:00-08:00");
    # None: the platform default (HONGYAN_QUIET_HOURS)
    quiet_hours: Mapped[str | None] = mapped_column(String(11))
    # enterprise verification (compliance.kyc): unverified | pending | verified | rejected; unverified
    # accounts are limited (compliance.gate) until an operator approves their application
    kyc_status: Mapped[str] = mapped_column(String(12), default="unverified")


class User(Base):
    """A person who logs in to the console (customer member or platform staff)."""

    __tablename__ = "user_account"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(10), default="zh-CN")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | locked | disabled
    # platform staff roles (reviewer, support, platform_admin) live apart from customer memberships
    platform_role: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    email_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # TOTP (RFC 6238): the shared secret is sealed at rest; enabled once a first code was confirmed
    mfa_secret: Mapped[str | None] = mapped_column(EncryptedText)
    mfa_enabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    mfa_recovery_hashes: Mapped[list[str]] = mapped_column(JsonType, default=list)  # SHA-256, one use each
    mfa_last_step: Mapped[int | None] = mapped_column(BigInteger)  # a TOTP code is accepted once (replay)


class Membership(Base):
    """A user's role in an account: owner, admin, developer, finance, viewer."""

    __tablename__ = "membership"

    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKey(Base):
    """Bearer credential `<id>.<secret>`; only a SHA-256 of the (high-entropy) secret is stored."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    secret_hint: Mapped[str] = mapped_column(String(8))  # last characters, to tell keys apart
    scopes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_ip: Mapped[str | None] = mapped_column(String(45))
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    # HMAC request signing: the server must know this secret to check signatures, so it is sealed
    # (AES-GCM), not hashed; keys without it accept bearer secrets only
    signing_secret: Mapped[str | None] = mapped_column(EncryptedText)
    rotated_to: Mapped[str | None] = mapped_column(String(30))  # the key that replaced this one
    rate_limit_per_s: Mapped[float | None] = mapped_column()  # None: the platform default


Index("ix_api_key_account_created", ApiKey.account_id, ApiKey.created_at)


class AuthToken(Base):
    """A one-time link token: email verification, password reset, invitation (SHA-256 stored, like API secrets)."""

    __tablename__ = "auth_token"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))  # verify_email | reset_password | invite
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id"), index=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("account.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str | None] = mapped_column(String(16))  # invitations
    created_by: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LoginThrottle(Base):
    """Failed sign-ins per email and per IP: lockout after too many (shared by every API process)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "email:<hash>" | "ip:<address>"
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EmailMessage(Base):
    """Every email the platform sends, kept as an outbox: the embedded backend only stores it here."""

    __tablename__ = "email_message"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(EncryptedText)  # holds one-time links: sealed like content
    kind: Mapped[str] = mapped_column(String(32))  # verify_email | reset_password | invite | alert
    status: Mapped[str] = mapped_column(String(12))  # stored (outbox backend) | pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
