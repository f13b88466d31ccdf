"""/v1/templates (the account's message templates: apply, documents, withdraw, try a rendering) and
/v1/operator/reviews/templates (reviewers, API key scope `operator`). Thin routes over compliance.templates.
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
from hongyan.compliance import reviews, templates
from hongyan.compliance.documents import documents_of
from hongyan.compliance.models import MessageTemplate
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
from hongyan.compliance.template_variables import VARIABLE_TYPES
from hongyan.core.clock import isoformat
from hongyan.core.errors import HongyanError, InvalidRequest

router = APIRouter(tags=["templates"])
OPERATOR_BASE = "/v1/operator/reviews/templates"
ParamValue = Annotated[StrictStr, Field(max_length=200)] | int


class VariableIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=40)]
    type: Annotated[StrictStr, Field(max_length=20)] = "text"
    min: int | None = None
    max: int | None = None


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)]
    message_type: Annotated[StrictStr, Field(max_length=20)]
    body: Annotated[
        StrictStr, Field(max_length=2000, description="Text with ${variables}, without the signature.")
    ]
    variables: Annotated[list[VariableIn], Field(max_length=40)] = []
    signature_id: Annotated[StrictStr, Field(max_length=40)] | None = None
    remark: Annotated[StrictStr, Field(max_length=1000)] | None = None


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template_id: Annotated[StrictStr, Field(max_length=40)] | None = None
    body: Annotated[StrictStr, Field(max_length=2000)] | None = None
    variables: Annotated[list[VariableIn], Field(max_length=40)] = []
    params: Annotated[dict[Annotated[str, Field(max_length=40)], ParamValue], Field(max_length=40)] = {}


def template_json(
    t: MessageTemplate, documents: list[Any] | None = None, *, base: str = "/v1/templates"
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": t.id,
        "name": t.name,
        "message_type": t.message_type,
        "body": t.body,
        "variables": t.variables,
        "signature_id": t.signature_id,
        "remark": t.remark,
        "status": t.status,
        "reason": t.reason,
        "created_at": isoformat(t.created_at),
        "updated_at": isoformat(t.updated_at),
        "reviewed_at": isoformat(t.reviewed_at) if t.reviewed_at else None,
    }
    if documents is not None:
        out["documents"] = [document_json(d, f"{base}/{t.id}/documents") for d in documents]
    return out


@router.get("/v1/templates/variable-types", summary="The variable types a template may declare")
async def variable_types(ctx: CallingAccount) -> JsonResponse:
    return JsonResponse(
        {
            "data": [
                {
                    "type": k.name,
                    "description": k.description,
                    "example": k.example,
                    "min": k.min_length,
                    "max": k.max_length,
                    "ceiling": k.ceiling,
                }
                for k in VARIABLE_TYPES.values()
            ]
        }
    )


@router.get("/v1/templates", summary="The account's templates, newest first")
async def list_templates(
    db: DbDep,
    ctx: CallingAccount,
    status: Literal["pending", "approved", "rejected", "withdrawn"] | None = None,
) -> JsonResponse:
    async with db.read() as session:
        rows = await templates.list_templates(session, authority=p.Authority.of_api(ctx), status=status)
    return JsonResponse({"data": [template_json(t) for t in rows]})


@router.post(
    "/v1/templates",
    status_code=201,
    summary="Apply for a template (pending)",
    openapi_extra=openapi_body(
        TemplateCreate,
        {
            "name": "登录验证码",
            "message_type": "verification",
            "body": "您的验证码是${code}，5分钟内有效。",
            "variables": [{"name": "code", "type": "code", "min": 6, "max": 6}],
            "remark": "用户登录时发送",
        },
    ),
)
async def apply_template(request: Request, db: DbDep, ctx: CallingAccount) -> JsonResponse:
    authority = authority_for(ctx, p.ACCOUNT_SETTINGS)
    data = await parse_body(request, TemplateCreate)
    async with db.write() as session:
        row = await templates.apply(
            session,
            authority=authority,
            actor=actor_for_api(ctx, request),
            name=data.name,
            message_type=data.message_type,
            body=data.body,
            variables=[v.model_dump(exclude_none=True) for v in data.variables],
            signature_id=data.signature_id,
            remark=data.remark,
        )
        return JsonResponse(template_json(row, []), status_code=201)


@router.post(
    "/v1/templates/render",
    summary="Try a template: the text with the given parameters, and every problem of them",
    openapi_extra=openapi_body(RenderRequest, {"template_id": "tpl_01…", "params": {"code": "482193"}}),
)
async def render_template(request: Request, db: DbDep, ctx: CallingAccount) -> JsonResponse:
    authority = authority_for(ctx, p.MESSAGES_READ)
    data = await parse_body(request, RenderRequest)
    if (data.template_id is None) == (data.body is None):
        raise InvalidRequest(
            "template_or_body_required", "Give either template_id or body.", field="template_id"
        )
    if data.template_id is not None:
        async with db.read() as session:
            row = await templates.get(session, authority=authority, template_id=data.template_id)
        body, variables = row.body, list(row.variables or [])
    else:
        body = data.body or ""
        variables = templates.check_variables(body, [v.model_dump(exclude_none=True) for v in data.variables])
    problems = templates.validate_params(variables, data.params)
    text = None
    if not problems:
        try:
            text = templates.render(body, data.params)
        except HongyanError:  # validated above; kept so a bug shows as a problem, not a 500
            text = None
    return JsonResponse(
        {
            "text": text,
            "variables": variables,
            "ok": not problems,
            "problems": [
                {"name": x.name, "code": x.code, "message": x.message, "field": f"params.{x.name}"}
                for x in problems
            ],
        }
    )


@router.get("/v1/templates/{template_id}", summary="One template with its documents and review history")
async def get_template(template_id: str, db: DbDep, ctx: CallingAccount) -> JsonResponse:
    async with db.read() as session:
        row = await templates.get(session, authority=p.Authority.of_api(ctx), template_id=template_id)
        return JsonResponse(
            {
                **template_json(row, await documents_of(session, templates.KIND, row.id)),
                "history": history_json(
                    await reviews.history(session, kind=templates.KIND, target_id=row.id)
                ),
            }
        )


@router.post(
    "/v1/templates/{template_id}/documents",
    status_code=201,
    openapi_extra=DOCUMENT_BODY,
    summary="Upload a supporting document (multipart field `file`) to a pending template",
)
async def upload_template_document(
    template_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: CallingAccount
) -> JsonResponse:
    authority = authority_for(ctx, p.ACCOUNT_SETTINGS)
    filename, data = await read_upload(request, settings.document_max_bytes)
    async with db.write() as session:
        doc = await templates.add_document(
            session,
            authority=authority,
            actor=actor_for_api(ctx, request),
            template_id=template_id,
            filename=filename,
            data=data,
            max_bytes=settings.document_max_bytes,
        )
    return JsonResponse(document_json(doc, f"/v1/templates/{template_id}/documents"), status_code=201)


@router.get("/v1/templates/{template_id}/documents/{document_id}", summary="Download one of its documents")
async def get_template_document(
    template_id: str, document_id: str, db: DbDep, ctx: CallingAccount
) -> Response:
    authority_for(ctx, p.MESSAGES_READ)
    async with db.read() as session:
        doc = await owned_document(
            session,
            owner_kind=templates.KIND,
            owner_id=template_id,
            document_id=document_id,
            account_id=ctx.account_id,
        )
    return document_response(doc)


@router.post("/v1/templates/{template_id}/withdraw", summary="Withdraw a pending application")
async def withdraw_template(
    template_id: str, request: Request, db: DbDep, ctx: CallingAccount
) -> JsonResponse:
    authority = authority_for(ctx, p.ACCOUNT_SETTINGS)
    async with db.write() as session:
        row = await templates.withdraw(
            session, authority=authority, actor=actor_for_api(ctx, request), template_id=template_id
        )
        return JsonResponse(template_json(row, await documents_of(session, templates.KIND, row.id)))


# -- reviewers -------------------------------------------------------------------------------------------
@router.get(
    OPERATOR_BASE,
    tags=["operator: reviews"],
    summary="Template review queue: pending first, oldest first (status=all for every decision)",
)
async def template_queue(
    db: DbDep,
    ctx: OperatorAccount,
    status: Literal["pending", "approved", "rejected", "withdrawn", "all"] = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JsonResponse:
    authority = authority_for(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        rows = await templates.review_queue(
            session, authority=authority, status=None if status == "all" else status, limit=limit
        )
    return JsonResponse(
        {
            "data": [
                {**template_json(t), "account_id": t.account_id, "reviewed_by": t.reviewed_by} for t in rows
            ]
        }
    )


@router.get(
    OPERATOR_BASE + "/{template_id}",
    tags=["operator: reviews"],
    summary="One template with its documents and decision history",
)
async def template_for_review(template_id: str, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    authority = authority_for(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        row = await templates.get_for_review(session, authority=authority, template_id=template_id)
        documents = await documents_of(session, templates.KIND, row.id)
        history = await reviews.history(session, kind=templates.KIND, target_id=row.id)
    return JsonResponse(
        {
            **template_json(row, documents, base=OPERATOR_BASE),
            "account_id": row.account_id,
            "reviewed_by": row.reviewed_by,
            "history": history_json(history),
        }
    )


@router.get(
    OPERATOR_BASE + "/{template_id}/documents/{document_id}",
    tags=["operator: reviews"],
    summary="Download a document of a template application",
)
async def template_document_for_review(
    template_id: str, document_id: str, db: DbDep, ctx: OperatorAccount
) -> Response:
    authority_for(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        doc = await owned_document(
            session, owner_kind=templates.KIND, owner_id=template_id, document_id=document_id, account_id=None
        )
    return document_response(doc)


async def _decide(
    request: Request, db: Any, ctx: AccountContext, template_id: str, decision: str
) -> JsonResponse:
    authority = authority_for(ctx, p.OPERATOR_REVIEW)
    data = await parse_body(request, Decision) if (await request.body()).strip() else Decision()
    async with db.write() as session:
        row = await templates.review(
            session,
            authority=authority,
            actor=actor_for_api(ctx, request),
            template_id=template_id,
            decision=decision,
            reason=data.reason,
        )
        return JsonResponse(
            {
                **template_json(row, await documents_of(session, templates.KIND, row.id), base=OPERATOR_BASE),
                "account_id": row.account_id,
                "reviewed_by": row.reviewed_by,
            }
        )


@router.post(
    OPERATOR_BASE + "/{template_id}/approve", tags=["operator: reviews"], summary="Approve a pending template"
)
async def approve_template(
    template_id: str, request: Request, db: DbDep, ctx: OperatorAccount
) -> JsonResponse:
    return await _decide(request, db, ctx, template_id, "approved")


@router.post(
    OPERATOR_BASE + "/{template_id}/reject",
    tags=["operator: reviews"],
    summary="Reject a pending template with a reason (shown to the account)",
    openapi_extra=openapi_body(Decision, {"reason": "营销内容请使用营销类型。"}),
)
async def reject_template(
    template_id: str, request: Request, db: DbDep, ctx: OperatorAccount
) -> JsonResponse:
    return await _decide(request, db, ctx, template_id, "rejected")
