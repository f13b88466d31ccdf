"""Console sign-up, verification, password reset, throttled sign-in, the MFA step, forced enrolment, the
Security page and the staff outbox, over HTTP (ASGI) on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from console_pages import csrf_of, field_error
from hongyan.accounts import mfa
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account, EmailMessage, User
from hongyan.db.engine import Database
from support import AccountFixture

PASSWORD = "Blue-river 2024"


@pytest.fixture
async def browser(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers={"Accept-Language": "zh-CN"}
    ) as client:
        yield client


async def _post(client: httpx.AsyncClient, page: str, url: str, data: dict[str, str]) -> httpx.Response:
    form = await client.get(page)
    return await client.post(url, data={**data, "csrf_token": csrf_of(form.text)})


async def _user(db: Database, account: AccountFixture, email: str = "wang@example.cn", **kw: Any) -> str:
    async with db.write() as session:
        user = await accounts.create_user(session, email=email, password=PASSWORD, account_id=account.account_id, **kw)
    return user.id


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await _post(client, "/console/login", "/console/login", {"email": email, "password": password})


async def _link(db: Database, kind: str, path: str) -> str:
    async with db.read() as session:
        email = await session.scalar(
            select(EmailMessage).where(EmailMessage.kind == kind).order_by(EmailMessage.created_at.desc()).limit(1)
        )
    assert email is not None
    match = re.search(rf"http://\S+({re.escape(path)}\?token=[A-Za-z0-9_-]+)", email.body_text)
    assert match, email.body_text
    return match.group(1)


async def test_signup_outbox_verify_login(browser: httpx.AsyncClient, db: Database) -> None:
    page = await browser.get("/console/login")
    assert 'href="/console/signup"' in page.text and 'href="/console/forgot-password"' in page.text
    response = await _post(browser, "/console/signup", "/console/signup", {
        "company_name": "王氏科技", "email": "Wang@Example.cn", "password": PASSWORD, "confirm": PASSWORD,
    })
    assert response.status_code == 200 and "wang@example.cn" in response.text and "请查收确认邮件" in response.text
    link = await _link(db, "verify_email", "/console/verify-email")

    # unverified: the console opens, with a banner offering a new email
    assert (await _login(browser, "wang@example.cn")).status_code == 303
    dashboard = await browser.get("/console")
    assert dashboard.status_code == 200 and 'data-banner="unverified"' in dashboard.text
    resent = await browser.post("/console/verify-email/resend", data={"csrf_token": csrf_of(dashboard.text),
                                                                       "next": "/console/messages"})
    assert resent.status_code == 303 and resent.headers["location"] == "/console/messages"
    async with db.read() as session:
        count = len((await session.scalars(select(EmailMessage.id).where(EmailMessage.kind == "verify_email"))).all())
    assert count == 2

    verified = await browser.get(link)
    assert verified.status_code == 200 and "邮箱已验证" in verified.text
    again = await browser.get(link)
    assert again.status_code == 400 and field_error(again.text, "token").startswith("链接无效或已过期")
    assert 'data-banner="unverified"' not in (await browser.get("/console")).text
    async with db.read() as session:
        user = await session.scalar(select(User).where(User.email == "wang@example.cn"))
        account = await accounts.primary_account_for(session, user.id) if user else None
    assert user is not None and user.email_verified_at is not None and account is not None
    assert account.name == "王氏科技"


async def test_signup_errors_next_to_fields_and_csrf(browser: httpx.AsyncClient, app: Any) -> None:
    weak = await _post(browser, "/console/signup", "/console/signup", {
        "company_name": "A", "email": "a@example.cn", "password": "password123", "confirm": "password123",
    })
    assert weak.status_code == 422
    assert field_error(weak.text, "password").startswith("密码太常见")
    assert "most used" in field_error(weak.text, "password")  # the API's own message as detail
    mismatch = await _post(browser, "/console/signup", "/console/signup", {
        "company_name": "A", "email": "a@example.cn", "password": PASSWORD, "confirm": PASSWORD + "x",
    })
    assert field_error(mismatch.text, "confirm") == "两次输入的密码不一致。"
    no_company = await _post(browser, "/console/signup", "/console/signup", {
        "company_name": "", "email": "a@example.cn", "password": PASSWORD, "confirm": PASSWORD,
    })
    assert field_error(no_company.text, "company_name") == "请输入公司名称。 Enter the name of your company."
    forged = await browser.post("/console/signup", data={
        "company_name": "A", "email": "b@example.cn", "password": PASSWORD, "confirm": PASSWORD,
    })
    assert forged.status_code == 403
    app.state.settings = app.state.settings.model_copy(update={"registration": "invite"})
    closed = await browser.get("/console/signup")
    assert closed.status_code == 403 and "邀请" in closed.text
    assert 'href="/console/signup"' not in (await browser.get("/console/login")).text


async def test_forgot_and_reset_password(browser: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _user(db, account)
    other = await _post(browser, "/console/forgot-password", "/console/forgot-password", {"email": "nobody@x.cn"})
    sent = await _post(browser, "/console/forgot-password", "/console/forgot-password", {"email": "wang@example.cn"})
    assert other.status_code == sent.status_code == 200
    assert other.text.replace("nobody@x.cn", "E") == sent.text.replace("wang@example.cn", "E").replace(
        csrf_of(sent.text) if "csrf" in sent.text else "", "")  # same page: existence is not revealed
    link = await _link(db, "reset_password", "/console/reset-password")
    form = await browser.get(link)
    assert form.status_code == 200
    token = link.split("token=")[1]
    weak = await browser.post("/console/reset-password", data={
        "token": token, "password": "abcdefghijkl", "confirm": "abcdefghijkl", "csrf_token": csrf_of(form.text)})
    assert weak.status_code == 422 and field_error(weak.text, "password").startswith("密码太简单")
    done = await browser.post("/console/reset-password", data={
        "token": token, "password": "New-password 77", "confirm": "New-password 77", "csrf_token": csrf_of(form.text)})
    assert done.status_code == 303 and done.headers["location"] == "/console/login"
    assert "密码已更新，请使用新密码登录。" in (await browser.get("/console/login")).text  # the flash is shown
    assert (await browser.get(link)).status_code == 400  # used
    assert (await _login(browser, "wang@example.cn")).status_code == 401
    assert (await _login(browser, "wang@example.cn", "New-password 77")).status_code == 303


async def test_password_reset_ends_other_sessions(app: Any, browser: httpx.AsyncClient, db: Database,
                                                  account: AccountFixture) -> None:
    user_id = await _user(db, account)
    assert (await _login(browser, "wang@example.cn")).status_code == 303
    assert (await browser.get("/console")).status_code == 200
    async with db.write() as session:
        await session.execute(update(User).where(User.id == user_id).values(
            password_hash=accounts.hash_password("Changed-elsewhere 1")))
    assert (await browser.get("/console")).status_code == 303


async def test_lockout_in_the_console(app: Any, browser: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    app.state.settings = app.state.settings.model_copy(update={"login_max_failures": 3, "login_lockout_s": 120})
    await _user(db, account)
    statuses = [(await _login(browser, "wang@example.cn", "wrong password")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]  # the third failure starts the lockout and says so
    locked = await _login(browser, "wang@example.cn")  # the right password, refused while locked
    assert locked.status_code == 429 and 100 <= int(locked.headers["Retry-After"]) <= 120
    assert field_error(locked.text, "email") == "登录失败次数过多，请在 2 分钟后再试。"
    assert (await browser.get("/console")).status_code == 303  # not signed in


async def _enrol(db: Database, user_id: str) -> str:
    secret = pyotp.random_base32()
    past = time.time() - 90  # enrolled a few steps ago: the current code is unused
    async with db.write() as session:
        await mfa.confirm_enrolment(session, user_id, secret, pyotp.TOTP(secret).at(past), now=past)
    return secret


async def test_login_with_mfa_second_step(browser: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    user_id = await _user(db, account)
    secret = await _enrol(db, user_id)
    first = await _post(browser, "/console/login?next=/console/keys", "/console/login",
                        {"email": "wang@example.cn", "password": PASSWORD, "next": "/console/keys"})
    assert first.status_code == 303 and first.headers["location"].startswith("/console/login/mfa")
    probe = httpx.AsyncClient(transport=browser._transport, base_url="http://testserver", cookies=browser.cookies)
    async with probe:
        assert (await probe.get("/console")).status_code == 303  # the password alone does not sign in
    step = await browser.get(first.headers["location"])
    assert step.status_code == 200 and 'name="code"' in step.text
    wrong = await browser.post("/console/login/mfa", data={"code": "000000" if pyotp.TOTP(secret).now() != "000000"
                                                           else "111111", "next": "/console/keys",
                                                           "csrf_token": csrf_of(step.text)})
    assert wrong.status_code == 401 and field_error(wrong.text, "code").startswith("验证码不正确")
    used = pyotp.TOTP(secret).now()
    ok = await browser.post("/console/login/mfa", data={"code": used, "next": "/console/keys",
                                                        "csrf_token": csrf_of(step.text)})
    assert ok.status_code == 303 and ok.headers["location"] == "/console/keys"
    assert (await browser.get("/console/keys")).status_code == 200
    # the same code cannot open a second session
    await browser.post("/console/logout", data={"csrf_token": csrf_of((await browser.get("/console")).text)})
    first = await _login(browser, "wang@example.cn")
    step = await browser.get(first.headers["location"])
    # the code used above, not the current one: on a slow machine a new 30 s step may have begun since
    replay = await browser.post("/console/login/mfa", data={"code": used, "csrf_token": csrf_of(step.text)})
    assert replay.status_code == 401


async def test_mfa_step_without_password_goes_to_login(browser: httpx.AsyncClient) -> None:
    assert (await browser.get("/console/login/mfa")).headers["location"] == "/console/login"


async def test_require_mfa_forces_enrolment(browser: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _user(db, account)
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account.account_id).values(require_mfa=True))
    login = await _login(browser, "wang@example.cn")
    assert login.status_code == 303 and login.headers["location"] == "/console/security/mfa"
    blocked = await browser.get("/console/keys")
    assert blocked.status_code == 303 and blocked.headers["location"] == "/console/security/mfa"
    fetch = await browser.get("/console/messages", headers={"X-Console-Fetch": "1"})
    assert fetch.status_code == 403 and fetch.json()["error"]["code"] == "mfa_required"
    page = await browser.get("/console/security/mfa")
    assert page.status_code == 200 and 'src="data:image/svg+xml' in page.text
    secret = re.search(r'name="secret" value="([A-Z2-7]+)"', page.text)
    assert secret
    bad = await browser.post("/console/security/mfa", data={"secret": secret.group(1), "code": "12345",
                                                            "csrf_token": csrf_of(page.text)})
    assert bad.status_code == 422 and field_error(bad.text, "code").startswith("验证码不正确")
    assert secret.group(1) in bad.text  # the same secret again: the app already has it
    done = await browser.post("/console/security/mfa", data={
        "secret": secret.group(1), "code": pyotp.TOTP(secret.group(1)).now(), "csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and done.text.count("data-recovery-code") == 10
    assert (await browser.get("/console/keys")).status_code == 200


async def test_security_page(browser: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _user(db, account)
    await _login(browser, "wang@example.cn")
    page = await browser.get("/console/security")
    assert page.status_code == 200 and 'href="/console/security"' in page.text and 'data-mfa="off"' in page.text
    assert 'name="require_mfa"' in page.text  # the owner may require MFA
    wrong = await browser.post("/console/security/password", data={
        "current_password": "nope", "password": "New-password 77", "confirm": "New-password 77",
        "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 422 and field_error(wrong.text, "current_password").startswith("当前密码不正确")
    require = await browser.post("/console/security/require-mfa", data={"require_mfa": "on",
                                                                        "csrf_token": csrf_of(page.text)})
    assert field_error(require.text, "require_mfa").startswith("请先为自己开启两步验证")
    changed = await browser.post("/console/security/password", data={
        "current_password": PASSWORD, "password": "New-password 77", "confirm": "New-password 77",
        "csrf_token": csrf_of(page.text)})
    assert changed.status_code == 303
    after = await browser.get("/console/security")  # this browser stays signed in (session renewed)
    assert after.status_code == 200 and "密码已修改" in after.text


async def test_outbox_is_for_staff_only(app: Any, db: Database, account: AccountFixture) -> None:
    async with db.write() as session:
        await accounts.create_user(session, email="customer@example.cn", password=PASSWORD,
                                   account_id=account.account_id)
        await accounts.create_user(session, email="support@hongyan.local", password=PASSWORD,
                                   account_id=account.account_id, platform_role="support")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anonymous:
        await _post(anonymous, "/console/forgot-password", "/console/forgot-password", {"email": "customer@example.cn"})
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as customer:
        await _login(customer, "customer@example.cn")
        assert (await customer.get("/console/outbox")).status_code == 403
        assert 'href="/console/outbox"' not in (await customer.get("/console")).text
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as staff:
        await _login(staff, "support@hongyan.local")
        listing = await staff.get("/console/outbox")
        assert listing.status_code == 200 and "customer@example.cn" in listing.text
        assert 'href="/console/outbox"' in (await staff.get("/console")).text
        email_id = re.search(r'href="/console/outbox/(eml_[^"]+)"', listing.text)
        assert email_id
        body = await staff.get(f"/console/outbox/{email_id.group(1)}")
        assert body.status_code == 200 and "/console/reset-password?token=" in body.text


async def test_sign_ins_and_lockouts_are_in_the_audit_log(app: Any, db: Database, account: AccountFixture,
                                                          settings: Any) -> None:
    """Security events for the account: each sign-in (with its method) and the lockout, with the IP."""
    from console_pages import EMAIL, signed_in_client
    from hongyan.audit.models import AuditEntry

    await signed_in_client(app, db, account, "en")  # one good sign-in
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 1)),
                                 base_url="http://testserver") as browser:
        for _ in range(settings.login_max_failures):
            token = csrf_of((await browser.get("/console/login")).text)
            await browser.post("/console/login", data={"email": EMAIL, "password": "wrong password!", "csrf_token": token})
    async with db.read() as session:
        entries = list(await session.scalars(select(AuditEntry).where(AuditEntry.action.startswith("user."))
                                             .order_by(AuditEntry.seq)))
    assert [e.action for e in entries] == ["user.signed_in", "user.locked_out"]
    signed_in, locked = entries
    assert signed_in.account_id == account.account_id and signed_in.after == {"method": "password"}
    assert locked.account_id == account.account_id and locked.ip == "198.51.100.9"
    assert locked.after is not None and locked.after["seconds"] == settings.login_lockout_s
