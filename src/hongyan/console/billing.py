"""Billing page (费用中心): balance, low-balance alert, recharge, packages, statements and usage.

The console counterpart of /v1/billing (hongyan.billing.routes): the same service calls, the same
amount parsing and error messages, for the signed-in member's account, so the page never shows a figure
the API would not. The CSV downloads and the invoice PDF have console routes of their own because a
browser link cannot carry an API key; they answer with the API's own writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.datastructures import QueryParams

from hongyan.accounts.service import get_account
from hongyan.api.client import client_ip
from hongyan.audit.service import actor_for_console
from hongyan.billing import packages, recharge, statements
from hongyan.billing import routes as billing_api
from hongyan.billing.models import PaymentOrder, Product
from hongyan.billing.payment_routes import invoice_pdf as render_order_invoice
from hongyan.billing.payment_routes import pdf_response
from hongyan.billing.profile import update_settings
from hongyan.billing.rates import RATE_MESSAGE_TYPES
from hongyan.config import Settings
from hongyan.console.access import member_authority
from hongyan.console.channels import platform_admin
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.console.templating import money
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.core.money import parse_amount

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = "/console/billing"
USAGE_ROWS = 50  # the latest messages on the page; the CSV has them all
RECENT_ORDERS = 10
DAILY_DAYS = 31  # the daily statement shows the last month; the CSV has every day
STATEMENT_COLUMNS = ("recharged", "bonus", "packages", "usage", "adjustments")


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


@dataclass(frozen=True, slots=True)
class PageQuery:
    """The page's GET parameters: the statement period and the usage filters (as typed)."""

    period: str
    day: str
    message_type: str
    country: str

    @classmethod
    def parse(cls, params: QueryParams) -> PageQuery:
        return cls(
            period="day" if params.get("period") == "day" else "month",
            day=params.get("day", "").strip(),
            message_type=params.get("message_type", "").strip(),
            country=params.get("country", "").strip().upper(),
        )

    def query(self, **override: str) -> str:
        values = {
            "period": self.period,
            "day": self.day,
            "message_type": self.message_type,
            "country": self.country,
        }
        values.update(override)
        if values["period"] == "month":
            values["period"] = ""
        return urlencode([(k, v) for k, v in values.items() if v])

    def usage_query(self) -> str:
        return urlencode(
            [
                (k, v)
                for k, v in (
                    ("day", self.day),
                    ("message_type", self.message_type),
                    ("country", self.country),
                )
                if v
            ]
        )

    @property
    def filtered(self) -> bool:
        return bool(self.day or self.message_type or self.country)

    def usage_filter(self) -> statements.UsageFilter:
        """The API's own filter parsing (raises its InvalidRequest with the field at fault)."""
        return billing_api.usage_filter(
            self.day or None, None, None, self.message_type or None, self.country or None, None, None, None
        )


# -- reading ------------------------------------------------------------------------------------------
async def _packages(session: Any, account_id: str) -> list[dict[str, Any]]:
    """The account's packages (billing.packages.account_packages) with what the page draws: a percentage."""
    out = []
    for p in await packages.account_packages(session, account_id):
        total = max(int(p["units_total"]), 0)
        remaining = int(p["units_remaining"])
        out.append({
            **p, "remaining": remaining, "used": int(p["units_used"]),
            "percent": 0 if total == 0 else min(100, round(100 * remaining / total)),
            "expires_at": datetime.fromisoformat(p["expires_at"].replace("Z", "+00:00")),
        })
    return out


async def _products(session: Any, currency: str) -> list[Product]:
    """Packages on sale in the account's currency, cheapest first."""
    return list(
        await session.scalars(
            select(Product)
            .where(Product.active.is_(True), Product.kind == "package", Product.currency == currency)
            .order_by(Product.price_micros, Product.id)
        )
    )


def unit_price(product: Product) -> tuple[int, bool]:
    """(micro-units per unit, exact?): ¥45.00 for 1000 units → (45000, True)."""
    if product.units <= 0:
        return product.price_micros, True
    quotient, remainder = divmod(product.price_micros, product.units)
    return quotient + (2 * remainder >= product.units), remainder == 0


async def _render(
    console: Console, *, status: int = 200, errors: FieldErrors | None = None, **values: Any
) -> Any:
    user = console.user
    assert user is not None
    settings = _settings(console)
    errors = errors if errors is not None else FieldErrors()
    page = PageQuery.parse(console.request.query_params)
    try:
        usage_filter: statements.UsageFilter | None = page.usage_filter()
    except HongyanError as exc:  # a bad filter: said next to it, and no rows rather than unfiltered ones
        console.field_error(errors, exc.field or "day", exc)
        usage_filter = None
    since = None
    if page.period == "day":
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        since = today - timedelta(days=DAILY_DAYS - 1)
    async with console.db.read() as session:
        summary = await statements.balance_summary(
            session, account_id=user.account_id, currency=user.currency
        )
        orders = list(
            await session.scalars(
                select(PaymentOrder)
                .where(PaymentOrder.account_id == user.account_id)
                .order_by(PaymentOrder.id.desc())
                .limit(RECENT_ORDERS)
            )
        )
        owned = await _packages(session, user.account_id)
        products = await _products(session, user.currency)
        periods = await statements.statement(
            session, account_id=user.account_id, currency=user.currency, period=page.period, start=since
        )
        usage_rows: list[dict[str, Any]] = []
        if usage_filter is not None:
            usage_rows, _next = await statements.usage(
                session, account_id=user.account_id, filters=usage_filter, limit=USAGE_ROWS
            )
    threshold_text = summary["low_balance_threshold"]
    values.setdefault("amount", "")
    values.setdefault("threshold", threshold_text or "")
    return console.render(
        "billing.html",
        status=status,
        active="billing",
        errors=errors,
        summary=summary,
        currency=user.currency,
        orders=orders,
        packages=owned,
        products=[(p, *unit_price(p)) for p in products],
        can_buy=True,
        periods=list(reversed(periods)),  # newest first
        statement_columns=STATEMENT_COLUMNS,
        threshold_micros=None if threshold_text is None else parse_amount(threshold_text),
        # the API gives prices as decimal text; the page shows them with the currency sign like other pages
        usage=[{**u, "price_micros": parse_amount(u["price"], signed=True)} for u in usage_rows],
        usage_limit=USAGE_ROWS,
        page=page,
        message_types=RATE_MESSAGE_TYPES,
        min_recharge=settings.min_recharge_micros,
        payments_enabled=recharge.payments_enabled(settings),
        bonus_rules=recharge.parse_bonus_rules(settings.recharge_bonus_rules),
        **values,
    )


# -- pages --------------------------------------------------------------------------------------------
@router.get("/billing")
async def billing_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/billing/alert")
async def set_low_balance_alert(console: SignedIn, form: CheckedForm) -> Any:
    """The low-balance threshold, as PATCH /v1/billing/settings sets it ("" = off)."""
    text = form_text(form, "low_balance_threshold").strip()
    try:
        threshold = None if text == "" else billing_api.amount_param(text, "low_balance_threshold")
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "low_balance_threshold", exc)
        return await _render(console, status=422, errors=errors, threshold=text)
    assert console.user is not None
    try:
        async with console.db.write() as session:
            await update_settings(session, account_id=console.account_id, currency=console.user.currency,
                                  actor=actor_for_console(console), authority=member_authority(console),
                                  low_balance_threshold_micros=threshold)
    except HongyanError as exc:
        return console.redirect_error(f"{PAGE}#alert", exc)
    flash = (
        Flash(kind="success", key="billing.flash.alert_off")
        if threshold is None
        else Flash(
            kind="success",
            key="billing.flash.alert_set",
            params={"amount": money(threshold, console.user.currency)},
        )
    )
    return console.redirect(f"{PAGE}#alert", flash=flash)


@router.post("/billing/recharge")
async def create_recharge(console: SignedIn, form: CheckedForm) -> Any:
    """A pending payment order, then the provider's pay page (which credits it once paid)."""
    user = console.user
    assert user is not None
    settings = _settings(console)
    text = form_text(form, "amount").strip()
    try:
        amount = billing_api.amount_param(text, "amount")
        async with console.db.write() as session:
            order = await recharge.create_order(
                session,
                settings,
                account_id=user.account_id,
                amount_micros=amount,
                currency=user.currency,
                provider=settings.payment_provider,
                created_by=f"user:{user.user_id}",
                audit_actor=actor_for_console(console),
                authority=member_authority(console),
            )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "amount", exc)
        return await _render(console, status=422, errors=errors, amount=text)
    return console.redirect(f"/pay/{settings.payment_provider}/{order.id}")


@router.post("/billing/operator/top-up")
async def operator_top_up(
    console: Annotated[Console, Depends(platform_admin)], form: CheckedForm
) -> Any:
    """Platform admins credit an account (bank transfer, contract): POST /v1/operator/billing/…/top-ups."""
    assert console.user is not None
    account_id = form_text(form, "account_id").strip()
    text = form_text(form, "top_up_amount").strip()
    note = form_text(form, "note")
    errors = FieldErrors()
    try:
        amount = billing_api.amount_param(text, "top_up_amount")
        async with console.db.write() as session:
            customer = await get_account(session, account_id)
            order = await recharge.top_up(
                session, account_id=customer.id, amount_micros=amount, currency=customer.currency,
                actor=f"user:{console.user.user_id}", note=note,
                actor_ip=client_ip(console.request),
                audit_actor=actor_for_console(console),
            )
    except HongyanError as exc:
        console.field_error(errors, {"amount": "top_up_amount"}.get(exc.field or "", exc.field or "top_up_amount"), exc)
        return await _render(console, status=422, errors=errors, top_up_account=account_id, top_up_amount=text,
                             top_up_note=note)
    flash = Flash(kind="success", key="billing.flash.topped_up", params={
        "amount": money(amount, customer.currency), "account": customer.id, "invoice": order.invoice_number or ""})
    return console.redirect(f"{PAGE}#operator-top-up", flash=flash)


@router.post("/billing/packages/{product_id}/buy")
async def buy_package(console: SignedIn, form: CheckedForm, product_id: str) -> Any:
    """A package paid from the balance (hongyan.billing.packages); a refusal comes back as a flash."""
    assert console.user is not None
    try:
        async with console.db.write() as session:
            await packages.purchase_package(
                session,
                account_id=console.account_id,
                currency=console.user.currency,
                product_id=product_id,
                actor=f"user:{console.user.user_id}",
                audit_actor=actor_for_console(console),
                authority=member_authority(console),
            )
    except HongyanError as exc:
        return console.redirect_error(f"{PAGE}#packages", exc)
    return console.redirect(
        f"{PAGE}#packages", flash=Flash(kind="success", key="billing.flash.package_bought")
    )


# -- downloads ----------------------------------------------------------------------------------------
@router.get("/billing/usage.csv")
async def usage_csv(console: SignedIn) -> Any:
    """GET /v1/billing/usage?format=csv for the signed-in account, with the page's filters."""
    try:
        filters = PageQuery.parse(console.request.query_params).usage_filter()
    except HongyanError as exc:
        return console.redirect_error(f"{PAGE}#usage", exc)
    return console.finish(
        StreamingResponse(
            billing_api.usage_csv(console.db, console.account_id, filters),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    )


@router.get("/billing/statements.csv")
async def statements_csv(console: SignedIn, period: str = "month") -> Any:
    """GET /v1/billing/statements?format=csv for the signed-in account."""
    assert console.user is not None
    chosen = "day" if period == "day" else "month"
    async with console.db.read() as session:
        periods = await statements.statement(
            session, account_id=console.account_id, currency=console.user.currency, period=chosen
        )
    data = [statements.statement_json(p, console.user.currency) for p in periods]
    return console.finish(billing_api.statement_csv(data, chosen))


@router.get("/billing/invoices/{order_id}.pdf")
async def invoice_pdf(console: SignedIn, order_id: str) -> Any:
    """The invoice of one of this account's paid orders (another account's order is 'not found')."""
    async with console.db.read() as session:
        order = await session.get(PaymentOrder, order_id)
        if order is None or order.account_id != console.account_id or order.status != "paid":
            return console.render("not_found.html", status=404, what="invoice")
    # the same PDF as /v1/billing/recharges/{id}/invoice.pdf
    return console.finish(pdf_response(await render_order_invoice(console.db, order), order))
