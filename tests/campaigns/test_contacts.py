"""Contacts, custom fields and groups through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from hongyan.db.engine import Database
from support import make_account


def error_of(r: httpx.Response) -> tuple[int, str, str | None]:
    e = r.json()["error"]
    return r.status_code, e["code"], e["field"]


async def test_contact_lifecycle_dedupe_and_typed_fields(client: httpx.AsyncClient, db: Database) -> None:
    assert (await client.post("/v1/contact-fields", json={"name": "订单号"})).status_code == 201
    assert (await client.post("/v1/contact-fields", json={"name": "金额", "type": "number"})).status_code == 201
    conflict = await client.post("/v1/contact-fields", json={"name": "金额", "type": "date"})
    assert error_of(conflict) == (409, "field_type_conflict", "type")
    r = await client.post("/v1/contacts", json={"phone": "138 0013 8000", "name": "张三", "tags": ["VIP", " 华东 ", "VIP"],
                                                "fields": {"订单号": "DD-1", "金额": "12.50"}})
    assert r.status_code == 201, r.text
    contact = r.json()
    assert contact["phone"] == "+8613800138000" and contact["country"] == "CN"
    assert contact["tags"] == ["VIP", "华东"] and contact["fields"] == {"订单号": "DD-1", "金额": "12.50"}
    assert contact["time_zone"] == "Asia/Shanghai" and contact["time_zone_override"] is None
    # one contact per number, however it is written
    again = await client.post("/v1/contacts", json={"phone": "+86 13800138000"})
    assert error_of(again) == (409, "contact_exists", "phone")
    assert again.json()["error"]["details"] == {"contact_id": contact["id"]}
    # fields are checked against their definitions
    bad = await client.post("/v1/contacts", json={"phone": "13900139000", "fields": {"生日": "2000-01-01"}})
    assert error_of(bad) == (422, "unknown_contact_field", "fields.生日")
    bad = await client.post("/v1/contacts", json={"phone": "13900139000", "fields": {"金额": "十二"}})
    assert error_of(bad) == (422, "invalid_number", "fields.金额")
    bad = await client.post("/v1/contacts", json={"phone": "12345"})
    assert error_of(bad) == (422, "invalid_phone_number", "phone")
    bad = await client.post("/v1/contacts", json={"phone": "13900139000", "time_zone": "Mars/Olympus"})
    assert error_of(bad) == (400, "invalid_time_zone", "time_zone")
    # change: fields merge, "" removes one; the time zone can be overridden
    r = await client.patch(f"/v1/contacts/{contact['id']}", json={"fields": {"订单号": "", "金额": 3},
                                                                    "time_zone": "Asia/Tokyo"})
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"金额": "3"} and r.json()["time_zone"] == "Asia/Tokyo"
    # the number is sealed at rest, like every number
    async with db.read() as session:
        raw = (await session.execute(text("SELECT phone FROM contact"))).scalar_one()
    assert raw.startswith("enc1:") and "13800138000" not in raw


async def test_search_groups_and_bulk_delete(client: httpx.AsyncClient, db: Database) -> None:
    ids = []
    for i, tags in enumerate([["VIP", "华东"], ["VIP"], ["华南"], []]):
        r = await client.post("/v1/contacts", json={"phone": f"1380013800{i}", "name": f"客户{i}", "tags": tags})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    by_tag = (await client.get("/v1/contacts", params={"tag": "VIP"})).json()["data"]
    assert {c["id"] for c in by_tag} == {ids[0], ids[1]}
    by_phone = (await client.get("/v1/contacts", params={"phone": "+8613800138002"})).json()["data"]
    assert [c["id"] for c in by_phone] == [ids[2]]
    page = (await client.get("/v1/contacts", params={"limit": 3})).json()
    assert page["has_more"] and len(page["data"]) == 3
    rest = (await client.get("/v1/contacts", params={"limit": 3, "cursor": page["next_cursor"]})).json()
    assert [c["id"] for c in rest["data"]] == [ids[0]] and not rest["has_more"]

    static = (await client.post("/v1/groups", json={"name": "活动名单"})).json()
    assert (await client.post(f"/v1/groups/{static['id']}/members", json={"ids": [ids[2], ids[3]]})).json() == {"added": 2}
    assert (await client.post(f"/v1/groups/{static['id']}/members", json={"ids": [ids[2]]})).json() == {"added": 0}
    saved = await client.post("/v1/groups", json={"name": "VIP 华东", "kind": "filter",
                                                  "filter": {"tags_all": ["VIP", "华东"], "countries": ["CN"]}})
    assert saved.status_code == 201 and saved.json()["size"] == 1
    any_vip = (await client.post("/v1/groups", json={"name": "VIP 或华南", "kind": "filter",
                                                     "filter": {"tags_any": ["VIP", "华南"]}})).json()
    assert any_vip["size"] == 3
    members = (await client.get("/v1/contacts", params={"group_id": static["id"]})).json()["data"]
    assert {c["id"] for c in members} == {ids[2], ids[3]}
    bad = await client.post("/v1/groups", json={"name": "x", "kind": "filter", "filter": {"tag": ["VIP"]}})
    assert error_of(bad) == (400, "invalid_group_filter", "filter")
    assert error_of(await client.post("/v1/groups", json={"name": "活动名单"})) == (409, "group_name_taken", "name")
    not_static = await client.post(f"/v1/groups/{any_vip['id']}/members", json={"ids": [ids[0]]})
    assert error_of(not_static) == (400, "group_is_filter", "group_id")

    deleted = await client.post("/v1/contacts/delete", json={"ids": [ids[2], ids[3], "ct_01M8000000000000000000000A"]})
    assert deleted.json() == {"deleted": 2}
    assert (await client.get(f"/v1/groups/{static['id']}")).json()["size"] == 0  # memberships went with them
    assert (await client.get(f"/v1/groups/{any_vip['id']}")).json()["size"] == 2


async def test_another_accounts_contacts_and_groups_are_not_found(app: Any, client: httpx.AsyncClient,
                                                                  db: Database) -> None:
    mine = (await client.post("/v1/contacts", json={"phone": "13800138000"})).json()
    group = (await client.post("/v1/groups", json={"name": "g"})).json()
    other = await make_account(db, name="Other")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 headers=other.headers) as theirs:
        assert error_of(await theirs.get(f"/v1/contacts/{mine['id']}"))[:2] == (404, "contact_not_found")
        assert error_of(await theirs.patch(f"/v1/contacts/{mine['id']}", json={"name": "x"}))[:2] == (404, "contact_not_found")
        assert (await theirs.post("/v1/contacts/delete", json={"ids": [mine["id"]]})).json() == {"deleted": 0}
        assert error_of(await theirs.post(f"/v1/groups/{group['id']}/members", json={"ids": [mine["id"]]}))[:2] == (
            404, "group_not_found")
        own_group = (await theirs.post("/v1/groups", json={"name": "g"})).json()  # same name, another account: fine
        r = await theirs.post(f"/v1/groups/{own_group['id']}/members", json={"ids": [mine["id"]]})
        assert error_of(r)[:2] == (404, "contact_not_found")
        # the same number is a separate contact in another account
        assert (await theirs.post("/v1/contacts", json={"phone": "13800138000"})).status_code == 201
    assert (await client.get(f"/v1/contacts/{mine['id']}")).json()["name"] is None


async def test_privacy_export_and_erase_cover_contacts(client: httpx.AsyncClient) -> None:
    contact = (await client.post("/v1/contacts", json={"phone": "13800138000", "name": "张三"})).json()
    group = (await client.post("/v1/groups", json={"name": "g"})).json()
    await client.post(f"/v1/groups/{group['id']}/members", json={"ids": [contact["id"]]})
    exported = (await client.post("/v1/privacy/exports", json={"phone_number": "13800138000"})).json()
    assert [c["id"] for c in exported["contacts"]] == [contact["id"]]
    erased = await client.post("/v1/privacy/erasures", json={"phone_number": "13800138000", "confirm": True})
    assert erased.status_code == 200, erased.text
    assert error_of(await client.get(f"/v1/contacts/{contact['id']}"))[:2] == (404, "contact_not_found")
    assert (await client.get(f"/v1/groups/{group['id']}")).json()["size"] == 0


async def test_rows_from_a_file_are_stored_as_contacts(client: httpx.AsyncClient, db: Database,
                                                       account: Any) -> None:
    """The import path end to end without HTTP: file → checked rows → contacts (update or skip) → group."""
    import io

    from hongyan.campaigns import contacts
    from hongyan.campaigns.rows import ContactDraft, FieldColumn, check_rows, guess_mapping
    from hongyan.campaigns.tabular import detect_format, iter_rows

    existing = (await client.post("/v1/contacts", json={"phone": "13800138000", "name": "旧名", "tags": ["老客户"]})).json()
    group = (await client.post("/v1/groups", json={"name": "导入"})).json()
    data = "手机号,姓名,标签,金额\n13800138000,张三,VIP,12.50\n13900139000,李四,,8\n123,坏号码,,1\n".encode("gbk")
    rows = list(iter_rows(io.BytesIO(data), detect_format(data)))
    mapping = guess_mapping(rows[0].cells)
    assert mapping is not None
    mapping = type(mapping)(phone=0, name=1, tags=2, fields=(FieldColumn(3, "金额", "number"),))
    drafts = [d for d in check_rows(rows, mapping, region="CN", header=rows[0].cells) if isinstance(d, ContactDraft)]
    async with db.write() as session:  # fields must be defined first, as the import's mapping step does
        with pytest.raises(Exception, match="No contact field '金额'"):
            await contacts.upsert_contacts(session, account_id=account.account_id, drafts=drafts)
    assert (await client.post("/v1/contact-fields", json={"name": "金额", "type": "number"})).status_code == 201
    async with db.write() as session:
        counts = await contacts.upsert_contacts(session, account_id=account.account_id, drafts=drafts,
                                                group_id=group["id"])
    assert (counts.created, counts.updated, counts.skipped) == (1, 1, 0)
    updated = (await client.get(f"/v1/contacts/{existing['id']}")).json()
    assert updated["name"] == "张三" and updated["tags"] == ["VIP", "老客户"] and updated["fields"] == {"金额": "12.50"}
    new = (await client.get("/v1/contacts", params={"phone": "13900139000"})).json()["data"][0]
    assert new["source"] == "import" and new["fields"] == {"金额": "8"}
    assert (await client.get(f"/v1/groups/{group['id']}")).json()["size"] == 2
    async with db.write() as session:  # the same file again, skipping known numbers: nothing changes
        again = await contacts.upsert_contacts(session, account_id=account.account_id, drafts=drafts,
                                               existing="skip", group_id=group["id"])
    assert (again.created, again.updated, again.skipped) == (0, 0, 2)
    assert (await client.get(f"/v1/groups/{group['id']}")).json()["size"] == 2


async def test_a_number_twice_in_one_call_is_one_contact_and_numbers_are_sealed(
        client: httpx.AsyncClient, db: Database, account: Any) -> None:
    """The bulk path (Core statements): repeats fold in order and count once; the number is sealed like any;
    a contact already in the group stays a member once."""
    from hongyan.campaigns import contacts
    from hongyan.campaigns.rows import ContactDraft

    assert (await client.post("/v1/contact-fields", json={"name": "订单号"})).status_code == 201
    old = (await client.post("/v1/contacts", json={"phone": "13700137000", "name": "老王", "tags": ["老客户"],
                                                   "fields": {"订单号": "DD-0"}})).json()
    group = (await client.post("/v1/groups", json={"name": "导入"})).json()
    assert (await client.post(f"/v1/groups/{group['id']}/members", json={"ids": [old["id"]]})).status_code == 200

    def draft(row: int, phone: str, name: str | None, tags: list[str], order: str | None = None) -> ContactDraft:
        return ContactDraft(row=row, phone=phone, country="CN", name=name, tags=tags,
                            fields={"订单号": order} if order else {})

    drafts = [draft(1, "+8613800138000", "张三", ["A"], "DD-1"), draft(2, "+8613700137000", None, ["B"]),
              draft(3, "+8613800138000", None, ["B", "A"]), draft(4, "+8613700137000", "王五", [], "DD-2"),
              draft(5, "+8613800138000", "张三丰", [])]
    async with db.write() as session:
        counts = await contacts.upsert_contacts(session, account_id=account.account_id, drafts=drafts,
                                                group_id=group["id"])
    assert (counts.created, counts.updated, counts.skipped) == (1, 1, 0)
    new = (await client.get("/v1/contacts", params={"phone": "13800138000"})).json()["data"]
    assert [(c["name"], c["tags"], c["fields"]) for c in new] == [("张三丰", ["A", "B"], {"订单号": "DD-1"})]
    updated = (await client.get(f"/v1/contacts/{old['id']}")).json()
    assert (updated["name"], updated["tags"], updated["fields"]) == ("王五", ["B", "老客户"], {"订单号": "DD-2"})
    assert updated["updated_at"] != old["updated_at"] and updated["created_at"] == old["created_at"]
    assert (await client.get(f"/v1/groups/{group['id']}")).json()["size"] == 2
    async with db.read() as session:
        raw = (await session.execute(text("SELECT phone FROM contact WHERE id = :id"), {"id": new[0]["id"]})).scalar_one()
    assert raw.startswith("enc1:") and "13800138000" not in raw
    async with db.write() as session:  # skipping known numbers: nothing changes, each counted once
        again = await contacts.upsert_contacts(session, account_id=account.account_id, drafts=drafts,
                                               existing="skip", group_id=group["id"])
    assert (again.created, again.updated, again.skipped) == (0, 0, 2)
    assert (await client.get(f"/v1/contacts/{old['id']}")).json()["name"] == "王五"
