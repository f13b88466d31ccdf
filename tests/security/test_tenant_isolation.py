"""Tenant isolation, for EVERY route with an id in its path (API and console), found at run time.

Account A owns one object of each kind. Account B calls every such route with A's ids and with made-up
ids of the same shape: the two answers must be identical (after swapping the ids), so B can neither read
nor change A's objects, nor learn that they exist. A route with a path parameter this file does not know
fails the test: new routes must be added here (that is the point).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from console_pages import csrf_of, signed_in_client
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account, ApiKey, EmailMessage
from hongyan.billing import packages
from hongyan.core import ids
from hongyan.db.engine import Database
from hongyan.messaging.models import Batch, Message
from hongyan.webhooks.models import WebhookEndpoint
from support import AccountFixture, make_account, wait_until

SECRET_TEXT = "isolation-secret-7731"

# Routes with an id that are deliberately reachable without an account: capability URLs and signed callbacks.
PUBLIC = {
    "/pay/sandbox/{order_id}": "sandbox payment page: the unguessable order id is the capability (like a payment link)",
    "/v1/billing/payments/{provider}/callback": "provider callback, authenticated by the provider's signature",
    "/console/lang/{lang}": "language switch, no object",
    "/console/{rest:path}": "console 404 page",
}


def all_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route with a path parameter, across included routers."""
    found: list[tuple[str, str]] = []

    def walk(routes: Any) -> None:
        for route in routes:
            original = getattr(route, "original_router", None)
            if original is not None:
                walk(original.routes)
                continue
            path = getattr(route, "path", "")
            if "{" in path:
                for method in sorted(getattr(route, "methods", None) or ()):
                    if method != "HEAD":
                        found.append((method, path))

    walk(app.routes)
    return sorted(set(found))


async def objects_of_a(client: httpx.AsyncClient, db: Database, a: AccountFixture) -> dict[str, str]:
    """One object of each kind owned by A; param name → id."""
    h = a.headers
    msg = await client.post("/v1/messages", json={"to": "13800138001", "text": SECRET_TEXT,
                                                  "scheduled_at": "2099-01-01T00:00:00Z"}, headers=h)
    assert msg.status_code == 202, msg.text
    bat = await client.post("/v1/batches", json={"text": SECRET_TEXT, "recipients": [{"to": "13800138002"}],
                                                 "scheduled_at": "2099-01-01T00:00:00Z"}, headers=h)
    assert bat.status_code == 202, bat.text
    hook = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=h)
    key = await client.post("/v1/api-keys", json={"name": "a-key"}, headers=h)
    order = await client.post("/v1/billing/recharges", json={"amount": "100"}, headers=h)
    assert order.status_code == 201, order.text
    sub_account = await client.post("/v1/sub-accounts", json={"name": "a-shop"}, headers=h)
    assert sub_account.status_code == 201, sub_account.text
    invitation = await client.post("/v1/members", json={"email": "invitee@a.example", "role": "viewer"}, headers=h)
    assert invitation.status_code == 201, invitation.text
    contact = await client.post("/v1/contacts", json={"phone": "13800138003", "name": SECRET_TEXT}, headers=h)
    assert contact.status_code == 201, contact.text
    group = await client.post("/v1/groups", json={"name": "a-group"}, headers=h)
    assert group.status_code == 201, group.text
    upload = await client.post("/v1/imports", headers=h,
                               files={"file": ("a.csv", f"phone,name\n13800138004,{SECRET_TEXT}\n".encode())})
    assert upload.status_code == 201, upload.text
    campaign = await client.post("/v1/campaigns", headers=h, json={
        "name": "a-campaign", "text": SECRET_TEXT, "numbers": ["13800138005"], "message_type": "notification",
        "schedule": {"mode": "at", "at": "2099-01-01T09:00"}, "time_zone": "UTC"})
    assert campaign.status_code == 201, campaign.text
    assert (await client.post(f"/v1/campaigns/{campaign.json()['id']}/start", headers=h)).status_code == 200
    from datetime import UTC, datetime

    from hongyan.campaigns import runs
    from hongyan.config import Settings

    await runs.fire(db, Settings(), campaign_id=campaign.json()["id"], now=datetime(2099, 1, 1, 9, 0, 1, tzinfo=UTC))
    run_id = (await client.get(f"/v1/campaigns/{campaign.json()['id']}", headers=h)).json()["runs"][0]["id"]
    # compliance and verification objects
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    sig = await client.post("/v1/signatures", headers=h, json={"name": "甲公司", "purpose": SECRET_TEXT,
                                                               "source": "company"})
    assert sig.status_code == 201, sig.text
    doc = await client.post(f"/v1/signatures/{sig.json()['id']}/documents", headers=h,
                            files={"file": ("license.png", png, "image/png")})
    assert doc.status_code == 201, doc.text
    tpl = await client.post("/v1/templates", headers=h, json={"name": "t", "message_type": "notification",
                                                              "body": "您好${name}，" + SECRET_TEXT})
    assert tpl.status_code == 201, tpl.text
    rule = await client.post("/v1/filter-rules", headers=h, json={"kind": "keyword", "pattern": "秘密词",
                                                                  "action": "block"})
    assert rule.status_code == 201, rule.text
    async with db.write() as session:  # an application needs an account that is not verified yet …
        await session.execute(update(Account).where(Account.id == a.account_id).values(kyc_status="unverified"))
    kyc = await client.post("/v1/account/verification", headers=h, json={
        "company_name": "甲公司", "registration_number": "91350100M000100Y43", "legal_person": "张三"})
    assert kyc.status_code == 201, kyc.text
    async with db.write() as session:  # … and A sends as a verified account
        await session.execute(update(Account).where(Account.id == a.account_id).values(kyc_status="verified"))
    ver = await client.post("/v1/verify", headers=h, json={"to": "13800138007"})
    assert ver.status_code == 201, ver.text
    async with db.write() as session:
        plan = await packages.create_product(session, kind="subscription", name="plan", currency="CNY",
                                             price_micros=1_000_000, units=100)
        sub = await packages.subscribe(session, account_id=a.account_id, product_id=plan.id, actor="test")
        member = await accounts.create_user(session, email="member@a.example", password="a-member-password",
                                            account_id=a.account_id, role="developer")
        # the invitation's email (the staff outbox lists platform emails; customers see none of it)
        email_id = await session.scalar(select(EmailMessage.id).where(EmailMessage.to_address == "invitee@a.example"))
    return {
        "message_id": msg.json()["id"], "batch_id": bat.json()["id"], "endpoint_id": hook.json()["id"],
        "key_id": key.json()["id"], "order_id": order.json()["id"], "subscription_id": sub.id,
        "account_id": a.account_id, "product_id": plan.id,
        "user_id": member.id, "sub_account_id": sub_account.json()["id"], "invitation_id": invitation.json()["id"],
        "email_id": str(email_id),
        "contact_id": contact.json()["id"], "group_id": group.json()["id"], "import_id": upload.json()["id"],
        "campaign_id": campaign.json()["id"], "run_id": run_id,
        "signature_id": sig.json()["id"], "item_id": sig.json()["id"], "document_id": doc.json()["id"],
        "template_id": tpl.json()["id"], "rule_id": rule.json()["id"], "application_id": kyc.json()["id"],
        "verification_id": ver.json()["id"], "number": "+8613800138006",
        # operator-only kinds: B (a customer) is refused the same way for real and made-up ids
        "ref": "chn_" + "0" * 26, "route_id": "rte_" + "0" * 26, "card_id": "rc_" + "0" * 26,
        "channel_id": "chn_" + "0" * 26, "throttle_id": "thr_" + "0" * 26,
    }


def fakes_for(objects: dict[str, str]) -> dict[str, str]:
    """A made-up id per object; one id named twice (a signature is also a review item) gets one fake."""
    by_value: dict[str, str] = {}
    return {k: by_value.setdefault(v, fake_like(v)) for k, v in objects.items()}


def fake_like(value: str) -> str:
    if value.startswith("+"):  # a phone number (suppression list): another valid number nobody listed
        return value[:-2] + ("99" if not value.endswith("99") else "98")
    prefix = value.split("_", 1)[0]
    return ids.new_id(prefix)


def fill(path: str, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        if name not in values:
            pytest.fail(f"{path}: add an object for path parameter '{name}' to objects_of_a (tenant isolation)")
        return values[name]

    return re.sub(r"\{([^}]+)\}", sub, path)


BODIES = {"PATCH": {"name": "hijack", "spend_limit": "1"}, "POST": {}, "PUT": {}}


async def test_api_routes_do_not_cross_accounts(app: Any, db: Database) -> None:
    a = await make_account(db, name="A")
    b = await make_account(db, name="B")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        objects = await objects_of_a(client, db, a)
        fakes = fakes_for(objects)
        checked = 0
        for method, path in all_routes(app):
            if path in PUBLIC or path.startswith("/console"):
                continue
            real_url, fake_url = fill(path, objects), fill(path, fakes)
            body = BODIES.get(method)
            real = await client.request(method, real_url, json=body, headers=b.headers)
            fake = await client.request(method, fake_url, json=body, headers=b.headers)
            assert real.status_code == fake.status_code, (method, path, real.text, fake.text)
            assert real.status_code >= 400, (method, path, real.status_code, real.text)
            swapped = real.text
            for name, value in objects.items():
                swapped = swapped.replace(value, fakes[name])
            assert swapped == fake.text, (method, path, real.text, fake.text)
            assert SECRET_TEXT not in real.text
            checked += 1
        assert checked >= 15
        # A's objects are untouched and still A's
        for url in (f"/v1/messages/{objects['message_id']}", f"/v1/batches/{objects['batch_id']}",
                    f"/v1/api-keys/{objects['key_id']}", f"/v1/billing/recharges/{objects['order_id']}"):
            assert (await client.get(url, headers=a.headers)).status_code == 200, url
    async with db.read() as session:
        message = await session.get(Message, objects["message_id"])
        key = await session.get(ApiKey, objects["key_id"])
        endpoint = await session.get(WebhookEndpoint, objects["endpoint_id"])
        batch = await session.get(Batch, objects["batch_id"])
        batch_statuses = set((await session.scalars(select(Message.status).where(Message.batch_id == batch.id))).all())  # type: ignore[union-attr]
    assert message is not None and message.status == "scheduled"
    assert batch_statuses == {"scheduled"}
    assert key is not None and key.revoked_at is None and key.rotated_to is None and key.name == "a-key"
    assert endpoint is not None and endpoint.enabled


async def test_list_filters_with_another_accounts_ids_are_empty(app: Any, db: Database) -> None:
    a = await make_account(db, name="A")
    b = await make_account(db, name="B")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        objects = await objects_of_a(client, db, a)
        for url in (f"/v1/messages?batch={objects['batch_id']}", "/v1/messages?to=13800138001",
                    f"/v1/billing/usage?batch_id={objects['batch_id']}", "/v1/billing/recharges", "/v1/webhooks",
                    "/v1/api-keys", "/v1/billing/subscriptions", "/v1/inbound",
                    "/v1/contacts?phone=13800138003", f"/v1/contacts?group_id={objects['group_id']}", "/v1/groups"):
            r = await client.get(url, headers=b.headers)
            assert r.status_code == 200 or r.json()["error"]["code"] == "group_not_found", (url, r.text)
            for value in (objects["message_id"], objects["batch_id"], objects["order_id"], objects["key_id"],
                          objects["endpoint_id"], objects["subscription_id"], objects["contact_id"],
                          objects["group_id"], SECRET_TEXT):
                assert value not in r.text, (url, value)


async def test_console_pages_do_not_cross_accounts(app: Any, db: Database) -> None:
    a = await make_account(db, name="A")
    b = await make_account(db, name="B")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as api:
        objects = await objects_of_a(api, db, a)
    fakes = fakes_for(objects)
    browser = await signed_in_client(app, db, b, "en", email="b-user@example.com")
    token = csrf_of((await browser.get("/console")).text)
    checked = 0
    for method, path in all_routes(app):
        if not path.startswith("/console") or path in PUBLIC:
            continue
        real_url, fake_url = fill(path, objects), fill(path, fakes)
        data = {"csrf_token": token} if method == "POST" else None
        real = await browser.request(method, real_url, data=data)
        fake = await browser.request(method, fake_url, data=data)
        assert real.status_code == fake.status_code, (method, path, real.status_code, fake.status_code)
        assert real.status_code in (200, 303, 403, 404), (method, path, real.status_code)
        if method == "GET":  # a page or fragment: the same as for an id that does not exist
            swapped = real.text
            for name, value in objects.items():
                swapped = swapped.replace(value, fakes[name])
            assert swapped == fake.text, (method, path)
        assert real.headers.get("location") == fake.headers.get("location"), (method, path)
        assert SECRET_TEXT not in real.text and "13800138001" not in real.text
        if method == "POST" and real.status_code == 303:  # the flash says the same for both
            shown_real = (await browser.get(real.headers["location"])).text
            assert SECRET_TEXT not in shown_real
        checked += 1
    assert checked >= 10

    async def still_scheduled() -> bool:
        async with db.read() as session:
            m = await session.get(Message, objects["message_id"])
            k = await session.get(ApiKey, objects["key_id"])
            return m is not None and m.status == "scheduled" and k is not None and k.revoked_at is None

    assert await wait_until(still_scheduled, timeout=2, message="A's objects untouched")
