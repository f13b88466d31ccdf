"""Carrier channels (sandbox, SMPP binds, HTTP carriers), the routes that choose them, and carrier ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.db.base import Base, JsonType, UtcDateTime


class Channel(Base):
    __tablename__ = "channel"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # sandbox | smpp | http
    config: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Route(Base):
    """Which channel carries which traffic: destination (country, number prefix), message type, account.

    Candidates are ordered by account-specific first, then `priority` (lower first), then the longest
    matching prefix; routes that tie are tried in a weighted random order. A message that matches no
    route fails with `no_route`; with no routes at all the embedded sandbox channel carries everything.
    """

    __tablename__ = "route"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    channel_id: Mapped[str] = mapped_column(ForeignKey("channel.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[str | None] = mapped_column(String(30))  # None: every account (a per-account plan otherwise)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    countries: Mapped[list[str]] = mapped_column(JsonType, default=list)  # ISO 3166 alpha-2; empty = any
    prefixes: Mapped[list[str]] = mapped_column(JsonType, default=list)  # E.164 digits without +; empty = any
    message_types: Mapped[list[str]] = mapped_column(JsonType, default=list)  # empty = any
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CarrierMessage(Base):
    """Carrier message id → our message, one row per submitted part: the narrow table receipts are matched on.

    `group_ref` is the carrier id of the first part of one submission (a resent message gets a new group);
    a multipart message reaches its final status when every part of a group has a receipt.
    """

    __tablename__ = "carrier_message"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(String(30))
    carrier_message_id: Mapped[str] = mapped_column(String(65))
    message_id: Mapped[str] = mapped_column(String(30), index=True)
    group_ref: Mapped[str] = mapped_column(String(65))
    part: Mapped[int] = mapped_column(SmallInteger)
    parts: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str | None] = mapped_column(String(12))
    carrier_error_code: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_carrier_message_lookup", CarrierMessage.carrier_message_id, CarrierMessage.channel_id)
