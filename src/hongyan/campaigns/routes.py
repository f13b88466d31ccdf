"""/v1/contacts, /v1/contact-fields, /v1/groups: the account's address book (send scope)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts.permissions import Authority
from hongyan.api.body import UtcDatetime, openapi_body, parse_body
from hongyan.api.deps import DbDep, ReadAccount, SendAccount
from hongyan.api.responses import JsonResponse
from hongyan.campaigns import contacts
from hongyan.campaigns.models import ContactGroup
from hongyan.core.clock import isoformat

router = APIRouter(tags=["contacts"])
FieldValue = StrictStr | int | float | None


class ContactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: Annotated[StrictStr, Field(max_length=40)] | None = None
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    tags: Annotated[list[Annotated[StrictStr, Field(max_length=40)]], Field(max_length=50)] | None = None
    fields: dict[Annotated[StrictStr, Field(max_length=40)], FieldValue] | None = None
    time_zone: Annotated[StrictStr, Field(max_length=64)] | None = None
    consent_source: Annotated[StrictStr, Field(max_length=64)] | None = None
    consent_at: UtcDatetime | None = None

    def as_input(self) -> contacts.ContactInput:
        return contacts.ContactInput(**self.model_dump())


class FieldCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=40)]
    type: Literal["text", "number", "date"] = "text"


class IdList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: Annotated[list[Annotated[StrictStr, Field(max_length=40)]], Field(min_length=1, max_length=contacts.MAX_BULK)]


class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=100)]
    kind: Literal["static", "filter"] = "static"
    filter: dict[StrictStr, list[StrictStr]] | None = None
    description: Annotated[StrictStr, Field(max_length=200)] = ""


def group_json(g: ContactGroup, size: int) -> dict[str, Any]:
    return {"id": g.id, "name": g.name, "kind": g.kind, "filter": g.filter, "description": g.description,
            "size": size, "created_at": isoformat(g.created_at), "updated_at": isoformat(g.updated_at)}


# -- contacts -------------------------------------------------------------------------------------
@router.post("/v1/contacts", status_code=201, summary="Add a contact (one per number: 409 contact_exists)",
             openapi_extra=openapi_body(ContactBody, {"phone": "13800138000", "name": "张三", "tags": ["VIP"],
                                                      "fields": {"订单号": "DD-001"}}))
async def create_contact(request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, ContactBody)
    async with db.write() as session:
        contact = await contacts.create_contact(session, authority=Authority.of_api(ctx), data=data.as_input(),
                                                region=ctx.default_region)
    return JsonResponse(contacts.contact_json(contact), status_code=201)


@router.get("/v1/contacts", summary="Contacts, newest first: by exact number, tag or group (cursor pagination)")
async def list_contacts(
    db: DbDep, ctx: ReadAccount, phone: Annotated[str | None, Query(max_length=40)] = None,
    tag: Annotated[str | None, Query(max_length=40)] = None, group_id: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JsonResponse:
    async with db.read() as session:
        group = await contacts.get_group(session, account_id=ctx.account_id, group_id=group_id) if group_id else None
        rows, next_cursor = await contacts.list_contacts(session, account_id=ctx.account_id, phone=phone, tag=tag,
                                                         group=group, cursor=cursor, limit=limit,
                                                         region=ctx.default_region)
    return JsonResponse({"data": [contacts.contact_json(c) for c in rows], "next_cursor": next_cursor,
                         "has_more": next_cursor is not None})


@router.get("/v1/contacts/{contact_id}", summary="One contact")
async def get_contact(contact_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        contact = await contacts.get_contact(session, account_id=ctx.account_id, contact_id=contact_id)
        return JsonResponse(contacts.contact_json(contact))


@router.patch("/v1/contacts/{contact_id}", summary="Change a contact (fields are merged; null or \"\" removes one)",
              openapi_extra=openapi_body(ContactBody, {"tags": ["VIP", "华东"], "fields": {"金额": "12.50"}}))
async def update_contact(contact_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, ContactBody)
    async with db.write() as session:
        contact = await contacts.update_contact(session, authority=Authority.of_api(ctx), contact_id=contact_id,
                                                data=data.as_input(), region=ctx.default_region)
        return JsonResponse(contacts.contact_json(contact))


@router.delete("/v1/contacts/{contact_id}", summary="Delete a contact")
async def delete_contact(contact_id: str, db: DbDep, ctx: SendAccount) -> JsonResponse:
    async with db.write() as session:
        await contacts.get_contact(session, account_id=ctx.account_id, contact_id=contact_id)
        await contacts.delete_contacts(session, authority=Authority.of_api(ctx), contact_ids=[contact_id])
    return JsonResponse({"id": contact_id, "deleted": True})


@router.post("/v1/contacts/delete", summary="Delete many contacts at once (ids of other accounts are ignored)",
             openapi_extra=openapi_body(IdList, {"ids": ["ct_01…"]}))
async def bulk_delete(request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, IdList)
    async with db.write() as session:
        deleted = await contacts.delete_contacts(session, authority=Authority.of_api(ctx), contact_ids=data.ids)
    return JsonResponse({"deleted": deleted})


# -- fields ---------------------------------------------------------------------------------------
@router.post("/v1/contact-fields", status_code=201, summary="Define a custom contact field and its type",
             openapi_extra=openapi_body(FieldCreate, {"name": "订单号", "type": "text"}))
async def create_field(request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, FieldCreate)
    async with db.write() as session:
        row = await contacts.define_field(session, authority=Authority.of_api(ctx), name=data.name, type=data.type)
    return JsonResponse({"name": row.name, "type": row.type}, status_code=201)


@router.get("/v1/contact-fields", summary="The account's custom contact fields")
async def list_fields(db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        types = await contacts.field_types(session, ctx.account_id)
    return JsonResponse({"data": [{"name": n, "type": t} for n, t in sorted(types.items())]})


# -- groups ---------------------------------------------------------------------------------------
@router.post("/v1/groups", status_code=201, summary="Create a group: static members, or a saved filter",
             openapi_extra=openapi_body(GroupCreate, {"name": "VIP 华东", "kind": "filter",
                                                      "filter": {"tags_all": ["VIP"], "countries": ["CN"]}}))
async def create_group(request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, GroupCreate)
    async with db.write() as session:
        group = await contacts.create_group(session, authority=Authority.of_api(ctx), name=data.name, kind=data.kind,
                                            filter=data.filter, description=data.description)
        size = await contacts.group_size(session, group)
    return JsonResponse(group_json(group, size), status_code=201)


@router.get("/v1/groups", summary="Groups with their current size")
async def list_groups(db: DbDep, ctx: ReadAccount) -> JsonResponse:
    from sqlalchemy import select

    async with db.read() as session:
        groups = list(await session.scalars(select(ContactGroup).where(ContactGroup.account_id == ctx.account_id)
                                            .order_by(ContactGroup.name)))
        data = [group_json(g, await contacts.group_size(session, g)) for g in groups]
    return JsonResponse({"data": data})


@router.get("/v1/groups/{group_id}", summary="One group with its size")
async def get_group(group_id: str, db: DbDep, ctx: ReadAccount) -> JsonResponse:
    async with db.read() as session:
        group = await contacts.get_group(session, account_id=ctx.account_id, group_id=group_id)
        return JsonResponse(group_json(group, await contacts.group_size(session, group)))


@router.delete("/v1/groups/{group_id}", summary="Delete a group (its contacts stay)")
async def delete_group(group_id: str, db: DbDep, ctx: SendAccount) -> JsonResponse:
    async with db.write() as session:
        await contacts.delete_group(session, authority=Authority.of_api(ctx), group_id=group_id)
    return JsonResponse({"id": group_id, "deleted": True})


@router.post("/v1/groups/{group_id}/members", summary="Add contacts to a static group",
             openapi_extra=openapi_body(IdList, {"ids": ["ct_01…"]}))
async def add_members(group_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, IdList)
    async with db.write() as session:
        added = await contacts.add_members(session, authority=Authority.of_api(ctx), group_id=group_id,
                                           contact_ids=data.ids)
    return JsonResponse({"added": added})


@router.post("/v1/groups/{group_id}/members/remove", summary="Remove contacts from a static group",
             openapi_extra=openapi_body(IdList, {"ids": ["ct_01…"]}))
async def remove_members(group_id: str, request: Request, db: DbDep, ctx: SendAccount) -> JsonResponse:
    data = await parse_body(request, IdList)
    async with db.write() as session:
        removed = await contacts.remove_members(session, authority=Authority.of_api(ctx), group_id=group_id,
                                                contact_ids=data.ids)
    return JsonResponse({"removed": removed})
