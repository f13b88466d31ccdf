"""/v1/billing: balance, usage (per message, CSV), statements, journal, prices and the account's billing
settings; /v1/operator/billing and /v1/operator/rate-cards: top-ups, adjustments, credit limits, refund
policy, rate cards. Thin routes over billing.* services."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from hongyan.accounts.models import Account
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import BillingAccount, DbDep, OperatorAccount, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.billing import ledger, rates, recharge, statements
from hongyan.billing.models import RateCard
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import InvalidRequest, NotFound
from hongyan.core.money import AmountError, format_micros, parse_amount
from hongyan.db.engine import Database

router = APIRouter(tags=["billing"])

MAX_PAGE = 500


class _Strict(BaseModel):
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


class BillingSettingsUpdate(_Strict):
    low_balance_threshold: StrictStr | None = Field(None, description='Alert below this balance, e.g. "50.00"; "" = off.')
    draw_order: Literal["packages_first", "cash_first"] | None = None


@router.patch("/v1/billing/settings", summary="Low-balance alert threshold and package/cash draw order",
              openapi_extra=openapi_body(BillingSettingsUpdate, {"low_balance_threshold": "50.00"}))
async def update_billing_settings(request: Request, db: DbDep, ctx: BillingAccount) -> JsonResponse:
    data = await parse_body(request, BillingSettingsUpdate)
    async with db.write() as session:
        profile = await rates.profile_for_update(session, ctx.account_id)
        if data.low_balance_threshold is not None:
            profile.low_balance_threshold_micros = (
                None if data.low_balance_threshold == "" else amount_param(data.low_balance_threshold, "low_balance_threshold")
            )
            profile.low_balance_notified_at = None
        if data.draw_order is not None:
            profile.draw_order = data.draw_order
        profile.updated_at = utcnow()
        summary = await statements.balance_summary(session, account_id=ctx.account_id, currency=ctx.currency)
    return JsonResponse(summary)


# -- operator -----------------------------------------------------------------------------------------------


async def _customer(session: Any, account_id: str) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    return account


def _actor(ctx: Any) -> str:
    return f"key:{ctx.key_id}" if ctx.key_id else f"user:{ctx.user_id}"


class TopUp(_Strict):
    amount: StrictStr = Field(description='Amount in currency units, e.g. "1000.00".')
    note: StrictStr = Field(description="Why (bank transfer reference, contract…); kept in the journal.")
    bonus: StrictStr | None = None


@router.post("/v1/operator/billing/accounts/{account_id}/top-ups", status_code=201, tags=["operator: billing"],
             summary="Credit an account (operator top-up; recorded as a paid order with an invoice)",
             openapi_extra=openapi_body(TopUp, {"amount": "1000.00", "note": "bank transfer 2026-11-25 ref 8812"}))
async def operator_top_up(account_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, TopUp)
    amount = amount_param(data.amount, "amount")
    bonus = 0 if not data.bonus else amount_param(data.bonus, "bonus")
    async with db.write() as session:
        customer = await _customer(session, account_id)
        order = await recharge.top_up(session, account_id=account_id, amount_micros=amount, currency=customer.currency,
                                      actor=_actor(ctx), note=data.note, bonus_micros=bonus,
                                      actor_ip=request.client.host if request.client else None)
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
    return JsonResponse({"order_id": order.id, "invoice_number": order.invoice_number,
                         "journal_entry_id": order.journal_entry_id, "balance": summary}, status_code=201)


class Adjustment(_Strict):
    amount: StrictStr = Field(description='Signed amount: "50.00" credits, "-12.50" debits.')
    note: StrictStr


@router.post("/v1/operator/billing/accounts/{account_id}/adjustments", status_code=201, tags=["operator: billing"],
             summary="Correct an account's balance with a note (never below its floor)",
             openapi_extra=openapi_body(Adjustment, {"amount": "-12.50", "note": "duplicate top-up reversed"}))
async def operator_adjust(account_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, Adjustment)
    amount = amount_param(data.amount, "amount", signed=True)
    async with db.write() as session:
        customer = await _customer(session, account_id)
        entry_id = await recharge.adjust(session, account_id=account_id, amount_micros=amount,
                                         currency=customer.currency, actor=_actor(ctx), note=data.note,
                                         actor_ip=request.client.host if request.client else None)
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
    return JsonResponse({"journal_entry_id": entry_id, "balance": summary}, status_code=201)


class ProfileUpdate(_Strict):
    credit_limit: StrictStr | None = Field(None, description='How far below zero the balance may go, e.g. "500.00".')
    refund_undelivered: StrictBool | None = None
    draw_order: Literal["packages_first", "cash_first"] | None = None
    tier: Literal["standard", "premium", "economy"] | None = None
    rate_card_id: StrictStr | None = Field(None, description='A rate card id, or "" for the platform default.')
    low_balance_threshold: StrictStr | None = None


@router.get("/v1/operator/billing/accounts/{account_id}", tags=["operator: billing"],
            summary="An account's balance and billing rules")
async def operator_get_account(account_id: str, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        customer = await _customer(session, account_id)
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
        profile = await rates.get_profile(session, account_id)
    return JsonResponse({**summary, "account_id": account_id, "name": customer.name, "rate_card_id": profile.rate_card_id})


@router.patch("/v1/operator/billing/accounts/{account_id}", tags=["operator: billing"],
              summary="Set credit limit, refund policy, draw order, tier, rate card",
              openapi_extra=openapi_body(ProfileUpdate, {"credit_limit": "500.00", "refund_undelivered": True}))
async def operator_update_account(account_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, ProfileUpdate)
    async with db.write() as session:
        customer = await _customer(session, account_id)
        profile = await rates.profile_for_update(session, account_id)
        if data.credit_limit is not None:
            limit = 0 if data.credit_limit.strip() in ("", "0") else amount_param(data.credit_limit, "credit_limit")
            await recharge.set_credit_limit(session, account_id=account_id, currency=customer.currency,
                                            limit_micros=limit)
        if data.refund_undelivered is not None:
            profile.refund_undelivered = data.refund_undelivered
        if data.draw_order is not None:
            profile.draw_order = data.draw_order
        if data.tier is not None:
            profile.tier = data.tier
        if data.rate_card_id is not None:
            if data.rate_card_id == "":
                profile.rate_card_id = None
            else:
                card = await session.get(RateCard, data.rate_card_id)
                if card is None or card.account_id not in (None, account_id):
                    raise NotFound("rate_card_not_found", "No such rate card.", field="rate_card_id")
                if card.currency != customer.currency:
                    raise InvalidRequest("currency_mismatch", f"The card is in {card.currency}; the account pays in "
                                         f"{customer.currency}.", field="rate_card_id")
                profile.rate_card_id = card.id
        if data.low_balance_threshold is not None:
            profile.low_balance_threshold_micros = (
                None if data.low_balance_threshold == "" else amount_param(data.low_balance_threshold, "low_balance_threshold")
            )
        profile.updated_at = utcnow()
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
    return JsonResponse({**summary, "account_id": account_id, "rate_card_id": profile.rate_card_id})


@router.get("/v1/operator/billing/verify", tags=["operator: billing"],
            summary="Prove journal and balances agree (same checks as `hongyan billing verify`)")
async def operator_verify(db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    problems = await verify_all(db)
    return JsonResponse({"ok": not problems, "problems": [asdict(p) for p in problems]})


async def verify_all(db: Database) -> list[ledger.Problem]:
    from hongyan.billing.charging import held_mismatches

    async with db.read() as session:  # one snapshot (REPEATABLE READ on PostgreSQL, a WAL read on SQLite)
        await ledger.begin_snapshot(session)
        problems = await ledger.verify(session)
        problems += await held_mismatches(session)
    return problems


class RateIn(_Strict):
    country: StrictStr = "*"
    message_type: StrictStr = "*"
    tier: StrictStr = "*"
    price: StrictStr | None = Field(None, description='Price per segment, e.g. "0.038".')
    price_micros: StrictInt | None = None


class RateCardCreate(_Strict):
    name: StrictStr
    currency: StrictStr = "CNY"
    account_id: StrictStr | None = Field(None, description="Set: this account's override card (checked first).")
    is_default: StrictBool = False
    effective_from: AwareDatetime | None = None
    note: StrictStr | None = None
    rates: list[RateIn]


class RateVersionCreate(_Strict):
    effective_from: AwareDatetime | None = None
    note: StrictStr | None = None
    rates: list[RateIn]


def _rate_rows(rates_in: list[RateIn]) -> list[rates.RateInput]:
    raw: list[dict[str, object]] = []
    for i, r in enumerate(rates_in):
        micros = r.price_micros
        if r.price is not None:
            micros = amount_param(r.price, f"rates[{i}].price", signed=True)
        if micros is None:
            raise InvalidRequest("invalid_price", "Give price (\"0.038\") or price_micros.", field=f"rates[{i}].price")
        raw.append({"country": r.country, "message_type": r.message_type, "tier": r.tier, "price_micros": micros})
    return rates.validate_rates(raw)


def _card_json(card: RateCard, versions: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": card.id, "name": card.name, "currency": card.currency, "account_id": card.account_id,
                           "is_default": card.is_default, "created_at": isoformat(card.created_at)}
    if versions is not None:
        out["versions"] = [
            {"id": v.id, "effective_from": isoformat(v.effective_from), "note": v.note, "created_by": v.created_by,
             "rates": [{"country": r.country, "message_type": r.message_type, "tier": r.tier,
                        "price": format_micros(r.price_micros, card.currency), "price_micros": r.price_micros}
                       for r in rate_rows]}
            for v, rate_rows in versions
        ]
    return out


_CARD_EXAMPLE = {"name": "Standard CNY", "currency": "CNY", "is_default": True, "rates": [
    {"country": "CN", "message_type": "*", "price": "0.045"},
    {"country": "CN", "message_type": "marketing", "price": "0.055"},
    {"country": "*", "message_type": "*", "price": "0.35"}]}


@router.post("/v1/operator/rate-cards", status_code=201, tags=["operator: billing"],
             summary="Create a rate card with its first version",
             openapi_extra=openapi_body(RateCardCreate, _CARD_EXAMPLE))
async def create_rate_card(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, RateCardCreate)
    rows = _rate_rows(data.rates)
    async with db.write() as session:
        if data.account_id is not None:
            customer = await _customer(session, data.account_id)
            if customer.currency != data.currency.upper():
                raise InvalidRequest("currency_mismatch", f"The account pays in {customer.currency}.", field="currency")
        card = await rates.create_rate_card(session, name=data.name, currency=data.currency, account_id=data.account_id,
                                            is_default=data.is_default)
        await rates.add_version(session, rate_card_id=card.id, rates=rows, effective_from=data.effective_from,
                                note=data.note, actor=_actor(ctx))
        body = _card_json(card, await rates.card_versions(session, card.id))
    return JsonResponse(body, status_code=201)


@router.get("/v1/operator/rate-cards", tags=["operator: billing"], summary="All rate cards")
async def list_rate_cards(db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        cards = await rates.list_rate_cards(session)
    return JsonResponse({"data": [_card_json(c) for c in cards]})


@router.get("/v1/operator/rate-cards/{card_id}", tags=["operator: billing"], summary="A rate card with all versions")
async def get_rate_card(card_id: str, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        card = await session.get(RateCard, card_id)
        if card is None:
            raise NotFound("rate_card_not_found", "No such rate card.", field="card_id")
        return JsonResponse(_card_json(card, await rates.card_versions(session, card.id)))


@router.post("/v1/operator/rate-cards/{card_id}/versions", status_code=201, tags=["operator: billing"],
             summary="Publish new prices, effective now or from a date (older versions are kept)",
             openapi_extra=openapi_body(RateVersionCreate, {"effective_from": "2027-01-01T00:00:00+08:00",
                                                            "rates": _CARD_EXAMPLE["rates"]}))
async def add_rate_card_version(card_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, RateVersionCreate)
    rows = _rate_rows(data.rates)
    async with db.write() as session:
        await rates.add_version(session, rate_card_id=card_id, rates=rows, effective_from=data.effective_from,
                                note=data.note, actor=_actor(ctx))
        card = await session.get(RateCard, card_id)
        assert card is not None
        body = _card_json(card, await rates.card_versions(session, card.id))
    return JsonResponse(body, status_code=201)
