"""Transactional outbox: work written in the same transaction as the messages it refers to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.db.base import Base, JsonType, UtcDateTime
from hongyan.dispatch.queue import DISPATCH


class OutboxItem(Base):
    """A chunk of message ids (≤ dispatch_chunk) to publish on a queue lane, once committed."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(32))  # dispatch
    lane: Mapped[int] = mapped_column(SmallInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    available_at: Mapped[datetime] = mapped_column(UtcDateTime)  # scheduled sends wait here
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_outbox_available", OutboxItem.available_at, OutboxItem.id)


def outbox_rows(lane: int, ids: list[str], *, chunk: int, available_at: datetime, now: datetime,
                account_id: str | None = None) -> list[dict[str, Any]]:
    """Rows of `outbox` for `ids` on a lane, `chunk` ids each, due at `available_at`. `account_id`: the one
    account all `ids` belong to (a submit's), carried as the payload's "account" so that a dispatcher knows
    it before reading the messages (the verification lane's one-statement dispatch, docs/lanes.md)."""
    extra = {"account": account_id} if account_id else {}
    return [{"topic": DISPATCH, "lane": lane, "payload": {"ids": ids[i : i + chunk], **extra},
             "available_at": available_at, "created_at": now} for i in range(0, len(ids), chunk)]


class Lease(Base):
    """A named lease (leader election without a coordinator): whoever holds an unexpired lease does the work.

    Taken and renewed with one conditional UPDATE (or INSERT) — see dispatch.lease. Used by the campaign
    scheduler; production mode (issue 9) uses the same table for its other singletons."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
