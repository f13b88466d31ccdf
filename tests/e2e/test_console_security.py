"""Sign up in real Chromium, read the verification email in the staff outbox, verify, turn on two-step
verification with the key typed into an "authenticator" (pyotp), and sign in again with a code.

Screenshots: tests/e2e/screenshots/security-*.png.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyotp
import pytest
from playwright.sync_api import expect

if TYPE_CHECKING:
    from e2e.conftest import Server

pytestmark = pytest.mark.e2e

EMAIL = "chen@example.cn"
PASSWORD = "Jade-mountain 42"


def _log_in(page: Any, email: str, password: str) -> None:
    page.goto("/console/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("form[action='/console/login'] button[type=submit]")


def _log_out(page: Any) -> None:
    page.click("form.logout button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/login$"))


def test_sign_up_verify_and_sign_in_with_two_step_verification(page: Any, server: Server, screenshots: Path) -> None:
    # sign up
    page.goto("/console/login")
    page.click("a[href='/console/signup']")
    page.fill("#company_name", "陈氏物流")
    page.fill("#email", EMAIL)
    page.fill("#password", "password123")
    page.fill("#confirm", "password123")
    page.click("form[action='/console/signup'] button[type=submit]")
    expect(page.locator('[data-error-for="password"]')).to_contain_text("密码太常见")
    page.screenshot(path=str(screenshots / "security-signup-error.png"))
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.click("form[action='/console/signup'] button[type=submit]")
    expect(page.locator("h1")).to_have_text("请查收确认邮件")

    # the platform administrator finds the email in the outbox (no mail server in the embedded setup)
    _log_in(page, server.email, server.password)
    expect(page).to_have_url(re.compile(r"/console$"))
    page.click("a.nav-item[href='/console/outbox']")
    row = page.locator("tr", has_text=EMAIL).first
    expect(row).to_be_visible()
    page.screenshot(path=str(screenshots / "security-outbox.png"))
    row.locator("a").click()
    body = page.locator("#email-body pre").inner_text()
    link = re.search(r"(/console/verify-email\?token=[A-Za-z0-9_-]+)", body)
    assert link, body
    _log_out(page)

    page.goto(link.group(1))
    expect(page.locator("h1")).to_have_text("邮箱已验证")

    # the new owner turns on two-step verification
    _log_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(re.compile(r"/console$"))
    expect(page.locator('[data-banner="unverified"]')).to_have_count(0)
    page.click("a.nav-item[href='/console/security']")
    expect(page.locator("[data-mfa=off]")).to_be_visible()
    page.screenshot(path=str(screenshots / "security-page.png"), full_page=True)
    page.click("a[href='/console/security/mfa']")
    expect(page.locator("#mfa-qr")).to_be_visible()
    secret = page.locator("#mfa-secret").input_value()
    page.screenshot(path=str(screenshots / "security-mfa-enrol.png"), full_page=True)
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("form[action='/console/security/mfa'] button[type=submit]")
    codes = page.locator("[data-recovery-code]")
    expect(codes).to_have_count(10)
    page.screenshot(path=str(screenshots / "security-recovery-codes.png"), full_page=True)
    page.click("a.btn[href='/console/security']")
    expect(page.locator("[data-mfa=on]")).to_be_visible()
    _log_out(page)

    # signing in now takes the password and then a code
    _log_in(page, EMAIL, PASSWORD)
    expect(page).to_have_url(re.compile(r"/console/login/mfa"))
    page.fill("#code", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    page.click("form[action='/console/login/mfa'] button[type=submit]")
    expect(page.locator('[data-error-for="code"]')).to_contain_text("验证码不正确")
    page.screenshot(path=str(screenshots / "security-mfa-login.png"))
    # the enrolment code's time step is spent; the next step's code is within the accepted drift
    page.fill("#code", pyotp.TOTP(secret).at(time.time() + 30))
    page.click("form[action='/console/login/mfa'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console$"))
    expect(page.locator(".who-email")).to_have_text(EMAIL)
