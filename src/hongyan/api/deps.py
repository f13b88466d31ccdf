"""Shared route dependencies: the database, settings, and the calling account (API key)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from hongyan.accounts.service import AccountContext, authenticate_api_key, touch_api_key
from hongyan.config import Settings
from hongyan.core.errors import Forbidden, Unauthorized
from hongyan.db.engine import Database

_last_touch: dict[str, float] = {}


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def current_account(request: Request) -> AccountContext:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized(
            "missing_api_key", "Send your API key as `Authorization: Bearer <key>`.", field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("invalid_api_key", "Use the Bearer scheme: `Authorization: Bearer <key>`.",
                           field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    db = get_db(request)
    ctx = await authenticate_api_key(db, token)
    now = time.monotonic()
    if ctx.key_id and now - _last_touch.get(ctx.key_id, 0.0) > 60:
        _last_touch[ctx.key_id] = now
        await touch_api_key(db, ctx.key_id)
    return ctx


def require_scope(scope: str):  # type: ignore[no-untyped-def]
    async def _check(ctx: Annotated[AccountContext, Depends(current_account)]) -> AccountContext:
        if scope not in ctx.scopes:
            raise Forbidden("insufficient_scope", f"This API key lacks the '{scope}' scope.", field="Authorization")
        return ctx

    return _check


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SendAccount = Annotated[AccountContext, Depends(require_scope("send"))]
ReadAccount = Annotated[AccountContext, Depends(require_scope("read"))]
AdminAccount = Annotated[AccountContext, Depends(require_scope("admin"))]
BillingAccount = Annotated[AccountContext, Depends(require_scope("billing"))]
OperatorAccount = Annotated[AccountContext, Depends(require_scope("operator"))]
