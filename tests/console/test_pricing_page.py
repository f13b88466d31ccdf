"""The staff Pricing page: publish rate cards (errors with line and column), which then price sends; put
packages on sale and stop them; customers cannot open it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from console_pages import csrf_of, field_error, signed_in_client
from hongyan.billing.models import Product, RateCard
from hongyan.console.pricing import parse_rate_lines
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from support import AccountFixture


@pytest.fixture
async def staff(app: Any, db: Database, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in_client(app, db, account, email="ops@example.com", platform_role="platform_admin")
    yield client
    await client.aclose()


async def _post(client: httpx.AsyncClient, url: str, data: dict[str, str]) -> httpx.Response:
    page = await client.get("/console/pricing")
    return await client.post(url, data={**data, "csrf_token": csrf_of(page.text)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CN,*,*,0.045\nChina,*,*,0.04", "Line 2, column country"),
        ("CN,*,*,0.045\n\n# comment\nCN,*,*", "Line 4: give 4 values"),
        ("CN,*,*,abc", "Line 1, column price"),
        ("CN,spam,*,0.04", "Line 1, column message_type"),
        ("CN,*,*,0.04\nCN,*,*,0.05", "Line 2: The rate for CN/*/* is given twice"),
        ("", "Give at least one rate"),
    ],
)
def test_rate_lines_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(HongyanError) as caught:
        parse_rate_lines(text)
    assert message in caught.value.message and caught.value.field == "rates"


def test_rate_lines_parse() -> None:
    rows = parse_rate_lines("# country,type,tier,price\nCN,*,*,0.045\ncn, marketing ,,0.055\n*,*,*,0.35\n")
    assert [(r.country, r.message_type, r.tier, r.price_micros) for r in rows] == [
        ("CN", "*", "*", 45_000), ("CN", "marketing", "*", 55_000), ("*", "*", "*", 350_000)]


async def test_publish_prices_then_sends_use_them(db: Database, staff: httpx.AsyncClient, client: httpx.AsyncClient,
                                                  member_page_denied: None) -> None:
    bad = await _post(staff, "/console/pricing/rates", {"card_name": "Standard", "currency": "CNY",
                                                        "rates": "CN,*,*,0.045\nXX1,*,*,1", "is_default": "on"})
    assert bad.status_code == 422 and "Line 2" in field_error(bad.text, "rates")
    ok = await _post(staff, "/console/pricing/rates", {"card_name": "Standard", "currency": "CNY",
                                                       "rates": "CN,*,*,0.045\n*,*,*,0.35", "is_default": "on"})
    assert ok.status_code == 303, ok.text
    again = await _post(staff, "/console/pricing/rates", {"card_name": "Standard", "currency": "CNY",
                                                          "rates": "CN,*,*,0.038\n*,*,*,0.35"})
    assert again.status_code == 303
    async with db.read() as session:
        cards = list(await session.scalars(select(RateCard)))
    assert len(cards) == 1 and cards[0].is_default  # a second version of the same card, not a second card
    page = await staff.get("/console/pricing")
    assert "Standard" in page.text and "¥0.038" in page.text
    sent = await client.post("/v1/messages", json={"to": "+8613800000001", "text": "hi"})
    assert sent.json()["price"] == "0.038"


async def test_products_on_and_off_sale(db: Database, staff: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    bad = await _post(staff, "/console/pricing/products", {"kind": "package", "product_name": "x", "price": "10",
                                                           "units": "ten", "validity_days": "30"})
    assert bad.status_code == 422 and field_error(bad.text, "units")
    ok = await _post(staff, "/console/pricing/products", {"kind": "package", "product_name": "国内 1 万条", "price": "400",
                                                          "units": "10000", "validity_days": "365", "countries": "CN",
                                                          "types": "verification, notification"})
    assert ok.status_code == 303, ok.text
    async with db.read() as session:
        product = await session.scalar(select(Product))
    assert product is not None and product.countries == ["CN"] and product.message_types == ["verification", "notification"]
    assert [p["unit_price"] for p in (await client.get("/v1/billing/products")).json()["data"]] == ["0.04"]
    stopped = await _post(staff, f"/console/pricing/products/{product.id}/deactivate", {})
    assert stopped.status_code == 303
    assert (await client.get("/v1/billing/products")).json()["data"] == []


@pytest.fixture
async def member_page_denied(app: Any, db: Database, account: AccountFixture) -> None:
    member = await signed_in_client(app, db, account)
    try:
        r = await member.get("/console/pricing")
        assert r.status_code == 403
        assert 'href="/console/pricing"' not in (await member.get("/console/billing")).text
    finally:
        await member.aclose()
