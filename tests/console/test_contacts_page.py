"""Console contacts page: add (errors next to the field), search, group, delete selected; viewer read-only."""

from __future__ import annotations

from typing import Any

from console_pages import csrf_of, field_error, signed_in_client
from hongyan.db.engine import Database
from support import AccountFixture


async def test_add_search_group_and_delete(app: Any, db: Database, account: AccountFixture) -> None:
    browser = await signed_in_client(app, db, account, "zh-CN")
    page = await browser.get("/console/contacts")
    assert page.status_code == 200 and "这里还没有联系人" in page.text
    token = csrf_of(page.text)
    bad = await browser.post("/console/contacts", data={"phone": "12345", "name": "x", "csrf_token": token})
    assert bad.status_code == 422 and field_error(bad.text, "phone") and 'value="12345"' in bad.text
    for phone, name, tags in [("13800138000", "张三", "VIP, 华东"), ("13900139000", "李四", "华南")]:
        r = await browser.post("/console/contacts", data={"phone": phone, "name": name, "tags": tags,
                                                          "csrf_token": token})
        assert r.status_code == 303, r.text
    again = await browser.post("/console/contacts", data={"phone": "+86 138 0013 8000", "csrf_token": token})
    assert again.status_code == 409 and field_error(again.text, "phone")
    listed = (await browser.get("/console/contacts", params={"tag": "VIP"})).text
    assert "+8613800138000" in listed and "+8613900139000" not in listed and "Asia/Shanghai" in listed
    assert (await browser.post("/console/contacts/groups", data={"name": "活动", "csrf_token": token})).status_code == 303
    page = (await browser.get("/console/contacts")).text
    group_id = page.split('<option value="grp_')[1].split('"')[0]
    ids = [part.split('"')[0] for part in page.split('data-contact="')[1:]]
    assert len(ids) == 2
    r = await browser.post("/console/contacts/selected", data={"ids": ids, "action": "group",
                                                               "group_id": f"grp_{group_id}", "csrf_token": token})
    assert r.status_code == 303
    in_group = (await browser.get("/console/contacts", params={"group_id": f"grp_{group_id}"})).text
    assert "活动 (2)" in in_group
    r = await browser.post("/console/contacts/selected", data={"ids": ids[:1], "action": "delete", "csrf_token": token})
    assert r.status_code == 303
    assert "已删除 1 个联系人" in (await browser.get("/console/contacts")).text


async def test_viewer_sees_but_cannot_change(app: Any, db: Database, account: AccountFixture) -> None:
    from sqlalchemy import update

    from hongyan.accounts.models import Membership

    browser = await signed_in_client(app, db, account, "en", email="viewer@example.com")
    async with db.write() as session:
        await session.execute(update(Membership).where(Membership.account_id == account.account_id)
                              .values(role="viewer"))
    page = await browser.get("/console/contacts")
    assert page.status_code == 200
    r = await browser.post("/console/contacts", data={"phone": "13800138000", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 403
