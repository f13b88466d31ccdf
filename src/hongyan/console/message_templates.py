"""Message templates page (the account's side): the list with review states and rejection reasons, the
apply form (text with `${variables}`, their types, signature, remark, documents) and withdraw. The same
service as /v1/templates (compliance.templates): errors are shown next to their field with the API's message.

Variables are typed one per line, `name type [min-max]` (e.g. `code code 6-6`); a variable of the text
left out takes its default type (compliance.template_variables.default_type_for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ
from hongyan.audit.service import actor_for_console
from hongyan.compliance import templates
from hongyan.compliance.documents import MAX_DOCUMENTS_PER_OWNER, documents_of
from hongyan.compliance.models import Signature
from hongyan.compliance.review_http import document_response, owned_document
from hongyan.compliance.template_variables import VARIABLE_TYPES
from hongyan.config import Settings
from hongyan.console.access import can, member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.console.signatures import require, too_many_documents, uploads_of
from hongyan.core.errors import HongyanError, NotFound, Unprocessable

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/message-templates"
_BOUNDS = re.compile(r"(\d+)(?:-(\d+))?")


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


def parse_variable_lines(text: str) -> list[dict[str, Any]]:
    """`code code 6-6` / `amount amount` / `shop text 10` → declarations (pure); `12` alone is the maximum."""
    out: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        cells = line.replace(",", " ").replace("，", " ").split()
        if not cells:
            continue
        item: dict[str, Any] = {"name": cells[0], "type": cells[1] if len(cells) > 1 else "text"}
        if len(cells) > 2:
            match = _BOUNDS.fullmatch(cells[2])
            if not match or len(cells) > 3:
                raise Unprocessable(
                    "template_variables_invalid",
                    f"Line {number}: write “name type min-max”, e.g. “code code 6-6”.",
                    field="variables",
                )
            if match.group(2):
                item["min"], item["max"] = int(match.group(1)), int(match.group(2))
            else:
                item["max"] = int(match.group(1))
        out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class TemplateForm:
    name: str = ""
    message_type: str = "verification"
    body: str = ""
    variables: str = ""
    signature_id: str = ""
    remark: str = ""


def _form_field(error_field: str | None) -> str:
    if not error_field:
        return "form"
    if error_field.startswith("variables"):
        return "variables"
    if error_field in ("file", "documents"):
        return "documents"
    return (
        error_field if error_field in ("name", "message_type", "body", "signature_id", "remark") else "form"
    )


async def _signature_names(console: Console, *, usable_only: bool = False) -> dict[str, str]:
    query = select(Signature.id, Signature.name).where(Signature.account_id == console.account_id)
    if usable_only:
        query = query.where(Signature.status.in_(("pending", "approved")))
    async with console.db.read() as session:
        return {r.id: r.name for r in (await session.execute(query.order_by(Signature.name))).all()}


@router.get("/message-templates")
async def templates_page(console: SignedIn) -> Any:
    require(console, MESSAGES_READ)
    async with console.db.read() as session:
        rows = await templates.list_templates(session, authority=member_authority(console))
        documents = {t.id: await documents_of(session, templates.KIND, t.id) for t in rows}
    return console.render(
        "message_templates.html",
        active="message_templates",
        items=rows,
        documents=documents,
        signature_names=await _signature_names(console),
        can_manage=can(console, ACCOUNT_SETTINGS),
    )


async def _render_form(
    console: Console, form: TemplateForm, errors: FieldErrors | None = None, status: int = 200
) -> Any:
    return console.render(
        "message_templates_new.html",
        status=status,
        active="message_templates",
        form=form,
        errors=errors or FieldErrors(),
        message_types=templates.MESSAGE_TYPES,
        variable_types=list(VARIABLE_TYPES.values()),
        signatures=await _signature_names(console, usable_only=True),
        max_mb=_settings(console).document_max_bytes // (1024 * 1024),
        max_documents=MAX_DOCUMENTS_PER_OWNER,
    )


@router.get("/message-templates/new")
async def new_template_page(console: SignedIn) -> Any:
    require(console, ACCOUNT_SETTINGS)
    return await _render_form(console, TemplateForm())


@router.post("/message-templates/new")
async def apply_template(console: SignedIn, form: CheckedForm) -> Any:
    typed = TemplateForm(**{name: form_text(form, name) for name in TemplateForm.__dataclass_fields__})
    errors = FieldErrors()
    settings = _settings(console)
    try:
        declared = parse_variable_lines(typed.variables)
        files = await uploads_of(form)
        if len(files) > MAX_DOCUMENTS_PER_OWNER:
            raise too_many_documents()
        actor = actor_for_console(console)
        async with console.db.write() as session:
            row = await templates.apply(
                session,
                authority=member_authority(console),
                actor=actor,
                name=typed.name,
                message_type=typed.message_type,
                body=typed.body.replace("\r\n", "\n"),
                variables=declared,
                signature_id=typed.signature_id or None,
                remark=typed.remark,
            )
            for filename, data in files:
                await templates.add_document(
                    session,
                    authority=member_authority(console),
                    actor=actor,
                    template_id=row.id,
                    filename=filename,
                    data=data,
                    max_bytes=settings.document_max_bytes,
                    field="documents",
                )
    except HongyanError as exc:
        console.field_error(errors, _form_field(exc.field), exc)
        status = exc.status_code if exc.status_code in (403, 409, 422) else 422
        return await _render_form(console, typed, errors, status)
    return console.redirect(
        PAGE, flash=Flash(kind="success", key="tpl.flash.applied", params={"name": row.name})
    )


@router.post("/message-templates/{template_id}/withdraw")
async def withdraw_template(console: SignedIn, form: CheckedForm, template_id: str) -> Any:
    try:
        async with console.db.write() as session:
            row = await templates.withdraw(
                session,
                authority=member_authority(console),
                actor=actor_for_console(console),
                template_id=template_id,
            )
    except NotFound:
        return console.redirect(PAGE)
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(
        PAGE, flash=Flash(kind="success", key="tpl.flash.withdraw", params={"name": row.name})
    )


@router.get("/message-templates/{template_id}/documents/{document_id}")
async def template_document(console: SignedIn, template_id: str, document_id: str) -> Any:
    require(console, MESSAGES_READ)
    try:
        async with console.db.read() as session:
            doc = await owned_document(
                session,
                owner_kind=templates.KIND,
                owner_id=template_id,
                document_id=document_id,
                account_id=console.account_id,
            )
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    return console.finish(document_response(doc, inline=True))
