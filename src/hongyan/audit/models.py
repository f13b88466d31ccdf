"""The audit log: every change by a person or key, append-only and hash-chained (tamper-evident)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.db.base import Base, JsonType, UtcDateTime


class AuditEntry(Base):
    """One change. `hash` = SHA-256(prev_hash ‖ canonical JSON of this row): editing, deleting or
    reordering any row breaks every hash after it (`hongyan audit verify`). On PostgreSQL a trigger
    also refuses UPDATE and DELETE on this table."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    account_id: Mapped[str | None] = mapped_column(String(30))  # None: platform-wide (channels, rate cards)
    actor_type: Mapped[str] = mapped_column(String(10))  # user | api_key | system | cli
    actor_id: Mapped[str | None] = mapped_column(String(30))
    actor_label: Mapped[str | None] = mapped_column(String(254))  # email or key name at the time
    ip: Mapped[str | None] = mapped_column(String(45))
    action: Mapped[str] = mapped_column(String(48))  # e.g. api_key.created, member.role_changed
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


Index("ix_audit_log_account_seq", AuditEntry.account_id, AuditEntry.seq)
Index("ix_audit_log_target", AuditEntry.target_id)


class AuditHead(Base):
    """The chain's last link (one row): appends lock it, so entries get gap-free sequence numbers in order."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
