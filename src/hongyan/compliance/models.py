"""Compliance tables: sender signatures, message templates, enterprise verification (KYC), their
documents, the per-account suppression list (opt-out), and content-filter rules.

Review workflow (signatures, templates, KYC): `pending` → `approved` | `rejected` (with a reason), or
`withdrawn` by the account. Who decided and when is on the row and, with the before/after values, in the
audit log (audit.service.record), which is the tamper-evident history of decisions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedBytes, EncryptedText
from hongyan.db.base import Base, JsonType, UtcDateTime

REVIEW_STATUSES = ("pending", "approved", "rejected", "withdrawn")


class Signature(Base):
    """A sender signature `【公司名】`: the name inside the brackets, what it is for, its review state."""

    __tablename__ = "signature"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_signature_account_name"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # sig_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(String(40))  # without the brackets
    purpose: Mapped[str] = mapped_column(Text)  # what the sender uses it for (shown to reviewers)
    source: Mapped[str] = mapped_column(String(16))  # company | app | website | trademark | public_account | other
    status: Mapped[str] = mapped_column(String(12), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)  # a reviewer's reason (rejections)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)  # used when a send names none
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(40))  # user:usr_… / key:key_…
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class MessageTemplate(Base):
    """A reviewed text with typed variables `${code}`; sending by template id validates each parameter."""

    __tablename__ = "message_template"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # tpl_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    message_type: Mapped[str] = mapped_column(String(16))  # verification | notification | marketing
    body: Mapped[str] = mapped_column(Text)  # e.g. "您的验证码是${code}，5分钟内有效。"
    # [{"name": "code", "type": "digits", "min": 4, "max": 8}, …] — see compliance.templates
    variables: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    signature_id: Mapped[str | None] = mapped_column(String(30))  # optional: the signature it is filed with
    remark: Mapped[str | None] = mapped_column(Text)  # the applicant's explanation / example
    status: Mapped[str] = mapped_column(String(12), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(40))
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class KycApplication(Base):
    """Enterprise real-name verification; the account's `kyc_status` follows the latest decision."""

    __tablename__ = "kyc_application"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # kyc_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    company_name: Mapped[str] = mapped_column(String(200))
    registration_number: Mapped[str] = mapped_column(String(64))  # e.g. 统一社会信用代码 (18 characters)
    legal_person: Mapped[str] = mapped_column(EncryptedText)  # a person's name: sealed at rest
    contact_email: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(12), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(40))
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ComplianceDocument(Base):
    """An uploaded supporting document (business license, trademark certificate, authorization letter):
    type checked by its magic bytes, size capped, bytes sealed at rest."""

    __tablename__ = "compliance_document"
    __table_args__ = (Index("ix_compliance_document_owner", "owner_kind", "owner_id"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # doc_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), index=True)
    owner_kind: Mapped[str] = mapped_column(String(12))  # signature | template | kyc
    owner_id: Mapped[str] = mapped_column(String(30))
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(64))  # as detected, not as claimed
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(EncryptedBytes)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Suppression(Base):
    """A number the account must not send to (opt-out reply, manual entry, API, import). `scope` is
    the signature id it applies to, or "" for every message of the account."""

    __tablename__ = "suppression"

    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"), primary_key=True)
    number_bidx: Mapped[str] = mapped_column(String(32), primary_key=True)  # blind index of the E.164 number
    scope: Mapped[str] = mapped_column(String(30), primary_key=True, default="")
    number: Mapped[str] = mapped_column(EncryptedText)  # E.164, sealed at rest
    source: Mapped[str] = mapped_column(String(12))  # reply | manual | api | import
    keyword: Mapped[str | None] = mapped_column(String(32))  # the reply that opted out (normalized)
    inbound_id: Mapped[str | None] = mapped_column(String(30))  # inb_… that caused it
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FilterRule(Base):
    """A content-filter rule. `account_id` None: platform-wide (operators); else the account's own list.
    kind: keyword | regex | url_allow | url_deny; action: block | review | allow."""

    __tablename__ = "filter_rule"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # flt_…
    account_id: Mapped[str | None] = mapped_column(ForeignKey("account.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    pattern: Mapped[str] = mapped_column(String(500))
    action: Mapped[str] = mapped_column(String(8))
    category: Mapped[str | None] = mapped_column(String(32))  # e.g. fraud, gambling, invoice, politics
    note: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FilterVersion(Base):
    """One row per list (`scope` = account id, or "platform"): bumped on every rule change so that each
    process rebuilds its compiled matcher only when a list changed (one indexed read per submit)."""

    __tablename__ = "filter_version"

    scope: Mapped[str] = mapped_column(String(30), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MessageHold(Base):
    """A message the content filter held for review (status `held`): which rule matched, and the
    decision once a reviewer made it (approved → released, rejected → `rejected` with holds released)."""

    __tablename__ = "message_hold"
    __table_args__ = (Index("ix_message_hold_open", "decided_at", "created_at"),)

    message_id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(30), index=True)
    batch_id: Mapped[str | None] = mapped_column(String(30))
    rule_id: Mapped[str | None] = mapped_column(String(30))
    matched: Mapped[str | None] = mapped_column(String(200))  # the pattern that matched (not the text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decision: Mapped[str | None] = mapped_column(String(10))  # approved | rejected
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
