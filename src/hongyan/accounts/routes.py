"""/v1/api-keys: create (secret shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts import service
from hongyan.accounts.models import ApiKey
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import AdminAccount, DbDep
from hongyan.api.responses import JsonResponse
from hongyan.core.clock import isoformat

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)]
    scopes: list[StrictStr] = Field(default_factory=lambda: ["send", "read"])


def key_json(k: ApiKey) -> dict[str, object]:
    return {"id": k.id, "name": k.name, "hint": "…" + k.secret_hint, "scopes": k.scopes,
            "created_at": isoformat(k.created_at), "last_used_at": isoformat(k.last_used_at),
            "expires_at": isoformat(k.expires_at), "revoked_at": isoformat(k.revoked_at)}


@router.post("", status_code=201, summary="Create an API key (the key is shown once)",
             openapi_extra=openapi_body(ApiKeyCreate, {"name": "order-service", "scopes": ["send", "read"]}))
async def create_key(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, ApiKeyCreate)
    async with db.write() as session:
        created = await service.create_api_key(session, account_id=ctx.account_id, name=data.name,
                                               scopes=tuple(data.scopes))
    return JsonResponse({**key_json(created.key), "key": created.token}, status_code=201)


@router.get("", summary="List API keys")
async def list_keys(db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        keys = await service.list_api_keys(session, account_id=ctx.account_id)
    return JsonResponse({"data": [key_json(k) for k in keys]})


@router.delete("/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.write() as session:
        await service.revoke_api_key(session, account_id=ctx.account_id, key_id=key_id)
    return JsonResponse({"id": key_id, "revoked": True})
