"""/v1/suppressions: the account's suppression list (numbers that opted out or must not be sent to).

Reading needs `messages.read` (keys with the read scope); changes need `account.settings` (admin scope).
Changes made through the API are audited (counts and blind indexes, never the numbers). Thin routes over
compliance.suppression and compliance.suppression_files.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.datastructures import UploadFile

from hongyan.accounts.keys import AccountContext
from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ, Authority, require
from hongyan.api.body import openapi_body, parse_body, require_multipart
from hongyan.api.deps import DbDep, current_account
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.compliance import suppression, suppression_files
from hongyan.core.errors import InvalidRequest, Unprocessable

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])
AnyKey = Annotated[AccountContext, Depends(current_account)]
ScopeQuery = Annotated[
    str | None, Query(max_length=40, description="`account` (every message) or a signature id")
]


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    numbers: Annotated[
        list[Annotated[StrictStr, Field(max_length=40)]],
        Field(min_length=1, max_length=suppression.MAX_NUMBERS_PER_REQUEST),
    ]
    scope: Annotated[StrictStr, Field(max_length=40)] | None = Field(
        None, description="A signature id (sig_…): only messages with that signature; omit for every message."
    )
    note: Annotated[StrictStr, Field(max_length=suppression.NOTE_CHARS)] | None = None


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV, XLSX or XLS: a column of numbers (found by a header such as 手机号 or "
                            "number, else the first column).",
                        },
                        "scope": {"type": "string", "description": "A signature id; omit for every message."},
                        "note": {"type": "string", "maxLength": suppression.NOTE_CHARS},
                    },
                }
            }
        },
    }
}
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The list as CSV (UTF-8 with BOM): " + ", ".join(suppression_files.EXPORT_COLUMNS),
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
}


def _reader(ctx: AccountContext) -> None:
    require(Authority.of_api(ctx), MESSAGES_READ)


def _changer(ctx: AccountContext) -> None:
    require(Authority.of_api(ctx), ACCOUNT_SETTINGS)


@router.get("", summary="The suppression list, newest first (find one number with ?number=)")
async def list_suppressions(
    db: DbDep,
    ctx: AnyKey,
    number: Annotated[str | None, Query(max_length=40)] = None,
    scope: ScopeQuery = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JsonResponse:
    _reader(ctx)
    e164 = suppression.parse_one(number, ctx.default_region) if number else None
    async with db.read() as session:
        scope_value = None if scope is None else await suppression.check_scope(session, ctx.account_id, scope)
        page = await suppression.list_page(
            session, account_id=ctx.account_id, e164=e164, scope=scope_value, limit=limit, cursor=cursor
        )
        names = await suppression.signature_names(session, ctx.account_id)
    return JsonResponse(
        {
            "data": [suppression.entry_json(e, names) for e in page.entries],
            "total": page.total,
            "has_more": page.next_cursor is not None,
            "next_cursor": page.next_cursor,
        }
    )


@router.post(
    "",
    status_code=201,
    summary="Add numbers to the suppression list (per-number problems reported)",
    openapi_extra=openapi_body(
        SuppressionCreate, {"numbers": ["+8613800138000", "13900139000"], "note": "complaint by phone"}
    ),
)
async def add_suppressions(request: Request, db: DbDep, ctx: AnyKey) -> JsonResponse:
    _changer(ctx)
    data = await parse_body(request, SuppressionCreate)
    parsed = suppression.parse_numbers(data.numbers, ctx.default_region)
    if not parsed.e164:
        first = parsed.rejected[0]
        many = len(parsed.rejected) > 1
        raise Unprocessable(
            "no_valid_numbers" if many else first.code,
            "None of the numbers is a valid phone number." if many else first.message,
            field="numbers" if many else first.field,
            details={"rejected": [r.to_dict() for r in parsed.rejected]},
        )
    async with db.write() as session:
        scope = await suppression.check_scope(session, ctx.account_id, data.scope)
        outcome = await suppression.add_by_person(
            session,
            account_id=ctx.account_id,
            actor=actor_for_api(ctx, request),
            numbers=parsed.e164,
            scope=scope,
            source="api",
            note=data.note,
            rejected=len(parsed.rejected),
        )
    return JsonResponse(
        {
            "added": outcome.added,
            "existing": outcome.existing,
            "scope": scope or None,
            "rejected": [r.to_dict() for r in parsed.rejected],
        },
        status_code=201,
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses=CSV_RESPONSE,
    summary="The whole suppression list as CSV (streamed)",
)
async def export_suppressions(db: DbDep, ctx: AnyKey) -> StreamingResponse:
    _reader(ctx)
    return StreamingResponse(
        suppression_files.export_csv(db, account_id=ctx.account_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


@router.post(
    "/import",
    openapi_extra=UPLOAD_BODY,
    summary="Add the numbers of a file (multipart: file, optional scope and note); refused rows reported",
)
async def import_suppressions(request: Request, db: DbDep, ctx: AnyKey) -> JsonResponse:
    _changer(ctx)
    require_multipart(request)
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable(
                "field_required", "Attach the file of numbers as the `file` field.", field="file"
            )
        scope_raw, note = form.get("scope"), form.get("note")
        if not isinstance(scope_raw, str | None) or not isinstance(note, str | None):
            raise InvalidRequest("invalid_type", "scope and note are text fields.", field="scope")
        if note is not None and len(note) > suppression.NOTE_CHARS:
            raise Unprocessable(
                "note_too_long", f"The note is longer than {suppression.NOTE_CHARS} characters.", field="note"
            )
        data = await upload.read()
        filename = upload.filename or ""
    async with db.read() as session:
        scope = await suppression.check_scope(session, ctx.account_id, scope_raw)
    report = await suppression_files.import_file(
        db,
        account_id=ctx.account_id,
        actor=actor_for_api(ctx, request),
        region=ctx.default_region,
        filename=filename,
        data=data,
        scope=scope,
        note=note or None,
    )
    return JsonResponse({**report.to_dict(), "scope": scope or None})


@router.delete("/{number}", summary="Take a number off the list (?scope= one scope; omitted: every scope)")
async def remove_suppression(
    number: str, request: Request, db: DbDep, ctx: AnyKey, scope: ScopeQuery = None
) -> JsonResponse:
    _changer(ctx)
    e164 = suppression.parse_one(number, ctx.default_region)
    async with db.write() as session:
        scope_value = None if scope is None else await suppression.check_scope(session, ctx.account_id, scope)
        removed = await suppression.remove_by_person(
            session,
            account_id=ctx.account_id,
            actor=actor_for_api(ctx, request),
            e164=e164,
            scope=scope_value,
        )
    return JsonResponse({"number": e164, "removed": removed})
