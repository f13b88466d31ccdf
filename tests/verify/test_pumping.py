"""SMS pumping protection: prefixes, the anomaly rules, and assess() against real databases — a synthetic
burst to one prefix is throttled while normal traffic to other destinations passes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from console_pages import csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts import keys
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.ids import new_ids
from hongyan.db.engine import Database
from hongyan.verify import pumping
from hongyan.verify.models import Verification, VerifyBlock, VerifyThrottle
from hongyan.verify.pumping import COUNTRY_NOT_ALLOWED, DESTINATION_THROTTLED, assess, prefix_of
from hongyan.verify.pumping_rules import (
    country_refusal,
    is_conversion_collapse,
    is_velocity_spike,
    velocity_threshold,
)
from support import AccountFixture, make_account


# -- pure rules ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("e164", "prefix"),
    [
        ("+8613800138000", "+86138"),
        ("+8619912345678", "+86199"),
        ("+14155550123", "+1415"),
        ("+2348031234567", "+234803"),
        ("+447700900123", "+44770"),
        ("+85291234567", "+852912"),
        ("+3581234", "+358"),  # a short number keeps 4 subscriber digits hidden
        ("+999123456789", "+9991"),  # no such country code: the first four digits
    ],
)
def test_prefix_of(e164: str, prefix: str) -> None:
    assert prefix_of(e164) == prefix


@pytest.mark.parametrize(
    ("recent", "baseline_24h", "spike"),
    [
        (1, 0, False),  # a fresh account's first code
        (29, 0, False),  # cold start: up to the minimum - 1 in the window passes
        (30, 0, True),  # ... the minimum is a spike when there is no history
        (500, 0, True),  # a pumping burst
        (30, 1440, False),  # 10 expected per 10 min: 30 is 3x, under the factor 8
        (80, 1440, False),  # exactly 8x is not above it
        (81, 1440, True),
        (200, 14400, False),  # a busy destination: 100 expected, 2x
        (801, 14400, True),
    ],
)
def test_velocity_rule(recent: int, baseline_24h: int, spike: bool) -> None:
    args = {"baseline_24h": baseline_24h, "window_s": 600, "factor": 8.0, "minimum": 30}
    assert is_velocity_spike(recent=recent, **args) is spike
    assert (recent > velocity_threshold(**args) or recent == 30 == velocity_threshold(**args)) is spike


@pytest.mark.parametrize(
    ("judged", "approved", "collapse"),
    [(29, 0, False), (30, 6, False), (30, 5, True), (100, 19, True), (100, 20, False), (0, 0, False)],
)
def test_conversion_rule(judged: int, approved: int, collapse: bool) -> None:
    assert is_conversion_collapse(judged=judged, approved=approved, floor=0.2, min_started=30) is collapse


def test_country_lists() -> None:
    none: frozenset[str] = frozenset()
    assert country_refusal("NG", platform=none, account=none) is None
    assert "NG" in (country_refusal("NG", platform=none, account=frozenset({"CN", "HK"})) or "")
    assert country_refusal("CN", platform=none, account=frozenset({"CN"})) is None
    assert (
        country_refusal("CN", platform=frozenset({"HK"}), account=frozenset({"CN"})) is not None
    )  # never widened
    assert country_refusal(None, platform=none, account=frozenset({"CN"})) is not None


# -- assess() against the databases --------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    pumping.clear_stats_cache()


async def add_verifications(
    db: Database,
    account_id: str,
    e164: str,
    count: int,
    *,
    at: datetime,
    spread_s: float = 0,
    status: str = "pending",
    country: str | None = None,
) -> None:
    """`count` verifications to numbers starting like `e164`, created from `at` over `spread_s` seconds."""
    from hongyan.messaging.numbers import normalize

    country = country or normalize(e164, "CN").region
    rows: list[dict[str, Any]] = []
    for i, vid in enumerate(new_ids("ver", count)):
        created = at + timedelta(seconds=spread_s * i / max(count, 1))
        number = e164[:-4] + f"{i % 10000:04d}"
        rows.append(
            {
                "id": vid,
                "account_id": account_id,
                "to_number": number,
                "to_bidx": f"b{i}",
                "to_country": country,
                "to_prefix": prefix_of(number),
                "code_hash": "0" * 64,
                "code_length": 6,
                "ttl_s": 300,
                "expires_at": created + timedelta(seconds=300),
                "status": status,
                "max_attempts": 5,
                "last_sent_at": created,
                "created_at": created,
                "updated_at": created,
                "approved_at": created + timedelta(seconds=20) if status == "approved" else None,
            }
        )
    async with db.write() as session:
        await session.execute(insert(Verification), rows)


async def ask(
    db: Database, settings: Settings, account_id: str, e164: str, country: str
) -> tuple[str, str] | None:
    async with db.write() as session:
        return await assess(
            session,
            settings,
            account_id=account_id,
            e164=e164,
            country=country,
            prefix=prefix_of(e164),
            client_ip="203.0.113.9",
            api_key_id="key_pumping_test",
        )


async def count(db: Database, model: Any, *conditions: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0)


async def test_burst_to_one_prefix_is_throttled_while_normal_traffic_passes(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    now = utcnow()
    acc = account.account_id
    # a day of normal traffic: ~2 codes an hour to +86138 and to +86139, mostly approved
    await add_verifications(
        db, acc, "+8613800000000", 48, at=now - timedelta(hours=24), spread_s=23 * 3600, status="approved"
    )
    await add_verifications(
        db, acc, "+8613900000000", 48, at=now - timedelta(hours=24), spread_s=23 * 3600, status="approved"
    )
    await add_verifications(db, acc, "+8613900000000", 3, at=now - timedelta(minutes=5))  # a few recent ones
    assert await ask(db, settings, acc, "+8613900001111", "CN") is None

    # the burst: 300 codes to +86138 in the last 5 minutes
    await add_verifications(db, acc, "+8613800000000", 300, at=now - timedelta(minutes=5), spread_s=290)
    refusal = await ask(db, settings, acc, "+8613800009999", "CN")
    assert refusal is not None and refusal[0] == DESTINATION_THROTTLED
    assert "+86138" in refusal[1] and "velocity spike" in refusal[1]

    async with db.read() as session:
        throttles = list((await session.execute(select(VerifyThrottle))).scalars())
    assert [(t.account_id, t.kind, t.value, t.reason, t.max_per_hour) for t in throttles] == [
        (acc, "prefix", "+86138", "velocity_spike", None)
    ]
    assert "301 in 10 min" in (throttles[0].detail or "")
    until = throttles[0].until
    assert timedelta(minutes=59) < until - now < timedelta(minutes=61)

    # the next request to the prefix is refused by the throttle itself (no second throttle)
    again = await ask(db, settings, acc, "+8613800001234", "CN")
    assert again is not None and again[0] == DESTINATION_THROTTLED and "paused until" in again[1]
    assert await count(db, VerifyThrottle) == 1
    # normal traffic to another prefix and another country passes
    assert await ask(db, settings, acc, "+8613900002222", "CN") is None
    assert await ask(db, settings, acc, "+85291234567", "HK") is None
    # and another account's traffic to the same prefix is not touched by this account's throttle
    other = await accounts_create(db)
    assert await ask(db, settings, other, "+8613800005555", "CN") is None

    blocks = await count(
        db,
        VerifyBlock,
        VerifyBlock.account_id == acc,
        VerifyBlock.to_prefix == "+86138",
        VerifyBlock.code == DESTINATION_THROTTLED,
        VerifyBlock.client_ip == "203.0.113.9",
        VerifyBlock.api_key_id == "key_pumping_test",
    )
    assert blocks == 2
    assert await count(db, VerifyBlock) == 2


async def accounts_create(db: Database, name: str = "Other") -> str:
    async with db.write() as session:
        return (await accounts.create_account(session, name=name)).id


async def test_cold_start_first_codes_pass(db: Database, settings: Settings, account: AccountFixture) -> None:
    acc = account.account_id
    await add_verifications(
        db,
        acc,
        "+14155550000",
        settings.verify_velocity_min - 2,
        at=utcnow() - timedelta(minutes=3),
        spread_s=60,
        country="US",
    )
    assert await ask(db, settings, acc, "+14155559999", "US") is None  # the minimum - 1 th
    await add_verifications(db, acc, "+14155550000", 1, at=utcnow() - timedelta(minutes=1), country="US")
    refusal = await ask(db, settings, acc, "+14155559998", "US")
    assert refusal is not None and refusal[0] == DESTINATION_THROTTLED


async def test_conversion_collapse_throttles(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    acc = account.account_id
    now = utcnow()
    # 40 codes to +234803 over the last hour, all expired unread (spread: no velocity spike), 2 approved
    await add_verifications(
        db,
        acc,
        "+2348030000000",
        38,
        at=now - timedelta(minutes=58),
        spread_s=40 * 60,
        status="expired",
        country="NG",
    )
    await add_verifications(
        db, acc, "+2348030000000", 2, at=now - timedelta(minutes=50), status="approved", country="NG"
    )
    # codes still within their lifetime are not judged yet: 40 fresh pending ones change nothing
    refusal = await ask(db, settings, acc, "+2348031112222", "NG")
    assert refusal is not None and refusal[0] == DESTINATION_THROTTLED and "conversion collapse" in refusal[1]
    async with db.read() as session:
        throttle = (await session.execute(select(VerifyThrottle))).scalar_one()
    assert (throttle.kind, throttle.value, throttle.reason) == ("prefix", "+234803", "conversion_collapse")
    assert "2/40 approved in 1 h" in (throttle.detail or "")


async def test_pending_codes_are_not_judged(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    acc = account.account_id
    await add_verifications(
        db, acc, "+2348030000000", 25, at=utcnow() - timedelta(minutes=2), spread_s=60, country="NG"
    )
    assert await ask(db, settings, acc, "+2348031112222", "NG") is None


async def test_allow_list(db: Database, settings: Settings, account: AccountFixture) -> None:
    acc = account.account_id
    async with db.write() as session:
        await session.execute(
            update(Account).where(Account.id == acc).values(settings={"verify": {"countries": ["CN", "hk"]}})
        )
    assert await ask(db, settings, acc, "+8613800138000", "CN") is None
    assert await ask(db, settings, acc, "+85291234567", "HK") is None
    refusal = await ask(db, settings, acc, "+2348031234567", "NG")
    assert refusal is not None and refusal[0] == COUNTRY_NOT_ALLOWED and "NG" in refusal[1]
    assert (
        await count(db, VerifyBlock, VerifyBlock.code == COUNTRY_NOT_ALLOWED, VerifyBlock.to_country == "NG")
        == 1
    )
    # the platform list bounds every account
    narrow = settings.model_copy(update={"verify_countries": "CN"})
    refusal = await ask(db, narrow, acc, "+85291234567", "HK")
    assert refusal is not None and refusal[0] == COUNTRY_NOT_ALLOWED and "platform" in refusal[1]


async def test_throttle_expiry_lift_and_hourly_cap(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    acc = account.account_id
    now = utcnow()
    async with db.write() as session:
        session.add_all(
            [
                VerifyThrottle(
                    account_id=None,
                    kind="country",
                    value="NG",
                    reason="operator",
                    until=now - timedelta(seconds=1),
                    created_at=now - timedelta(hours=1),
                ),  # expired
                VerifyThrottle(
                    account_id=None,
                    kind="prefix",
                    value="+234805",
                    reason="operator",
                    until=now + timedelta(hours=1),
                    created_at=now,
                    lifted_at=now,
                ),  # lifted
                VerifyThrottle(
                    account_id=acc,
                    kind="prefix",
                    value="+234809",
                    reason="operator",
                    max_per_hour=3,
                    until=now + timedelta(hours=1),
                    created_at=now,
                ),
            ]
        )
    assert await ask(db, settings, acc, "+2348031234567", "NG") is None
    assert await ask(db, settings, acc, "+2348051234567", "NG") is None
    assert await ask(db, settings, acc, "+2348091234567", "NG") is None
    await add_verifications(db, acc, "+2348090000000", 3, at=now - timedelta(minutes=30), country="NG")
    refusal = await ask(db, settings, acc, "+2348091234567", "NG")
    assert refusal is not None and "limited to 3 an hour" in refusal[1]


# -- operator API ----------------------------------------------------------------------------------------
def _client(app: Any, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers
    )


@pytest.fixture
async def operator(db: Database, app: Any) -> httpx.AsyncClient:
    async with db.write() as session:
        staff = await accounts.create_account(session, name="Platform")
        created = await keys.create_api_key(
            session, account_id=staff.id, name="ops", scopes=("operator",), allow_operator=True
        )
    return _client(app, {"Authorization": f"Bearer {created.token}"})


async def test_operator_api(
    db: Database, settings: Settings, app: Any, account: AccountFixture, operator: httpx.AsyncClient
) -> None:
    acc = account.account_id
    await add_verifications(
        db, acc, "+2348030000000", 40, at=utcnow() - timedelta(minutes=4), spread_s=100, country="NG"
    )
    assert await ask(db, settings, acc, "+2348031234567", "NG") is not None  # spike: throttled
    assert await ask(db, settings, acc, "+2348031234568", "NG") is not None
    assert await ask(db, settings, acc, "+8613800138000", "CN") is None

    async with operator as ops, _client(app, account.headers) as customer:
        blocked = (await ops.get("/v1/operator/verify/blocked")).json()
        assert blocked["total"] == 2 and blocked["by_code"] == {DESTINATION_THROTTLED: 2}
        assert blocked["groups"][0] | {"last_at": None} == {
            "code": DESTINATION_THROTTLED,
            "country": "NG",
            "prefix": "+234803",
            "count": 2,
            "last_at": None,
        }
        assert len(blocked["latest"]) == 2 and blocked["latest"][0]["account_id"] == acc
        assert "to_number" not in blocked["latest"][0] and "to_bidx" not in blocked["latest"][0]
        [auto] = blocked["throttles"]
        assert (auto["kind"], auto["value"], auto["reason"], auto["active"]) == (
            "prefix",
            "+234803",
            "velocity_spike",
            True,
        )

        conversion = (await ops.get("/v1/operator/verify/conversion", params={"kind": "prefix"})).json()
        assert {
            "destination": "+234803",
            "started": 40,
            "judged": 0,
            "approved": 0,
            "conversion": None,
        } in conversion["data"]

        # a customer key cannot use the operator routes; it sees its own blocks
        assert (await customer.get("/v1/operator/verify/blocked")).status_code == 403
        assert (await customer.post(f"/v1/operator/verify/throttles/{auto['id']}/lift")).status_code == 403
        own = (await customer.get("/v1/verify/blocked")).json()
        assert own["total"] == 2 and "account_id" not in own["latest"][0]

        # lift: traffic resumes, and the same burst does not re-throttle at once
        lifted = await ops.post(f"/v1/operator/verify/throttles/{auto['id']}/lift")
        assert lifted.status_code == 200 and lifted.json()["active"] is False
        assert (await ops.post(f"/v1/operator/verify/throttles/{auto['id']}/lift")).json()["error"][
            "code"
        ] == ("verify_throttle_not_active")
        assert (await ops.post("/v1/operator/verify/throttles/999999/lift")).status_code == 404
        assert (await ops.post("/v1/operator/verify/throttles/abc/lift")).status_code == 404
        assert await ask(db, settings, acc, "+2348031234569", "NG") is None

        # a manual platform-wide cap on a country
        bad = await ops.post("/v1/operator/verify/throttles", json={"kind": "country", "value": "XX"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "verify_throttle_invalid"
        bad = await ops.post("/v1/operator/verify/throttles", json={"kind": "prefix", "value": "2348"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "value"
        bad = await ops.post(
            "/v1/operator/verify/throttles", json={"kind": "country", "value": "ng", "minutes": 0}
        )
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "minutes"
        made = await ops.post(
            "/v1/operator/verify/throttles",
            json={"kind": "country", "value": "ng", "minutes": 120, "note": "carrier report"},
        )
        assert made.status_code == 201, made.text
        manual = made.json()
        assert (manual["value"], manual["reason"], manual["account_id"], manual["max_per_hour"]) == (
            "NG",
            "operator",
            None,
            None,
        )
        refusal = await ask(db, settings, acc, "+2348051234567", "NG")
        assert refusal is not None and "country NG" in refusal[1]
        listed = (await ops.get("/v1/operator/verify/throttles")).json()["data"]
        assert [t["id"] for t in listed] == [manual["id"]]
        everything = (await ops.get("/v1/operator/verify/throttles", params={"active": "false"})).json()[
            "data"
        ]
        assert len(everything) == 2

    async with db.read() as session:
        actions = (
            await session.execute(select(AuditEntry.action, AuditEntry.target_id).order_by(AuditEntry.seq))
        ).all()
    assert [a for a, _ in actions if a.startswith("verify.")] == [
        "verify.throttle_lifted",
        "verify.throttle_created",
    ]


# -- console page (review back office) ----------------------------------------------------------------
PAGE = "/console/review/verify-traffic"


async def _burst(db: Database, settings: Settings, account_id: str) -> None:
    """40 codes to +234803 in the last minutes, then two requests refused by the spike's throttle, and
    a day of approved traffic to +86138."""
    now = utcnow()
    await add_verifications(
        db, account_id, "+8613800000000", 30, at=now - timedelta(hours=20), spread_s=3600, status="approved"
    )
    await add_verifications(
        db, account_id, "+2348030000000", 40, at=now - timedelta(minutes=4), spread_s=100, country="NG"
    )
    pumping.clear_stats_cache()
    for suffix in ("1111", "2222"):
        async with db.write() as session:
            e164 = "+234803123" + suffix
            assert (
                await pumping.assess(
                    session,
                    settings,
                    account_id=account_id,
                    e164=e164,
                    country="NG",
                    prefix=prefix_of(e164),
                    client_ip="198.51.100.7",
                )
                is not None
            )


async def test_staff_see_blocked_traffic_and_lift_a_throttle(
    app: Any, db: Database, settings: Settings, account: AccountFixture
) -> None:
    await _burst(db, settings, account.account_id)
    customer = await signed_in_client(app, db, account, email="owner@acme.example")
    assert (await customer.get(PAGE)).status_code == 403

    staff = await make_account(db, name="Platform")
    reviewer = await signed_in_client(
        app, db, staff, email="reviewer@hongyan.example", platform_role="reviewer"
    )
    page = await reviewer.get(PAGE)
    assert page.status_code == 200
    html = page.text
    assert 'data-review-tab="verify"' in html and 'aria-current="page"' in html
    assert re.search(r"data-total>2<", html)
    group = re.search(r'<tr data-group="verify_destination_throttled\|\+234803">(.*?)</tr>', html, re.S)
    assert group and "目的地被限流" in group.group(1) and "data-count>2<" in group.group(1)
    throttle = re.search(r'<tr data-throttle="(\d+)" data-target="\+234803">(.*?)</tr>', html, re.S)
    assert throttle and "流量突增" in throttle.group(2) and "Acme" in throttle.group(2)
    conversion = re.search(
        r'id="vb-conversion-prefix".*?<tr data-destination="\+86138">(.*?)</tr>', html, re.S
    )
    assert conversion and "100.0%" in conversion.group(1)
    assert "198.51.100.7" in html and "+2348031231111" not in html  # numbers are never shown

    # a manual throttle: an error next to the field, then a platform-wide cap on a country
    r = await reviewer.post(
        f"{PAGE}/throttles",
        data={"csrf_token": csrf_of(html), "kind": "prefix", "value": "2348", "minutes": "60"},
    )
    assert r.status_code == 422
    assert field_error(r.text, "value").startswith("限流设置无效")
    assert 'value="2348"' in r.text
    r = await reviewer.post(
        f"{PAGE}/throttles",
        data={
            "csrf_token": csrf_of(html),
            "kind": "country",
            "value": "ng",
            "max_per_hour": "abc",
            "minutes": "60",
        },
    )
    assert r.status_code == 422 and field_error(r.text, "max_per_hour")
    r = await reviewer.post(
        f"{PAGE}/throttles",
        data={
            "csrf_token": csrf_of(html),
            "kind": "country",
            "value": "ng",
            "max_per_hour": "20",
            "minutes": "90",
            "note": "carrier report",
        },
    )
    assert r.status_code == 303
    html = (await reviewer.get(PAGE)).text
    assert "发往 NG 的验证码已被限流" in html
    manual = re.search(r'<tr data-throttle="\d+" data-target="NG">(.*?)</tr>', html, re.S)
    assert manual and "每小时 20 条" in text_of(manual.group(1)) and "全部账户" in manual.group(1)

    # lift the automatic one: it leaves the list, and the decision is in the audit log
    r = await reviewer.post(f"{PAGE}/throttles/{throttle.group(1)}/lift", data={"csrf_token": csrf_of(html)})
    assert r.status_code == 303
    html = (await reviewer.get(PAGE)).text
    assert "已解除对 +234803 的限流" in html and 'data-target="+234803"' not in html
    r = await reviewer.post(f"{PAGE}/throttles/{throttle.group(1)}/lift", data={"csrf_token": csrf_of(html)})
    assert r.status_code == 303 and "该限流已经结束" in (await reviewer.get(PAGE)).text
    assert (
        await reviewer.post(f"{PAGE}/throttles/99999/lift", data={"csrf_token": csrf_of(html)})
    ).status_code == 404
    async with db.read() as session:
        lifted = await session.get(VerifyThrottle, int(throttle.group(1)))
        actions = (await session.execute(select(AuditEntry.action, AuditEntry.actor_label))).all()
    assert lifted is not None and lifted.lifted_at is not None
    assert ("verify.throttle_lifted", "reviewer@hongyan.example") in actions
    assert ("verify.throttle_created", "reviewer@hongyan.example") in actions

    english = (await reviewer.get(PAGE, params={"hours": 1}, headers={"Accept-Language": "en"})).text
    assert "Verification traffic" in english
    own_token = csrf_of((await customer.get("/console")).text)
    refused = await customer.post(
        f"{PAGE}/throttles", data={"csrf_token": own_token, "kind": "country", "value": "CN"}
    )
    assert refused.status_code == 403 and "operator.review" in refused.text


# -- through POST /v1/verify -------------------------------------------------------------------------------
async def test_burst_through_the_api_is_refused_while_other_prefixes_pass(
    db: Database, settings: Settings, app: Any, account: AccountFixture
) -> None:
    """The real path: the verify service asks assess() before each code; a burst to one new prefix is cut
    at the cold-start minimum (5 here) while codes to a prefix with normal history keep going out."""
    settings.verify_velocity_min = 5  # the app shares this settings object
    acc = account.account_id
    await add_verifications(
        db,
        acc,
        "+8613900000000",
        48,
        at=utcnow() - timedelta(hours=24),
        spread_s=23 * 3600,
        status="approved",
    )
    async with _client(app, account.headers) as client:
        answers = [
            await client.post(
                "/v1/verify", json={"to": f"+86138001380{i:02d}", "device_ip": f"198.51.100.{i}"}
            )
            for i in range(8)
        ]
        assert [r.status_code for r in answers] == [201, 201, 201, 201, 429, 429, 429, 429], answers[-1].text
        error = answers[4].json()["error"]
        assert error["code"] == DESTINATION_THROTTLED and error["field"] == "to"
        assert "+86138" in error["message"] and "velocity spike" in error["message"]
        assert "paused until" in answers[5].json()["error"]["message"]
        normal = await client.post("/v1/verify", json={"to": "+8613900139000", "device_ip": "198.51.100.50"})
        assert normal.status_code == 201, normal.text
        own = (await client.get("/v1/verify/blocked")).json()
    assert own["by_code"] == {DESTINATION_THROTTLED: 4}
    assert [(g["prefix"], g["count"]) for g in own["groups"]] == [("+86138", 4)]
    assert (
        await count(db, VerifyThrottle, VerifyThrottle.value == "+86138", VerifyThrottle.account_id == acc)
        == 1
    )
    assert await count(db, Verification, Verification.to_prefix == "+86138") == 4
