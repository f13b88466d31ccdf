"""/v1/imports through the HTTP API (multipart upload, preview, start, progress, errors, cancel), with the
app's embedded workers running the jobs, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx

from hongyan.config import Settings
from hongyan.db.engine import Database
from support import AccountFixture, make_account, wait_until


def error_of(r: httpx.Response) -> tuple[int, str, str | None]:
    e = r.json()["error"]
    return r.status_code, e["code"], e["field"]


def list_csv(rows: int, bad_every: int = 4) -> bytes:
    lines = ["手机号,姓名,订单号"]
    for i in range(rows):
        phone = "12345" if i % bad_every == bad_every - 1 else f"139{i:08d}"
        lines.append(f"{phone},客户{i},DD-{i}")
    return ("\n".join(lines) + "\n").encode("gb18030")


async def finished(client: httpx.AsyncClient, import_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = (await client.get(f"/v1/imports/{import_id}")).json()
        return job if job["status"] in ("completed", "failed", "canceled") else None

    result: dict[str, Any] = await wait_until(done, timeout=30, interval=0.1, message="import finished")
    return result


async def test_upload_preview_start_progress_and_error_file(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/imports",
        files={"file": ("名单.csv", list_csv(40), "text/csv")},
        data={"encoding": "auto", "delimiter": "auto"},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert (
        job["status"] == "uploaded"
        and job["encoding"] == "gb18030"
        and job["header"] == ["手机号", "姓名", "订单号"]
    )
    assert job["filename"] == "名单.csv" and job["progress"]["percent"] == 0.0
    preview = (await client.get(f"/v1/imports/{job['id']}/preview")).json()
    assert len(preview["rows"]) == 10 and preview["rows"][0] == {
        "row": 2,
        "cells": ["13900000000", "客户0", "DD-0"],
    }
    mapping = preview["mapping"]
    assert mapping == {
        "phone": 0,
        "name": 1,
        "tags": None,
        "time_zone": None,
        "header_rows": 1,
        "fields": [{"index": 2, "name": "订单号", "type": "text"}],
    }
    r = await client.post(
        f"/v1/imports/{job['id']}/start", json={"mapping": mapping, "new_group_name": "API 名单"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("queued", "running", "completed") and r.json()["group_id"]
    done = await finished(client, job["id"])
    assert done["status"] == "completed" and done["rows_total"] == 40 and not done["rows_total_estimated"]
    assert done["counts"] == {"created": 30, "updated": 0, "skipped": 0, "failed": 10}
    assert (
        done["progress"]["percent"] == 100.0 and done["progress"]["rows_per_s"] > 0 and done["has_error_file"]
    )
    errors = await client.get(f"/v1/imports/{job['id']}/errors")
    assert errors.status_code == 200 and errors.headers["content-type"].startswith("text/csv")
    assert "attachment" in errors.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(errors.content.decode("utf-8-sig"))))
    assert [int(line[0]) for line in lines[1:]] == [5 + 4 * k for k in range(10)]
    assert {line[2] for line in lines[1:]} == {"手机号"} and {line[5] for line in lines[1:]} == {"12345"}
    group = (await client.get(f"/v1/groups/{done['group_id']}")).json()
    assert group["name"] == "API 名单" and group["size"] == 30
    audit = (await client.get("/v1/audit-log", params={"action": "contact_import."})).json()["data"]
    assert [e["action"] for e in audit] == ["contact_import.started"] and audit[0]["target_id"] == job["id"]


async def test_list_cancel_and_refusals(client: httpx.AsyncClient, db: Database) -> None:
    ids = []
    for _ in range(3):
        r = await client.post("/v1/imports", files={"file": ("a.csv", b"phone\n13800138000\n")})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    page = (await client.get("/v1/imports", params={"limit": 2})).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = (await client.get("/v1/imports", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and not rest["has_more"]

    canceled = await client.post(f"/v1/imports/{ids[0]}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert error_of(await client.post(f"/v1/imports/{ids[0]}/cancel")) == (
        409,
        "import_not_cancelable",
        "import_id",
    )
    assert error_of(await client.post(f"/v1/imports/{ids[0]}/start", json={"mapping": {"phone": 0}})) == (
        409,
        "import_not_startable",
        "import_id",
    )
    assert error_of(await client.post(f"/v1/imports/{ids[1]}/start", json={"mapping": {"name": 0}})) == (
        422,
        "phone_column_required",
        "mapping.phone",
    )
    assert error_of(await client.post(f"/v1/imports/{ids[1]}/start", json={"mapping": {"phone": 3}})) == (
        422,
        "column_out_of_range",
        "mapping",
    )
    assert error_of(await client.post(f"/v1/imports/{ids[1]}/start", json={})) == (
        422,
        "field_required",
        "mapping",
    )
    assert error_of(await client.get("/v1/imports/imp_01NOPE")) == (404, "import_not_found", "import_id")

    assert error_of(await client.post("/v1/imports", json={"file": "x"})) == (
        415,
        "unsupported_media_type",
        "Content-Type",
    )
    assert error_of(await client.post("/v1/imports", data={"encoding": "auto"}, files={"x": ("a", b"")})) == (
        422,
        "field_required",
        "file",
    )
    garbage = bytes(range(256)) * 64
    assert error_of(await client.post("/v1/imports", files={"file": ("a.csv", garbage)})) == (
        422,
        "file_not_text",
        "file",
    )
    assert error_of(
        await client.post(
            "/v1/imports", files={"file": ("a.csv", b"a;b\n1;2\n")}, data={"encoding": "latin-1"}
        )
    ) == (422, "invalid_encoding_choice", "encoding")
    assert error_of(
        await client.post(
            "/v1/imports", files={"file": ("a.csv", b"phone,name\n1,2\n")}, data={"delimiter": "tab"}
        )
    ) == (422, "delimiter_mismatch", "delimiter")
    audit = (await client.get("/v1/audit-log", params={"action": "contact_import.canceled"})).json()["data"]
    assert [e["target_id"] for e in audit] == [ids[0]]


async def test_read_only_key_and_size_limits(app: Any, db: Database, settings: Settings) -> None:
    from hongyan.app import create_app

    reader = await make_account(db, name="R", scopes=("read",))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=reader.headers) as c:
        r = await c.post("/v1/imports", files={"file": ("a.csv", b"phone\n13800138000\n")})
        assert error_of(r) == (403, "insufficient_scope", "Authorization")
    small = create_app(
        settings.model_copy(update={"import_max_bytes": 2000, "max_body_bytes": 500}),
        run_workers=False,
        db=db,
    )
    owner: AccountFixture = await make_account(db, name="S")
    async with (
        small.router.lifespan_context(small),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=small), base_url="http://t", headers=owner.headers
        ) as c,
    ):
        fits = (
            "phone\n" + "13800138000\n" * 100
        ).encode()  # 1.2 kB: over max_body_bytes, under the import limit
        assert (await c.post("/v1/imports", files={"file": ("a.csv", fits)})).status_code == 201
        too_big = ("phone\n" + "13800138000\n" * 170).encode()  # just over 2000 bytes
        assert error_of(await c.post("/v1/imports", files={"file": ("a.csv", too_big)})) == (
            413,
            "file_too_large",
            "file",
        )
        huge = b"phone\n" + b"13800138000\n" * 200_000
        assert error_of(await c.post("/v1/imports", files={"file": ("a.csv", huge)})) == (
            413,
            "file_too_large",
            "file",
        )
        assert error_of(await c.post("/v1/contacts", json={"phone": "1" * 600})) == (
            413,
            "payload_too_large",
            "body",
        )
