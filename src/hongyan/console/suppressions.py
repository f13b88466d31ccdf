"""Suppression list page: the numbers this account does not send to (opt-out replies, people, files).

Everyone who reads messages sees the list and can export it; owners and admins (`account.settings`) add
numbers (one per line), remove them, import a file (refused rows listed with their row number) and choose
the opt-out keywords, per-signature scope, the automatic confirmation and whether every message type is
refused. Same services as /v1/suppressions; changes are audited.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ
from hongyan.audit.service import actor_for_console
from hongyan.compliance import settings as compliance_settings
from hongyan.compliance import suppression, suppression_files
from hongyan.compliance.settings import ComplianceSettings
from hongyan.console.access import NoPermission, can
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, Unprocessable

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/suppressions"
PAGE_SIZE = 50
_SPLIT = re.compile(r"[\s,;，；、]+")
_KEYWORD_SPLIT = re.compile(r"[\n,，、;；]+")


def _allowed(console: Console, permission: str) -> None:
    if not can(console, permission):
        raise NoPermission(console, permission)


def _region(console: Console) -> str:
    assert console.user is not None
    return console.user.default_region


def _settings_form(choices: ComplianceSettings) -> dict[str, Any]:
    return {
        "opt_out_keywords": ", ".join(choices.opt_out_keywords),
        "opt_in_keywords": ", ".join(choices.opt_in_keywords),
        "opt_out_per_signature": choices.opt_out_per_signature,
        "opt_out_reply": choices.opt_out_reply or "",
        "suppress_all_types": choices.suppress_all_types,
    }


async def _render(
    console: Console,
    *,
    status: int = 200,
    number: str = "",
    cursor: str = "",
    errors: FieldErrors | None = None,
    **values: Any,
) -> Any:
    errors = errors if errors is not None else FieldErrors()
    page: suppression.Page | None = None
    async with console.db.read() as session:
        names = await suppression.signature_names(session, console.account_id)
        account = await session.get(Account, console.account_id)
        try:
            e164 = suppression.parse_one(number, _region(console)) if number.strip() else None
            page = await suppression.list_page(
                session, account_id=console.account_id, e164=e164, limit=PAGE_SIZE, cursor=cursor or None
            )
        except HongyanError as exc:
            console.field_error(errors, "search", exc)
            status = 422 if status == 200 else status
    values.setdefault("add_form", {"numbers": "", "scope": "account", "note": ""})
    values.setdefault("settings_form", _settings_form(ComplianceSettings.from_account(account)))
    values.setdefault("rejected", [])
    values.setdefault("notice", None)
    more = None
    if page is not None and page.next_cursor:
        more = urlencode({**({"number": number} if number else {}), "cursor": page.next_cursor})
    return console.render(
        "suppressions.html",
        status=status,
        active="suppressions",
        errors=errors,
        entries=[suppression.entry_json(e, names) for e in page.entries] if page else [],
        total=page.total if page else 0,
        more=more,
        number=number,
        signatures=names,
        can_change=can(console, ACCOUNT_SETTINGS),
        **values,
    )


@router.get("/suppressions")
async def suppressions_page(console: SignedIn, number: str = "", cursor: str = "") -> Any:
    _allowed(console, MESSAGES_READ)
    return await _render(console, number=number[:40], cursor=cursor[:200])


@router.post("/suppressions")
async def add_numbers(console: SignedIn, form: CheckedForm) -> Any:
    """Numbers typed one per line (commas and spaces also separate); refused ones stay in the box."""
    _allowed(console, ACCOUNT_SETTINGS)
    values = {k: form_text(form, k) for k in ("numbers", "scope", "note")}
    raw = [n for n in _SPLIT.split(values["numbers"]) if n]
    errors = FieldErrors()
    try:
        if not raw:
            raise Unprocessable("field_required", "Type at least one phone number.", field="numbers")
        if len(raw) > suppression.MAX_NUMBERS_PER_REQUEST:
            raise Unprocessable(
                "too_many_numbers",
                f"At most {suppression.MAX_NUMBERS_PER_REQUEST:,} numbers at a time; import a file for more.",
                field="numbers",
            )
        if len(values["note"]) > suppression.NOTE_CHARS:
            raise Unprocessable(
                "note_too_long", f"The note is longer than {suppression.NOTE_CHARS} characters.", field="note"
            )
        parsed = suppression.parse_numbers(raw, _region(console))
        outcome = None
        if parsed.e164:
            async with console.db.write() as session:
                scope = await suppression.check_scope(session, console.account_id, values["scope"])
                outcome = await suppression.add_by_person(
                    session,
                    account_id=console.account_id,
                    actor=actor_for_console(console),
                    numbers=parsed.e164,
                    scope=scope,
                    source="manual",
                    note=values["note"].strip() or None,
                    rejected=len(parsed.rejected),
                )
    except HongyanError as exc:
        console.field_error(errors, exc.field if exc.field in ("scope", "note") else "numbers", exc)
        return await _render(console, status=422, errors=errors, add_form=values)
    if parsed.rejected:
        rejected = [
            {
                "value": r.number,
                "title": console.t.error(r.code, r.message)[0],
                "detail": console.t.error(r.code, r.message)[1],
            }
            for r in parsed.rejected
        ]
        first = parsed.rejected[0]
        console.field_error(errors, "numbers", Unprocessable(first.code, first.message))
        added = outcome.added if outcome else 0
        return await _render(
            console,
            status=422 if outcome is None else 200,
            errors=errors,
            rejected=rejected,
            add_form={**values, "numbers": "\n".join(r.number for r in parsed.rejected)},
            notice=console.t("suppressions.added_partly", added=added, rejected=len(rejected)),
        )
    assert outcome is not None
    return console.redirect(
        PAGE,
        flash=Flash(
            kind="success",
            key="suppressions.flash.added",
            params={"added": outcome.added, "existing": outcome.existing},
        ),
    )


@router.post("/suppressions/remove")
async def remove_number(console: SignedIn, form: CheckedForm) -> Any:
    _allowed(console, ACCOUNT_SETTINGS)
    try:
        e164 = suppression.parse_one(form_text(form, "number"), _region(console))
        async with console.db.write() as session:
            scope = await suppression.check_scope(session, console.account_id, form_text(form, "scope"))
            await suppression.remove_by_person(
                session,
                account_id=console.account_id,
                actor=actor_for_console(console),
                e164=e164,
                scope=scope,
            )
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(
        PAGE, flash=Flash(kind="success", key="suppressions.flash.removed", params={"number": e164})
    )


@router.post("/suppressions/import")
async def import_numbers(console: SignedIn, form: CheckedForm) -> Any:
    _allowed(console, ACCOUNT_SETTINGS)
    upload = form.get("file")
    errors = FieldErrors()
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise Unprocessable("field_required", "Choose a CSV or Excel file.", field="file")
        data = await upload.read()
        async with console.db.read() as session:
            scope = await suppression.check_scope(
                session, console.account_id, form_text(form, "import_scope"), field_name="import_scope"
            )
        report = await suppression_files.import_file(
            console.db,
            account_id=console.account_id,
            actor=actor_for_console(console),
            region=_region(console),
            filename=upload.filename,
            data=data,
            scope=scope,
            note=form_text(form, "import_note").strip()[:200] or None,
        )
    except HongyanError as exc:
        console.field_error(errors, "import_scope" if exc.field == "import_scope" else "file", exc)
        return await _render(console, status=422, errors=errors)
    finally:
        if isinstance(upload, UploadFile):
            await upload.close()
    problems = [
        {
            "row": p.row,
            "value": p.value,
            "title": console.t.error(p.code, p.message)[0],
            "detail": console.t.error(p.code, p.message)[1],
        }
        for p in report.problems
    ]
    return console.render("suppressions_import.html", active="suppressions", report=report, problems=problems)


@router.get("/suppressions/export")
async def export(console: SignedIn) -> Any:
    _allowed(console, MESSAGES_READ)
    return console.finish(
        StreamingResponse(
            suppression_files.export_csv(console.db, account_id=console.account_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
        )
    )


@router.post("/suppressions/settings")
async def save_settings(console: SignedIn, form: CheckedForm) -> Any:
    _allowed(console, ACCOUNT_SETTINGS)
    values: dict[str, Any] = {
        k: form_text(form, k) for k in ("opt_out_keywords", "opt_in_keywords", "opt_out_reply")
    }
    values["opt_out_per_signature"] = form_text(form, "opt_out_per_signature") == "1"
    values["suppress_all_types"] = form_text(form, "suppress_all_types") == "1"
    errors = FieldErrors()
    try:
        changes = compliance_settings.opt_out_changes(
            opt_out_keywords=_KEYWORD_SPLIT.split(values["opt_out_keywords"]),
            opt_in_keywords=_KEYWORD_SPLIT.split(values["opt_in_keywords"]),
            per_signature=values["opt_out_per_signature"],
            reply=values["opt_out_reply"],
            suppress_all_types=values["suppress_all_types"],
        )
        async with console.db.write() as session:
            await compliance_settings.update_settings(
                session, account_id=console.account_id, actor=actor_for_console(console), changes=changes
            )
    except HongyanError as exc:
        console.field_error(errors, exc.field or "opt_out_keywords", exc)
        return await _render(console, status=422, errors=errors, settings_form=values)
    return console.redirect(
        PAGE + "#opt-out-settings",
        flash=Flash(kind="success", key="suppressions.flash.settings_saved", params={}),
    )
