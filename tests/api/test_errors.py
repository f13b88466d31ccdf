"""Bad input gets a precise 4xx JSON error with a stable code and the field at fault — never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hongyan.db.engine import Database
from support import make_account


def _error(r: httpx.Response, status: int, code: str, field: str | None = ...) -> dict[str, Any]:  # type: ignore[assignment]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["message"]
    if field is not ...:
        assert err["field"] == field, err
    return err


async def test_empty_body(client: httpx.AsyncClient) -> None:
    _error(await client.post("/v1/messages", content=b""), 400, "body_required", "body")


async def test_not_json(client: httpx.AsyncClient) -> None:
    err = _error(await client.post("/v1/messages", content=b"{to: 1", headers={"content-type": "application/json"}),
                 400, "invalid_json", "body")
    assert "line 1" in err["message"]


async def test_invalid_utf8(client: httpx.AsyncClient) -> None:
    body = b'{"to": "13800000001", "text": "\xff\xfe bad"}'
    _error(await client.post("/v1/messages", content=body, headers={"content-type": "application/json"}),
           400, "invalid_encoding", "body")


async def test_json_array_body(client: httpx.AsyncClient) -> None:
    _error(await client.post("/v1/messages", json=[1, 2]), 400, "invalid_type", "body")


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    _error(await client.post("/v1/messages", content=b"to=1", headers={"content-type": "application/x-www-form-urlencoded"}),
           415, "unsupported_media_type", "Content-Type")


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"text": "hi"}, "field_required", "to"),
        ({"to": "13800000001"}, "field_required", "text"),
        ({"to": 13800000001, "text": "hi"}, "invalid_type", "to"),
        ({"to": "13800000001", "text": ["hi"]}, "invalid_type", "text"),
        ({"to": "13800000001", "text": "hi", "message_type": "spam"}, "invalid_value", "message_type"),
        ({"to": "13800000001", "text": "hi", "colour": "red"}, "unknown_field", "colour"),
        ({"to": "13800000001", "text": "hi", "scheduled_at": "tomorrow"}, "invalid_datetime", "scheduled_at"),
        ({"to": "13800000001", "text": "hi", "scheduled_at": "2030-01-01T08:00:00"}, "invalid_datetime", "scheduled_at"),
        ({"to": "13800000001", "text": "hi", "validity_minutes": 0}, "value_out_of_range", "validity_minutes"),
        ({"to": "abc", "text": "hi"}, "invalid_phone_number", "to"),
        ({"to": "01088886666", "text": "hi"}, "not_mobile_number", "to"),
        ({"to": "13800000001", "text": ""}, "text_empty", "text"),
        ({"to": "13800000001", "text": "   "}, "text_empty", "text"),
        ({"to": "13800000001", "text": "x" * 5000}, "text_too_long", "text"),
        ({"to": "13800000001", "text": "hi {name}"}, "unknown_template_variable", "text"),
        ({"to": "13800000001", "text": "hi {name}", "vars": {"nmae": "x"}}, "unknown_template_variable", "text"),
    ],
)
async def test_single_send_validation(client: httpx.AsyncClient, payload: dict[str, Any], code: str, field: str) -> None:
    r = await client.post("/v1/messages", json=payload)
    assert r.status_code in (400, 422), r.text
    _error(r, r.status_code, code, field)


async def test_lone_surrogate_in_text(client: httpx.AsyncClient) -> None:
    body = b'{"to": "13800000001", "text": "bad \\ud83d here"}'
    _error(await client.post("/v1/messages", content=body, headers={"content-type": "application/json"}),
           400, "invalid_encoding", "body")


async def test_batch_too_many_recipients(client: httpx.AsyncClient) -> None:
    recipients = [f"+861380{i:07d}" for i in range(10_001)]
    err = _error(await client.post("/v1/batches", json={"text": "hi", "recipients": recipients}),
                 422, "too_many_recipients", "recipients")
    assert "10001" in err["message"] and "10000" in err["message"]


async def test_batch_field_paths(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/batches", json={"text": "hi", "recipients": ["13800000001", {"to": 5}]})
    _error(r, 422, "invalid_type", "recipients[1].to")
    r = await client.post("/v1/batches", json={"text": "hi", "recipients": []})
    _error(r, 422, "recipients_empty", "recipients")


async def test_batch_all_invalid_lists_every_recipient(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/batches", json={"text": "hi", "recipients": ["12", "abc", "01088886666"]})
    err = _error(r, 422, "no_valid_recipients", "recipients[0].to")
    assert [x["index"] for x in err["details"]["rejected"]] == [0, 1, 2]
    assert [x["code"] for x in err["details"]["rejected"]] == ["invalid_phone_number", "invalid_phone_number",
                                                               "not_mobile_number"]


async def test_unknown_variable_named(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/batches", json={"text": "尊敬的{客户姓名},订单{订单号}",
                                               "recipients": [{"to": "13800000001", "vars": {"客户姓名": "张三"}}]})
    err = _error(r, 422, "unknown_template_variable", "text")
    assert "订单号" in err["message"] and err["details"]["variables"] == ["订单号"]


async def test_huge_headers(client: httpx.AsyncClient) -> None:
    _error(await client.post("/v1/messages", json={"to": "1", "text": "x"}, headers={"X-Big": "a" * 20_000}),
           431, "headers_too_large", None)


async def test_body_too_large(client: httpx.AsyncClient) -> None:
    _error(await client.post("/v1/batches", content=b"{" + b" " * (9 * 1024 * 1024) + b"}",
                             headers={"content-type": "application/json"}), 413, "payload_too_large", "body")


async def test_missing_wrong_and_revoked_key(client: httpx.AsyncClient, db: Database) -> None:
    payload = {"to": "13800000001", "text": "x"}
    _error(await client.post("/v1/messages", json=payload, headers={"Authorization": ""}), 401, "missing_api_key",
           "Authorization")
    _error(await client.post("/v1/messages", json=payload, headers={"Authorization": "Basic abc"}), 401,
           "invalid_api_key", "Authorization")
    other = await make_account(db, name="Other")
    wrong = other.token[:-3] + "xyz"
    _error(await client.post("/v1/messages", json=payload, headers={"Authorization": f"Bearer {wrong}"}), 401,
           "invalid_api_key", "Authorization")
    _error(await client.post("/v1/messages", json=payload, headers={"Authorization": "Bearer nonsense"}), 401,
           "invalid_api_key", "Authorization")
    ok = await client.post("/v1/messages", json=payload, headers=other.headers)
    assert ok.status_code == 202
    revoked = await client.delete(f"/v1/api-keys/{other.key_id}", headers=other.headers)
    assert revoked.status_code == 200
    _error(await client.post("/v1/messages", json=payload, headers=other.headers), 401, "api_key_revoked",
           "Authorization")


async def test_scope_enforced(client: httpx.AsyncClient, db: Database) -> None:
    reader = await make_account(db, name="Reader", scopes=("read",))
    _error(await client.post("/v1/messages", json={"to": "13800000001", "text": "x"}, headers=reader.headers),
           403, "insufficient_scope", "Authorization")


async def test_other_accounts_messages_are_invisible(client: httpx.AsyncClient, db: Database) -> None:
    mid = (await client.post("/v1/messages", json={"to": "13800000001", "text": "x"})).json()["id"]
    other = await make_account(db, name="Other")
    _error(await client.get(f"/v1/messages/{mid}", headers=other.headers), 404, "message_not_found", "id")
    _error(await client.post(f"/v1/messages/{mid}/cancel", headers=other.headers), 404, "message_not_found", "id")


async def test_list_bad_params(client: httpx.AsyncClient) -> None:
    _error(await client.get("/v1/messages", params={"status": "lost"}), 422, "invalid_status", "status")
    _error(await client.get("/v1/messages", params={"limit": 5000}), 422, "value_out_of_range", "limit")
    _error(await client.get("/v1/messages", params={"limit": "many"}), 422, "invalid_type", "limit")
    _error(await client.get("/v1/messages", params={"from": "yesterday"}), 422, "invalid_datetime", "from")
    _error(await client.get("/v1/messages", params={"to": "xx"}), 422, "invalid_phone_number", "to")


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    _error(await client.get("/v1/nothing"), 404, "not_found")
    _error(await client.delete("/v1/messages"), 405, "method_not_allowed")
    _error(await client.get("/v1/batches/bat_nope"), 404, "batch_not_found", "id")
