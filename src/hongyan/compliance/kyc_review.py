"""The reviewers' side of enterprise verification: the queue (pending first, oldest first), the decision
(approved → the account is verified; rejected with a reason → it may apply again), and putting an account
back to unverified. Every decision is in the audit log, which is the history "who decided what".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts import permissions as p
from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.audit.service import Actor, record
from hongyan.compliance.documents import documents_of
from hongyan.compliance.kyc import account_for_update, load_application
from hongyan.compliance.models import ComplianceDocument, KycApplication
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, Unprocessable

MAX_REASON = 1000


# -- the queue ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApplicationRow:
    id: str
    account_id: str
    account_name: str
    company_name: str
    registration_number: str
    status: str
    reason: str | None
    created_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    documents: int


async def list_applications(
    session: AsyncSession,
    *,
    status: str | None = None,
    account_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[ApplicationRow]:
    """The review queue: pending applications first, oldest first (first come, first served); decided ones
    after them, most recently decided first."""
    docs = (
        select(ComplianceDocument.owner_id, func.count().label("n"))
        .where(ComplianceDocument.owner_kind == "kyc")
        .group_by(ComplianceDocument.owner_id)
        .subquery()
    )
    q = (
        select(KycApplication, Account.name, func.coalesce(docs.c.n, 0))
        .join(Account, Account.id == KycApplication.account_id)
        .outerjoin(docs, docs.c.owner_id == KycApplication.id)
    )
    if status is not None:
        q = q.where(KycApplication.status == status)
    if account_id is not None:
        q = q.where(KycApplication.account_id == account_id)
    pending_first = case((KycApplication.status == "pending", 0), else_=1)
    oldest_pending = case((KycApplication.status == "pending", KycApplication.created_at), else_=None)
    q = (
        q.order_by(pending_first, oldest_pending.asc(), KycApplication.reviewed_at.desc(), KycApplication.id)
        .limit(limit)
        .offset(offset)
    )
    return [
        ApplicationRow(
            a.id,
            a.account_id,
            name,
            a.company_name,
            a.registration_number,
            a.status,
            a.reason,
            a.created_at,
            a.reviewed_by,
            a.reviewed_at,
            int(n),
        )
        for a, name, n in (await session.execute(q)).all()
    ]


async def count_pending(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(KycApplication).where(KycApplication.status == "pending")
        )
        or 0
    )


async def decide_application(
    session: AsyncSession,
    *,
    reviewer: p.Authority,
    actor: Actor,
    application_id: str,
    decision: str,
    reason: str | None = None,
) -> KycApplication:
    """Approve (the account becomes verified) or reject with a reason (rejected; it may apply again)."""
    p.require(reviewer, p.OPERATOR_REVIEW)
    if decision not in ("approved", "rejected"):
        raise Unprocessable("invalid_decision", "decision must be approved or rejected.", field="decision")
    reason = _reason(reason, required=decision == "rejected")
    application = await load_application(session, application_id, account_id=None, lock=True)
    if application.status != "pending":
        raise Conflict(
            "review_not_pending",
            f"The application was already {application.status}.",
            field="application_id",
            details={"status": application.status},
        )
    if decision == "approved" and not await documents_of(session, "kyc", application.id):
        raise Unprocessable(
            "document_required",
            "The application has no business licence yet; it cannot be approved before one is uploaded.",
            field="license",
        )
    account = await account_for_update(session, application.account_id)
    now = utcnow()
    application.status, application.reason = decision, reason
    application.reviewed_by, application.reviewed_at, application.updated_at = _who(actor), now, now
    before = account.kyc_status
    account.kyc_status = "verified" if decision == "approved" else "rejected"
    await record(
        session,
        actor=actor,
        action=f"kyc.{decision}",
        account_id=account.id,
        target_type="kyc_application",
        target_id=application.id,
        before={"status": "pending", "kyc_status": before},
        after={
            "status": decision,
            "kyc_status": account.kyc_status,
            "reason": reason,
            "company_name": application.company_name,
        },
        occurred_at=now,
    )
    return application


async def reset_verification(
    session: AsyncSession, *, reviewer: p.Authority, actor: Actor, account_id: str, reason: str | None
) -> str:
    """Put an account back to `unverified` (e.g. one grandfathered as verified by migration 0007, or one
    whose company changed): the limits apply again until a new application is approved."""
    p.require(reviewer, p.OPERATOR_REVIEW)
    text = _reason(reason, required=True)
    account = await account_for_update(session, account_id)
    if account.kyc_status == "pending":
        raise Conflict("kyc_pending", "An application is waiting for review; decide it instead.", field=None)
    before = account.kyc_status
    account.kyc_status = "unverified"
    await record(
        session,
        actor=actor,
        action="kyc.reset",
        account_id=account.id,
        target_type="account",
        target_id=account.id,
        before={"kyc_status": before},
        after={"kyc_status": "unverified", "reason": text},
    )
    return before


def _reason(reason: str | None, *, required: bool) -> str | None:
    text = (reason or "").strip()
    if required and not text:
        raise Unprocessable("reason_required", "Say why (the account sees the reason).", field="reason")
    if "\x00" in text:
        raise Unprocessable("invalid_value", "The reason contains a NUL character.", field="reason")
    if len(text) > MAX_REASON:
        raise Unprocessable(
            "value_too_long", f"The reason has at most {MAX_REASON} characters.", field="reason"
        )
    return text or None


def _who(actor: Actor) -> str:
    """How the row names who decided: `user:usr_…` or `key:key_…` (like signatures and templates)."""
    kind = {"api_key": "key"}.get(actor.type, actor.type)
    return f"{kind}:{actor.id or actor.label or ''}"[:40]


async def application_history(session: AsyncSession, application_id: str) -> list[AuditEntry]:
    """Everything that happened to one application, oldest first, from the audit log."""
    return list(
        (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.target_type == "kyc_application", AuditEntry.target_id == application_id)
                .order_by(AuditEntry.seq)
            )
        ).all()
    )


async def recent_decisions(session: AsyncSession, *, limit: int = 20) -> list[AuditEntry]:
    """The latest KYC decisions of every reviewer (approved, rejected, reset), newest first, from the audit log."""
    actions = ("kyc.approved", "kyc.rejected", "kyc.reset")
    return list(
        (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action.in_(actions))
                .order_by(AuditEntry.seq.desc())
                .limit(limit)
            )
        ).all()
    )
