"""The held-messages queue of the review back office (platform staff): messages the content filter held,
numbers masked (reviewers judge the content, not the people), the text with the matched pattern marked;
choose several, approve them (sent on) or reject them with a reason (not sent, funds released); the latest
decisions (who, when, how many, why) from the audit log.

Same service as /v1/operator/reviews/messages (compliance.holds); tabs and staff check from console.review.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.accounts.models import Account
from hongyan.audit.service import actor_for_console
from hongyan.compliance import holds, kyc
from hongyan.compliance.held_review import highlight, mask_number, recent_decisions, rule_kinds
from hongyan.console.context import CheckedForm, Console, FieldErrors, form_text
from hongyan.console.review import StaffReviewer, pending_counts
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/review/messages"
FILTERS = ("open", "all")
PAGE_SIZE = 200


async def _queue(
    console: Console,
    status: str,
    *,
    errors: FieldErrors | None = None,
    reason: str = "",
    chosen: frozenset[str] = frozenset(),
    code: int = 200,
) -> Any:
    status = status if status in FILTERS else "open"
    async with console.db.read() as session:
        rows = await holds.list_holds(session, open_only=status == "open", limit=PAGE_SIZE)
        kinds = await rule_kinds(session, rows)
        account_ids = sorted({r.account_id for r in rows})
        names = {}
        if account_ids:
            names = {
                r.id: r.name
                for r in await session.execute(
                    select(Account.id, Account.name).where(Account.id.in_(account_ids))
                )
            }
        decisions = await recent_decisions(session)
        counts = await pending_counts(session)
    items = [
        {
            "hold": r,
            "to": mask_number(r.to),
            "parts": highlight(r.body, r.matched, kinds.get(r.rule_id or "")),
            "kind": kinds.get(r.rule_id or ""),
            "account_name": names.get(r.account_id, ""),
        }
        for r in rows
    ]
    return console.render(
        "review_messages.html",
        status=code,
        active="review",
        review_tab="messages",
        review_counts=counts,
        items=items,
        decisions=decisions,
        queue_status=status,
        filters=FILTERS,
        errors=errors or FieldErrors(),
        reason=reason,
        chosen=chosen,
        open_count=counts.get("messages", 0),
    )


@router.get("/review/messages")
async def held_queue(console: StaffReviewer, status: str = "open") -> Any:
    return await _queue(console, status)


@router.post("/review/messages/decide")
async def decide_held(console: StaffReviewer, form: CheckedForm) -> Any:
    message_ids = [v for v in form.getlist("message_ids") if isinstance(v, str) and kyc.is_id(v)][
        : PAGE_SIZE * 2
    ]
    decision = form_text(form, "decision")
    reason = form_text(form, "reason")
    try:
        decided = await holds.decide(
            console.db,
            message_ids=list(dict.fromkeys(message_ids)),
            decision=decision,
            actor=actor_for_console(console),
            reason=reason or None,
        )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, exc.field if exc.field in ("reason", "message_ids") else "decision", exc)
        return await _queue(
            console, "open", errors=errors, reason=reason, chosen=frozenset(message_ids), code=exc.status_code
        )
    if decided == 0:
        return console.redirect(PAGE, flash=Flash(kind="info", key="held.flash.none", params={}))
    return console.redirect(
        PAGE, flash=Flash(kind="success", key=f"held.flash.{decision}", params={"n": decided})
    )
