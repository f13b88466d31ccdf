"""A person using the console in real Chromium: sign in, send with a live preview, confirm, watch the
statuses change to delivered, open a message, manage API keys, switch language.

Sandbox magic numbers (last five digits) make outcomes deterministic: 00001 delivered, 00002 undelivered.
Every wait is Playwright's `expect` with a deadline, never a fixed sleep.
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

STATUS_DEADLINE_MS = 20_000  # sandbox receipts arrive after 300 ms; generous for slow CI machines


def sign_in(page: Any, server: Server, *, next_path: str = "/console") -> None:
    page.goto(next_path)
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.fill("#email", server.email)
    page.fill("#password", server.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(next_path) + r"$"))


def counter(page: Any, name: str) -> Any:
    return page.locator(f'#counter [data-counter="{name}"]')


def test_wrong_password_shows_the_error_next_to_the_password_field(
    page: Any, server: Server, screenshots: Path
) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    expect(page.locator("h1")).to_have_text("登录控制台")
    page.screenshot(path=str(screenshots / "login.png"))

    page.fill("#email", server.email)
    page.fill("#password", "not-the-password")
    page.click("button[type=submit]")

    error = page.locator('.field:has(#password) [data-error-for="password"]')
    expect(error).to_be_visible()
    expect(error).to_have_text("邮箱或密码不正确。")
    expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator('[data-error-for="email"]')).to_be_hidden()
    expect(page.locator("#email")).to_have_value(server.email)  # kept, so only the password is retyped
    page.screenshot(path=str(screenshots / "login_error.png"))


def test_send_preview_confirm_and_watch_statuses_change(page: Any, server: Server, screenshots: Path) -> None:
    sign_in(page, server, next_path="/console/send")
    expect(page.locator("h1")).to_have_text("发送短信")

    page.fill("#recipients", "13800000001; 13800000002\n+8613800000002")
    page.fill("#text", "【鸿雁】您的订单已发货,请注意查收。")

    # live counter (server-side segmentation): 18 characters, not all GSM → UCS-2, one segment
    expect(counter(page, "encoding")).to_have_text("UCS-2")
    expect(counter(page, "characters")).to_have_text("18")
    expect(counter(page, "segments")).to_have_text("1")
    expect(counter(page, "units_remaining")).to_have_text("52")
    expect(counter(page, "price")).to_have_text("¥0.04")

    # preview: two valid numbers, the third entry is the second one again
    preview = page.locator("#send-preview")
    expect(preview.locator('[data-total="messages"]')).to_have_text("2")
    expect(preview.locator('[data-total="rejected"]')).to_have_text("1")
    expect(preview.locator('[data-total="price"]')).to_have_text("¥0.08")
    duplicate = preview.locator('.rejected-table tr[data-code="duplicate_phone_number"]')
    expect(duplicate).to_have_count(1)
    expect(duplicate).to_contain_text("第 3 个")
    expect(duplicate).to_contain_text("+8613800000002")
    expect(duplicate).to_contain_text("号码重复")
    expect(duplicate).to_contain_text("与第 2 个号码相同")
    expect(preview.locator(".sms-sample")).to_have_count(2)
    expect(preview.locator(".sms-sample").first).to_contain_text("+8613800000001")
    page.screenshot(path=str(screenshots / "send_preview.png"), full_page=True)

    page.click("button[value=review]")
    expect(page.locator("h1")).to_have_text("确认发送")
    expect(page.locator('[data-confirm="messages"]')).to_have_text("2")
    expect(page.locator('[data-confirm="segments"]')).to_have_text("2")
    expect(page.locator('[data-confirm="price"]')).to_have_text("¥0.08")
    page.screenshot(path=str(screenshots / "send_confirm.png"), full_page=True)

    page.click("#confirm-send")
    expect(page).to_have_url(re.compile(r"/console/messages\?batch=bat_"))
    expect(page.locator(".flash-success")).to_contain_text("已提交批次")
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    page.screenshot(path=str(screenshots / "history_submitted.png"), full_page=True)

    rows = page.locator("#message-rows tr[data-id]")
    expect(rows).to_have_count(2)
    delivered = rows.filter(has_text="+8613800000001")
    undelivered = rows.filter(has_text="+8613800000002")
    expect(delivered.locator(".badge")).to_have_text("已送达", timeout=STATUS_DEADLINE_MS)
    expect(undelivered.locator(".badge")).to_have_text("未送达", timeout=STATUS_DEADLINE_MS)
    assert page.evaluate("window.__sameDocument === true"), "statuses must change without reloading"
    assert int(page.locator("#message-rows").get_attribute("data-refresh-count") or 0) >= 1
    page.screenshot(path=str(screenshots / "history_delivered.png"), full_page=True)

    # the message's own page shows its whole status history
    delivered.locator("a").first.click()
    expect(page.locator("h1")).to_contain_text("短信")
    timeline = page.locator(".timeline .badge")
    expect(timeline).to_have_text(["已接收", "排队中", "发送中", "已发送", "已送达"])
    expect(page.locator(".sms-bubble")).to_have_text("【鸿雁】您的订单已发货,请注意查收。")
    page.screenshot(path=str(screenshots / "message_detail.png"), full_page=True)

    # and its batch: counts per status, the skipped duplicate
    page.locator(".props a[href^='/console/batches/']").click()
    expect(page.locator(".status-counts")).to_contain_text("全部完成", timeout=STATUS_DEADLINE_MS)
    expect(page.locator(".rejected-table")).to_contain_text("+8613800000002")
    page.screenshot(path=str(screenshots / "batch.png"), full_page=True)


def test_counter_gsm_text_of_161_characters_is_two_segments(page: Any, server: Server) -> None:
    sign_in(page, server, next_path="/console/send")
    page.fill("#text", "a" * 160)
    expect(counter(page, "characters")).to_have_text("160")
    expect(counter(page, "segments")).to_have_text("1")
    page.fill("#text", "a" * 161)
    expect(counter(page, "characters")).to_have_text("161")
    expect(counter(page, "encoding")).to_have_text("GSM-7")
    expect(counter(page, "segments")).to_have_text("2")
    expect(counter(page, "units_remaining")).to_have_text(str(2 * 153 - 161))
    expect(counter(page, "unit_limit")).to_have_text("153")


def test_counter_chinese_text_of_71_characters_is_two_segments(page: Any, server: Server) -> None:
    sign_in(page, server, next_path="/console/send")
    page.fill("#text", "鸿" * 70)
    expect(counter(page, "segments")).to_have_text("1")
    page.fill("#text", "鸿" * 71)
    expect(counter(page, "characters")).to_have_text("71")
    expect(counter(page, "encoding")).to_have_text("UCS-2")
    expect(counter(page, "segments")).to_have_text("2")
    expect(counter(page, "price")).to_have_text("¥0.08")


def test_personalized_table_previews_each_message_and_flags_missing_values(
    page: Any, server: Server, screenshots: Path
) -> None:
    sign_in(page, server, next_path="/console/send")
    page.check("input[name=recipient_mode][value=table]", force=True)
    expect(page.locator("#table")).to_be_visible()
    expect(page.locator("#recipients")).to_be_hidden()
    page.fill(
        "#table", "手机号,客户姓名,订单号\n13800000001,张三,A1001\n13800000005,李四\n13800000006,王五,A1003"
    )
    page.fill("#text", "尊敬的{客户姓名},您的订单{订单号}已发货。")

    preview = page.locator("#send-preview")
    samples = preview.locator(".sms-sample .sms-bubble")
    expect(samples).to_have_text(["尊敬的张三,您的订单A1001已发货。", "尊敬的王五,您的订单A1003已发货。"])
    missing = preview.locator('.rejected-table tr[data-code="template_variable_missing"]')
    expect(missing).to_contain_text("第 3 行")
    expect(missing).to_contain_text("缺少变量取值")
    page.screenshot(path=str(screenshots / "send_table.png"), full_page=True)

    page.fill("#text", "您好{姓名}")  # a variable no column gives: reported next to the text
    text_error = page.locator('.field:has(#text) [data-error-for="text"]')
    expect(text_error).to_be_visible()
    expect(text_error).to_contain_text("内容中的变量没有取值")


def test_switching_to_english_changes_the_labels(page: Any, server: Server, screenshots: Path) -> None:
    sign_in(page, server)
    expect(page.locator("h1")).to_have_text("概览")
    page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
    page.click(".sidebar .lang-switch a[lang=en]")
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator(".nav")).to_contain_text("Send SMS")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.click(".nav-item[href='/console/send']")
    expect(page.locator("label[for=text]")).to_have_text("Message text")
    page.fill("#recipients", "13800000001, 12345")
    page.fill("#text", "Hello {name}, your code is 1234")
    expect(counter(page, "encoding")).to_have_text("GSM-7")
    expect(page.locator('[data-error-for="text"]')).to_contain_text(
        "no recipient gives a value"
    )  # the API's words
    page.fill("#text", "Your code is 1234")
    expect(page.locator('[data-error-for="text"]')).to_be_hidden()
    expect(
        page.locator('#send-preview .rejected-table tr[data-code="invalid_phone_number"]')
    ).to_contain_text("#2")
    page.screenshot(path=str(screenshots / "send_en.png"), full_page=True)
    page.click(".sidebar .lang-switch a[lang=zh-CN]")
    expect(page.locator("h1")).to_have_text("发送短信")


def test_api_keys_create_shows_token_once_and_revoke(page: Any, server: Server, screenshots: Path) -> None:
    sign_in(page, server, next_path="/console/keys")
    expect(page.locator("tbody tr")).to_have_count(1)  # the key made at first start
    page.fill("#key-name", "订单系统")
    page.click("form[action='/console/keys'] button[type=submit]")

    token = page.locator("#new-token")
    expect(token).to_have_value(re.compile(r"^key_[0-9A-Z]{26}\.\S{20,}$"))
    expect(page.locator(".secret-card button[data-copy]")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(2)
    page.screenshot(path=str(screenshots / "keys.png"), full_page=True)

    key_id = token.input_value().split(".")[0]
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tbody tr", has_text=key_id).locator("summary").click()  # the row's Manage menu
    page.locator(f"form[action='/console/keys/{key_id}/revoke'] button").click()
    expect(page.locator(".flash-success")).to_contain_text(key_id)
    expect(page.locator("#new-token")).to_have_count(0)  # never shown again
    row = page.locator("tbody tr", has_text=key_id)
    expect(row.locator(".badge")).to_have_text("已撤销")


def test_webhooks_add_shows_secret_once_and_disable(page: Any, server: Server, screenshots: Path) -> None:
    sign_in(page, server, next_path="/console/webhooks")
    page.fill("#webhook-url", "ftp://example.com/hook")
    page.click("form[action='/console/webhooks'] button[type=submit]")
    error = page.locator('.field:has(#webhook-url) [data-error-for="url"]')
    expect(error).to_contain_text("地址必须是完整的 http(s) URL。")
    expect(page.locator("#webhook-url")).to_have_value("ftp://example.com/hook")

    page.fill("#webhook-url", "http://127.0.0.1:9/hongyan/webhook")
    page.fill("#webhook-description", "订单系统回执")
    page.click("form[action='/console/webhooks'] button[type=submit]")
    expect(page.locator("#new-secret")).to_have_value(re.compile(r"^whsec_\S{20,}$"))
    row = page.locator("tbody tr", has_text="http://127.0.0.1:9/hongyan/webhook")
    expect(row.locator(".badge")).to_have_text("启用")
    page.screenshot(path=str(screenshots / "webhooks.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="停用").click()
    expect(page.locator(".flash-success")).to_be_visible()
    expect(page.locator("#new-secret")).to_have_count(0)
    expect(
        page.locator("tbody tr", has_text="http://127.0.0.1:9/hongyan/webhook").locator(".badge")
    ).to_have_text("已停用")


def test_narrow_screen_layout(page: Any, server: Server, screenshots: Path) -> None:
    """On a phone-sized screen the sidebar becomes a top bar and nothing overflows sideways."""
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, server, next_path="/console/messages")
    expect(page.locator("h1")).to_have_text("发送记录")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"page is {overflow}px wider than the screen"
    page.screenshot(path=str(screenshots / "history_narrow.png"), full_page=True)
