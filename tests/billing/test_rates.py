"""Rate cards: most specific rate wins, account override layer first, versions by effective date, and the
operator API that publishes them (errors name the row and field)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from hongyan.accounts import keys
from hongyan.accounts import service as accounts
from hongyan.billing import rates
from hongyan.billing.rates import PriceList
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from support import AccountFixture

LAYER = {
    ("CN", "*", "*"): 45_000,
    ("CN", "marketing", "*"): 55_000,
    ("CN", "verification", "premium"): 60_000,
    ("*", "*", "*"): 350_000,
    ("*", "marketing", "*"): 400_000,
}


@pytest.mark.parametrize(
    ("country", "message_type", "tier", "expected"),
    [
        ("CN", "notification", "standard", 45_000),
        ("CN", "marketing", "standard", 55_000),
        ("CN", "verification", "premium", 60_000),
        ("CN", "verification", "standard", 45_000),
        ("US", "notification", "standard", 350_000),
        ("US", "marketing", "standard", 400_000),
        (None, "notification", "standard", 350_000),
    ],
)
def test_most_specific_rate_wins(country: str | None, message_type: str, tier: str, expected: int) -> None:
    price_list = PriceList(currency="CNY", tier=tier, default_micros=1, layers=[("rcv_1", LAYER)])
    price = price_list.price(country, message_type)
    assert price.per_segment_micros == expected and price.source == "rcv_1"


def test_override_layer_first_then_base_then_default() -> None:
    override = {("US", "*", "*"): 300_000}
    price_list = PriceList(currency="CNY", tier="standard", default_micros=7, layers=[("rcv_o", override), ("rcv_b", LAYER)])
    assert price_list.price("US", "marketing").per_segment_micros == 300_000  # override beats a more specific base row
    assert price_list.price("CN", "marketing").per_segment_micros == 55_000
    assert PriceList(currency="CNY", tier="standard", default_micros=7).price("CN", "marketing").source == "default"


async def test_versions_and_override_cards(db: Database, settings: Settings, account: AccountFixture) -> None:
    now = utcnow()
    async with db.write() as session:
        base = await rates.create_rate_card(session, name="Standard", currency="CNY", is_default=True)
        await rates.add_version(session, rate_card_id=base.id, effective_from=now - timedelta(days=30), note=None,
                                actor="t", rates=rates.validate_rates([{"country": "CN", "price_micros": 45_000}]))
        await rates.add_version(session, rate_card_id=base.id, effective_from=now + timedelta(days=1), note="price rise",
                                actor="t", rates=rates.validate_rates([{"country": "CN", "price_micros": 50_000}]))
    async with db.read() as session:
        today = await rates.load_price_list(session, settings, account_id=account.account_id, currency="CNY")
        tomorrow = await rates.load_price_list(session, settings, account_id=account.account_id, currency="CNY",
                                               at=now + timedelta(days=2))
    assert today.price("CN", "notification").per_segment_micros == 45_000
    assert tomorrow.price("CN", "notification").per_segment_micros == 50_000
    assert today.price("US", "notification").per_segment_micros == settings.default_price_micros  # no row: default
    async with db.write() as session:
        special = await rates.create_rate_card(session, name="Acme deal", currency="CNY", account_id=account.account_id)
        await rates.add_version(session, rate_card_id=special.id, effective_from=None, note=None, actor="t",
                                rates=rates.validate_rates([{"country": "CN", "message_type": "verification",
                                                             "price_micros": 30_000}]))
        other = await accounts.create_account(session, name="Other")
    async with db.read() as session:
        mine = await rates.load_price_list(session, settings, account_id=account.account_id, currency="CNY")
        theirs = await rates.load_price_list(session, settings, account_id=other.id, currency="CNY")
    assert mine.price("CN", "verification").per_segment_micros == 30_000
    assert mine.price("CN", "notification").per_segment_micros == 45_000
    assert theirs.price("CN", "verification").per_segment_micros == 45_000


@pytest.mark.parametrize(
    ("row", "field", "code"),
    [
        ({"country": "China", "price": "0.04"}, "rates[1].country", "invalid_country"),
        ({"message_type": "spam", "price": "0.04"}, "rates[1].message_type", "invalid_message_type"),
        ({"tier": "gold", "price": "0.04"}, "rates[1].tier", "invalid_tier"),
        ({"price": "-0.04"}, "rates[1].price_micros", "invalid_price"),
        ({"price": "0.0000001"}, "rates[1].price", "invalid_amount"),
        ({"country": "CN"}, "rates[1].price", "invalid_price"),
        ({"country": "CN", "price": "0.05"}, "rates[1]", "duplicate_rate"),
    ],
)
async def test_rate_card_api_errors_name_the_row(app: Any, operator_headers: dict[str, str], row: dict[str, Any],
                                                 field: str, code: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=operator_headers) as c:
        r = await c.post("/v1/operator/rate-cards", json={"name": "x", "rates": [{"country": "CN", "price": "0.045"}, row]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["field"] == field


async def test_published_card_prices_the_send(app: Any, operator_headers: dict[str, str], client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=operator_headers) as op:
        r = await op.post("/v1/operator/rate-cards", json={
            "name": "Standard CNY", "currency": "CNY", "is_default": True,
            "rates": [{"country": "CN", "price": "0.038"}, {"country": "CN", "message_type": "marketing", "price": "0.05"},
                      {"price": "0.35"}]})
        assert r.status_code == 201, r.text
        card = r.json()
        assert card["versions"][0]["rates"][0]["price"] in ("0.038", "0.35", "0.05")
        listed = await op.get("/v1/operator/rate-cards")
        assert [c["id"] for c in listed.json()["data"]] == [card["id"]]
    sent = await client.post("/v1/batches", json={"text": "hi", "recipients": ["+8613800000010", "+12025550123"]})
    assert sent.status_code == 202, sent.text
    prices = {m["to"]: m["price"] for m in sent.json()["messages"]}
    assert prices == {"+8613800000010": "0.038", "+12025550123": "0.35"}
    marketing = await client.post("/v1/messages/quote", json={"text": "hi", "to": "+8613800000010",
                                                              "message_type": "marketing"})
    assert marketing.json()["price_per_segment"] == "0.05"
    listed_prices = (await client.get("/v1/billing/prices", params={"country": "cn", "message_type": "marketing"})).json()
    assert listed_prices["quote"]["price_per_segment"] == "0.05" and len(listed_prices["rates"]) == 3


@pytest.fixture
async def operator_headers(db: Database, account: AccountFixture) -> dict[str, str]:
    async with db.write() as session:
        created = await keys.create_api_key(session, account_id=account.account_id, name="ops", scopes=("operator",),
                                                allow_operator=True)
    return {"Authorization": f"Bearer {created.token}"}
