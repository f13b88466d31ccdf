"""/v1/operator/channels and /v1/operator/routes: carrier channels and routing, for platform operators.

These need an API key with the `operator` scope (created with `hongyan admin create-key --scopes operator`).
Changes apply at once in this process and within HONGYAN_CHANNEL_RELOAD_S in other workers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from hongyan.accounts.keys import AccountContext
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import DbDep, require_scope
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.channels import service

router = APIRouter(prefix="/v1/operator", tags=["operator: channels and routes"])
OperatorAccount = Annotated[AccountContext, Depends(require_scope("operator"))]


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=100)]
    kind: StrictStr = "smpp"
    config: dict[str, Any] = Field(default_factory=dict)
    enabled: StrictBool = True


class ChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] | None = None
    enabled: StrictBool | None = None


class RouteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: StrictStr = Field(description="Channel id or name.")
    name: StrictStr = ""
    priority: StrictInt = 100
    weight: StrictInt = 1
    countries: list[StrictStr] = Field(default_factory=list)
    prefixes: list[StrictStr] = Field(default_factory=list)
    message_types: list[StrictStr] = Field(default_factory=list)
    account_id: StrictStr | None = None
    enabled: StrictBool = True


_SMPP_EXAMPLE = {"name": "carrier-a", "kind": "smpp", "config": {
    "host": "smpp.carrier-a.example", "port": 2775, "system_id": "hongyan", "password": "secret", "binds": 2,
    "window": 50, "tps": 200, "long_mode": "udh8"}}


async def _reload(request: Request) -> None:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        await runtime.reload_channels()


def _status(request: Request, channel_id: str) -> dict[str, Any] | None:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or channel_id not in runtime.connectors:
        return None
    return runtime.connectors[channel_id].status()  # type: ignore[no-any-return]


@router.post("/channels", status_code=201, summary="Add a carrier channel",
             openapi_extra=openapi_body(ChannelCreate, _SMPP_EXAMPLE))
async def create_channel(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, ChannelCreate)
    async with db.write() as session:
        channel = await service.create_channel(session, name=data.name, kind=data.kind, config=data.config,
                                               enabled=data.enabled, actor=actor_for_api(ctx, request))
    await _reload(request)
    return JsonResponse(service.channel_json(channel, _status(request, channel.id)), status_code=201)


@router.get("/channels", summary="Channels with their live state and counters")
async def list_channels(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        channels = await service.list_channels(session)
    return JsonResponse({"data": [service.channel_json(c, _status(request, c.id)) for c in channels]})


@router.get("/channels/{ref}", summary="One channel (by id or name) with its state and counters")
async def get_channel(ref: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        channel = await service.get_channel(session, ref)
    return JsonResponse(service.channel_json(channel, _status(request, channel.id)))


@router.patch("/channels/{ref}", summary="Change settings (merged) or enable/disable a channel",
              openapi_extra=openapi_body(ChannelUpdate, {"config": {"tps": 500}, "enabled": True}))
async def update_channel(ref: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, ChannelUpdate)
    async with db.write() as session:
        channel = await service.update_channel(session, ref, config=data.config, enabled=data.enabled,
                                               actor=actor_for_api(ctx, request))
    await _reload(request)
    return JsonResponse(service.channel_json(channel, _status(request, channel.id)))


@router.delete("/channels/{ref}", summary="Delete a channel without routes")
async def delete_channel(ref: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.write() as session:
        await service.delete_channel(session, ref, actor=actor_for_api(ctx, request))
    await _reload(request)
    return JsonResponse({"id": ref, "deleted": True})


@router.post("/routes", status_code=201, summary="Add a route",
             openapi_extra=openapi_body(RouteCreate, {"channel": "carrier-a", "priority": 10, "weight": 3,
                                                      "countries": ["CN"], "message_types": ["verification"]}))
async def create_route(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, RouteCreate)
    async with db.write() as session:
        route = await service.create_route(session, **data.model_dump(), actor=actor_for_api(ctx, request))
    await _reload(request)
    return JsonResponse(service.route_json(route), status_code=201)


@router.get("/routes", summary="Routes in the order they are considered")
async def list_routes(db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        routes = await service.list_routes(session)
    return JsonResponse({"data": [service.route_json(r) for r in routes]})


@router.delete("/routes/{route_id}", summary="Delete a route")
async def delete_route(route_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.write() as session:
        await service.delete_route(session, route_id, actor=actor_for_api(ctx, request))
    await _reload(request)
    return JsonResponse({"id": route_id, "deleted": True})


@router.get("/system", summary="Workers, scheduler leader, SMPP binds per worker and queue depth (production mode)")
async def system(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    """From the workers' leases in PostgreSQL (docs/production.md): live `hongyan worker` processes, the one
    leading the campaign scheduler, which worker runs each SMPP bind; and the dispatch queue's depth per lane
    as this process sees it (the broker's count on RabbitMQ)."""
    from hongyan.dispatch.fleet import snapshot
    from hongyan.dispatch.queue import DISPATCH, LANE_NAMES

    fleet = (await snapshot(db)).json()
    runtime = getattr(request.app.state, "runtime", None)
    depth = runtime.queue.depth(DISPATCH) if runtime is not None else None
    fleet["queue"] = {"backend": request.app.state.settings.queue_url.split(":", 1)[0],
                      "depth": {LANE_NAMES[lane]: n for lane, n in depth.items()} if depth is not None else None}
    fleet["embedded_workers"] = runtime is not None and not getattr(runtime, "relay_only", False)
    gate = getattr(runtime, "gate", None)
    fleet["codes_first"] = gate.status() if gate is not None else None  # this process's bulk cap (embedded workers)
    return JsonResponse(fleet)
