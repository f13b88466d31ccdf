"""/v1/suppressions on SQLite and PostgreSQL: add with per-number problems, list and find, remove, import a
file with bad rows (CSV and XLSX), export and import it back, permissions by key scope, audit without
numbers, tenant isolation; and end to end through the sandbox carrier: a handset replies 退订, the
number is listed, the confirmation goes out, and marketing to it is refused."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.channels.base import InboundSms
from hongyan.compliance import replies
from hongyan.compliance.models import Suppression
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Batch, Message
from support import AccountFixture, make_account, wait_until

ALICE = "+8613800000001"


def _client(app: Any, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_add_list_find_remove(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    r = await client.post(
        "/v1/suppressions",
        json={"numbers": ["13800000001", "12345", "+8613800000001", "13800000002"], "note": "complaint"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["added"], body["existing"], body["scope"]) == (2, 0, None)
    assert [(x["index"], x["field"], x["code"]) for x in body["rejected"]] == [
        (1, "numbers[1]", "invalid_phone_number")
    ]
    again = await client.post("/v1/suppressions", json={"numbers": ["13800000001"]})
    assert again.json()["added"] == 0 and again.json()["existing"] == 1

    listed = (await client.get("/v1/suppressions")).json()
    assert listed["total"] == 2 and {e["number"] for e in listed["data"]} == {ALICE, "+8613800000002"}
    assert all(
        e["source"] == "api" and e["note"] == "complaint" and e["scope"] is None for e in listed["data"]
    )
    found = (await client.get("/v1/suppressions", params={"number": "13800000002"})).json()
    assert [e["number"] for e in found["data"]] == ["+8613800000002"]
    bad = await client.get("/v1/suppressions", params={"number": "12"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "number"

    gone = await client.delete("/v1/suppressions/+8613800000002")
    assert gone.status_code == 200 and gone.json() == {"number": "+8613800000002", "removed": 1}
    missing = await client.delete("/v1/suppressions/13800000002")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "suppression_not_found"
    assert (await client.get("/v1/suppressions")).json()["total"] == 1

    async with db.read() as session:
        entries = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action.like("suppression.%")))
        ).all()
    assert [e.action for e in entries] == ["suppression.add", "suppression.add", "suppression.remove"]
    assert entries[0].after["added"] == 2 and entries[0].after["rejected"] == 1
    assert "138000000" not in str([(e.before, e.after, e.target_id) for e in entries])  # never the numbers


async def test_refusals(client: httpx.AsyncClient) -> None:
    one = await client.post("/v1/suppressions", json={"numbers": ["12345"]})
    assert one.status_code == 422 and one.json()["error"]["code"] == "invalid_phone_number"
    assert one.json()["error"]["field"] == "numbers[0]"
    many = await client.post("/v1/suppressions", json={"numbers": ["1", "2"]})
    assert many.status_code == 422 and many.json()["error"]["code"] == "no_valid_numbers"
    assert len(many.json()["error"]["details"]["rejected"]) == 2
    scope = await client.post("/v1/suppressions", json={"numbers": [ALICE], "scope": "sig_nope"})
    assert scope.status_code == 422 and scope.json()["error"]["code"] == "unknown_signature"
    empty = await client.post("/v1/suppressions", json={"numbers": []})
    assert empty.status_code == 422
    cursor = await client.get("/v1/suppressions", params={"cursor": "nonsense"})
    assert cursor.status_code == 400 and cursor.json()["error"]["code"] == "invalid_cursor"
    not_multipart = await client.post("/v1/suppressions/import", json={"numbers": [ALICE]})
    assert not_multipart.status_code == 415


async def test_permissions_follow_key_scopes(app: Any, db: Database, client: httpx.AsyncClient) -> None:
    await client.post("/v1/suppressions", json={"numbers": [ALICE]})
    reader = await make_account(db, name="Reader", scopes=("read",))
    sender = await make_account(db, name="Sender", scopes=("send",))
    async with _client(app, reader.token) as c:
        assert (await c.get("/v1/suppressions")).status_code == 200
        assert (await c.get("/v1/suppressions/export")).status_code == 200
        denied = await c.post("/v1/suppressions", json={"numbers": [ALICE]})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
        assert (await c.delete(f"/v1/suppressions/{ALICE}")).status_code == 403
    async with _client(app, sender.token) as c:
        assert (await c.get("/v1/suppressions")).status_code == 403


async def test_tenants_do_not_see_each_other(app: Any, db: Database, client: httpx.AsyncClient) -> None:
    await client.post("/v1/suppressions", json={"numbers": [ALICE]})
    other = await make_account(db, name="Other")
    async with _client(app, other.token) as c:
        assert (await c.get("/v1/suppressions")).json()["total"] == 0
        assert (await c.delete(f"/v1/suppressions/{ALICE}")).status_code == 404
        export = await c.get("/v1/suppressions/export")
        assert ALICE not in export.text
    assert (await client.get("/v1/suppressions")).json()["total"] == 1


async def test_import_with_bad_rows_then_export_and_import_back(client: httpx.AsyncClient) -> None:
    csv_file = "手机号,备注\n13800000001,a\n12345,b\n\n13800000001,dup\n+8613900000002,c\n,empty\n".encode()
    r = await client.post(
        "/v1/suppressions/import",
        files={"file": ("list.csv", csv_file, "text/csv")},
        data={"note": "from CRM"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["rows"], report["added"], report["existing"], report["duplicates"]) == (5, 2, 0, 1)
    assert [(p["row"], p["code"]) for p in report["rejected"]] == [
        (3, "invalid_phone_number"),
        (7, "phone_number_missing"),
    ]
    assert report["rejected_count"] == 2

    export = await client.get("/v1/suppressions/export")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert export.content.startswith("\ufeff".encode())
    lines = export.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "number,scope,signature,source,keyword,note,created_at"
    assert sorted(line.split(",")[0] for line in lines[1:]) == [ALICE, "+8613900000002"]
    assert all(",account,,import,,from CRM," in line for line in lines[1:])

    back = await client.post(
        "/v1/suppressions/import", files={"file": ("export.csv", export.content, "text/csv")}
    )
    assert (back.json()["added"], back.json()["existing"], back.json()["rejected"]) == (0, 2, [])


async def test_import_xlsx_without_header(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openpyxl import Workbook

    from hongyan.compliance import suppression_files

    monkeypatch.setattr(suppression_files, "IMPORT_CHUNK", 1)  # one transaction per number

    book = Workbook()
    sheet = book.active
    for value in (13800000001, "13800000003", "not a number"):
        sheet.append([value])
    buffer = io.BytesIO()
    book.save(buffer)
    r = await client.post(
        "/v1/suppressions/import",
        files={"file": ("list.xlsx", buffer.getvalue(), "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 2 and [p["row"] for p in r.json()["rejected"]] == [3]
    async with db.read() as session:
        audits = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "suppression.add"))
        ).all()
    assert len(audits) == 1 and audits[0].after["added"] == 2 and audits[0].after["source"] == "import"
    empty = await client.post("/v1/suppressions/import", files={"file": ("e.csv", b"", "text/csv")})
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "file_empty"


async def test_end_to_end_through_the_sandbox_carrier(
    app: Any, client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    async with db.write() as session:
        await session.execute(
            update(Account)
            .where(Account.id == account.account_id)
            .values(settings={"compliance": {"opt_out_reply": "您已退订。"}})
        )
    sent = await client.post("/v1/messages", json={"to": ALICE, "text": "您的订单已发货"})
    assert sent.status_code == 202, sent.text
    runtime = app.state.runtime
    channel_id, connector = next(iter(runtime.connectors.items()))
    await connector.inject_inbound(InboundSms(channel_id, ALICE.lstrip("+"), "106900", "退订", utcnow()))

    async def listed() -> bool:
        async with db.read() as session:
            return (
                await session.scalar(
                    select(Suppression.source).where(Suppression.account_id == account.account_id)
                )
            ) == "reply"

    await wait_until(listed, message="the reply put the number on the list")

    async def confirmed() -> Any:
        async with db.read() as session:
            return await session.scalar(
                select(Message.status)
                .join(Batch, Batch.id == Message.batch_id)
                .where(Batch.source == replies.CONFIRMATION_SOURCE)
            )

    await wait_until(confirmed, message="the confirmation was stored")
    marketing = await client.post(
        "/v1/batches",
        json={
            "text": "双十二大促，回T退订",
            "message_type": "marketing",
            "recipients": [ALICE, "+8613800000021"],
        },
    )
    assert marketing.status_code == 202, marketing.text
    assert [(x["to"], x["code"]) for x in marketing.json()["rejected"]] == [(ALICE, "recipient_opted_out")]


@pytest.mark.parametrize("path", ["/v1/suppressions", "/v1/suppressions/export"])
async def test_without_a_key(app: Any, path: str) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        assert (await c.get(path)).status_code == 401
