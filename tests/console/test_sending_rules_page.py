"""Sending rules console page: shows verification and limits, saves the compliance choices and the quiet
window with the API's checks (the message next to the field), owners and admins only."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from sqlalchemy import update

from console_pages import csrf_of, field_error, signed_in_client
from hongyan.accounts.models import Account, Membership
from hongyan.compliance.settings import ComplianceSettings
from hongyan.db.engine import Database
from support import AccountFixture


async def test_rules_page_saves_choices_and_reports_errors(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, lang="en")
    async with aclosing(browser):
        page = await browser.get("/console/sending-rules")
        assert page.status_code == 200, page.text
        assert 'data-kyc="verified"' in page.text and 'href="/console/sending-rules"' in page.text
        token = csrf_of(page.text)
        form = {"csrf_token": token, "signature_position": "suffix", "opt_out_text_mode": "reject",
                "opt_out_text": "拒收请回复R", "strict_consent": "1", "marketing_daily_cap": "2",
                "quiet_hours": "22:00-07:30"}
        bad = await browser.post("/console/sending-rules", data={**form, "opt_out_text": "欢迎光临"})
        assert bad.status_code == 422
        assert "opt out" in field_error(bad.text, "opt_out_text")
        assert 'value="欢迎光临"' in bad.text  # what was typed is kept
        bad = await browser.post("/console/sending-rules", data={**form, "quiet_hours": "25:00-08:00"})
        assert bad.status_code == 422 and field_error(bad.text, "quiet_hours")
        saved = await browser.post("/console/sending-rules", data=form)
        assert saved.status_code == 303, saved.text
    async with db.read() as session:
        stored = await session.get(Account, account.account_id)
        assert stored is not None
        choices = ComplianceSettings.from_account(stored)
    assert (choices.signature_position, choices.opt_out_text_mode, choices.opt_out_text, choices.strict_consent,
            choices.marketing_daily_cap) == ("suffix", "reject", "拒收请回复R", True, 2)
    assert stored.quiet_hours == "22:00-07:30"


async def test_rules_page_needs_account_settings(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, "en", email="viewer@example.com")
    async with db.write() as session:
        await session.execute(update(Membership).where(Membership.account_id == account.account_id)
                              .values(role="viewer"))
    async with aclosing(browser):
        page = await browser.get("/console/sending-rules")
        assert page.status_code == 403
