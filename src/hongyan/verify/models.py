"""Verification (OTP) tables: one row per verification, blocked attempts (pumping protection) and
destination throttles.

The code itself is never stored: `code_hash` is an HMAC-SHA256 keyed with the platform secret over the
verification id and the code, so a leaked table does not reveal codes and a hash cannot be reused for
another verification. Counts for the limits (per number, IP, API key; per country/prefix velocity and
conversion) are read from `verification` through its indexes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedText
from hongyan.db.base import Base, UtcDateTime

# pending → approved | expired | canceled | failed (too many wrong codes); blocked ones are never stored
# here (they are `verify_block` rows: nothing was sent)
VERIFICATION_STATUSES = ("pending", "approved", "expired", "canceled", "failed")


class Verification(Base):
    __tablename__ = "verification"
    __table_args__ = (
        Index("ix_verification_account", "account_id", "id"),
        Index("ix_verification_to", "to_bidx", "created_at"),
        Index("ix_verification_ip", "client_ip", "created_at"),
        Index("ix_verification_key", "api_key_id", "created_at"),
        Index("ix_verification_country", "to_country", "created_at"),
        Index("ix_verification_prefix", "to_prefix", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # ver_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    to_number: Mapped[str] = mapped_column(EncryptedText)  # E.164, sealed at rest
    to_bidx: Mapped[str] = mapped_column(String(32))  # blind index: per-number limits
    to_country: Mapped[str | None] = mapped_column(String(2))
    to_prefix: Mapped[str | None] = mapped_column(String(16))  # e.g. "+86138" — velocity per prefix
    channel: Mapped[str] = mapped_column(String(8), default="sms")
    locale: Mapped[str] = mapped_column(String(10), default="zh-CN")
    template_id: Mapped[str | None] = mapped_column(String(30))  # an approved verification template, or the default
    code_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256(secret, id + ":" + code), hex
    code_length: Mapped[int] = mapped_column(SmallInteger)
    ttl_s: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)  # wrong checks so far
    max_attempts: Mapped[int] = mapped_column(SmallInteger)
    sends: Mapped[int] = mapped_column(SmallInteger, default=1)  # first send + resends
    last_sent_at: Mapped[datetime] = mapped_column(UtcDateTime)
    message_id: Mapped[str | None] = mapped_column(String(30))  # the last code's message (msg_…)
    api_key_id: Mapped[str | None] = mapped_column(String(30))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    sandbox: Mapped[bool] = mapped_column(default=False)  # a test key: the code may be shown to the caller
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class VerifyBlock(Base):
    """A verification request refused by a limit or by pumping protection: nothing was sent. Operators see
    these (blocked traffic view); the counts feed the anomaly detector's baseline too."""

    __tablename__ = "verify_block"
    __table_args__ = (Index("ix_verify_block_time", "created_at"), Index("ix_verify_block_account", "account_id", "id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(30))
    to_bidx: Mapped[str | None] = mapped_column(String(32))
    to_country: Mapped[str | None] = mapped_column(String(2))
    to_prefix: Mapped[str | None] = mapped_column(String(16))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    api_key_id: Mapped[str | None] = mapped_column(String(30))
    code: Mapped[str] = mapped_column(String(48))  # the error code returned (rate_limited_number, pumping_suspected…)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class VerifyThrottle(Base):
    """A destination (country or number prefix) whose verifications are throttled or blocked until `until`:
    set automatically when its velocity jumps or its conversion collapses, or by an operator."""

    __tablename__ = "verify_throttle"
    __table_args__ = (Index("ix_verify_throttle_target", "kind", "value", "until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str | None] = mapped_column(String(30))  # None: platform-wide
    kind: Mapped[str] = mapped_column(String(8))  # country | prefix
    value: Mapped[str] = mapped_column(String(16))  # "NG" or "+23480"
    reason: Mapped[str] = mapped_column(String(32))  # velocity_spike | conversion_collapse | operator
    detail: Mapped[str | None] = mapped_column(String(200))  # the figures that triggered it
    max_per_hour: Mapped[int | None] = mapped_column(Integer)  # None: blocked outright
    until: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
