"""Verification codes through the API with the embedded workers (sandbox carrier): start → the code is in the
message → check approves once; brute force locks; expiry; sandbox codes for test keys only; the code never in
responses or logs; webhooks for approved and failed."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from tests.support import AccountFixture
from tests.verify.helpers import NUMBER, sent_code, start

from hongyan.accounts.models import ApiKey
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Batch, Message
from hongyan.verify.models import Verification
from hongyan.webhooks.models import WebhookEvent
from hongyan.webhooks.service import create_endpoint


async def _events(db: Database, event_type: str) -> list[str]:
    async with db.read() as session:
        return list(
            (
                await session.scalars(
                    select(WebhookEvent.payload).where(WebhookEvent.event_type == event_type)
                )
            ).all()
        )


async def _subscribe(db: Database, account: AccountFixture) -> None:
    async with db.write() as session:
        await create_endpoint(session, account_id=account.account_id, url="http://127.0.0.1:9/hook")


async def test_start_sends_the_code_and_the_right_code_approves(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await _subscribe(db, account)
    v = await start(client, code_length=8)
    assert v["id"].startswith("ver_") and v["status"] == "pending" and v["attempts_left"] == 5
    assert "sandbox_code" not in v and v["to"] == NUMBER and v["sends"] == 1
    code = await sent_code(db, v)
    assert code not in str(v)
    async with db.read() as session:
        message = await session.get(Message, v["message_id"])
        assert message is not None and message.message_type == "verification" and message.priority == 0
        assert message.body.endswith(f"您的验证码是{code}，5分钟内有效。请勿泄露给他人。")
        batch = await session.get(Batch, message.batch_id)
        assert batch is not None and code not in batch.body_template  # only the message carries the code
        row = await session.get(Verification, v["id"])
        assert row is not None and code not in row.code_hash and len(row.code_hash) == 64

    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": wrong})
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is False and r.json()["status"] == "pending" and r.json()["attempts_left"] == 4
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": code})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True and body["status"] == "approved" and body["reason"] == "code_correct"
    assert body["approved_at"] and code not in r.text
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": code})
    assert r.status_code == 409 and r.json()["error"]["code"] == "verification_already_approved"
    [payload] = await _events(db, "verify.approved")
    assert v["id"] in payload and NUMBER in payload and code not in payload
    assert await _events(db, "verify.failed") == []


async def test_concurrent_right_answers_approve_exactly_once(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await _subscribe(db, account)
    v = await start(client)
    code = await sent_code(db, v)
    answers = await asyncio.gather(
        *(client.post(f"/v1/verify/{v['id']}/check", json={"code": code}) for _ in range(6))
    )
    approved = [r for r in answers if r.status_code == 200]
    assert len(approved) == 1 and approved[0].json()["status"] == "approved"
    assert sorted({r.json()["error"]["code"] for r in answers if r.status_code != 200}) == [
        "verification_already_approved"
    ]
    assert len(await _events(db, "verify.approved")) == 1


async def test_brute_force_locks_the_verification_even_for_the_right_code(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    await _subscribe(db, account)
    v = await start(client, code_length=4)
    code = await sent_code(db, v)
    guesses = [g for g in (f"{n:04d}" for n in range(20)) if g != code][:5]
    results = [await client.post(f"/v1/verify/{v['id']}/check", json={"code": g}) for g in guesses]
    assert [r.json()["attempts_left"] for r in results] == [4, 3, 2, 1, 0]
    assert results[-1].json()["status"] == "failed" and results[-1].json()["reason"] == "max_attempts_reached"
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": code})
    assert r.status_code == 409 and r.json()["error"]["code"] == "verification_failed"
    r = await client.post(f"/v1/verify/{v['id']}/resend")
    assert r.status_code == 409 and r.json()["error"]["code"] == "verification_failed"
    assert len(await _events(db, "verify.failed")) == 1
    async with db.read() as session:
        row = await session.get(Verification, v["id"])
        assert row is not None and row.status == "failed" and row.attempts == 5


async def test_parallel_guesses_never_exceed_max_attempts(client: httpx.AsyncClient, db: Database) -> None:
    v = await start(client, code_length=4)
    code = await sent_code(db, v)
    guesses = [g for g in (f"{n:04d}" for n in range(30)) if g != code][:12]
    answers = await asyncio.gather(
        *(client.post(f"/v1/verify/{v['id']}/check", json={"code": g}) for g in guesses)
    )
    assert sum(r.status_code == 200 for r in answers) == 5
    assert {r.json()["error"]["code"] for r in answers if r.status_code != 200} == {"verification_failed"}
    async with db.read() as session:
        assert (await session.get(Verification, v["id"])).attempts == 5  # type: ignore[union-attr]


async def test_an_expired_code_is_refused(client: httpx.AsyncClient, db: Database) -> None:
    v = await start(client, ttl=60)
    code = await sent_code(db, v)
    async with db.write() as session:
        await session.execute(
            update(Verification)
            .where(Verification.id == v["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = await client.get(f"/v1/verify/{v['id']}")
    assert r.json()["status"] == "expired" and r.json()["reason"] == "code_expired"
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": code})
    assert r.status_code == 409 and r.json()["error"]["code"] == "verification_expired"
    async with db.read() as session:
        assert (await session.get(Verification, v["id"])).status == "expired"  # type: ignore[union-attr]
    r = await client.get("/v1/verify", params={"status": "expired"})
    assert [x["id"] for x in r.json()["data"]] == [v["id"]]


async def test_the_code_is_never_logged_nor_returned_to_live_keys(
    client: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        r = await client.post("/v1/verify", json={"to": NUMBER, "code_length": 10})
        v = r.json()
        code = await sent_code(db, v)
        responses = [r.text]
        responses.append((await client.get(f"/v1/verify/{v['id']}")).text)
        responses.append((await client.get("/v1/verify")).text)
        responses.append((await client.post(f"/v1/verify/{v['id']}/check", json={"code": code})).text)
    assert all(code not in text for text in responses)
    assert all("sandbox_code" not in text for text in responses)
    assert caplog.records, "DEBUG logging was captured"
    assert code not in caplog.text


async def test_a_test_key_gets_the_sandbox_code(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    async with db.write() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == account.key_id).values(is_test=True))
    v = await start(client)
    assert v["sandbox"] is True and v["sandbox_code"] == await sent_code(db, v)
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": v["sandbox_code"]})
    assert r.json()["status"] == "approved"


async def test_cancel_channel_and_input_errors(client: httpx.AsyncClient, db: Database) -> None:
    r = await client.post("/v1/verify", json={"to": NUMBER, "channel": "voice"})
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "channel_not_supported",
        "field": "channel",
        "message": r.json()["error"]["message"],
    }
    r = await client.post("/v1/verify", json={"to": NUMBER, "code_length": 3})
    assert r.status_code == 422 and r.json()["error"]["field"] == "code_length"
    r = await client.post("/v1/verify", json={"to": "12345"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "to"
    r = await client.post("/v1/verify/ver_nope/check", json={"code": "123456"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "verification_not_found"
    v = await start(client, locale="en")
    code = await sent_code(db, v)
    async with db.read() as session:
        body = await session.scalar(select(Message.body).where(Message.id == v["message_id"]))
    assert body is not None and body.endswith(f"Your verification code is {code}. It expires in 5 minutes.")
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": "12a456"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "verify_code_invalid"
    r = await client.post(f"/v1/verify/{v['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    r = await client.post(f"/v1/verify/{v['id']}/check", json={"code": code})
    assert r.status_code == 409 and r.json()["error"]["code"] == "verification_canceled"
    r = await client.get("/v1/verify", params={"to": "13800138000", "status": "canceled"})
    assert [x["id"] for x in r.json()["data"]] == [v["id"]]
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Verification)) == 1


async def _template(
    db: Database,
    account: AccountFixture,
    template_id: str,
    message_type: str,
    body: str,
    variables: list[dict[str, object]],
) -> None:
    from hongyan.compliance.models import MessageTemplate

    async with db.write() as session:
        session.add(
            MessageTemplate(
                id=template_id,
                account_id=account.account_id,
                name=template_id,
                message_type=message_type,
                body=body,
                variables=variables,
                status="approved",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )


async def test_an_approved_verification_template(
    client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    code_var = {"name": "code", "type": "code", "min": 4, "max": 8}
    await _template(
        db,
        account,
        "tpl_login",
        "verification",
        "您的登录验证码${code}，${ttl}分钟内有效。",
        [code_var, {"name": "ttl", "type": "text", "min": 1, "max": 20}],
    )
    await _template(db, account, "tpl_promo", "marketing", "优惠码${code}，回T退订", [code_var])
    v = await start(client, template="tpl_login", ttl=120)
    code = await sent_code(db, v)
    async with db.read() as session:
        body = await session.scalar(select(Message.body).where(Message.id == v["message_id"]))
    assert (
        v["template_id"] == "tpl_login"
        and body is not None
        and body.endswith(f"您的登录验证码{code}，2分钟内有效。")
    )
    for template, length, field in (
        ("tpl_promo", 6, "template"),
        ("tpl_login", 10, "code_length"),
        ("tpl_nope", 6, "template"),
    ):
        r = await client.post(
            "/v1/verify", json={"to": "+8613900139000", "template": template, "code_length": length}
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "verify_template_invalid" and r.json()["error"]["field"] == field
