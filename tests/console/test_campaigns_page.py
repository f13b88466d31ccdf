"""Console campaign pages: list, the new-campaign form (errors next to the field, the RRULE built from the
schedule fields), the campaign page (preview, start, runs with live progress JSON), pause / resume /
cancel with its confirm step, and a viewer who sees everything but cannot act."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from console_pages import csrf_of, field_error, signed_in_client, text_of
from hongyan.accounts.models import Account, Membership
from hongyan.campaigns.recurrence import parse_rrule
from hongyan.console.campaign_form import CampaignForm, FormProblem, build_rrule, form_field_for
from hongyan.core.errors import Unprocessable
from hongyan.db.engine import Database
from support import AccountFixture, wait_until

PRICE = 40_000  # default price per segment (settings.default_price_micros)


async def _quiet_off(db: Database, account: AccountFixture) -> None:
    """Quiet hours off, so marketing runs go out whatever the time of day the test runs at."""
    async with db.write() as session:
        await session.execute(
            update(Account).where(Account.id == account.account_id).values(quiet_hours="off")
        )


async def _group(client: httpx.AsyncClient, n: int, *, missing_every: int = 0) -> str:
    """n contacts with a 订单号 field in a new static group; returns its id."""
    assert (await client.post("/v1/contact-fields", json={"name": "订单号", "type": "text"})).status_code in (
        201,
        409,
    )
    group = await client.post("/v1/groups", json={"name": f"老客户{n}", "kind": "static"})
    assert group.status_code == 201, group.text
    ids = []
    for i in range(n):
        fields = {} if missing_every and i % missing_every == 0 else {"订单号": f"DD{i:04d}"}
        r = await client.post(
            "/v1/contacts", json={"phone": f"+86139{i:08d}", "name": f"客户{i}", "fields": fields}
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert (await client.post(f"/v1/groups/{group.json()['id']}/members", json={"ids": ids})).status_code in (
        200,
        201,
    )
    return str(group.json()["id"])


def _form(token: str, **values: Any) -> dict[str, Any]:
    return {
        "csrf_token": token,
        "name": "双十二",
        "message_type": "marketing",
        "text": "{name|客户}您好，订单{订单号}已发货",
        "on_missing": "skip",
        "schedule_mode": "now",
        "time_zone": "Asia/Shanghai",
        "priority": "normal",
        **values,
    }


def _campaign_id(response: httpx.Response) -> str:
    match = re.fullmatch(r"/console/campaigns/(cmp_\w+)", response.headers["location"])
    assert match, response.headers["location"]
    return match.group(1)


# -- the RRULE built from the form's fields (pure) --------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "rrule"),
    [
        ({"freq": "daily", "interval": "1", "end": "count", "count": "5"}, "FREQ=DAILY;COUNT=5"),
        (
            {
                "freq": "weekly",
                "interval": "2",
                "weekdays": ["TH", "MO"],
                "end": "until",
                "until": "2027-03-31",
            },
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH;UNTIL=20270331",
        ),
        (
            {"freq": "monthly", "interval": "1", "month_day": "-1", "end": "count", "count": "12"},
            "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=12",
        ),
        (
            {"freq": "monthly", "interval": "3", "month_day": "15", "end": "never"},
            "FREQ=MONTHLY;INTERVAL=3;BYMONTHDAY=15",
        ),
        (
            {"freq": "daily", "rrule": "FREQ=WEEKLY;BYDAY=FR;COUNT=2"},
            "FREQ=WEEKLY;BYDAY=FR;COUNT=2",
        ),  # raw wins
    ],
)
def test_rrule_built_from_the_fields(fields: dict[str, Any], rrule: str) -> None:
    weekdays = fields.pop("weekdays", [])
    built = build_rrule(CampaignForm.from_fields(fields, group_ids=[], weekdays=weekdays))
    assert built == rrule
    parse_rrule(built)  # and the API reads it back


@pytest.mark.parametrize(
    ("fields", "problem_field"),
    [
        ({"freq": "weekly", "interval": "1", "end": "never"}, "weekdays"),
        ({"freq": "daily", "interval": "x", "end": "never"}, "interval"),
        ({"freq": "daily", "interval": "1", "end": "until", "until": "31/12/2026"}, "until"),
        ({"freq": "daily", "interval": "1", "end": "count", "count": ""}, "count"),
    ],
)
def test_fields_of_the_wrong_shape_are_named(fields: dict[str, str], problem_field: str) -> None:
    with pytest.raises(FormProblem) as problem:
        build_rrule(CampaignForm.from_fields(fields, group_ids=[], weekdays=[]))
    assert problem.value.field == problem_field


def test_out_of_range_rule_is_the_apis_error_on_the_recurrence_fields() -> None:
    form = CampaignForm.from_fields(
        {"freq": "daily", "interval": "400", "end": "never"}, group_ids=[], weekdays=[]
    )
    with pytest.raises(Unprocessable) as exc:
        build_rrule(form)
    assert exc.value.code == "invalid_rrule" and "INTERVAL" in exc.value.message
    assert form_field_for(exc.value.field, form) == "recurrence"
    assert form_field_for("numbers[3]", form) == "numbers" and form_field_for("schedule.at", form) == "at"


# -- pages ------------------------------------------------------------------------------------------
async def test_create_preview_start_and_watch_the_run(
    app: Any, db: Database, account: AccountFixture, client: httpx.AsyncClient
) -> None:
    await _quiet_off(db, account)
    group_id = await _group(client, 6, missing_every=3)  # contacts 0 and 3 have no 订单号
    browser = await signed_in_client(app, db, account, "zh-CN")
    listing = await browser.get("/console/campaigns")
    assert (
        listing.status_code == 200
        and "还没有营销活动" in listing.text
        and 'href="/console/campaigns/new"' in listing.text
    )

    page = await browser.get("/console/campaigns/new")
    assert page.status_code == 200
    assert f'value="{group_id}"' in page.text and "6 个联系人" in page.text
    for var in ("{name}", "{姓名}", "{phone}", "{手机号}", "{订单号}"):
        assert f'data-insert="{var}"' in page.text
    token = csrf_of(page.text)

    # an unknown variable: named next to the text, with the API's message; the form keeps what was typed
    bad = await browser.post(
        "/console/campaigns/new", data=_form(token, text="您好{优惠码}", group_ids=[group_id])
    )
    assert bad.status_code == 422
    assert "{优惠码}" in field_error(bad.text, "text") and "您好{优惠码}" in bad.text
    assert f'value="{group_id}" checked' in bad.text
    # a typed number that is not one: next to the numbers box
    bad = await browser.post("/console/campaigns/new", data=_form(token, numbers="13800138000\n12345"))
    assert bad.status_code == 422 and "numbers[1]" in field_error(bad.text, "numbers")
    # a time that has passed
    bad = await browser.post(
        "/console/campaigns/new",
        data=_form(token, schedule_mode="at", at="2020-01-01T10:00", group_ids=[group_id]),
    )
    assert bad.status_code == 422 and field_error(bad.text, "at")
    # no name
    bad = await browser.post("/console/campaigns/new", data=_form(token, name=" ", group_ids=[group_id]))
    assert bad.status_code == 400 and field_error(bad.text, "name")
    # tps cap out of range: the service's message
    bad = await browser.post("/console/campaigns/new", data=_form(token, tps_cap="0", group_ids=[group_id]))
    assert bad.status_code == 422 and "10000" in field_error(bad.text, "tps_cap")

    created = await browser.post(
        "/console/campaigns/new", data=_form(token, group_ids=[group_id], numbers="13700137000", tps_cap="50")
    )
    assert created.status_code == 303, created.text
    campaign_id = _campaign_id(created)
    detail = await browser.get(f"/console/campaigns/{campaign_id}")
    assert detail.status_code == 200 and "已保存为草稿" in detail.text
    totals = {
        m.group(1): text_of(m.group(2)) for m in re.finditer(r'data-total="(\w+)">(.*?)</dd>', detail.text)
    }
    # 6 group members + 1 typed number; 0 and 3 lack 订单号, and so does the typed number (skip)
    assert totals == {"audience": "7", "messages": "4", "skipped": "3", "segments": "4", "cost": "¥0.16"}
    assert "客户1您好，订单DD0001已发货" in detail.text and detail.text.count("data-sample") == 4
    assert 'href="/console/contacts/import?group_id=grp_' in detail.text

    start = await browser.post(f"/console/campaigns/{campaign_id}/start", data={"csrf_token": token})
    assert start.status_code == 303

    async def finished() -> dict[str, Any] | None:
        progress = (await browser.get(f"/console/campaigns/{campaign_id}/progress.json")).json()
        runs = progress["runs"]
        done = runs and runs[0]["status"] == "completed" and runs[0]["progress"]["pending"] == 0
        return progress if done else None

    progress = await wait_until(finished, timeout=30)
    run = progress["runs"][0]
    assert progress["campaign"]["status"] == "completed"
    assert run["accepted"] == 4 and run["rejected"] == 3 and run["progress"]["total"] == 4
    assert run["progress"]["done"] == 4 and run["progress"]["pct"] == 100 and run["cost"] == "¥0.16"
    assert run["occurrence_local"].endswith("(Asia/Shanghai)")
    detail = await browser.get(f"/console/campaigns/{campaign_id}")
    assert f'href="/console/batches/{run["batch_id"]}"' in detail.text
    listing = await browser.get("/console/campaigns")
    assert "双十二" in listing.text and "badge-campaign-completed" in listing.text


async def test_recurring_from_fields_then_pause_resume_cancel(
    app: Any, db: Database, account: AccountFixture, client: httpx.AsyncClient
) -> None:
    group_id = await _group(client, 2)
    browser = await signed_in_client(app, db, account, "en")
    token = csrf_of((await browser.get("/console/campaigns/new")).text)
    created = await browser.post(
        "/console/campaigns/new",
        data=_form(
            token,
            group_ids=[group_id],
            schedule_mode="recurring",
            start="2030-01-31T09:30",
            freq="monthly",
            interval="1",
            month_day="-1",
            end="count",
            count="3",
            time_zone="America/New_York",
        ),
    )
    assert created.status_code == 303, created.text
    campaign_id = _campaign_id(created)
    shown = (await client.get(f"/v1/campaigns/{campaign_id}")).json()
    assert shown["schedule"] == {
        "mode": "recurring",
        "start": "2030-01-31T09:30:00",
        "rrule": "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=3",
    }
    assert shown["time_zone"] == "America/New_York"

    page = f"/console/campaigns/{campaign_id}"
    assert (await browser.post(f"{page}/start", data={"csrf_token": token})).status_code == 303
    detail = (await browser.get(page)).text
    assert "The campaign is scheduled; first run 2030-01-31 09:30 (America/New_York)" in detail
    assert (await browser.post(f"{page}/pause", data={"csrf_token": token})).status_code == 303
    assert "badge-campaign-paused" in (await browser.get(page)).text
    assert (await browser.post(f"{page}/resume", data={"csrf_token": token})).status_code == 303
    assert "badge-campaign-scheduled" in (await browser.get(page)).text
    confirm = await browser.get(f"{page}/cancel")
    assert confirm.status_code == 200 and 'id="cancel-nothing-held"' in confirm.text
    canceled = await browser.post(f"{page}/cancel", data={"csrf_token": token})
    assert canceled.status_code == 303
    after = (await browser.get(page)).text
    assert (
        "0 messages canceled, ¥0.00 returned to your balance" in after and "badge-campaign-canceled" in after
    )
    # a second cancel: the API's conflict, as a flash
    again = await browser.post(f"{page}/cancel", data={"csrf_token": token})
    assert "The campaign is canceled." in (await browser.get(again.headers["location"])).text


async def test_viewer_sees_but_cannot_act(
    app: Any, db: Database, account: AccountFixture, client: httpx.AsyncClient
) -> None:
    group_id = await _group(client, 1)
    made = await client.post("/v1/campaigns", json={"name": "只读", "text": "您好", "group_ids": [group_id]})
    assert made.status_code == 201, made.text
    campaign_id = made.json()["id"]
    browser = await signed_in_client(app, db, account, "en", email="viewer@example.com")
    async with db.write() as session:
        await session.execute(
            update(Membership).where(Membership.account_id == account.account_id).values(role="viewer")
        )
    listing = await browser.get("/console/campaigns")
    assert (
        listing.status_code == 200 and "只读" in listing.text and "/console/campaigns/new" not in listing.text
    )
    detail = await browser.get(f"/console/campaigns/{campaign_id}")
    assert detail.status_code == 200 and "/start" not in detail.text and "/cancel" not in detail.text
    assert (await browser.get(f"/console/campaigns/{campaign_id}/progress.json")).status_code == 200
    assert (await browser.get("/console/campaigns/new")).status_code == 403
    token = csrf_of(listing.text)
    assert (
        await browser.post(f"/console/campaigns/{campaign_id}/start", data={"csrf_token": token})
    ).status_code == 403
    assert (await browser.post("/console/campaigns/new", data=_form(token))).status_code == 403


async def test_other_accounts_campaign_is_not_found(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, "en")
    assert (await browser.get("/console/campaigns/cmp_nope")).status_code == 404
    assert (await browser.get("/console/campaigns/cmp_nope/progress.json")).status_code == 404


async def test_cancel_mid_run_states_and_releases_the_held_money(
    app: Any, db: Database, account: AccountFixture, client: httpx.AsyncClient
) -> None:
    await _quiet_off(db, account)
    group_id = await _group(client, 20)
    browser = await signed_in_client(app, db, account, "en")
    token = csrf_of((await browser.get("/console/campaigns/new")).text)
    # one message a second: most of the run is still held in the campaign when it is canceled
    created = await browser.post(
        "/console/campaigns/new", data=_form(token, group_ids=[group_id], tps_cap="1")
    )
    campaign_id = _campaign_id(created)
    page = f"/console/campaigns/{campaign_id}"
    assert (await browser.post(f"{page}/start", data={"csrf_token": token})).status_code == 303

    async def built() -> dict[str, Any] | None:
        runs = (await browser.get(f"{page}/progress.json")).json()["runs"]
        return runs[0] if runs and runs[0]["audience_total"] == 20 else None

    await wait_until(built, timeout=30)
    confirm = await browser.get(f"{page}/cancel")
    held = int(text_of(confirm.text.split('id="cancel-messages">')[1].split("<")[0]))
    assert 0 < held <= 20 and f"¥{held * PRICE / 1_000_000:.2f}" in confirm.text
    canceled = await browser.post(f"{page}/cancel", data={"csrf_token": token})
    flash = text_of(
        (await browser.get(canceled.headers["location"])).text.split('class="flash flash-success"')[1]
    )
    count = int(re.search(r"(\d+) messages canceled", flash).group(1))  # type: ignore[union-attr]
    assert 0 < count <= held and f"¥{count * PRICE / 1_000_000:.2f} returned to your balance" in flash
    run = (await browser.get(f"{page}/progress.json")).json()["runs"][0]
    assert run["status"] == "canceled" and run["counts"]["canceled"] == count
