"""Enterprise verification (KYC): an account files its company's name, registration number, legal person
and business licence; a platform reviewer approves or rejects it. Until approved, the account is limited by
the submit gate (HONGYAN_UNVERIFIED_DAILY_LIMIT messages and HONGYAN_UNVERIFIED_MAX_NUMBERS recipients a
day), so a fresh sign-up cannot be used for bulk spam before a person has looked at who it is.

`account.kyc_status` follows the applications: unverified → pending (submitted) → verified (approved) or
rejected (the account may apply again). One pending application at a time. Every submission, document and
decision is in the audit log (who, when, the reason). The reviewers' side is compliance.kyc_review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts import permissions as p
from hongyan.accounts.models import Account
from hongyan.audit.service import Actor, record
from hongyan.compliance import credit_code
from hongyan.compliance.documents import DocumentInfo, documents_of, store_document
from hongyan.compliance.models import KycApplication
from hongyan.config import Settings, get_settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, HongyanError, NotFound, Unprocessable

KYC_STATUSES = ("unverified", "pending", "verified", "rejected")
_OTHER_REGISTRATION = re.compile(r"^[A-Za-z0-9]{4,64}$")
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]{2,}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # NUL cannot even be stored in PostgreSQL text


@dataclass(frozen=True, slots=True)
class KycLimits:
    """What an account may send while it is not verified (`applies` False: no KYC limit for it)."""

    applies: bool
    daily_limit: int
    max_numbers: int


@dataclass(frozen=True, slots=True)
class ApplicationView:
    id: str
    account_id: str
    account_name: str
    company_name: str
    registration_number: str
    legal_person: str
    contact_email: str | None
    status: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    documents: list[DocumentInfo]
    # other accounts that filed the same registration number (a hint for the reviewer)
    same_number_accounts: list[str]


@dataclass(frozen=True, slots=True)
class KycView:
    """An account's verification as the account sees it."""

    status: str
    region: str
    limits: KycLimits
    application: ApplicationView | None
    verified_by_parent: bool = False  # a sub-account whose parent account is verified


@dataclass(frozen=True, slots=True)
class ApplicationInput:
    company_name: str
    registration_number: str
    legal_person: str
    contact_email: str | None


def limits_for(status: str, settings: Settings, *, parent_verified: bool = False) -> KycLimits:
    """Pure: while KYC is required, the unverified limits (and no marketing) apply to every status but
    `verified`; a sub-account of a verified enterprise is covered by its parent (as in compliance.gate)."""
    return KycLimits(
        settings.kyc_required and status != "verified" and not parent_verified,
        settings.unverified_daily_limit,
        settings.unverified_max_numbers,
    )


# -- checking an application (pure) --------------------------------------------------------------------
def application_problems(
    *, region: str, company_name: str, registration_number: str, legal_person: str, contact_email: str | None
) -> tuple[ApplicationInput, dict[str, HongyanError]]:
    """The cleaned fields and every problem, keyed by field (the console shows each next to its input)."""
    name = " ".join(company_name.split())
    number = credit_code.normalize(registration_number)
    person = " ".join(legal_person.split())
    email = contact_email.strip() if contact_email and contact_email.strip() else None
    problems: dict[str, HongyanError] = {}
    if not 2 <= len(name) <= 200 or _CONTROL.search(name):
        problems["company_name"] = Unprocessable(
            "invalid_company_name",
            "Give the company's registered name (2–200 characters).",
            field="company_name",
        )
    registration = _registration_problem(number, region)
    if registration is not None:
        problems["registration_number"] = registration
    if not 2 <= len(person) <= 100 or _CONTROL.search(person):
        problems["legal_person"] = Unprocessable(
            "invalid_legal_person",
            "Give the legal person's name as on the licence (2–100 characters).",
            field="legal_person",
        )
    if email is not None and (len(email) > 254 or not _EMAIL.match(email)):
        problems["contact_email"] = Unprocessable(
            "invalid_contact_email", "The contact email is not an email address.", field="contact_email"
        )
    return ApplicationInput(name, number, person, email), problems


def _registration_problem(number: str, region: str) -> HongyanError | None:
    if region.upper() == "CN":
        why = credit_code.problem(number)
        if why is None:
            return None
        messages = {
            "length": f"A unified social credit code has 18 characters; this one has {len(number)}.",
            "character": "A unified social credit code uses digits and upper-case letters except I, O, Z, S and V.",
            "division": "Characters 3–8 of a unified social credit code are digits (the region code).",
            "check": "The last character does not match the code's check character (GB 32100-2015); "
            "check the code for a typo.",
        }
        return Unprocessable(
            "invalid_registration_number",
            messages[why],
            field="registration_number",
            details={"problem": why},
        )
    if not _OTHER_REGISTRATION.match(number):
        return Unprocessable(
            "invalid_registration_number",
            "Give the company registration number (4–64 letters and digits).",
            field="registration_number",
            details={"problem": "format"},
        )
    return None


def document_required() -> Unprocessable:
    return Unprocessable(
        "document_required", "Attach the business licence (PDF, PNG or JPEG).", field="license"
    )


# -- the account's side ------------------------------------------------------------------------------
def is_id(value: str) -> bool:
    """Whether a value from a URL could be one of our ids (a NUL would make PostgreSQL fail, not miss)."""
    return 0 < len(value) <= 40 and "\x00" not in value


async def account_for_update(session: AsyncSession, account_id: str) -> Account:
    account = None
    if is_id(account_id):
        account = await session.scalar(select(Account).where(Account.id == account_id).with_for_update())
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    return account


async def submit_application(
    session: AsyncSession,
    settings: Settings,
    *,
    authority: p.Authority,
    actor: Actor,
    company_name: str,
    registration_number: str,
    legal_person: str,
    contact_email: str | None = None,
    license_file: tuple[str | None, bytes] | None = None,
    require_license: bool = True,
) -> KycApplication:
    """File an application (the account becomes `pending`). The licence comes with it (console), or —
    `require_license=False`, the API's JSON call — is uploaded next with `add_document`; an application
    without a document cannot be approved."""
    p.require(authority, p.ACCOUNT_SETTINGS)
    account = await account_for_update(session, authority.account_id)  # one submission at a time
    data, problems = application_problems(
        region=account.default_region,
        company_name=company_name,
        registration_number=registration_number,
        legal_person=legal_person,
        contact_email=contact_email,
    )
    if license_file is None and require_license:
        problems.setdefault("license", document_required())
    if problems:
        first = next(iter(problems.values()))
        if len(problems) > 1:
            first.details = {
                **(first.details or {}),
                "problems": [
                    {"code": e.code, "message": e.message, "field": e.field} for e in problems.values()
                ],
            }
        raise first
    if account.kyc_status == "pending" or await _pending_of(session, account.id) is not None:
        raise Conflict(
            "kyc_pending", "An application is already waiting for review; wait for the decision.", field=None
        )
    if account.kyc_status == "verified":
        raise Conflict("kyc_already_verified", "The account is already verified.", field=None)
    now = utcnow()
    application = KycApplication(
        id=ids.new_id("kyc"),
        account_id=account.id,
        company_name=data.company_name,
        registration_number=data.registration_number,
        legal_person=data.legal_person,
        contact_email=data.contact_email,
        status="pending",
        reason=None,
        created_at=now,
        updated_at=now,
    )
    session.add(application)
    await session.flush()
    document = None
    if license_file is not None:
        document = await store_document(
            session,
            account_id=account.id,
            owner_kind="kyc",
            owner_id=application.id,
            filename=license_file[0],
            data=license_file[1],
            max_bytes=settings.document_max_bytes,
            field="license",
        )
    before = account.kyc_status
    account.kyc_status = "pending"
    await record(
        session,
        actor=actor,
        action="kyc.submitted",
        account_id=account.id,
        target_type="kyc_application",
        target_id=application.id,
        before={"kyc_status": before},
        after={
            "kyc_status": "pending",
            "company_name": data.company_name,
            "registration_number": data.registration_number,
            "documents": [document.id] if document else [],
        },
        occurred_at=now,
    )
    return application


async def add_document(
    session: AsyncSession,
    settings: Settings,
    *,
    authority: p.Authority,
    actor: Actor,
    application_id: str,
    filename: str | None,
    data: bytes,
) -> DocumentInfo:
    """Attach a document (licence, authorization letter) to the account's own pending application."""
    p.require(authority, p.ACCOUNT_SETTINGS)
    application = await load_application(session, application_id, account_id=authority.account_id, lock=True)
    if application.status != "pending":
        raise Conflict(
            "review_not_pending",
            f"The application is {application.status}; only a pending one takes documents.",
            field="application_id",
        )
    doc = await store_document(
        session,
        account_id=application.account_id,
        owner_kind="kyc",
        owner_id=application.id,
        filename=filename,
        data=data,
        max_bytes=settings.document_max_bytes,
        field="file",
    )
    application.updated_at = utcnow()
    await record(
        session,
        actor=actor,
        action="kyc.document_added",
        account_id=application.account_id,
        target_type="kyc_application",
        target_id=application.id,
        after={"document_id": doc.id, "content_type": doc.content_type, "size": doc.size},
    )
    return doc


async def kyc_status(session: AsyncSession, account_id: str, *, settings: Settings | None = None) -> KycView:
    """The account's verification status, its latest application and the limits that apply to it."""
    settings = settings or get_settings()
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    latest = await session.scalar(
        select(KycApplication.id)
        .where(KycApplication.account_id == account_id)
        .order_by(KycApplication.created_at.desc(), KycApplication.id.desc())
        .limit(1)
    )
    view = await get_application(session, latest, account_id=account_id) if latest else None
    by_parent = False
    if account.kyc_status != "verified" and account.parent_id is not None:
        parent_status = await session.scalar(
            select(Account.kyc_status).where(Account.id == account.parent_id)
        )
        by_parent = parent_status == "verified"
    limits = limits_for(account.kyc_status, settings, parent_verified=by_parent)
    return KycView(account.kyc_status, account.default_region, limits, view, by_parent)


async def get_application(
    session: AsyncSession, application_id: str, *, account_id: str | None = None
) -> ApplicationView:
    """One application with its documents. `account_id` None: a reviewer (any account); else the account's own."""
    application = await load_application(session, application_id, account_id=account_id)
    account_name = (
        await session.scalar(select(Account.name).where(Account.id == application.account_id)) or ""
    )
    same = []
    if account_id is None:
        same = list(
            (
                await session.scalars(
                    select(KycApplication.account_id)
                    .where(
                        KycApplication.registration_number == application.registration_number,
                        KycApplication.account_id != application.account_id,
                    )
                    .distinct()
                )
            ).all()
        )
    return ApplicationView(
        application.id,
        application.account_id,
        account_name,
        application.company_name,
        application.registration_number,
        application.legal_person,
        application.contact_email,
        application.status,
        application.reason,
        application.created_at,
        application.updated_at,
        application.reviewed_by,
        application.reviewed_at,
        await documents_of(session, "kyc", application.id),
        sorted(same),
    )


# -- reading -------------------------------------------------------------------------------------
async def load_application(
    session: AsyncSession, application_id: str, *, account_id: str | None, lock: bool = False
) -> KycApplication:
    q = select(KycApplication).where(KycApplication.id == application_id)
    if account_id is not None:
        q = q.where(KycApplication.account_id == account_id)
    application = await session.scalar(q.with_for_update() if lock else q) if is_id(application_id) else None
    if application is None:
        raise NotFound(
            "kyc_application_not_found", "No such verification application.", field="application_id"
        )
    return application


async def _pending_of(session: AsyncSession, account_id: str) -> str | None:
    return await session.scalar(
        select(KycApplication.id)
        .where(KycApplication.account_id == account_id, KycApplication.status == "pending")
        .limit(1)
    )
