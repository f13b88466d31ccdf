"""The review workflow shared by signatures and templates: `pending` → `approved` | `rejected` (a reason is
required), or `withdrawn` by the account; only a pending application can be decided or withdrawn.

The decision is written on the row (status, reason, reviewed_by, reviewed_at) and, with the before and
after values, in the audit log, which is the history reviewers and the account see ("who decided what").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.models import AuditEntry
from hongyan.audit.service import Actor, record
from hongyan.compliance.documents import DocumentInfo, store_document
from hongyan.compliance.models import REVIEW_STATUSES
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, Unprocessable

DECISIONS = ("approved", "rejected")
MAX_REASON = 500


class Reviewable(Protocol):
    id: str
    account_id: str
    status: str
    reason: str | None
    updated_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None


def reviewer_label(actor: Actor) -> str:
    """How the row names who decided: `user:usr_…` or `key:key_…` (models.Signature.reviewed_by)."""
    kind = {"api_key": "key"}.get(actor.type, actor.type)
    return f"{kind}:{actor.id or actor.label or ''}"[:40]


def require_pending(row: Reviewable, what: str) -> None:
    if row.status != "pending":
        raise Conflict(
            "review_not_pending",
            f"This {what} is {row.status}; only a pending application can be decided or withdrawn.",
            field="status",
            details={"status": row.status},
        )


def clean_reason(decision: str, reason: str | None) -> str | None:
    """The reviewer's reason: required to reject (the applicant must learn what to fix), optional to approve."""
    if decision not in DECISIONS:
        raise Unprocessable("invalid_decision", "decision must be approved or rejected.", field="decision")
    text = (reason or "").strip()
    if decision == "rejected" and not text:
        raise Unprocessable("reason_required", "Say why the application is rejected.", field="reason")
    if len(text) > MAX_REASON:
        raise Unprocessable(
            "reason_too_long", f"The reason has {len(text)} characters; at most {MAX_REASON}.", field="reason"
        )
    return text or None


async def decide(
    session: AsyncSession,
    row: Reviewable,
    *,
    kind: str,
    decision: str,
    reason: str | None,
    actor: Actor,
    extra: dict[str, Any] | None = None,
) -> None:
    """Approve or reject a pending row (in the caller's transaction) and record the decision."""
    reason = clean_reason(decision, reason)
    require_pending(row, kind.replace("_", " "))
    now = utcnow()
    row.status, row.reason = decision, reason
    row.reviewed_by, row.reviewed_at, row.updated_at = reviewer_label(actor), now, now
    await record(
        session,
        actor=actor,
        action=f"{kind}.{decision}",
        account_id=row.account_id,
        target_type=kind,
        target_id=row.id,
        before={"status": "pending"},
        after={"status": decision, "reason": reason, **(extra or {})},
        occurred_at=now,
    )


async def withdraw(session: AsyncSession, row: Reviewable, *, kind: str, actor: Actor) -> None:
    require_pending(row, kind.replace("_", " "))
    row.status, row.updated_at = "withdrawn", utcnow()
    await record(
        session,
        actor=actor,
        action=f"{kind}.withdrawn",
        account_id=row.account_id,
        target_type=kind,
        target_id=row.id,
        before={"status": "pending"},
        after={"status": "withdrawn"},
    )


async def add_document(
    session: AsyncSession,
    row: Reviewable,
    *,
    kind: str,
    actor: Actor,
    filename: str | None,
    data: bytes,
    max_bytes: int,
    field: str = "file",
) -> DocumentInfo:
    """A supporting document for a pending application (type by magic bytes, size capped, sealed)."""
    require_pending(row, kind)
    info = await store_document(
        session,
        account_id=row.account_id,
        owner_kind=kind,
        owner_id=row.id,
        filename=filename,
        data=data,
        max_bytes=max_bytes,
        field=field,
    )
    await record(
        session,
        actor=actor,
        action=f"{kind}.document_added",
        account_id=row.account_id,
        target_type=kind,
        target_id=row.id,
        after={
            "document_id": info.id,
            "filename": info.filename,
            "content_type": info.content_type,
            "size": info.size,
        },
    )
    return info


async def account_rows(session: AsyncSession, model: Any, *, account_id: str, status: str | None) -> list[Any]:
    """An account's applications of one kind (signatures, templates), newest first, optionally one status."""
    query = select(model).where(model.account_id == account_id)
    if status:
        if status not in REVIEW_STATUSES:
            raise Unprocessable(
                "invalid_status", f"status must be one of {', '.join(REVIEW_STATUSES)}.", field="status"
            )
        query = query.where(model.status == status)
    return list(await session.scalars(query.order_by(model.id.desc())))


def queue_order(model: Any) -> tuple[Any, Any]:
    """Review queues: pending first, then oldest first (ids sort by creation time)."""
    return case((model.status == "pending", 0), else_=1), model.id


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    action: str  # applied | resubmitted | approved | rejected | withdrawn | document_added | default_set
    actor_type: str
    actor_label: str | None
    actor_id: str | None
    reason: str | None


async def history(session: AsyncSession, *, kind: str, target_id: str) -> list[HistoryEntry]:
    """Everything that happened to one application, oldest first, from the audit log."""
    rows = (
        await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.target_type == kind, AuditEntry.target_id == target_id)
            .order_by(AuditEntry.seq)
        )
    ).all()
    return [
        HistoryEntry(
            e.occurred_at,
            e.action.split(".", 1)[-1],
            e.actor_type,
            e.actor_label,
            e.actor_id,
            (e.after or {}).get("reason"),
        )
        for e in rows
    ]
