"""Verification limits exactly at their boundaries (time moved back in the database, never slept): per number
(cool-down, hour, day), per IP, per API key; resend cool-down; a new code replaces the old one unless the
account keeps the previous one; refusals are 429 with Retry-After and recorded as blocked attempts."""

from __future__ import annotations

import httpx
from sqlalchemy import select, update
from tests.support import AccountFixture
from tests.verify.helpers import NUMBER, move_back, sent_code, start

from hongyan.accounts.models import Account
from hongyan.db.engine import Database
from hongyan.verify.models import VerifyBlock


async def _refused(client: httpx.AsyncClient, path: str, code: str, **body: object) -> httpx.Response:
    r = await client.post(path, json=body or None)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == code
    assert int(r.headers["Retry-After"]) >= 1
    return r


async def _blocks(db: Database) -> list[str]:
    async with db.read() as session:
        return list((await session.scalars(select(VerifyBlock.code).order_by(VerifyBlock.id))).all())


async def _account_verify(db: Database, account: AccountFixture, **choices: object) -> None:
    async with db.write() as session:
        await session.execute(
            update(Account).where(Account.id == account.account_id).values(settings={"verify": choices})
        )


async def test_per_number_cooldown_and_hour_limit(client: httpx.AsyncClient, db: Database) -> None:
    await start(client)
    r = await _refused(client, "/v1/verify", "verify_rate_limited_number", to=NUMBER)
    assert 55 <= int(r.headers["Retry-After"]) <= 60 and r.json()["error"]["field"] == "to"
    await start(client, to="+8613900139000")  # another number is not affected
    for _ in range(4):  # sends 2..5 of the hour, each after the cool-down
        await move_back(db, 61)
        await start(client)
    await move_back(db, 61)
    r = await _refused(client, "/v1/verify", "verify_rate_limited_number", to=NUMBER)
    assert r.json()["error"]["details"]["window"] == "hour" and r.json()["error"]["details"]["limit"] == 5
    # the oldest of the five was sent 5 × 61 s ago: it leaves the hour in 3600 − 305 s
    assert 3290 <= int(r.headers["Retry-After"]) <= 3296
    assert await _blocks(db) == ["verify_rate_limited_number", "verify_rate_limited_number"]


async def test_per_number_day_limit(client: httpx.AsyncClient, db: Database) -> None:
    for i in range(10):
        if i == 5:
            await move_back(db, 3601)  # the first five leave the hour, not the day
        await start(client)  # the 10th of the day still goes
        await move_back(db, 61)
    await move_back(db, 3601)  # none in the last hour now: only the day limit can refuse
    r = await _refused(client, "/v1/verify", "verify_rate_limited_number", to=NUMBER)
    assert r.json()["error"]["details"]["window"] == "day"


async def test_per_key_and_per_ip_limits_from_the_account_settings(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await _account_verify(db, account, per_key_minute=3, per_ip_hour=2, per_number_hour=50)
    await start(client, to="+8613800000001", device_ip="203.0.113.7")
    await start(client, to="+8613800000002", device_ip="203.0.113.7")
    r = await _refused(
        client, "/v1/verify", "verify_rate_limited_ip", to="+8613800000003", device_ip="203.0.113.7"
    )
    assert r.json()["error"]["field"] == "device_ip"
    await start(client, to="+8613800000004", device_ip="203.0.113.8")  # the 3rd of this key's minute
    await _refused(
        client, "/v1/verify", "verify_rate_limited_key", to="+8613800000005", device_ip="203.0.113.9"
    )
    async with db.read() as session:
        blocks = (
            await session.execute(select(VerifyBlock.code, VerifyBlock.client_ip).order_by(VerifyBlock.id))
        ).all()
    assert [tuple(b) for b in blocks] == [
        ("verify_rate_limited_ip", "203.0.113.7"),
        ("verify_rate_limited_key", "203.0.113.9"),
    ]
    r = await client.post("/v1/verify", json={"to": "+8613800000006", "device_ip": "not-an-ip"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "device_ip"


async def test_an_account_cannot_loosen_the_platform_limits(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await _account_verify(db, account, resend_cooldown_s=0, per_number_hour=100)
    await start(client)
    await _refused(
        client, "/v1/verify", "verify_rate_limited_number", to=NUMBER
    )  # the platform's 60 s still holds


async def test_resend_cooldown_and_the_new_code_replaces_the_old(
    client: httpx.AsyncClient, db: Database
) -> None:
    v = await start(client)
    first = await sent_code(db, v)
    await _refused(client, f"/v1/verify/{v['id']}/resend", "verify_resend_too_soon")
    await move_back(db, 61)
    r = await client.post(f"/v1/verify/{v['id']}/resend")
    assert r.status_code == 200, r.text
    resent = r.json()
    assert (
        resent["sends"] == 2
        and resent["message_id"] != v["message_id"]
        and resent["expires_at"] > v["expires_at"]
    )
    second = await sent_code(db, resent)
    if first != second:
        r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": first})
        assert r.json()["valid"] is False
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": second})
    assert r.json()["status"] == "approved"
    assert await _blocks(db) == ["verify_resend_too_soon"]


async def test_keep_previous_code_accepts_the_code_sent_before(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await _account_verify(db, account, keep_previous_code=True)
    v = await start(client, code_length=8)
    first = await sent_code(db, v)
    await move_back(db, 61)
    resent = (await client.post(f"/v1/verify/{v['id']}/resend")).json()
    second = await sent_code(db, resent)
    await move_back(db, 61)
    third = await sent_code(db, (await client.post(f"/v1/verify/{v['id']}/resend")).json())
    assert len({first, second, third}) == 3
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": first})
    assert r.json()["valid"] is False  # only the one before the latest is kept
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": second})
    assert r.json()["status"] == "approved"
