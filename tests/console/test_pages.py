"""Console pages over HTTP (ASGI, no browser) on SQLite and PostgreSQL: sign-in, sessions, CSRF,
redirect safety, the send path and account isolation. The browser walk is in tests/e2e."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from hongyan.accounts import service
from hongyan.accounts.models import User
from hongyan.db.engine import Database
from hongyan.messaging.models import Batch
from support import AccountFixture, make_account, wait_until

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


@pytest.fixture
async def user(db: Database, account: AccountFixture) -> str:
    async with db.write() as session:
        created = await service.create_user(
            session, email=EMAIL, password=PASSWORD, account_id=account.account_id
        )
    return created.id


@pytest.fixture
async def browser(app: Any, user: str) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client that has not signed in yet (zh-CN unless a test says otherwise)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept-Language": "zh-CN"}
    ) as c:
        yield c


async def sign_in(c: httpx.AsyncClient, *, next_path: str = "") -> httpx.Response:
    page = await c.get("/console/login")
    return await c.post(
        "/console/login",
        data={"email": EMAIL, "password": PASSWORD, "next": next_path, "csrf_token": csrf_of(page.text)},
    )


@pytest.fixture
async def signed_in(browser: httpx.AsyncClient) -> httpx.AsyncClient:
    response = await sign_in(browser)
    assert response.status_code == 303, response.text
    return browser


async def test_root_and_pages_lead_to_the_login_form(browser: httpx.AsyncClient) -> None:
    assert (await browser.get("/")).headers["location"] == "/console"
    response = await browser.get("/console/messages?status=sent")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fmessages%3Fstatus%3Dsent"
    background = await browser.get("/console/messages/rows", headers={"X-Console-Fetch": "1"})
    assert background.status_code == 401  # console.js reloads, and the page redirects


async def test_sign_in_sets_a_protected_cookie_and_a_new_session(browser: httpx.AsyncClient) -> None:
    anonymous_token = csrf_of((await browser.get("/console/login")).text)
    response = await sign_in(browser, next_path="/console/keys")
    assert response.status_code == 303 and response.headers["location"] == "/console/keys"
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "hongyan_session=" in v
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    page = await browser.get("/console/keys")
    assert page.status_code == 200 and EMAIL in page.text
    assert csrf_of(page.text) != anonymous_token  # signing in rotates the session (no fixation)
    refused = await browser.post("/console/logout", data={"csrf_token": anonymous_token})
    assert refused.status_code == 403


async def test_wrong_password_is_reported_on_the_password_field(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/console/login")
    response = await browser.post(
        "/console/login",
        data={"email": EMAIL, "password": "wrong password!", "csrf_token": csrf_of(page.text)},
    )
    assert response.status_code == 401
    assert re.search(
        r'data-error-for="password" role="alert">\s*<span class="field-error-title">邮箱或密码不正确。',
        response.text,
    )
    assert (await browser.get("/console")).status_code == 303


async def test_posts_without_the_session_token_are_refused(signed_in: httpx.AsyncClient) -> None:
    assert (await signed_in.post("/console/keys", data={"name": "x", "scopes": "send"})).status_code == 403
    forged = await signed_in.post(
        "/console/keys", data={"name": "x", "scopes": "send", "csrf_token": "0" * 64}
    )
    assert forged.status_code == 403 and "页面已过期" in forged.text
    preview = await signed_in.post(
        "/console/api/preview", data={"text": "hi"}, headers={"X-Console-Fetch": "1"}
    )
    assert preview.status_code == 403


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "/v1/messages"]
)
async def test_redirects_stay_in_the_console(browser: httpx.AsyncClient, target: str) -> None:
    assert (await sign_in(browser, next_path=target)).headers["location"] == "/console"
    switched = await browser.get("/console/lang/en", params={"next": target})
    assert switched.headers["location"] == "/console"


async def test_language_cookie_and_accept_language(signed_in: httpx.AsyncClient) -> None:
    assert "<h1>概览</h1>" in (await signed_in.get("/console")).text
    english = await signed_in.get("/console", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert "<h1>Overview</h1>" in english.text and '<html lang="en">' in english.text
    await signed_in.get("/console/lang/en")
    assert "<h1>Overview</h1>" in (await signed_in.get("/console")).text  # the cookie beats the header


async def test_preview_counts_prices_and_lists_bad_recipients(signed_in: httpx.AsyncClient) -> None:
    token = csrf_of((await signed_in.get("/console/send")).text)
    response = await signed_in.post(
        "/console/api/preview",
        headers={"X-Console-Fetch": "1"},
        data={
            "csrf_token": token,
            "recipient_mode": "list",
            "recipients": "13800000001; 13800000002\n+8613800000002, 123",
            "text": "a" * 161,
            "message_type": "marketing",
        },
    )
    body = response.json()
    assert body["counter"] == {
        "characters": 161,
        "encoding": "GSM-7",
        "segments": 2,
        "units": 161,
        "unit_limit": 153,
        "units_remaining": 145,
        "price": "¥0.08",
    }
    assert body["totals"] == {"messages": 2, "rejected": 2, "segments": 4, "price": "¥0.16", "recipients": 4,
                              "cash": "¥0.16", "package_units": 0, "available": "¥1000000.00", "sufficient": True,
                              "shortfall": "¥0.00"}
    assert body["errors"] == {}
    assert 'data-code="duplicate_phone_number"' in body["preview_html"]
    assert "与第 2 个号码相同" in body["preview_html"]
    assert 'data-code="invalid_phone_number"' in body["preview_html"]


async def test_preview_while_typing_does_not_nag_about_empty_fields(signed_in: httpx.AsyncClient) -> None:
    token = csrf_of((await signed_in.get("/console/send")).text)
    body = (await signed_in.post("/console/api/preview", data={"csrf_token": token, "text": "你好"})).json()
    assert body["errors"] == {} and body["counter"]["encoding"] == "UCS-2"


async def test_review_shows_domain_errors_next_to_their_fields(signed_in: httpx.AsyncClient) -> None:
    token = csrf_of((await signed_in.get("/console/send")).text)
    response = await signed_in.post(
        "/console/send",
        data={"csrf_token": token, "recipients": "13800000001", "text": "   ", "action": "review"},
    )
    assert response.status_code == 422
    error = re.search(r'data-error-for="text" role="alert">(.*?)</p>', response.text, re.S)
    assert error and "请输入短信内容。" in error.group(1)
    assert "The message text is empty." in error.group(1)  # the API's own message, as the API says it


async def test_send_confirm_submits_one_batch_that_gets_delivered(
    signed_in: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    token = csrf_of((await signed_in.get("/console/send")).text)
    form = {
        "csrf_token": token,
        "recipient_mode": "table",
        "message_type": "notification",
        "table": "手机号,姓名\n13800000001,张三\n13800000001,重复\n13800000002,李四",
        "text": "{姓名}您好",
    }
    review = await signed_in.post("/console/send", data={**form, "action": "review"})
    assert review.status_code == 200 and 'data-confirm="messages">2<' in review.text
    async with db.read() as session:
        assert (await session.scalar(select(Batch.id))) is None  # reviewing sends nothing

    sent = await signed_in.post("/console/send", data={**form, "action": "confirm"})
    assert sent.status_code == 303
    batch_id = sent.headers["location"].removeprefix("/console/messages?batch=")
    async with db.read() as session:
        batch = await session.scalar(select(Batch).where(Batch.id == batch_id))
    assert batch is not None and batch.source == "console" and batch.account_id == account.account_id
    assert (batch.accepted_count, batch.rejected_count) == (2, 1)
    assert "已提交批次" in (await signed_in.get(sent.headers["location"])).text

    async def delivered_and_undelivered() -> bool:
        rows = (await signed_in.get(f"/console/messages/rows?batch={batch_id}")).text
        return sorted(re.findall(r'data-row-status="(\w+)"', rows)) == ["delivered", "undelivered"]

    await wait_until(delivered_and_undelivered, message="console rows reach their final statuses")
    rows = await signed_in.get(f"/console/messages/rows?batch={batch_id}")
    assert rows.headers.get("X-Console-Final") == "1"
    summary = await signed_in.get(f"/console/batches/{batch_id}/summary")
    assert summary.headers.get("X-Console-Final") == "1"  # polling stops once the batch is complete
    dashboard = await signed_in.get("/console")
    assert re.search(r'data-kpi="total">2<', dashboard.text)


async def test_another_accounts_message_is_not_found(
    signed_in: httpx.AsyncClient, app: Any, db: Database
) -> None:
    other = await make_account(db, name="Other")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=other.headers
    ) as api:
        created = (await api.post("/v1/messages", json={"to": "13800000001", "text": "secret"})).json()
    assert (await signed_in.get(f"/console/messages/{created['id']}")).status_code == 404
    assert (await signed_in.get(f"/console/batches/{created['batch_id']}")).status_code == 404
    rows = await signed_in.get(f"/console/messages/rows?batch={created['batch_id']}")
    assert "secret" not in rows.text


async def test_pages_carry_security_headers(signed_in: httpx.AsyncClient) -> None:
    response = await signed_in.get("/console/keys")
    assert response.headers["Cache-Control"] == "no-store"  # a created key's token must not be cached
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_a_password_change_ends_existing_sessions(signed_in: httpx.AsyncClient, db: Database) -> None:
    assert (await signed_in.get("/console")).status_code == 200
    async with db.write() as session:
        await session.execute(
            update(User)
            .where(User.email == EMAIL)
            .values(password_hash=service.hash_password("another password 123"))
        )
    assert (await signed_in.get("/console")).status_code == 303
    assert (await signed_in.get("/console/login")).status_code == 200  # the form, not a redirect loop


async def test_unknown_console_page_is_a_console_404(signed_in: httpx.AsyncClient) -> None:
    response = await signed_in.get("/console/nothing/here")
    assert response.status_code == 404 and "没有这个页面" in response.text


@pytest.mark.parametrize(
    ("action", "back", "message"),
    [
        ("/console/keys/key_01M8000000000000000000000A/revoke", "/console/keys", "没有这个有效的 API 密钥"),
        ("/console/webhooks/whk_01M8000000000000000000000A/disable", "/console/webhooks", "没有这个 Webhook 地址"),
    ],
)
async def test_failed_actions_come_back_with_the_error(
    signed_in: httpx.AsyncClient, action: str, back: str, message: str
) -> None:
    token = csrf_of((await signed_in.get(back)).text)
    r = await signed_in.post(action, data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == back
    page = await signed_in.get(back)
    assert message in page.text
