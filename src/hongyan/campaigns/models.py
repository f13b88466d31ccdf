"""Contacts (one per number per account), their typed custom fields, and groups (static or saved filters).

The number is sealed at rest like every phone number (core.crypto) and found through its blind index;
`(account_id, phone_bidx)` is unique, which is the dedupe rule. Names, tags and custom fields stay
searchable in SQL (saved filters, campaigns' audiences); erasure (privacy) deletes the contact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedText
from hongyan.db.base import Base, JsonType, UtcDateTime


class Contact(Base):
    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("account_id", "phone_bidx", name="uq_contact_account_phone"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # ct_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    phone: Mapped[str] = mapped_column(EncryptedText)  # E.164, sealed
    phone_bidx: Mapped[str] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(2))
    name: Mapped[str | None] = mapped_column(String(200))
    time_zone: Mapped[str | None] = mapped_column(String(64))  # a person's override; None: from the number
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    fields: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # typed values as JSON text
    # consent for marketing (the compliance issue enforces it): where it came from and when
    consent_source: Mapped[str | None] = mapped_column(String(64))
    consent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(String(16))  # api | console | import
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_contact_account_id", Contact.account_id, Contact.id)


class ContactField(Base):
    """A custom field of an account's contacts, with its type: text, number or date (`{订单号}` in texts)."""

    __tablename__ = "contact_field"

    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ContactGroup(Base):
    """static: members listed in contact_group_member; filter: whoever matches `filter` when it is used."""

    __tablename__ = "contact_group"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_contact_group_account_name"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # grp_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))  # static | filter
    filter: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class GroupMember(Base):
    __tablename__ = "contact_group_member"

    group_id: Mapped[str] = mapped_column(ForeignKey("contact_group.id", ondelete="CASCADE"), primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True,
                                            index=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime)
