"""Enterprise verification page (the account's side): the status (unverified, in review, verified, rejected
with the reviewer's reason), the limits that apply until it is verified, and the application form with the
business licence. The same service as /v1/account/verification (compliance.kyc); the form sends fields and
licence in one multipart POST, stored in one transaction, and every problem is shown next to its field.

`dashboard_banner` gives the dashboard what its "verify your company" banner needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import UploadFile

from hongyan.accounts.permissions import ACCOUNT_SETTINGS
from hongyan.audit.service import actor_for_console
from hongyan.compliance import kyc
from hongyan.compliance.documents import load_document
from hongyan.compliance.review_http import document_response
from hongyan.config import Settings
from hongyan.console.access import NoPermission, can, member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, NotFound

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/verification"
FIELDS = ("company_name", "registration_number", "legal_person", "contact_email", "license")
APPLYING = ("unverified", "rejected")  # the statuses in which the form is offered


@dataclass(frozen=True, slots=True)
class VerificationForm:
    company_name: str = ""
    registration_number: str = ""
    legal_person: str = ""
    contact_email: str = ""


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


async def _render(
    console: Console,
    *,
    form: VerificationForm | None = None,
    errors: FieldErrors | None = None,
    status: int = 200,
) -> Any:
    settings = _settings(console)
    async with console.db.read() as session:
        view = await kyc.kyc_status(session, console.account_id, settings=settings)
    if form is None and view.application is not None and view.status == "rejected":
        a = view.application  # applying again starts from what was filed, so only the fault needs fixing
        form = VerificationForm(a.company_name, a.registration_number, a.legal_person, a.contact_email or "")
    return console.render(
        "verification.html",
        status=status,
        active="verification",
        view=view,
        form=form or VerificationForm(),
        errors=errors or FieldErrors(),
        can_apply=can(console, ACCOUNT_SETTINGS) and view.status in APPLYING,
        can_manage=can(console, ACCOUNT_SETTINGS),
        max_mb=settings.document_max_bytes // (1024 * 1024),
    )


@router.get("/verification")
async def verification_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/verification")
async def apply_verification(console: SignedIn, form: CheckedForm) -> Any:
    if not can(console, ACCOUNT_SETTINGS):
        raise NoPermission(console, ACCOUNT_SETTINGS)
    typed = VerificationForm(*(form_text(form, name) for name in FIELDS[:4]))
    upload = form.get("license")
    license_file = None
    if isinstance(upload, UploadFile) and (upload.filename or upload.size):
        license_file = (upload.filename, await upload.read(_settings(console).document_max_bytes + 1))
    errors = FieldErrors()
    async with console.db.read() as session:
        region = await kyc.kyc_status(session, console.account_id, settings=_settings(console))
    # every field's problem at once (the service stops at the first)
    _, problems = kyc.application_problems(
        region=region.region,
        company_name=typed.company_name,
        registration_number=typed.registration_number,
        legal_person=typed.legal_person,
        contact_email=typed.contact_email,
    )
    if license_file is None:
        problems["license"] = kyc.document_required()
    if not problems:
        try:
            async with console.db.write() as session:
                await kyc.submit_application(
                    session,
                    _settings(console),
                    authority=member_authority(console),
                    actor=actor_for_console(console),
                    company_name=typed.company_name,
                    registration_number=typed.registration_number,
                    legal_person=typed.legal_person,
                    contact_email=typed.contact_email,
                    license_file=license_file,
                )
        except HongyanError as exc:
            problems[exc.field if exc.field in FIELDS else "form"] = exc
    if problems:
        for field, exc in problems.items():
            console.field_error(errors, "license" if field == "file" else field, exc)
        status = max(e.status_code for e in problems.values())
        return await _render(
            console, form=typed, errors=errors, status=status if status in (403, 409) else 422
        )
    return console.redirect(PAGE, flash=Flash(kind="success", key="kyc.flash.submitted", params={}))


@router.get("/verification/documents/{document_id}")
async def own_document(console: SignedIn, document_id: str) -> Any:
    """A document of the account's own application (a licence image opens in the browser)."""
    try:
        async with console.db.read() as session:
            doc = await load_document(
                session, document_id if kyc.is_id(document_id) else "-", account_id=console.account_id
            )
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    if doc.owner_kind != "kyc":
        return console.render("not_found.html", status=404, what="page")
    return console.finish(document_response(doc, inline=True))


async def dashboard_banner(console: Console) -> kyc.KycView | None:
    """The account's verification when its limits apply (the dashboard shows a banner), else None."""
    async with console.db.read() as session:
        view = await kyc.kyc_status(session, console.account_id, settings=_settings(console))
    return view if view.limits.applies else None
