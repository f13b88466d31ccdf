"""Helpers for console page tests (importable as `console_pages`; tests/ is on pythonpath): sign in through
the real login form, read CSRF tokens and the error shown next to a field."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from hongyan.accounts import service as accounts
from hongyan.db.engine import Database
from support import AccountFixture

EMAIL = "finance@example.com"
PASSWORD = "correct horse battery"


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF field"
    return match.group(1)


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def field_error(page: str, name: str) -> str:
    """The text of the error shown next to one input ('' if none)."""
    match = re.search(
        rf'<p class="field-error" data-error-for="{re.escape(name)}"[^>]*>(.*?)</p>', page, re.S
    )
    assert match, f"no error slot for {name}"
    return text_of(match.group(1))


async def signed_in_client(
    app: Any, db: Database, account: AccountFixture, lang: str = "zh-CN", *, email: str = EMAIL,
    platform_role: str | None = None,
) -> httpx.AsyncClient:
    async with db.write() as session:
        await accounts.create_user(session, email=email, password=PASSWORD, account_id=account.account_id,
                                   platform_role=platform_role)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Accept-Language": lang},
    )
    login = await client.get("/console/login")
    response = await client.post(
        "/console/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(login.text)}
    )
    assert response.status_code == 303, response.text
    return client


