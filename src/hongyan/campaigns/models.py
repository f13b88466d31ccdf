"""Contacts, groups, contact-file imports, campaigns and their runs.

The number is sealed at rest like every phone number (core.crypto) and found through its blind index;
`(account_id, phone_bidx)` is unique, which is the dedupe rule. Names, tags and custom fields stay
searchable in SQL (saved filters, campaigns' audiences); erasure (privacy) deletes the contact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hongyan.core.crypto import EncryptedBytes, EncryptedJson, EncryptedText
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
    consent_evidence: Mapped[str | None] = mapped_column(String(500))  # e.g. form URL, order id, recording ref
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


class ImportJob(Base):
    """A contact file being imported: uploaded → (mapping chosen) running → completed | failed | canceled.

    The file itself is kept in `upload_chunk` rows (sealed: it holds numbers), so any worker process can
    run the job; progress is committed after every chunk of rows, so a job whose worker died resumes
    from `rows_done` when its lease runs out (the upsert is idempotent per number)."""

    __tablename__ = "import_job"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # imp_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    created_by: Mapped[str | None] = mapped_column(String(30))  # usr_… or key_…
    status: Mapped[str] = mapped_column(String(12))  # uploaded | queued | running | completed | failed | canceled
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))  # csv | xlsx | xls
    encoding: Mapped[str | None] = mapped_column(String(16))  # csv only
    delimiter: Mapped[str | None] = mapped_column(String(2))  # csv only
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    header: Mapped[list[str]] = mapped_column(JsonType, default=list)  # the file's first row
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JsonType)  # rows.ColumnMapping as JSON
    options: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # update_existing, region, consent…
    group_id: Mapped[str | None] = mapped_column(String(30))  # imported contacts join this static group
    campaign_id: Mapped[str | None] = mapped_column(String(30))  # … the audience group of this campaign
    rows_total: Mapped[int | None] = mapped_column(Integer)  # known once read to the end (estimated before)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)  # data rows read, committed
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)  # progress for CSV (rows_total unknown)
    created_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_count: Mapped[int] = mapped_column(Integer, default=0)
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)  # duplicates / existing, not updated
    failed_count: Mapped[int] = mapped_column(Integer, default=0)  # rows with a problem (the error file)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType)  # why a job failed as a whole
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_holder: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_import_job_account", ImportJob.account_id, ImportJob.id)
Index("ix_import_job_status", ImportJob.status)


class UploadChunk(Base):
    """Bytes of an uploaded file (`kind` source) or of a job's error file (`kind` errors), in order."""

    __tablename__ = "upload_chunk"

    owner_id: Mapped[str] = mapped_column(String(30), primary_key=True)  # imp_…
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # source | errors
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(EncryptedBytes)


class Campaign(Base):
    """A personalized send to an audience of contacts: once (now or at a time) or recurring (RRULE).

    Each firing is a CampaignRun with its own batch (report, holds). `next_fire_at` is what the scheduler
    looks at; `(campaign_id, occurrence_at)` is unique on runs, so no occurrence can fire twice."""

    __tablename__ = "campaign"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # cmp_…
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id"))
    name: Mapped[str] = mapped_column(String(100))
    # draft | scheduled | running | paused | completed | canceled
    status: Mapped[str] = mapped_column(String(12))
    message_type: Mapped[str] = mapped_column(String(16))  # marketing | notification
    sender: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(EncryptedText)  # with {variables} and {name|default}
    on_missing: Mapped[str] = mapped_column(String(8), default="skip")  # skip | empty: a variable without value
    group_ids: Mapped[list[str]] = mapped_column(JsonType, default=list)  # groups and saved filters
    audience_group_id: Mapped[str | None] = mapped_column(String(30))  # its own group: files, typed numbers
    schedule: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # mode now | at | recurring
    time_zone: Mapped[str] = mapped_column(String(64))  # of `schedule` times
    next_fire_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    runs_fired: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(SmallInteger, default=1)  # 0 high, 1 normal, 2 low (among campaigns)
    tps_cap: Mapped[int | None] = mapped_column(Integer)  # messages per second released to the queue
    validity_hours: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


Index("ix_campaign_account", Campaign.account_id, Campaign.id)
Index("ix_campaign_next_fire", Campaign.next_fire_at)


class CampaignRun(Base):
    """One firing of a campaign: its audience snapshot becomes one batch of `scheduled` messages
    (materialized in chunks, `cursor` = last contact id done), released to the queue at the campaign's
    pace, never inside the recipients' quiet hours."""

    __tablename__ = "campaign_run"
    __table_args__ = (UniqueConstraint("campaign_id", "occurrence_at", name="uq_campaign_run_occurrence"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)  # run_…
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(30))
    occurrence_at: Mapped[datetime] = mapped_column(UtcDateTime)  # the planned time it stands for
    batch_id: Mapped[str] = mapped_column(String(30))
    # materializing | sending | paused | completed | canceled | skipped | failed
    status: Mapped[str] = mapped_column(String(14))
    audience_total: Mapped[int | None] = mapped_column(Integer)
    materialized: Mapped[int] = mapped_column(Integer, default=0)  # audience rows processed
    accepted_count: Mapped[int] = mapped_column(Integer, default=0)
    rejected_count: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[str | None] = mapped_column(String(30))  # last contact id materialized
    estimate_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(EncryptedJson, default=list)  # first problems (numbers)
    lease_holder: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


Index("ix_campaign_run_campaign", CampaignRun.campaign_id, CampaignRun.id)
Index("ix_campaign_run_status", CampaignRun.status)
