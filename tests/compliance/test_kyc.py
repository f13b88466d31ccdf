"""Enterprise verification (KYC): the unified social credit code check, the application workflow through
the API on both databases (submit → pending → approved / rejected → apply again), the reviewers' scope,
tenant isolation, the licence requirement and the audit trail."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.compliance import credit_code, kyc
from hongyan.config import Settings
from hongyan.db.engine import Database
from review_support import make_operator
from support import AccountFixture, make_account

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
VALID_CODE = "91350100M000100Y43"  # the example code of GB 32100-2015
APPLICATION = {
    "company_name": "杭州鸿雁科技有限公司",
    "registration_number": VALID_CODE,
    "legal_person": "张三",
    "contact_email": "legal@example.com",
}


# -- the unified social credit code (pure) ---------------------------------------------------------------
def _constructed(seed: int) -> str:
    """A code in the real format (authority 9, type 1, a 6-digit region, a 9-character organization code)
    with the check character the standard's algorithm gives."""
    rng = random.Random(seed)
    region = "".join(rng.choice("0123456789") for _ in range(6))
    org = "".join(rng.choice(credit_code.ALPHABET) for _ in range(9))
    first17 = f"91{region}{org}"
    return first17 + credit_code.check_character(first17)


@pytest.mark.parametrize(
    "code", ["91350100M000100Y43", "91110000802100433B", *[_constructed(s) for s in range(20)]]
)
def test_valid_codes_pass(code: str) -> None:
    assert credit_code.problem(code) is None
    assert credit_code.is_valid(code.lower()) and credit_code.is_valid(f" {code[:6]} {code[6:]} ")


@pytest.mark.parametrize("code", ["91350100M000100Y43", *[_constructed(s) for s in range(5)]])
def test_every_other_check_character_is_refused(code: str) -> None:
    wrong = [c for c in credit_code.ALPHABET if c != code[-1]]
    assert len(wrong) == 30
    assert {credit_code.problem(code[:17] + c) for c in wrong} == {"check"}


def test_a_single_changed_character_is_caught() -> None:
    """MOD 31 with weights coprime to 31 catches every substitution of one character."""
    code = VALID_CODE
    for i in range(17):
        for c in credit_code.ALPHABET:
            if c != code[i] and not (2 <= i < 8 and not c.isdigit()):
                assert credit_code.problem(code[:i] + c + code[i + 1 :]) == "check", (i, c)


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("91350100M000100Y4", "length"),
        ("91350100M000100Y431", "length"),
        ("", "length"),
        ("91350100M000100I43", "character"),
        ("91350100M00010OY43", "character"),
        ("9135010SM000100Y43", "character"),
        ("9135A100M000100Y43", "division"),
    ],
)
def test_malformed_codes_name_their_problem(code: str, why: str) -> None:
    assert credit_code.problem(code) == why


def test_weights_and_check_values_follow_the_standard() -> None:
    assert credit_code.WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    assert len(credit_code.ALPHABET) == 31 and not set("IOZSV") & set(credit_code.ALPHABET)


def test_application_problems_depend_on_the_region() -> None:
    fields = dict(company_name="Acme Ltd", legal_person="Jane Doe", contact_email=None)
    _, cn = kyc.application_problems(region="CN", registration_number="12345678", **fields)
    assert cn["registration_number"].code == "invalid_registration_number"
    _, gb = kyc.application_problems(region="GB", registration_number="12345678", **fields)
    assert gb == {}
    _, bad = kyc.application_problems(
        region="CN",
        company_name="A",
        registration_number=VALID_CODE[:17] + "0",
        legal_person="",
        contact_email="not-an-email",
    )
    assert set(bad) == {"company_name", "registration_number", "legal_person", "contact_email"}
    assert bad["registration_number"].details == {"problem": "check"}


def test_limits_apply_until_verified() -> None:
    settings = Settings(unverified_daily_limit=7, unverified_max_numbers=3)
    assert kyc.limits_for("pending", settings) == kyc.KycLimits(True, 7, 3)
    assert not kyc.limits_for("verified", settings).applies
    assert not kyc.limits_for("unverified", Settings(kyc_required=False)).applies
    assert not kyc.limits_for("unverified", settings, parent_verified=True).applies


# -- the workflow through the API ------------------------------------------------------------------------
def _client(app: Any, acc: AccountFixture) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=acc.headers
    )


async def _kyc_status(db: Database, account_id: str) -> str:
    async with db.read() as session:
        return str(await session.scalar(select(Account.kyc_status).where(Account.id == account_id)))


async def _apply_with_licence(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> str:
    r = await client.post("/v1/account/verification", json=body or APPLICATION)
    assert r.status_code == 201, r.text
    application_id = str(r.json()["id"])
    up = await client.post(
        f"/v1/account/verification/{application_id}/documents",
        files={"file": ("营业执照.png", PNG, "image/png")},
    )
    assert up.status_code == 201, up.text
    assert up.json()["content_type"] == "image/png"
    return application_id


async def test_apply_approve_then_verified(db: Database, app: Any) -> None:
    acc = await make_account(db, kyc_status="unverified")
    operator = await make_operator(db)
    async with _client(app, acc) as client, _client(app, operator) as staff:
        before = (await client.get("/v1/account/verification")).json()
        assert before["status"] == "unverified" and before["application"] is None
        assert before["limits"] == {
            "applies": True,
            "daily_limit": 20,
            "max_numbers": 5,
            "marketing_allowed": False,
        }
        application_id = await _apply_with_licence(client)
        assert await _kyc_status(db, acc.account_id) == "pending"
        again = await client.post("/v1/account/verification", json=APPLICATION)
        assert again.status_code == 409 and again.json()["error"]["code"] == "kyc_pending"

        queue = (await staff.get("/v1/operator/reviews/kyc")).json()
        assert queue["pending"] == 1 and queue["data"][0]["id"] == application_id
        detail = (await staff.get(f"/v1/operator/reviews/kyc/{application_id}")).json()
        assert detail["legal_person"] == "张三" and detail["account_name"] == "Acme"
        doc = detail["documents"][0]
        download = await staff.get(doc["url"])
        assert download.status_code == 200 and download.content == PNG
        assert download.headers["content-type"] == "image/png"

        r = await staff.post(f"/v1/operator/reviews/kyc/{application_id}/approve")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved" and r.json()["reviewed_by"] == f"key:{operator.key_id}"
        twice = await staff.post(f"/v1/operator/reviews/kyc/{application_id}/reject", json={"reason": "late"})
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "review_not_pending"
        after = (await client.get("/v1/account/verification")).json()
    assert after["status"] == "verified" and after["limits"]["applies"] is False
    assert after["application"]["status"] == "approved"
    assert await _kyc_status(db, acc.account_id) == "verified"
    async with db.read() as session:
        entries = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.account_id == acc.account_id)
                .where(AuditEntry.action.startswith("kyc."))
                .order_by(AuditEntry.seq)
            )
        ).all()
    assert [e.action for e in entries] == ["kyc.submitted", "kyc.document_added", "kyc.approved"]
    assert entries[0].actor_id == acc.key_id and entries[-1].actor_id == operator.key_id
    assert entries[-1].after is not None and entries[-1].after["kyc_status"] == "verified"
    assert all("张三" not in str(e.after) for e in entries)  # the legal person stays out of the log


async def test_reject_needs_reason_then_reapply(db: Database, app: Any) -> None:
    acc = await make_account(db, kyc_status="unverified")
    operator = await make_operator(db)
    async with _client(app, acc) as client, _client(app, operator) as staff:
        application_id = await _apply_with_licence(client)
        no_reason = await staff.post(
            f"/v1/operator/reviews/kyc/{application_id}/reject", json={"reason": "  "}
        )
        assert no_reason.status_code == 422 and no_reason.json()["error"]["code"] == "reason_required"
        assert await _kyc_status(db, acc.account_id) == "pending"
        r = await staff.post(f"/v1/operator/reviews/kyc/{application_id}/reject", json={"reason": "执照模糊"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        view = (await client.get("/v1/account/verification")).json()
        assert view["status"] == "rejected" and view["application"]["reason"] == "执照模糊"
        assert view["limits"]["applies"] is True
        late_doc = await client.post(
            f"/v1/account/verification/{application_id}/documents",
            files={"file": ("a.png", PNG, "image/png")},
        )
        assert late_doc.status_code == 409 and late_doc.json()["error"]["code"] == "review_not_pending"
        second = await _apply_with_licence(client)
        assert second != application_id
        assert (await client.get("/v1/account/verification")).json()["application"]["id"] == second
    assert await _kyc_status(db, acc.account_id) == "pending"
    async with db.read() as session:
        rejected = await session.scalar(select(AuditEntry).where(AuditEntry.action == "kyc.rejected"))
    assert rejected is not None and rejected.after is not None and rejected.after["reason"] == "执照模糊"


async def test_document_required_and_checked(db: Database, app: Any) -> None:
    acc = await make_account(db, kyc_status="unverified")
    operator = await make_operator(db)
    async with _client(app, acc) as client, _client(app, operator) as staff:
        r = await client.post("/v1/account/verification", json=APPLICATION)
        application_id = r.json()["id"]
        assert r.json()["documents"] == [] and r.json()["documents_required"] is True
        approve = await staff.post(f"/v1/operator/reviews/kyc/{application_id}/approve")
        assert approve.status_code == 422 and approve.json()["error"]["code"] == "document_required"
        fake = await client.post(
            f"/v1/account/verification/{application_id}/documents",
            files={"file": ("licence.png", b"MZ\x90\x00 not an image", "image/png")},
        )
        assert fake.status_code == 422 and fake.json()["error"]["code"] == "document_type_not_allowed"
        missing = await client.post(
            f"/v1/account/verification/{application_id}/documents",
            data={"x": "1"},
            files={"other": ("a.png", PNG, "image/png")},
        )
        assert missing.status_code == 422 and missing.json()["error"]["field"] == "file"
    assert await _kyc_status(db, acc.account_id) == "pending"


async def test_fields_are_validated(db: Database, app: Any) -> None:
    acc = await make_account(db, kyc_status="unverified")
    async with _client(app, acc) as client:
        bad = await client.post(
            "/v1/account/verification", json={**APPLICATION, "registration_number": VALID_CODE[:17] + "0"}
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_registration_number"
        assert bad.json()["error"]["field"] == "registration_number"
        two = await client.post(
            "/v1/account/verification", json={**APPLICATION, "company_name": "A", "legal_person": ""}
        )
        assert {p["field"] for p in two.json()["error"]["details"]["problems"]} == {
            "company_name",
            "legal_person",
        }
    assert await _kyc_status(db, acc.account_id) == "unverified"


async def test_foreign_region_takes_any_registration_number(db: Database, app: Any) -> None:
    acc = await make_account(db, kyc_status="unverified")
    async with db.write() as session:
        (await session.get(Account, acc.account_id)).default_region = "GB"  # type: ignore[union-attr]
    async with _client(app, acc) as client:
        r = await client.post(
            "/v1/account/verification", json={**APPLICATION, "registration_number": "SC123456"}
        )
    assert r.status_code == 201 and r.json()["registration_number"] == "SC123456"


async def test_permissions_and_operator_scope(db: Database, app: Any) -> None:
    acc = await make_account(db, kyc_status="unverified")
    reader = await make_account(db, name="Reader", scopes=("read",), kyc_status="unverified")
    async with _client(app, acc) as client, _client(app, reader) as read_only:
        assert (await read_only.get("/v1/account/verification")).status_code == 200
        denied = await read_only.post("/v1/account/verification", json=APPLICATION)
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
        application_id = await _apply_with_licence(client)
        for method, url in [
            ("GET", "/v1/operator/reviews/kyc"),
            ("GET", f"/v1/operator/reviews/kyc/{application_id}"),
            ("POST", f"/v1/operator/reviews/kyc/{application_id}/approve"),
            ("GET", "/v1/operator/reviews/messages"),
        ]:
            r = await client.request(method, url)
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope", url
    assert await _kyc_status(db, acc.account_id) == "pending"


async def test_tenant_isolation(db: Database, app: Any) -> None:
    a = await make_account(db, kyc_status="unverified")
    b = await make_account(db, name="Other", kyc_status="unverified")
    async with _client(app, a) as client_a, _client(app, b) as client_b:
        application_id = await _apply_with_licence(client_a)
        theirs = await client_b.post(
            f"/v1/account/verification/{application_id}/documents",
            files={"file": ("a.png", PNG, "image/png")},
        )
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "kyc_application_not_found"
        view_b = (await client_b.get("/v1/account/verification")).json()
    assert view_b["status"] == "unverified" and view_b["application"] is None
    async with db.read() as session:
        assert (
            len((await kyc.get_application(session, application_id, account_id=a.account_id)).documents) == 1
        )


async def test_verified_account_cannot_apply_and_operator_reset(db: Database, app: Any) -> None:
    grandfathered = await make_account(db)  # verified, like accounts migration 0007 found
    operator = await make_operator(db)
    async with _client(app, grandfathered) as client, _client(app, operator) as staff:
        r = await client.post("/v1/account/verification", json=APPLICATION)
        assert r.status_code == 409 and r.json()["error"]["code"] == "kyc_already_verified"
        url = f"/v1/operator/accounts/{grandfathered.account_id}/verification/reset"
        no_reason = await staff.post(url, json={"reason": ""})
        assert no_reason.status_code == 422 and no_reason.json()["error"]["code"] == "reason_required"
        reset = await staff.post(url, json={"reason": "存量账户补充认证"})
        assert reset.json() == {
            "account_id": grandfathered.account_id,
            "status": "unverified",
            "previous_status": "verified",
        }
        assert (await client.get("/v1/account/verification")).json()["limits"]["applies"] is True
        assert (await client.post("/v1/account/verification", json=APPLICATION)).status_code == 201
        pending_reset = await staff.post(url, json={"reason": "again"})
        assert pending_reset.status_code == 409 and pending_reset.json()["error"]["code"] == "kyc_pending"
        unknown = await staff.post("/v1/operator/accounts/acc_nope/verification/reset", json={"reason": "x"})
        assert unknown.status_code == 404
    async with db.read() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "kyc.reset"))
    assert (
        entry is not None and entry.actor_id == operator.key_id and entry.before == {"kyc_status": "verified"}
    )


async def test_queue_order_pending_first_oldest_first(db: Database, app: Any) -> None:
    accounts = [await make_account(db, name=f"A{i}", kyc_status="unverified") for i in range(3)]
    operator = await make_operator(db)
    ids = []
    for acc in accounts:
        async with _client(app, acc) as client:
            ids.append(await _apply_with_licence(client))
    async with _client(app, operator) as staff:
        await staff.post(f"/v1/operator/reviews/kyc/{ids[0]}/approve")
        queue = (await staff.get("/v1/operator/reviews/kyc")).json()
        assert [r["id"] for r in queue["data"]] == [ids[1], ids[2], ids[0]]
        assert queue["pending"] == 2
        only = (await staff.get("/v1/operator/reviews/kyc", params={"status": "approved"})).json()
        assert [r["id"] for r in only["data"]] == [ids[0]] and only["data"][0]["documents"] == 1
        bad = await staff.get("/v1/operator/reviews/kyc", params={"status": "nope"})
        assert bad.status_code == 422


async def test_sub_account_of_a_verified_enterprise_is_not_limited(db: Database, app: Any) -> None:
    parent = await make_account(db)
    sub = await make_account(db, name="Branch", kyc_status="unverified")
    async with db.write() as session:
        (await session.get(Account, sub.account_id)).parent_id = parent.account_id  # type: ignore[union-attr]
    async with _client(app, sub) as client:
        view = (await client.get("/v1/account/verification")).json()
    assert view["status"] == "unverified" and view["verified_by_parent"] is True
    assert view["limits"]["applies"] is False and view["limits"]["marketing_allowed"] is True


async def test_nul_in_ids_filters_and_fields_is_a_4xx(db: Database, app: Any) -> None:
    """PostgreSQL text cannot hold NUL: such a value is refused or not found, never a 500."""
    acc = await make_account(db, kyc_status="unverified")
    operator = await make_operator(db)
    async with _client(app, operator) as staff, _client(app, acc) as client:
        for url, status in [
            ("/v1/operator/reviews/kyc/a%00b", 404),
            ("/v1/operator/reviews/kyc?account_id=a%00", 422),
            ("/v1/operator/reviews/messages?cursor=%00", 422),
            ("/v1/operator/reviews/kyc/x/documents/%00", 404),
        ]:
            assert (await staff.get(url)).status_code == status, url
        r = await staff.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": ["\x00"], "decision": "approved"}
        )
        assert r.status_code == 422
        assert (
            await staff.post("/v1/operator/accounts/a%00/verification/reset", json={"reason": "x"})
        ).status_code == 404
        assert (await client.get("/v1/held-messages?cursor=%00")).status_code == 422
        r = await client.post("/v1/account/verification", json={**APPLICATION, "legal_person": "张\x00三"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "legal_person"
        r = await client.post("/v1/account/verification", json={**APPLICATION, "contact_email": "a\x00@b.cn"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "contact_email"
