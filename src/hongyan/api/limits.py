"""ASGI guard for oversize requests: headers and bodies get a JSON 431/413 before any parsing."""

from __future__ import annotations

from typing import Any

import orjson

Scope = dict[str, Any]


def _json_error(status: int, code: str, message: str, field: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    body = orjson.dumps({"error": {"code": code, "message": message, "field": field}})
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class RequestLimits:
    def __init__(self, app: Any, *, max_header_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
        if header_bytes > self.max_header_bytes:
            await self._reject(send, 431, "headers_too_large",
                               f"Request headers total {header_bytes} bytes; the limit is {self.max_header_bytes}.", None)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body_bytes:
                    await self._reject(send, 413, "payload_too_large",
                                       f"The body has {declared} bytes; the limit is {self.max_body_bytes}.", "body")
                    return
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._reject(send, 413, "payload_too_large", f"The body is larger than {limit} bytes.", "body")

    @staticmethod
    async def _reject(send: Any, status: int, code: str, message: str, field: str | None) -> None:
        start, body = _json_error(status, code, message, field)
        await send(start)
        await send(body)


class _BodyTooLarge(Exception):
    pass
