"""Customer recharges through a payment provider: orders, the provider's callback, invoices (PDF), and the
sandbox provider's pay page."""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import select

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import Authority
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.client import client_ip
from hongyan.api.deps import BillingAccount, DbDep, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.billing import payments, recharge
from hongyan.billing.invoice import InvoiceData, render_invoice
from hongyan.billing.models import PaymentOrder
from hongyan.billing.routes import amount_param
from hongyan.config import Settings
from hongyan.core.clock import isoformat
from hongyan.core.errors import HongyanError, NotFound
from hongyan.core.money import format_micros
from hongyan.db.engine import Database

router = APIRouter(tags=["billing"])


class RechargeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: StrictStr = Field(description='Amount in currency units, e.g. "100.00".')


def order_json(order: PaymentOrder, settings: Settings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": order.id, "status": order.status, "provider": order.provider,
        "amount": format_micros(order.amount_micros, order.currency), "amount_micros": order.amount_micros,
        "bonus": format_micros(order.bonus_micros, order.currency), "bonus_micros": order.bonus_micros,
        "currency": order.currency, "invoice_number": order.invoice_number, "created_at": isoformat(order.created_at),
        "paid_at": isoformat(order.paid_at),
    }
    if order.status == "pending" and payments.accepts_payments(settings, order.provider):
        body["pay_url"] = payments.provider_for(settings, order.provider).checkout_url(order)
    if order.status == "paid":
        body["invoice_url"] = f"/v1/billing/recharges/{order.id}/invoice.pdf"
    return body


@router.post("/v1/billing/recharges", status_code=201, summary="Start a recharge: an order and where to pay it",
             openapi_extra=openapi_body(RechargeCreate, {"amount": "100.00"}))
async def create_recharge(request: Request, db: DbDep, settings: SettingsDep, ctx: BillingAccount) -> JsonResponse:
    data = await parse_body(request, RechargeCreate)
    amount = amount_param(data.amount, "amount")
    provider = payments.provider_for(settings)
    async with db.write() as session:
        order = await recharge.create_order(session, settings, account_id=ctx.account_id, amount_micros=amount,
                                            currency=ctx.currency, provider=provider.name,
                                            created_by=f"key:{ctx.key_id}", audit_actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
    return JsonResponse(order_json(order, settings), status_code=201)


@router.get("/v1/billing/recharges", summary="Recharge orders, newest first")
async def list_recharges(
    db: DbDep, settings: SettingsDep, ctx: BillingAccount, limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JsonResponse:
    query = select(PaymentOrder).where(PaymentOrder.account_id == ctx.account_id).order_by(PaymentOrder.id.desc())
    if cursor:
        query = query.where(PaymentOrder.id < cursor)
    async with db.read() as session:
        orders = list(await session.scalars(query.limit(limit + 1)))
    next_cursor = orders[limit - 1].id if len(orders) > limit else None
    return JsonResponse({"data": [order_json(o, settings) for o in orders[:limit]], "next_cursor": next_cursor})


async def _own_order(db: Database, account_id: str, order_id: str) -> PaymentOrder:
    async with db.read() as session:
        order = await session.get(PaymentOrder, order_id)
    if order is None or order.account_id != account_id:  # another account's order does not exist for you
        raise NotFound("payment_order_not_found", "No such recharge order.", field="order_id")
    return order


@router.get("/v1/billing/recharges/{order_id}", summary="One recharge order")
async def get_recharge(order_id: str, db: DbDep, settings: SettingsDep, ctx: BillingAccount) -> JsonResponse:
    return JsonResponse(order_json(await _own_order(db, ctx.account_id, order_id), settings))


async def invoice_pdf(db: Database, order: PaymentOrder) -> bytes:
    """The invoice of a paid order (API and console)."""
    if order.status != "paid" or order.invoice_number is None or order.paid_at is None:
        raise NotFound("invoice_not_found", "Only paid recharges have an invoice.", field="order_id")
    async with db.read() as session:
        account = await session.get(Account, order.account_id)
    assert account is not None
    return render_invoice(InvoiceData(
        invoice_number=order.invoice_number, order_id=order.id, paid_at=order.paid_at, account_id=account.id,
        account_name=account.name, amount_micros=order.amount_micros, bonus_micros=order.bonus_micros,
        currency=order.currency, provider=order.provider,
    ))


def pdf_response(pdf: bytes, order: PaymentOrder) -> Response:
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{order.invoice_number or order.id}.pdf"'})


@router.get("/v1/billing/recharges/{order_id}/invoice.pdf", summary="Invoice (PDF) of a paid recharge",
            response_class=Response)
async def get_invoice(order_id: str, db: DbDep, ctx: BillingAccount) -> Response:
    order = await _own_order(db, ctx.account_id, order_id)
    return pdf_response(await invoice_pdf(db, order), order)


@router.post("/v1/billing/payments/{provider}/callback",
             summary="Payment provider notification (signed by the provider; no API key)")
async def payment_callback(provider: str, request: Request, db: DbDep, settings: SettingsDep) -> JsonResponse:
    handler = payments.provider_for(settings, provider)
    order, credited = await payments.handle_callback(db, handler, dict(request.headers), await request.body(),
                                                     ip=client_ip(request))
    return JsonResponse({"status": "credited" if credited else "already_credited", "order_id": order.id})


# -- the sandbox provider's pay page (plays the provider; the order id in the URL is its only secret:
#    ids carry 80 random bits, and the sandbox moves no real money) ---------------------------------------

_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:system-ui,"WenQuanYi Micro Hei",sans-serif;background:#f1f5f9;margin:0;color:#0f172a}}
main{{max-width:420px;margin:10vh auto;background:#fff;border-radius:12px;padding:28px;box-shadow:0 8px 30px #0f172a14}}
h1{{font-size:18px;margin:0 0 4px}} .muted{{color:#64748b;font-size:13px}} .amount{{font-size:34px;font-weight:700;margin:18px 0}}
button{{font:inherit;padding:10px 18px;border-radius:8px;border:1px solid #cbd5e1;background:#fff;cursor:pointer;margin-right:8px}}
button.pay{{background:#1d4ed8;color:#fff;border-color:#1d4ed8}} .badge{{display:inline-block;background:#fef3c7;color:#92400e;
border-radius:6px;padding:2px 8px;font-size:12px;margin-bottom:14px}} .ok{{color:#15803d}} .err{{color:#b91c1c}} a{{color:#1d4ed8}}</style>
</head><body><main><span class="badge">沙箱 Sandbox · 不产生真实扣款 / no real money</span>{content}</main></body></html>"""


def _page(title: str, content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), content=content), status_code=status)


async def _sandbox_order(db: Database, settings: Settings, order_id: str) -> tuple[PaymentOrder, Account] | None:
    """The order a sandbox page may show: a sandbox order, and only while the sandbox is the configured
    provider (after a switch to a real provider, old sandbox orders must not become free credit)."""
    if not payments.accepts_payments(settings, "sandbox"):
        return None
    async with db.read() as session:
        order = await session.get(PaymentOrder, order_id)
        if order is None or order.provider != "sandbox":
            return None
        account = await session.get(Account, order.account_id)
    assert account is not None
    return order, account


@router.get("/pay/sandbox/{order_id}", include_in_schema=False)
async def sandbox_pay_page(order_id: str, db: DbDep, settings: SettingsDep) -> HTMLResponse:
    """The sandbox's checkout page. No API key or login: the order id in the URL is the only secret (80 random
    bits, like a provider's checkout link) — acceptable because the sandbox moves no real money."""
    found = await _sandbox_order(db, settings, order_id)
    if found is None:
        return _page("Not found", "<h1>订单不存在 / No such order</h1>", 404)
    order, account = found
    amount = f"{format_micros(order.amount_micros, order.currency)} {order.currency}"
    bonus = (f'<p class="muted">赠送 / bonus: {format_micros(order.bonus_micros, order.currency)} {order.currency}</p>'
             if order.bonus_micros else "")
    if order.status != "pending":
        return _page("Order", f"<h1>订单 {html.escape(order.id)}</h1><p>状态 / status: <b>{html.escape(order.status)}</b></p>"
                     '<p><a href="/console/billing">返回费用中心 / Back to billing</a></p>')
    content = (
        f"<h1>充值 / Recharge</h1><p class='muted'>{html.escape(account.name)} · {html.escape(order.id)}</p>"
        f"<div class='amount'>{html.escape(amount)}</div>{bonus}"
        f"<form method='post'><button type='submit' class='pay' name='action' value='pay'>支付 / Pay (sandbox)</button>"
        f"<button type='submit' name='action' value='cancel'>取消 / Cancel</button></form>"
    )
    return _page("Sandbox pay", content)


@router.post("/pay/sandbox/{order_id}", include_in_schema=False)
async def sandbox_pay(order_id: str, request: Request, db: DbDep, settings: SettingsDep) -> HTMLResponse:
    """Pay: play the provider's server and hand a signed notification to the callback code; cancel: a
    conditional pending → canceled. Like the page, authorized by knowing the order id only (sandbox)."""
    found = await _sandbox_order(db, settings, order_id)
    if found is None:
        return _page("Not found", "<h1>订单不存在 / No such order</h1>", 404)
    order, _account = found
    action = (await request.form()).get("action")
    back = '<p><a href="/console/billing">返回费用中心 / Back to billing</a></p>'
    if action == "cancel":
        order = await payments.cancel_order(db, order_id=order_id)
        if order.status != "canceled":  # paid (or expired) meanwhile: say what it is, not "canceled"
            return _page("Order", f"<h1>未取消 / Not canceled</h1><p>状态 / status: <b>{html.escape(order.status)}</b>"
                         f"</p>{back}", 409)
        return _page("Canceled", f"<h1>已取消 / Canceled</h1><p>状态 / status: {html.escape(order.status)}</p>{back}")
    if action != "pay":
        return _page("Bad request", f"<h1 class='err'>未知操作 / Unknown action</h1>{back}", 400)
    provider = payments.SandboxProvider(settings)
    headers, body = provider.notification(order)
    try:  # the same handling as a notification posted to /v1/billing/payments/sandbox/callback
        order, _credited = await payments.handle_callback(db, provider, headers, body)
    except HongyanError as exc:
        return _page("Payment", f"<h1 class='err'>{html.escape(exc.message)}</h1>{back}", exc.status_code)
    amount = f"{format_micros(order.amount_micros + order.bonus_micros, order.currency)} {order.currency}"
    return _page("Paid", f"<h1 class='ok'>支付成功 / Paid</h1><p>已到账 / credited: <b>{html.escape(amount)}</b></p>"
                 f"<p class='muted'>{html.escape(order.invoice_number or '')}</p>{back}")
