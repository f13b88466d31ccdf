"""Pricing page (platform staff): rate cards with their current rates, publishing a new price version, and
the package/plan catalog. The console counterpart of /v1/operator/rate-cards and
/v1/operator/billing/products: the same services (billing.rates, billing.packages) and error messages; a
bad rate line is reported with its line number and column."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.audit.service import actor_for_console
from hongyan.billing import packages, rates
from hongyan.billing.models import RateCard
from hongyan.billing.routes import amount_param
from hongyan.console.channels import PlatformAdmin
from hongyan.console.context import CheckedForm, Console, FieldErrors, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, InvalidRequest
from hongyan.core.money import AmountError, parse_amount

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/pricing"
RATE_COLUMNS = ("country", "message_type", "tier", "price")


def parse_rate_lines(text: str) -> list[rates.RateInput]:
    """`CN,*,*,0.045` per line (blank lines and `#` comments skipped); errors name line and column."""
    raw: list[dict[str, object]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4:
            raise InvalidRequest("invalid_rate", f"Line {number}: give 4 values (country, message type, tier, price), "
                                 f"not {len(cells)}.", field="rates")
        try:
            price = parse_amount(cells[3], signed=True)
        except AmountError as exc:
            raise InvalidRequest("invalid_amount", f"Line {number}, column price: {exc}.", field="rates") from exc
        raw.append({"country": cells[0] or "*", "message_type": cells[1] or "*", "tier": cells[2] or "*",
                    "price_micros": price})
        lines.append(number)
    try:
        return rates.validate_rates(raw)
    except HongyanError as exc:  # `rates[3].country` → line and column of the text the operator typed
        m = re.match(r"rates\[(\d+)\](?:\.(\w+))?", exc.field or "")
        if not m:
            raise InvalidRequest(exc.code, exc.message, field="rates") from exc
        column = {"price_micros": "price"}.get(m.group(2) or "", m.group(2) or "")
        where = f"Line {lines[int(m.group(1))]}" + (f", column {column}" if column else "")
        raise InvalidRequest(exc.code, f"{where}: {exc.message}", field="rates") from exc


async def _render(console: Console, *, status: int = 200, errors: FieldErrors | None = None, **values: Any) -> Any:
    async with console.db.read() as session:
        cards = []
        for card in await rates.list_rate_cards(session):
            versions = await rates.card_versions(session, card.id)
            cards.append({"card": card, "versions": versions})
        products = await packages.list_products(session, active_only=False)
    return console.render("pricing.html", status=status, active="pricing", errors=errors or FieldErrors(),
                          cards=cards, products=[packages.product_json(p) for p in products],
                          message_types=rates.RATE_MESSAGE_TYPES, **values)


@router.get("/pricing")
async def pricing_page(console: PlatformAdmin) -> Any:
    return await _render(console)


def _effective(text: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        return datetime.combine(date.fromisoformat(text.strip()), time(), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidRequest("invalid_date", "effective from is a date such as 2027-01-01.", field="effective_from") from exc


@router.post("/pricing/rates")
async def publish_rates(console: PlatformAdmin, form: CheckedForm) -> Any:
    """A new version of the card with this name and currency (a new card if there is none)."""
    assert console.user is not None
    values = {name: form_text(form, name) for name in ("card_name", "currency", "account_id", "effective_from", "rates")}
    values["is_default"] = form_text(form, "is_default") == "on"
    errors = FieldErrors()
    try:
        rows = parse_rate_lines(values["rates"])
        effective = _effective(values["effective_from"])
        name, currency = values["card_name"].strip(), (values["currency"].strip() or "CNY").upper()
        account_id = values["account_id"].strip() or None
        async with console.db.write() as session:
            same_scope = RateCard.account_id.is_(None) if account_id is None else RateCard.account_id == account_id
            card = await session.scalar(
                select(RateCard).where(RateCard.name == name, RateCard.currency == currency, same_scope)
            )
            if card is None:
                card = await rates.create_rate_card(session, name=name, currency=currency, account_id=account_id,
                                                    is_default=bool(values["is_default"]),
                                                    audit_actor=actor_for_console(console))
            await rates.add_version(session, rate_card_id=card.id, rates=rows, effective_from=effective, note=None,
                                    actor=f"user:{console.user.user_id}", audit_actor=actor_for_console(console))
    except HongyanError as exc:
        field = {"name": "card_name"}.get(exc.field or "", exc.field or "rates")
        console.field_error(errors, field if field in values else "rates", exc)
        return await _render(console, status=422, errors=errors, form=values)
    return console.redirect(f"{PAGE}#cards", flash=Flash(kind="success", key="pricing.flash.published",
                                                         params={"name": name, "n": len(rows)}))


@router.post("/pricing/products")
async def create_product(console: PlatformAdmin, form: CheckedForm) -> Any:
    fields = ("kind", "product_name", "product_currency", "price", "units", "validity_days", "countries", "types")
    values = {name: form_text(form, name) for name in fields}
    errors = FieldErrors()
    try:
        price = amount_param(values["price"], "price", signed=True)
        units = _int(values["units"], "units", "invalid_units")
        validity = _int(values["validity_days"] or "365", "validity_days", "invalid_validity")
        async with console.db.write() as session:
            await packages.create_product(
                session, kind=values["kind"] or "package", name=values["product_name"],
                currency=(values["product_currency"] or "CNY").upper(), price_micros=price, units=units,
                validity_days=validity, countries=_list(values["countries"]), message_types=_list(values["types"]),
                audit_actor=actor_for_console(console),
            )
    except HongyanError as exc:
        field = {"name": "product_name", "currency": "product_currency", "message_types": "types"}.get(
            (exc.field or "").split("[")[0], (exc.field or "").split("[")[0])
        console.field_error(errors, field if field in values else "product_name", exc)
        return await _render(console, status=422, errors=errors, product_form=values)
    return console.redirect(f"{PAGE}#products", flash=Flash(kind="success", key="pricing.flash.product_created"))


@router.post("/pricing/products/{product_id}/deactivate")
async def deactivate_product(console: PlatformAdmin, form: CheckedForm, product_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await packages.set_product_active(session, product_id, False, audit_actor=actor_for_console(console))
    except HongyanError as exc:
        return console.redirect_error(f"{PAGE}#products", exc)
    return console.redirect(f"{PAGE}#products", flash=Flash(kind="success", key="pricing.flash.product_stopped"))


def _int(text: str, field: str, code: str) -> int:
    try:
        return int(text.strip())
    except ValueError as exc:
        raise InvalidRequest(code, f"{field} is a whole number.", field=field) from exc


def _list(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\s]+", text) if part.strip()]
