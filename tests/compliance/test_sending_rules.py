"""/v1/account/compliance and the staff-only /v1/operator/accounts/{id}/compliance: checked, audited, applied."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from tests.support import AccountFixture

from hongyan.accounts import keys
from hongyan.accounts import service as accounts
from hongyan.accounts.models import Account
from hongyan.audit.models import AuditEntry
from hongyan.db.engine import Database


async def test_rules_read_change_and_apply(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    r = await client.get("/v1/account/compliance")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["opt_out_text_mode"] == "append" and body["free_text_allowed"] is True
    assert body["kyc_status"] == "verified" and body["platform"]["kyc_required"] is True
    r = await client.patch("/v1/account/compliance", json={"opt_out_text": "拒收请回复R", "marketing_daily_cap": 3,
                                                          "signature_position": "suffix"})
    assert r.status_code == 200, r.text
    assert r.json()["opt_out_text"] == "拒收请回复R" and r.json()["marketing_daily_cap"] == 3
    async with db.read() as session:
        entry = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "compliance.settings"))).one()
    assert entry.after is not None and entry.after["marketing_daily_cap"] == 3
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account.account_id).values(quiet_hours="off"))
    r = await client.post("/v1/messages", json={"to": "+8613800000001", "text": "大促", "message_type": "marketing"})
    assert r.status_code == 202 and r.json()["text"] == "大促，拒收请回复R", r.text


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"opt_out_text_mode": "off"}, "invalid_opt_out_text_mode", "opt_out_text_mode"),
    ({"opt_out_text": "欢迎光临"}, "invalid_opt_out_text", "opt_out_text"),
    ({"marketing_daily_cap": 0}, "invalid_daily_cap", "marketing_daily_cap"),
    ({"marketing_daily_cap": True}, "invalid_daily_cap", "marketing_daily_cap"),
    ({"signature_position": "middle"}, "invalid_signature_position", "signature_position"),
    ({"strict_consent": "yes"}, "invalid_boolean", "strict_consent"),
    ({"free_text_allowed": False}, "field_not_allowed", "free_text_allowed"),
])
async def test_bad_changes_name_the_field(client: httpx.AsyncClient, body: dict[str, Any], code: str,
                                          field: str) -> None:
    r = await client.patch("/v1/account/compliance", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["field"] == field


async def test_only_staff_restrict_an_account_to_templates(app: Any, client: httpx.AsyncClient, db: Database,
                                                           account: AccountFixture) -> None:
    r = await client.patch(f"/v1/operator/accounts/{account.account_id}/compliance", json={"free_text_allowed": False})
    assert r.status_code == 403, r.text
    async with db.write() as session:
        platform = await accounts.create_account(session, name="Platform")
        created = await keys.create_api_key(session, account_id=platform.id, name="ops", scopes=("operator",),
                                            allow_operator=True)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {created.token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as ops:
        r = await ops.patch(f"/v1/operator/accounts/{account.account_id}/compliance", json={"free_text_allowed": False})
        assert r.status_code == 200 and r.json()["free_text_allowed"] is False, r.text
        r = await ops.patch("/v1/operator/accounts/acc_nope/compliance", json={"free_text_allowed": False})
        assert r.status_code == 404
    r = await client.post("/v1/messages", json={"to": "+8613800000001", "text": "你好"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_required"
