"""Shared route dependencies: the database, settings, and the calling account (API key or signature)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from hongyan.accounts.keys import (
    SIGNATURE_SCHEME,
    AccountContext,
    authenticate_api_key,
    authenticate_signature,
    touch_api_key,
)
from hongyan.api.client import client_ip
from hongyan.api.rate_limit import Limiter, RateLimiter
from hongyan.config import Settings
from hongyan.core.errors import Forbidden, Unauthorized
from hongyan.db.engine import Database

_last_touch: dict[str, float] = {}


def app_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


# dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, two thread hops
# per request for a getattr
async def get_db(request: Request) -> Database:
    return app_db(request)


async def get_settings(request: Request) -> Settings:
    return app_settings(request)


def publisher(app: object) -> object | None:
    """This process's outbox relay, when it runs one: a submit publishes through it right after its commit
    (messaging.submit.submit_batch(publisher=…)); None where no runtime runs (the relay polls instead)."""
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    return runtime.relay if runtime is not None else None


def rate_limiter(request: Request) -> Limiter:
    """The app's limiter (memory or Redis, made when the app starts; memory if it was never started)."""
    limiter: Limiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        limiter = request.app.state.rate_limiter = RateLimiter()
    return limiter


async def current_account(request: Request) -> AccountContext:
    settings = app_settings(request)
    ip = client_ip(request)
    limiter = rate_limiter(request)
    # per IP before the key is checked: guessing keys is throttled like any other traffic
    await limiter.check(f"ip:{ip}", settings.api_rate_per_ip, what="IP address")
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized(
            "missing_api_key", "Send your API key as `Authorization: Bearer <key>`.", field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = header.partition(" ")
    db = app_db(request)
    if scheme.upper() == SIGNATURE_SCHEME:
        path_qs = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        ctx = await authenticate_signature(db, token, method=request.method, path_qs=path_qs,
                                           body=await request.body(), ip=ip, nonces=limiter)
    elif scheme.lower() == "bearer" and token.strip():
        ctx = await authenticate_api_key(db, token, ip=ip)
    else:
        raise Unauthorized("invalid_api_key", f"Use `Authorization: Bearer <key>` or `{SIGNATURE_SCHEME} …`.",
                           field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    if ctx.key_id:
        await limiter.check(f"key:{ctx.key_id}", ctx.rate_limit_per_s or settings.api_rate_per_key, what="API key")
    now = time.monotonic()
    if ctx.key_id and now - _last_touch.get(ctx.key_id, 0.0) > 60:
        _last_touch[ctx.key_id] = now
        await touch_api_key(db, ctx.key_id, ip)
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
