"""Domain errors with stable machine codes; one handler turns them into API JSON and console messages.

Every code raised anywhere must be listed in `docs/errors.md` (a test checks this).
"""

from __future__ import annotations

from typing import Any


class HongyanError(Exception):
    """An error the caller can fix: a stable `code`, a human `message`, the `field` at fault."""

    status_code = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code
        self.details = details
        self.headers = headers

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class InvalidRequest(HongyanError):
    status_code = 400


class Unauthorized(HongyanError):
    status_code = 401


class Forbidden(HongyanError):
    status_code = 403


class NotFound(HongyanError):
    status_code = 404


class Conflict(HongyanError):
    status_code = 409


class Unprocessable(HongyanError):
    status_code = 422
