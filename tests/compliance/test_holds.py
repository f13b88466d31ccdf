"""Messages held by the content filter: a reviewer approves them (released through the outbox, then sent) or rejects
them (→ rejected, `content_rejected`, the held funds released exactly); a second decision decides nothing;
each decision is audited with the reviewer. Through the service (no workers) and the API on both databases.

Held messages are stored here the way the submit path stores them (message rows with status `held`, a
funds hold, MessageHold rows), so these tests do not depend on the content filter's rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hongyan.audit.models import AuditEntry
from hongyan.audit.service import Actor
from hongyan.billing import ledger
from hongyan.billing.charging import verify_all
from hongyan.billing.models import LedgerAccount
from hongyan.compliance import holds
from hongyan.compliance.held_review import highlight, mask_number
from hongyan.compliance.models import MessageHold
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.messaging.models import Message
from review_support import PRICE, TEXT, hold_messages, make_operator
from support import AccountFixture, make_account, wait_until

START = 1_000_000
REVIEWER = Actor("user", "usr_reviewer", "reviewer@platform.example", "127.0.0.1")


async def _ledger(db: Database, account_id: str) -> tuple[int, int]:
    """(cash, held) of the account in CNY."""
    async with db.read() as session:
        cash = await session.get(LedgerAccount, ledger.cash(account_id, "CNY"))
        held = await session.get(LedgerAccount, ledger.held(account_id, "CNY"))
        return (cash.balance if cash else 0), (held.balance if held else 0)


async def _messages(db: Database, message_ids: list[str]) -> dict[str, Message]:
    async with db.read() as session:
        return {m.id: m for m in await session.scalars(select(Message).where(Message.id.in_(message_ids)))}


# -- pure ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+8613812345678", "+86138****5678"),
        ("+14155550123", "+141****0123"),
        ("+447700900123", "+4477****0123"),
        ("10086", "***86"),
        ("123", "***"),
    ],
)
def test_numbers_are_masked_for_reviewers(number: str, masked: str) -> None:
    assert mask_number(number) == masked


def test_the_matched_pattern_is_marked() -> None:
    parts = highlight("领取大奖，大奖等你", "大奖", "keyword")
    assert [(p.text, p.matched) for p in parts] == [
        ("领取", False),
        ("大奖", True),
        ("，", False),
        ("大奖", True),
        ("等你", False),
    ]
    assert [p.text for p in highlight("Click WIN now", "win", "keyword") if p.matched] == ["WIN"]
    assert [p.text for p in highlight("code 123456 here", r"\d{6}", "regex") if p.matched] == ["123456"]
    assert (
        highlight("text (", "(", "regex") == highlight("text (", None, None)[:1]
    )  # a broken regex marks nothing
    assert "".join(p.text for p in highlight(TEXT, "大奖", "keyword")) == TEXT


# -- the service -----------------------------------------------------------------------------------------
async def test_approve_queues_with_an_outbox_item(db: Database) -> None:
    acc = await make_account(db, balance_micros=START)
    ids_ = await hold_messages(db, acc.account_id, ["+8613800000001", "+8613800000002"])
    assert await _ledger(db, acc.account_id) == (START - 2 * PRICE, 2 * PRICE)
    assert await holds.decide(db, message_ids=[ids_[0]], decision="approved", actor=REVIEWER) == 1
    rows = await _messages(db, ids_)
    assert rows[ids_[1]].status == "held"  # not chosen: still waits
    assert rows[ids_[0]].status in ("held", "queued")  # the outbox relay makes it queued
    async with db.read() as session:
        outbox = (await session.scalars(select(OutboxItem).where(OutboxItem.topic == "dispatch"))).all()
        hold = await session.get(MessageHold, ids_[0])
    assert [o.payload for o in outbox] == [{"ids": [ids_[0]]}]
    assert hold is not None and hold.decision == "approved" and hold.decided_by == "user:usr_reviewer"
    assert await _ledger(db, acc.account_id) == (START - 2 * PRICE, 2 * PRICE)  # still held until it is final


async def test_reject_releases_the_held_funds_exactly(db: Database) -> None:
    acc = await make_account(db, balance_micros=START)
    ids_ = await hold_messages(db, acc.account_id, ["+8613800000001", "+8613800000002", "+8613800000003"])
    long_id = (await hold_messages(db, acc.account_id, ["+8613800000004"], text="大奖" * 40))[0]  # 2 segments
    assert await _ledger(db, acc.account_id) == (START - 5 * PRICE, 5 * PRICE)
    with pytest.raises(Exception, match="Say why"):
        await holds.decide(db, message_ids=ids_, decision="rejected", actor=REVIEWER, reason=" ")
    decided = await holds.decide(
        db, message_ids=[*ids_[:2], long_id], decision="rejected", actor=REVIEWER, reason="疑似诈骗"
    )
    assert decided == 3
    rows = await _messages(db, [*ids_, long_id])
    for i in (ids_[0], ids_[1], long_id):
        assert (rows[i].status, rows[i].error_code, rows[i].billing_state) == (
            "rejected",
            "content_rejected",
            "released",
        )
    assert rows[ids_[2]].status == "held"
    assert await _ledger(db, acc.account_id) == (
        START - PRICE,
        PRICE,
    )  # 4 segments back, one message still held
    assert await verify_all(db) == []


async def test_deciding_twice_decides_nothing_the_second_time(db: Database) -> None:
    acc = await make_account(db, balance_micros=START)
    ids_ = await hold_messages(db, acc.account_id, ["+8613800000001", "+8613800000002"])
    assert await holds.decide(db, message_ids=ids_, decision="rejected", actor=REVIEWER, reason="spam") == 2
    cash_after_first = await _ledger(db, acc.account_id)
    assert await holds.decide(db, message_ids=ids_, decision="approved", actor=REVIEWER) == 0
    assert await holds.decide(db, message_ids=ids_, decision="rejected", actor=REVIEWER, reason="again") == 0
    assert await _ledger(db, acc.account_id) == cash_after_first == (START, 0)
    assert {m.status for m in (await _messages(db, ids_)).values()} == {"rejected"}
    async with db.read() as session:
        entries = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action.startswith("message_hold.")))
        ).all()
        outbox = (await session.scalars(select(OutboxItem))).all()
    assert len(entries) == 1 and outbox == []
    entry = entries[0]
    assert (entry.action, entry.actor_id, entry.actor_label) == (
        "message_hold.rejected",
        "usr_reviewer",
        "reviewer@platform.example",
    )
    assert entry.account_id == acc.account_id and entry.after is not None
    assert entry.after["reason"] == "spam" and sorted(entry.after["message_ids"]) == sorted(ids_)


# -- the API ---------------------------------------------------------------------------------------------
def _client(app: Any, acc: AccountFixture) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=acc.headers
    )


async def test_reviewers_see_masked_numbers_and_decide(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=START)
    other = await make_account(db, name="Other", balance_micros=START)
    operator = await make_operator(db)
    mine = await hold_messages(db, acc.account_id, ["+8613812345678", "+8613900000002"])
    theirs = await hold_messages(db, other.account_id, ["+8613700000003"])
    async with (
        _client(app, operator) as staff,
        _client(app, acc) as client,
        _client(app, other) as other_client,
    ):
        queue = (await staff.get("/v1/operator/reviews/messages")).json()
        assert queue["open"] == 3 and {m["message_id"] for m in queue["data"]} == {*mine, *theirs}
        first = next(m for m in queue["data"] if m["message_id"] == mine[0])
        assert first["to"] == "+86138****5678" and first["text"] == TEXT
        assert first["matched"] == {"rule_id": "flt_review_prize", "pattern": "大奖", "kind": "keyword"}
        assert "13812345678" not in (await staff.get("/v1/operator/reviews/messages")).text

        own = (await client.get("/v1/held-messages")).json()["data"]
        assert {m["message_id"] for m in own} == set(mine)  # only its own
        assert {m["to"] for m in own} == {"+8613812345678", "+8613900000002"}  # its own numbers in full
        assert (await other_client.get("/v1/held-messages")).json()["data"][0]["message_id"] == theirs[0]
        denied = await client.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": mine, "decision": "approved"}
        )
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_scope"

        no_reason = await staff.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": theirs, "decision": "rejected"}
        )
        assert no_reason.status_code == 422 and no_reason.json()["error"]["code"] == "reason_required"
        empty = await staff.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": [], "decision": "approved"}
        )
        assert empty.status_code == 422 and empty.json()["error"]["code"] == "message_ids_empty"
        r = await staff.post(
            "/v1/operator/reviews/messages/decide",
            json={"message_ids": [*theirs, *theirs], "decision": "rejected", "reason": "诈骗"},
        )
        assert r.json() == {"decided": 1, "requested": 1, "decision": "rejected"}
        r = await staff.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": mine, "decision": "approved"}
        )
        assert r.json()["decided"] == 2
        again = await staff.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": mine, "decision": "approved"}
        )
        assert again.json()["decided"] == 0
        assert (await staff.get("/v1/operator/reviews/messages")).json()["open"] == 0
        history = (await staff.get("/v1/operator/reviews/messages", params={"status": "all"})).json()["data"]
        assert {m["decision"] for m in history} == {"approved", "rejected"}
        assert all(m["decided_by"] == f"api_key:{operator.key_id}" for m in history)
        assert {
            m["decision"]
            for m in (await client.get("/v1/held-messages", params={"status": "all"})).json()["data"]
        } == {"approved"}

    rejected = (await _messages(db, theirs))[theirs[0]]
    assert (rejected.status, rejected.error_code) == ("rejected", "content_rejected")
    assert await _ledger(db, other.account_id) == (START, 0)


async def test_approved_messages_are_delivered(db: Database, app: Any) -> None:
    acc = await make_account(db, balance_micros=START)
    ids_ = await hold_messages(db, acc.account_id, ["+8613800000001", "+8613900000001"])  # sandbox: delivered
    assert await holds.decide(db, message_ids=ids_, decision="approved", actor=REVIEWER) == 2

    async def delivered() -> bool:  # approved messages go out through the running workers
        return all(m.status == "delivered" for m in (await _messages(db, ids_)).values())

    await wait_until(delivered, timeout=15, message="approved messages delivered")
    assert await _ledger(db, acc.account_id) == (START - 2 * PRICE, 0)


async def test_a_review_rule_holds_a_send_until_a_reviewer_releases_it(db: Database, app: Any) -> None:
    """The whole path: a platform `review` rule, a send through the API, the held message in both queues,
    then released by a reviewer and delivered."""
    acc = await make_account(db, balance_micros=START)
    operator = await make_operator(db)
    async with _client(app, operator) as staff, _client(app, acc) as client:
        rule = await staff.post(
            "/v1/operator/filter-rules", json={"kind": "keyword", "pattern": "大奖", "action": "review"}
        )
        assert rule.status_code == 201, rule.text
        sent = await client.post(
            "/v1/messages", json={"to": "+8613812300001", "text": "恭喜您获得大奖，请到店领取"}
        )
        assert sent.status_code in (200, 201, 202), sent.text
        message_id = sent.json()["id"]
        assert (await _messages(db, [message_id]))[message_id].status == "held"
        own = (await client.get("/v1/held-messages")).json()["data"]
        assert [m["message_id"] for m in own] == [message_id]
        assert own[0]["matched"]["rule_id"] == rule.json()["id"] and own[0]["to"] == "+8613812300001"
        queue = (await staff.get("/v1/operator/reviews/messages")).json()["data"]
        assert [(m["message_id"], m["to"]) for m in queue] == [(message_id, "+86138****0001")]
        r = await staff.post(
            "/v1/operator/reviews/messages/decide", json={"message_ids": [message_id], "decision": "approved"}
        )
        assert r.json()["decided"] == 1

    async def delivered() -> bool:
        return (await _messages(db, [message_id]))[message_id].status == "delivered"

    await wait_until(delivered, timeout=15, message="the released message delivered")
