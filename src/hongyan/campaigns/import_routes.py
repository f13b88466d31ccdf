"""/v1/imports: upload a contact file (multipart), preview it, start it with a column mapping, follow its
progress, cancel it, download its error file. The rows are imported by the workers (import_worker)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.datastructures import UploadFile

from hongyan.accounts.permissions import Authority
from hongyan.api.body import openapi_body, parse_body, require_multipart
from hongyan.api.deps import DbDep, ReadAccount, SendAccount, SettingsDep
from hongyan.api.limits import RequestLimits
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.campaigns import import_files, imports
from hongyan.campaigns.tabular import DELIMITERS, ENCODINGS
from hongyan.core.errors import InvalidRequest, Unprocessable

router = APIRouter(tags=["imports"])
Column = Annotated[StrictInt, Field(ge=0, le=import_files.MAX_COLUMNS - 1)]
# POSTs that carry a whole contact file: allowed up to HONGYAN_IMPORT_MAX_BYTES instead of max_body_bytes
UPLOAD_PATHS = frozenset({"/v1/imports", "/console/contacts/import"})
MULTIPART_OVERHEAD = 1024 * 1024


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: Column
    name: Annotated[StrictStr, Field(max_length=40)]
    type: Literal["text", "number", "date"] = "text"


class MappingBody(BaseModel):
    """0-based columns of the file; `fields` become typed custom contact fields ({name} in texts)."""

    model_config = ConfigDict(extra="forbid")
    phone: Column | None = None
    name: Column | None = None
    tags: Column | None = None
    time_zone: Column | None = None
    fields: Annotated[list[FieldMap], Field(max_length=import_files.MAX_COLUMNS)] = []
    header_rows: Literal[0, 1] = 1


class OptionsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    update_existing: StrictBool = True
    default_region: Annotated[StrictStr, Field(min_length=2, max_length=2)] | None = None
    consent_source: Annotated[StrictStr, Field(max_length=64)] | None = None


class ImportStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mapping: MappingBody
    group_id: Annotated[StrictStr, Field(max_length=40)] | None = None
    new_group_name: Annotated[StrictStr, Field(max_length=100)] | None = None
    campaign_id: Annotated[StrictStr, Field(max_length=40)] | None = None
    options: OptionsBody = OptionsBody()


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
                            "description": "CSV, XLSX or XLS; first sheet, first row names the columns.",
                        },
                        "encoding": {
                            "type": "string",
                            "enum": ["auto", *ENCODINGS],
                            "description": "CSV only; auto detects.",
                        },
                        "delimiter": {
                            "type": "string",
                            "enum": ["auto", *DELIMITERS],
                            "description": "CSV only; auto detects.",
                        },
                    },
                }
            }
        },
    }
}
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One line per refused row (UTF-8 with BOM).",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
}


def _choice(value: Any, name: str) -> str | None:
    if value is None or value == "" or value == "auto":
        return None
    if not isinstance(value, str):
        raise InvalidRequest("invalid_type", f"{name} is text.", field=name)
    return {"tab": "\t", "\\t": "\t"}.get(value, value) if name == "delimiter" else value


@router.post(
    "/v1/imports",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    summary="Upload a contact file (multipart: file, optional encoding and delimiter); then preview and start it",
)
async def upload_import(request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount) -> JsonResponse:
    require_multipart(request)
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Unprocessable(
                "field_required", "Attach the contact file as the `file` field.", field="file"
            )
        job = await import_files.create_import(
            db,
            settings,
            authority=Authority.of_api(ctx),
            filename=upload.filename or "",
            stream=upload,
            encoding=_choice(form.get("encoding"), "encoding"),
            delimiter=_choice(form.get("delimiter"), "delimiter"),
        )
    return JsonResponse(imports.job_json(job), status_code=201)


@router.get("/v1/imports", summary="Imports, newest first (cursor pagination)")
async def list_imports(
    db: DbDep,
    ctx: ReadAccount,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JsonResponse:
    rows, next_cursor = await imports.list_imports(db, account_id=ctx.account_id, cursor=cursor, limit=limit)
    return JsonResponse(
        {
            "data": [imports.job_json(j) for j in rows],
            "next_cursor": next_cursor,
            "has_more": next_cursor is not None,
        }
    )


@router.get("/v1/imports/{import_id}", summary="One import: status, counts, progress (percent, rows/s, ETA)")
async def get_import(import_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    return JsonResponse(
        imports.job_json(await imports.get_import(db, account_id=ctx.account_id, job_id=import_id))
    )


@router.get(
    "/v1/imports/{import_id}/preview",
    summary="The header, the first 10 rows, the detected format and a mapping guessed from the header",
)
async def preview_import(import_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    job = await imports.get_import(db, account_id=ctx.account_id, job_id=import_id)
    return JsonResponse(await import_files.preview(db, job))


@router.post(
    "/v1/imports/{import_id}/start",
    summary="Start an uploaded import with a column mapping",
    openapi_extra=openapi_body(
        ImportStart,
        {
            "mapping": {"phone": 0, "name": 1, "fields": [{"index": 2, "name": "订单号", "type": "text"}]},
            "new_group_name": "双十一名单",
            "options": {"update_existing": True, "consent_source": "门店登记"},
        },
    ),
)
async def start_import(
    import_id: str, request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount
) -> JsonResponse:
    await imports.get_import(
        db, account_id=ctx.account_id, job_id=import_id
    )  # another account's id: 404 first
    data = await parse_body(request, ImportStart)
    job = await imports.start_import(
        db,
        settings,
        authority=Authority.of_api(ctx),
        job_id=import_id,
        mapping=data.mapping.model_dump(),
        group_id=data.group_id,
        new_group_name=data.new_group_name,
        campaign_id=data.campaign_id,
        options=data.options.model_dump(),
        actor=actor_for_api(ctx, request),
    )
    return JsonResponse(imports.job_json(job))


@router.post(
    "/v1/imports/{import_id}/cancel",
    summary="Cancel an import: at once if not running, else before its next chunk (rows committed stay)",
)
async def cancel_import(import_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    job = await imports.cancel_import(
        db, authority=Authority.of_api(ctx), job_id=import_id, actor=actor_for_api(ctx, request)
    )
    return JsonResponse(imports.job_json(job))


@router.get(
    "/v1/imports/{import_id}/errors",
    response_class=StreamingResponse,
    responses=CSV_RESPONSE,
    summary="The refused rows as CSV: row, column, column name, code, message, value",
)
async def import_errors(import_id: str, db: DbDep, ctx: ReadAccount) -> StreamingResponse:
    job = await imports.get_import(db, account_id=ctx.account_id, job_id=import_id)
    return error_download(db, job)


def error_download(db: Any, job: Any) -> StreamingResponse:
    return StreamingResponse(
        import_files.error_file(db, job),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-errors.csv"'},
    )


class UploadAwareLimits:
    """RequestLimits, with file-upload POSTs to the import paths allowed up to the import size limit."""

    def __init__(
        self, app: Any, *, max_header_bytes: int, max_body_bytes: int, import_max_bytes: int
    ) -> None:
        self.general = RequestLimits(app, max_header_bytes=max_header_bytes, max_body_bytes=max_body_bytes)
        self.uploads = RequestLimits(
            app, max_header_bytes=max_header_bytes, max_body_bytes=import_max_bytes + MULTIPART_OVERHEAD
        )
        self.import_max_bytes = import_max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in UPLOAD_PATHS:
            declared = dict(scope.get("headers", ())).get(b"content-length", b"0")
            if declared.isdigit() and int(declared) > self.uploads.max_body_bytes:
                await RequestLimits._reject(
                    send,
                    413,
                    "file_too_large",
                    f"The file is larger than "
                    f"{self.import_max_bytes // (1024 * 1024)} MiB; split it into smaller files.",
                    "file",
                )
                return
            await self.uploads(scope, receive, send)
            return
        await self.general(scope, receive, send)
