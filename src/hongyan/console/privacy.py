"""Privacy page: look up one phone number, download its export, erase it (typed twice), set retention.

Owners and admins only (`account.settings`). Numbers travel in POST bodies, never in URLs, so they stay out
of access logs and browser history. Same services as /v1/privacy and /v1/account/privacy.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response

from hongyan.accounts.permissions import ACCOUNT_SETTINGS
from hongyan.audit.service import actor_for_console
from hongyan.console.access import NoPermission, can
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, Unprocessable
from hongyan.privacy import retention, service

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/privacy"


def _allowed(console: Console) -> None:
    if not can(console, ACCOUNT_SETTINGS):
        raise NoPermission(console, ACCOUNT_SETTINGS)


def _region(console: Console) -> str:
    assert console.user is not None
    return console.user.default_region


async def _render(console: Console, *, status: int = 200, errors: FieldErrors | None = None,
                  **values: Any) -> Any:
    async with console.db.read() as session:
        days = await retention.get_retention(session, account_id=console.account_id)
    values.setdefault("number", "")
    values.setdefault("summary", None)
    values.setdefault("confirm_open", False)
    values.setdefault("retention_input", "" if days is None else str(days))
    return console.render("privacy.html", status=status, active="privacy", errors=errors or FieldErrors(),
                          retention_days=days, **values)


@router.get("/privacy")
async def privacy_page(console: SignedIn) -> Any:
    _allowed(console)
    return await _render(console)


@router.post("/privacy/lookup")
async def lookup(console: SignedIn, form: CheckedForm) -> Any:
    """What the account holds about a number, in counts (the export has the content)."""
    _allowed(console)
    number = form_text(form, "number").strip()
    try:
        e164 = service.parse_number(number, _region(console))
        async with console.db.read() as session:
            document = await service.export_number(session, account_id=console.account_id, e164=e164)
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "number", exc)
        return await _render(console, status=422, errors=errors, number=number)
    summary = {"e164": e164, "messages": len(document["messages"]), "inbound": len(document["inbound_messages"]),
               "rejections": len(document["batch_rejections"]), "truncated": document["messages_truncated"]}
    return await _render(console, number=e164, summary=summary)


@router.post("/privacy/export")
async def export(console: SignedIn, form: CheckedForm) -> Any:
    """The export document as a JSON download."""
    _allowed(console)
    number = form_text(form, "number").strip()
    try:
        e164 = service.parse_number(number, _region(console))
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "number", exc)
        return await _render(console, status=422, errors=errors, number=number)
    async with console.db.read() as session:
        document = await service.export_number(session, account_id=console.account_id, e164=e164)
    name = "privacy-export-" + e164.lstrip("+") + ".json"
    return console.finish(Response(
        orjson.dumps(document, option=orjson.OPT_INDENT_2), media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    ))


@router.post("/privacy/erase")
async def erase(console: SignedIn, form: CheckedForm) -> Any:
    """Erase after the number was typed a second time and reads the same."""
    _allowed(console)
    number = form_text(form, "number").strip()
    typed_again = form_text(form, "confirm_number").strip()
    errors = FieldErrors()
    try:
        e164 = service.parse_number(number, _region(console))
    except HongyanError as exc:
        console.field_error(errors, "number", exc)
        return await _render(console, status=422, errors=errors, number=number)
    try:
        if not typed_again or service.parse_number(typed_again, _region(console), field_name="confirm_number") != e164:
            raise Unprocessable("confirmation_required", "Type the same number again to confirm the erasure.",
                                field="confirm_number")
    except HongyanError as exc:
        console.field_error(errors, "confirm_number", exc)
        return await _render(console, status=422, errors=errors, number=e164, confirm_open=True)
    async with console.db.write() as session:
        counts = await service.erase_number(session, account_id=console.account_id, e164=e164,
                                            actor=actor_for_console(console))
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.privacy_erased",
                                              params={"messages": counts["messages"],
                                                      "inbound": counts["inbound_messages"]}))


@router.post("/privacy/retention")
async def save_retention(console: SignedIn, form: CheckedForm) -> Any:
    _allowed(console)
    raw = form_text(form, "retention_days").strip()
    try:
        if raw and not raw.isdigit():
            raise Unprocessable("invalid_retention_days", "Keep content between 1 and 3650 days, or leave it empty.",
                                field="retention_days")
        async with console.db.write() as session:
            await retention.set_retention(session, account_id=console.account_id, days=int(raw) if raw else None,
                                          actor=actor_for_console(console))
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "retention_days", exc)
        return await _render(console, status=422, errors=errors, retention_input=raw)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.retention_saved", params={}))
