"""/v1/messages and /v1/batches: thin routes over messaging.submit and messaging.queries."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from hongyan.accounts.keys import AccountContext
from hongyan.api.body import UtcDatetime, openapi_body, parse_body
from hongyan.api.deps import DbDep, ReadAccount, SendAccount, SettingsDep, publisher
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api, record
from hongyan.billing import charging
from hongyan.billing.rates import load_price_list
from hongyan.config import Settings
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import InvalidRequest, Unprocessable
from hongyan.core.money import format_micros
from hongyan.db.engine import Database
from hongyan.messaging import idempotency, inbound, queries
from hongyan.messaging.encoding import segment
from hongyan.messaging.numbers import normalize_field
from hongyan.messaging.schemas import (
    BatchAccepted,
    BatchCanceled,
    BatchCreate,
    BatchPublic,
    MessageAccepted,
    MessageCreate,
    MessagePublic,
    MessagesPublic,
    QuoteRequest,
)
from hongyan.messaging.submit import Recipient, SubmitRequest, SubmitResult, prepare_checked, submit_batch

router = APIRouter(prefix="/v1", tags=["messages"])

_SINGLE_EXAMPLE = {"to": "+8613800138000", "text": "【鸿雁】您的订单A1001已发货。", "message_type": "notification"}
_BATCH_EXAMPLE = {
    "text": "尊敬的{客户姓名},您的订单{订单号}已发货。",
    "recipients": [
        {"to": "+8613800138000", "vars": {"客户姓名": "张三", "订单号": "A1001"}},
        {"to": "13900139000", "vars": {"客户姓名": "李四", "订单号": "A1002"}},
    ],
    "message_type": "notification",
}


def _vars(values: dict[str, Any] | None) -> dict[str, str] | None:
    return None if values is None else {k: str(v) for k, v in values.items()}


def _text_or_template(text: str | None, template_id: str | None) -> str:
    """The text, or "" when sending by template (the template's body replaces it); neither is an error."""
    if text is None and not template_id:
        raise Unprocessable("field_required", "Give the message text, or a template_id with params.", field="text")
    if text is not None and template_id:
        raise Unprocessable("text_and_template", "Give either text or template_id, not both.", field="template_id")
    return text or ""


def _validity(minutes: int | None) -> timedelta | None:
    return None if minutes is None else timedelta(minutes=minutes)


def _message_json(result: SubmitResult) -> dict[str, Any]:
    m = result.accepted[0]
    return {
        "id": m.id,
        "batch_id": result.batch_id,
        "to": m.to,
        "status": m.status,
        "text": m.text if m.text is not None else result.text,
        "message_type": result.message_type,
        "encoding": m.encoding,
        "segments": m.segments,
        "price": format_micros(m.price_micros, result.currency),
        "price_micros": m.price_micros,
        "currency": result.currency,
        "scheduled_at": isoformat(result.scheduled_at),
        "created_at": isoformat(result.created_at),
    }


def _batch_json(result: SubmitResult) -> dict[str, Any]:
    return {
        "id": result.batch_id,
        "status": result.status,
        "message_type": result.message_type,
        "accepted": len(result.accepted),
        "rejected_count": len(result.rejected),
        "segments": result.segments_total,
        "price_per_segment": format_micros(result.price_per_segment_micros, result.currency),
        "price_total": format_micros(result.price_micros_total, result.currency),
        "price_total_micros": result.price_micros_total,
        "currency": result.currency,
        "scheduled_at": isoformat(result.scheduled_at),
        "created_at": isoformat(result.created_at),
        "messages": [
            {
                "index": m.index,
                "id": m.id,
                "to": m.to,
                "status": m.status,
                "encoding": m.encoding,
                "segments": m.segments,
                "price": format_micros(m.price_micros, result.currency),
                **({"text": m.text} if m.text is not None else {}),
            }
            for m in result.accepted
        ],
        "rejected": [
            {"index": r.index, "to": r.to, "code": r.code, "message": r.message, "field": r.field}
            for r in result.rejected
        ],
    }


async def _submit(
    request: Request,
    db: Database,
    settings: Settings,
    ctx: AccountContext,
    submit: SubmitRequest,
    idempotency_key: str | None,
    render: Any,
) -> Response:
    status_code = 202
    key = fingerprint = None
    if idempotency_key is not None:
        key = idempotency.check_key(idempotency_key)
        fingerprint = idempotency.request_fingerprint(request.method, request.url.path, await request.body())
        record = await idempotency.find(db, account_id=ctx.account_id, key=key, fingerprint=fingerprint)
        if record is not None:
            return Response(record.response_body, status_code=record.status_code, media_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
    body: bytes = b""

    async def remember(session: Any, result: SubmitResult) -> None:
        nonlocal body
        body = orjson.dumps(render(result))
        if key is not None and fingerprint is not None:
            await idempotency.store(session, account_id=ctx.account_id, key=key, fingerprint=fingerprint,
                                    status_code=status_code, body=body)

    try:
        await submit_batch(db, settings, submit, account_id=ctx.account_id, source="api", currency=ctx.currency,
                           actor=f"key:{ctx.key_id}", after_insert=remember, publisher=publisher(request.app))
    except Exception as exc:
        if key is not None and fingerprint is not None and idempotency.is_conflict(exc):
            # a concurrent request with the same key committed first: answer with its response
            record = await idempotency.find(db, account_id=ctx.account_id, key=key, fingerprint=fingerprint)
            if record is not None:
                return Response(record.response_body, status_code=record.status_code, media_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
        raise
    return Response(body, status_code=status_code, media_type="application/json")


@router.post(
    "/messages",
    status_code=202,
    summary="Send one message",
    openapi_extra=openapi_body(MessageCreate, _SINGLE_EXAMPLE),
    responses={202: {"model": MessageAccepted, "description": "Accepted: the id, encoding, segments and price."}},
)
async def send_message(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    ctx: SendAccount,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    data = await parse_body(request, MessageCreate)
    submit = SubmitRequest(
        text=_text_or_template(data.text, data.template_id),
        recipients=[Recipient(to=data.to, vars=_vars(data.vars), client_ref=data.client_ref,
                              params=_vars(data.params))],
        message_type=data.message_type,
        signature=data.signature,
        template_id=data.template_id,
        sender=data.sender,
        scheduled_at=data.scheduled_at,
        validity=_validity(data.validity_minutes),
        client_ref=data.client_ref,
        default_region=ctx.default_region,
        field_prefix="to",
    )
    return await _submit(request, db, settings, ctx, submit, idempotency_key, _message_json)


@router.post(
    "/batches",
    status_code=202,
    summary="Send to up to 10,000 recipients",
    openapi_extra=openapi_body(BatchCreate, _BATCH_EXAMPLE),
    responses={202: {"model": BatchAccepted,
                     "description": "Accepted: ids per recipient, rejected recipients with index and reason."}},
)
async def send_batch(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    ctx: SendAccount,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    data = await parse_body(request, BatchCreate)
    shared = _vars(data.params)
    recipients = [
        Recipient(to=r, params=shared) if isinstance(r, str) else Recipient(
            to=r.to, vars=_vars(r.vars), client_ref=r.client_ref,
            params={**(shared or {}), **(_vars(r.params) or {})} if shared or r.params else None)
        for r in data.recipients
    ]
    submit = SubmitRequest(
        text=_text_or_template(data.text, data.template_id),
        recipients=recipients,
        message_type=data.message_type,
        signature=data.signature,
        template_id=data.template_id,
        sender=data.sender,
        scheduled_at=data.scheduled_at,
        validity=_validity(data.validity_minutes),
        client_ref=data.client_ref,
        default_region=ctx.default_region,
    )
    return await _submit(request, db, settings, ctx, submit, idempotency_key, _batch_json)


@router.post("/messages/quote", summary="Characters, encoding, segments and price, without sending",
             openapi_extra=openapi_body(QuoteRequest, {"text": "【鸿雁】您好 😀", "to": "+8613800138000"}))
async def quote(request: Request, db: DbDep, settings: SettingsDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, QuoteRequest)
    seg = segment(data.text)
    country = None
    if data.to:
        country = normalize_field(data.to, ctx.default_region, field="to").region
    async with db.read() as session:
        prices = await load_price_list(session, settings, account_id=ctx.account_id, currency=ctx.currency)
        price = prices.price(country or ctx.default_region, data.message_type)
        body: dict[str, Any] = {
            "encoding": seg.encoding,
            "characters": seg.characters,
            "units": seg.units,
            "segments": seg.segment_count,
            "unit_limit": seg.unit_limit,
            "units_remaining": seg.units_remaining,
            "segment_texts": list(seg.segments),
            "price_per_segment": format_micros(price.per_segment_micros, price.currency),
            "price": format_micros(price.per_segment_micros * seg.segment_count, price.currency),
            "currency": price.currency,
        }
        if data.recipients is None and data.to is None:
            return JsonResponse(body)
        recipients = (
            [Recipient(to=data.to, vars=_vars(data.vars))] if data.recipients is None else [
                Recipient(to=r) if isinstance(r, str) else Recipient(to=r.to, vars=_vars(r.vars)) for r in data.recipients
            ]
        )
        submit = SubmitRequest(text=data.text, recipients=recipients, message_type=data.message_type,
                               default_region=ctx.default_region,
                               field_prefix="to" if data.recipients is None else "recipients")
        rows, result = await prepare_checked(session, settings, submit, account_id=ctx.account_id, prices=prices)
        plan = await charging.plan_funding(session, rows, account_id=ctx.account_id, currency=ctx.currency,
                                           lock=False, at=utcnow())
    allocation = plan.allocation
    body["batch"] = {
        "recipients": len(recipients),
        "accepted": len(result.accepted),
        "rejected_count": len(result.rejected),
        "segments": result.segments_total,
        "price_total": format_micros(result.price_micros_total, result.currency),
        "price_total_micros": result.price_micros_total,
        "cash": format_micros(allocation.cash_micros, result.currency),
        "cash_micros": allocation.cash_micros,
        "package_units": allocation.units,
        "available": format_micros(max(plan.available_micros, 0), result.currency),
        "available_micros": max(plan.available_micros, 0),
        "sufficient": allocation.cash_micros <= plan.available_micros,
        "shortfall_micros": max(allocation.cash_micros - plan.available_micros, 0),
        "messages": [
            {"index": m.index, "to": m.to, "segments": m.segments, "price": format_micros(m.price_micros, result.currency),
             "paid_by": source}
            for m, source in zip(result.accepted[:1000], allocation.funding, strict=False)
        ],
        "rejected": [
            {"index": r.index, "to": r.to, "code": r.code, "message": r.message, "field": r.field}
            for r in result.rejected[:1000]
        ],
    }
    return JsonResponse(body)


@router.get("/messages/{message_id}", summary="One message with its status history",
            responses={200: {"model": MessagePublic, "description": "The message"}})
async def get_message(message_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        message, events = await queries.get_message(session, account_id=ctx.account_id, message_id=message_id)
    return JsonResponse(queries.message_public(message, events))


@router.get("/messages", summary="Search messages (newest first, cursor pagination)",
            responses={200: {"model": MessagesPublic, "description": "A page of messages"}})
async def list_messages(
    db: DbDep,
    ctx: ReadAccount,
    status: Annotated[str | None, Query(description="One status or a comma-separated list.")] = None,
    to: Annotated[str | None, Query(description="Recipient number (normalized like on send).")] = None,
    batch: Annotated[str | None, Query(description="Batch id `bat_…`.")] = None,
    from_: Annotated[UtcDatetime | None, Query(alias="from", description="Created at or after (ISO 8601).")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Created before (ISO 8601).")] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query()] = 50,
) -> JsonResponse:
    to_number = None
    if to:
        to_number = normalize_field(to, ctx.default_region, field="to").e164
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    async with db.read() as session:
        rows, next_cursor = await queries.list_messages(
            session, account_id=ctx.account_id, statuses=statuses, to=to_number, batch_id=batch,
            since=from_, until=until, cursor=cursor, limit=limit,
        )
    return JsonResponse({"data": [queries.message_public(m) for m in rows], "next_cursor": next_cursor,
                           "has_more": next_cursor is not None})


@router.post("/messages/{message_id}/cancel", summary="Cancel a message that is not yet sent",
             responses={200: {"model": MessagePublic, "description": "The canceled message"}})
async def cancel_message(message_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    async with db.write() as session:
        await queries.cancel_message(session, account_id=ctx.account_id, message_id=message_id)
        await record(session, actor=actor_for_api(ctx, request), action="message.canceled", account_id=ctx.account_id,
                     target_type="message", target_id=message_id)
    async with db.read() as session:
        message, events = await queries.get_message(session, account_id=ctx.account_id, message_id=message_id)
    return JsonResponse(queries.message_public(message, events))


@router.get("/batches/{batch_id}", summary="A batch with counts per status",
            responses={200: {"model": BatchPublic, "description": "The batch"}})
async def get_batch(batch_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        return JsonResponse(await queries.batch_summary(session, account_id=ctx.account_id, batch_id=batch_id))


@router.post("/batches/{batch_id}/cancel", summary="Cancel every message of a batch not yet sent",
             responses={200: {"model": BatchCanceled, "description": "How many were canceled, and the batch"}})
async def cancel_batch(batch_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    async with db.write() as session:
        canceled = await queries.cancel_batch(session, account_id=ctx.account_id, batch_id=batch_id)
        await record(session, actor=actor_for_api(ctx, request), action="batch.canceled", account_id=ctx.account_id,
                     target_type="batch", target_id=batch_id, after={"canceled": canceled})
    async with db.read() as session:
        summary = await queries.batch_summary(session, account_id=ctx.account_id, batch_id=batch_id)
    return JsonResponse({"canceled": canceled, "batch": summary})




@router.get("/inbound", summary="Inbound messages (replies) to this account, newest first")
async def list_inbound(
    db: DbDep, ctx: ReadAccount,
    from_: Annotated[str | None, Query(alias="from", description="Only from this number (E.164).")] = None,
    before: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    limit: Annotated[int, Query()] = 50,
) -> JsonResponse:
    if not 1 <= limit <= 500:
        raise InvalidRequest("invalid_limit", "limit must be 1–500.", field="limit")
    async with db.read() as session:
        rows = await inbound.list_inbound(session, account_id=ctx.account_id, limit=limit, before=before,
                                          from_number=from_)
    data = [{"id": r.id, "from": r.from_number, "to": r.to_number, "body": r.body, "in_reply_to": r.in_reply_to,
             "channel_id": r.channel_id, "received_at": isoformat(r.received_at)} for r in rows]
    next_cursor = rows[-1].id if len(rows) == limit else None
    return JsonResponse({"data": data, "next_cursor": next_cursor, "has_more": next_cursor is not None})
