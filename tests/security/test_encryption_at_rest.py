"""Encryption at rest, read from the raw database: no phone number or content in clear anywhere;
search by number still works (blind index); key rotation by re-encryption; encryption off and back on."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from hongyan.channels.base import InboundSms
from hongyan.core import crypto
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.db.models import metadata
from hongyan.messaging.inbound import store_inbound
from hongyan.ops import encryption
from support import wait_until

NUMBER = "13912345678"  # national form; stored as +8613912345678
CONTENT = "秘密内容 order 7f3c secret-marker"
REPLY = "reply-marker 退订"


async def raw_dump(db: Database) -> str:
    """Every row of every table as the database holds it (no decryption), as one string."""
    parts: list[str] = []
    async with db.read() as session:
        for table in metadata.sorted_tables:
            if db.dialect == "postgresql":
                rows = (await session.execute(text(f'SELECT t::text FROM "{table.name}" t'))).scalars().all()
                parts.extend(rows)
            else:
                for row in (await session.execute(text(f'SELECT * FROM "{table.name}"'))).all():
                    parts.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
    return "\n".join(parts)


@pytest.fixture
def restore_keyring() -> Iterator[None]:
    saved = crypto.keyring()
    yield
    crypto.configure(saved)


async def send_everything(client: httpx.AsyncClient, db: Database) -> str:
    """A single send, a personalized batch with a rejected recipient, a webhook event, an idempotent POST, an MO."""
    r = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/messages", json={"to": NUMBER, "text": CONTENT}, headers={"Idempotency-Key": "idem-1"})
    assert r.status_code == 202, r.text
    message_id = r.json()["id"]
    r = await client.post("/v1/batches", json={
        "text": "您好{name}，" + CONTENT,
        "recipients": [{"to": NUMBER, "vars": {"name": "张三"}}, {"to": "13912345"}],
    })
    assert r.status_code == 202, r.text

    async def final() -> bool:
        got = (await client.get(f"/v1/messages/{message_id}")).json()
        return got["status"] in ("delivered", "undelivered", "rejected")

    await wait_until(final, message="message final")
    async with db.write() as session:
        await store_inbound(session, [InboundSms("chn_x", from_number="86" + NUMBER, to_number="10690001",
                                                 body=REPLY, received_at=utcnow())])
    return str(message_id)


async def test_raw_database_holds_no_number_or_content(client: httpx.AsyncClient, db: Database) -> None:
    message_id = await send_everything(client, db)
    dump = await raw_dump(db)
    assert "enc1:t1:" in dump  # sealed values are there …
    for secret in (NUMBER, CONTENT, "秘密内容", "secret-marker", "张三", REPLY, "13912345"):
        assert secret not in dump, f"{secret!r} found in clear in the database"
    # … and the API reads them back, and finds the message by number through the blind index
    got = (await client.get(f"/v1/messages/{message_id}")).json()
    assert got["to"] == "+86" + NUMBER and got["text"] == CONTENT
    found = (await client.get("/v1/messages", params={"to": NUMBER})).json()["data"]
    assert message_id in {m["id"] for m in found} and len(found) == 2
    inbound = (await client.get("/v1/inbound")).json()["data"]
    assert inbound and inbound[0]["body"] == REPLY and inbound[0]["from"] == "+86" + NUMBER


async def test_rotation_by_reencrypt(client: httpx.AsyncClient, db: Database, restore_keyring: None) -> None:
    message_id = await send_everything(client, db)
    old = crypto.keyring()
    k2 = crypto.parse_keys(crypto.new_key_text("k2"))[0]
    t1 = ("t1", base64.urlsafe_b64decode("dGVzdC1vbmx5LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGU="))
    crypto.configure(crypto.Keyring.build([k2, t1], old.index_key))
    before = await encryption.status(db)
    assert before.keys["message.body"]["t1"] >= 2 and "k2" not in before.keys["message.body"]
    report = await encryption.reencrypt(db, batch=2)  # tiny batches: the keyset walk crosses pages
    assert report.rewritten > 0
    after = await encryption.status(db)
    for column, counter in after.keys.items():
        assert set(counter) <= {"k2"}, (column, counter)
    assert sum(after.keys["message.to_number"].values()) == sum(before.keys["message.to_number"].values())
    assert (await encryption.reencrypt(db)).rewritten == 0  # restartable: nothing left to do
    crypto.configure(crypto.Keyring.build([k2], old.index_key))  # the old key can go
    got = (await client.get(f"/v1/messages/{message_id}")).json()
    assert got["text"] == CONTENT and got["to"] == "+86" + NUMBER
    assert "enc1:k2:" in await raw_dump(db) and "enc1:t1:" not in await raw_dump(db)


async def test_missing_key_is_a_clear_error(db: Database, client: httpx.AsyncClient, restore_keyring: None) -> None:
    await send_everything(client, db)
    crypto.configure(crypto.Keyring.build(crypto.parse_keys(crypto.new_key_text("k9")), crypto.keyring().index_key))
    with pytest.raises(crypto.DecryptionError, match="'t1', which is not in HONGYAN_ENCRYPTION_KEYS"):
        await encryption.reencrypt(db)


async def test_encryption_off_then_sealed_by_reencrypt(client: httpx.AsyncClient, db: Database,
                                                       restore_keyring: None) -> None:
    ring = crypto.keyring()
    crypto.configure(crypto.Keyring(ring.keys, ring.active_id, ring.index_key, enabled=False))
    message_id = await send_everything(client, db)
    assert NUMBER in await raw_dump(db)  # off means plaintext, on purpose
    status = await encryption.status(db)
    assert status.keys["message.body"]["plaintext"] >= 2
    crypto.configure(ring)
    await encryption.reencrypt(db)
    dump = await raw_dump(db)
    assert NUMBER not in dump and CONTENT not in dump
    got = (await client.get(f"/v1/messages/{message_id}")).json()
    assert got["text"] == CONTENT
    # decrypt (before a downgrade) and back
    await encryption.reencrypt(db, decrypt=True)
    assert CONTENT in await raw_dump(db)
    await encryption.reencrypt(db)
    assert CONTENT not in await raw_dump(db)


async def test_reindex_after_index_key_change(client: httpx.AsyncClient, db: Database, restore_keyring: None) -> None:
    message_id = await send_everything(client, db)
    ring = crypto.keyring()
    crypto.configure(crypto.Keyring(ring.keys, ring.active_id, b"n" * 32, enabled=True))
    assert (await client.get("/v1/messages", params={"to": NUMBER})).json()["data"] == []  # stale index
    report = await encryption.reencrypt(db, reindex=True)
    assert report.reindexed >= 3  # two messages and one inbound
    found = (await client.get("/v1/messages", params={"to": NUMBER})).json()["data"]
    assert message_id in {m["id"] for m in found}


def test_keyring_unit() -> None:
    keys = crypto.parse_keys(crypto.new_key_text("a") + "," + crypto.new_key_text("b"))
    ring = crypto.Keyring.build(keys, b"i" * 32)
    sealed = ring.seal("+8613800138000")
    assert sealed.startswith("enc1:a:") and ring.open(sealed) == "+8613800138000"
    assert ring.seal("x") != ring.seal("x")  # random nonce: equal numbers do not look equal
    assert ring.open("plain") == "plain"
    assert ring.open_bytes(ring.seal_bytes(b"\x00\x01")) == b"\x00\x01"
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(crypto.DecryptionError, match="fails authentication"):
        ring.open(tampered)
    assert ring.blind_index("+86138") == ring.blind_index("+86138") != ring.blind_index("+86139")
    for bad, message in [("a:xx", "needs 32 bytes"), ("nocolon", "write it as"), ("a:" + "A" * 43 + ",a:" + "A" * 43, "twice")]:
        with pytest.raises(crypto.KeyringError, match=message):
            crypto.parse_keys(bad)


@pytest.mark.parametrize("enabled", [True, False])
async def test_text_that_looks_sealed_round_trips(client: httpx.AsyncClient, db: Database, restore_keyring: None,
                                                  enabled: bool) -> None:
    ring = crypto.keyring()
    crypto.configure(crypto.Keyring(ring.keys, ring.active_id, ring.index_key, enabled=enabled))
    texts = ["enc1:hello", "enc0:x", "enc1:t1:AAAA"]
    ids_ = []
    for text_ in texts:
        r = await client.post("/v1/messages", json={"to": NUMBER, "text": text_})
        assert r.status_code == 202, r.text
        ids_.append(r.json()["id"])
    for message_id, text_ in zip(ids_, texts, strict=True):
        assert (await client.get(f"/v1/messages/{message_id}")).json()["text"] == text_
    crypto.configure(ring)
    await encryption.reencrypt(db)  # seal what was written plain, then decrypt all, then seal again
    await encryption.reencrypt(db, decrypt=True)
    for message_id, text_ in zip(ids_, texts, strict=True):
        assert (await client.get(f"/v1/messages/{message_id}")).json()["text"] == text_
    await encryption.reencrypt(db)
    for message_id, text_ in zip(ids_, texts, strict=True):
        assert (await client.get(f"/v1/messages/{message_id}")).json()["text"] == text_
