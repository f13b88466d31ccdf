"""SMS packages and subscriptions: the product catalog, purchases, the account's packages; operators manage
the catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from hongyan.accounts.permissions import Authority
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import BillingAccount, DbDep, OperatorAccount, ReadAccount
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.billing import packages
from hongyan.billing.models import Product
from hongyan.billing.routes import amount_param

router = APIRouter(tags=["billing"])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductChoice(_Strict):
    product_id: StrictStr


class SubscriptionCancel(_Strict):
    at_period_end: StrictBool = Field(True, description="true: stop renewing at the period end; false: now.")


def _optional_body(extra: dict[str, Any]) -> dict[str, Any]:
    extra["requestBody"]["required"] = False
    return extra


def _actor(ctx: Any) -> str:
    return f"key:{ctx.key_id}" if ctx.key_id else f"user:{ctx.user_id}"


class ProductCreate(_Strict):
    kind: StrictStr = Field("package", description="package | subscription")
    name: StrictStr
    currency: StrictStr = "CNY"
    price: StrictStr = Field(description='Price in currency units, e.g. "400.00".')
    units: StrictInt = Field(description="Segments included (per month for subscriptions).")
    validity_days: StrictInt = 365
    countries: list[StrictStr] = Field(default_factory=list, description="Destinations it pays for; [] = any.")
    message_types: list[StrictStr] = Field(default_factory=list, description="Message types it pays for; [] = any.")


@router.get("/v1/billing/products", summary="Packages and plans on sale in the account's currency, with unit prices")
async def get_products(db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        products = await packages.list_products(session, currency=ctx.currency)
    return JsonResponse({"data": [packages.product_json(p) for p in products]})


@router.post("/v1/billing/packages", status_code=201, summary="Buy a package from the balance",
             openapi_extra=openapi_body(ProductChoice, {"product_id": "prd_…"}))
async def buy_package(request: Request, db: DbDep, ctx: BillingAccount) -> JsonResponse:
    data = await parse_body(request, ProductChoice)
    async with db.write() as session:
        package = await packages.purchase_package(session, account_id=ctx.account_id, currency=ctx.currency,
                                                  product_id=data.product_id, actor=_actor(ctx),
                                                  audit_actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
        mine = await packages.account_packages(session, ctx.account_id)
    return JsonResponse(next(p for p in mine if p["id"] == package.id), status_code=201)


@router.get("/v1/billing/packages", summary="The account's packages: remaining and used units, expiry")
async def get_packages(db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        return JsonResponse({"data": await packages.account_packages(session, ctx.account_id)})


@router.post("/v1/billing/subscriptions", status_code=201, summary="Subscribe to a monthly plan (first month paid now)",
             openapi_extra=openapi_body(ProductChoice, {"product_id": "prd_…"}))
async def subscribe(request: Request, db: DbDep, ctx: BillingAccount) -> JsonResponse:
    data = await parse_body(request, ProductChoice)
    async with db.write() as session:
        subscription = await packages.subscribe(session, account_id=ctx.account_id, currency=ctx.currency,
                                                product_id=data.product_id, actor=_actor(ctx),
                                                audit_actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
        plan = await session.get(Product, subscription.product_id)
    return JsonResponse(packages.subscription_json(subscription, plan), status_code=201)


@router.get("/v1/billing/subscriptions", summary="The account's subscriptions")
async def get_subscriptions(db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        subs = await packages.list_subscriptions(session, ctx.account_id)
    return JsonResponse({"data": [packages.subscription_json(s, plan) for s, plan in subs]})


@router.post("/v1/billing/subscriptions/{subscription_id}/cancel",
             summary="Stop renewing (at the period's end by default); the paid allowance stays usable",
             openapi_extra=_optional_body(openapi_body(SubscriptionCancel, {"at_period_end": True})))
async def cancel_subscription(subscription_id: str, request: Request, db: DbDep, ctx: BillingAccount) -> JsonResponse:
    # the body is optional: an empty POST cancels at the period end
    data = await parse_body(request, SubscriptionCancel) if (await request.body()).strip() else SubscriptionCancel()
    async with db.write() as session:
        subscription = await packages.cancel_subscription(session, account_id=ctx.account_id,
                                                          subscription_id=subscription_id,
                                                          at_period_end=data.at_period_end,
                                                          audit_actor=actor_for_api(ctx, request), authority=Authority.of_api(ctx))
        plan = await session.get(Product, subscription.product_id)
    return JsonResponse(packages.subscription_json(subscription, plan))


@router.post("/v1/operator/billing/products", status_code=201, tags=["operator: billing"],
             summary="Put a package or plan on sale",
             openapi_extra=openapi_body(ProductCreate, {"kind": "package", "name": "10,000 SMS (12 months)",
                                                        "price": "400.00", "units": 10000, "validity_days": 365,
                                                        "countries": ["CN"]}))
async def create_product(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    data = await parse_body(request, ProductCreate)
    price = amount_param(data.price, "price", signed=True)
    async with db.write() as session:
        product = await packages.create_product(
            session, kind=data.kind, name=data.name, currency=data.currency, price_micros=price, units=data.units,
            validity_days=data.validity_days, countries=data.countries, message_types=data.message_types,
            audit_actor=actor_for_api(ctx, request),
        )
    return JsonResponse(packages.product_json(product), status_code=201)


@router.get("/v1/operator/billing/products", tags=["operator: billing"], summary="All products, on sale or not")
async def operator_products(db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        products = await packages.list_products(session, active_only=False)
    return JsonResponse({"data": [packages.product_json(p) for p in products]})


@router.post("/v1/operator/billing/products/{product_id}/deactivate", tags=["operator: billing"],
             summary="Stop selling a product (bought packages stay valid)")
async def deactivate_product(product_id: str, request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.write() as session:
        product = await packages.set_product_active(session, product_id, False, audit_actor=actor_for_api(ctx, request))
    return JsonResponse(packages.product_json(product))
