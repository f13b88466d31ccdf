"""Console API keys page: allow-list, expiry, HMAC keys, rotation, errors next to their field, audit entries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from console_pages import csrf_of, field_error, signed_in_client
from hongyan.accounts.models import ApiKey
from hongyan.audit.models import AuditEntry
from hongyan.db.engine import Database
from support import AccountFixture


async def test_create_with_networks_expiry_and_signing(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, "en")
    page = await browser.get("/console/keys")
    token = csrf_of(page.text)
    bad = await browser.post("/console/keys", data={
        "name": "ci", "scopes": ["send"], "allowed_cidrs": "10.0.0.0/8\n10.0.0.300", "csrf_token": token})
    assert bad.status_code == 422
    assert "'10.0.0.300' is not an IP address" in field_error(bad.text, "allowed_cidrs")
    assert "10.0.0.300" in bad.text  # what was typed stays in the box
    bad = await browser.post("/console/keys", data={
        "name": "ci", "scopes": ["send"], "expires_at": "2020-01-01", "csrf_token": token})
    assert bad.status_code == 422 and field_error(bad.text, "expires_at")
    ok = await browser.post("/console/keys", data={
        "name": "ci", "scopes": ["send", "read"], "allowed_cidrs": "203.0.113.0/24, 2001:db8::/32",
        "expires_at": "2099-12-31", "auth": "hmac", "csrf_token": token})
    assert ok.status_code == 200 and "HONGYAN-HMAC-SHA256" in ok.text
    async with db.read() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.name == "ci"))
        assert key is not None
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "api_key.created"))
    assert key.allowed_cidrs == ["203.0.113.0/24", "2001:db8::/32"] and key.signing_secret
    assert key.expires_at is not None and key.expires_at.year == 2099
    assert entry is not None and entry.actor_type == "user" and entry.target_id == key.id
    assert entry.after is not None and entry.after["auth"] == "hmac" and "signing_secret" not in entry.after


async def test_change_networks_and_rotate(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, "zh-CN")
    token = csrf_of((await browser.get("/console/keys")).text)
    moved = await browser.post(f"/console/keys/{account.key_id}/networks",
                               data={"allowed_cidrs": "198.51.100.7", "csrf_token": token})
    assert moved.status_code == 303
    page = await browser.get("/console/keys")
    assert "198.51.100.7/32" in page.text
    rotated = await browser.post(f"/console/keys/{account.key_id}/rotate",
                                 data={"overlap_hours": "1", "csrf_token": token})
    assert rotated.status_code == 200 and f"此密钥替换 {account.key_id}" in rotated.text
    async with db.read() as session:
        old = await session.get(ApiKey, account.key_id)
    assert old is not None and old.rotated_to is not None and old.expires_at is not None
    again = await browser.post(f"/console/keys/{account.key_id}/rotate",
                               data={"overlap_hours": "1", "csrf_token": token})
    assert again.status_code == 303
    flashed = await browser.get("/console/keys")
    assert "已由" in flashed.text  # the table says which key replaced it
    other = await browser.post("/console/keys/key_01M8000000000000000000000A/rotate",
                               data={"overlap_hours": "1", "csrf_token": token})
    assert other.status_code == 303  # unknown (or another account's) key: a flash, nothing changed
