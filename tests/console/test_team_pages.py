"""Team, invitation and sub-account pages; roles enforced on the existing pages (403 page naming the
permission, nav links hidden)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select

from console_pages import PASSWORD, csrf_of, field_error
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account, EmailMessage, Membership, User
from hongyan.db.engine import Database
from support import AccountFixture, make_account


def _browser(app: Any, lang: str = "en") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             headers={"Accept-Language": lang})


@asynccontextmanager
async def _member(app: Any, db: Database, account: AccountFixture, role: str,
                  lang: str = "en") -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in as a new member with `role`."""
    email = f"{role}@example.com"
    async with db.write() as session:
        await accounts.create_user(session, email=email, password=PASSWORD, account_id=account.account_id, role=role)
    async with _browser(app, lang) as browser:
        login = await browser.get("/console/login")
        r = await browser.post("/console/login", data={"email": email, "password": PASSWORD,
                                                       "csrf_token": csrf_of(login.text)})
        assert r.status_code == 303, r.text
        yield browser


def _nav(page: str) -> set[str]:
    nav = page.split('<nav class="nav"', 1)[1].split("</nav>", 1)[0]
    return set(re.findall(r'href="(/console[^"]*)"', nav))


async def test_viewer_reads_but_cannot_send_or_manage_keys(app: Any, db: Database, account: AccountFixture) -> None:
    async with _member(app, db, account, "viewer") as browser:
        home = await browser.get("/console")
        assert home.status_code == 200
        nav = _nav(home.text)
        assert {"/console/messages", "/console/billing", "/console/team"} <= nav
        assert not nav & {"/console/send", "/console/keys", "/console/webhooks", "/console/sub-accounts", "/console/audit"}
        for url in ("/console/send", "/console/keys", "/console/webhooks", "/console/sub-accounts", "/console/audit"):
            r = await browser.get(url)
            assert r.status_code == 403, url
            assert 'data-code="permission_denied"' in r.text and "Your role does not allow you to" in r.text
        token = csrf_of(home.text)
        r = await browser.post("/console/keys", data={"csrf_token": token, "name": "sneaky", "scopes": "send"})
        assert r.status_code == 403
        r = await browser.post("/console/send", data={"csrf_token": token, "to": "13800138000", "text": "hi"})
        assert r.status_code == 403
        r = await browser.post("/console/api/preview", data={"csrf_token": token, "text": "hi"},
                               headers={"X-Console-Fetch": "1"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert (await browser.get("/console/messages")).status_code == 200
        assert (await browser.get("/console/billing")).status_code == 200
        team = await browser.get("/console/team")
        assert team.status_code == 200 and 'action="/console/team/invite"' not in team.text
    async with db.read() as session:
        assert await session.scalar(select(User.id).join(Membership).where(Membership.role == "viewer"))
        from hongyan.accounts.models import ApiKey
        assert not await session.scalar(select(ApiKey.id).where(ApiKey.name == "sneaky"))


async def test_finance_and_developer(app: Any, db: Database, account: AccountFixture) -> None:
    async with _member(app, db, account, "finance", "zh-CN") as browser:
        assert (await browser.get("/console/billing")).status_code == 200
        r = await browser.get("/console/keys")
        assert r.status_code == 403 and "管理 API 密钥" in r.text
        assert (await browser.get("/console/send")).status_code == 403
    async with _member(app, db, account, "developer") as browser:
        assert (await browser.get("/console/keys")).status_code == 200
        assert (await browser.get("/console/send")).status_code == 200
        assert (await browser.get("/console/webhooks")).status_code == 200
        page = await browser.get("/console/billing")
        assert page.status_code == 200
        token = csrf_of(page.text)
        assert (await browser.post("/console/billing/recharge", data={"csrf_token": token, "amount": "100"})).status_code == 403
        r = await browser.post("/console/team/invite", data={"csrf_token": token, "email": "x@example.com", "role": "viewer"})
        assert r.status_code == 403


async def test_invite_through_the_console_and_accept_as_new_user(app: Any, db: Database, account: AccountFixture) -> None:
    async with _member(app, db, account, "owner") as owner:
        page = await owner.get("/console/team")
        assert page.status_code == 200 and "owner@example.com" in page.text
        r = await owner.post("/console/team/invite", data={"csrf_token": csrf_of(page.text), "email": "new@example.com",
                                                           "role": "developer"})
        assert r.status_code == 303
        page = await owner.get("/console/team")
        assert "Invitation sent to new@example.com" in page.text and 'data-table="invitations"' in page.text
        assert "new@example.com" in page.text.split('data-table="invitations"', 1)[1]
        # an unknown role is shown next to the field
        r = await owner.post("/console/team/invite", data={"csrf_token": csrf_of(page.text), "email": "x@example.com",
                                                           "role": "god"})
        assert r.status_code == 422 and "Unknown role" in field_error(r.text, "role")
    async with db.read() as session:
        email = await session.scalar(select(EmailMessage).where(EmailMessage.to_address == "new@example.com"))
    assert email is not None and email.kind == "invite"
    match = re.search(r"/console/invite\?token=([A-Za-z0-9_\-%]+)", email.body_text)
    assert match
    invite_url = match.group(0)
    async with _browser(app) as newcomer:
        page = await newcomer.get(invite_url)
        assert page.status_code == 200 and 'name="password"' in page.text and "Acme" in page.text
        r = await newcomer.post("/console/invite", data={"csrf_token": csrf_of(page.text), "token": match.group(1),
                                                         "password": "short", "display_name": "Neo"})
        assert r.status_code == 422 and field_error(r.text, "password")
        r = await newcomer.post("/console/invite", data={"csrf_token": csrf_of(r.text), "token": match.group(1),
                                                         "password": PASSWORD, "display_name": "Neo"})
        assert r.status_code == 303 and r.headers["location"] == "/console"
        home = await newcomer.get("/console")
        assert home.status_code == 200 and "Welcome to Acme" in home.text
        assert "/console/keys" in _nav(home.text) and "/console/sub-accounts" not in _nav(home.text)
        # the link is spent
        spent = await newcomer.get(invite_url)
        assert spent.status_code == 400 and 'data-error-for="token"' in spent.text


async def test_invite_for_an_existing_user_asks_to_sign_in(app: Any, db: Database, account: AccountFixture) -> None:
    other = await make_account(db, name="Other")
    async with db.write() as session:
        await accounts.create_user(session, email="ann@example.com", password=PASSWORD, account_id=other.account_id)
    async with _member(app, db, account, "owner") as owner:
        page = await owner.get("/console/team")
        await owner.post("/console/team/invite", data={"csrf_token": csrf_of(page.text), "email": "ann@example.com",
                                                       "role": "finance"})
    async with db.read() as session:
        email = await session.scalar(select(EmailMessage).where(EmailMessage.to_address == "ann@example.com"))
    assert email is not None
    invite_url = re.search(r"/console/invite\?token=[A-Za-z0-9_\-%]+", email.body_text).group(0)  # type: ignore[union-attr]
    async with _browser(app) as ann:
        page = await ann.get(invite_url)
        assert 'name="password"' not in page.text and "/console/login?next=" in page.text
        login = await ann.get(re.search(r'href="(/console/login\?next=[^"]+)"', page.text).group(1))  # type: ignore[union-attr]
        r = await ann.post(login.url.path + "?" + login.url.query.decode(),
                           data={"email": "ann@example.com", "password": PASSWORD, "csrf_token": csrf_of(login.text),
                                 "next": invite_url})
        assert r.status_code == 303
        page = await ann.get(invite_url)
        assert "Accept invitation" in page.text
        r = await ann.post("/console/invite", data={"csrf_token": csrf_of(page.text),
                                                    "token": invite_url.split("token=", 1)[1]})
        assert r.status_code == 303
        home = await ann.get("/console")
        assert "Acme" in home.text  # now working in the account that invited her
    async with db.read() as session:
        roles = dict((await session.execute(select(Membership.account_id, Membership.role)
                                            .join(User).where(User.email == "ann@example.com"))).all())
    assert roles == {other.account_id: "owner", account.account_id: "finance"}


async def test_team_page_changes_roles_and_removes(app: Any, db: Database, account: AccountFixture) -> None:
    async with _member(app, db, account, "admin") as admin:
        async with db.write() as session:
            dev = await accounts.create_user(session, email="dev@example.com", password=PASSWORD,
                                             account_id=account.account_id, role="developer")
            boss = await accounts.create_user(session, email="boss@example.com", password=PASSWORD,
                                              account_id=account.account_id, role="owner")
        page = await admin.get("/console/team")
        assert f'action="/console/team/{dev.id}/role"' in page.text
        assert f'action="/console/team/{boss.id}/role"' not in page.text  # an admin cannot touch owners
        assert '<option value="owner"' not in page.text
        token = csrf_of(page.text)
        r = await admin.post(f"/console/team/{dev.id}/role", data={"csrf_token": token, "role": "finance"})
        assert r.status_code == 303
        r = await admin.post(f"/console/team/{boss.id}/remove", data={"csrf_token": token})
        assert r.status_code == 303
        page = await admin.get("/console/team")
        assert "Only an owner can remove an owner." in page.text
        r = await admin.post(f"/console/team/{dev.id}/remove", data={"csrf_token": token})
        assert r.status_code == 303
    async with db.read() as session:
        roles = {u: r for u, r in (await session.execute(select(Membership.user_id, Membership.role)
                                                         .where(Membership.account_id == account.account_id))).all()}
    assert roles.get(boss.id) == "owner" and dev.id not in roles


async def test_sub_accounts_page(app: Any, db: Database, account: AccountFixture) -> None:
    async with _member(app, db, account, "owner") as owner:
        page = await owner.get("/console/sub-accounts")
        assert page.status_code == 200
        token = csrf_of(page.text)
        r = await owner.post("/console/sub-accounts", data={"csrf_token": token, "name": "", "spend_limit": "50"})
        assert r.status_code == 422 and field_error(r.text, "name")
        r = await owner.post("/console/sub-accounts", data={"csrf_token": token, "name": "Shop SZ", "spend_limit": "50",
                                                            "spend_limit_period": "day"})
        assert r.status_code == 303
        async with db.read() as session:
            sub = await session.scalar(select(Account).where(Account.parent_id == account.account_id))
        assert sub is not None and (sub.spend_limit_micros, sub.spend_limit_period) == (50_000_000, "day")
        r = await owner.post(f"/console/sub-accounts/{sub.id}", data={"csrf_token": token, "name": "Shop SZ",
                                                                      "spend_limit": "80", "spend_limit_period": "month"})
        assert r.status_code == 303
        r = await owner.post(f"/console/sub-accounts/{sub.id}/status", data={"csrf_token": token, "status": "suspended"})
        assert r.status_code == 303
        r = await owner.post(f"/console/sub-accounts/{sub.id}/keys", data={"csrf_token": token, "name": "pos",
                                                                           "scopes": ["send", "read"]})
        assert r.status_code == 200
        shown = re.search(r'value="(key_[A-Za-z0-9]+\.[^"]+)"', r.text)
        assert shown, "the new key is shown once"
        page = await owner.get("/console/sub-accounts")
        assert shown.group(1) not in page.text and "Suspended" in page.text and "¥80.00" in page.text
    async with db.read() as session:
        sub = await session.get(Account, sub.id)
    assert sub is not None and (sub.status, sub.spend_limit_micros, sub.spend_limit_period) == ("suspended", 80_000_000, "month")
    # the sub-account's key belongs to the sub-account, which is suspended: refused
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 headers={"Authorization": f"Bearer {shown.group(1)}"}) as api:
        assert (await api.get("/v1/messages")).status_code == 401
