"""Outbound messages, their batches and state history, and idempotency records.

Hot path: rows are written in bulk with Core inserts (see messaging.repository), never one ORM object per
message. On PostgreSQL, message and message_event are candidates for monthly range partitions (ROADMAP
§8); ids are time-sortable so a partition key on created_at lines up with id order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedBytes, EncryptedJson, EncryptedText
from hongyan.db.base import Base, UtcDateTime


class Batch(Base):
    """One submit call (API batch, console send, CLI, campaign run): the unit of reports and holds."""

    __tablename__ = "batch"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    source: Mapped[str] = mapped_column(String(16))  # api | console | cli | campaign | compat | smpp
    campaign_id: Mapped[str | None] = mapped_column(String(30), index=True)
    message_type: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str | None] = mapped_column(String(32))
    body_template: Mapped[str] = mapped_column(EncryptedText)  # content: sealed at rest (core.crypto)
    recipients_total: Mapped[int] = mapped_column(Integer)
    accepted_count: Mapped[int] = mapped_column(Integer)
    rejected_count: Mapped[int] = mapped_column(Integer)
    segments_total: Mapped[int] = mapped_column(Integer)
    price_micros_total: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(EncryptedJson, default=list)  # holds numbers
    client_ref: Mapped[str | None] = mapped_column(String(128))
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_batch_account_id", Batch.account_id, Batch.id)


class Message(Base):
    """One outbound SMS to one recipient. `status` changes only through messaging.states."""

    __tablename__ = "message"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    batch_id: Mapped[str | None] = mapped_column(String(30))
    campaign_id: Mapped[str | None] = mapped_column(String(30))
    message_type: Mapped[str] = mapped_column(String(16))  # verification | notification | marketing
    priority: Mapped[int] = mapped_column(SmallInteger)  # lane: 0 verification, 1 notification, 2 marketing
    to_number: Mapped[str] = mapped_column(EncryptedText)  # E.164, sealed at rest (core.crypto)
    to_bidx: Mapped[str | None] = mapped_column(String(32))  # blind index of to_number: exact-number search
    to_country: Mapped[str | None] = mapped_column(String(2))
    # the recipient's IANA time zone, kept for marketing (quiet hours are checked again at release)
    time_zone: Mapped[str | None] = mapped_column(String(64))
    sender: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(EncryptedText)
    encoding: Mapped[str] = mapped_column(String(8))
    segment_count: Mapped[int] = mapped_column(SmallInteger)
    price_micros: Mapped[int] = mapped_column(BigInteger)  # whole message (all segments)
    currency: Mapped[str] = mapped_column(String(3))
    # what pays: "cash" (price_micros held on the balance) or a package id (segment_count units held)
    funding: Mapped[str | None] = mapped_column(String(30))
    # held → settled (charged) | released (never reached a carrier) | refunded (undelivered, per policy)
    billing_state: Mapped[str | None] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(12))
    error_code: Mapped[str | None] = mapped_column(String(48))
    carrier_error_code: Mapped[str | None] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(30))
    carrier_message_id: Mapped[str | None] = mapped_column(String(64))
    client_ref: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)  # == accepted
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


Index("ix_message_account_id", Message.account_id, Message.id)
Index("ix_message_account_status", Message.account_id, Message.status, Message.id)
# number first: serves "this account's messages to N" and "who last wrote to N" (matching replies)
Index("ix_message_to_bidx_account", Message.to_bidx, Message.account_id)
# per-batch status counts, and campaign runs releasing their due `scheduled` messages in order
Index("ix_message_batch_status", Message.batch_id, Message.status, Message.scheduled_at)
Index("ix_message_status_expires", Message.status, Message.expires_at)


class MessageEvent(Base):
    """Every state transition after `accepted` (accepted is message.created_at), with carrier codes."""

    __tablename__ = "message_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(30), index=True)
    status: Mapped[str] = mapped_column(String(12))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    error_code: Mapped[str | None] = mapped_column(String(48))
    carrier_error_code: Mapped[str | None] = mapped_column(String(32))


class IdempotencyRecord(Base):
    """First response to a request with an Idempotency-Key, replayed for retries (24 h)."""

    __tablename__ = "idempotency_record"

    account_id: Mapped[str] = mapped_column(String(30), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(SmallInteger)
    response_body: Mapped[bytes] = mapped_column(EncryptedBytes)  # echoes numbers: sealed
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class InboundMessage(Base):
    """A mobile-originated message (reply, keyword) received on a channel.

    `account_id` is the account that last sent to the number (its reply), or None when nobody did;
    `in_reply_to` that message. Opt-out keywords are handled by hooks (messaging.inbound)."""

    __tablename__ = "inbound_message"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # inb_…
    account_id: Mapped[str | None] = mapped_column(String(30))
    channel_id: Mapped[str] = mapped_column(String(30))
    from_number: Mapped[str] = mapped_column(EncryptedText)  # a person's number: sealed at rest
    from_bidx: Mapped[str | None] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))  # our number or short code
    body: Mapped[str] = mapped_column(EncryptedText)
    in_reply_to: Mapped[str | None] = mapped_column(String(30))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_inbound_message_account", InboundMessage.account_id, InboundMessage.id)
Index("ix_inbound_message_from", InboundMessage.from_bidx)
