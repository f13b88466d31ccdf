"""The audit log: hash chain and tamper detection (SQLite and PostgreSQL), the append-only trigger, concurrent
appends, the API (filters, pages, tenant isolation, CSV), the CLI, the console page, and the wiring of
real changes (webhooks, channels, billing, cancels) into the log."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from hongyan.accounts import keys
from hongyan.audit.models import AuditEntry
from hongyan.audit.service import Actor, changes, record, redact, verify_chain
from hongyan.db.engine import Database
from support import AccountFixture, make_account, truncate_all

KEY = Actor("api_key", "key_test", "test key", "203.0.113.7")


async def operator_client(app: Any, db: Database, account: AccountFixture) -> httpx.AsyncClient:
    async with db.write() as session:
        created = await keys.create_api_key(session, account_id=account.account_id, name="ops",
                                                scopes=("operator",), allow_operator=True)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             headers={"Authorization": f"Bearer {created.token}"})


def api_client(app: Any, account: AccountFixture) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             headers=account.headers)


async def entries(db: Database, action: str | None = None) -> list[AuditEntry]:
    async with db.read() as session:
        query = select(AuditEntry).order_by(AuditEntry.seq)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(await session.scalars(query))


async def append(db: Database, n: int, *, account_id: str | None = "acc_a", per_tx: int = 10) -> None:
    for start in range(0, n, per_tx):
        async with db.write() as session:
            for i in range(start, min(n, start + per_tx)):
                await record(session, actor=KEY, action="test.changed", account_id=account_id, target_type="thing",
                             target_id=f"thg_{i}", before={"n": i}, after={"n": i + 1, "at": datetime.now(UTC)})


async def raw(db: Database, sql: str) -> None:
    """A statement straight at the table, as someone with database access would run it (PostgreSQL: with the
    append-only trigger switched off first, as only a superuser can)."""
    async with db.write() as session:
        if db.dialect == "postgresql":
            await session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        try:
            await session.execute(text(sql))
        finally:
            if db.dialect == "postgresql":
                await session.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))


async def verify(db: Database) -> Any:
    async with db.read() as session:
        return await verify_chain(session)


# -- the chain ------------------------------------------------------------------------------------
async def test_chain_of_200_entries_verifies(db: Database) -> None:
    await append(db, 200, per_tx=7)
    result = await verify(db)
    assert result.ok and result.entries == 200, result
    rows = await entries(db)
    assert [e.seq for e in rows] == list(range(1, 201))
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))
    # a datetime inside `after` is stored as ISO text, and the hash covers exactly that
    assert isinstance(rows[0].after["at"], str) and rows[0].after["at"].endswith("+00:00")


async def test_altered_entry_is_named(db: Database) -> None:
    await append(db, 10)
    await raw(db, """UPDATE audit_log SET "after" = '{"n": 999}' WHERE seq = 5""")
    result = await verify(db)
    assert not result.ok and result.first_bad_seq == 5 and result.entries == 4
    assert result.problem == "entry 5 was altered"


async def test_rewritten_link_is_named(db: Database) -> None:
    await append(db, 6)
    # recomputing an entry's own hash is not enough: the next entry's prev_hash no longer matches
    await raw(db, "UPDATE audit_log SET hash = '" + "a" * 64 + "' WHERE seq = 3")
    result = await verify(db)
    assert not result.ok and result.first_bad_seq == 3


async def test_deleted_last_entry_is_detected_by_the_head(db: Database) -> None:
    await append(db, 10)
    await raw(db, "DELETE FROM audit_log WHERE seq = 10")
    result = await verify(db)
    assert not result.ok and result.first_bad_seq == 10 and result.entries == 9
    assert "removed at the end" in (result.problem or "")


async def test_deleted_middle_entry_is_a_gap(db: Database) -> None:
    await append(db, 10)
    await raw(db, "DELETE FROM audit_log WHERE seq = 4")
    result = await verify(db)
    assert not result.ok and result.first_bad_seq == 4 and result.problem == "entry 4 is missing"


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET action = 'x' WHERE seq = 1",
                                       "DELETE FROM audit_log WHERE seq = 1"])
async def test_postgresql_trigger_refuses_update_and_delete(db: Database, statement: str) -> None:
    if db.dialect != "postgresql":
        pytest.skip("the append-only trigger exists on PostgreSQL")
    await append(db, 1)
    with pytest.raises(Exception, match="audit_log is append-only"):
        async with db.write() as session:
            await session.execute(text(statement))
    assert (await verify(db)).ok


async def test_concurrent_records_make_a_gap_free_chain(db: Database) -> None:
    async def one(i: int) -> int:
        async with db.write() as session:
            return await record(session, actor=KEY, action="test.concurrent", account_id=f"acc_{i % 3}",
                                target_id=f"t{i}", after={"i": i})

    seqs = await asyncio.gather(*(one(i) for i in range(20)))
    assert sorted(seqs) == list(range(1, 21))
    result = await verify(db)
    assert result.ok and result.entries == 20


def test_redaction_and_changes() -> None:
    """Redaction at any depth (dotted names too); `changes` keeps only what differs."""
    assert redact({"config": {"host": "h", "password": "pw"}, "config.password": "pw", "token": None}) == {
        "config": {"host": "h", "password": "[redacted]"}, "config.password": "[redacted]", "token": None}
    assert changes({"a": 1, "b": 2}, {"a": 1, "b": 3}) == ({"b": 2}, {"b": 3})


# -- API ------------------------------------------------------------------------------------------
async def test_api_filters_pages_and_tenant_isolation(app: Any, db: Database, account: AccountFixture) -> None:
    other = await make_account(db, name="Other")
    t0 = datetime.now(UTC)
    async with db.write() as session:
        for i in range(7):
            await record(session, actor=Actor("api_key", account.key_id, "test", "198.51.100.1"),
                         action="billing.settings_updated" if i % 2 else "webhook_endpoint.created",
                         account_id=account.account_id, target_id=f"obj_{i}", after={"i": i})
        await record(session, actor=Actor("user", "usr_x", "x@example.com", None), action="billing.top_up",
                     account_id=account.account_id, target_id="pay_1", occurred_at=t0 - timedelta(days=3))
        await record(session, actor=KEY, action="webhook_endpoint.created", account_id=other.account_id,
                     target_id="obj_other")
        await record(session, actor=KEY, action="channel.updated", account_id=None, target_id="chn_1")

    async with api_client(app, account) as mine, api_client(app, other) as theirs:
        page = (await mine.get("/v1/audit-log", params={"limit": 3})).json()
        assert [e["seq"] for e in page["data"]] == [8, 7, 6] and page["has_more"] is True
        page2 = (await mine.get("/v1/audit-log", params={"limit": 3, "cursor": page["next_cursor"]})).json()
        page3 = (await mine.get("/v1/audit-log", params={"limit": 3, "cursor": page2["next_cursor"]})).json()
        assert [e["seq"] for e in page2["data"]] == [5, 4, 3]
        assert [e["seq"] for e in page3["data"]] == [2, 1] and page3["has_more"] is False
        assert page3["next_cursor"] is None
        first = page3["data"][-1]
        assert first["actor"] == {"type": "api_key", "id": account.key_id, "label": "test"}
        assert first["ip"] == "198.51.100.1" and first["after"] == {"i": 0} and len(first["hash"]) == 64

        by_action = (await mine.get("/v1/audit-log", params={"action": "billing."})).json()["data"]
        assert {e["action"] for e in by_action} == {"billing.settings_updated", "billing.top_up"} and len(by_action) == 4
        by_actor = (await mine.get("/v1/audit-log", params={"actor": "x@example.com"})).json()["data"]
        assert [e["target_id"] for e in by_actor] == ["pay_1"]
        by_target = (await mine.get("/v1/audit-log", params={"target_id": "obj_3"})).json()["data"]
        assert [e["target_id"] for e in by_target] == ["obj_3"]
        since = (t0 - timedelta(days=1)).isoformat()
        recent = (await mine.get("/v1/audit-log", params={"since": since})).json()["data"]
        assert len(recent) == 7 and "pay_1" not in {e["target_id"] for e in recent}
        old = (await mine.get("/v1/audit-log", params={"until": since})).json()["data"]
        assert [e["target_id"] for e in old] == ["pay_1"]
        # a bound with no UTC equivalent is a clear 422 (not a 500); `%` is a literal, not a wildcard
        out_of_range = await mine.get("/v1/audit-log", params={"since": "0001-01-01T00:00:00+01:00"})
        assert out_of_range.status_code == 422
        assert (out_of_range.json()["error"]["code"], out_of_range.json()["error"]["field"]) == ("invalid_datetime", "since")
        assert (await mine.get("/v1/audit-log", params={"action": "%"})).json()["data"] == []

        # another account sees only its own entry, even asking for A's object ids
        assert [e["target_id"] for e in (await theirs.get("/v1/audit-log")).json()["data"]] == ["obj_other"]
        assert (await theirs.get("/v1/audit-log", params={"target_id": "obj_3"})).json()["data"] == []
        theirs_csv = (await theirs.get("/v1/audit-log.csv")).text
        assert "obj_3" not in theirs_csv and "obj_other" in theirs_csv

        csv_rows = list(csv.reader(io.StringIO((await mine.get("/v1/audit-log.csv", params={"action": "billing."}))
                                               .content.decode("utf-8-sig"))))
        assert csv_rows[0][:3] == ["seq", "occurred_at", "account_id"] and len(csv_rows) == 5
        assert [r[0] for r in csv_rows[1:]] == ["2", "4", "6", "8"]  # oldest first
        header = csv_rows[0]
        assert {r[header.index("account_id")] for r in csv_rows[1:]} == {account.account_id}

        no_admin = await make_account(db, name="Reader", scopes=("read",))
        async with api_client(app, no_admin) as reader:
            r = await reader.get("/v1/audit-log")
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
            assert (await mine.get("/v1/operator/audit-log")).status_code == 403

    async with await operator_client(app, db, account) as ops:
        everything = (await ops.get("/v1/operator/audit-log", params={"limit": 500})).json()["data"]
        assert {e["target_id"] for e in everything} >= {"obj_other", "chn_1", "obj_0"}
        only_other = (await ops.get("/v1/operator/audit-log", params={"account_id": other.account_id})).json()["data"]
        assert [e["target_id"] for e in only_other] == ["obj_other"]
        checked = (await ops.get("/v1/operator/audit-log/verify")).json()
        assert checked["ok"] is True and checked["entries"] == len(everything)


# -- CLI ------------------------------------------------------------------------------------------
@pytest.fixture
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from hongyan.config import get_settings

    async def clean() -> None:
        database = Database(db_url)
        await truncate_all(database)
        await database.dispose()

    asyncio.run(clean())
    monkeypatch.setenv("HONGYAN_DATABASE_URL", db_url)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


def _in_db(url: str, work: Any) -> Any:
    async def run() -> Any:
        database = Database(url)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def test_cli_verify_export_and_cli_actor(cli_db: str) -> None:
    from hongyan.cli import app as cli

    runner = CliRunner()
    account = _in_db(cli_db, lambda d: make_account(d, balance_micros=0))
    topped = runner.invoke(cli, ["billing", "top-up", account.account_id, "25", "--note", "wire 7"])
    assert topped.exit_code == 0, topped.output
    found = _in_db(cli_db, lambda d: entries(d, "billing.top_up"))
    assert len(found) == 1 and found[0].actor_type == "cli" and found[0].after["amount"] == "25.00"
    _in_db(cli_db, lambda d: append(d, 4, account_id=account.account_id))

    ok = runner.invoke(cli, ["audit", "verify"])
    assert ok.exit_code == 0 and "5 entries, chain intact" in ok.output, ok.output

    exported = runner.invoke(cli, ["audit", "export", "--account", account.account_id, "--since", "2020-01-01"])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.reader(io.StringIO(exported.stdout_bytes.decode("utf-8-sig"))))
    assert len(rows) == 6 and rows[1][7] == "billing.top_up"
    later = runner.invoke(cli, ["audit", "export", "--account", account.account_id, "--since", "2999-01-01"])
    assert len(list(csv.reader(io.StringIO(later.stdout_bytes.decode("utf-8-sig"))))) == 1  # header only
    bad = runner.invoke(cli, ["audit", "export", "--since", "yesterday"])
    assert bad.exit_code == 2

    _in_db(cli_db, lambda d: raw(d, "UPDATE audit_log SET ip = '10.0.0.1' WHERE seq = 3"))
    tampered = runner.invoke(cli, ["audit", "verify"])
    assert tampered.exit_code == 1 and "seq 3" in tampered.output and "altered" in tampered.output


# -- wiring: real changes leave entries -----------------------------------------------------------
async def test_webhook_endpoint_changes_are_audited(client: httpx.AsyncClient, db: Database,
                                                    account: AccountFixture) -> None:
    r = await client.post("/v1/webhooks", json={"url": "https://example.com/hook", "description": "ops"})
    assert r.status_code == 201
    endpoint = r.json()
    await client.delete(f"/v1/webhooks/{endpoint['id']}")
    created, disabled = await entries(db, "webhook_endpoint.created"), await entries(db, "webhook_endpoint.disabled")
    assert len(created) == 1 and len(disabled) == 1
    e = created[0]
    assert (e.account_id, e.actor_type, e.actor_id, e.actor_label, e.ip, e.target_id) == (
        account.account_id, "api_key", account.key_id, "test", "127.0.0.1", endpoint["id"])
    assert e.after == {"url": "https://example.com/hook", "event_types": [], "description": "ops", "enabled": True}
    assert endpoint["secret"] not in str(e.after)
    assert (disabled[0].before, disabled[0].after) == ({"enabled": True}, {"enabled": False})
    assert (await verify(db)).ok


async def test_channel_changes_are_audited_without_the_password(app: Any, db: Database,
                                                                account: AccountFixture) -> None:
    smpp = {"host": "127.0.0.1", "port": 1, "system_id": "hongyan", "password": "s3cret", "tps": 10}
    async with await operator_client(app, db, account) as ops:
        channel = (await ops.post("/v1/operator/channels", json={"name": "c1", "config": smpp, "enabled": False})).json()
        r = await ops.patch(f"/v1/operator/channels/{channel['id']}", json={"config": {"tps": 50, "password": "n3w"}})
        assert r.status_code == 200, r.text
        await ops.patch(f"/v1/operator/channels/{channel['id']}", json={"enabled": True})
        route = (await ops.post("/v1/operator/routes", json={"channel": "c1", "priority": 3})).json()
        await ops.delete(f"/v1/operator/routes/{route['id']}")
    updated = (await entries(db, "channel.updated"))[0]
    assert updated.account_id is None and updated.actor_type == "api_key" and updated.ip == "127.0.0.1"
    assert updated.before == {"config.tps": 10.0, "config.password": "[redacted]"}
    assert updated.after == {"config.tps": 50.0, "config.password": "[redacted]"}
    created = (await entries(db, "channel.created"))[0]
    assert created.after["config.host"] == "127.0.0.1" and created.after["config.password"] == "[redacted]"
    enabled = (await entries(db, "channel.enabled"))[0]
    assert (enabled.before, enabled.after) == ({"enabled": False}, {"enabled": True})
    assert len(await entries(db, "route.created")) == 1 and len(await entries(db, "route.deleted")) == 1
    async with db.read() as session:
        stored = (await session.execute(text("SELECT before, after FROM audit_log"))).all()
    assert "s3cret" not in str(stored) and "n3w" not in str(stored)


async def test_billing_operator_and_customer_changes_are_audited(app: Any, db: Database,
                                                                  account: AccountFixture) -> None:
    customer = await make_account(db, name="Customer", balance_micros=0)
    async with await operator_client(app, db, account) as ops:
        r = await ops.post(f"/v1/operator/billing/accounts/{customer.account_id}/top-ups",
                           json={"amount": "100.00", "note": "wire 8812"})
        assert r.status_code == 201, r.text
        order_id = r.json()["order_id"]
        r = await ops.patch(f"/v1/operator/billing/accounts/{customer.account_id}",
                            json={"credit_limit": "50.00", "draw_order": "cash_first"})
        assert r.status_code == 200, r.text
    async with api_client(app, customer) as mine:
        r = await mine.patch("/v1/billing/settings", json={"low_balance_threshold": "20.00"})
        assert r.status_code == 200, r.text
        log = (await mine.get("/v1/audit-log")).json()["data"]
    top_up = (await entries(db, "billing.top_up"))[0]
    assert (top_up.account_id, top_up.target_id, top_up.actor_type, top_up.ip) == (
        customer.account_id, order_id, "api_key", "127.0.0.1")
    assert top_up.after["amount"] == "100.00" and top_up.after["note"] == "wire 8812"
    limit = (await entries(db, "billing.credit_limit_set"))[0]
    assert (limit.before, limit.after) == ({"credit_limit": "0.00"}, {"credit_limit": "50.00"})
    profile = (await entries(db, "billing.profile_updated"))[0]
    assert (profile.before, profile.after) == ({"draw_order": "packages_first"}, {"draw_order": "cash_first"})
    settings = (await entries(db, "billing.settings_updated"))[0]
    assert settings.actor_id == customer.key_id
    assert (settings.before, settings.after) == ({"low_balance_threshold": None}, {"low_balance_threshold": "20.00"})
    # the customer sees what the operator did to their account
    assert {e["action"] for e in log} == {"billing.top_up", "billing.credit_limit_set", "billing.profile_updated",
                                          "billing.settings_updated"}


async def test_message_cancel_is_audited(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    r = await client.post("/v1/messages", json={"to": "13800000001", "text": "later",
                                                "scheduled_at": "2099-01-01T08:00:00+08:00"})
    message_id = r.json()["id"]
    assert (await client.post(f"/v1/messages/{message_id}/cancel")).status_code == 200
    e = (await entries(db, "message.canceled"))[0]
    assert (e.target_id, e.actor_id, e.before, e.after) == (message_id, account.key_id, None, None)
    refused = await client.post(f"/v1/messages/{message_id}/cancel")  # already canceled: nothing new
    assert refused.status_code == 409 and len(await entries(db, "message.canceled")) == 1


# -- console --------------------------------------------------------------------------------------
async def test_console_audit_page(app: Any, db: Database, account: AccountFixture) -> None:
    from console_pages import csrf_of, signed_in_client

    other = await make_account(db, name="Other")
    async with db.write() as session:
        await record(session, actor=KEY, action="webhook_endpoint.created", account_id=other.account_id,
                     target_id="whk_theirs")
        await record(session, actor=KEY, action="channel.updated", account_id=None, target_id="chn_platform")
    web = await signed_in_client(app, db, account, lang="en")
    try:
        page = await web.get("/console/webhooks")
        r = await web.post("/console/webhooks", data={"url": "https://example.com/h", "description": "",
                                                      "csrf_token": csrf_of(page.text)})
        assert r.status_code == 200
        e = (await entries(db, "webhook_endpoint.created"))[-1]
        assert (e.actor_type, e.actor_label, e.ip, e.account_id) == ("user", "finance@example.com", "127.0.0.1",
                                                                      account.account_id)

        page = await web.get("/console/audit")
        assert page.status_code == 200
        assert e.target_id in page.text and "finance@example.com" in page.text and "127.0.0.1" in page.text
        assert "https://example.com/h" in page.text  # the after value of the diff
        assert "whk_theirs" not in page.text and "chn_platform" not in page.text
        assert 'id="filter-account"' not in page.text and 'href="/console/audit"' in page.text
        assert re.search(r'href="/console/audit\.csv"', page.text)

        # a customer cannot widen the view with ?account=
        sneaky = await web.get("/console/audit", params={"account": other.account_id})
        assert "whk_theirs" not in sneaky.text
        none = await web.get("/console/audit", params={"action": "billing."})
        assert e.target_id not in none.text and "No entries match these filters." in none.text
        filtered = await web.get("/console/audit", params={"action": "webhook", "since": "2020-01-01"})
        assert e.target_id in filtered.text
        assert 'href="/console/audit.csv?action=webhook&amp;since=2020-01-01"' in filtered.text
        bad = await web.get("/console/audit", params={"since": "soon"})
        assert bad.status_code == 422 and 'data-error-for="since"' in bad.text

        exported = await web.get("/console/audit.csv", params={"action": "webhook"})
        assert exported.headers["content-type"].startswith("text/csv")
        lines = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
        assert len(lines) == 2 and lines[1][9] == e.target_id

    finally:
        await web.aclose()
    staff = await signed_in_client(app, db, account, lang="zh-CN", email="staff@example.com", platform_role="support")
    try:
        page = await staff.get("/console/audit")
        assert 'id="filter-account"' in page.text and "审计日志" in page.text
        assert "whk_theirs" in page.text and "chn_platform" in page.text
        one = await staff.get("/console/audit", params={"account": other.account_id})
        assert "whk_theirs" in one.text and "chn_platform" not in one.text
    finally:
        await staff.aclose()


async def test_docs_checker_verifies_a_real_export(db: Database, tmp_path: Any) -> None:
    """The standard-library checker printed in docs/audit.md accepts a real export (odd labels, Chinese text,
    floats, nulls) and rejects a tampered one."""
    import subprocess
    import sys
    from pathlib import Path

    from hongyan.audit.service import AuditFilter, export_csv

    async with db.write() as session:
        await record(session, actor=Actor("api_key", "key_1", "=HYPERLINK(\"x\")", None), action="t.a",
                     account_id="acc_1", after={"名称": "鸿雁 “测试”", "rate": 0.1, "n": 10**15, "none": None})
        await record(session, actor=Actor("user", "usr_1", "'quoted@example.com", "2001:db8::1"), action="t.b",
                     account_id=None, before={"nested": {"b": [1, 2.5, "x"], "a": True}}, after={})
        await record(session, actor=Actor.system(), action="t.c", account_id="acc_2", target_id="-1")
    docs = (Path(__file__).parents[2] / "docs" / "audit.md").read_text(encoding="utf-8")
    checker = re.search(r"A complete checker.*?```python\n(.*?)```", docs, re.S)
    assert checker, "docs/audit.md lost its checker"
    script = tmp_path / "check.py"
    script.write_text(checker.group(1), encoding="utf-8")

    exported = tmp_path / "audit.csv"
    exported.write_bytes(b"".join([chunk async for chunk in export_csv(db, AuditFilter(None))]))
    ok = await asyncio.to_thread(subprocess.run, [sys.executable, str(script), str(exported)], capture_output=True,
                                text=True, timeout=60)
    assert ok.returncode == 0 and "3 entries, chain intact" in ok.stdout, ok.stderr
    assert "'=HYPERLINK" in exported.read_text(encoding="utf-8-sig")  # not a live formula in a spreadsheet

    exported.write_text(exported.read_text(encoding="utf-8-sig").replace("鸿雁", "鸿鹄"), encoding="utf-8-sig")
    bad = await asyncio.to_thread(subprocess.run, [sys.executable, str(script), str(exported)], capture_output=True,
                                 text=True, timeout=60)
    assert bad.returncode != 0 and "entry 1 does not verify" in bad.stderr
