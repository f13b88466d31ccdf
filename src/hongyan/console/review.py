"""The review back office for platform staff: queues of signatures and templates (pending first, oldest
first), one application with its documents (images previewed inline), approve, reject with a reason, and
the history of decisions (who, when, why) from the audit log. KYC and held messages have their own pages
(console/review_kyc.py, review_messages.py) under the same tabs (templates/_review_nav.html).

Who may use it: `StaffReviewer` — users whose platform_role is "reviewer" or "platform_admin"; anyone
else gets the console's 403 page naming the permission (operator.review). Other review pages import it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import OPERATOR_REVIEW, PLATFORM_ADMIN, REVIEWER, Authority
from hongyan.audit.service import actor_for_console
from hongyan.compliance import reviews, signatures, templates
from hongyan.compliance.documents import documents_of
from hongyan.compliance.models import KycApplication, MessageHold, MessageTemplate, Signature
from hongyan.compliance.review_http import document_response, owned_document
from hongyan.compliance.template_variables import VARIABLE_TYPES
from hongyan.console.access import NoPermission
from hongyan.console.channels import RoleAwareUser, with_platform_role
from hongyan.console.context import CheckedForm, Console, FieldErrors, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, NotFound

router = APIRouter(prefix="/console", include_in_schema=False)
STAFF_ROLES = (REVIEWER, PLATFORM_ADMIN)
QUEUE_FILTERS = ("pending", "approved", "rejected", "withdrawn", "all")
KINDS = {"signatures": signatures.KIND, "templates": templates.KIND}


async def staff_reviewer(console: Annotated[Console, Depends(with_platform_role)]) -> Console:
    """The signed-in console of a reviewer or platform administrator; anyone else: 403 (operator.review)."""
    user = console.user
    if not (isinstance(user, RoleAwareUser) and user.platform_role in STAFF_ROLES):
        raise NoPermission(console, OPERATOR_REVIEW)
    return console


StaffReviewer = Annotated[Console, Depends(staff_reviewer)]


def reviewer_authority(console: Console) -> Authority:
    """The reviewer as the one acting: their platform role grants operator.review (never a customer right)."""
    user = console.user
    assert isinstance(user, RoleAwareUser)
    return Authority.of_member(
        account_id=user.account_id, user_id=user.user_id, role=user.platform_role or "", label=user.email
    )


async def pending_counts(session: AsyncSession) -> dict[str, int]:
    """Open items per tab of the back office (for the badges of _review_nav.html: pass as review_counts)."""

    async def count(query: Any) -> int:
        return int(await session.scalar(query) or 0)

    return {
        "signatures": await count(
            select(func.count()).select_from(Signature).where(Signature.status == "pending")
        ),
        "templates": await count(
            select(func.count()).select_from(MessageTemplate).where(MessageTemplate.status == "pending")
        ),
        "kyc": await count(
            select(func.count()).select_from(KycApplication).where(KycApplication.status == "pending")
        ),
        "messages": await count(
            select(func.count()).select_from(MessageHold).where(MessageHold.decided_at.is_(None))
        ),
    }


async def _account_names(session: AsyncSession, account_ids: set[str]) -> dict[str, str]:
    if not account_ids:
        return {}
    rows = (await session.execute(select(Account.id, Account.name).where(Account.id.in_(account_ids)))).all()
    return {r.id: r.name for r in rows}


@router.get("/review")
async def review_home(console: StaffReviewer) -> Any:
    return console.redirect("/console/review/signatures")


async def review_queue(console: Console, area: str, status: str) -> Any:
    status = status if status in QUEUE_FILTERS else "pending"
    wanted = None if status == "all" else status
    authority = reviewer_authority(console)
    async with console.db.read() as session:
        rows: list[Any]
        if area == "signatures":
            rows = await signatures.review_queue(session, authority=authority, status=wanted, limit=200)
        else:
            rows = await templates.review_queue(session, authority=authority, status=wanted, limit=200)
        names = await _account_names(session, {r.account_id for r in rows})
        counts = await pending_counts(session)
    return console.render(
        f"review_{area}.html",
        active="review",
        review_tab=area,
        review_counts=counts,
        items=rows,
        account_names=names,
        queue_status=status,
        filters=QUEUE_FILTERS,
    )


async def _load(console: Console, area: str, item_id: str) -> Any:
    authority = reviewer_authority(console)
    async with console.db.read() as session:
        if area == "signatures":
            return await signatures.get_for_review(session, authority=authority, signature_id=item_id)
        return await templates.get_for_review(session, authority=authority, template_id=item_id)


def _example(row: MessageTemplate) -> str | None:
    """The template filled with each variable type's example value, to read it as a recipient would."""
    try:
        return templates.render(
            row.body, {v["name"]: VARIABLE_TYPES[v["type"]].example for v in row.variables or []}
        )
    except (HongyanError, KeyError):
        return None


async def _render_detail(
    console: Console,
    area: str,
    row: Any,
    *,
    errors: FieldErrors | None = None,
    reason: str = "",
    status: int = 200,
) -> Any:
    kind = KINDS[area]
    async with console.db.read() as session:
        documents = await documents_of(session, kind, row.id)
        history = await reviews.history(session, kind=kind, target_id=row.id)
        account = await session.get(Account, row.account_id)
        signature = None
        if area == "templates" and row.signature_id:
            signature = await session.get(Signature, row.signature_id)
        counts = await pending_counts(session)
    return console.render(
        f"review_{area}_detail.html",
        status=status,
        active="review",
        review_tab=area,
        review_counts=counts,
        item=row,
        documents=documents,
        history=history,
        account=account,
        signature=signature,
        example=_example(row) if area == "templates" else None,
        errors=errors or FieldErrors(),
        reason=reason,
        base=f"/console/review/{area}/{row.id}",
        # who decided, as a person reads it (email or key name) rather than the row's user:usr_… reference
        decided_by=next(
            (h.actor_label or h.actor_id for h in reversed(history) if h.action in reviews.DECISIONS),
            row.reviewed_by,
        ),
    )


async def review_item(console: Console, area: str, item_id: str) -> Any:
    try:
        row = await _load(console, area, item_id)
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    return await _render_detail(console, area, row)


async def decide(console: Console, form: Any, area: str, item_id: str, verdict: str) -> Any:
    """Approve or reject; a refused decision (no reason, no longer pending) is shown next to the reason."""
    reason = form_text(form, "reason")
    try:
        async with console.db.write() as session:
            kwargs: dict[str, Any] = {
                "authority": reviewer_authority(console),
                "actor": actor_for_console(console),
                "decision": verdict,
                "reason": reason,
            }
            if area == "signatures":
                row = await signatures.review(session, signature_id=item_id, **kwargs)
            else:
                row = await templates.review(session, template_id=item_id, **kwargs)
            label = f"【{row.name}】" if area == "signatures" else row.name
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "reason" if exc.field in ("reason", "decision") else "decision", exc)
        return await _render_detail(
            console,
            area,
            await _load(console, area, item_id),
            errors=errors,
            reason=reason,
            status=exc.status_code,
        )
    flash = Flash(
        kind="success",
        key=f"review.flash.{verdict}",
        params={"name": label},
        link=f"/console/review/{area}/{item_id}",
    )
    return console.redirect(f"/console/review/{area}", flash=flash)


async def review_document(
    console: Console, area: str, item_id: str, document_id: str, download: int
) -> Response:
    try:
        async with console.db.read() as session:
            doc = await owned_document(
                session, owner_kind=KINDS[area], owner_id=item_id, document_id=document_id, account_id=None
            )
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    return console.finish(document_response(doc, inline=not download))


# explicit paths per area (no /review/{area} pattern: /console/review/kyc and …/messages belong to other modules)
@router.get("/review/signatures")
async def signature_queue(console: StaffReviewer, status: str = "pending") -> Any:
    return await review_queue(console, "signatures", status)


@router.get("/review/templates")
async def template_queue(console: StaffReviewer, status: str = "pending") -> Any:
    return await review_queue(console, "templates", status)


@router.get("/review/signatures/{item_id}")
async def signature_item(console: StaffReviewer, item_id: str) -> Any:
    return await review_item(console, "signatures", item_id)


@router.get("/review/templates/{item_id}")
async def template_item(console: StaffReviewer, item_id: str) -> Any:
    return await review_item(console, "templates", item_id)


@router.post("/review/signatures/{item_id}/approve")
async def approve_signature(console: StaffReviewer, form: CheckedForm, item_id: str) -> Any:
    return await decide(console, form, "signatures", item_id, "approved")


@router.post("/review/signatures/{item_id}/reject")
async def reject_signature(console: StaffReviewer, form: CheckedForm, item_id: str) -> Any:
    return await decide(console, form, "signatures", item_id, "rejected")


@router.post("/review/templates/{item_id}/approve")
async def approve_template(console: StaffReviewer, form: CheckedForm, item_id: str) -> Any:
    return await decide(console, form, "templates", item_id, "approved")


@router.post("/review/templates/{item_id}/reject")
async def reject_template(console: StaffReviewer, form: CheckedForm, item_id: str) -> Any:
    return await decide(console, form, "templates", item_id, "rejected")


@router.get("/review/signatures/{item_id}/documents/{document_id}")
async def signature_document(
    console: StaffReviewer, item_id: str, document_id: str, download: int = 0
) -> Response:
    return await review_document(console, "signatures", item_id, document_id, download)


@router.get("/review/templates/{item_id}/documents/{document_id}")
async def template_document(
    console: StaffReviewer, item_id: str, document_id: str, download: int = 0
) -> Response:
    return await review_document(console, "templates", item_id, document_id, download)
