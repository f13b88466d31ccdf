"""Verification codes console page: masked numbers, statuses, conversion per day and per country; the
account's verify settings saved with the service's checks (message next to the field), audited, owners
and admins only."""

from __future__ import annotations

import re
from contextlib import aclosing
from typing import Any

import httpx
from sqlalchemy import select, update
from tests.verify.helpers import sent_code, start

from console_pages import csrf_of, field_error, signed_in_client
from hongyan.accounts.models import Account, Membership
from hongyan.audit.models import AuditEntry
from hongyan.db.engine import Database
from hongyan.verify.limits import VerifySettings
from support import AccountFixture


async def test_page_lists_verifications_with_conversion(
    app: Any, client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    approved = await start(client, to="+8613800138000", code_length=10)
    code = await sent_code(db, approved)
    assert (await client.post(f"/v1/verify/{approved['id']}/check", json={"code": code})).status_code == 200
    await start(client, to="+8613900139000")
    await start(client, to="+14155550123")
    browser = await signed_in_client(app, db, account, lang="en")
    async with aclosing(browser):
        page = await browser.get("/console/verify")
        assert page.status_code == 200, page.text
        html = page.text
        assert 'href="/console/verify"' in html and 'aria-current="page"' in html
        assert "+86138****8000" in html and "+8613800138000" not in html and code not in html
        assert 'data-kpi="started">3<' in html and 'data-kpi="approved">1<' in html
        assert 'data-kpi="conversion">33.3%<' in html
        assert '<tr data-country="CN"><td>CN</td><td class="num">2</td><td class="num">1</td>' in html
        assert '<tr data-country="US">' in html
        filtered = await browser.get("/console/verify", params={"status": "approved"})
        assert filtered.text.count("data-verification=") == 1 and approved["id"] in filtered.text
        bad = await browser.get("/console/verify", params={"to": "12"})
        assert bad.status_code == 200 and field_error(bad.text, "to")


async def test_settings_are_checked_saved_and_audited(
    app: Any, db: Database, account: AccountFixture
) -> None:
    browser = await signed_in_client(app, db, account, lang="en")
    async with aclosing(browser):
        page = await browser.get("/console/verify")
        form = {
            "csrf_token": csrf_of(page.text),
            "template_id": "",
            "code_length": "8",
            "ttl_s": "120",
            "max_attempts": "3",
            "resend_cooldown_s": "",
            "per_number_hour": "4",
            "per_number_day": "",
            "per_ip_hour": "",
            "per_key_minute": "",
            "keep_previous_code": "1",
        }
        bad = await browser.post("/console/verify/settings", data={**form, "ttl_s": "5"})
        assert bad.status_code == 422 and "30 to 3600" in field_error(bad.text, "ttl_s")
        assert 'value="5"' in bad.text  # what was typed is kept
        bad = await browser.post("/console/verify/settings", data={**form, "template_id": "tpl_missing"})
        assert bad.status_code == 422 and "not an approved template" in field_error(bad.text, "template_id")
        saved = await browser.post("/console/verify/settings", data=form)
        assert saved.status_code == 303, saved.text
        page = await browser.get("/console/verify")
        assert 'data-effective="per_number_hour">In effect: 4 (platform: 5)' in page.text
    async with db.read() as session:
        stored = await session.get(Account, account.account_id)
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "verify.settings"))
    own = VerifySettings.from_account(stored)
    assert (
        own.code_length,
        own.ttl_s,
        own.max_attempts,
        own.per_number_hour,
        own.keep_previous_code,
        own.per_ip_hour,
    ) == (8, 120, 3, 4, True, None)
    assert entry is not None and entry.account_id == account.account_id


async def test_viewers_see_the_page_but_cannot_change_settings(
    app: Any, db: Database, account: AccountFixture
) -> None:
    browser = await signed_in_client(app, db, account, "zh-CN", email="viewer@example.com")
    async with db.write() as session:
        await session.execute(
            update(Membership).where(Membership.account_id == account.account_id).values(role="viewer")
        )
    async with aclosing(browser):
        page = await browser.get("/console/verify")
        assert page.status_code == 200 and re.search(r"<fieldset[^>]*\bdisabled>", page.text) is not None and "验证码设置" in page.text
        refused = await browser.post(
            "/console/verify/settings", data={"csrf_token": csrf_of(page.text), "code_length": "4"}
        )
        assert refused.status_code == 403
