"""/v1/signatures (the account's sender signatures: apply, documents, withdraw, default) and
/v1/operator/reviews/signatures (reviewers, API key scope `operator`). Thin routes over
compliance.signatures; documents are uploaded by a separate multipart POST after the JSON application.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import Response

from hongyan.accounts import permissions as p
from hongyan.accounts.keys import AccountContext
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import DbDep, OperatorAccount, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.compliance import reviews, signatures
from hongyan.compliance.documents import documents_of
from hongyan.compliance.models import Signature
from hongyan.compliance.review_http import (
    DOCUMENT_BODY,
    CallingAccount,
    Decision,
    authority_for,
    document_json,
    document_response,
    history_json,
    owned_document,
    read_upload,
)
from hongyan.core.clock import isoformat

router = APIRouter(tags=["signatures"])
Status = Literal["pending", "approved", "rejected", "withdrawn"]
OPERATOR_BASE = "/v1/operator/reviews/signatures"


class SignatureCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=60, description="2–20 characters, with or without 【】.")]
    purpose: Annotated[StrictStr, Field(max_length=1000, description="Who sends with it, to whom, what.")]
    source: Annotated[
        StrictStr,
        Field(max_length=20, description="company | app | website | trademark | public_account | other"),
    ]


class SignatureResubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: Annotated[StrictStr, Field(max_length=1000)] | None = None
    source: Annotated[StrictStr, Field(max_length=20)] | None = None


def signature_json(
    s: Signature, documents: list[Any] | None = None, *, base: str = "/v1/signatures"
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "text": f"【{s.name}】",
        "purpose": s.purpose,
        "source": s.source,
        "status": s.status,
        "reason": s.reason,
        "is_default": s.is_default,
        "created_at": isoformat(s.created_at),
        "updated_at": isoformat(s.updated_at),
        "reviewed_at": isoformat(s.reviewed_at) if s.reviewed_at else None,
    }
    if documents is not None:
        out["documents"] = [document_json(d, f"{base}/{s.id}/documents") for d in documents]
    return out


# -- the account's side --------------------------------------------------------------------------------
@router.get("/v1/signatures", summary="The account's signatures, newest first")
async def list_signatures(db: DbDep, ctx: CallingAccount, status: Status | None = None) -> JsonResponse:
    async with db.read() as session:
        rows = await signatures.list_signatures(session, authority=p.Authority.of_api(ctx), status=status)
    return JsonResponse({"data": [signature_json(s) for s in rows]})


@router.post(
    "/v1/signatures",
    status_code=201,
    summary="Apply for a signature (pending; then upload documents to …/documents)",
    openapi_extra=openapi_body(
        SignatureCreate,
        {"name": "鸿雁科技", "source": "company", "purpose": "向注册用户发送验证码和订单通知"},
    ),
)
async def apply_signature(request: Request, db: DbDep, ctx: CallingAccount) -> JsonResponse:
    authority = authority_for(ctx, p.ACCOUNT_SETTINGS)  # before the body: a read-only key learns nothing more
    data = await parse_body(request, SignatureCreate)
    async with db.write() as session:
        row = await signatures.apply(
            session,
            authority=authority,
            actor=actor_for_api(ctx, request),
            name=data.name,
            purpose=data.purpose,
            source=data.source,
        )
        documents = await documents_of(session, signatures.KIND, row.id)
        return JsonResponse(
            {
                **signature_json(row, documents),
                "documents_required": row.source in signatures.SOURCES_NEEDING_DOCUMENTS,
            },
            status_code=201,
        )


@router.get("/v1/signatures/{signature_id}", summary="One signature with its documents and review history")
async def get_signature(signature_id: str, db: DbDep, ctx: CallingAccount) -> JsonResponse:
    async with db.read() as session:
        row = await signatures.get(session, authority=p.Authority.of_api(ctx), signature_id=signature_id)
        return JsonResponse(
            {
                **signature_json(row, await documents_of(session, signatures.KIND, row.id)),
                "history": history_json(
                    await reviews.history(session, kind=signatures.KIND, target_id=row.id)
                ),
            }
        )


@router.post(
    "/v1/signatures/{signature_id}/documents",
    status_code=201,
    openapi_extra=DOCUMENT_BODY,
    summary="Upload a supporting document (multipart field `file`) to a pending signature",
)
async def upload_signature_document(
    signature_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: CallingAccount
) -> JsonResponse:
    authority = authority_for(ctx, p.ACCOUNT_SETTINGS)
    filename, data = await read_upload(request, settings.document_max_bytes)
    async with db.write() as session:
        doc = await signatures.add_document(
            session,
            authority=authority,
            actor=actor_for_api(ctx, request),
            signature_id=signature_id,
            filename=filename,
            data=data,
            max_bytes=settings.document_max_bytes,
        )
    return JsonResponse(document_json(doc, f"/v1/signatures/{signature_id}/documents"), status_code=201)


@router.get("/v1/signatures/{signature_id}/documents/{document_id}", summary="Download one of its documents")
async def get_signature_document(
    signature_id: str, document_id: str, db: DbDep, ctx: CallingAccount
) -> Response:
    authority_for(ctx, p.MESSAGES_READ)
    async with db.read() as session:
        doc = await owned_document(
            session,
            owner_kind=signatures.KIND,
            owner_id=signature_id,
            document_id=document_id,
            account_id=ctx.account_id,
        )
    return document_response(doc)


async def _act(
    request: Request, db: Any, ctx: AccountContext, signature_id: str, action: str
) -> JsonResponse:
    authority = authority_for(ctx, p.ACCOUNT_SETTINGS)
    actor = actor_for_api(ctx, request)
    async with db.write() as session:
        if action == "withdraw":
            row = await signatures.withdraw(
                session, authority=authority, actor=actor, signature_id=signature_id
            )
        elif action == "default":
            row = await signatures.set_default(
                session, authority=authority, actor=actor, signature_id=signature_id
            )
        else:
            data = await parse_body(request, SignatureResubmit) if (await request.body()).strip() else None
            row = await signatures.resubmit(
                session,
                authority=authority,
                actor=actor,
                signature_id=signature_id,
                purpose=data.purpose if data else None,
                source=data.source if data else None,
            )
        return JsonResponse(signature_json(row, await documents_of(session, signatures.KIND, row.id)))


@router.post("/v1/signatures/{signature_id}/withdraw", summary="Withdraw a pending application")
async def withdraw_signature(
    signature_id: str, request: Request, db: DbDep, ctx: CallingAccount
) -> JsonResponse:
    return await _act(request, db, ctx, signature_id, "withdraw")


@router.post(
    "/v1/signatures/{signature_id}/default", summary="Make an approved signature the account's default"
)
async def default_signature(
    signature_id: str, request: Request, db: DbDep, ctx: CallingAccount
) -> JsonResponse:
    return await _act(request, db, ctx, signature_id, "default")


@router.post(
    "/v1/signatures/{signature_id}/resubmit",
    summary="Submit a rejected or withdrawn signature again (optional new purpose or source)",
    openapi_extra=openapi_body(SignatureResubmit, {"purpose": "补充：仅用于会员通知"}),
)
async def resubmit_signature(
    signature_id: str, request: Request, db: DbDep, ctx: CallingAccount
) -> JsonResponse:
    return await _act(request, db, ctx, signature_id, "resubmit")


# -- reviewers -------------------------------------------------------------------------------------------
@router.get(
    OPERATOR_BASE,
    tags=["operator: reviews"],
    summary="Signature review queue: pending first, oldest first (status=all for every decision)",
)
async def signature_queue(
    db: DbDep,
    ctx: OperatorAccount,
    status: Literal["pending", "approved", "rejected", "withdrawn", "all"] = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JsonResponse:
    authority = authority_for(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        rows = await signatures.review_queue(
            session, authority=authority, status=None if status == "all" else status, limit=limit
        )
    return JsonResponse(
        {
            "data": [
                {**signature_json(s), "account_id": s.account_id, "reviewed_by": s.reviewed_by} for s in rows
            ]
        }
    )


@router.get(
    OPERATOR_BASE + "/{signature_id}",
    tags=["operator: reviews"],
    summary="One signature with its documents and decision history",
)
async def signature_for_review(signature_id: str, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    authority = authority_for(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        row = await signatures.get_for_review(session, authority=authority, signature_id=signature_id)
        documents = await documents_of(session, signatures.KIND, row.id)
        history = await reviews.history(session, kind=signatures.KIND, target_id=row.id)
    return JsonResponse(
        {
            **signature_json(row, documents, base=OPERATOR_BASE),
            "account_id": row.account_id,
            "reviewed_by": row.reviewed_by,
            "history": history_json(history),
        }
    )


@router.get(
    OPERATOR_BASE + "/{signature_id}/documents/{document_id}",
    tags=["operator: reviews"],
    summary="Download a document of a signature application",
)
async def signature_document_for_review(
    signature_id: str, document_id: str, db: DbDep, ctx: OperatorAccount
) -> Response:
    authority_for(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        doc = await owned_document(
            session,
            owner_kind=signatures.KIND,
            owner_id=signature_id,
            document_id=document_id,
            account_id=None,
        )
    return document_response(doc)


async def _decide(
    request: Request, db: Any, ctx: AccountContext, signature_id: str, decision: str
) -> JsonResponse:
    authority = authority_for(
        ctx, p.OPERATOR_REVIEW
    )  # before the body: a customer key learns nothing from a 422
    data = await parse_body(request, Decision) if (await request.body()).strip() else Decision()
    async with db.write() as session:
        row = await signatures.review(
            session,
            authority=authority,
            actor=actor_for_api(ctx, request),
            signature_id=signature_id,
            decision=decision,
            reason=data.reason,
        )
        documents = await documents_of(session, signatures.KIND, row.id)
        return JsonResponse(
            {
                **signature_json(row, documents, base=OPERATOR_BASE),
                "account_id": row.account_id,
                "reviewed_by": row.reviewed_by,
            }
        )


@router.post(
    OPERATOR_BASE + "/{signature_id}/approve",
    tags=["operator: reviews"],
    summary="Approve a pending signature (the account's first becomes its default)",
)
async def approve_signature(
    signature_id: str, request: Request, db: DbDep, ctx: OperatorAccount
) -> JsonResponse:
    return await _decide(request, db, ctx, signature_id, "approved")


@router.post(
    OPERATOR_BASE + "/{signature_id}/reject",
    tags=["operator: reviews"],
    summary="Reject a pending signature with a reason (shown to the account)",
    openapi_extra=openapi_body(Decision, {"reason": "签名与营业执照上的企业名称不一致。"}),
)
async def reject_signature(
    signature_id: str, request: Request, db: DbDep, ctx: OperatorAccount
) -> JsonResponse:
    return await _decide(request, db, ctx, signature_id, "rejected")
