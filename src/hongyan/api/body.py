"""Request bodies: parsed with orjson (fast, strict UTF-8) and validated with pydantic, errors mapped to
the API's error format; models are registered in the OpenAPI document under components/schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, AwareDatetime, BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from hongyan.core.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)
SCHEMAS: dict[str, Any] = {}


def _to_utc(value: datetime) -> datetime:
    """Time zone aware input, converted to UTC here (0001-01-01T00:00+01:00 has no UTC: a 422, not a 500)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_parsing", "the date is outside the years 1–9999 in UTC") from None


# every date-time the API accepts (bodies and query parameters): aware, in range, UTC inside
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def openapi_body(model: type[BaseModel], example: Any = None) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is `model`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        SCHEMAS[name] = sub
    SCHEMAS[model.__name__] = schema
    content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("body_required", "The request body is empty; send a JSON object.", field="body")
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", "") and not content_type.endswith("+json"):
        raise InvalidRequest(
            "unsupported_media_type", f"Send JSON (Content-Type: application/json), not {content_type}.",
            field="Content-Type", status_code=415,
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "surrogate" in exc.msg:
            raise InvalidRequest(
                "invalid_encoding",
                f"The body contains a lone UTF-16 surrogate escape (e.g. \\ud83d without its pair) at line "
                f"{exc.lineno} column {exc.colno}; send the whole character.",
                field="body",
            ) from exc
        if "utf-8" in str(exc).lower():
            raise InvalidRequest(
                "invalid_encoding", "The body is not valid UTF-8; encode JSON as UTF-8.", field="body"
            ) from exc
        raise InvalidRequest(
            "invalid_json", f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            field="body",
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequest("invalid_type", "The body must be a JSON object.", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc


def require_multipart(request: Request) -> None:
    """File uploads come as multipart/form-data with a `file` field; anything else is 415."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise InvalidRequest(
            "unsupported_media_type",
            "Upload the file as multipart/form-data (field `file`).",
            field="Content-Type",
            status_code=415,
        )
