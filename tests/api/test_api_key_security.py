"""API keys: IP allow-lists (IPv4, IPv6), expiry, revocation, rotation with overlap, HMAC signing, rate limits."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from hongyan.accounts import keys
from hongyan.accounts.models import ApiKey
from hongyan.audit.models import AuditEntry
from hongyan.core.clock import isoformat, utcnow
from hongyan.db.engine import Database
from support import AccountFixture


def client_from(app: Any, ip: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 41000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers or {})


async def new_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/api-keys", json={"name": "k", "scopes": ["send", "read"], **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def error_of(r: httpx.Response) -> tuple[int, str, str | None]:
    e = r.json()["error"]
    return r.status_code, e["code"], e["field"]


async def test_ip_allow_list_ipv4_and_ipv6(app: Any, client: httpx.AsyncClient) -> None:
    created = await new_key(client, allowed_cidrs=["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"])
    assert created["allowed_cidrs"] == ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]
    auth = {"Authorization": f"Bearer {created['key']}"}
    for ip, allowed in [("203.0.113.9", True), ("198.51.100.7", True), ("198.51.100.8", False),
                        ("2001:db8:1::5", True), ("2001:db9::1", False), ("::ffff:203.0.113.5", True),
                        ("10.0.0.1", False)]:
        async with client_from(app, ip, auth) as c:
            r = await c.get("/v1/messages")
        if allowed:
            assert r.status_code == 200, (ip, r.text)
        else:
            assert error_of(r) == (403, "ip_not_allowed", "Authorization"), ip
            assert ip in r.json()["error"]["message"]


async def test_bad_cidr_named_with_its_index(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/api-keys", json={"name": "k", "allowed_cidrs": ["10.0.0.0/8", "300.1.1.1"]})
    assert error_of(r) == (400, "invalid_cidr", "allowed_cidrs[1]")
    r = await client.post("/v1/api-keys", json={"name": "k", "expires_at": isoformat(utcnow() - timedelta(days=1))})
    assert error_of(r) == (400, "expiry_in_past", "expires_at")
    r = await client.post("/v1/api-keys", json={"name": "k", "scopes": []})
    assert error_of(r) == (400, "scopes_required", "scopes")


async def test_wrong_expired_revoked_and_missing_keys(client: httpx.AsyncClient, db: Database, app: Any) -> None:
    created = await new_key(client)
    key_id, secret = created["key"].split(".")
    async with client_from(app, "127.0.0.1") as anon:
        r = await anon.get("/v1/messages")
        assert error_of(r) == (401, "missing_api_key", "Authorization")
        r = await anon.get("/v1/messages", headers={"Authorization": f"Bearer {key_id}.{secret[:-1]}x"})
        assert error_of(r) == (401, "invalid_api_key", "Authorization")
        r = await anon.get("/v1/messages", headers={"Authorization": f"Basic {created['key']}"})
        assert error_of(r) == (401, "invalid_api_key", "Authorization")
        async with db.write() as session:
            await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(expires_at=utcnow() - timedelta(seconds=1)))
        r = await anon.get("/v1/messages", headers={"Authorization": f"Bearer {created['key']}"})
        assert error_of(r) == (401, "api_key_expired", "Authorization")
        other = await new_key(client)
        assert (await client.delete(f"/v1/api-keys/{other['id']}")).status_code == 200
        r = await anon.get("/v1/messages", headers={"Authorization": f"Bearer {other['key']}"})
        assert error_of(r) == (401, "api_key_revoked", "Authorization")


async def test_update_scopes_and_allow_list(client: httpx.AsyncClient, app: Any, db: Database) -> None:
    created = await new_key(client)
    r = await client.patch(f"/v1/api-keys/{created['id']}", json={"scopes": ["send"], "allowed_cidrs": ["192.0.2.0/24"]})
    assert r.status_code == 200 and r.json()["scopes"] == ["send"]
    async with client_from(app, "192.0.2.1", {"Authorization": f"Bearer {created['key']}"}) as c:
        r = await c.get("/v1/messages")
        assert error_of(r) == (403, "insufficient_scope", "Authorization")
    async with db.read() as session:
        entry = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "api_key.updated"))).one()
    assert entry.target_id == created["id"] and entry.before == {"scopes": ["send", "read"], "allowed_cidrs": []}
    assert entry.after == {"scopes": ["send"], "allowed_cidrs": ["192.0.2.0/24"]}


async def test_rotation_keeps_the_old_key_for_the_overlap(client: httpx.AsyncClient, db: Database, app: Any) -> None:
    created = await new_key(client, allowed_cidrs=["127.0.0.0/8"])
    r = await client.post(f"/v1/api-keys/{created['id']}/rotate", json={"overlap_hours": 2})
    assert r.status_code == 201, r.text
    rotated = r.json()
    assert rotated["allowed_cidrs"] == ["127.0.0.0/8"] and rotated["scopes"] == ["send", "read"]
    assert rotated["replaces"]["rotated_to"] == rotated["id"]
    async with client_from(app, "127.0.0.1") as c:
        for token in (created["key"], rotated["key"]):  # both work during the overlap
            assert (await c.get("/v1/messages", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        async with db.read() as session:
            old = await session.get(ApiKey, created["id"])
        assert old is not None and old.expires_at is not None
        assert timedelta(hours=1.9) < old.expires_at - utcnow() <= timedelta(hours=2)
        again = await client.post(f"/v1/api-keys/{created['id']}/rotate", json={})
        assert error_of(again) == (400, "api_key_already_rotated", "key_id")
        async with db.write() as session:  # the overlap ends
            await session.execute(update(ApiKey).where(ApiKey.id == created["id"]).values(expires_at=utcnow()))
        r = await c.get("/v1/messages", headers={"Authorization": f"Bearer {created['key']}"})
        assert error_of(r) == (401, "api_key_expired", "Authorization")
        assert (await c.get("/v1/messages", headers={"Authorization": f"Bearer {rotated['key']}"})).status_code == 200


async def test_other_accounts_keys_are_not_found(client: httpx.AsyncClient, db: Database, app: Any) -> None:
    from support import make_account

    other = await make_account(db, name="Other")
    for method, path in [("GET", f"/v1/api-keys/{other.key_id}"), ("PATCH", f"/v1/api-keys/{other.key_id}"),
                         ("POST", f"/v1/api-keys/{other.key_id}/rotate"), ("DELETE", f"/v1/api-keys/{other.key_id}")]:
        r = await client.request(method, path, json={"name": "x"} if method == "PATCH" else None)
        assert error_of(r) == (404, "api_key_not_found", "key_id"), path
    async with client_from(app, "127.0.0.1", other.headers) as c:
        assert (await c.get("/v1/messages")).status_code == 200  # untouched


# -- HMAC signing -------------------------------------------------------------------------------
def signed_headers(token: str, method: str, path: str, body: bytes, *, ts: int | None = None,
                   nonce: str | None = None) -> dict[str, str]:
    key_id, secret = token.split(".", 1)
    ts_text = str(int(time.time()) if ts is None else ts)
    nonce = nonce or secrets.token_hex(8)
    sig = keys.sign(secret, timestamp=ts_text, nonce=nonce, method=method, path_qs=path, body=body)
    return {"Authorization": f"HONGYAN-HMAC-SHA256 key={key_id},ts={ts_text},nonce={nonce},sig={sig}",
            "Content-Type": "application/json"}


async def test_hmac_signed_requests(client: httpx.AsyncClient, app: Any) -> None:
    created = await new_key(client, auth="hmac")
    assert created["auth"] == "hmac"
    token = created["key"]
    body = json.dumps({"to": "13800138000", "text": "signed"}).encode()
    async with client_from(app, "127.0.0.1") as c:
        r = await c.post("/v1/messages", content=body, headers=signed_headers(token, "POST", "/v1/messages", body))
        assert r.status_code == 202, r.text
        # a query string is signed too
        h = signed_headers(token, "GET", "/v1/messages?limit=5", b"")
        assert (await c.get("/v1/messages?limit=5", headers=h)).status_code == 200
        assert error_of(await c.get("/v1/messages?limit=6", headers=h))[1] == "invalid_signature"
        # replay of the same nonce
        h = signed_headers(token, "POST", "/v1/messages", body, nonce="n-1")
        assert (await c.post("/v1/messages", content=body, headers=h)).status_code == 202
        assert error_of(await c.post("/v1/messages", content=body, headers=h)) == (401, "signature_replayed", "Authorization")
        # body altered after signing
        h = signed_headers(token, "POST", "/v1/messages", body)
        tampered = body.replace(b"signed", b"SIGNED")
        assert error_of(await c.post("/v1/messages", content=tampered, headers=h)) == (401, "invalid_signature", "Authorization")
        # stale timestamp
        h = signed_headers(token, "POST", "/v1/messages", body, ts=int(time.time()) - 3600)
        assert error_of(await c.post("/v1/messages", content=body, headers=h)) == (401, "signature_expired", "Authorization")
        # the signing secret is never accepted as a bearer token
        r = await c.get("/v1/messages", headers={"Authorization": f"Bearer {token}"})
        assert error_of(r) == (401, "signature_required", "Authorization")
        r = await c.get("/v1/messages", headers={"Authorization": "HONGYAN-HMAC-SHA256 key=key_x"})
        assert error_of(r)[1] == "invalid_signature" and "ts, nonce, sig" in r.json()["error"]["message"]


async def test_signing_secret_is_sealed_at_rest(client: httpx.AsyncClient, db: Database) -> None:
    from sqlalchemy import text

    created = await new_key(client, auth="hmac")
    secret = created["key"].split(".", 1)[1]
    async with db.read() as session:
        raw = (await session.execute(text("SELECT signing_secret, secret_hash FROM api_key WHERE id = :id"),
                                     {"id": created["id"]})).one()
    assert raw.signing_secret.startswith("enc1:") and secret not in raw.signing_secret
    assert secret not in raw.secret_hash


# -- rate limits --------------------------------------------------------------------------------
@pytest.fixture
async def limited_app(db: Database, settings: Any) -> AsyncIterator[Any]:
    from hongyan.app import create_app

    application = create_app(settings.model_copy(update={"api_rate_per_key": 0.01, "api_rate_per_ip": 0.02}),
                             run_workers=False, db=db)
    async with application.router.lifespan_context(application):
        yield application


async def test_rate_limit_per_key_and_per_ip(limited_app: Any, account: AccountFixture, db: Database) -> None:
    # rate 0.01/s → a burst of 1 per key; 0.02/s → 1 per IP (burst = 2 s of the rate, at least 1)
    async with client_from(limited_app, "192.0.2.10", account.headers) as c:
        assert (await c.get("/v1/messages")).status_code == 200
        r = await c.get("/v1/messages")
        assert error_of(r) == (429, "rate_limited", None)
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["details"]["scope"] in ("API key", "IP address")
    async with db.write() as session:
        other = await keys.create_api_key(session, account_id=account.account_id, name="second", scopes=("read",),
                                          rate_limit_per_s=1000)
    async with client_from(limited_app, "192.0.2.11", {"Authorization": f"Bearer {other.token}"}) as c:
        assert (await c.get("/v1/messages")).status_code == 200  # another key and IP: own buckets
        r = await c.get("/v1/messages")
        assert error_of(r) == (429, "rate_limited", None) and r.json()["error"]["details"]["scope"] == "IP address"
    async with client_from(limited_app, "192.0.2.12") as c:  # no key at all: the IP limit still applies
        assert error_of(await c.get("/v1/messages"))[1] == "missing_api_key"
        assert error_of(await c.get("/v1/messages"))[1] == "rate_limited"


def test_token_bucket_refills() -> None:
    from hongyan.api.rate_limit import RateLimiter

    limiter = RateLimiter()
    assert [limiter.take("k", 5, now=100.0) for _ in range(10)] == [0.0] * 10  # burst = 2 s × 5/s
    assert limiter.take("k", 5, now=100.0) == pytest.approx(0.2)
    assert limiter.take("k", 5, now=100.2) == 0.0  # one token back after 1/rate seconds
    assert limiter.take("k", 5, now=100.2) > 0


def test_trusted_proxy_forwarded_for() -> None:
    from types import SimpleNamespace

    from hongyan.api.client import client_ip

    def request(peer: str, xff: str, trusted: str) -> Any:
        return SimpleNamespace(client=SimpleNamespace(host=peer), headers={"x-forwarded-for": xff},
                               app=SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(trusted_proxies=trusted))))

    assert client_ip(request("10.0.0.2", "198.51.100.1", "")) == "10.0.0.2"  # header ignored: no trusted proxy
    assert client_ip(request("10.0.0.2", "198.51.100.1", "10.0.0.0/8")) == "198.51.100.1"
    assert client_ip(request("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.3", "10.0.0.0/8")) == "198.51.100.1"
    assert client_ip(request("192.0.2.1", "198.51.100.1", "10.0.0.0/8")) == "192.0.2.1"  # untrusted peer


async def test_dates_without_a_utc_equivalent_are_a_clear_422(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/messages", params={"from": "0001-01-01T00:00:00+01:00"})
    assert error_of(r) == (422, "invalid_datetime", "from")
    r = await client.post("/v1/messages", json={"to": "13800138000", "text": "x",
                                                "scheduled_at": "0001-01-01T00:00:00+01:00"})
    assert error_of(r) == (422, "invalid_datetime", "scheduled_at")


# -- shared limits through Redis ------------------------------------------------------------------
REDIS_URL = os.environ.get("HONGYAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A real Redis (database 15, flushed per test); skipped locally when absent, a failure under CI=true."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Redis is required under CI=true and is not reachable: {exc}")
        pytest.skip(f"Redis not reachable: {exc}")
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


async def test_two_api_processes_share_limits_and_nonces_through_redis(
    redis_url: str, db: Database, settings: Any, account: AccountFixture
) -> None:
    """Two apps (as two API processes) with one Redis: one bucket per key between them, and a nonce used
    on one is refused on the other."""
    from hongyan.app import create_app

    shared = settings.model_copy(update={"redis_url": redis_url, "api_rate_per_key": 0.5, "api_rate_per_ip": 0})
    first, second = create_app(shared, run_workers=False, db=db), create_app(shared, run_workers=False, db=db)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        async with client_from(first, "192.0.2.20", account.headers) as a, client_from(second, "192.0.2.21", account.headers) as b:
            assert (await a.get("/v1/messages")).status_code == 200  # burst of 1 (2 s × 0.5/s)
            r = await b.get("/v1/messages")  # the other process: same bucket
            assert error_of(r) == (429, "rate_limited", None) and r.json()["error"]["details"]["scope"] == "API key"
            assert int(r.headers["Retry-After"]) in (1, 2)
        async with db.write() as session:
            created = await keys.create_api_key(session, account_id=account.account_id, name="signer",
                                                scopes=("read",), signing=True, rate_limit_per_s=1000)
        body = b""
        headers = signed_headers(created.token, "GET", "/v1/messages", body, nonce="shared-nonce")
        async with client_from(first, "192.0.2.22") as a, client_from(second, "192.0.2.22") as b:
            assert (await a.get("/v1/messages", headers=headers)).status_code == 200
            assert error_of(await b.get("/v1/messages", headers=headers)) == (401, "signature_replayed", "Authorization")


async def test_redis_down_falls_back_to_per_process_limits(db: Database, settings: Any, account: AccountFixture) -> None:
    from hongyan.app import create_app

    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0", "api_rate_per_key": 0.01,
                                         "api_rate_per_ip": 0})
    app = create_app(broken, run_workers=False, db=db)
    async with app.router.lifespan_context(app), client_from(app, "192.0.2.30", account.headers) as c:
        assert (await c.get("/v1/messages")).status_code == 200  # Redis unreachable: still served …
        assert error_of(await c.get("/v1/messages"))[1] == "rate_limited"  # … and still limited, locally
