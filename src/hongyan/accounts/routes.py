"""/v1/api-keys: create (secret shown once), list, show, change, rotate with overlap, revoke."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts import keys
from hongyan.accounts.models import ApiKey
from hongyan.accounts.permissions import Authority
from hongyan.api.body import UtcDatetime, openapi_body, parse_body
from hongyan.api.deps import AdminAccount, DbDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.core.clock import isoformat

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)]
    scopes: list[StrictStr] = Field(default_factory=lambda: ["send", "read"], max_length=8)
    allowed_cidrs: list[StrictStr] = Field(default_factory=list, max_length=keys.MAX_CIDRS,
                                           description="IPv4/IPv6 networks allowed to use the key; empty: any.")
    expires_at: UtcDatetime | None = None
    auth: Literal["bearer", "hmac"] = Field("bearer", description="hmac: requests must be signed; see docs/security.md.")
    rate_limit_per_s: Annotated[float, Field(gt=0, le=100_000)] | None = None


class ApiKeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    scopes: Annotated[list[StrictStr], Field(max_length=8)] | None = None
    allowed_cidrs: Annotated[list[StrictStr], Field(max_length=keys.MAX_CIDRS)] | None = None
    expires_at: UtcDatetime | None = Field(None, description="New expiry; send null with clear_expiry to remove.")
    clear_expiry: bool = False
    rate_limit_per_s: Annotated[float, Field(gt=0, le=100_000)] | None = None
    clear_rate_limit: bool = False


class ApiKeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_hours: Annotated[float, Field(ge=0, le=keys.MAX_OVERLAP_HOURS)] = 24


class ApiKeyPublic(BaseModel):
    """An API key as listed (never its secret)."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    hint: str
    scopes: list[str]
    allowed_cidrs: list[str]
    auth: Literal["bearer", "hmac"]
    rate_limit_per_s: float | None
    rotated_to: str | None
    created_at: str | None
    last_used_at: str | None
    last_used_ip: str | None
    expires_at: str | None
    revoked_at: str | None


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="`<key id>.<secret>`: shown this once, never again.")


class ApiKeyRotated(ApiKeyCreated):
    replaces: ApiKeyPublic


class ApiKeyRevoked(BaseModel):
    id: str
    revoked: bool


def key_json(k: ApiKey) -> dict[str, object]:
    return {"id": k.id, "name": k.name, "hint": "…" + k.secret_hint, "scopes": k.scopes,
            "allowed_cidrs": k.allowed_cidrs, "auth": "hmac" if k.signing_secret else "bearer",
            "rate_limit_per_s": k.rate_limit_per_s, "rotated_to": k.rotated_to,
            "created_at": isoformat(k.created_at), "last_used_at": isoformat(k.last_used_at),
            "last_used_ip": k.last_used_ip, "expires_at": isoformat(k.expires_at), "revoked_at": isoformat(k.revoked_at)}


@router.post("", status_code=201, summary="Create an API key (the key is shown once)",
             responses={201: {"model": ApiKeyCreated, "description": "The key, with its secret this once"}},
             openapi_extra=openapi_body(ApiKeyCreate, {"name": "order-service", "scopes": ["send", "read"],
                                                       "allowed_cidrs": ["203.0.113.0/24", "2001:db8::/32"]}))
async def create_key(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, ApiKeyCreate)
    async with db.write() as session:
        created = await keys.create_api_key(
            session, account_id=ctx.account_id, name=data.name, scopes=tuple(data.scopes),
            allowed_cidrs=data.allowed_cidrs, expires_at=data.expires_at, signing=data.auth == "hmac",
            rate_limit_per_s=data.rate_limit_per_s, actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx),
        )
    return JsonResponse({**key_json(created.key), "key": created.token}, status_code=201)


@router.get("", summary="List API keys", responses={200: {"model": ApiKeysPublic, "description": "The keys"}})
async def list_keys(db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        rows = await keys.list_api_keys(session, account_id=ctx.account_id)
    return JsonResponse({"data": [key_json(k) for k in rows]})


@router.get("/{key_id}", summary="Show an API key", responses={200: {"model": ApiKeyPublic, "description": "The key"}})
async def get_key(key_id: str, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        key = await keys.get_api_key(session, account_id=ctx.account_id, key_id=key_id)
        return JsonResponse(key_json(key))


@router.patch("/{key_id}", summary="Change a key's name, scopes, IP allow-list, expiry or rate limit",
              responses={200: {"model": ApiKeyPublic, "description": "The key as changed"}},
              openapi_extra=openapi_body(ApiKeyUpdate, {"allowed_cidrs": ["198.51.100.7"]}))
async def update_key(key_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, ApiKeyUpdate)
    async with db.write() as session:
        key = await keys.update_api_key(
            session, account_id=ctx.account_id, key_id=key_id, actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx), name=data.name,
            scopes=data.scopes, allowed_cidrs=data.allowed_cidrs, expires_at=data.expires_at,
            clear_expiry=data.clear_expiry, rate_limit_per_s=data.rate_limit_per_s,
            clear_rate_limit=data.clear_rate_limit,
        )
        return JsonResponse(key_json(key))


@router.post("/{key_id}/rotate", status_code=201, summary="Rotate: a new key now, the old one expires after the overlap",
             responses={201: {"model": ApiKeyRotated, "description": "The new key (secret shown once) and the old one"}},
             openapi_extra=openapi_body(ApiKeyRotate, {"overlap_hours": 24}))
async def rotate_key(key_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    body = await request.body()
    data = await parse_body(request, ApiKeyRotate) if body.strip() else ApiKeyRotate()
    async with db.write() as session:
        created = await keys.rotate_api_key(session, account_id=ctx.account_id, key_id=key_id,
                                            overlap_hours=data.overlap_hours, actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
        old = await keys.get_api_key(session, account_id=ctx.account_id, key_id=key_id)
        return JsonResponse({**key_json(created.key), "key": created.token, "replaces": key_json(old)}, status_code=201)


@router.delete("/{key_id}", summary="Revoke an API key",
               responses={200: {"model": ApiKeyRevoked, "description": "Revoked"}})
async def revoke_key(key_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.write() as session:
        await keys.revoke_api_key(session, account_id=ctx.account_id, key_id=key_id, actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
    return JsonResponse({"id": key_id, "revoked": True})
