"""A customer on the billing page in real Chromium: the balance and usage after a send, a refused recharge
amount shown under the field, then a recharge that goes to the sandbox pay page (paid there, the page
comes back with the new balance), and the page in both languages (the screenshots)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import expect

if TYPE_CHECKING:
    from e2e.conftest import Server

pytestmark = pytest.mark.e2e

DEADLINE_S = 20.0
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "console-billing.png"


def api(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=10
    )


def send_and_wait(server: Server) -> list[str]:
    """A small batch through the API, then wait until every message is billed for good (settled/released);
    the message ids."""
    with api(server) as client:
        sent = client.post(
            "/v1/batches",
            json={
                "text": "【鸿雁】您的验证码是 {code}，5 分钟内有效。",
                "message_type": "verification",
                "recipients": [
                    {"to": "+8613800000001", "vars": {"code": "482913"}},
                    {"to": "+8613900000001", "vars": {"code": "105377"}},
                    {"to": "+8613700000002", "vars": {"code": "660214"}},
                    {"to": "+12025550101", "vars": {"code": "918265"}},
                ],
            },
        )
        assert sent.status_code == 202, sent.text
        batch_id = sent.json()["id"]
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            usage = client.get("/v1/billing/usage", params={"batch_id": batch_id}).json()["data"]
            if len(usage) == 4 and all(u["billing_state"] != "held" for u in usage):
                return [u["message_id"] for u in usage]
            time.sleep(0.2)
        raise AssertionError(f"messages still held after {DEADLINE_S}s: {usage}")


def screenshot(page: Any, path: Path) -> None:
    """The whole page with a viewport as tall as it, so the sticky full-height sidebar reaches the bottom."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": page.evaluate("document.body.scrollHeight")})
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def balance(server: Server) -> dict[str, Any]:
    with api(server) as client:
        body: dict[str, Any] = client.get("/v1/billing/balance").json()
        return body


def test_billing_page_recharge_and_screenshots(page: Any, server: Server, screenshots: Path) -> None:
    message_ids = send_and_wait(server)
    before = balance(server)

    page.goto("/console/billing")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.fill("#email", server.email)
    page.fill("#password", server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/billing$"))
    expect(page.locator("h1")).to_have_text("费用中心")
    expect(page.locator('.nav a[href="/console/billing"]')).to_have_attribute("aria-current", "page")
    expect(page.locator('[data-kpi="available"]')).to_have_text(f"¥{before['available']}")
    for message_id in message_ids:  # other tests on the shared server send too: ours are the newest
        expect(page.locator(f'#usage-table tr[data-usage="{message_id}"]')).to_contain_text("已结算")

    # a refused amount: the error under the field, the typed text kept, no order
    page.fill("#recharge-amount", "abc")
    page.click("#recharge button[type=submit]")
    error = page.locator('.field:has(#recharge-amount) [data-error-for="amount"]')
    expect(error).to_be_visible()
    expect(error).to_have_text("金额无效 amount: 'abc' is not a number.")
    expect(page.locator("#recharge-amount")).to_have_value("abc")
    expect(page.locator("#recharge-amount")).to_have_attribute("aria-invalid", "true")

    page.fill("#recharge-amount", "200")
    page.click("#recharge button[type=submit]")
    expect(page).to_have_url(re.compile(r"/pay/sandbox/pay_\w+$"))
    order_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".amount")).to_have_text("200.00 CNY")
    screenshot(page, screenshots / "sandbox-pay.png")
    page.click("button.pay")  # the sandbox pay page: pay, then back to the billing page
    expect(page.locator("h1")).to_contain_text("Paid")
    page.click('a[href="/console/billing"]')
    after = balance(server)
    assert after["balance_micros"] == before["balance_micros"] + 200_000_000
    expect(page.locator('[data-kpi="available"]')).to_have_text(f"¥{after['available']}")
    expect(page.locator(f'tr[data-order="{order_id}"]')).to_contain_text("已到账")

    page.click('a.chip[href*="period=day"]')
    expect(page).to_have_url(re.compile(r"period=day"))
    expect(page.locator("#statement-table tbody tr[data-period]")).to_have_count(1)
    page.click('a.chip[href*="#statements"]:not([href*="period=day"])')
    expect(page.locator("#statement-table tbody tr[data-period]")).to_have_count(1)
    screenshot(page, screenshots / "billing.png")
    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    DOCS_IMAGE.write_bytes((screenshots / "billing.png").read_bytes())

    page.click('.lang-switch a[lang="en"]')
    expect(page.locator("h1")).to_have_text("Billing")
    expect(page.locator("#usage-table")).to_contain_text("Settled")
    screenshot(page, screenshots / "billing-en.png")

    # platform staff publish prices on the Pricing page; a bad line is reported with its line number
    page.click('a.nav-item[href="/console/pricing"]')
    expect(page.locator("h1")).to_have_text("Pricing")
    page.fill("#card-name", "Standard CNY")
    page.fill("#card-rates", "CN,*,*,0.045\nCN,marketing,*,0.055\nXX1,*,*,0.3")
    page.click("#publish button[type=submit]")
    expect(page.locator('[data-error-for="rates"]')).to_contain_text("Line 3")
    page.fill("#card-rates", "CN,*,*,0.045\nCN,marketing,*,0.055\n*,*,*,0.35")
    page.check('input[name="is_default"]')
    page.click("#publish button[type=submit]")
    expect(page.locator("#rate-cards")).to_contain_text("Standard CNY")
    page.click("#rate-cards summary")
    screenshot(page, screenshots / "pricing-en.png")
