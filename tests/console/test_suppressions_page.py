"""Suppression list page: add numbers (bad ones stay in the box with their reason), search, remove, import
a file (refused rows listed by row number), export, opt-out settings with errors next to the field, and a
viewer who may look but not change."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx
from sqlalchemy import select

from console_pages import PASSWORD, csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.compliance.models import Suppression
from hongyan.compliance.settings import ComplianceSettings
from hongyan.db.engine import Database
from support import AccountFixture

ALICE = "+8613800000001"


async def test_add_search_remove_import_export(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, lang="en")
    async with aclosing(browser):
        page = await browser.get("/console/suppressions")
        assert page.status_code == 200
        tabs = page.text.split('<nav class="page-tabs"', 1)[1].split("</nav>", 1)[0]  # one of the compliance tabs
        assert 'href="/console/suppressions"' in tabs and 'aria-current="page"' in tabs
        token = csrf_of(page.text)

        empty = await browser.post("/console/suppressions", data={"csrf_token": token, "numbers": " "})
        assert empty.status_code == 422 and field_error(empty.text, "numbers")

        partly = await browser.post(
            "/console/suppressions",
            data={
                "csrf_token": token,
                "numbers": "13800000001\n12345, 13800000002",
                "scope": "account",
                "note": "call",
            },
        )
        assert partly.status_code == 200
        assert "not a valid phone number" in field_error(partly.text, "numbers")
        assert "2 numbers added; 1 could not be read" in text_of(
            partly.text.split("data-notice>", 1)[1].split("</p>")[0]
        )
        box = partly.text.split('id="suppression-numbers"', 1)[1].split("</textarea>", 1)[0]
        assert box.endswith(">12345")  # only the refused number stays in the box

        listed = await browser.get("/console/suppressions")
        assert listed.text.count("data-suppression=") == 2
        found = await browser.get("/console/suppressions", params={"number": "13800000002"})
        assert (
            found.text.count("data-suppression=") == 1 and 'data-suppression="+8613800000002"' in found.text
        )
        bad_search = await browser.get("/console/suppressions", params={"number": "12"})
        assert bad_search.status_code == 422 and field_error(bad_search.text, "search")

        removed = await browser.post(
            "/console/suppressions/remove",
            data={"csrf_token": token, "number": "+8613800000002", "scope": "account"},
        )
        assert removed.status_code == 303
        after = await browser.get("/console/suppressions")
        assert "+8613800000002 was removed" in after.text and after.text.count("data-suppression=") == 1

        csv_file = b"phone\n13800000003\nabc\n13800000001\n"
        imported = await browser.post(
            "/console/suppressions/import",
            data={"csrf_token": token, "import_scope": "account"},
            files={"file": ("list.csv", csv_file, "text/csv")},
        )
        assert imported.status_code == 200
        assert 'data-stat="added">1<' in imported.text and 'data-stat="existing">1<' in imported.text
        assert 'data-problem-row="3"' in imported.text and "abc" in imported.text
        no_file = await browser.post("/console/suppressions/import", data={"csrf_token": token})
        assert no_file.status_code == 422 and field_error(no_file.text, "file")

        export = await browser.get("/console/suppressions/export")
        assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
        assert sorted(line.split(",")[0] for line in export.content.decode("utf-8-sig").splitlines()[1:]) == [
            ALICE,
            "+8613800000003",
        ]

    async with db.read() as session:
        sources = sorted((await session.scalars(select(Suppression.source))).all())
        actors = (
            await session.scalars(
                select(AuditEntry.actor_type).where(AuditEntry.action.like("suppression.%"))
            )
        ).all()
    assert sources == ["import", "manual"]
    assert set(actors) == {"user"} and len(actors) == 3


async def test_opt_out_settings(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, lang="zh-CN")
    async with aclosing(browser):
        token = csrf_of((await browser.get("/console/suppressions")).text)
        form = {"csrf_token": token, "opt_out_keywords": "", "opt_in_keywords": "START", "opt_out_reply": ""}
        refused = await browser.post("/console/suppressions/settings", data=form)
        assert refused.status_code == 422 and field_error(refused.text, "opt_out_keywords").startswith(
            "至少需要"
        )
        clash = await browser.post(
            "/console/suppressions/settings", data={**form, "opt_out_keywords": "R, start"}
        )
        assert clash.status_code == 422 and field_error(clash.text, "opt_in_keywords")
        saved = await browser.post(
            "/console/suppressions/settings",
            data={
                **form,
                "opt_out_keywords": "R，退订\nSTOP",
                "opt_in_keywords": "恢复",
                "opt_out_reply": "【Acme】已退订",
                "opt_out_per_signature": "1",
                "suppress_all_types": "1",
            },
        )
        assert saved.status_code == 303
        page = await browser.get("/console/suppressions")
        assert 'name="opt_out_per_signature" value="1" checked' in page.text
        assert ">R, 退订, STOP</textarea>" in page.text
    async with db.read() as session:
        account_row = await session.get(Account, account.account_id)
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "compliance.settings"))
    choices = ComplianceSettings.from_account(account_row)
    assert choices.opt_out_keywords == ("R", "退订", "STOP") and choices.opt_in_keywords == ("恢复",)
    assert (
        choices.opt_out_per_signature
        and choices.suppress_all_types
        and choices.opt_out_reply == "【Acme】已退订"
    )
    assert entry is not None and entry.after["suppress_all_types"] is True


async def test_viewer_sees_the_list_but_cannot_change_it(
    app: Any, db: Database, account: AccountFixture
) -> None:
    async with db.write() as session:
        await accounts.create_user(
            session,
            email="viewer@example.com",
            password=PASSWORD,
            account_id=account.account_id,
            role="viewer",
        )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    async with aclosing(client):
        login = await client.get("/console/login")
        await client.post(
            "/console/login",
            data={"email": "viewer@example.com", "password": PASSWORD, "csrf_token": csrf_of(login.text)},
        )
        page = await client.get("/console/suppressions")
        assert page.status_code == 200 and 'action="/console/suppressions/settings"' not in page.text
        denied = await client.post(
            "/console/suppressions", data={"csrf_token": csrf_of(page.text), "numbers": ALICE}
        )
        assert denied.status_code == 403
