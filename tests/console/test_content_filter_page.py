"""Content-filter pages on SQLite and PostgreSQL: the account's rules (add, errors next to the field, bulk
add with invalid lines named by number, test a text, delete), the platform list for staff under the review
back office, and who is refused (a viewer; customers on the staff page)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from console_pages import PASSWORD, csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts import service as accounts
from hongyan.config import Settings
from hongyan.db.engine import Database
from support import AccountFixture, make_account

PAGE = "/console/filter"
STAFF_PAGE = "/console/review/filter"


@pytest.fixture
async def web(db: Database, settings: Settings) -> AsyncIterator[Any]:
    """The app without its workers (nothing is sent here)."""
    from hongyan.app import create_app

    application = create_app(settings, run_workers=False, db=db)
    async with application.router.lifespan_context(application):
        yield application


async def _post(client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]) -> httpx.Response:
    token = csrf_of((await client.get(page)).text)
    return await client.post(action, data={**data, "csrf_token": token})


def _patterns(page: str) -> list[str]:
    rows = re.findall(
        r'<tr data-rule="flt_\w+">\s*<td class="break"><span class="mono">(.*?)</span>', page, re.S
    )
    return [text_of(r) for r in rows]


def _verdict(page: str) -> str:
    match = re.search(r'data-verdict="(\w+)"', page)
    assert match, "no verdict shown"
    return match.group(1)


async def test_account_rules_page(web: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(web, db, account, lang="en", email="owner@acme.example")
    async with aclosing(browser):
        page = await browser.get(PAGE)
        assert page.status_code == 200 and "No rules yet." in page.text
        # one of the compliance tabs, under the sidebar's compliance entry
        assert f'href="{PAGE}" data-compliance-tab="content_filter" aria-current="page"' in page.text

        r = await _post(browser, PAGE, PAGE, {"kind": "regex", "pattern": "(unclosed", "action": "block"})
        assert r.status_code == 422 and "does not compile" in field_error(r.text, "pattern")
        assert 'value="(unclosed"' in r.text  # what was typed is kept
        r = await _post(browser, PAGE, PAGE, {"kind": "regex", "pattern": "x", "action": "allow"})
        assert r.status_code == 422 and "must be one of" in field_error(r.text, "action")

        r = await _post(
            browser,
            PAGE,
            PAGE,
            {"kind": "keyword", "pattern": "代开发票", "action": "block", "category": "invoice"},
        )
        assert r.status_code == 303
        page = (await browser.get(PAGE)).text
        assert _patterns(page) == ["代开发票"] and "Rule “代开发票” added." in page

        tested = await _post(browser, PAGE, f"{PAGE}/test", {"text": "专业代 開 發 票"})
        assert tested.status_code == 200 and _verdict(tested.text) == "block"
        assert "代开发票" in text_of(tested.text.split('data-verdict="block"', 1)[1].split("</div>", 1)[0])
        assert "专业代开发票" in tested.text  # the normalized text is shown
        clean = await _post(browser, PAGE, f"{PAGE}/test", {"text": "您的验证码是123456"})
        assert _verdict(clean.text) == "pass"

        lines = "低息贷款\n\n代开发票\n" + "x" * 501 + "\n网贷"
        r = await _post(
            browser,
            PAGE,
            f"{PAGE}/bulk",
            {"bulk_kind": "keyword", "bulk_action": "review", "bulk_category": "", "lines": lines},
        )
        assert r.status_code == 200
        report = text_of(r.text.split("data-bulk-result>", 1)[1].split("</div>", 1)[0])
        assert report == "Added 2, 1 duplicates, 2 invalid lines."
        assert re.findall(r'<li data-line="(\d+)">', r.text) == ["2", "4"]
        box = re.search(r'<textarea id="filter-lines"[^>]*>(.*?)</textarea>', r.text, re.S)
        assert box and box.group(1) == "\n" + "x" * 501  # only the invalid lines are left to fix
        page = (await browser.get(PAGE)).text
        assert sorted(_patterns(page)) == sorted(["代开发票", "低息贷款", "网贷"])

        searched = (await browser.get(PAGE, params={"q": "贷"})).text
        assert sorted(_patterns(searched)) == ["低息贷款", "网贷"]

        rule_id = re.search(
            r'<tr data-rule="(flt_\w+)">\s*<td class="break"><span class="mono">代开发票', page
        )
        assert rule_id
        r = await _post(browser, PAGE, f"{PAGE}/{rule_id.group(1)}/delete", {})
        assert r.status_code == 303
        assert "代开发票" not in _patterns((await browser.get(PAGE)).text)
        r = await _post(browser, PAGE, f"{PAGE}/{rule_id.group(1)}/delete", {})  # gone already
        assert r.status_code == 303


async def test_viewer_is_refused(web: Any, db: Database, account: AccountFixture) -> None:
    async with db.write() as session:
        await accounts.create_user(
            session,
            email="viewer@acme.example",
            password=PASSWORD,
            account_id=account.account_id,
            role="viewer",
        )
    browser = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web),
        base_url="http://testserver",
        headers={"Accept-Language": "en"},
    )
    async with aclosing(browser):
        login = await browser.get("/console/login")
        r = await browser.post(
            "/console/login",
            data={"email": "viewer@acme.example", "password": PASSWORD, "csrf_token": csrf_of(login.text)},
        )
        assert r.status_code == 303
        page = await browser.get(PAGE)
        assert page.status_code == 403 and 'data-code="permission_denied"' in page.text
        signatures = await browser.get("/console/signatures")  # another compliance tab: no link to this one
        assert signatures.status_code == 200 and 'data-compliance-tab="signatures"' in signatures.text
        assert f'href="{PAGE}"' not in signatures.text


async def test_platform_list_for_staff(web: Any, db: Database, account: AccountFixture) -> None:
    customer = await signed_in_client(web, db, account, lang="en", email="owner@acme.example")
    staff_account = await make_account(db, name="Platform")
    reviewer = await signed_in_client(
        web, db, staff_account, lang="en", email="reviewer@hongyan.example", platform_role="reviewer"
    )
    async with aclosing(customer), aclosing(reviewer):
        r = await customer.get(STAFF_PAGE)
        assert r.status_code == 403 and 'data-code="permission_denied"' in r.text

        page = await reviewer.get(STAFF_PAGE)
        assert page.status_code == 200 and "Platform content filter" in page.text
        r = await _post(
            reviewer,
            STAFF_PAGE,
            STAFF_PAGE,
            {"kind": "url_deny", "pattern": "https://www.evil.cn/x", "action": "block"},
        )
        assert r.status_code == 303
        assert _patterns((await reviewer.get(STAFF_PAGE)).text) == ["evil.cn"]
        tested = await _post(reviewer, STAFF_PAGE, f"{STAFF_PAGE}/test", {"text": "登录 secure.evil.cn/bank"})
        assert _verdict(tested.text) == "block"

        # the platform rule applies to the customer's texts but is not in the customer's own list
        tested = await _post(customer, PAGE, f"{PAGE}/test", {"text": "登录 evil.cn"})
        assert _verdict(tested.text) == "block" and "a platform rule" in tested.text
        assert _patterns((await customer.get(PAGE)).text) == []
