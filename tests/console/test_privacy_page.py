"""Privacy console page: look up a number, download its export, erase it after typing it again, retention."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from console_pages import PASSWORD, csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from support import AccountFixture, wait_until

ALICE = "+8613800000001"


async def _sent(client: httpx.AsyncClient, db: Database, to: str, text: str) -> str:
    r = await client.post("/v1/messages", json={"to": to, "text": text})
    assert r.status_code == 202, r.text
    mid = r.json()["id"]

    async def final() -> bool:
        async with db.read() as session:
            return await session.scalar(select(Message.done_at).where(Message.id == mid)) is not None

    await wait_until(final, message="message final")
    return str(mid)


async def test_lookup_export_and_erase(app: Any, db: Database, account: AccountFixture,
                                       client: httpx.AsyncClient) -> None:
    await _sent(client, db, ALICE, "private words")
    await _sent(client, db, "+8613800000011", "for someone else")
    browser = await signed_in_client(app, db, account, lang="en")
    async with aclosing(browser):
        page = await browser.get("/console/privacy")
        assert page.status_code == 200
        assert 'href="/console/privacy"' in page.text.split('<nav class="nav"', 1)[1].split("</nav>", 1)[0]
        token = csrf_of(page.text)

        bad = await browser.post("/console/privacy/lookup", data={"csrf_token": token, "number": "12345"})
        assert bad.status_code == 422 and "not a valid phone number" in field_error(bad.text, "number")

        found = await browser.post("/console/privacy/lookup", data={"csrf_token": token, "number": "13800000001"})
        assert found.status_code == 200
        summary = text_of(found.text.split("data-summary>", 1)[1].split("</p>", 1)[0])
        assert summary.startswith(f"{ALICE}: 1 messages, 0 replies")

        export = await browser.post("/console/privacy/export", data={"csrf_token": token, "number": ALICE})
        assert export.status_code == 200 and export.headers["content-type"].startswith("application/json")
        assert "attachment" in export.headers["content-disposition"]
        document = orjson.loads(export.content)
        assert [m["text"] for m in document["messages"]] == ["private words"]

        # the second typing must name the same number
        wrong = await browser.post("/console/privacy/erase", data={"csrf_token": token, "number": ALICE,
                                                                   "confirm_number": "+8613800000011"})
        assert wrong.status_code == 422
        assert "Type the same number again" in field_error(wrong.text, "confirm_number")
        async with db.read() as session:
            assert await session.scalar(select(Message.body).where(Message.to_number != "")) is not None
        done = await browser.post("/console/privacy/erase", data={"csrf_token": token, "number": ALICE,
                                                                  "confirm_number": "138 0000 0001"})
        assert done.status_code == 303
        after = await browser.get("/console/privacy")
        assert "Erased: 1 messages and 0 replies" in after.text

        export = await browser.post("/console/privacy/export", data={"csrf_token": token, "number": ALICE})
        assert orjson.loads(export.content)["messages"] == []
    async with db.read() as session:
        bodies = sorted((await session.scalars(select(Message.body))).all())
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "privacy.erased"))
    assert bodies == ["", "for someone else"]
    assert entry is not None and entry.actor_type == "user" and entry.target_type == "phone_number"


async def test_retention_form(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, lang="zh-CN")
    async with aclosing(browser):
        page = await browser.get("/console/privacy")
        token = csrf_of(page.text)
        assert "短信内容一直保存" in page.text
        for bad in ("0", "abc", "4000"):
            r = await browser.post("/console/privacy/retention", data={"csrf_token": token, "retention_days": bad})
            assert r.status_code == 422 and field_error(r.text, "retention_days").startswith("保存期限无效")
        r = await browser.post("/console/privacy/retention", data={"csrf_token": token, "retention_days": "90"})
        assert r.status_code == 303
        page = await browser.get("/console/privacy")
        assert "保存期限已更新" in page.text and "短信内容在发送 90 天后清除" in page.text
        async with db.read() as session:
            assert (await session.get(Account, account.account_id)).retention_days == 90  # type: ignore[union-attr]
        r = await browser.post("/console/privacy/retention", data={"csrf_token": token, "retention_days": ""})
        async with db.read() as session:
            assert (await session.get(Account, account.account_id)).retention_days is None  # type: ignore[union-attr]
            changes = (await session.scalars(select(AuditEntry.after).where(
                AuditEntry.action == "account.retention_changed").order_by(AuditEntry.seq))).all()
        assert changes == [{"retention_days": 90}, {"retention_days": None}]


async def test_members_without_account_settings_are_refused(app: Any, db: Database, account: AccountFixture) -> None:
    email = "dev@example.com"
    async with db.write() as session:
        await accounts.create_user(session, email=email, password=PASSWORD, account_id=account.account_id,
                                   role="developer")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 headers={"Accept-Language": "en"}) as browser:
        login = await browser.get("/console/login")
        r = await browser.post("/console/login", data={"email": email, "password": PASSWORD,
                                                       "csrf_token": csrf_of(login.text)})
        assert r.status_code == 303
        home = await browser.get("/console")
        assert 'href="/console/privacy"' not in home.text
        assert (await browser.get("/console/privacy")).status_code == 403
        r = await browser.post("/console/privacy/erase", data={"csrf_token": csrf_of(home.text), "number": ALICE,
                                                               "confirm_number": ALICE})
        assert r.status_code == 403
        r = await browser.post("/console/privacy/retention", data={"csrf_token": csrf_of(home.text),
                                                                   "retention_days": "1"})
        assert r.status_code == 403
    async with db.read() as session:
        assert (await session.get(Account, account.account_id)).retention_days is None  # type: ignore[union-attr]
