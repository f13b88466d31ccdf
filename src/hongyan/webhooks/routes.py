"""/v1/webhooks: endpoints that receive signed status events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import select

from hongyan.accounts.permissions import Authority
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import AdminAccount, DbDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.core.clock import isoformat
from hongyan.core.errors import NotFound
from hongyan.webhooks import service
from hongyan.webhooks.models import WebhookEndpoint, WebhookEvent

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[StrictStr, Field(max_length=2000)]
    event_types: list[StrictStr] | None = Field(None, description="e.g. message.delivered; omit for all events.")
    description: Annotated[str, Field(max_length=200)] = ""


class WebhookEndpointPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    created_at: str | None


class WebhookEndpointCreated(WebhookEndpointPublic):
    secret: str = Field(description="The HMAC signing secret: shown this once.")


class WebhookEndpointsPublic(BaseModel):
    data: list[WebhookEndpointPublic]


class WebhookEventPublic(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    message_id: str | None
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str | None
    delivered_at: str | None
    next_attempt_at: str | None


class WebhookEventsPublic(BaseModel):
    data: list[WebhookEventPublic]


def _endpoint_json(e: WebhookEndpoint, secret: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"id": e.id, "url": e.url, "event_types": e.event_types, "description": e.description,
                              "enabled": e.enabled, "created_at": isoformat(e.created_at)}
    if secret is not None:
        out["secret"] = secret
    return out


@router.post("", status_code=201, summary="Add a webhook endpoint (the signing secret is shown once)",
             responses={201: {"model": WebhookEndpointCreated, "description": "The endpoint and its secret"}},
             openapi_extra=openapi_body(WebhookCreate, {"url": "https://example.com/hongyan/events"}))
async def create_webhook(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, WebhookCreate)
    async with db.write() as session:
        endpoint, secret = await service.create_endpoint(
            session, account_id=ctx.account_id, url=data.url, event_types=data.event_types, description=data.description,
            actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx),
        )
    return JsonResponse(_endpoint_json(endpoint, secret), status_code=201)


@router.get("", summary="List webhook endpoints",
            responses={200: {"model": WebhookEndpointsPublic, "description": "The endpoints"}})
async def list_webhooks(db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        endpoints = await service.list_endpoints(session, account_id=ctx.account_id)
    return JsonResponse({"data": [_endpoint_json(e) for e in endpoints]})


@router.delete("/{endpoint_id}", summary="Disable a webhook endpoint")
async def delete_webhook(endpoint_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.write() as session:
        await service.delete_endpoint(session, account_id=ctx.account_id, endpoint_id=endpoint_id,
                                      actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
    return JsonResponse({"id": endpoint_id, "enabled": False})


@router.get("/{endpoint_id}/events", summary="Recent events of an endpoint with delivery state",
            responses={200: {"model": WebhookEventsPublic, "description": "Newest first"}})
async def list_events(endpoint_id: str, db: DbDep, ctx: AdminAccount,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> JsonResponse:
    async with db.read() as session:
        owned = await session.scalar(select(WebhookEndpoint.id).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == ctx.account_id))
        if owned is None:  # unknown and another account's endpoint answer alike
            raise NotFound("webhook_endpoint_not_found", "No such webhook endpoint.", field="id")
        rows = (await session.scalars(
            select(WebhookEvent).where(WebhookEvent.endpoint_id == endpoint_id, WebhookEvent.account_id == ctx.account_id)
            .order_by(WebhookEvent.id.desc()).limit(limit)
        )).all()
    return JsonResponse({"data": [
        {"id": e.id, "type": e.event_type, "message_id": e.message_id, "status": e.status, "attempts": e.attempts,
         "last_status_code": e.last_status_code, "last_error": e.last_error, "created_at": isoformat(e.created_at),
         "delivered_at": isoformat(e.delivered_at), "next_attempt_at": isoformat(e.next_attempt_at)}
        for e in rows
    ]})
