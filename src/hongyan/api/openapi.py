"""The OpenAPI document: FastAPI's, plus what our routes return but FastAPI cannot infer.

Routes return `JsonResponse` objects, so FastAPI documents their bodies as a string; this fills in:
the declared model (`responses={200: {"model": …}}`) or else a JSON object for 2xx bodies, the one error shape (`{"error": {code, message, field}}`) for every 4xx the
platform can answer, CSV and PDF where a route serves them. Checked by schemathesis in
tests/e2e/test_api_schemathesis.py (no 5xx, every answer documented and matching).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine code (docs/errors.md)."},
                "message": {"type": "string", "description": "What went wrong, for a person."},
                "field": {"type": ["string", "null"], "description": "The field at fault, e.g. recipients[3].to."},
                "details": {"description": "Extra facts for some codes (rejected recipients, shortfall …)."},
            },
        }
    },
}
ERRORS = {
    "400": "Invalid request (a field's value)",
    "401": "Missing, wrong, expired or revoked credentials",
    "403": "Scope, IP allow-list or permission refuses it",
    "404": "No such object in this account, or no such URL",
    "413": "Body too large",
    "415": "Body is not JSON",
    "422": "Validation error (field named)",
    "429": "Rate limited (see Retry-After)",
    "431": "Headers too large",
}
WRITE_ERRORS = {"402": "Not enough balance or over a spend limit", "409": "Conflicts with the object's state"}
BINARY = {"text/csv": {"schema": {"type": "string"}}}


def _fix_operation(path: str, method: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    for code, response in responses.items():
        content = response.get("content", {})
        json_body = content.get("application/json")
        if code.startswith("2") and json_body is not None and "$ref" in json_body.get("schema", {}):
            json_body["schema"].pop("type", None)  # a declared model, merged with the default class's "string"
        elif code.startswith("2") and json_body is not None and json_body.get("schema") == {"type": "string"}:
            if path.endswith(".pdf"):
                content.pop("application/json")
                content["application/pdf"] = {"schema": {"type": "string", "format": "binary"}}
            else:
                json_body["schema"] = {"type": "object"}
        if code.startswith("2") and any(p.get("name") == "format" for p in op.get("parameters", [])):
            content.update(BINARY)
    codes = dict(ERRORS)
    if method in ("post", "patch", "put", "delete"):
        codes.update(WRITE_ERRORS)
    for code, description in codes.items():
        responses[code] = {"description": description,
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if path == "/ready":
        responses["503"] = {"description": "Not ready", "content": {"application/json": {"schema": {"type": "object"}}}}


def build_openapi(app: FastAPI, extra_schemas: dict[str, Any]) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(extra_schemas)
    components["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                _fix_operation(path, method, op)
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "hmac": {"type": "apiKey", "in": "header", "name": "Authorization",
                 "description": "HONGYAN-HMAC-SHA256 key=…,ts=…,nonce=…,sig=… (docs/security.md)"},
    }
    schema["security"] = [{"bearer": []}, {"hmac": []}]
    return schema
