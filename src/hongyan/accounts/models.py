"""Tenants (accounts, with sub-accounts), people (users, memberships) and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

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
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)


Index("ix_api_key_account_created", ApiKey.account_id, ApiKey.created_at)
