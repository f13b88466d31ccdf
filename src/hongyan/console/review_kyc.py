"""The KYC queue of the review back office (platform staff: reviewers and platform administrators):
applications pending first, oldest first; one application with its licence (images inline, PDFs to
download), approve, reject with a reason; the latest decisions of every reviewer (who, when, why) from the
audit log; and putting an account back to unverified (e.g. one grandfathered as verified by migration 0007).

Same services as /v1/operator/reviews/kyc (compliance.kyc, compliance.kyc_review); the tabs and the staff
check come from console.review.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from hongyan.accounts.models import Account
from hongyan.audit.service import actor_for_console
from hongyan.compliance import kyc, kyc_review
from hongyan.compliance.documents import load_document
from hongyan.compliance.review_http import document_response
from hongyan.console.context import CheckedForm, Console, FieldErrors, form_text
from hongyan.console.review import StaffReviewer, pending_counts, reviewer_authority
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, NotFound

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/review/kyc"
FILTERS = ("pending", "approved", "rejected", "all")
# the audit actions of an application, as the shared history list (_review_decision.html) names them
HISTORY_ACTIONS = {
    "submitted": "applied",
    "document_added": "document_added",
    "approved": "approved",
    "rejected": "rejected",
}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    action: str
    actor_type: str
    actor_label: str | None
    actor_id: str | None
    reason: str | None


async def _queue(
    console: Console,
    status: str,
    *,
    reset_errors: FieldErrors | None = None,
    reset_form: dict[str, str] | None = None,
    code: int = 200,
) -> Any:
    status = status if status in FILTERS else "pending"
    async with console.db.read() as session:
        rows = await kyc_review.list_applications(
            session, status=None if status == "all" else status, limit=200
        )
        decisions = await kyc_review.recent_decisions(session)
        counts = await pending_counts(session)
    return console.render(
        "review_kyc.html",
        status=code,
        active="review",
        review_tab="kyc",
        review_counts=counts,
        items=rows,
        decisions=decisions,
        queue_status=status,
        filters=FILTERS,
        errors=reset_errors or FieldErrors(),
        reset=reset_form or {"account_id": "", "reason": ""},
    )


@router.get("/review/kyc")
async def kyc_queue(console: StaffReviewer, status: str = "pending") -> Any:
    return await _queue(console, status)


async def _detail(
    console: Console,
    application_id: str,
    *,
    errors: FieldErrors | None = None,
    reason: str = "",
    status: int = 200,
) -> Any:
    try:
        async with console.db.read() as session:
            item = await kyc.get_application(session, application_id)
            account = await session.get(Account, item.account_id)
            history = [
                HistoryEntry(
                    e.occurred_at,
                    HISTORY_ACTIONS.get(e.action.split(".", 1)[-1], e.action.split(".")[-1]),
                    e.actor_type,
                    e.actor_label,
                    e.actor_id,
                    (e.after or {}).get("reason"),
                )
                for e in await kyc_review.application_history(session, application_id)
            ]
            counts = await pending_counts(session)
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    return console.render(
        "review_kyc_detail.html",
        status=status,
        active="review",
        review_tab="kyc",
        review_counts=counts,
        item=item,
        account=account,
        documents=item.documents,
        history=history,
        errors=errors or FieldErrors(),
        reason=reason,
        base=f"{PAGE}/{item.id}",
    )


@router.get("/review/kyc/{application_id}")
async def kyc_application(console: StaffReviewer, application_id: str) -> Any:
    return await _detail(console, application_id)


async def _decide(console: Console, form: Any, application_id: str, decision: str) -> Any:
    reason = form_text(form, "reason")
    try:
        async with console.db.write() as session:
            row = await kyc_review.decide_application(
                session,
                reviewer=reviewer_authority(console),
                actor=actor_for_console(console),
                application_id=application_id,
                decision=decision,
                reason=reason,
            )
            company = row.company_name
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "reason" if exc.field == "reason" else "decision", exc)
        return await _detail(console, application_id, errors=errors, reason=reason, status=exc.status_code)
    flash = Flash(
        kind="success",
        key=f"review.flash.{decision}",
        params={"name": company},
        link=f"{PAGE}/{application_id}",
    )
    return console.redirect(PAGE, flash=flash)


@router.post("/review/kyc/{application_id}/approve")
async def approve_application(console: StaffReviewer, form: CheckedForm, application_id: str) -> Any:
    return await _decide(console, form, application_id, "approved")


@router.post("/review/kyc/{application_id}/reject")
async def reject_application(console: StaffReviewer, form: CheckedForm, application_id: str) -> Any:
    return await _decide(console, form, application_id, "rejected")


@router.get("/review/kyc/{application_id}/documents/{document_id}")
async def application_document(
    console: StaffReviewer, application_id: str, document_id: str, download: int = 0
) -> Response:
    """A licence: images shown inline (the detail page previews them), anything else downloaded."""
    try:
        async with console.db.read() as session:
            doc = await load_document(
                session, document_id if kyc.is_id(document_id) else "-", account_id=None
            )
    except NotFound:
        doc = None
    if doc is None or doc.owner_kind != "kyc" or doc.owner_id != application_id:
        return console.render("not_found.html", status=404, what="page")
    inline = not download and doc.content_type.startswith("image/")
    return console.finish(document_response(doc, inline=inline))


@router.post("/review/kyc/reset")
async def reset_account(console: StaffReviewer, form: CheckedForm) -> Any:
    """Put an account back to unverified (its limits apply again until a new application is approved)."""
    typed = {"account_id": form_text(form, "account_id").strip(), "reason": form_text(form, "reason")}
    try:
        async with console.db.write() as session:
            before = await kyc_review.reset_verification(
                session,
                reviewer=reviewer_authority(console),
                actor=actor_for_console(console),
                account_id=typed["account_id"],
                reason=typed["reason"],
            )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "reset_reason" if exc.field == "reason" else "account_id", exc)
        return await _queue(console, "pending", reset_errors=errors, reset_form=typed, code=exc.status_code)
    flash = Flash(
        kind="success",
        key="kycrev.flash.reset",
        params={"account": typed["account_id"], "before": console.t("kyc.status." + before)},
    )
    return console.redirect(PAGE, flash=flash)
