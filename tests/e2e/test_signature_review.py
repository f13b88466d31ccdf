"""A signature's whole path in real Chromium: a customer applies for 【青禾茶饮】 with a PNG licence, a
reviewer (platform_role "reviewer") approves it in the back office after looking at the document, and the
customer sends with it from the send page; the message's text starts with 【青禾茶饮】.

Screenshots: tests/e2e/screenshots/signature-*.png.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import expect

if TYPE_CHECKING:
    from e2e.conftest import Server

pytestmark = pytest.mark.e2e

CUSTOMER, REVIEWER, PASSWORD = "owner@qinghe.example", "reviewer@hongyan.example", "Tea-garden 2026!"
SIGNATURE = "青禾茶饮"

# the two users, made with the server's own settings (its data directory, database and keys)
USERS_SCRIPT = f"""
import asyncio
from hongyan.accounts import service
from hongyan.billing.recharge import top_up
from hongyan.config import get_settings
from hongyan.db.engine import Database

async def main():
    db = Database(get_settings().effective_database_url)
    async with db.write() as session:
        shop = await service.create_account(session, name="青禾茶饮", kyc_status="verified")
        await service.create_user(session, email="{CUSTOMER}", password="{PASSWORD}", account_id=shop.id)
        await top_up(session, account_id=shop.id, amount_micros=100_000_000, currency=shop.currency, actor="test",
                     note="test funds")
        staff = await service.create_account(session, name="鸿雁平台审核", kyc_status="verified")
        await service.create_user(session, email="{REVIEWER}", password="{PASSWORD}", account_id=staff.id,
                                  platform_role="reviewer")
    await db.dispose()

asyncio.run(main())
"""


def licence_png() -> bytes:
    """A small real PNG (a green 120×80 "licence"), so the reviewer's inline preview has something to show."""
    width, height = 120, 80
    raw = b"".join(b"\x00" + bytes((34, 139, 84)) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _make_users(server: Server) -> None:
    """The customer (owner of a funded, verified account) and a reviewer in the platform's own account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env["HONGYAN_DATA_DIR"] = str(server.data_dir)
    subprocess.run([sys.executable, "-c", USERS_SCRIPT], env=env, check=True, timeout=60)


def _log_in(page: Any, email: str) -> None:
    page.goto("/console/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("form[action='/console/login'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console$"))


def _log_out(page: Any) -> None:
    page.click("form.logout button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/login$"))


@pytest.fixture(scope="module")
def users(server: Server) -> None:
    _make_users(server)


def test_apply_review_and_send_with_a_signature(
    page: Any, server: Server, users: None, screenshots: Path
) -> None:
    # the customer applies, with the business licence as a PNG
    _log_in(page, CUSTOMER)
    page.click("a.nav-item[href='/console/signatures']")
    expect(page.locator("h1")).to_have_text("签名管理")
    page.click("a[href='/console/signatures/new']")
    page.fill("#sig-name", "【1】")
    page.select_option("#sig-source", "company")
    page.fill("#sig-purpose", "向会员发送取餐码和订单通知")
    page.set_input_files(
        "#sig-documents", files=[{"name": "营业执照.png", "mimeType": "image/png", "buffer": licence_png()}]
    )
    page.click("#signature-form button[type=submit]")
    error = page.locator('.field:has(#sig-name) [data-error-for="name"]')
    expect(error).to_contain_text("签名不符合要求")
    expect(page.locator("#sig-purpose")).to_have_value("向会员发送取餐码和订单通知")
    page.screenshot(path=str(screenshots / "signature-apply-error.png"), full_page=True)
    page.fill("#sig-name", f"【{SIGNATURE}】")
    page.set_input_files(
        "#sig-documents", files=[{"name": "营业执照.png", "mimeType": "image/png", "buffer": licence_png()}]
    )
    page.click("#signature-form button[type=submit]")
    expect(page.locator(".flash-success")).to_contain_text(f"已提交“{SIGNATURE}”")
    row = page.locator(f'tr[data-name="{SIGNATURE}"]')
    expect(row.locator("[data-review-status]")).to_have_text("审核中")
    expect(row).to_contain_text("营业执照.png")
    page.screenshot(path=str(screenshots / "signature-pending.png"), full_page=True)
    _log_out(page)

    # the reviewer finds it in the back office, looks at the document and approves
    _log_in(page, REVIEWER)
    page.click("a.nav-item[href='/console/review/signatures']")
    expect(page.locator(".review-tab.is-active")).to_contain_text("签名")
    queued = page.locator(f'tr[data-name="{SIGNATURE}"]')
    expect(queued).to_contain_text("青禾茶饮")
    page.screenshot(path=str(screenshots / "signature-review-queue.png"), full_page=True)
    queued.locator("a.btn").click()
    preview = page.locator(".doc-preview img")
    expect(preview).to_be_visible()
    assert page.evaluate("document.querySelector('.doc-preview img').naturalWidth") == 120  # the image loaded
    page.click("form[action$='/reject'] button[type=submit]")  # no reason: refused next to the field
    expect(page.locator('[data-error-for="reason"]')).to_contain_text("请填写驳回原因")
    page.screenshot(path=str(screenshots / "signature-review-detail.png"), full_page=True)
    page.click("button[data-action=approve]")
    expect(page.locator(".flash-success")).to_contain_text(f"已通过 【{SIGNATURE}】")
    page.locator(".flash-success a").click()
    expect(page.locator("#history li[data-action]")).to_have_count(3)
    expect(page.locator("#history li[data-action=approved]")).to_contain_text(REVIEWER)
    page.screenshot(path=str(screenshots / "signature-review-history.png"), full_page=True)
    _log_out(page)

    # the customer sends with it: it is the default, preselected on the send page
    _log_in(page, CUSTOMER)
    page.goto("/console/signatures")
    expect(page.locator(f'tr[data-name="{SIGNATURE}"] [data-review-status]')).to_have_text("已通过")
    expect(page.locator(f'tr[data-name="{SIGNATURE}"] [data-default]')).to_be_visible()
    page.click("a.nav-item[href='/console/send']")
    expect(page.locator("#signature")).to_have_value(SIGNATURE)
    page.fill("#recipients", "13800000001")
    page.fill("#text", "您的取餐码是 0815，请到前台取餐。")
    sample = page.locator("#send-preview .sms-sample .sms-bubble").first
    expect(sample).to_have_text(f"【{SIGNATURE}】您的取餐码是 0815，请到前台取餐。")
    page.screenshot(path=str(screenshots / "signature-send.png"), full_page=True)
    page.click("button[value=review]")
    page.click("#confirm-send")
    expect(page).to_have_url(re.compile(r"/console/messages\?batch=bat_"))
    page.locator("#message-rows tr[data-id] a").first.click()
    expect(page.locator(".sms-bubble")).to_have_text(f"【{SIGNATURE}】您的取餐码是 0815，请到前台取餐。")
    page.screenshot(path=str(screenshots / "signature-message.png"), full_page=True)


def test_apply_for_a_template_and_send_by_it(
    page: Any, server: Server, users: None, screenshots: Path
) -> None:
    _log_in(page, CUSTOMER)
    page.click("a.nav-item[href='/console/signatures']")
    page.click("[data-compliance-tab=message_templates]")
    page.click("a[href='/console/message-templates/new']")
    page.fill("#tpl-name", "取餐码")
    page.select_option("#tpl-type", "verification")
    page.fill("#tpl-body", "您的取餐码是${code，请到前台取餐。")
    page.fill("#tpl-variables", "code code 4-4")
    page.click("#template-form button[type=submit]")
    expect(page.locator('.field:has(#tpl-body) [data-error-for="body"]')).to_contain_text("position 6")
    page.fill("#tpl-body", "您的取餐码是${code}，请到前台取餐。")
    page.screenshot(path=str(screenshots / "template-apply.png"), full_page=True)
    page.click("#template-form button[type=submit]")
    expect(page.locator(".flash-success")).to_contain_text("取餐码")
    expect(page.locator("tr[data-template] [data-review-status]")).to_have_text("审核中")
    page.screenshot(path=str(screenshots / "template-list.png"), full_page=True)
    _log_out(page)

    _log_in(page, REVIEWER)
    page.goto("/console/review/templates")
    page.locator("tr[data-template]", has_text="取餐码").locator("a.btn").click()
    expect(page.locator("[data-example]")).to_have_text("您的取餐码是4821，请到前台取餐。")
    page.screenshot(path=str(screenshots / "template-review.png"), full_page=True)
    page.click("button[data-action=approve]")
    expect(page.locator(".flash-success")).to_contain_text("已通过 取餐码")
    _log_out(page)

    _log_in(page, CUSTOMER)
    page.click("a.nav-item[href='/console/send']")
    page.fill("#recipients", "13800000002")
    page.click("label.segmented-option:has(input[name=content_mode][value=template])")
    expect(page.locator("#text")).to_be_hidden()
    page.select_option("#template_id", label="取餐码 · 验证码")
    code = page.locator(".template-params:not([hidden]) input")
    expect(code).to_have_count(1)
    code.fill("12a4")
    expect(page.locator("#send-preview .rejected-table")).to_contain_text("变量值不符合类型")
    code.fill("0815")
    sample = page.locator("#send-preview .sms-sample .sms-bubble").first
    expect(sample).to_contain_text("您的取餐码是0815，请到前台取餐。")
    page.screenshot(path=str(screenshots / "template-send.png"), full_page=True)
    page.click("button[value=review]")
    page.click("#confirm-send")
    expect(page).to_have_url(re.compile(r"/console/messages\?batch=bat_"))
    page.locator("#message-rows tr[data-id] a").first.click()
    expect(page.locator(".sms-bubble")).to_contain_text("您的取餐码是0815，请到前台取餐。")
