"""Platform staff in real Chromium on the channels & routes page: a refused SMPP channel keeps the typed
values with the error under the port, then the channel and a route are added (the screenshot), and both
are removed again so the shared server routes through the sandbox for the other browser tests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import expect

if TYPE_CHECKING:
    from e2e.conftest import Server

pytestmark = pytest.mark.e2e

def test_staff_add_a_channel_and_a_route(page: Any, server: Server, screenshots: Path) -> None:
    page.goto("/console/channels")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.fill("#email", server.email)  # the first-start administrator is platform staff
    page.fill("#password", server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/channels$"))
    expect(page.locator("h1")).to_have_text("通道与路由")
    expect(page.locator('.nav a[href="/console/channels"]')).to_have_attribute("aria-current", "page")
    expect(page.locator('tr[data-channel="sandbox"] [data-cell="state"]')).to_contain_text("在线")
    # codes first: the embedded workers say whether bulk sends are held back for verification codes
    expect(page.locator("[data-codes-first]")).to_contain_text("验证码优先")

    form = page.locator("#add-channel form")
    form.locator("#channel-name").fill("carrier-a")
    form.locator("#channel-host").fill("127.0.0.1")
    form.locator("#channel-port").fill("70000")
    form.locator("#channel-system_id").fill("hongyan")
    form.locator("#channel-password").fill("secret")
    form.locator("#channel-binds").fill("2")
    form.locator("#channel-window").fill("50")
    form.locator("#channel-tps").fill("200")
    form.locator("#channel-long_mode").select_option("udh16")
    form.locator("#channel-advanced").fill("reconnect_min_s=5\nsource_addr=\"10690\"")
    form.locator("button[type=submit]").click()

    error = page.locator('.field:has(#channel-port) [data-error-for="port"]')
    expect(error).to_be_visible()
    expect(error).to_have_text("设置无效 Port must be 1–65535.")
    expect(page.locator("#channel-port")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#channel-name")).to_have_value("carrier-a")
    expect(page.locator("#channel-long_mode")).to_have_value("udh16")
    expect(page.locator("#channel-advanced")).to_have_value("reconnect_min_s=5\nsource_addr=\"10690\"")
    page.screenshot(path=str(screenshots / "channels_error.png"), full_page=True)

    page.fill("#channel-port", "1")  # nothing listens there: the channel shows as down
    page.fill("#channel-password", "secret")
    page.click("#add-channel button[type=submit]")
    expect(page.locator(".flash-success")).to_contain_text("通道“carrier-a”已添加。")
    row = page.locator('tr[data-channel="carrier-a"]')
    expect(row.locator('[data-cell="state"]')).to_contain_text("离线")
    expect(row.locator('[data-cell="state"]')).to_contain_text("0/2 个连接在线")

    route_form = page.locator("#add-route form")
    route_form.locator("#route-channel").select_option(label="carrier-a")
    route_form.locator("#route-priority").fill("10")
    route_form.locator("#route-weight").fill("3")
    route_form.locator("#route-countries").fill("CN")
    route_form.locator("#route-prefixes").fill("+86138, +86139")
    route_form.locator('input[name="message_types"][value="verification"]').check()
    route_form.locator("button[type=submit]").click()
    expect(page.locator(".flash-success")).to_contain_text("路由已添加")
    route = page.locator("#routes-table tbody tr[data-route]")
    expect(route).to_have_count(1)
    expect(route).to_contain_text("carrier-a")
    expect(route).to_contain_text("+86138")
    page.screenshot(path=str(screenshots / "channels.png"), full_page=True)

    # clean up through the page (each delete asks for confirmation first)
    page.on("dialog", lambda dialog: dialog.accept())
    route.locator("button[type=submit]").click()
    expect(page.locator(".flash-success")).to_contain_text("路由已删除。")
    expect(page.locator("#routes-table tbody tr[data-route]")).to_have_count(0)
    row.locator('form[action$="/delete"] button').click()
    expect(page.locator(".flash-success")).to_contain_text("通道“carrier-a”已删除。")
    expect(page.locator('tr[data-channel="carrier-a"]')).to_have_count(0)
