"""Signature and template pages (account side) and the review back office (staff only) on SQLite and
PostgreSQL: apply with documents, errors next to the field as the API words them, approve, reject with a
reason that the account then sees, withdraw, default, and a 403 for customers in the back office."""

from __future__ import annotations

import re
from typing import Any

import httpx

from console_pages import csrf_of, field_error, signed_in_client, text_of
from hongyan.db.engine import Database
from support import AccountFixture, make_account

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
EXE = b"MZ\x90\x00" + b"\x00" * 64


async def _post(
    client: httpx.AsyncClient,
    page: str,
    action: str,
    data: dict[str, str],
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
) -> httpx.Response:
    token = csrf_of((await client.get(page)).text)
    return await client.post(action, data={**data, "csrf_token": token}, files=files)


async def _reviewer(app: Any, db: Database) -> httpx.AsyncClient:
    staff = await make_account(db, name="Platform")
    return await signed_in_client(app, db, staff, email="reviewer@hongyan.example", platform_role="reviewer")


async def test_signature_apply_review_and_send_choice(
    app: Any, db: Database, account: AccountFixture
) -> None:
    customer = await signed_in_client(app, db, account, email="owner@acme.example")
    new = "/console/signatures/new"
    r = await _post(customer, new, new, {"name": "1", "source": "app", "purpose": "通知"})
    assert r.status_code == 422
    assert (
        field_error(r.text, "name")
        == "签名不符合要求 The signature must have 2–20 characters inside 【】; it has 1."
    )
    r = await _post(
        customer,
        new,
        new,
        {"name": "鸿雁科技", "source": "company", "purpose": "验证码"},
        files=[("documents", ("licence.png", EXE, "image/png"))],
    )
    assert r.status_code == 422
    assert field_error(r.text, "documents") == (
        "文件类型不支持 Upload a PDF, PNG or JPEG file (the file's content is none of these)."
    )
    assert 'value="鸿雁科技"' in r.text  # what was typed is kept
    r = await _post(customer, new, new, {"name": "鸿雁科技", "source": "company", "purpose": ""})
    assert field_error(r.text, "documents").startswith("需要上传证明材料")
    r = await _post(
        customer,
        new,
        new,
        {"name": "【鸿雁科技】", "source": "company", "purpose": "验证码和订单通知"},
        files=[("documents", ("营业执照.png", PNG, "image/png"))],
    )
    assert r.status_code == 303, r.text
    page = (await customer.get("/console/signatures")).text
    row = re.search(r'<tr data-signature="(sig_\w+)" data-name="鸿雁科技">(.*?)</tr>', page, re.S)
    assert row and 'data-review-status="pending"' in row.group(2) and "营业执照.png" in row.group(2)
    sig_id = row.group(1)

    # customers are refused the back office
    r = await customer.get("/console/review/signatures")
    assert r.status_code == 403 and "operator.review" in r.text
    r = await customer.get(f"/console/review/signatures/{sig_id}")
    assert r.status_code == 403

    reviewer = await _reviewer(app, db)
    queue = await reviewer.get("/console/review/signatures")
    assert queue.status_code == 200 and f'data-signature="{sig_id}"' in queue.text
    assert 'href="/console/review/kyc"' in queue.text and 'aria-current="page"' in queue.text
    assert 'href="/console/review/signatures" class="nav-item' not in queue.text or "审核后台" in queue.text
    detail = await reviewer.get(f"/console/review/signatures/{sig_id}")
    assert detail.status_code == 200 and "营业执照.png" in detail.text
    doc_url = re.search(rf'<img src="(/console/review/signatures/{sig_id}/documents/doc_\w+)"', detail.text)
    assert doc_url
    image = await reviewer.get(doc_url.group(1))
    assert image.content == PNG and image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    assert (await customer.get(doc_url.group(1))).status_code == 403

    page_url = f"/console/review/signatures/{sig_id}"
    r = await _post(reviewer, page_url, f"{page_url}/reject", {"reason": " "})
    assert r.status_code == 422 and field_error(r.text, "reason").startswith("请填写驳回原因")
    r = await _post(reviewer, page_url, f"{page_url}/approve", {})
    assert r.status_code == 303
    detail = (await reviewer.get(page_url)).text
    assert [a for a in re.findall(r'<li data-action="(\w+)"', detail)] == [
        "applied",
        "document_added",
        "approved",
    ]
    assert "reviewer@hongyan.example" in detail
    r = await _post(reviewer, page_url, f"{page_url}/reject", {"reason": "太晚了"})
    assert r.status_code == 409 and field_error(r.text, "decision").startswith("该申请已处理")

    page = (await customer.get("/console/signatures")).text
    row = re.search(rf'<tr data-signature="{sig_id}".*?</tr>', page, re.S)
    assert row and 'data-review-status="approved"' in row.group(0) and "data-default" in row.group(0)


async def test_rejection_reason_withdraw_and_default(app: Any, db: Database, account: AccountFixture) -> None:
    customer = await signed_in_client(app, db, account, email="owner@acme.example", lang="en")
    new = "/console/signatures/new"
    for name in ("鸿雁", "雁书", "雁字"):
        r = await _post(customer, new, new, {"name": name, "source": "app", "purpose": "notifications"})
        assert r.status_code == 303
    page = (await customer.get("/console/signatures")).text
    ids = dict((n, i) for i, n in re.findall(r'<tr data-signature="(sig_\w+)" data-name="([^"]+)"', page))

    reviewer = await _reviewer(app, db)
    for name, action, data in (
        ("鸿雁", "approve", {}),
        ("雁书", "approve", {}),
        ("雁字", "reject", {"reason": "应用未上架"}),
    ):
        url = f"/console/review/signatures/{ids[name]}"
        assert (await _post(reviewer, url, f"{url}/{action}", data)).status_code == 303

    r = await _post(customer, "/console/signatures", f"/console/signatures/{ids['雁书']}/default", {})
    assert r.status_code == 303
    page = (await customer.get("/console/signatures")).text
    rows = {
        n: body
        for n, body in re.findall(r'<tr data-signature="sig_\w+" data-name="([^"]+)">(.*?)</tr>', page, re.S)
    }
    assert "data-default" in rows["雁书"] and "data-default" not in rows["鸿雁"]
    assert text_of(
        re.search(r'<div class="rejection" data-reason>(.*?)</div>', rows["雁字"], re.S).group(1)
    ) == ("Reason: 应用未上架")
    assert "Apply again" in rows["雁字"]


async def test_template_pages(app: Any, db: Database, account: AccountFixture) -> None:
    customer = await signed_in_client(app, db, account, email="owner@acme.example")
    new = "/console/message-templates/new"
    r = await _post(
        customer,
        new,
        new,
        {"name": "登录", "message_type": "verification", "body": "验证码${code", "variables": ""},
    )
    assert r.status_code == 422 and field_error(r.text, "body").startswith("模板变量格式错误")
    r = await _post(
        customer,
        new,
        new,
        {"name": "登录", "message_type": "verification", "body": "验证码${code}", "variables": "code colour"},
    )
    assert r.status_code == 422 and field_error(r.text, "variables").startswith("变量类型设置有误")
    r = await _post(
        customer,
        new,
        new,
        {
            "name": "登录",
            "message_type": "verification",
            "body": "您的验证码是${code}，5分钟内有效。",
            "variables": "code code 6-6",
            "remark": "登录",
        },
    )
    assert r.status_code == 303, r.text
    page = (await customer.get("/console/message-templates")).text
    tpl_id = re.search(r'<tr data-template="(tpl_\w+)">', page).group(1)
    assert "code: code" in page

    assert (await customer.get("/console/review/templates")).status_code == 403
    reviewer = await _reviewer(app, db)
    url = f"/console/review/templates/{tpl_id}"
    detail = (await reviewer.get(url)).text
    assert "您的验证码是4821，5分钟内有效。" in detail  # the example rendering with the type's example value
    r = await _post(reviewer, url, f"{url}/reject", {"reason": "验证码请写明用途"})
    assert r.status_code == 303
    page = (await customer.get("/console/message-templates")).text
    assert 'data-review-status="rejected"' in page and "验证码请写明用途" in page


async def _approved(db: Database, account: AccountFixture) -> str:
    """An approved signature 【鸿雁】 (the default) and an approved verification template; its id."""
    from hongyan.accounts.permissions import Authority
    from hongyan.audit.service import Actor
    from hongyan.compliance import signatures, templates

    owner = Authority.of_key(account_id=account.account_id, key_id=account.key_id, scopes=("admin",))
    staff = Authority.of_member(account_id=account.account_id, user_id="usr_x", role="reviewer")
    actor = Actor.system("test")
    async with db.write() as session:
        sig = await signatures.apply(
            session, authority=owner, actor=actor, name="鸿雁", purpose="通知", source="app"
        )
        await signatures.review(
            session, authority=staff, actor=actor, signature_id=sig.id, decision="approved"
        )
        tpl = await templates.apply(
            session,
            authority=owner,
            actor=actor,
            name="登录",
            message_type="verification",
            body="您的验证码是${code}，5分钟内有效。",
            variables=[],
        )
        await templates.review(session, authority=staff, actor=actor, template_id=tpl.id, decision="approved")
    return tpl.id


async def test_send_page_signature_and_template(app: Any, db: Database, account: AccountFixture) -> None:
    tpl_id = await _approved(db, account)
    customer = await signed_in_client(app, db, account, email="owner@acme.example")
    page = (await customer.get("/console/send")).text
    assert re.search(r'<option value="鸿雁" selected>【鸿雁】', page)
    assert f'<option value="{tpl_id}">' in page and f'name="param.{tpl_id}.code"' in page

    form = {
        "recipient_mode": "list",
        "recipients": "13800138000",
        "content_mode": "template",
        "template_id": tpl_id,
        "signature": "鸿雁",
        "message_type": "notification",
        "text": "",
        "action": "review",
    }
    r = await _post(customer, "/console/send", "/console/send", {**form, f"param.{tpl_id}.code": "12a4"})
    assert r.status_code == 422 and "template_param_invalid" in r.text  # the recipient is refused
    r = await _post(customer, "/console/send", "/console/send", {**form, f"param.{tpl_id}.code": "012345"})
    assert r.status_code == 200, r.text
    assert "【鸿雁】您的验证码是012345，5分钟内有效。" in r.text  # the confirm page's preview
    r = await _post(
        customer,
        "/console/send",
        "/console/send",
        {**form, f"param.{tpl_id}.code": "012345", "action": "confirm"},
    )
    assert r.status_code == 303, r.text
    batch = r.headers["location"].split("batch=")[1]
    async with db.read() as session:
        from sqlalchemy import select

        from hongyan.messaging.models import Message

        bodies = list(await session.scalars(select(Message.body).where(Message.batch_id == batch)))
    assert bodies == ["【鸿雁】您的验证码是012345，5分钟内有效。"]

    # typed text gets the chosen signature too
    r = await _post(
        customer,
        "/console/send",
        "/console/send",
        {**form, "content_mode": "text", "text": "您的包裹已到达", "action": "review"},
    )
    assert r.status_code == 200 and "【鸿雁】您的包裹已到达" in r.text
