"""The compliance gate through every way in (API single, API batch, console send, campaign): each rule
holds everywhere — signatures, templates, opt-out wording, suppression, consent, frequency cap, content
filter (block and hold), quiet hours for all marketing, limits of unverified accounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from tests.support import AccountFixture, make_account, wait_until

from hongyan.accounts.models import Account
from hongyan.audit.service import Actor
from hongyan.campaigns.models import Contact
from hongyan.compliance import filter_rules, holds, suppression
from hongyan.compliance.gate import OPT_OUT_TEXT, append_opt_out, split_signature
from hongyan.compliance.models import Signature
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.db.engine import Database
from hongyan.messaging.models import Message

NUMBER = "+8613800000001"  # the sandbox delivers numbers ending in 00001


async def _signature(db: Database, account_id: str, name: str, *, status: str = "approved",
                     default: bool = False) -> str:
    now = utcnow()
    sig_id = ids.new_id("sig")
    async with db.write() as session:
        session.add(Signature(id=sig_id, account_id=account_id, name=name, purpose="test", source="company",
                              status=status, is_default=default, created_at=now, updated_at=now))
    return sig_id


async def _choose(db: Database, account_id: str, **choices: Any) -> None:
    async with db.write() as session:
        account = await session.get(Account, account_id)
        assert account is not None
        account.settings = {**(account.settings or {}), "compliance": {
            **(account.settings or {}).get("compliance", {}), **choices}}


async def _quiet_off(db: Database, account_id: str) -> None:
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account_id).values(quiet_hours="off"))


async def _suppress(db: Database, account_id: str, *numbers: str, scope: str = "") -> None:
    async with db.write() as session:
        await suppression.add(session, account_id, list(numbers), scope, "manual")


async def _rule(db: Database, pattern: str, action: str, *, account_id: str | None = None, kind: str = "keyword") -> None:
    async with db.write() as session:
        await filter_rules.add_rule(session, account_id=account_id, kind=kind, pattern=pattern, action=action,
                                    actor=Actor.system("test"), authority=None)


async def _send(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/messages", json={"to": NUMBER, **body})


# -- pure pieces ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "body", "name"), [
    ("【鸿雁科技】您好", "您好", "鸿雁科技"),
    ("  【鸿雁】验证码1234", "验证码1234", "鸿雁"),
    ("您好【鸿雁】", "您好", "鸿雁"),
    ("您好【鸿雁】。", "您好【鸿雁】。", None),  # not at the end: part of the text
    ("您好", "您好", None),
    ("【】您好", "【】您好", None),
])
def test_split_signature(text: str, body: str, name: str | None) -> None:
    assert split_signature(text) == (body, name)


@pytest.mark.parametrize("text", ["优惠活动，回T退订", "退订回T", "拒收请回复R", "回复TD退订", "Sale today! Reply STOP to opt out",
                                  "text STOP to unsubscribe", "回 N 退订"])
def test_opt_out_wording_is_recognized(text: str) -> None:
    assert OPT_OUT_TEXT.search(text)


@pytest.mark.parametrize("text", ["双十二大促，全场五折", "Big sale today", "stop by our shop", "退货请联系客服"])
def test_texts_without_opt_out_wording(text: str) -> None:
    assert not OPT_OUT_TEXT.search(text)


def test_append_opt_out_by_language() -> None:
    assert append_opt_out("双十二大促", None) == "双十二大促，回T退订"
    assert append_opt_out("双十二大促。", None) == "双十二大促。回T退订"
    assert append_opt_out("Big sale", None) == "Big sale. Reply STOP to opt out"
    assert append_opt_out("大促", "拒收请回复R") == "大促，拒收请回复R"
    assert OPT_OUT_TEXT.search(append_opt_out("Big sale", None))


# -- signatures ----------------------------------------------------------------------------------------
async def test_signature_is_added_counted_and_must_be_approved(client: httpx.AsyncClient, db: Database,
                                                               account: AccountFixture) -> None:
    await _signature(db, account.account_id, "鸿雁科技", default=True)
    await _signature(db, account.account_id, "待审公司", status="pending")
    text = "验" * 65  # 65 UCS-2 characters: one segment alone (70), two with the 6-character signature
    r = await _send(client, text=text)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["text"] == f"【鸿雁科技】{text}" and body["segments"] == 2
    async with db.read() as session:
        stored = await session.scalar(select(Message.body).where(Message.id == body["id"]))
    assert stored == f"【鸿雁科技】{text}"

    r = await _send(client, text="【待审公司】您好")
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_not_approved", r.text
    assert r.json()["error"]["field"] == "text"
    r = await _send(client, text="您好", signature="别人的公司")
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_not_approved"
    assert r.json()["error"]["field"] == "signature"
    r = await _send(client, text="【鸿雁科技】您好", signature="其他")
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_conflict"
    # inline and named the same: one signature, not two
    r = await _send(client, text="【鸿雁科技】您好", signature="【鸿雁科技】")
    assert r.status_code == 202 and r.json()["text"] == "【鸿雁科技】您好"


async def test_signature_position_suffix(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _signature(db, account.account_id, "鸿雁", default=True)
    await _choose(db, account.account_id, signature_position="suffix")
    r = await _send(client, text="您的快递已到")
    assert r.status_code == 202 and r.json()["text"] == "您的快递已到【鸿雁】", r.text


async def test_signature_required_by_the_platform(app: Any, client: httpx.AsyncClient) -> None:
    app.state.settings.signature_required = True
    try:
        r = await _send(client, text="您好")
        assert r.status_code == 422 and r.json()["error"]["code"] == "signature_required", r.text
    finally:
        app.state.settings.signature_required = False


# -- marketing opt-out wording, suppression, consent, frequency cap ------------------------------------------
async def test_marketing_gets_opt_out_text_or_is_refused(client: httpx.AsyncClient, db: Database,
                                                         account: AccountFixture) -> None:
    await _quiet_off(db, account.account_id)
    r = await _send(client, text="双十二全场五折", message_type="marketing")
    assert r.status_code == 202 and r.json()["text"] == "双十二全场五折，回T退订", r.text
    r = await _send(client, text="双十二全场五折，拒收请回复R", message_type="marketing")
    assert r.status_code == 202 and r.json()["text"] == "双十二全场五折，拒收请回复R"
    r = await _send(client, text="通知：您的快递已到", message_type="notification")
    assert r.json()["text"] == "通知：您的快递已到"  # only marketing carries opt-out wording
    await _choose(db, account.account_id, opt_out_text_mode="reject")
    r = await _send(client, text="双十二全场五折", message_type="marketing")
    assert r.status_code == 422 and r.json()["error"]["code"] == "opt_out_text_missing", r.text
    r = await client.post("/v1/batches", json={"text": "Sale", "recipients": [NUMBER], "message_type": "marketing"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "opt_out_text_missing"


async def test_suppressed_numbers_refused_for_marketing_per_recipient(client: httpx.AsyncClient, db: Database,
                                                                      account: AccountFixture) -> None:
    await _quiet_off(db, account.account_id)
    await _suppress(db, account.account_id, "+8613800100001")
    numbers = ["+8613800100001", "+8613800200001", "+8613800300001"]
    r = await client.post("/v1/batches", json={"text": "大促，回T退订", "recipients": numbers,
                                               "message_type": "marketing"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2 and [m["to"] for m in body["messages"]] == numbers[1:]
    assert body["rejected"] == [{"index": 0, "to": numbers[0], "code": "recipient_opted_out",
                                 "message": body["rejected"][0]["message"], "field": "recipients[0].to"}]
    assert "opted out" in body["rejected"][0]["message"]
    batch = (await client.get(f"/v1/batches/{body['id']}")).json()
    assert batch["rejected_count"] == 1  # in the batch report too
    # notifications still reach the number (only marketing is refused) …
    r = await client.post("/v1/messages", json={"to": numbers[0], "text": "您的快递已到"})
    assert r.status_code == 202, r.text
    # … unless the account refuses every type
    await _choose(db, account.account_id, suppress_all_types=True)
    r = await client.post("/v1/messages", json={"to": numbers[0], "text": "您的快递已到"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "recipient_opted_out", r.text
    assert r.json()["error"]["field"] == "to"


async def test_per_signature_suppression(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _quiet_off(db, account.account_id)
    shop = await _signature(db, account.account_id, "商城")
    await _signature(db, account.account_id, "银行")
    await _suppress(db, account.account_id, NUMBER, scope=shop)
    r = await _send(client, text="【商城】大促，回T退订", message_type="marketing")
    assert r.status_code == 422 and r.json()["error"]["code"] == "recipient_opted_out"
    r = await _send(client, text="【银行】理财推荐，回T退订", message_type="marketing")
    assert r.status_code == 202, r.text


async def test_strict_consent(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _quiet_off(db, account.account_id)
    await _choose(db, account.account_id, strict_consent=True)
    now = utcnow()
    async with db.write() as session:
        for number, consent in (("+8613800100001", now), ("+8613800200001", None)):
            session.add(Contact(id=ids.new_id("ct"), account_id=account.account_id, phone=number,
                                phone_bidx=blind_index(number), name="", fields={}, tags=[], source="api",
                                consent_source="web_form" if consent else None, consent_at=consent,
                                created_at=now, updated_at=now))
    r = await client.post("/v1/batches", json={"text": "大促，回T退订", "message_type": "marketing",
                                               "recipients": ["+8613800100001", "+8613800200001", "+8613800300001"]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 1 and [x["code"] for x in body["rejected"]] == ["consent_missing"] * 2
    # notifications need no marketing consent
    r = await client.post("/v1/messages", json={"to": "+8613800300001", "text": "您的快递已到"})
    assert r.status_code == 202


async def test_marketing_daily_cap_per_number(client: httpx.AsyncClient, db: Database,
                                              account: AccountFixture) -> None:
    await _quiet_off(db, account.account_id)
    await _choose(db, account.account_id, marketing_daily_cap=2)
    for _ in range(2):
        assert (await _send(client, text="大促，回T退订", message_type="marketing")).status_code == 202
    r = await _send(client, text="大促，回T退订", message_type="marketing")
    assert r.status_code == 422 and r.json()["error"]["code"] == "frequency_cap_exceeded", r.text
    assert (await _send(client, text="您的快递已到")).status_code == 202  # notifications are not capped


# -- content filter ----------------------------------------------------------------------------------------
async def test_content_filter_blocks_and_holds_everywhere(client: httpx.AsyncClient, db: Database,
                                                          account: AccountFixture) -> None:
    await _rule(db, "代开发票", "block")
    await _rule(db, "贷款", "review")
    r = await _send(client, text="本公司代 开 发 票，量大从优")
    assert r.status_code == 422 and r.json()["error"]["code"] == "content_blocked", r.text
    assert "代开发票" in r.json()["error"]["message"]
    # a variable cannot smuggle a blocked word in: that recipient is refused, the others go
    r = await client.post("/v1/batches", json={"text": "{name}您好", "recipients": [
        {"to": "+8613800100001", "vars": {"name": "张三"}},
        {"to": "+8613800200001", "vars": {"name": "代.开.发.票"}}]})
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["code"] == "content_blocked"
    assert r.json()["rejected"][0]["field"] == "recipients[1].vars"

    r = await _send(client, text="低息贷款，当天放款")
    assert r.status_code == 202, r.text
    held_id = r.json()["id"]
    assert r.json()["status"] == "held"
    async with db.read() as session:
        assert await session.scalar(select(Message.status).where(Message.id == held_id)) == "held"
        listed = await holds.list_holds(session)
    assert [h.message_id for h in listed] == [held_id] and listed[0].matched == "贷款"
    assert await holds.decide(db, message_ids=[held_id], decision="approved", actor=Actor.system("reviewer")) == 1

    async def delivered() -> bool:
        async with db.read() as session:
            return await session.scalar(select(Message.status).where(Message.id == held_id)) == "delivered"

    await wait_until(delivered, message="approved message delivered")


async def test_account_rules_apply_only_to_that_account(app: Any, db: Database, client: httpx.AsyncClient,
                                                        account: AccountFixture) -> None:
    other = await make_account(db, name="Other")
    await _rule(db, "秒杀", "block", account_id=other.account_id)
    assert (await _send(client, text="限时秒杀")).status_code == 202
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=other.headers) as c:
        r = await c.post("/v1/messages", json={"to": NUMBER, "text": "限时秒杀"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "content_blocked"


# -- quiet hours for every marketing send -------------------------------------------------------------------
async def test_api_marketing_waits_for_the_quiet_window_to_end(client: httpx.AsyncClient, db: Database,
                                                               account: AccountFixture) -> None:
    now = datetime.now(UTC)
    shanghai_hour = (now + timedelta(hours=8)).hour
    # a window covering the current hour in Shanghai, ending in two hours
    start, end = (shanghai_hour - 1) % 24, (shanghai_hour + 2) % 24
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account.account_id)
                              .values(quiet_hours=f"{start:02d}:00-{end:02d}:00"))
    r = await _send(client, text="大促，回T退订", message_type="marketing")
    assert r.status_code == 202 and r.json()["status"] == "scheduled", r.text
    async with db.read() as session:
        row = (await session.execute(select(Message.status, Message.scheduled_at, Message.time_zone)
                                     .where(Message.id == r.json()["id"]))).one()
    assert row.status == "scheduled" and row.time_zone == "Asia/Shanghai"
    assert now + timedelta(minutes=50) < row.scheduled_at <= now + timedelta(hours=2)
    # verification and notification traffic is not affected
    r = await _send(client, text="验证码1234", message_type="verification")
    assert r.status_code == 202 and r.json()["status"] == "accepted"


# -- templates -------------------------------------------------------------------------------------------
async def test_template_send_validates_params(client: httpx.AsyncClient, db: Database,
                                              account: AccountFixture) -> None:
    from hongyan.compliance.models import MessageTemplate

    now = utcnow()
    async with db.write() as session:
        session.add(MessageTemplate(id="tpl_TEST", account_id=account.account_id, name="验证码",
                                    message_type="verification", body="您的验证码是${code}，5分钟内有效。",
                                    variables=[{"name": "code", "type": "code"}], status="approved",
                                    created_at=now, updated_at=now))
        session.add(MessageTemplate(id="tpl_PEND", account_id=account.account_id, name="x",
                                    message_type="notification", body="x${code}", variables=[], status="pending",
                                    created_at=now, updated_at=now))
    r = await _send(client, template_id="tpl_TEST", params={"code": "482913"})
    assert r.status_code == 202, r.text
    assert r.json()["text"] == "您的验证码是482913，5分钟内有效。" and r.json()["message_type"] == "verification"
    r = await _send(client, template_id="tpl_TEST", params={"code": "12ab"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_param_invalid", r.text
    assert r.json()["error"]["field"] == "params.code"
    r = await _send(client, template_id="tpl_TEST", params={})
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_param_missing"
    r = await _send(client, template_id="tpl_PEND", params={"code": "1234"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_not_approved"
    r = await _send(client, text="x", template_id="tpl_TEST")
    assert r.status_code == 422 and r.json()["error"]["code"] == "text_and_template"
    r = await client.post("/v1/batches", json={"template_id": "tpl_TEST", "recipients": [
        {"to": "+8613800100001", "params": {"code": "1234"}}, {"to": "+8613800200001", "params": {"code": "1"}}]})
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert r.json()["rejected"][0]["field"] == "recipients[1].params.code"
    # restricted to templates: free text refused
    await _choose(db, account.account_id, free_text_allowed=False)
    r = await _send(client, text="随便写点什么")
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_required"
    assert (await _send(client, template_id="tpl_TEST", params={"code": "5678"})).status_code == 202


# -- unverified accounts ------------------------------------------------------------------------------------
async def test_unverified_account_limits(app: Any, db: Database) -> None:
    app.state.settings.unverified_daily_limit = 4
    app.state.settings.unverified_max_numbers = 2
    fresh = await make_account(db, name="New", kyc_status="unverified")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=fresh.headers) as c:
        r = await c.post("/v1/messages", json={"to": NUMBER, "text": "大促，回T退订", "message_type": "marketing"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "kyc_required", r.text
        r = await c.post("/v1/batches", json={"text": "测试", "recipients": [
            "+8613800100001", "+8613800200001", "+8613800300001"]})
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 2 and r.json()["rejected"][0]["code"] == "kyc_recipient_limit"
        # the two known numbers may get more, up to the daily limit of 4
        r = await c.post("/v1/batches", json={"text": "测试", "recipients": ["+8613800100001", "+8613800200001"]})
        assert r.json()["accepted"] == 2
        r = await c.post("/v1/messages", json={"to": "+8613800100001", "text": "测试"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "kyc_daily_limit"
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == fresh.account_id).values(kyc_status="verified"))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=fresh.headers) as c:
        r = await c.post("/v1/messages", json={"to": "+8613800100001", "text": "测试"})
        assert r.status_code == 202, r.text


# -- campaigns ---------------------------------------------------------------------------------------------
async def test_campaign_applies_every_rule(client: httpx.AsyncClient, db: Database, account: AccountFixture) -> None:
    await _quiet_off(db, account.account_id)
    await _signature(db, account.account_id, "鸿雁商城", default=True)
    await _rule(db, "贷款", "review")
    await _suppress(db, account.account_id, "+8613800100001")
    r = await client.post("/v1/groups", json={"name": "g", "kind": "static"})
    group_id = r.json()["id"]
    contact_ids = []
    for i, name in enumerate(["张三", "李四", "贷款王", "赵六"]):
        r = await client.post("/v1/contacts", json={"phone": f"+86138001{i:02d}001", "name": name})
        assert r.status_code == 201, r.text
        contact_ids.append(r.json()["id"])
    await client.post(f"/v1/groups/{group_id}/members", json={"ids": contact_ids})
    # a text the rules refuse is refused when the campaign is created
    await _rule(db, "代开发票", "block")
    r = await client.post("/v1/campaigns", json={"name": "x", "text": "代开发票{name}", "group_ids": [group_id],
                                                 "message_type": "marketing"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "content_blocked", r.text
    r = await client.post("/v1/campaigns", json={"name": "双十二", "text": "{name}您好，双十二大促",
                                                 "group_ids": [group_id], "message_type": "marketing"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = await client.post(f"/v1/campaigns/{cid}/start")
    assert r.status_code in (200, 202), r.text

    async def built() -> dict[str, Any] | None:
        runs = (await client.get(f"/v1/campaigns/{cid}")).json()["runs"]
        return runs[0] if runs and runs[0].get("audience_total") is not None else None

    run = await wait_until(built, message="run built")
    async with db.read() as session:
        rows = (await session.execute(select(Message.body, Message.status).where(Message.campaign_id == cid)
                                      .order_by(Message.body))).all()
    bodies = {b: s for b, s in rows}
    assert set(bodies) == {"【鸿雁商城】李四您好，双十二大促，回T退订", "【鸿雁商城】贷款王您好，双十二大促，回T退订",
                           "【鸿雁商城】赵六您好，双十二大促，回T退订"}
    assert bodies["【鸿雁商城】贷款王您好，双十二大促，回T退订"] == "held"
    assert run["rejected"] == 1 and run["accepted"] == 3


# -- console ----------------------------------------------------------------------------------------------
async def test_console_send_passes_the_same_rules(app: Any, db: Database, account: AccountFixture) -> None:
    from contextlib import aclosing

    from console_pages import csrf_of, field_error, signed_in_client
    from hongyan.messaging.models import Batch

    await _quiet_off(db, account.account_id)
    await _suppress(db, account.account_id, "+8613800100001")
    await _rule(db, "代开发票", "block")
    browser = await signed_in_client(app, db, account, lang="en")
    async with aclosing(browser):
        token = csrf_of((await browser.get("/console/send")).text)
        form = {"csrf_token": token, "recipient_mode": "list", "message_type": "marketing",
                "recipients": "13800100001\n13800200001", "text": "双十二大促"}
        blocked = await browser.post("/console/send", data={**form, "text": "代 开 发 票", "action": "review"})
        assert blocked.status_code == 422
        assert "代开发票" in field_error(blocked.text, "text")  # the API's message, next to the field
        sent = await browser.post("/console/send", data={**form, "action": "confirm"})
        assert sent.status_code == 303, sent.text
    async with db.read() as session:
        batch = (await session.scalars(select(Batch).where(Batch.account_id == account.account_id))).one()
        bodies = (await session.scalars(select(Message.body).where(Message.batch_id == batch.id))).all()
    assert (batch.accepted_count, batch.rejected_count) == (1, 1)
    assert batch.rejected[0]["code"] == "recipient_opted_out"
    assert bodies == ["双十二大促，回T退订"]


async def test_opt_out_confirmation_reaches_the_number_that_opted_out(app: Any, db: Database,
                                                                     account: AccountFixture) -> None:
    from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch

    await _choose(db, account.account_id, suppress_all_types=True)
    await _suppress(db, account.account_id, NUMBER)
    request = SubmitRequest(text="您已退订，回复START恢复。", recipients=[Recipient(to=NUMBER)])
    with pytest.raises(Exception) as refused:
        await submit_batch(db, app.state.settings, request, account_id=account.account_id, source="api")
    assert getattr(refused.value, "code", None) == "recipient_opted_out"
    result = await submit_batch(db, app.state.settings, request, account_id=account.account_id,
                                source="opt_out_reply")
    assert len(result.accepted) == 1
