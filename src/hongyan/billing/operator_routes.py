"""/v1/operator/billing and /v1/operator/rate-cards: top-ups, adjustments, credit limits, refund policy, rate
cards, ledger checks — for platform staff (API key scope `operator`). Thin routes over billing.* services."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool, StrictInt, StrictStr

from hongyan.accounts.service import get_account
from hongyan.api.body import UtcDatetime, openapi_body, parse_body
from hongyan.api.client import client_ip
from hongyan.api.deps import DbDep, OperatorAccount
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api, changes, record
from hongyan.billing import rates, recharge, statements
from hongyan.billing.charging import verify_all
from hongyan.billing.models import RateCard
from hongyan.billing.profile import profile_view
from hongyan.billing.routes import Strict, amount_param
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import InvalidRequest, NotFound
from hongyan.core.money import format_micros

router = APIRouter(tags=["operator: billing"])



def _actor(ctx: Any) -> str:
    return f"key:{ctx.key_id}" if ctx.key_id else f"user:{ctx.user_id}"


class TopUp(Strict):
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
        customer = await get_account(session, account_id)
        order = await recharge.top_up(session, account_id=account_id, amount_micros=amount, currency=customer.currency,
                                      actor=_actor(ctx), note=data.note, bonus_micros=bonus,
                                      actor_ip=client_ip(request),
                                      audit_actor=actor_for_api(ctx, request))
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
    return JsonResponse({"order_id": order.id, "invoice_number": order.invoice_number,
                         "journal_entry_id": order.journal_entry_id, "balance": summary}, status_code=201)


class Adjustment(Strict):
    amount: StrictStr = Field(description='Signed amount: "50.00" credits, "-12.50" debits.')
    note: StrictStr


@router.post("/v1/operator/billing/accounts/{account_id}/adjustments", status_code=201, tags=["operator: billing"],
             summary="Correct an account's balance with a note (never below its floor)",
             openapi_extra=openapi_body(Adjustment, {"amount": "-12.50", "note": "duplicate top-up reversed"}))
async def operator_adjust(account_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, Adjustment)
    amount = amount_param(data.amount, "amount", signed=True)
    async with db.write() as session:
        customer = await get_account(session, account_id)
        entry_id = await recharge.adjust(session, account_id=account_id, amount_micros=amount,
                                         currency=customer.currency, actor=_actor(ctx), note=data.note,
                                         actor_ip=client_ip(request),
                                         audit_actor=actor_for_api(ctx, request))
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
    return JsonResponse({"journal_entry_id": entry_id, "balance": summary}, status_code=201)


class ProfileUpdate(Strict):
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
        customer = await get_account(session, account_id)
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
        profile = await rates.get_profile(session, account_id)
    return JsonResponse({**summary, "account_id": account_id, "name": customer.name, "rate_card_id": profile.rate_card_id})


@router.patch("/v1/operator/billing/accounts/{account_id}", tags=["operator: billing"],
              summary="Set credit limit, refund policy, draw order, tier, rate card",
              openapi_extra=openapi_body(ProfileUpdate, {"credit_limit": "500.00", "refund_undelivered": True}))
async def operator_update_account(account_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, ProfileUpdate)
    async with db.write() as session:
        customer = await get_account(session, account_id)
        profile = await rates.profile_for_update(session, account_id)
        before = profile_view(profile, customer.currency)
        actor = actor_for_api(ctx, request)
        if data.credit_limit is not None:
            limit = 0 if data.credit_limit.strip() in ("", "0") else amount_param(data.credit_limit, "credit_limit")
            await recharge.set_credit_limit(session, account_id=account_id, currency=customer.currency,
                                            limit_micros=limit, audit_actor=actor)
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
        old, new = changes(before, profile_view(profile, customer.currency))
        if new:
            await record(session, actor=actor, action="billing.profile_updated", account_id=account_id,
                         target_type="account", target_id=account_id, before=old, after=new)
        summary = await statements.balance_summary(session, account_id=account_id, currency=customer.currency)
    return JsonResponse({**summary, "account_id": account_id, "rate_card_id": profile.rate_card_id})


@router.get("/v1/operator/billing/verify", tags=["operator: billing"],
            summary="Prove journal and balances agree (same checks as `hongyan billing verify`)")
async def operator_verify(db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    problems = await verify_all(db)
    return JsonResponse({"ok": not problems, "problems": [asdict(p) for p in problems]})


class RateIn(Strict):
    country: StrictStr = "*"
    message_type: StrictStr = "*"
    tier: StrictStr = "*"
    price: StrictStr | None = Field(None, description='Price per segment, e.g. "0.038".')
    price_micros: StrictInt | None = None


class RateCardCreate(Strict):
    name: StrictStr
    currency: StrictStr = "CNY"
    account_id: StrictStr | None = Field(None, description="Set: this account's override card (checked first).")
    is_default: StrictBool = False
    effective_from: UtcDatetime | None = None
    note: StrictStr | None = None
    rates: list[RateIn]


class RateVersionCreate(Strict):
    effective_from: UtcDatetime | None = None
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
            customer = await get_account(session, data.account_id)
            if customer.currency != data.currency.upper():
                raise InvalidRequest("currency_mismatch", f"The account pays in {customer.currency}.", field="currency")
        actor = actor_for_api(ctx, request)
        card = await rates.create_rate_card(session, name=data.name, currency=data.currency, account_id=data.account_id,
                                            is_default=data.is_default, audit_actor=actor)
        await rates.add_version(session, rate_card_id=card.id, rates=rows, effective_from=data.effective_from,
                                note=data.note, actor=_actor(ctx), audit_actor=actor)
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
                                note=data.note, actor=_actor(ctx), audit_actor=actor_for_api(ctx, request))
        card = await session.get(RateCard, card_id)
        assert card is not None
        body = _card_json(card, await rates.card_versions(session, card.id))
    return JsonResponse(body, status_code=201)
