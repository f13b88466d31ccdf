"""Privacy requests through the real API on SQLite and PostgreSQL: export, erase, retention.

Messages are sent with the embedded workers and the sandbox carrier and waited for (deadline, no sleeps);
the raw tables are then read with SQL text so the checks see what is stored, not what the ORM decrypts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, text, update

from hongyan.billing.charging import verify_all
from hongyan.channels.base import InboundSms
from hongyan.core.clock import utcnow
from hongyan.core.crypto import DecryptionError, blind_index, keyring
from hongyan.db.engine import Database
from hongyan.messaging.inbound import store_inbound
from hongyan.messaging.models import Message
from hongyan.messaging.states import FINAL
from hongyan.privacy import retention
from hongyan.privacy.scrub import ERASED_NUMBER
from support import AccountFixture, make_account, wait_until

ALICE = "+8613800000001"  # sandbox: delivered
ALICE_TYPED = "138 0000 0001"
BOB = "+8613800000011"
FINAL_VALUES = {s.value for s in FINAL}


async def _webhook(client: httpx.AsyncClient) -> None:
    # nobody listens on port 9: the events stay in the table, retried later — what we want to inspect
    r = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/none"})
    assert r.status_code == 201, r.text


async def _send_and_settle(client: httpx.AsyncClient, db: Database, account_id: str, *recipients: str,
                           text_: str = "您的验证码是 4321") -> list[str]:
    r = await client.post("/v1/batches", json={"text": text_, "recipients": list(recipients)})
    assert r.status_code == 202, r.text
    ids = [m["id"] for m in r.json()["messages"]]

    async def settled() -> bool:
        async with db.read() as session:
            statuses = (await session.scalars(select(Message.status).where(Message.id.in_(ids)))).all()
        return all(s in FINAL_VALUES for s in statuses)

    await wait_until(settled, message="messages final")
    return ids


async def _raw(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.read() as session:
        return list((await session.execute(text(sql), params)).all())


def _opened(value: Any) -> str:
    """A stored cell as its plaintext (sealed cells opened), for 'does it hold the number' checks."""
    if value is None:
        return ""
    if isinstance(value, bytes | memoryview):
        return keyring().open_bytes(bytes(value)).decode(errors="replace")
    try:
        return keyring().open(str(value))
    except DecryptionError:  # pragma: no cover - would mean a foreign key sealed it
        return str(value)


async def _stored_text(db: Database, account_id: str) -> str:
    """Every sealed personal cell of the account, opened and joined."""
    cells: list[Any] = []
    for sql in (
        "SELECT to_number, body FROM message WHERE account_id = :a",
        "SELECT from_number, body FROM inbound_message WHERE account_id = :a",
        "SELECT payload, payload FROM webhook_event WHERE account_id = :a",
        "SELECT body_template, rejected FROM batch WHERE account_id = :a",
        "SELECT response_body, key FROM idempotency_record WHERE account_id = :a",
    ):
        for row in await _raw(db, sql, a=account_id):
            cells += list(row)
    return "\n".join(sorted(_opened(c) for c in cells))  # sorted: row order may change between reads


async def _reply(db: Database, number: str, body: str) -> None:
    async with db.write() as session:
        await store_inbound(session, [InboundSms("chn_sandbox", number.lstrip("+"), "106900", body, utcnow())])


async def test_export_erase_and_tenant_isolation(client: httpx.AsyncClient, db: Database, account: AccountFixture,
                                                 app: Any) -> None:
    await _webhook(client)
    ids = await _send_and_settle(client, db, account.account_id, ALICE, BOB)
    # a keyed request (its replayed response echoes the number) and a batch refusing Alice as a duplicate
    keyed = await client.post("/v1/messages", json={"to": ALICE, "text": "keyed"}, headers={"Idempotency-Key": "k1"})
    assert keyed.status_code == 202
    dup = await client.post("/v1/batches", json={"text": "twice", "recipients": [ALICE, ALICE_TYPED, BOB]})
    assert dup.status_code == 202 and dup.json()["rejected_count"] == 1
    await _send_and_settle(client, db, account.account_id, BOB, text_="for bob only")
    await wait_until(lambda: _all_final(db), message="all final")
    await _reply(db, ALICE, "STOP please")

    # another tenant also wrote to Alice
    other = await make_account(db, name="Other")
    other_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                     headers=other.headers)
    async with other_client:
        await _send_and_settle(other_client, db, other.account_id, ALICE, text_="other tenant")
        other_before = await _stored_text(db, other.account_id)
        assert ALICE in other_before

        # export: the caller's data only
        r = await client.post("/v1/privacy/exports", json={"phone_number": ALICE_TYPED})
        assert r.status_code == 200, r.text
        export = r.json()
        assert export["phone_number"] == ALICE and export["messages_truncated"] is False
        assert len(export["messages"]) == 3  # batch, keyed, duplicate batch
        assert {m["to"] for m in export["messages"]} == {ALICE}
        assert ids[0] in {m["id"] for m in export["messages"]}
        first = next(m for m in export["messages"] if m["id"] == ids[0])
        assert first["text"] == "您的验证码是 4321" and first["price"] == "0.04"
        assert [e["status"] for e in first["events"]][0] == "accepted" and first["events"][-1]["status"] == first["status"]
        assert [m["text"] for m in export["inbound_messages"]] == ["STOP please"]
        assert export["webhook_events"] and all(e["message_id"] in {m["id"] for m in export["messages"]}
                                                for e in export["webhook_events"])
        assert "message.received" in {e["type"] for e in export["webhook_events"]}
        assert [(x["code"], x["to"]) for x in export["batch_rejections"]] == [("duplicate_phone_number", ALICE_TYPED)]
        assert "other tenant" not in r.text

        # the other tenant erasing Alice changes nothing of ours, and its export never shows our data
        r = await other_client.post("/v1/privacy/exports", json={"phone_number": ALICE})
        assert [m["text"] for m in r.json()["messages"]] == ["other tenant"] and r.json()["inbound_messages"] == []
        ours_before = await _stored_text(db, account.account_id)
        r = await other_client.post("/v1/privacy/erasures", json={"phone_number": ALICE, "confirm": True})
        assert r.status_code == 200 and r.json()["erased"]["messages"] == 1
        assert await _stored_text(db, account.account_id) == ours_before  # byte for byte after decryption
        assert ALICE not in await _stored_text(db, other.account_id)

    before_stats = await _stats(db, account.account_id)
    refused = await client.post("/v1/privacy/erasures", json={"phone_number": ALICE, "confirm": False})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "confirmation_required"
    r = await client.post("/v1/privacy/erasures", json={"phone_number": ALICE, "confirm": True})
    assert r.status_code == 200, r.text
    counts = r.json()["erased"]
    assert counts["messages"] == 3 and counts["inbound_messages"] == 1 and counts["batch_rejections"] == 1
    assert counts["webhook_events"] >= 4 and counts["idempotency_records"] == 1

    # statistics and billing unchanged; the export finds nothing
    assert await _stats(db, account.account_id) == before_stats
    assert await verify_all(db) == []
    empty = (await client.post("/v1/privacy/exports", json={"phone_number": ALICE})).json()
    assert empty["messages"] == [] and empty["inbound_messages"] == [] and empty["batch_rejections"] == []

    # raw storage: no cell opens to the number or the content, no blind index left; Bob untouched
    stored = await _stored_text(db, account.account_id)
    assert ALICE not in stored and ALICE_TYPED not in stored and "13800000001" not in stored
    assert "STOP please" not in stored and "keyed" not in stored  # Alice's own texts (the batches' stay)
    assert BOB in stored and "for bob only" in stored
    bidx = blind_index(ALICE)
    assert await _raw(db, "SELECT id FROM message WHERE to_bidx = :b", b=bidx) == []
    assert await _raw(db, "SELECT id FROM inbound_message WHERE from_bidx = :b", b=bidx) == []
    erased = await _raw(db, "SELECT to_number, body, status, price_micros FROM message WHERE account_id = :a "
                            "AND to_bidx IS NULL", a=account.account_id)
    assert len(erased) == 3 and all(_opened(r[0]) == ERASED_NUMBER and _opened(r[1]) == "" for r in erased)
    assert all(r[0].startswith("enc1:") for r in erased)  # the placeholder is sealed like any number
    for (payload,) in await _raw(db, "SELECT payload FROM webhook_event WHERE account_id = :a", a=account.account_id):
        orjson.loads(_opened(payload))  # still valid JSON
    assert (await client.get("/v1/messages", params={"to": BOB})).json()["data"]

    # the audit names the blind index, never the number; a second erasure finds nothing
    audit = (await client.get("/v1/audit-log", params={"action": "privacy.erased"})).json()["data"]
    assert audit[0]["target_type"] == "phone_number" and audit[0]["target_id"] == bidx
    assert ALICE not in orjson.dumps(audit).decode()
    again = (await client.post("/v1/privacy/erasures", json={"phone_number": ALICE, "confirm": True})).json()
    assert set(again["erased"].values()) == {0}


async def _all_final(db: Database) -> bool:
    async with db.read() as session:
        open_ = await session.scalar(select(func.count()).select_from(Message).where(Message.status.not_in(FINAL_VALUES)))
    return open_ == 0


async def _stats(db: Database, account_id: str) -> list[Any]:
    return await _raw(db, "SELECT id, status, segment_count, price_micros, currency, to_country, billing_state, "
                          "created_at FROM message WHERE account_id = :a ORDER BY id", a=account_id)


async def test_erasure_cancels_messages_not_yet_sent(client: httpx.AsyncClient, db: Database) -> None:
    later = (utcnow() + timedelta(hours=2)).isoformat()
    r = await client.post("/v1/messages", json={"to": ALICE, "text": "later", "scheduled_at": later})
    assert r.status_code == 202, r.text
    r = await client.post("/v1/privacy/erasures", json={"phone_number": ALICE, "confirm": True})
    assert r.json()["erased"]["messages_canceled"] == 1
    async with db.read() as session:
        message = (await session.scalars(select(Message))).one()
    assert message.status == "canceled" and message.error_code == "erased_on_request"
    assert message.to_number == ERASED_NUMBER and message.billing_state == "released"
    assert await verify_all(db) == []


@pytest.mark.parametrize("number", ["12345", "01088886666"])
async def test_invalid_numbers_are_refused(client: httpx.AsyncClient, number: str) -> None:
    for path, body in (("/v1/privacy/exports", {}), ("/v1/privacy/erasures", {"confirm": True})):
        r = await client.post(path, json={"phone_number": number, **body})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "phone_number"
        assert r.json()["error"]["code"] in ("invalid_phone_number", "not_mobile_number")


async def test_privacy_needs_admin_scope(app: Any, db: Database) -> None:
    reader = await make_account(db, name="Reader", scopes=("send", "read"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 headers=reader.headers) as c:
        for method, path, body in (("POST", "/v1/privacy/exports", {"phone_number": ALICE}),
                                   ("POST", "/v1/privacy/erasures", {"phone_number": ALICE, "confirm": True}),
                                   ("GET", "/v1/account/privacy", None),
                                   ("PATCH", "/v1/account/privacy", {"retention_days": 5})):
            r = await c.request(method, path, json=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


async def test_retention_setting_is_validated_and_audited(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/account/privacy")).json() == {"retention_days": None}
    for bad in (0, 3651, "30"):
        r = await client.patch("/v1/account/privacy", json={"retention_days": bad})
        assert r.status_code == 422 and r.json()["error"]["field"] == "retention_days"
    r = await client.patch("/v1/account/privacy", json={"retention_days": 30})
    assert r.json() == {"retention_days": 30}
    assert (await client.patch("/v1/account/privacy", json={})).json() == {"retention_days": 30}
    assert (await client.patch("/v1/account/privacy", json={"retention_days": None})).json() == {"retention_days": None}
    audit = (await client.get("/v1/audit-log", params={"action": "account.retention_changed"})).json()["data"]
    assert [(e["before"], e["after"]) for e in audit] == [
        ({"retention_days": 30}, {"retention_days": None}), ({"retention_days": None}, {"retention_days": 30})]


async def test_retention_purges_old_final_content_only(client: httpx.AsyncClient, db: Database,
                                                       account: AccountFixture) -> None:
    await _webhook(client)
    old = await _send_and_settle(client, db, account.account_id, ALICE, BOB, text_="old news")
    new = await _send_and_settle(client, db, account.account_id, "+8613800000021", text_="fresh news")
    later = (utcnow() + timedelta(days=3)).isoformat()
    pending = (await client.post("/v1/messages", json={"to": "+8613800000031", "text": "still scheduled",
                                                       "scheduled_at": later})).json()["id"]
    await _reply(db, ALICE, "old reply")
    await _reply(db, BOB, "new reply")
    await (await client.patch("/v1/account/privacy", json={"retention_days": 30})).aread()
    past = utcnow() - timedelta(days=31)
    async with db.write() as session:
        await session.execute(update(Message).where(Message.id.in_([*old, pending])).values(created_at=past))
        await session.execute(text("UPDATE inbound_message SET received_at = :p WHERE from_bidx = :b"),
                              {"p": past, "b": blind_index(ALICE)})
    await make_account(db, name="Keeper")  # no retention: the sweep leaves it alone (accounts == 1)

    stats = await _stats(db, account.account_id)
    done = await retention.purge_expired(db, batch_size=1)  # one row per transaction: the loop must go on
    assert done.accounts == 1 and done.messages == 2 and done.inbound_messages == 1 and done.webhook_events >= 4
    assert await _stats(db, account.account_id) == stats
    assert await verify_all(db) == []

    async with db.read() as session:
        rows = {m.id: m for m in (await session.scalars(select(Message))).all()}
    for mid in old:
        assert rows[mid].to_number == ERASED_NUMBER and rows[mid].body == "" and rows[mid].to_bidx is None
    assert rows[new[0]].body == "fresh news" and rows[new[0]].to_bidx is not None
    assert rows[pending].body == "still scheduled" and rows[pending].status == "scheduled"
    stored = await _stored_text(db, account.account_id)
    assert "old news" not in stored and "old reply" not in stored and ALICE not in stored
    assert "fresh news" in stored and "new reply" in stored and BOB in stored  # Bob's reply is recent
    # a second run has nothing left to do
    assert (await retention.purge_expired(db)).messages == 0


async def test_openapi_documents_the_bodies(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    erasure = spec["paths"]["/v1/privacy/erasures"]["post"]["requestBody"]["content"]["application/json"]
    assert erasure["schema"]["$ref"] == "#/components/schemas/PrivacyErasureCreate"
    assert erasure["example"] == {"phone_number": "+8613800138000", "confirm": True}
    schemas = spec["components"]["schemas"]
    assert set(schemas["PrivacyErasureCreate"]["required"]) == {"phone_number", "confirm"}
    assert schemas["AccountPrivacyUpdate"]["properties"]["retention_days"]["anyOf"][0]["maximum"] == 3650
    assert "PrivacyExportCreate" in schemas and "patch" in spec["paths"]["/v1/account/privacy"]
