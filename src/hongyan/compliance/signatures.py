"""Sender signatures `【公司名】`: an account applies with a purpose and supporting documents, a platform
reviewer approves or rejects it with a reason, and only approved signatures can be sent with.

Rules (docs/signatures-and-templates.md):
* name: 2–20 characters after stripping spaces, given with or without 【】, no brackets inside, not only
  digits and punctuation, unique per account (`signature_exists`);
* source: company | app | website | trademark | public_account | other; purpose required;
* documents are uploaded after the application (multipart); a `company` or `trademark` signature cannot
  be approved without at least one (`signature_documents_required`), so the reviewer rejects it instead;
* applying again with the name of a rejected or withdrawn signature reopens that row (same id, back to
  pending, its earlier documents kept): names are unique per account, and the history stays in one place;
* the first signature approved becomes the account's default (used when a send names none).
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ, OPERATOR_REVIEW, Authority, require
from hongyan.audit.service import Actor, record
from hongyan.compliance import reviews
from hongyan.compliance.documents import DocumentInfo, documents_of
from hongyan.compliance.models import Signature
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, NotFound, Unprocessable

KIND = "signature"
SOURCES = ("company", "app", "website", "trademark", "public_account", "other")
SOURCES_NEEDING_DOCUMENTS = ("company", "trademark")
MIN_NAME, MAX_NAME = 2, 20
MAX_PURPOSE = 500
_BRACKETS = re.compile(r"[【】\[\]［］〖〗〔〕「」『』]")


class SignatureRef(NamedTuple):
    """What the submit gate needs of an approved signature."""

    id: str
    name: str
    is_default: bool


def normalize_name(raw: str) -> str:
    """The signature's name without its brackets and surrounding spaces, or `signature_name_invalid`."""
    name = (raw or "").strip()
    if name.startswith("【") and name.endswith("】"):
        name = name[1:-1].strip()

    def invalid(why: str) -> Unprocessable:
        return Unprocessable("signature_name_invalid", f"The signature {why}.", field="name")

    if not MIN_NAME <= len(name) <= MAX_NAME:
        raise invalid(f"must have {MIN_NAME}–{MAX_NAME} characters inside 【】; it has {len(name)}")
    if _BRACKETS.search(name):
        raise invalid("must not contain brackets (write it without 【】 or with one pair around it)")
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise invalid("must not contain line breaks or control characters")
    if not any(ch.isalpha() for ch in name):
        raise invalid("must contain letters or Chinese characters, not only digits and punctuation")
    return name


def _purpose(raw: str | None) -> str:
    text = (raw or "").strip()
    if not text:
        raise Unprocessable(
            "signature_purpose_required",
            "Say what the signature is for (who sends with it, to whom, which messages).",
            field="purpose",
        )
    if len(text) > MAX_PURPOSE:
        raise Unprocessable(
            "signature_purpose_too_long",
            f"The purpose has {len(text)} characters; at most {MAX_PURPOSE}.",
            field="purpose",
        )
    return text


def _source(raw: str | None) -> str:
    if raw not in SOURCES:
        raise Unprocessable(
            "signature_source_invalid", f"source must be one of {', '.join(SOURCES)}.", field="source"
        )
    return raw


def view(s: Signature) -> dict[str, object]:
    """The fields the audit log keeps of an application."""
    return {"name": s.name, "source": s.source, "purpose": s.purpose, "status": s.status}


async def apply(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    name: str,
    purpose: str | None,
    source: str | None,
) -> Signature:
    """A new application (pending), or a rejected/withdrawn one with the same name reopened."""
    require(authority, ACCOUNT_SETTINGS)
    clean, why, kind = normalize_name(name), _purpose(purpose), _source(source)
    existing = await session.scalar(
        select(Signature).where(Signature.account_id == authority.account_id, Signature.name == clean)
    )
    now = utcnow()
    if existing is not None:
        if existing.status in ("pending", "approved"):
            raise Conflict(
                "signature_exists",
                f"The account already has the signature 【{clean}】 ({existing.status}).",
                field="name",
                details={"signature_id": existing.id, "status": existing.status},
            )
        before = view(existing)
        existing.purpose, existing.source, existing.status = why, kind, "pending"
        existing.reason, existing.reviewed_by, existing.reviewed_at, existing.updated_at = (
            None,
            None,
            None,
            now,
        )
        await record(
            session,
            actor=actor,
            action="signature.resubmitted",
            account_id=existing.account_id,
            target_type=KIND,
            target_id=existing.id,
            before=before,
            after=view(existing),
        )
        return existing
    row = Signature(
        id=ids.new_id("sig"),
        account_id=authority.account_id,
        name=clean,
        purpose=why,
        source=kind,
        status="pending",
        reason=None,
        is_default=False,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await record(
        session,
        actor=actor,
        action="signature.applied",
        account_id=row.account_id,
        target_type=KIND,
        target_id=row.id,
        after=view(row),
    )
    return row


async def resubmit(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    signature_id: str,
    purpose: str | None = None,
    source: str | None = None,
) -> Signature:
    """A rejected or withdrawn signature back to pending (optionally with a new purpose or source)."""
    row = await get(session, authority=authority, signature_id=signature_id, permission=ACCOUNT_SETTINGS)
    if row.status not in ("rejected", "withdrawn"):
        raise Conflict(
            "review_not_resubmittable",
            f"This signature is {row.status}; only a rejected or withdrawn one can be submitted again.",
            field="status",
            details={"status": row.status},
        )
    return await apply(
        session,
        authority=authority,
        actor=actor,
        name=row.name,
        purpose=row.purpose if purpose is None else purpose,
        source=row.source if source is None else source,
    )


async def list_signatures(
    session: AsyncSession, *, authority: Authority, status: str | None = None
) -> list[Signature]:
    """The account's signatures, newest first (optionally one status)."""
    require(authority, MESSAGES_READ)
    return await reviews.account_rows(session, Signature, account_id=authority.account_id, status=status)


async def get(
    session: AsyncSession, *, authority: Authority, signature_id: str, permission: str = MESSAGES_READ
) -> Signature:
    """One of the account's signatures (another account's is `signature_not_found`, as if it did not exist)."""
    require(authority, permission)
    row = await session.get(Signature, signature_id)
    if row is None or row.account_id != authority.account_id:
        raise NotFound("signature_not_found", "No such signature in this account.", field="signature_id")
    return row


async def withdraw(
    session: AsyncSession, *, authority: Authority, actor: Actor, signature_id: str
) -> Signature:
    row = await get(session, authority=authority, signature_id=signature_id, permission=ACCOUNT_SETTINGS)
    await reviews.withdraw(session, row, kind=KIND, actor=actor)
    return row


async def set_default(
    session: AsyncSession, *, authority: Authority, actor: Actor, signature_id: str
) -> Signature:
    """The signature used when a send names none (approved only; one per account)."""
    row = await get(session, authority=authority, signature_id=signature_id, permission=ACCOUNT_SETTINGS)
    if row.status != "approved":
        raise Conflict(
            "signature_default_not_approved",
            f"Only an approved signature can be the default; this one is {row.status}.",
            field="signature_id",
            details={"status": row.status},
        )
    if not row.is_default:
        previous = await session.scalar(
            select(Signature.id).where(Signature.account_id == row.account_id, Signature.is_default.is_(True))
        )
        await session.execute(
            update(Signature)
            .where(Signature.account_id == row.account_id, Signature.id != row.id)
            .values(is_default=False)
        )
        row.is_default, row.updated_at = True, utcnow()
        await record(
            session,
            actor=actor,
            action="signature.default_set",
            account_id=row.account_id,
            target_type=KIND,
            target_id=row.id,
            before={"default": previous},
            after={"default": row.id},
        )
    return row


# -- reviewers -------------------------------------------------------------------------------------
async def review_queue(
    session: AsyncSession, *, authority: Authority, status: str | None = "pending", limit: int = 100
) -> list[Signature]:
    """Every account's signatures for reviewers: pending first, oldest first (`status` None: all)."""
    require(authority, OPERATOR_REVIEW)
    query = select(Signature)
    if status:
        query = query.where(Signature.status == status)
    return list(await session.scalars(query.order_by(*reviews.queue_order(Signature)).limit(limit)))


async def get_for_review(session: AsyncSession, *, authority: Authority, signature_id: str) -> Signature:
    require(authority, OPERATOR_REVIEW)
    row = await session.get(Signature, signature_id)
    if row is None:
        raise NotFound("signature_not_found", "No such signature.", field="signature_id")
    return row


async def review(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    signature_id: str,
    decision: str,
    reason: str | None = None,
) -> Signature:
    """Approve or reject a pending signature (reason required to reject)."""
    row = await get_for_review(session, authority=authority, signature_id=signature_id)
    reviews.clean_reason(decision, reason)
    reviews.require_pending(row, KIND)
    extra: dict[str, object] = {}
    if decision == "approved":
        if row.source in SOURCES_NEEDING_DOCUMENTS and not await documents_of(session, KIND, row.id):
            raise Unprocessable(
                "signature_documents_required",
                f"A {row.source} signature needs a supporting "
                "document (business licence, trademark certificate) before it can be approved; "
                "reject it and say which document is missing.",
                field="documents",
            )
        has_default = await session.scalar(
            select(Signature.id).where(Signature.account_id == row.account_id, Signature.is_default.is_(True))
        )
        if has_default is None:
            row.is_default = True
            extra["default"] = True
    await reviews.decide(session, row, kind=KIND, decision=decision, reason=reason, actor=actor, extra=extra)
    return row


async def approved_signatures(session: AsyncSession, account_id: str) -> dict[str, SignatureRef]:
    """The account's approved signatures by name (for the submit gate: one indexed read)."""
    rows = (
        await session.execute(
            select(Signature.id, Signature.name, Signature.is_default).where(
                Signature.account_id == account_id, Signature.status == "approved"
            )
        )
    ).all()
    return {r.name: SignatureRef(r.id, r.name, bool(r.is_default)) for r in rows}


async def add_document(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    signature_id: str,
    filename: str | None,
    data: bytes,
    max_bytes: int,
    field: str = "file",
) -> DocumentInfo:
    """A supporting document for a pending signature (PDF, PNG or JPEG by content, at most `max_bytes`)."""
    row = await get(session, authority=authority, signature_id=signature_id, permission=ACCOUNT_SETTINGS)
    return await reviews.add_document(
        session, row, kind=KIND, actor=actor, filename=filename, data=data, max_bytes=max_bytes, field=field
    )
