"""Webhook endpoints per account, and the webhook outbox (one row per event per endpoint)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedText
from hongyan.db.base import Base, JsonType, UtcDateTime


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))  # HMAC key; shown once at creation
    event_types: Mapped[list[str]] = mapped_column(JsonType, default=list)  # empty = all
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookEvent(Base):
    """An event to POST to one endpoint; survives restarts; retried with backoff until delivered or given up."""

    __tablename__ = "webhook_event"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # evt_… : the dedupe key receivers use
    account_id: Mapped[str] = mapped_column(String(30))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoint.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(48))
    message_id: Mapped[str | None] = mapped_column(String(30), index=True)
    payload: Mapped[str] = mapped_column(EncryptedText)  # the exact JSON body that is signed and sent (sealed)
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


Index("ix_webhook_event_due", WebhookEvent.status, WebhookEvent.next_attempt_at)
