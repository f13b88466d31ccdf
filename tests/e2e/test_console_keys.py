"""A developer on the API keys page in real Chromium: a key limited to networks, refused while one network
is malformed (error under the field, text kept), created as an HMAC signing key, then another key
rotated from its row menu; the new key is shown once and the old one says what replaced it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import expect

if TYPE_CHECKING:
    from e2e.conftest import Server

pytestmark = pytest.mark.e2e


def full_screenshot(page: Any, path: Path) -> None:
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": page.evaluate("document.body.scrollHeight")})
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def test_keys_page_networks_signing_rotation(page: Any, server: Server, screenshots: Path) -> None:
    page.goto("/console/keys")
    page.fill("#email", server.email)
    page.fill("#password", server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/keys$"))

    page.fill("#key-name", "erp-signing")
    page.fill("#key-cidrs", "203.0.113.0/24\n2001:db8::/32\n10.0.0.300")
    page.check('input[name="auth"][value="hmac"]')
    page.click("form[action='/console/keys'] button[type=submit]")
    error = page.locator('[data-error-for="allowed_cidrs"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("10.0.0.300")
    expect(page.locator("#key-cidrs")).to_have_value("203.0.113.0/24\n2001:db8::/32\n10.0.0.300")

    page.fill("#key-cidrs", "203.0.113.0/24\n2001:db8::/32")
    page.click("form[action='/console/keys'] button[type=submit]")
    expect(page.locator(".secret-card")).to_contain_text("HONGYAN-HMAC-SHA256")
    token = page.locator("#new-token").input_value()
    key_id = token.split(".")[0]
    row = page.locator("tr", has=page.locator(f"text={key_id}"))
    expect(row).to_contain_text("203.0.113.0/24")
    expect(row).to_contain_text("HMAC")

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}) as api:
        shown = api.get(f"/v1/api-keys/{key_id}").json()
        assert shown["allowed_cidrs"] == ["203.0.113.0/24", "2001:db8::/32"] and shown["auth"] == "hmac"
        # a bearer use of the signing key is refused with its own code
        refused = httpx.get(f"{server.url}/v1/messages", headers={"Authorization": f"Bearer {token}"})
        assert refused.json()["error"]["code"] == "signature_required"
        other = api.post("/v1/api-keys", json={"name": "to-rotate", "scopes": ["read"]}).json()

    page.goto("/console/keys")
    other_row = page.locator("tr", has=page.locator(f"text={other['id']}"))
    other_row.locator("summary").click()
    other_row.locator("select[name=overlap_hours]").select_option("1")
    full_screenshot(page, screenshots / "keys-menu.png")
    other_row.locator("form[action$='/rotate'] button").click()
    expect(page.locator(".secret-card")).to_contain_text(other["id"])
    page.goto("/console/keys")
    expect(page.locator("tr", has=page.locator(f"text={other['id']}"))).to_contain_text("已由")
    full_screenshot(page, screenshots / "keys.png")
