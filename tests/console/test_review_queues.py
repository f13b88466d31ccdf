"""The KYC and held-message queues of the review back office on SQLite and PostgreSQL: staff only (reviewers
and platform administrators), licence previewed inline, approve / reject with a reason, the latest decisions
with who decided, reset of a grandfathered account; held messages with masked numbers and the matched
pattern marked, several decided at once, funds released on rejection."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import select

from console_pages import csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts.models import Account
from hongyan.billing import ledger
from hongyan.billing.models import LedgerAccount
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from review_support import PRICE, hold_messages
from support import AccountFixture, make_account

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.7\n" + b"0" * 64
KYC = "/console/review/kyc"
HELD = "/console/review/messages"
FIELDS = {
    "company_name": "杭州鸿雁科技有限公司",
    "registration_number": "91350100M000100Y43",
    "legal_person": "张三",
}


async def _staff(app: Any, db: Database, role: str = "reviewer") -> httpx.AsyncClient:
    staff = await make_account(db, name="Platform")
    return await signed_in_client(app, db, staff, email=f"{role}@hongyan.example", platform_role=role)


async def _post(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, Any], files: list[Any] | None = None
) -> httpx.Response:
    token = csrf_of((await client.get(page)).text)
    return await client.post(action, data={**data, "csrf_token": token}, files=files)


async def _applied(app: Any, db: Database, licence: tuple[str, bytes, str]) -> tuple[AccountFixture, str]:
    acc = await make_account(db, name="Acme", kyc_status="unverified")
    owner = await signed_in_client(app, db, acc, email="owner@acme.example")
    r = await _post(
        owner, "/console/verification", "/console/verification", FIELDS, files=[("license", licence)]
    )
    assert r.status_code == 303, r.text
    page = (await owner.get("/console/verification")).text
    match = re.search(r'data-application="(kyc_\w+)"', page)
    assert match
    return acc, match.group(1)


async def _kyc_status(db: Database, account_id: str) -> str:
    async with db.read() as session:
        return str(await session.scalar(select(Account.kyc_status).where(Account.id == account_id)))


async def test_customers_get_403(app: Any, db: Database, account: AccountFixture) -> None:
    customer = await signed_in_client(app, db, account, email="owner@acme.example")
    for url in (KYC, HELD, f"{KYC}/kyc_x"):
        r = await customer.get(url)
        assert r.status_code == 403 and 'data-code="permission_denied"' in r.text, url
    token = csrf_of((await customer.get("/console")).text)
    for url in (f"{HELD}/decide", f"{KYC}/reset", f"{KYC}/kyc_x/approve"):
        r = await customer.post(
            url, data={"csrf_token": token, "message_ids": "msg_x", "decision": "approved"}
        )
        assert r.status_code == 403, url
    reviewer = await _staff(app, db)
    for url in (f"{KYC}/kyc_%00", f"{KYC}/kyc_x/documents/doc_%00", f"{KYC}/kyc_unknown"):
        assert (await reviewer.get(url)).status_code == 404, url  # never a 500 (NUL cannot reach PostgreSQL)
    support = await _staff(app, db, role="support")  # staff, but not a reviewer
    assert (await support.get(KYC)).status_code == 403


async def test_kyc_review_approve_with_licence_inline(app: Any, db: Database) -> None:
    acc, application_id = await _applied(app, db, ("营业执照.png", PNG, "image/png"))
    reviewer = await _staff(app, db)
    queue = (await reviewer.get(KYC)).text
    assert f'data-application="{application_id}"' in queue and "杭州鸿雁科技有限公司" in queue
    assert re.search(r'data-review-tab="kyc"[^>]*>\s*\S+ <span class="review-count">1</span>', queue)
    detail = (await reviewer.get(f"{KYC}/{application_id}")).text
    assert "张三" in detail and "91350100M000100Y43" in detail
    img = re.search(rf'<img src="({KYC}/{application_id}/documents/doc_\w+)"', detail)
    assert img, detail
    inline = await reviewer.get(img.group(1))
    assert inline.content == PNG and inline.headers["content-disposition"].startswith("inline")
    download = await reviewer.get(img.group(1) + "?download=1")
    assert download.headers["content-disposition"].startswith("attachment")

    r = await _post(reviewer, f"{KYC}/{application_id}", f"{KYC}/{application_id}/approve", {})
    assert r.status_code == 303 and r.headers["location"] == KYC
    assert await _kyc_status(db, acc.account_id) == "verified"
    again = await _post(
        reviewer, f"{KYC}/{application_id}", f"{KYC}/{application_id}/reject", {"reason": "x"}
    )
    assert again.status_code == 409 and field_error(again.text, "decision").startswith("该申请已")
    history = (await reviewer.get(f"{KYC}/{application_id}")).text
    assert re.search(r'data-action="approved">.*reviewer@hongyan\.example', history, re.S)
    assert 'data-action="applied"' in history
    decisions = (await reviewer.get(f"{KYC}?status=all")).text
    assert re.search(r'data-decision="kyc.approved">.*?reviewer@hongyan\.example', decisions, re.S)


async def test_kyc_reject_needs_reason_and_pdf_downloads(app: Any, db: Database) -> None:
    acc, application_id = await _applied(app, db, ("licence.pdf", PDF, "application/pdf"))
    admin = await _staff(app, db, role="platform_admin")
    detail = (await admin.get(f"{KYC}/{application_id}")).text
    assert "<img" not in detail.split('id="decision"')[0].split("doc-previews")[-1]  # a PDF is not previewed
    link = re.search(rf'href="({KYC}/{application_id}/documents/doc_\w+\?download=1)"', detail)
    assert link
    pdf = await admin.get(link.group(1))
    assert pdf.content == PDF and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith("attachment")

    r = await _post(admin, f"{KYC}/{application_id}", f"{KYC}/{application_id}/reject", {"reason": " "})
    assert r.status_code == 422 and field_error(r.text, "reason").startswith("请填写驳回原因")
    assert await _kyc_status(db, acc.account_id) == "pending"
    r = await _post(
        admin, f"{KYC}/{application_id}", f"{KYC}/{application_id}/reject", {"reason": "执照模糊"}
    )
    assert r.status_code == 303
    assert await _kyc_status(db, acc.account_id) == "rejected"
    queue = (await admin.get(f"{KYC}?status=rejected")).text
    assert f'data-application="{application_id}"' in queue
    assert re.search(
        r'data-decision="kyc.rejected">.*?platform_admin@hongyan\.example.*?执照模糊', queue, re.S
    )


async def test_reset_a_grandfathered_account(app: Any, db: Database) -> None:
    old = await make_account(db, name="Old customer")  # verified
    reviewer = await _staff(app, db)
    r = await _post(reviewer, KYC, f"{KYC}/reset", {"account_id": old.account_id, "reason": ""})
    assert r.status_code == 422 and field_error(r.text, "reset_reason") != ""
    assert f'value="{old.account_id}"' in r.text
    r = await _post(reviewer, KYC, f"{KYC}/reset", {"account_id": "acc_nobody", "reason": "x"})
    assert r.status_code == 404 and field_error(r.text, "account_id") != ""
    r = await _post(
        reviewer, KYC, f"{KYC}/reset", {"account_id": old.account_id, "reason": "存量账户补充认证"}
    )
    assert r.status_code == 303
    assert await _kyc_status(db, old.account_id) == "unverified"
    page = (await reviewer.get(KYC)).text
    assert re.search(r'data-decision="kyc.reset">.*?存量账户补充认证', page, re.S)


async def test_held_messages_masked_marked_and_decided(app: Any, db: Database) -> None:
    acc = await make_account(db, name="Acme", balance_micros=1_000_000)
    ids_ = await hold_messages(db, acc.account_id, ["+8613812345678", "+8613900000002", "+8613700000003"])
    reviewer = await _staff(app, db)
    page = (await reviewer.get(HELD)).text
    assert all(f'data-held="{i}"' in page for i in ids_)
    assert "+86138****5678" in page and "13812345678" not in page and "13900000002" not in page
    assert "<mark>大奖</mark>" in page and "data-pattern>大奖<" in page

    no_reason = await _post(
        reviewer, HELD, f"{HELD}/decide", {"message_ids": ids_[:2], "decision": "rejected"}
    )
    assert no_reason.status_code == 422 and field_error(no_reason.text, "reason").startswith("请填写驳回原因")
    assert no_reason.text.count(" checked>") == 2  # the choice is kept
    none = await _post(reviewer, HELD, f"{HELD}/decide", {"decision": "approved"})
    assert none.status_code == 422 and field_error(none.text, "message_ids").startswith("请至少选择一条短信")

    r = await _post(
        reviewer,
        HELD,
        f"{HELD}/decide",
        {"message_ids": ids_[:2], "decision": "rejected", "reason": "疑似诈骗"},
    )
    assert r.status_code == 303
    after = (await reviewer.get(HELD)).text
    assert "已拒绝 2 条短信" in text_of(after)
    assert f'data-held="{ids_[2]}"' in after and f'data-held="{ids_[0]}"' not in after
    assert re.search(
        r'data-decision="message_hold.rejected">.*?reviewer@hongyan\.example.*?拒绝 2 条.*?疑似诈骗',
        after,
        re.S,
    )
    async with db.read() as session:
        rows = {m.id: m for m in await session.scalars(select(Message).where(Message.id.in_(ids_)))}
        held = await session.get(LedgerAccount, ledger.held(acc.account_id, "CNY"))
    assert [(rows[i].status, rows[i].error_code) for i in ids_[:2]] == [("rejected", "content_rejected")] * 2
    assert held is not None and held.balance == PRICE  # one message still held

    twice = await _post(reviewer, HELD, f"{HELD}/decide", {"message_ids": ids_[:2], "decision": "approved"})
    assert twice.status_code == 303
    assert "没有需要审核的短信" in text_of((await reviewer.get(HELD)).text)
    everything = (await reviewer.get(f"{HELD}?status=all")).text
    assert everything.count('data-decision="rejected"') == 2 and "13812345678" not in everything
