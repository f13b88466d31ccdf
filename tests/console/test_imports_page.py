"""Console import wizard: upload (errors next to the field), map columns over the preview, progress JSON,
error-file download, cancel; a viewer may look but not import."""

from __future__ import annotations

import re
from typing import Any

from console_pages import csrf_of, field_error, signed_in_client
from hongyan.db.engine import Database
from support import AccountFixture, wait_until

LIST = "手机号,姓名,订单号\n13800138000,张三,DD-1\n12345,李四,DD-2\n13900139000,王五,DD-3\n".encode("gb18030")


async def test_upload_map_watch_and_download(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, "zh-CN")
    contacts_page = (await browser.get("/console/contacts")).text
    assert 'href="/console/contacts/import"' in contacts_page
    page = await browser.get("/console/contacts/import")
    assert page.status_code == 200 and "GBK（GB18030）" in page.text and "还没有导入记录" in page.text
    token = csrf_of(page.text)
    bad = await browser.post(
        "/console/contacts/import",
        data={"csrf_token": token, "encoding": "", "delimiter": ""},
        files={"file": ("x.csv", bytes(range(256)) * 40, "text/csv")},
    )
    assert bad.status_code == 422 and "不是文本或表格文件" in field_error(bad.text, "file")
    wrong = await browser.post(
        "/console/contacts/import",
        data={"csrf_token": token, "delimiter": ";"},
        files={"file": ("x.csv", LIST, "text/csv")},
    )
    assert wrong.status_code == 422 and field_error(wrong.text, "delimiter")
    assert '<option value=";" selected>' in wrong.text
    r = await browser.post(
        "/console/contacts/import",
        data={"csrf_token": token, "encoding": "gb18030"},
        files={"file": ("名单.csv", LIST, "text/csv")},
    )
    assert r.status_code == 303, r.text
    job_url = r.headers["location"]
    import_id = job_url.rsplit("/", 1)[1]
    assert import_id.startswith("imp_")

    mapping = await browser.get(job_url)
    assert mapping.status_code == 200 and "张三" in mapping.text and "DD-3" in mapping.text
    assert re.search(r'name="col_0"[^>]*>.*?<option value="phone" selected>', mapping.text, re.S)
    assert re.search(r'name="col_2"[^>]*>.*?<option value="field" selected>', mapping.text, re.S)
    assert 'name="fname_2" value="订单号"' in mapping.text
    form = {
        "csrf_token": token,
        "col_0": "ignore",
        "col_1": "name",
        "col_2": "ignore",
        "group": "",
        "update_existing": "on",
    }
    refused = await browser.post(f"{job_url}/start", data=form)
    assert refused.status_code == 422 and "请选择手机号码列" in field_error(refused.text, "mapping")
    assert re.search(
        r'name="col_1"[^>]*>.*?<option value="name" selected>', refused.text, re.S
    )  # choices kept
    taken = await browser.post(
        f"{job_url}/start", data={**form, "col_0": "phone", "group": "new", "new_group_name": ""}
    )
    assert taken.status_code == 400 and field_error(taken.text, "new_group_name")
    started = await browser.post(
        f"{job_url}/start",
        data={
            **form,
            "col_0": "phone",
            "col_2": "field",
            "fname_2": "订单号",
            "ftype_2": "text",
            "group": "new",
            "new_group_name": "控制台名单",
        },
    )
    assert started.status_code == 303 and started.headers["location"] == job_url

    async def finished() -> dict[str, Any] | None:
        data: dict[str, Any] = (
            await browser.get(f"{job_url}/progress", headers={"X-Console-Fetch": "1"})
        ).json()
        return data if data["status"] == "completed" else None

    progress = await wait_until(finished, timeout=30, interval=0.1, message="import completed")
    assert progress["counts"] == {"created": 2, "updated": 0, "skipped": 0, "failed": 1}
    assert progress["progress"]["percent"] == 100.0 and progress["has_error_file"]
    done = await browser.get(job_url)
    assert done.status_code == 200 and "已完成" in done.text and f"{job_url}/errors" in done.text
    assert "data-import-progress" not in done.text and "取消导入" not in done.text
    errors = await browser.get(f"{job_url}/errors")
    assert errors.headers["content-type"].startswith("text/csv")
    assert errors.content.decode("utf-8-sig").splitlines()[1].startswith("3,1,手机号,")
    assert "控制台名单 (2)" in (await browser.get("/console/contacts")).text
    listed = (await browser.get("/console/contacts/import")).text
    assert "名单.csv" in listed and "已完成" in listed

    # another upload, canceled before it is started
    r = await browser.post(
        "/console/contacts/import", data={"csrf_token": token}, files={"file": ("b.csv", LIST, "text/csv")}
    )
    other = r.headers["location"]
    assert (await browser.post(f"{other}/cancel", data={"csrf_token": token})).status_code == 303
    assert "已取消" in (await browser.get(other)).text
    missing = await browser.get("/console/contacts/import/imp_01NOTHERE")
    assert missing.status_code == 404


async def test_viewer_cannot_import(app: Any, db: Database, account: AccountFixture) -> None:
    from sqlalchemy import update

    from hongyan.accounts.models import Membership

    browser = await signed_in_client(app, db, account, "en", email="viewer@example.com")
    async with db.write() as session:
        await session.execute(
            update(Membership).where(Membership.account_id == account.account_id).values(role="viewer")
        )
    assert 'href="/console/contacts/import"' not in (await browser.get("/console/contacts")).text
    page = await browser.get("/console/contacts/import")
    assert page.status_code == 200
    r = await browser.post(
        "/console/contacts/import",
        data={"csrf_token": csrf_of(page.text)},
        files={"file": ("a.csv", LIST, "text/csv")},
    )
    assert r.status_code == 403


async def test_a_campaign_link_targets_its_audience_and_foreign_ids_are_ignored(
    app: Any, db: Database, account: AccountFixture, client: Any
) -> None:
    """The campaign page links here with its audience group (or a campaign id): the upload page says where
    the contacts go, the mapping step has that campaign chosen, the finished job links back to the campaign.
    Another account's ids (and unknown ones) change nothing and never appear in the page."""
    from support import make_account

    campaign = (
        await client.post(
            "/v1/campaigns", json={"name": "双十二", "text": "您好", "numbers": ["13700137000"]}
        )
    ).json()
    cid, audience = campaign["id"], campaign["audience_group_id"]
    own_group = (await client.post("/v1/groups", json={"name": "老客户"})).json()["id"]
    other = await make_account(db, name="B")
    foreign_campaign = (
        await client.post(
            "/v1/campaigns",
            headers=other.headers,
            json={"name": "别家活动", "text": "您好", "numbers": ["13600136000"]},
        )
    ).json()
    foreign_group = (await client.post("/v1/groups", headers=other.headers, json={"name": "别家分组"})).json()

    browser = await signed_in_client(app, db, account, "zh-CN")
    for query in (f"group_id={audience}", f"campaign_id={cid}"):
        page = await browser.get(f"/console/contacts/import?{query}")
        assert page.status_code == 200
        assert f'name="campaign_id" value="{cid}"' in page.text and "活动“双十二”的受众" in page.text
    page = await browser.get(f"/console/contacts/import?group_id={own_group}")
    assert f'name="group_id" value="{own_group}"' in page.text and "分组“老客户”" in page.text
    for query in (
        f"group_id={foreign_group['id']}",
        f"campaign_id={foreign_campaign['id']}",
        "group_id=grp_01NOTHERE",
        "campaign_id=%3Cscript%3E",
    ):
        ignored = await browser.get(f"/console/contacts/import?{query}")
        assert ignored.status_code == 303 and ignored.headers["location"] == "/console/contacts/import", query

    token = csrf_of(page.text)
    smuggled = await browser.post(
        "/console/contacts/import",
        data={"csrf_token": token, "campaign_id": foreign_campaign["id"]},
        files={"file": ("b.csv", LIST, "text/csv")},
    )
    assert smuggled.status_code == 303 and "?" not in smuggled.headers["location"]
    mapping = await browser.get(f"{smuggled.headers['location']}?campaign_id={foreign_campaign['id']}")
    assert mapping.status_code == 303 and mapping.headers["location"] == smuggled.headers["location"]
    mapping = await browser.get(smuggled.headers["location"])
    assert foreign_campaign["id"] not in mapping.text and "别家" not in mapping.text

    r = await browser.post(
        "/console/contacts/import",
        data={"csrf_token": token, "campaign_id": cid},
        files={"file": ("名单.csv", LIST, "text/csv")},
    )
    assert r.status_code == 303 and r.headers["location"].endswith(f"?campaign_id={cid}")
    job_url = r.headers["location"].split("?")[0]
    mapping = await browser.get(r.headers["location"])
    assert f'<option value="{cid}" selected>活动“双十二”的受众</option>' in mapping.text
    form = {"csrf_token": token, "col_0": "phone", "col_1": "name", "col_2": "ignore", "group": cid}
    refused = await browser.post(
        f"{smuggled.headers['location']}/start", data={**form, "group": foreign_campaign["id"]}
    )
    assert refused.status_code == 404 and field_error(refused.text, "group")
    assert foreign_campaign["id"] not in refused.text and "别家" not in refused.text
    assert (await browser.post(f"{job_url}/start", data=form)).status_code == 303

    async def finished() -> dict[str, Any] | None:
        data: dict[str, Any] = (
            await browser.get(f"{job_url}/progress", headers={"X-Console-Fetch": "1"})
        ).json()
        return data if data["status"] == "completed" else None

    await wait_until(finished, timeout=30, interval=0.1, message="import completed")
    done = await browser.get(job_url)
    assert f'id="import-campaign" href="/console/campaigns/{cid}"' in done.text
    assert (await client.get(f"/v1/groups/{audience}")).json()["size"] == 3  # the typed number and two rows
    plain = await browser.get(f"{smuggled.headers['location']}")
    assert "import-campaign" not in plain.text  # not a campaign's import: no link back
