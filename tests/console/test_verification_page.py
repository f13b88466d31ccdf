"""Enterprise verification page (the account's side) on SQLite and PostgreSQL: status and limits shown, the
dashboard banner while limits apply, the application form with its licence (errors next to each field, what
was typed kept), the rejection reason shown and the form prefilled for a new try, roles without the right
to apply."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select

from console_pages import PASSWORD, csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account
from hongyan.accounts.permissions import Authority
from hongyan.audit.models import AuditEntry
from hongyan.audit.service import Actor
from hongyan.compliance import kyc_review
from hongyan.db.engine import Database
from support import make_account

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PAGE = "/console/verification"
VALID = {
    "company_name": "杭州鸿雁科技有限公司",
    "registration_number": "91350100M000100Y43",
    "legal_person": "张三",
    "contact_email": "",
}


async def _apply(
    client: httpx.AsyncClient, data: dict[str, str], licence: bytes | None = PNG
) -> httpx.Response:
    token = csrf_of((await client.get(PAGE)).text)
    files = [("license", ("营业执照.png", licence, "image/png"))] if licence is not None else None
    return await client.post(PAGE, data={**data, "csrf_token": token}, files=files)


def _status(page: str) -> str:
    match = re.search(r'id="kyc-status" data-kyc-status="(\w+)"', page)
    assert match, "no status card"
    return match.group(1)


async def test_unverified_account_sees_limits_banner_and_applies(app: Any, db: Database) -> None:
    acc = await make_account(db, kyc_status="unverified")
    client = await signed_in_client(app, db, acc, email="owner@acme.example")
    dashboard = (await client.get("/console")).text
    assert 'data-banner="kyc"' in dashboard and 'href="/console/verification"' in dashboard
    assert "每天最多发送 20 条、5 个号码" in text_of(dashboard)
    page = (await client.get(PAGE)).text
    assert _status(page) == "unverified" and 'data-limits-apply="true"' in page
    limits = text_of(page)
    assert "每天最多发送 20 条短信" in limits and "5 个不同号码" in limits and "不能发送营销短信" in limits
    assert 'data-compliance-tab="verification"' in page  # one of the compliance tabs

    r = await _apply(
        client,
        {**VALID, "company_name": "鸿", "registration_number": "91350100M000100Y40", "contact_email": "nope"},
        licence=None,
    )
    assert r.status_code == 422
    assert field_error(r.text, "company_name").startswith("企业名称不正确")
    assert field_error(r.text, "registration_number") == (
        "统一社会信用代码不正确 The last character does not match the code's check character (GB 32100-2015); "
        "check the code for a typo."
    )
    assert field_error(r.text, "contact_email").startswith("联系邮箱格式不正确")
    assert field_error(r.text, "license").startswith("请上传营业执照")
    assert field_error(r.text, "legal_person") == ""
    assert 'value="91350100M000100Y40"' in r.text  # what was typed is kept

    bad_file = await _apply(client, VALID, licence=b"GIF89a not allowed")
    assert bad_file.status_code == 422 and field_error(bad_file.text, "license").startswith("文件类型不支持")

    r = await _apply(client, VALID)
    assert r.status_code == 303 and r.headers["location"] == PAGE
    page = (await client.get(PAGE)).text
    assert _status(page) == "pending" and "认证申请已提交" in text_of(page)
    assert 'id="kyc-apply"' not in page  # no second application while one is in review
    doc = re.search(r'href="(/console/verification/documents/doc_\w+)"', page)
    assert doc, page
    licence = await client.get(doc.group(1))
    assert (
        licence.status_code == 200
        and licence.content == PNG
        and licence.headers["content-type"] == "image/png"
    )
    assert "审核中" in text_of((await client.get("/console")).text)
    async with db.read() as session:
        status = await session.scalar(select(Account.kyc_status).where(Account.id == acc.account_id))
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "kyc.submitted"))
    assert status == "pending"
    assert entry is not None and entry.actor_type == "user" and entry.actor_label == "owner@acme.example"


async def test_rejected_application_shows_reason_and_prefills(app: Any, db: Database) -> None:
    acc = await make_account(db, kyc_status="unverified")
    client = await signed_in_client(app, db, acc, email="owner@acme.example", lang="en")
    assert (await _apply(client, VALID)).status_code == 303
    async with db.write() as session:
        application = (await kyc_review.list_applications(session, account_id=acc.account_id))[0]
        await kyc_review.decide_application(
            session,
            reviewer=Authority(account_id="acc_platform", role="reviewer"),
            actor=Actor("user", "usr_r", "r@x"),
            application_id=application.id,
            decision="rejected",
            reason="The licence photo is blurred.",
        )
    page = (await client.get(PAGE)).text
    assert _status(page) == "rejected"
    assert "Reason: The licence photo is blurred." in text_of(page)
    assert 'id="kyc-apply"' in page and "Apply again" in page
    assert 'value="91350100M000100Y43"' in page and 'value="杭州鸿雁科技有限公司"' in page
    assert "Your verification was rejected" in text_of((await client.get("/console")).text)
    again = await _apply(client, VALID)
    assert again.status_code == 303
    assert _status((await client.get(PAGE)).text) == "pending"


async def test_verified_account_has_no_banner_or_form(app: Any, db: Database) -> None:
    acc = await make_account(db)  # verified (as migration 0007 left existing accounts)
    client = await signed_in_client(app, db, acc, email="owner@acme.example")
    assert 'data-banner="kyc"' not in (await client.get("/console")).text
    page = (await client.get(PAGE)).text
    assert (
        _status(page) == "verified" and 'data-limits-apply="false"' in page and 'id="kyc-apply"' not in page
    )
    r = await _apply(client, VALID)
    assert r.status_code == 409 and field_error(r.text, "form").startswith("账户已通过企业认证")


async def test_a_viewer_sees_the_status_but_cannot_apply(app: Any, db: Database) -> None:
    acc = await make_account(db, kyc_status="unverified")
    async with db.write() as session:
        await accounts.create_user(
            session, email="viewer@acme.example", password=PASSWORD, account_id=acc.account_id, role="viewer"
        )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    login = await client.get("/console/login")
    r = await client.post(
        "/console/login",
        data={"email": "viewer@acme.example", "password": PASSWORD, "csrf_token": csrf_of(login.text)},
    )
    assert r.status_code == 303
    page = (await client.get(PAGE)).text
    assert _status(page) == "unverified" and 'id="kyc-apply"' not in page and "data-notice" in page
    r = await client.post(
        PAGE, data={**VALID, "csrf_token": csrf_of(page)}, files=[("license", ("a.png", PNG, "image/png"))]
    )
    assert r.status_code == 403 and 'data-code="permission_denied"' in r.text
    async with db.read() as session:
        assert (
            await session.scalar(select(Account.kyc_status).where(Account.id == acc.account_id))
            == "unverified"
        )


async def test_another_accounts_document_is_not_found(app: Any, db: Database) -> None:
    a = await make_account(db, kyc_status="unverified")
    b = await make_account(db, name="Other", kyc_status="unverified")
    client_a = await signed_in_client(app, db, a, email="a@acme.example")
    assert (await _apply(client_a, VALID)).status_code == 303
    doc = re.search(r'href="/console/verification/documents/(doc_\w+)"', (await client_a.get(PAGE)).text)
    assert doc
    client_b = await signed_in_client(app, db, b, email="b@other.example")
    assert (await client_b.get(f"/console/verification/documents/{doc.group(1)}")).status_code == 404
