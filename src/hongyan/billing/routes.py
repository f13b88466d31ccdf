"""/v1/billing: balance, usage (per message, CSV), statements, journal, prices and the account's billing
settings. Thin routes over billing.* services; the operator's routes are in billing.operator_routes."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts.permissions import Authority
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import BillingAccount, DbDep, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.billing import ledger, rates, statements
from hongyan.billing.profile import UNCHANGED, update_settings
from hongyan.core.errors import InvalidRequest
from hongyan.core.money import AmountError, format_micros, parse_amount
from hongyan.db.engine import Database

router = APIRouter(tags=["billing"])

MAX_PAGE = 500


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def amount_param(raw: object, field_name: str, *, signed: bool = False) -> int:
    try:
        return parse_amount(raw, signed=signed)
    except AmountError as exc:
        raise InvalidRequest("invalid_amount", f"{field_name}: {exc}.", field=field_name) from exc


def _day(value: str | None, field_name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidRequest("invalid_date", f"{field_name} is a date such as 2026-11-25.", field=field_name) from exc


def usage_filter(
    day: str | None, start: str | None, end: str | None, message_type: str | None, country: str | None,
    campaign_id: str | None, batch_id: str | None, billing_state: str | None,
) -> statements.UsageFilter:
    if billing_state is not None and billing_state not in statements.USAGE_STATES:
        raise InvalidRequest("invalid_billing_state", f"billing_state is one of {', '.join(statements.USAGE_STATES)}.",
                             field="billing_state")
    if message_type is not None and message_type not in rates.RATE_MESSAGE_TYPES:
        raise InvalidRequest("invalid_message_type", f"message_type is one of {', '.join(rates.RATE_MESSAGE_TYPES)}.",
                             field="message_type")
    first = _day(day or start, "day" if day else "from")
    last = _day(end, "to")
    if day:
        assert first is not None
        last = first + timedelta(days=1)
    elif last is not None:
        last += timedelta(days=1)  # `to` is inclusive
    return statements.UsageFilter(start=first, end=last, message_type=message_type, country=country,
                                  campaign_id=campaign_id, batch_id=batch_id, billing_state=billing_state)


@router.get("/v1/billing/balance", summary="Balance, held funds, credit limit and package units")
async def get_balance(db: DbDep, ctx: BillingAccount) -> JsonResponse:
    async with db.read() as session:
        return JsonResponse(await statements.balance_summary(session, account_id=ctx.account_id, currency=ctx.currency))


@router.get("/v1/billing/usage", summary="Consumption per message (filter by day, type, country, campaign)")
async def get_usage(
    db: DbDep,
    ctx: BillingAccount,
    day: Annotated[str | None, Query(description="One UTC day, 2026-11-25.")] = None,
    start: Annotated[str | None, Query(alias="from", description="First day (inclusive).")] = None,
    end: Annotated[str | None, Query(alias="to", description="Last day (inclusive).")] = None,
    message_type: str | None = None,
    country: str | None = None,
    campaign_id: str | None = None,
    batch_id: str | None = None,
    billing_state: str | None = None,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> Any:
    filters = usage_filter(day, start, end, message_type, country, campaign_id, batch_id, billing_state)
    if format == "csv":
        return StreamingResponse(
            usage_csv(db, ctx.account_id, filters), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    async with db.read() as session:
        rows, next_cursor = await statements.usage(session, account_id=ctx.account_id, filters=filters, limit=limit,
                                                   cursor=cursor)
    return JsonResponse({"data": rows, "next_cursor": next_cursor})


USAGE_CSV_COLUMNS = (
    "message_id", "batch_id", "campaign_id", "to", "country", "message_type", "segments", "price", "status",
    "billing_state", "paid_by", "package_id", "charged", "package_units", "currency", "created_at", "done_at",
)


async def usage_csv(db: Database, account_id: str, filters: statements.UsageFilter) -> AsyncIterator[bytes]:
    """UTF-8 with BOM (Excel opens Chinese text correctly), written in chunks as rows are read."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(USAGE_CSV_COLUMNS)
    yield ("\ufeff" + buffer.getvalue()).encode()
    async with db.read() as session:
        n = 0
        async for row in statements.usage_stream(session, account_id=account_id, filters=filters):
            if n == 0:
                buffer.seek(0)
                buffer.truncate()
            writer.writerow(["" if row[c] is None else row[c] for c in USAGE_CSV_COLUMNS])
            n += 1
            if n >= 1000:
                yield buffer.getvalue().encode()
                n = 0
        if n:
            yield buffer.getvalue().encode()


@router.get("/v1/billing/usage/summary", summary="Usage totals grouped by day, month, country, type, batch, campaign")
async def get_usage_summary(
    db: DbDep,
    ctx: BillingAccount,
    group_by: str = "day",
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    message_type: str | None = None,
    country: str | None = None,
    campaign_id: str | None = None,
) -> JsonResponse:
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    bad = [g for g in groups if g not in statements.USAGE_GROUPS]
    if not groups or bad:
        raise InvalidRequest("invalid_group_by", f"group_by takes {', '.join(statements.USAGE_GROUPS)} (comma-separated).",
                             field="group_by")
    filters = usage_filter(None, start, end, message_type, country, campaign_id, None, None)
    async with db.read() as session:
        rows = await statements.usage_summary(session, account_id=ctx.account_id, filters=filters, group_by=groups)
    return JsonResponse({"data": rows})


@router.get("/v1/billing/statements", summary="Daily or monthly statements: opening, movements, closing")
async def get_statements(
    db: DbDep,
    ctx: BillingAccount,
    period: Literal["day", "month"] = "month",
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    first, last = _day(start, "from"), _day(end, "to")
    async with db.read() as session:
        periods = await statements.statement(session, account_id=ctx.account_id, currency=ctx.currency, period=period,
                                             start=first, end=None if last is None else last + timedelta(days=1))
    data = [statements.statement_json(p, ctx.currency) for p in periods]
    if format == "csv":
        return statement_csv(data, period)
    return JsonResponse({"period": period, "currency": ctx.currency, "data": data})


def statement_csv(data: list[dict[str, Any]], period: str) -> StreamingResponse:
    """Statement rows as CSV (UTF-8 with BOM), for the API and the console."""
    columns = [k for k in (data[0] if data else statements.statement_json(statements.StatementPeriod(""), "CNY"))
               if k != "micros"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in data:
        writer.writerow([row[c] for c in columns])
    return StreamingResponse(iter([("\ufeff" + buffer.getvalue()).encode()]), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="statement-{period}.csv"'})


@router.get("/v1/billing/ledger", summary="The account's journal entries with their lines")
async def get_ledger(
    db: DbDep, ctx: BillingAccount, kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50, cursor: str | None = None,
) -> JsonResponse:
    if kind is not None and kind not in ledger.ENTRY_KINDS:
        raise InvalidRequest("invalid_entry_kind", f"kind is one of {', '.join(ledger.ENTRY_KINDS)}.", field="kind")
    async with db.read() as session:
        entries, next_cursor = await statements.journal(session, account_id=ctx.account_id, limit=limit, cursor=cursor,
                                                        kind=kind)
    return JsonResponse({"data": entries, "next_cursor": next_cursor})


@router.get("/v1/billing/prices", summary="The account's price per segment for a destination and message type")
async def get_prices(
    db: DbDep, settings: SettingsDep, ctx: BillingAccount, country: str | None = None,
    message_type: str = "notification",
) -> JsonResponse:
    if message_type not in rates.RATE_MESSAGE_TYPES:
        raise InvalidRequest("invalid_message_type", f"message_type is one of {', '.join(rates.RATE_MESSAGE_TYPES)}.",
                             field="message_type")
    async with db.read() as session:
        price_list = await rates.load_price_list(session, settings, account_id=ctx.account_id, currency=ctx.currency)
    rows: list[dict[str, Any]] = []
    for version_id, table in price_list.layers:
        for (c, t, tier), micros in sorted(table.items()):
            rows.append({"country": c, "message_type": t, "tier": tier, "price": format_micros(micros, ctx.currency),
                         "price_micros": micros, "rate_version": version_id})
    body: dict[str, Any] = {"currency": ctx.currency, "tier": price_list.tier,
                            "default_price": format_micros(price_list.default_micros, ctx.currency), "rates": rows}
    if country:
        price = price_list.price(country.upper(), message_type)
        body["quote"] = {"country": country.upper(), "message_type": message_type,
                         "price_per_segment": format_micros(price.per_segment_micros, ctx.currency),
                         "price_per_segment_micros": price.per_segment_micros, "rate_version": price.source}
    return JsonResponse(body)


class BillingSettingsUpdate(Strict):
    low_balance_threshold: StrictStr | None = Field(None, description='Alert below this balance, e.g. "50.00"; "" = off.')
    draw_order: Literal["packages_first", "cash_first"] | None = None


@router.patch("/v1/billing/settings", summary="Low-balance alert threshold and package/cash draw order",
              openapi_extra=openapi_body(BillingSettingsUpdate, {"low_balance_threshold": "50.00"}))
async def update_billing_settings(request: Request, db: DbDep, ctx: BillingAccount) -> JsonResponse:
    data = await parse_body(request, BillingSettingsUpdate)
    threshold = (UNCHANGED if data.low_balance_threshold is None else None if data.low_balance_threshold == ""
                 else amount_param(data.low_balance_threshold, "low_balance_threshold"))
    async with db.write() as session:
        await update_settings(session, account_id=ctx.account_id, currency=ctx.currency,
                              actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx),
                              low_balance_threshold_micros=threshold, draw_order=data.draw_order)
        summary = await statements.balance_summary(session, account_id=ctx.account_id, currency=ctx.currency)
    return JsonResponse(summary)
