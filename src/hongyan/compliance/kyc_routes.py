"""/v1/account/verification (enterprise verification, the account's side) and /v1/operator/reviews/kyc (the
reviewers' queue, API key scope `operator`). Thin routes over compliance.kyc and compliance.kyc_review.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.datastructures import UploadFile
from starlette.responses import Response

from hongyan.accounts import permissions as p
from hongyan.accounts.keys import AccountContext
from hongyan.api.body import openapi_body, parse_body, require_multipart
from hongyan.api.deps import DbDep, OperatorAccount, SettingsDep, current_account
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.compliance import kyc, kyc_review
from hongyan.compliance.documents import load_document
from hongyan.compliance.review_http import DOCUMENT_BODY, document_response
from hongyan.core.clock import isoformat
from hongyan.core.errors import NotFound, Unprocessable

router = APIRouter(tags=["verification and reviews"])
CallingAccount = Annotated[AccountContext, Depends(current_account)]
NO_NUL = r"^[^\x00]*$"  # a query value PostgreSQL can compare (NUL cannot be in its text)
KYC_LIST_STATUSES = ("pending", "approved", "rejected", "withdrawn")


def authority_with(ctx: AccountContext, permission: str) -> p.Authority:
    authority = p.Authority.of_api(ctx)
    p.require(authority, permission)
    return authority


# -- the account's side ------------------------------------------------------------------------------
class VerificationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    company_name: Annotated[StrictStr, Field(max_length=400)]
    registration_number: Annotated[StrictStr, Field(max_length=100)] = Field(
        description="CN accounts: the 18-character unified social credit code (统一社会信用代码), check character "
        "verified; other regions: 4–64 letters and digits."
    )
    legal_person: Annotated[StrictStr, Field(max_length=200)]
    contact_email: Annotated[StrictStr, Field(max_length=254)] | None = None


def application_json(a: kyc.ApplicationView, *, document_url: Any = None) -> dict[str, Any]:
    """The API shape of an application; `document_url(doc_id)` adds download links (reviewers)."""
    out: dict[str, Any] = {
        "id": a.id,
        "account_id": a.account_id,
        "company_name": a.company_name,
        "registration_number": a.registration_number,
        "legal_person": a.legal_person,
        "contact_email": a.contact_email,
        "status": a.status,
        "reason": a.reason,
        "created_at": isoformat(a.created_at),
        "updated_at": isoformat(a.updated_at),
        "reviewed_by": a.reviewed_by,
        "reviewed_at": isoformat(a.reviewed_at),
        "documents": [
            {
                "id": d.id,
                "filename": d.filename,
                "content_type": d.content_type,
                "size": d.size,
                **({"url": document_url(d.id)} if document_url else {}),
            }
            for d in a.documents
        ],
    }
    if document_url is not None:
        out["account_name"] = a.account_name
        out["same_number_accounts"] = a.same_number_accounts
    return out


def view_json(view: kyc.KycView) -> dict[str, Any]:
    return {
        "status": view.status,
        "region": view.region,
        "limits": {
            "applies": view.limits.applies,
            "daily_limit": view.limits.daily_limit,
            "max_numbers": view.limits.max_numbers,
            "marketing_allowed": not view.limits.applies,
        },
        "verified_by_parent": view.verified_by_parent,
        "application": application_json(view.application) if view.application else None,
    }


@router.get(
    "/v1/account/verification",
    summary="Enterprise verification: status, the limits that apply, the latest application",
)
async def get_verification(db: DbDep, settings: SettingsDep, ctx: CallingAccount) -> JsonResponse:
    authority_with(ctx, p.MESSAGES_READ)
    async with db.read() as session:
        return JsonResponse(view_json(await kyc.kyc_status(session, ctx.account_id, settings=settings)))


@router.post(
    "/v1/account/verification",
    status_code=201,
    summary="Apply for enterprise verification (then upload the business licence to …/documents)",
    openapi_extra=openapi_body(
        VerificationCreate,
        {
            "company_name": "杭州鸿雁科技有限公司",
            "registration_number": "91350100M000100Y43",
            "legal_person": "张三",
            "contact_email": "legal@example.com",
        },
    ),
)
async def apply_verification(
    request: Request, db: DbDep, settings: SettingsDep, ctx: CallingAccount
) -> JsonResponse:
    authority = authority_with(ctx, p.ACCOUNT_SETTINGS)
    data = await parse_body(request, VerificationCreate)
    async with db.write() as session:
        application = await kyc.submit_application(
            session,
            settings,
            authority=authority,
            actor=actor_for_api(ctx, request),
            company_name=data.company_name,
            registration_number=data.registration_number,
            legal_person=data.legal_person,
            contact_email=data.contact_email,
            require_license=False,
        )
        view = await kyc.get_application(session, application.id, account_id=ctx.account_id)
    return JsonResponse({**application_json(view), "documents_required": True}, status_code=201)




@router.post(
    "/v1/account/verification/{application_id}/documents",
    status_code=201,
    openapi_extra=DOCUMENT_BODY,
    summary="Upload the business licence (multipart field `file`) to a pending application",
)
async def upload_document(
    application_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: CallingAccount
) -> JsonResponse:
    authority = authority_with(ctx, p.ACCOUNT_SETTINGS)
    require_multipart(request)
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable("field_required", "Attach the document as the `file` field.", field="file")
        data = await upload.read(settings.document_max_bytes + 1)
        async with db.write() as session:
            doc = await kyc.add_document(
                session,
                settings,
                authority=authority,
                actor=actor_for_api(ctx, request),
                application_id=application_id,
                filename=upload.filename,
                data=data,
            )
    return JsonResponse(
        {"id": doc.id, "filename": doc.filename, "content_type": doc.content_type, "size": doc.size},
        status_code=201,
    )


# -- reviewers: KYC -------------------------------------------------------------------------------------
def _reviewer(ctx: AccountContext) -> p.Authority:
    return authority_with(ctx, p.OPERATOR_REVIEW)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[StrictStr, Field(max_length=1000)] | None = None


class Reset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[StrictStr, Field(max_length=1000)]


def _doc_url(application_id: str) -> Any:
    return lambda doc_id: f"/v1/operator/reviews/kyc/{application_id}/documents/{doc_id}"


@router.get(
    "/v1/operator/reviews/kyc", summary="KYC review queue: pending first (oldest first), then decided"
)
async def list_kyc(
    db: DbDep,
    ctx: OperatorAccount,
    status: Annotated[str | None, Query(max_length=12)] = None,
    account_id: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> JsonResponse:
    _reviewer(ctx)
    if status is not None and status not in KYC_LIST_STATUSES:
        raise Unprocessable(
            "invalid_status", f"status must be one of {', '.join(KYC_LIST_STATUSES)}.", field="status"
        )
    async with db.read() as session:
        rows = await kyc_review.list_applications(
            session, status=status, account_id=account_id, limit=limit, offset=offset
        )
        pending = await kyc_review.count_pending(session)
    return JsonResponse(
        {
            "pending": pending,
            "data": [
                {
                    "id": r.id,
                    "account_id": r.account_id,
                    "account_name": r.account_name,
                    "company_name": r.company_name,
                    "registration_number": r.registration_number,
                    "status": r.status,
                    "reason": r.reason,
                    "created_at": isoformat(r.created_at),
                    "reviewed_by": r.reviewed_by,
                    "reviewed_at": isoformat(r.reviewed_at),
                    "documents": r.documents,
                }
                for r in rows
            ],
        }
    )


@router.get("/v1/operator/reviews/kyc/{application_id}", summary="One KYC application with its documents")
async def get_kyc(application_id: str, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    _reviewer(ctx)
    async with db.read() as session:
        view = await kyc.get_application(session, application_id)
    return JsonResponse(application_json(view, document_url=_doc_url(application_id)))


@router.get(
    "/v1/operator/reviews/kyc/{application_id}/documents/{document_id}",
    summary="Download a document of a KYC application",
)
async def get_kyc_document(
    application_id: str, document_id: str, db: DbDep, ctx: OperatorAccount
) -> Response:
    _reviewer(ctx)
    async with db.read() as session:
        doc = await load_document(session, document_id if kyc.is_id(document_id) else "-", account_id=None)
    if doc.owner_kind != "kyc" or doc.owner_id != application_id:
        raise NotFound("document_not_found", "No such document.", field="document_id")
    return document_response(doc)


@router.post(
    "/v1/operator/reviews/kyc/{application_id}/approve",
    summary="Approve: the account becomes verified and its limits end",
)
async def approve_kyc(application_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    return await _decide(request, db, ctx, application_id, "approved", None)


@router.post(
    "/v1/operator/reviews/kyc/{application_id}/reject",
    summary="Reject with a reason (shown to the account, which may apply again)",
    openapi_extra=openapi_body(Decision, {"reason": "营业执照模糊，请上传清晰的扫描件。"}),
)
async def reject_kyc(application_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    reviewer = _reviewer(ctx)  # before the body: a customer key learns nothing from a 422
    data = await parse_body(request, Decision)
    return await _decide(request, db, ctx, application_id, "rejected", data.reason, reviewer=reviewer)


async def _decide(
    request: Request,
    db: Any,
    ctx: AccountContext,
    application_id: str,
    decision: str,
    reason: str | None,
    reviewer: p.Authority | None = None,
) -> JsonResponse:
    reviewer = reviewer or _reviewer(ctx)
    async with db.write() as session:
        await kyc_review.decide_application(
            session,
            reviewer=reviewer,
            actor=actor_for_api(ctx, request),
            application_id=application_id,
            decision=decision,
            reason=reason,
        )
        view = await kyc.get_application(session, application_id)
    return JsonResponse(application_json(view, document_url=_doc_url(application_id)))


@router.post(
    "/v1/operator/accounts/{account_id}/verification/reset",
    summary="Put an account back to unverified (e.g. grandfathered as verified); its limits apply again",
    openapi_extra=openapi_body(Reset, {"reason": "存量账户，需补充企业认证"}),
)
async def reset_kyc(account_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    reviewer = _reviewer(ctx)
    data = await parse_body(request, Reset)
    async with db.write() as session:
        before = await kyc_review.reset_verification(
            session,
            reviewer=reviewer,
            actor=actor_for_api(ctx, request),
            account_id=account_id,
            reason=data.reason,
        )
    return JsonResponse({"account_id": account_id, "status": "unverified", "previous_status": before})
