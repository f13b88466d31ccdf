"""A code sent by the verification service is not readable again through the messages API or console."""

from __future__ import annotations

import httpx
import pytest
from tests.verify.helpers import sent_code, start

from hongyan.db.engine import Database
from hongyan.messaging.queries import visible_text


@pytest.mark.parametrize(("message_type", "client_ref", "body", "shown"), [
    ("verification", "ver_01ABC", "【鸿雁】您的验证码是482913，5分钟内有效。", "【鸿雁】您的验证码是••••••，5分钟内有效。"),
    ("verification", "ver_01ABC", "Code 1234, valid 10 minutes", "Code ••••, valid 10 minutes"),
    ("verification", "my-ref", "您的验证码是482913", "您的验证码是482913"),  # the customer's own sends: theirs
    ("notification", "ver_01ABC", "订单482913已发货", "订单482913已发货"),
])
def test_visible_text(message_type: str, client_ref: str, body: str, shown: str) -> None:
    assert visible_text(message_type, client_ref, body) == shown


async def test_messages_api_masks_the_code(client: httpx.AsyncClient, db: Database) -> None:
    v = await start(client)
    code = await sent_code(db, v)
    r = await client.get(f"/v1/messages/{v['message_id']}")
    assert r.status_code == 200, r.text
    assert code not in r.text and "•" * len(code) in r.json()["text"]
    r = await client.get("/v1/messages", params={"limit": 10})
    assert r.status_code == 200 and code not in r.text
