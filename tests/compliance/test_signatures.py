"""Signatures and templates through the API on SQLite and PostgreSQL: apply → pending, documents (type by
content, size cap), review by operator keys only (reject needs a reason, only pending is decidable),
withdraw, default, tenant isolation, the gate's lookups, and an audit entry for every step."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hongyan.accounts import keys
from hongyan.audit.models import AuditEntry
from hongyan.compliance.signatures import approved_signatures, normalize_name
from hongyan.compliance.templates import approved_template
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from support import AccountFixture, make_account

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 64


async def _client(app: Any, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.fixture
async def ops(app: Any, db: Database) -> Any:
    platform = await make_account(db, name="Platform")
    async with db.write() as session:
        created = await keys.create_api_key(
            session,
            account_id=platform.account_id,
            name="reviewer",
            scopes=("operator",),
            allow_operator=True,
        )
    async with await _client(app, created.token) as c:
        yield c


async def _audit(db: Database, target_id: str) -> list[str]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.target_id == target_id).order_by(AuditEntry.seq)
            )
        )


@pytest.mark.parametrize(
    ("raw", "name"),
    [("【鸿雁科技】", "鸿雁科技"), ("  鸿雁 ", "鸿雁"), ("Acme Ltd", "Acme Ltd"), ("【 京东 】", "京东")],
)
def test_signature_names(raw: str, name: str) -> None:
    assert normalize_name(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        "鸿",
        "【】",
        "一二三四五六七八九十一二三四五六七八九十一",
        "鸿【雁",
        "12345",
        "!!--",
        "a\nb",
        "【鸿雁】】",
    ],
)
def test_bad_signature_names(raw: str) -> None:
    with pytest.raises(HongyanError) as caught:
        normalize_name(raw)
    assert caught.value.code == "signature_name_invalid" and caught.value.field == "name"


async def test_signature_review_lifecycle(
    client: httpx.AsyncClient, ops: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    r = await client.post(
        "/v1/signatures", json={"name": "【鸿雁科技】", "purpose": "验证码与订单通知", "source": "company"}
    )
    assert r.status_code == 201, r.text
    sig = r.json()
    assert sig["name"] == "鸿雁科技" and sig["status"] == "pending" and sig["documents_required"] is True
    r = await client.post("/v1/signatures", json={"name": "鸿雁科技", "purpose": "x", "source": "app"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "signature_exists"

    # a company signature without a document cannot be approved
    r = await ops.post(f"/v1/operator/reviews/signatures/{sig['id']}/approve")
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_documents_required"

    # documents: type by content, not by name
    r = await client.post(
        f"/v1/signatures/{sig['id']}/documents", files={"file": ("licence.pdf", EXE, "application/pdf")}
    )
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "document_type_not_allowed",
        "field": "file",
        "message": "Upload a PDF, PNG or JPEG file (the file's content is none of these).",
    }
    r = await client.post(
        f"/v1/signatures/{sig['id']}/documents",
        files={"file": ("big.png", PNG + b"\x00" * (5 * 1024 * 1024), "image/png")},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "document_too_large"
    r = await client.post(
        f"/v1/signatures/{sig['id']}/documents", files={"file": ("营业执照.pdf", PNG, "application/pdf")}
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["content_type"] == "image/png" and doc["filename"] == "营业执照.png"
    r = await client.get(doc["url"])
    assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"

    # the queue: pending first; reject needs a reason
    queue = (await ops.get("/v1/operator/reviews/signatures")).json()["data"]
    assert [s["id"] for s in queue] == [sig["id"]]
    detail = (await ops.get(f"/v1/operator/reviews/signatures/{sig['id']}")).json()
    assert detail["account_id"] == account.account_id and [d["id"] for d in detail["documents"]] == [
        doc["id"]
    ]
    r = await ops.get(detail["documents"][0]["url"])
    assert r.status_code == 200 and r.content == PNG
    r = await ops.post(f"/v1/operator/reviews/signatures/{sig['id']}/reject", json={"reason": "  "})
    assert r.status_code == 422 and r.json()["error"]["code"] == "reason_required"
    r = await ops.post(f"/v1/operator/reviews/signatures/{sig['id']}/approve")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["is_default"] is True  # the first approved one
    assert r.json()["reviewed_by"].startswith("key:")
    r = await ops.post(f"/v1/operator/reviews/signatures/{sig['id']}/reject", json={"reason": "late"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "review_not_pending"

    async with db.read() as session:
        refs = await approved_signatures(session, account.account_id)
    assert list(refs) == ["鸿雁科技"] and refs["鸿雁科技"].id == sig["id"] and refs["鸿雁科技"].is_default

    history = (await client.get(f"/v1/signatures/{sig['id']}")).json()["history"]
    assert [h["action"] for h in history] == ["applied", "document_added", "approved"]
    assert await _audit(db, sig["id"]) == [
        "signature.applied",
        "signature.document_added",
        "signature.approved",
    ]


async def test_reject_resubmit_withdraw_and_default(
    client: httpx.AsyncClient, ops: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    first = (
        await client.post("/v1/signatures", json={"name": "鸿雁", "purpose": "通知", "source": "app"})
    ).json()
    second = (
        await client.post("/v1/signatures", json={"name": "雁书", "purpose": "营销", "source": "website"})
    ).json()
    r = await ops.post(
        f"/v1/operator/reviews/signatures/{second['id']}/reject", json={"reason": "网站未备案"}
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["reason"] == "网站未备案"
    listed = (await client.get("/v1/signatures", params={"status": "rejected"})).json()["data"]
    assert [(s["id"], s["reason"]) for s in listed] == [(second["id"], "网站未备案")]

    r = await client.post(f"/v1/signatures/{second['id']}/default")
    assert r.status_code == 409 and r.json()["error"]["code"] == "signature_default_not_approved"
    # applying again with the rejected name reopens the same application
    r = await client.post(
        "/v1/signatures", json={"name": "雁书", "purpose": "营销（已备案）", "source": "website"}
    )
    assert r.status_code == 201 and r.json()["id"] == second["id"] and r.json()["status"] == "pending"
    assert r.json()["reason"] is None

    r = await client.post(f"/v1/signatures/{first['id']}/withdraw")
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    r = await client.post(f"/v1/signatures/{first['id']}/withdraw")
    assert r.status_code == 409 and r.json()["error"]["code"] == "review_not_pending"
    r = await ops.post(f"/v1/operator/reviews/signatures/{first['id']}/approve")
    assert r.status_code == 409 and r.json()["error"]["code"] == "review_not_pending"
    r = await client.post(f"/v1/signatures/{first['id']}/resubmit", json={"purpose": "通知（补充）"})
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["purpose"] == "通知（补充）"

    for sig in (first, second):
        assert (await ops.post(f"/v1/operator/reviews/signatures/{sig['id']}/approve")).status_code == 200
    r = await client.post(f"/v1/signatures/{second['id']}/default")
    assert r.status_code == 200 and r.json()["is_default"] is True
    async with db.read() as session:
        refs = await approved_signatures(session, account.account_id)
    assert {n: ref.is_default for n, ref in refs.items()} == {"鸿雁": False, "雁书": True}
    assert await _audit(db, second["id"]) == [
        "signature.applied",
        "signature.rejected",
        "signature.resubmitted",
        "signature.approved",
        "signature.default_set",
    ]
    assert await _audit(db, first["id"]) == [
        "signature.applied",
        "signature.withdrawn",
        "signature.resubmitted",
        "signature.approved",
    ]


async def test_validation_permissions_and_isolation(
    app: Any, client: httpx.AsyncClient, ops: httpx.AsyncClient, db: Database
) -> None:
    r = await client.post("/v1/signatures", json={"name": "鸿雁", "purpose": " ", "source": "company"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_purpose_required"
    r = await client.post("/v1/signatures", json={"name": "鸿雁", "purpose": "x", "source": "shop"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "source"
    mine = (
        await client.post("/v1/signatures", json={"name": "鸿雁", "purpose": "x", "source": "other"})
    ).json()

    # the customer's own key cannot review
    r = await client.get("/v1/operator/reviews/signatures")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = await client.post(f"/v1/operator/reviews/signatures/{mine['id']}/approve")
    assert r.status_code == 403

    other = await make_account(db, name="Other")
    async with await _client(app, other.token) as them:
        assert (await them.get(f"/v1/signatures/{mine['id']}")).status_code == 404
        assert (await them.post(f"/v1/signatures/{mine['id']}/withdraw")).json()["error"][
            "code"
        ] == "signature_not_found"
        assert (await them.get("/v1/signatures")).json()["data"] == []
        # the same name is free in another account
        assert (
            await them.post("/v1/signatures", json={"name": "鸿雁", "purpose": "x", "source": "other"})
        ).status_code == 201
    reader = await make_account(db, name="Reader", scopes=("read",))
    async with await _client(app, reader.token) as read_only:
        r = await read_only.post("/v1/signatures", json={"name": "只读", "purpose": "x", "source": "other"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
        assert (await read_only.get("/v1/signatures")).status_code == 200
    assert len((await ops.get("/v1/operator/reviews/signatures")).json()["data"]) == 2


async def test_template_lifecycle(
    app: Any, client: httpx.AsyncClient, ops: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    r = await client.post(
        "/v1/templates",
        json={"name": "登录", "message_type": "verification", "body": "您的验证码是${code，5分钟内有效。"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_syntax_invalid"
    assert r.json()["error"]["details"] == {"position": 6}
    r = await client.post(
        "/v1/templates", json={"name": "登录", "message_type": "verification", "body": "您好${name}"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_code_variable_missing"
    r = await client.post(
        "/v1/templates",
        json={"name": "登录", "message_type": "verification", "body": "【鸿雁】您的验证码是${code}"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_body_signed"
    r = await client.post(
        "/v1/templates",
        json={
            "name": "登录",
            "message_type": "verification",
            "body": "${name}，您的验证码是${code}，5分钟内有效。",
            "variables": [{"name": "code", "type": "code", "min": 6, "max": 6}],
            "remark": "登录时发送",
        },
    )
    assert r.status_code == 201, r.text
    tpl = r.json()
    assert tpl["status"] == "pending" and tpl["variables"] == [
        {"name": "name", "type": "name", "min": 1, "max": 20},
        {"name": "code", "type": "code", "min": 6, "max": 6},
    ]

    r = await client.post(
        "/v1/templates/render", json={"template_id": tpl["id"], "params": {"name": "张三", "code": "012345"}}
    )
    assert r.json() == {
        **r.json(),
        "ok": True,
        "text": "张三，您的验证码是012345，5分钟内有效。",
        "problems": [],
    }
    r = await client.post(
        "/v1/templates/render", json={"template_id": tpl["id"], "params": {"code": "12a456", "x": "1"}}
    )
    assert r.status_code == 200 and r.json()["text"] is None
    assert [(p["name"], p["code"]) for p in r.json()["problems"]] == [
        ("name", "template_param_missing"),
        ("code", "template_param_invalid"),
        ("x", "template_param_unknown"),
    ]
    r = await client.post("/v1/templates/render", json={"body": "取件码${code}", "params": {"code": "0123"}})
    assert r.json()["text"] == "取件码0123"

    async with db.read() as session:
        assert await approved_template(session, account.account_id, tpl["id"]) is None  # pending
    r = await ops.post(f"/v1/operator/reviews/templates/{tpl['id']}/reject")
    assert r.status_code == 422 and r.json()["error"]["code"] == "reason_required"
    r = await ops.post(f"/v1/operator/reviews/templates/{tpl['id']}/approve")
    assert r.status_code == 200 and r.json()["status"] == "approved"
    async with db.read() as session:
        ref = await approved_template(session, account.account_id, tpl["id"])
        assert ref is not None and ref.body == tpl["body"] and ref.variables == tpl["variables"]
        assert ref.message_type == "verification" and ref.signature_id is None
        other = await make_account(db, name="Other")
        assert await approved_template(session, other.account_id, tpl["id"]) is None
    r = await client.post(f"/v1/templates/{tpl['id']}/withdraw")
    assert r.status_code == 409 and r.json()["error"]["code"] == "review_not_pending"

    second = (
        await client.post(
            "/v1/templates",
            json={"name": "通知", "message_type": "notification", "body": "订单${order}已发货"},
        )
    ).json()
    r = await client.post(
        f"/v1/templates/{second['id']}/documents", files={"file": ("x.png", EXE, "image/png")}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "document_type_not_allowed"
    r = await client.post(f"/v1/templates/{second['id']}/withdraw")
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    queue = (await ops.get("/v1/operator/reviews/templates", params={"status": "all"})).json()["data"]
    assert [t["id"] for t in queue] == [tpl["id"], second["id"]]
    assert await _audit(db, tpl["id"]) == ["template.applied", "template.approved"]
    assert await _audit(db, second["id"]) == ["template.applied", "template.withdrawn"]
    assert (await client.get("/v1/operator/reviews/templates")).status_code == 403
