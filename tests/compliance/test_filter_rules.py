"""Content-filter rules through the service and the API, on SQLite and PostgreSQL: add, bulk add with
invalid lines reported by number, list with paging, delete, "test a text", the audit trail, the compiled
filter cache following every change, and who may see and change which list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hongyan.accounts import keys
from hongyan.accounts import service as accounts
from hongyan.audit.models import AuditEntry
from hongyan.audit.service import Actor
from hongyan.compliance import filter_rules
from hongyan.compliance.models import FilterVersion
from hongyan.config import Settings
from hongyan.db.engine import Database
from support import AccountFixture, make_account

STAFF = Actor("user", "usr_staff", "staff@example.com")


def _client(app: Any, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers
    )


@pytest.fixture
async def api(db: Database, settings: Settings) -> AsyncIterator[Any]:
    """The app without its workers: these tests send nothing."""
    from hongyan.app import create_app

    application = create_app(settings, run_workers=False, db=db)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def customer(api: Any, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(api, account.headers) as c:
        yield c


@pytest.fixture
async def operator(db: Database, api: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with db.write() as session:
        staff = await accounts.create_account(session, name="Platform")
        created = await keys.create_api_key(
            session, account_id=staff.id, name="ops", scopes=("operator",), allow_operator=True
        )
    async with _client(api, {"Authorization": f"Bearer {created.token}"}) as c:
        yield c


async def _audit_actions(db: Database, account_id: str | None) -> list[str]:
    owner = AuditEntry.account_id.is_(None) if account_id is None else AuditEntry.account_id == account_id
    async with db.read() as session:
        rows = await session.scalars(
            select(AuditEntry.action)
            .where(owner, AuditEntry.action.like("filter_rule.%"))
            .order_by(AuditEntry.seq)
        )
        return list(rows)


async def test_account_rule_lifecycle(
    customer: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    r = await customer.post("/v1/filter-rules", json={"pattern": " 代开发票 ", "category": "invoice"})
    assert r.status_code == 201, r.text
    rule = r.json()
    assert (rule["kind"], rule["pattern"], rule["action"], rule["scope"]) == (
        "keyword",
        "代开发票",
        "block",
        "account",
    )
    assert rule["id"].startswith("flt_") and rule["created_by"].startswith("key:")

    r = await customer.post("/v1/filter-rules/test", json={"text": "专业代 開 發 票"})
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == {
        "action": "block",
        "rule_id": rule["id"],
        "pattern": "代开发票",
        "category": "invoice",
        "scope": "account",
        "kind": "keyword",
    }
    assert r.json()["normalized"] == "专业代开发票"
    r = await customer.post("/v1/filter-rules/test", json={"text": "您的验证码是123456"})
    assert r.json()["verdict"] is None

    r = await customer.get("/v1/filter-rules")
    assert [x["id"] for x in r.json()["data"]] == [rule["id"]] and r.json()["total"] == 1

    r = await customer.delete(f"/v1/filter-rules/{rule['id']}")
    assert r.status_code == 200 and r.json() == {"id": rule["id"], "deleted": True}
    r = await customer.post("/v1/filter-rules/test", json={"text": "专业代 開 發 票"})
    assert r.json()["verdict"] is None
    r = await customer.delete(f"/v1/filter-rules/{rule['id']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "filter_rule_not_found"
    r = await customer.delete("/v1/filter-rules/flt_%00")
    assert r.status_code == 404
    assert await _audit_actions(db, account.account_id) == ["filter_rule.created", "filter_rule.deleted"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"kind": "regex", "pattern": "(unclosed"}, 422, "filter_pattern_invalid", "pattern"),
        ({"kind": "regex", "pattern": "(a+)+$"}, 422, "filter_pattern_invalid", "pattern"),
        ({"kind": "keyword", "pattern": "★★"}, 422, "filter_pattern_invalid", "pattern"),
        ({"kind": "url_deny", "pattern": "no domain"}, 422, "filter_pattern_invalid", "pattern"),
        ({"kind": "regex", "pattern": "x", "action": "allow"}, 422, "invalid_value", "action"),
        ({"kind": "keyword", "pattern": "x", "category": "c" * 33}, 422, "invalid_value", "category"),
        ({"kind": "phrase", "pattern": "x"}, 422, "invalid_value", "kind"),
        ({"kind": "keyword", "pattern": "a\u0000b"}, 422, "filter_pattern_invalid", "pattern"),
        ({"kind": "keyword", "pattern": "ab", "note": "\u0000"}, 422, "invalid_value", "note"),
    ],
)
async def test_invalid_rules_are_refused(
    customer: httpx.AsyncClient, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    r = await customer.post("/v1/filter-rules", json=body)
    assert r.status_code == status, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (code, field)


async def test_the_same_keyword_twice_is_a_conflict(customer: httpx.AsyncClient) -> None:
    r = await customer.post("/v1/filter-rules", json={"pattern": "网上赌场"})
    first = r.json()["id"]
    r = await customer.post("/v1/filter-rules", json={"pattern": "网 上 賭 場", "action": "review"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "filter_rule_exists"
    assert r.json()["error"]["details"] == {"id": first}


async def test_bulk_add_reports_invalid_lines_by_number(
    customer: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await customer.post("/v1/filter-rules", json={"pattern": "网贷"})
    text = "\n".join(["低息贷款", "", "网贷", "无抵押贷款", "低 息 貸 款", "x" * 501, "  ", "秒批"])
    r = await customer.post(
        "/v1/filter-rules/bulk", json={"text": text, "action": "review", "category": "finance"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["added"] == 3 and body["duplicates"] == 2 and body["duplicate_lines"] == [3, 5]
    assert [(x["line"], x["code"], x["field"]) for x in body["invalid"]] == [
        (2, "filter_pattern_invalid", "text"),
        (6, "filter_pattern_invalid", "text"),
        (7, "filter_pattern_invalid", "text"),
    ]
    r = await customer.get("/v1/filter-rules", params={"limit": 500})
    assert sorted(x["pattern"] for x in r.json()["data"]) == sorted(
        ["低息贷款", "网贷", "无抵押贷款", "秒批"]
    )
    assert {x["action"] for x in r.json()["data"] if x["pattern"] != "网贷"} == {"review"}

    r = await customer.post("/v1/filter-rules/bulk", json={"kind": "regex", "text": "\\d{6}\n(bad\n[a-"})
    assert r.status_code == 201 and r.json()["added"] == 1
    assert [x["line"] for x in r.json()["invalid"]] == [2, 3]
    assert "does not compile" in r.json()["invalid"][0]["message"]

    r = await customer.post("/v1/filter-rules/bulk", json={"text": "网贷\n\n"})  # nothing new: no change
    assert r.status_code == 200 and r.json()["added"] == 0
    actions = await _audit_actions(db, account.account_id)
    assert actions == ["filter_rule.created", "filter_rule.bulk_created", "filter_rule.bulk_created"]


async def test_listing_pages_newest_first(customer: httpx.AsyncClient) -> None:
    r = await customer.post("/v1/filter-rules/bulk", json={"text": "\n".join(f"词{i}" for i in range(5))})
    assert r.json()["added"] == 5
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await customer.get("/v1/filter-rules", params=params)).json()
        seen += [x["id"] for x in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True) and cursor is None
    r = await customer.get("/v1/filter-rules", params={"q": "词3"})
    assert [x["pattern"] for x in r.json()["data"]] == ["词3"]
    r = await customer.get("/v1/filter-rules", params={"q": "词\u00003"})  # a NUL in the search is dropped
    assert [x["pattern"] for x in r.json()["data"]] == ["词3"]
    r = await customer.get("/v1/filter-rules", params={"kind": "regex"})
    assert r.json()["data"] == []


async def test_platform_list_is_operator_only_and_applies_to_every_account(
    customer: httpx.AsyncClient, operator: httpx.AsyncClient, api: Any, db: Database, account: AccountFixture
) -> None:
    r = await customer.get("/v1/operator/filter-rules")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = await customer.post("/v1/operator/filter-rules", json={"pattern": "赌场"})
    assert r.status_code == 403

    r = await operator.post("/v1/operator/filter-rules", json={"pattern": "赌场", "category": "gambling"})
    assert r.status_code == 201, r.text
    platform_rule = r.json()
    assert platform_rule["scope"] == "platform"
    r = await operator.post(
        "/v1/operator/filter-rules/bulk", json={"kind": "url_deny", "text": "evil.cn\nbad url"}
    )
    assert r.json()["added"] == 1 and r.json()["invalid"][0]["line"] == 2

    # the platform rule applies to this account and to any other
    other = await make_account(db, name="Other")
    async with _client(api, other.headers) as other_client:
        for client in (customer, other_client):
            r = await client.post("/v1/filter-rules/test", json={"text": "线上賭場"})
            assert r.json()["verdict"]["scope"] == "platform", r.text
        # the account's own list shows its rules only, and the platform's rule cannot be deleted through it
        assert (await other_client.get("/v1/filter-rules")).json()["data"] == []
        r = await other_client.delete(f"/v1/filter-rules/{platform_rule['id']}")
        assert r.status_code == 404
        mine = (await customer.post("/v1/filter-rules", json={"pattern": "竞品"})).json()
        r = await other_client.delete(f"/v1/filter-rules/{mine['id']}")  # another account's rule
        assert r.status_code == 404
        r = await other_client.post("/v1/filter-rules/test", json={"text": "竞品"})
        assert r.json()["verdict"] is None  # account A's rule does not apply to B
    r = await customer.post("/v1/filter-rules/test", json={"text": "竞品"})
    assert r.json()["verdict"]["scope"] == "account"

    r = await operator.get("/v1/operator/filter-rules")
    assert {x["pattern"] for x in r.json()["data"]} == {"赌场", "evil.cn"}
    r = await operator.post("/v1/operator/filter-rules/test", json={"text": "竞品 http://evil.cn/x"})
    assert r.json()["verdict"]["pattern"] == "evil.cn"
    r = await operator.delete(
        f"/v1/operator/filter-rules/{mine['id']}"
    )  # an account's rule is not the platform's
    assert r.status_code == 404
    r = await operator.delete(f"/v1/operator/filter-rules/{platform_rule['id']}")
    assert r.status_code == 200
    assert await _audit_actions(db, None) == [
        "filter_rule.created",
        "filter_rule.bulk_created",
        "filter_rule.deleted",
    ]


async def test_account_settings_permission_is_needed(api: Any, db: Database) -> None:
    sender = await make_account(db, name="Sender", scopes=("send", "read"))
    async with _client(api, sender.headers) as c:
        for method, path, body in (
            ("GET", "/v1/filter-rules", None),
            ("POST", "/v1/filter-rules", {"pattern": "x"}),
            ("POST", "/v1/filter-rules/test", {"text": "x"}),
        ):
            r = await c.request(method, path, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", (path, r.text)


async def test_load_filter_recompiles_only_after_a_change(db: Database, account: AccountFixture) -> None:
    cache = filter_rules.CACHE
    async with db.read() as session:
        first = await filter_rules.load_filter(session, account.account_id)
    assert first.check("代开发票") is None
    compiled = cache.compiles
    async with db.read() as session:
        again = await filter_rules.load_filter(session, account.account_id)
    assert again is first and cache.compiles == compiled  # unchanged lists: the same compiled filter

    async with db.write() as session:
        await filter_rules.add_rule(
            session,
            account_id=account.account_id,
            kind="keyword",
            pattern="代开发票",
            actor=STAFF,
            authority=None,
        )
        version = await session.scalar(
            select(FilterVersion.version).where(FilterVersion.scope == account.account_id)
        )
    assert version == 1
    async with db.read() as session:
        changed = await filter_rules.load_filter(session, account.account_id)
    assert changed is not first and changed.platform is first.platform  # the platform list was not rebuilt
    assert changed.check("代 开 发 票") is not None

    async with db.write() as session:  # a platform change reaches the account's filter too
        await filter_rules.add_rule(
            session,
            account_id=None,
            kind="keyword",
            pattern="赌场",
            action="review",
            actor=STAFF,
            authority=None,
        )
    async with db.read() as session:
        both = await filter_rules.load_filter(session, account.account_id)
    assert both.platform is not first.platform and both.account is changed.account
    verdict = both.check("赌场")
    assert verdict is not None and verdict.scope == "platform" and verdict.action == "review"
