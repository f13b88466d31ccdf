"""One place that turns every error into `{"error": {"code", "message", "field"}}`, 4xx never 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from hongyan.api.responses import JsonResponse
from hongyan.core.errors import HongyanError
from hongyan.db.engine import is_transient

log = logging.getLogger(__name__)

_PYDANTIC_CODES = {
    "missing": "field_required",
    "string_type": "invalid_type",
    "int_type": "invalid_type",
    "int_parsing": "invalid_type",
    "bool_type": "invalid_type",
    "list_type": "invalid_type",
    "dict_type": "invalid_type",
    "model_type": "invalid_type",
    "model_attributes_type": "invalid_type",
    "union_tag_invalid": "invalid_type",
    "datetime_type": "invalid_datetime",
    "datetime_parsing": "invalid_datetime",
    "datetime_from_date_parsing": "invalid_datetime",
    "timezone_aware": "invalid_datetime",
    "extra_forbidden": "unknown_field",
    "literal_error": "invalid_value",
    "enum": "invalid_value",
    "string_too_long": "value_too_long",
    "string_too_short": "value_too_short",
    "greater_than_equal": "value_out_of_range",
    "less_than_equal": "value_out_of_range",
    "greater_than": "value_out_of_range",
    "less_than": "value_out_of_range",
    "too_long": "value_too_long",
    "too_short": "value_too_short",
    "json_invalid": "invalid_json",
    "json_type": "invalid_json",
}
_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """('body', 'recipients', 3, 'to') → 'recipients[3].to'."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.startswith(("function-", "str", "RecipientIn", "union[")):
            continue  # pydantic's union branch labels
        else:
            out += ("." if out else "") + str(p)
    return out or None


def error_response(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    body.update(extra)
    return JsonResponse({"error": body}, status_code=status)


def validation_error_response(exc: RequestValidationError) -> JsonResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "Invalid request."}
    # a value matching no branch of a union yields one error per branch; the deepest one names the field
    base = field_path(first.get("loc", ())) or ""
    deeper = [e for e in errors if (field_path(e.get("loc", ())) or "").startswith(base)]
    if deeper:
        first = max(deeper, key=lambda e: len(field_path(e.get("loc", ())) or ""))
    code = _PYDANTIC_CODES.get(first["type"], "invalid_value")
    field = field_path(first.get("loc", ()))
    if first["type"] in ("json_invalid", "json_type"):
        status, message = 400, "The body is not valid JSON: " + str(first.get("ctx", {}).get("error", first["msg"]))
    elif first["type"] == "missing" and field is None:
        status, message = 400, "The request body is empty; send a JSON object."
        code = "body_required"
    else:
        status, message = 422, f"{field or 'body'}: {first['msg']}"
    details = [{"code": _PYDANTIC_CODES.get(e["type"], "invalid_value"), "field": field_path(e.get("loc", ())),
                "message": e["msg"]} for e in errors[:50]]
    return error_response(status, code, message, field, details=details)


def install(app: FastAPI) -> None:
    @app.exception_handler(HongyanError)
    async def _domain(_request: Request, exc: HongyanError) -> JsonResponse:
        return JsonResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JsonResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint."
        return JsonResponse({"error": {"code": code, "message": message, "field": None}},
                              status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JsonResponse:
        # a deadlock or serialization failure that outlived the caller's retries, or no free connection in
        # the pool: the server is overloaded, not the request wrong — 503 with Retry-After, and the trace kept
        if isinstance(exc, PoolTimeout) or is_transient(exc):
            log.warning("database busy: %s %s", request.method, request.url.path, exc_info=exc)
            return JsonResponse({"error": {"code": "database_busy", "field": None, "message": "The database is "
                                           "too busy to take this request right now; retry shortly."}},
                                status_code=503, headers={"Retry-After": "1"})
        log.error("unhandled database error: %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JsonResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")
