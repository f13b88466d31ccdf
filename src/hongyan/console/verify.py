"""Verification codes page: the account's verifications (numbers masked, status, attempts, sends, times), their
conversion (started → approved) per day and per country, and the account's verify settings.

Everyone who reads messages sees the list and the statistics; owners and admins (`account.settings`) change
the settings (errors next to the field, same checks as the service, audited). The code is never shown: the
page has nothing to show (only its HMAC is stored).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ
from hongyan.audit.service import actor_for_console
from hongyan.compliance.held_review import mask_number
from hongyan.compliance.models import MessageTemplate
from hongyan.console.access import NoPermission, can
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError, Unprocessable
from hongyan.verify import limits, service, stats
from hongyan.verify.events import REASONS, effective_status
from hongyan.verify.models import VERIFICATION_STATUSES

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/verify"
PAGE_SIZE = 50
NUMBER_FIELDS = (
    "code_length",
    "ttl_s",
    "max_attempts",
    "resend_cooldown_s",
    "per_number_hour",
    "per_number_day",
    "per_ip_hour",
    "per_key_minute",
)


def _allowed(console: Console, permission: str) -> None:
    if not can(console, permission):
        raise NoPermission(console, permission)


def _form_of(own: limits.VerifySettings) -> dict[str, str]:
    values = {name: "" if getattr(own, name) is None else str(getattr(own, name)) for name in NUMBER_FIELDS}
    return {
        **values,
        "template_id": own.template_id or "",
        "keep_previous_code": "1" if own.keep_previous_code else "",
    }


async def _render(
    console: Console,
    *,
    status_filter: str = "",
    number: str = "",
    cursor: str = "",
    http_status: int = 200,
    errors: FieldErrors | None = None,
    form: dict[str, str] | None = None,
) -> Any:
    settings = console.request.app.state.settings
    assert console.user is not None
    now = utcnow()
    errors = errors or FieldErrors()
    async with console.db.read() as session:
        try:
            rows = await service.list_verifications(
                session,
                settings,
                account_id=console.account_id,
                limit=PAGE_SIZE + 1,
                before=cursor or None,
                status=status_filter or None,
                to=number or None,
                region=console.user.default_region,
            )
        except HongyanError as exc:
            console.field_error(errors, exc.field or "to", exc)
            rows = []
        report = await stats.conversion(session, account_id=console.account_id, now=now)
        account = await session.get(Account, console.account_id)
        templates = (
            await session.scalars(
                select(MessageTemplate)
                .where(
                    MessageTemplate.account_id == console.account_id,
                    MessageTemplate.status == "approved",
                    MessageTemplate.message_type == "verification",
                )
                .order_by(MessageTemplate.name)
            )
        ).all()
    own = limits.VerifySettings.from_account(account)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    items = [
        {
            "id": v.id,
            "to": mask_number(v.to_number),
            "country": v.to_country or "",
            "status": effective_status(v, now),
            "reason": REASONS.get(effective_status(v, now)) or "",
            "attempts": v.attempts,
            "max_attempts": v.max_attempts,
            "sends": v.sends,
            "created_at": v.created_at,
            "approved_at": v.approved_at,
            "sandbox": v.sandbox,
        }
        for v in rows
    ]
    query = {k: v for k, v in (("status", status_filter), ("to", number)) if v}
    older = f"{PAGE}?{urlencode({**query, 'cursor': rows[-1].id})}" if more else None
    return console.render(
        "verify.html",
        status=http_status,
        active="verify",
        errors=errors,
        items=items,
        older=older,
        filters={"status": status_filter, "to": number, "active": bool(query or cursor)},
        statuses=VERIFICATION_STATUSES,
        report=report,
        values=form or _form_of(own),
        effective=limits.effective(settings, own),
        platform=settings,
        templates=templates,
        can_edit=can(console, ACCOUNT_SETTINGS),
    )


@router.get("/verify")
async def verify_page(console: SignedIn, status: str = "", to: str = "", cursor: str = "") -> Any:
    _allowed(console, MESSAGES_READ)
    return await _render(
        console,
        status_filter=status if status in VERIFICATION_STATUSES else "",
        number=to.strip()[:40],
        cursor=cursor.strip()[:40],
    )


@router.post("/verify/settings")
async def save_settings(console: SignedIn, form: CheckedForm) -> Any:
    _allowed(console, ACCOUNT_SETTINGS)
    settings = console.request.app.state.settings
    values = {
        name: form_text(form, name).strip() for name in (*NUMBER_FIELDS, "template_id", "keep_previous_code")
    }
    errors = FieldErrors()
    try:
        changes: dict[str, Any] = {
            "template_id": values["template_id"] or None,
            "keep_previous_code": values["keep_previous_code"] == "1",
        }
        for name in NUMBER_FIELDS:
            text = values[name]
            if text and not text.isdigit():
                raise Unprocessable(
                    "verify_settings_invalid",
                    f"{name} is a whole number, or empty for the platform's value.",
                    field=name,
                )
            changes[name] = int(text) if text else None
        async with console.db.write() as session:
            await limits.update_settings(
                session,
                settings,
                account_id=console.account_id,
                actor=actor_for_console(console),
                changes=changes,
            )
    except HongyanError as exc:
        console.field_error(errors, exc.field or "template_id", exc)
        return await _render(console, http_status=422, errors=errors, form=values)
    return console.redirect(PAGE, flash=Flash(kind="success", key="otp.saved", params={}))
