"""Contacts page: search (number, tag, group), add, delete selected; groups with their sizes, a new static
group, and adding the selected contacts to a group. The same services as /v1/contacts and /v1/groups."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.campaigns import contacts
from hongyan.campaigns.models import ContactGroup
from hongyan.console.access import member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/contacts"
PAGE_SIZE = 50


async def _render(console: Console, *, status: int = 200, q: dict[str, str] | None = None, **values: Any) -> Any:
    assert console.user is not None
    q = {"phone": "", "tag": "", "group_id": "", "cursor": "", **(q or {})}
    errors = values.pop("errors", FieldErrors())
    rows: list[Any] = []
    next_cursor = None
    async with console.db.read() as session:
        groups = list(await session.scalars(select(ContactGroup).where(ContactGroup.account_id == console.account_id)
                                            .order_by(ContactGroup.name)))
        sizes = {g.id: await contacts.group_size(session, g) for g in groups}
        group = next((g for g in groups if g.id == q.get("group_id")), None)
        try:
            rows, next_cursor = await contacts.list_contacts(
                session, account_id=console.account_id, phone=q.get("phone") or None, tag=q.get("tag") or None,
                group=group, cursor=q.get("cursor") or None, limit=PAGE_SIZE, region=console.user.default_region)
        except HongyanError as exc:
            console.field_error(errors, "phone", exc)
            status = 422
    values.setdefault("form", {"phone": "", "name": "", "tags": ""})
    more = urlencode({**{k: v for k, v in q.items() if v and k != "cursor"}, "cursor": next_cursor}) if next_cursor else None
    return console.render("contacts.html", status=status, active="contacts", rows=rows, groups=groups, sizes=sizes,
                          q=q, more=more, errors=errors, json_of=contacts.contact_json, **values)


@router.get("/contacts")
async def contacts_page(console: SignedIn, phone: str = "", tag: str = "", group_id: str = "", cursor: str = "") -> Any:
    return await _render(console, q={"phone": phone, "tag": tag, "group_id": group_id, "cursor": cursor})


@router.post("/contacts")
async def add_contact(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    values = {k: form_text(form, k) for k in ("phone", "name", "tags")}
    data = contacts.ContactInput(phone=values["phone"].strip(), name=values["name"],
                                 tags=[t for t in values["tags"].replace("，", ",").split(",") if t.strip()])
    try:
        async with console.db.write() as session:
            contact = await contacts.create_contact(session, authority=member_authority(console), data=data,
                                                    region=console.user.default_region, source="console")
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, exc.field if exc.field in ("phone", "tags") else "phone", exc)
        return await _render(console, status=422 if exc.status_code != 409 else 409, errors=errors, form=values)
    return console.redirect(PAGE, flash=Flash(kind="success", key="contacts.flash.added", params={"phone": contact.phone}))


@router.post("/contacts/selected")
async def act_on_selected(console: SignedIn, form: CheckedForm) -> Any:
    """Delete the ticked contacts, or add them to a static group (the button pressed says which)."""
    ids = [i for i in form.getlist("ids") if isinstance(i, str)]
    action = form_text(form, "action")
    try:
        async with console.db.write() as session:
            if action == "delete":
                count = await contacts.delete_contacts(session, authority=member_authority(console), contact_ids=ids)
                flash = Flash(kind="success", key="contacts.flash.deleted", params={"count": count})
            else:
                count = await contacts.add_members(session, authority=member_authority(console),
                                                   group_id=form_text(form, "group_id"), contact_ids=ids)
                flash = Flash(kind="success", key="contacts.flash.grouped", params={"count": count})
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(PAGE, flash=flash)


@router.post("/contacts/groups")
async def add_group(console: SignedIn, form: CheckedForm) -> Any:
    try:
        async with console.db.write() as session:
            group = await contacts.create_group(session, authority=member_authority(console),
                                                name=form_text(form, "name"))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(PAGE, flash=Flash(kind="success", key="contacts.flash.group_added",
                                              params={"name": group.name}))
