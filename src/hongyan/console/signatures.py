"""Signatures page (the account's side): the list with review states and rejection reasons, the apply form
with supporting documents, withdraw and set-default. The same service as /v1/signatures
(compliance.signatures), so an error is shown next to its field with the API's own message.

The apply form sends the application and its documents in one multipart POST: both are stored in one
transaction, so a refused document leaves no half-made application behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ
from hongyan.audit.service import actor_for_console
from hongyan.compliance import signatures
from hongyan.compliance.documents import MAX_DOCUMENTS_PER_OWNER, documents_of
from hongyan.compliance.review_http import document_response, owned_document
from hongyan.config import Settings
from hongyan.console.access import NoPermission, can, member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, NotFound, Unprocessable

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/signatures"
FORM_FIELDS = {
    "name": "name",
    "purpose": "purpose",
    "source": "source",
    "file": "documents",
    "documents": "documents",
}


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


def require(console: Console, permission: str) -> None:
    """Refuse the page like a page of the access table when the member's role lacks `permission`."""
    if not can(console, permission):
        raise NoPermission(console, permission)


async def uploads_of(form: FormData, field: str = "documents") -> list[tuple[str | None, bytes]]:
    """The files chosen in a file input (an input left empty sends one nameless, empty part)."""
    files = []
    for item in form.getlist(field):
        if isinstance(item, UploadFile) and (item.filename or item.size):
            files.append((item.filename, await item.read()))
    return files


def too_many_documents() -> Unprocessable:
    return Unprocessable(
        "too_many_documents",
        f"At most {MAX_DOCUMENTS_PER_OWNER} documents per application.",
        field="documents",
    )


@dataclass(frozen=True, slots=True)
class SignatureForm:
    name: str = ""
    source: str = "company"
    purpose: str = ""


@router.get("/signatures")
async def signatures_page(console: SignedIn) -> Any:
    require(console, MESSAGES_READ)
    async with console.db.read() as session:
        rows = await signatures.list_signatures(session, authority=member_authority(console))
        documents = {s.id: await documents_of(session, signatures.KIND, s.id) for s in rows}
    return console.render(
        "signatures.html",
        active="signatures",
        items=rows,
        documents=documents,
        can_manage=can(console, ACCOUNT_SETTINGS),
    )


def _render_form(
    console: Console, form: SignatureForm, errors: FieldErrors | None = None, status: int = 200
) -> Any:
    return console.render(
        "signatures_new.html",
        status=status,
        active="signatures",
        form=form,
        errors=errors or FieldErrors(),
        sources=signatures.SOURCES,
        needing_documents=signatures.SOURCES_NEEDING_DOCUMENTS,
        max_mb=_settings(console).document_max_bytes // (1024 * 1024),
        max_documents=MAX_DOCUMENTS_PER_OWNER,
    )


@router.get("/signatures/new")
async def new_signature_page(console: SignedIn, name: str = "") -> Any:
    require(console, ACCOUNT_SETTINGS)
    return _render_form(console, SignatureForm(name=name[:60]))


@router.post("/signatures/new")
async def apply_signature(console: SignedIn, form: CheckedForm) -> Any:
    typed = SignatureForm(
        form_text(form, "name").strip(), form_text(form, "source"), form_text(form, "purpose")
    )
    errors = FieldErrors()
    settings = _settings(console)
    try:
        files = await uploads_of(form)
        if len(files) > MAX_DOCUMENTS_PER_OWNER:
            raise too_many_documents()
        if not files and typed.source in signatures.SOURCES_NEEDING_DOCUMENTS:
            raise Unprocessable(
                "signature_documents_required",
                f"A {typed.source} signature needs a supporting "
                "document (business licence, trademark certificate).",
                field="documents",
            )
        actor = actor_for_console(console)
        async with console.db.write() as session:
            row = await signatures.apply(
                session,
                authority=member_authority(console),
                actor=actor,
                name=typed.name,
                purpose=typed.purpose,
                source=typed.source,
            )
            for filename, data in files:
                await signatures.add_document(
                    session,
                    authority=member_authority(console),
                    actor=actor,
                    signature_id=row.id,
                    filename=filename,
                    data=data,
                    max_bytes=settings.document_max_bytes,
                    field="documents",
                )
    except HongyanError as exc:
        console.field_error(errors, FORM_FIELDS.get(exc.field or "", "form"), exc)
        status = exc.status_code if exc.status_code in (403, 409, 422) else 422
        return _render_form(console, typed, errors, status)
    return console.redirect(
        PAGE, flash=Flash(kind="success", key="sig.flash.applied", params={"name": row.name})
    )


async def _act(console: Console, signature_id: str, action: str) -> Response:
    try:
        async with console.db.write() as session:
            kwargs = {
                "authority": member_authority(console),
                "actor": actor_for_console(console),
                "signature_id": signature_id,
            }
            if action == "withdraw":
                row = await signatures.withdraw(session, **kwargs)
            else:
                row = await signatures.set_default(session, **kwargs)
    except NotFound:
        return console.redirect(PAGE)
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(
        PAGE, flash=Flash(kind="success", key=f"sig.flash.{action}", params={"name": row.name})
    )


@router.post("/signatures/{signature_id}/withdraw")
async def withdraw_signature(console: SignedIn, form: CheckedForm, signature_id: str) -> Any:
    return await _act(console, signature_id, "withdraw")


@router.post("/signatures/{signature_id}/default")
async def default_signature(console: SignedIn, form: CheckedForm, signature_id: str) -> Any:
    return await _act(console, signature_id, "default")


@router.get("/signatures/{signature_id}/documents/{document_id}")
async def signature_document(console: SignedIn, signature_id: str, document_id: str) -> Any:
    require(console, MESSAGES_READ)
    try:
        async with console.db.read() as session:
            doc = await owned_document(
                session,
                owner_kind=signatures.KIND,
                owner_id=signature_id,
                document_id=document_id,
                account_id=console.account_id,
            )
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    return console.finish(document_response(doc, inline=True))
