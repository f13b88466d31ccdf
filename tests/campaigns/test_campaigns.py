"""Campaigns through the API with the embedded workers (sandbox carrier): personalize, preview, estimate,
start, complete; pause, resume and cancel with exact counts and money; errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import update
from tests.support import AccountFixture, wait_until

from hongyan.accounts.models import Account
from hongyan.billing import charging
from hongyan.db.engine import Database

PRICE = 40_000  # default price per segment (settings.default_price_micros)


async def _contacts(client: httpx.AsyncClient, n: int, *, missing_every: int = 0, name_prefix: str = "客户") -> str:
    """n contacts in a new static group (every `missing_every`-th without the 订单号 field); returns the group id.

    Their numbers end in 00001, which the sandbox carrier always delivers (docs/sandbox.md)."""
    r = await client.post("/v1/contact-fields", json={"name": "订单号", "type": "text"})
    assert r.status_code in (201, 409), r.text
    r = await client.post("/v1/groups", json={"name": f"g{n}", "kind": "static"})
    assert r.status_code == 201, r.text
    group_id = r.json()["id"]
    ids = []
    for i in range(n):
        fields = {} if missing_every and i % missing_every == 0 else {"订单号": f"DD{i:04d}"}
        r = await client.post("/v1/contacts", json={"phone": f"+86138{i:03d}00001", "name": f"{name_prefix}{i}",
                                                     "fields": fields})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = await client.post(f"/v1/groups/{group_id}/members", json={"ids": ids})
    assert r.status_code in (200, 201), r.text
    return group_id


async def _quiet_off(db: Database, account: AccountFixture) -> None:
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account.account_id).values(quiet_hours="off"))


async def _campaign(client: httpx.AsyncClient, group_id: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "双十二", "text": "{name|客户}您好，您的订单{订单号}已发货。", "group_ids": [group_id], **extra}
    r = await client.post("/v1/campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def _run(client: httpx.AsyncClient, campaign_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/campaigns/{campaign_id}")
    assert r.status_code == 200, r.text
    runs = r.json()["runs"]
    return runs[0] if runs else {}


async def test_personalized_campaign_runs_to_completion(client: httpx.AsyncClient, db: Database,
                                                         account: AccountFixture) -> None:
    await _quiet_off(db, account)
    group_id = await _contacts(client, 12, missing_every=4)  # contacts 0, 4, 8 have no 订单号
    campaign = await _campaign(client, group_id, message_type="marketing")
    assert campaign["status"] == "draft"

    r = await client.post(f"/v1/campaigns/{campaign['id']}/preview", params={"n": 3})
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["audience"] == 12 and preview["messages"] == 9 and preview["skipped"] == 3
    assert preview["samples"][0]["text"] == "客户1您好，您的订单DD0001已发货。"
    assert preview["samples"][0]["segments"] == 1 and preview["samples"][0]["encoding"] == "ucs2"
    assert preview["price_total_micros"] == 9 * PRICE
    assert {p["code"] for p in preview["problems"]} == {"template_variable_missing"}

    r = await client.post(f"/v1/campaigns/{campaign['id']}/start")
    assert r.status_code == 200, r.text

    async def completed() -> Any:
        run = await _run(client, campaign["id"])
        return run if run.get("status") == "completed" else None

    run = await wait_until(completed, timeout=20, message="the run completes")
    assert run["accepted"] == 9 and run["rejected"] == 3 and run["audience_total"] == 12
    assert sum(run["counts"].values()) == 9
    assert set(run["counts"]) <= {"sent", "delivered"}
    r = await client.get(f"/v1/batches/{run['batch_id']}")
    assert r.status_code == 200, r.text  # each run is a batch with its own report
    r = await client.get(f"/v1/campaigns/{campaign['id']}")
    assert r.json()["status"] == "completed"
    assert await charging.verify_all(db) == []


async def test_unknown_variable_is_named(client: httpx.AsyncClient) -> None:
    group_id = await _contacts(client, 1)
    r = await client.post("/v1/campaigns", json={"name": "x", "text": "您好{会员等级}", "group_ids": [group_id]})
    assert r.status_code == 422
    body = r.json()["error"]
    assert body["code"] == "unknown_template_variable" and body["field"] == "text" and "会员等级" in body["message"]


async def test_on_missing_empty_renders_blank(client: httpx.AsyncClient) -> None:
    group_id = await _contacts(client, 2, missing_every=2)
    campaign = await _campaign(client, group_id, on_missing="empty", text="订单{订单号}完成")
    preview = (await client.post(f"/v1/campaigns/{campaign['id']}/preview")).json()
    assert preview["messages"] == 2 and preview["skipped"] == 0
    assert sorted(s["text"] for s in preview["samples"]) == ["订单DD0001完成", "订单完成"]


async def test_bad_inputs_get_clear_errors(client: httpx.AsyncClient) -> None:
    group_id = await _contacts(client, 1)
    cases = [
        ({"schedule": {"mode": "recurring", "start": "2030-01-01T09:00", "rrule": "FREQ=HOURLY"}}, "invalid_rrule",
         "schedule.rrule"),
        ({"schedule": {"mode": "at", "at": "2001-01-01T09:00"}}, "schedule_in_past", "schedule.at"),
        ({"time_zone": "Mars/Olympus"}, "invalid_time_zone", "time_zone"),
        ({"group_ids": ["grp_nope"]}, "group_not_found", "group_ids[0]"),
        ({"numbers": ["12"]}, None, "numbers[0]"),
    ]
    for extra, code, field in cases:
        body = {"name": "x", "text": "hi {name}", "group_ids": [group_id], **extra}
        r = await client.post("/v1/campaigns", json=body)
        assert 400 <= r.status_code < 500, (extra, r.text)
        err = r.json()["error"]
        assert err["field"] == field, err
        if code:
            assert err["code"] == code, err


async def test_start_refused_without_balance(db: Database, client: httpx.AsyncClient, app: Any) -> None:
    from tests.support import make_account

    poor = await make_account(db, name="Poor", balance_micros=PRICE)  # enough for one message
    poor_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                    headers=poor.headers)
    async with poor_client:
        group_id = await _contacts(poor_client, 3)
        campaign = await _campaign(poor_client, group_id, message_type="notification")
        r = await poor_client.post(f"/v1/campaigns/{campaign['id']}/start")
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "insufficient_balance"
        assert (await poor_client.get(f"/v1/campaigns/{campaign['id']}")).json()["status"] == "draft"


@pytest.mark.parametrize("action", ["cancel", "resume"])
async def test_pause_then_cancel_or_resume_exact_counts_and_money(
    client: httpx.AsyncClient, db: Database, account: AccountFixture, action: str
) -> None:
    n = 60
    group_id = await _contacts(client, n)
    campaign = await _campaign(client, group_id, message_type="notification", tps_cap=10)
    before = (await client.get("/v1/billing/balance")).json()["balance_micros"]
    assert (await client.post(f"/v1/campaigns/{campaign['id']}/start")).status_code == 200

    async def some_sent() -> Any:
        run = await _run(client, campaign["id"])
        counts = run.get("counts", {})
        return run if counts.get("sent", 0) + counts.get("delivered", 0) >= 5 else None

    await wait_until(some_sent, timeout=20, message="the first messages go out")
    r = await client.post(f"/v1/campaigns/{campaign['id']}/pause")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused"

    async def settled() -> Any:  # whatever a dispatcher had taken finishes; nothing else moves
        run = await _run(client, campaign["id"])
        counts = run["counts"]
        return run if not counts.get("queued") and not counts.get("sending") else None

    run = await wait_until(settled, timeout=20, message="in-flight messages settle after the pause")
    done = run["counts"].get("sent", 0) + run["counts"].get("delivered", 0)
    assert run["status"] == "paused" and run["accepted"] == n
    assert run["counts"].get("scheduled", 0) == n - done
    if action == "cancel":
        r = await client.post(f"/v1/campaigns/{campaign['id']}/cancel")
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["canceled_messages"] == n - done
        assert out["released_micros"] == (n - done) * PRICE
        run = await _run(client, campaign["id"])
        assert run["status"] == "canceled" and run["counts"].get("canceled") == n - done
        # counts first: a receipt arriving in between only lowers the held amount read after them
        awaiting_receipt = (await _run(client, campaign["id"]))["counts"].get("sent", 0)
        after = (await client.get("/v1/billing/balance")).json()
        assert after["balance_micros"] == before - done * PRICE  # the canceled rest went back to cash
        assert after["held_micros"] in range(0, awaiting_receipt * PRICE + 1, PRICE)
    else:
        assert (await client.post(f"/v1/campaigns/{campaign['id']}/resume")).status_code == 200

        async def completed() -> Any:
            got = await _run(client, campaign["id"])
            return got if got["status"] == "completed" else None

        run = await wait_until(completed, timeout=30, message="the resumed run completes")
        assert run["counts"].get("sent", 0) + run["counts"].get("delivered", 0) == n
    assert await charging.verify_all(db) == []


async def test_account_quiet_hours(app: Any, client: httpx.AsyncClient) -> None:
    app.state.settings.quiet_hours = "21:00-08:00"  # the product's default (the test settings switch it off)
    r = await client.get("/v1/account/quiet-hours")
    assert r.json() == {"quiet_hours": "21:00-08:00", "own": None, "platform_default": "21:00-08:00"}
    r = await client.patch("/v1/account/quiet-hours", json={"quiet_hours": "22:00 - 8:30"})
    assert r.status_code == 200 and r.json()["quiet_hours"] == "22:00-08:30" and r.json()["own"] == "22:00-08:30"
    for bad, code in (("off", "quiet_hours_required"), ("25:00-08:00", "invalid_quiet_hours")):
        r = await client.patch("/v1/account/quiet-hours", json={"quiet_hours": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == code and r.json()["error"]["field"] == "quiet_hours"
    r = await client.patch("/v1/account/quiet-hours", json={"quiet_hours": None})
    assert r.json()["quiet_hours"] == "21:00-08:00" and r.json()["own"] is None
