"""Contacts, their custom fields and groups: create, change, find, delete; one contact per number.

Custom field values are checked against the field's type (text, number, date) and kept as JSON text
("12.50", "2026-12-01") so templates render them as written. A contact's time zone is its override or the
first zone of its number (phonenumbers' timezone metadata): what quiet hours and scheduled sends use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import InvalidOperation
from typing import Any

from phonenumbers import parse as parse_phone
from phonenumbers import timezone as phone_timezone
from sqlalchemy import Text, and_, bindparam, cast, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import MESSAGES_SEND, Authority, require
from hongyan.campaigns.models import Contact, ContactField, ContactGroup, GroupMember
from hongyan.campaigns.rows import FIELD_NAME, FIELD_TYPES, ContactDraft, parse_date, parse_number
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from hongyan.messaging.numbers import normalize_field

MAX_TAGS = 50
MAX_TAG_CHARS = 40
MAX_BULK = 10_000
# managing contacts and groups is what a sender does: the same permission as sending
CONTACTS_MANAGE = MESSAGES_SEND


def derived_time_zone(e164: str) -> str | None:
    zones = phone_timezone.time_zones_for_number(parse_phone(e164))
    return zones[0] if zones and zones[0] != "Etc/Unknown" else None


def contact_json(c: Contact) -> dict[str, Any]:
    return {"id": c.id, "phone": c.phone, "country": c.country, "name": c.name, "tags": list(c.tags or []),
            "fields": dict(c.fields or {}), "time_zone": c.time_zone or derived_time_zone(c.phone),
            "time_zone_override": c.time_zone, "consent_source": c.consent_source,
            "consent_at": isoformat(c.consent_at), "source": c.source, "created_at": isoformat(c.created_at),
            "updated_at": isoformat(c.updated_at)}


# -- fields ---------------------------------------------------------------------------------------
async def define_field(session: AsyncSession, *, authority: Authority, name: str, type: str) -> ContactField:
    require(authority, CONTACTS_MANAGE)
    name = name.strip()
    if not FIELD_NAME.match(name):
        raise InvalidRequest("invalid_field_name", "A field name is letters, digits, _ or Chinese, up to 40; it is "
                             "used as {name} in message texts.", field="name")
    if type not in FIELD_TYPES:
        raise InvalidRequest("invalid_field_type", f"Field type is one of {', '.join(FIELD_TYPES)}.", field="type")
    existing = await session.get(ContactField, (authority.account_id, name))
    if existing is not None:
        if existing.type != type:
            raise Conflict("field_type_conflict", f"Field {name} already exists as {existing.type}.", field="type")
        return existing
    row = ContactField(account_id=authority.account_id, name=name, type=type, created_at=utcnow())
    session.add(row)
    await session.flush()
    return row


async def field_types(session: AsyncSession, account_id: str) -> dict[str, str]:
    rows = await session.execute(select(ContactField.name, ContactField.type).where(ContactField.account_id == account_id))
    return {r.name: r.type for r in rows}


def typed_fields(values: dict[str, Any], types: dict[str, str]) -> dict[str, str]:
    """Check values against their field types; unknown names and wrong values name the field."""
    out: dict[str, str] = {}
    for name, value in values.items():
        kind = types.get(name)
        if kind is None:
            known = ", ".join(sorted(types)) or "none yet"
            raise Unprocessable("unknown_contact_field", f"No contact field '{name}' (defined: {known}); add it "
                                "with POST /v1/contact-fields first.", field=f"fields.{name}")
        if value is None or value == "":
            continue
        text = str(value).strip()
        try:
            out[name] = (str(parse_number(text)) if kind == "number" else parse_date(text).isoformat()
                         if kind == "date" else text[:1000])
        except (InvalidOperation, ValueError):
            raise Unprocessable(f"invalid_{kind}", f"{name} should be {'a number' if kind == 'number' else 'a date'}.",
                                field=f"fields.{name}") from None
    return out


def clean_tags(tags: list[str]) -> list[str]:
    cleaned = sorted({t.strip() for t in tags if t and t.strip()})
    if len(cleaned) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS or '"' in t or "\\" in t for t in cleaned):
        raise InvalidRequest("invalid_tags", f"At most {MAX_TAGS} tags of up to {MAX_TAG_CHARS} characters, "
                             "without quotes or backslashes.",
                             field="tags")
    return cleaned


# -- contacts -------------------------------------------------------------------------------------
@dataclass(slots=True)
class ContactInput:
    phone: str | None = None
    name: str | None = None
    tags: list[str] | None = None
    fields: dict[str, Any] | None = None
    time_zone: str | None = None
    consent_source: str | None = None
    consent_at: datetime | None = None


def _number(raw: str, region: str) -> tuple[str, str | None]:
    n = normalize_field(raw, region, field="phone")
    return n.e164, n.region


def _check_zone(zone: str | None) -> str | None:
    if zone is None or zone == "":
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest("invalid_time_zone", f"'{zone[:64]}' is not an IANA time zone such as Asia/Shanghai.",
                             field="time_zone") from None
    return zone


async def create_contact(session: AsyncSession, *, authority: Authority, data: ContactInput, region: str,
                         source: str = "api") -> Contact:
    """A new contact; the same number again is 409 `contact_exists` naming the contact that has it."""
    require(authority, CONTACTS_MANAGE)
    if not data.phone:
        raise Unprocessable("field_required", "phone is required.", field="phone")
    e164, country = _number(data.phone, region)
    bidx = blind_index(e164)
    existing = await session.scalar(select(Contact.id).where(Contact.account_id == authority.account_id,
                                                             Contact.phone_bidx == bidx))
    if existing is not None:
        raise Conflict("contact_exists", f"Contact {existing} already has this number.", field="phone",
                       details={"contact_id": existing})
    now = utcnow()
    contact = Contact(
        id=ids.new_id("ct"), account_id=authority.account_id, phone=e164, phone_bidx=bidx, country=country,
        name=(data.name or "").strip()[:200] or None, time_zone=_check_zone(data.time_zone),
        tags=clean_tags(data.tags or []),
        fields=typed_fields(data.fields or {}, await field_types(session, authority.account_id)),
        consent_source=data.consent_source, consent_at=data.consent_at, source=source, created_at=now, updated_at=now,
    )
    session.add(contact)
    await session.flush()
    return contact


async def get_contact(session: AsyncSession, *, account_id: str, contact_id: str) -> Contact:
    contact = await session.scalar(select(Contact).where(Contact.id == contact_id, Contact.account_id == account_id))
    if contact is None:
        raise NotFound("contact_not_found", "No such contact.", field="contact_id")
    return contact


async def update_contact(session: AsyncSession, *, authority: Authority, contact_id: str, data: ContactInput,
                         region: str) -> Contact:
    require(authority, CONTACTS_MANAGE)
    contact = await get_contact(session, account_id=authority.account_id, contact_id=contact_id)
    if data.phone is not None:
        e164, country = _number(data.phone, region)
        bidx = blind_index(e164)
        if bidx != contact.phone_bidx:
            other = await session.scalar(select(Contact.id).where(Contact.account_id == authority.account_id,
                                                                  Contact.phone_bidx == bidx))
            if other is not None:
                raise Conflict("contact_exists", f"Contact {other} already has this number.", field="phone",
                               details={"contact_id": other})
            contact.phone, contact.phone_bidx, contact.country = e164, bidx, country
    if data.name is not None:
        contact.name = data.name.strip()[:200] or None
    if data.tags is not None:
        contact.tags = clean_tags(data.tags)
    if data.fields is not None:
        merged = {**(contact.fields or {}), **typed_fields(data.fields, await field_types(session, authority.account_id))}
        contact.fields = {k: v for k, v in merged.items() if data.fields.get(k, v) not in (None, "")}
    if data.time_zone is not None:
        contact.time_zone = _check_zone(data.time_zone)
    if data.consent_source is not None:
        contact.consent_source, contact.consent_at = data.consent_source or None, data.consent_at or utcnow()
    contact.updated_at = utcnow()
    await session.flush()
    return contact


async def list_contacts(session: AsyncSession, *, account_id: str, phone: str | None = None, tag: str | None = None,
                        group: ContactGroup | None = None, cursor: str | None = None, limit: int = 50,
                        region: str = "CN") -> tuple[list[Contact], str | None]:
    """Newest first; filters: exact number (blind index), tag, group (static members or its filter)."""
    query = select(Contact).where(Contact.account_id == account_id)
    if phone:
        query = query.where(Contact.phone_bidx == blind_index(_number(phone, region)[0]))
    if group is not None:
        query = query.where(Contact.id.in_(group_member_ids(group)))
    if tag:
        query = query.where(cast(Contact.tags, Text).contains(f'"{tag}"', autoescape=True))
    if cursor:
        query = query.where(Contact.id < cursor)
    rows = list(await session.scalars(query.order_by(Contact.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


async def delete_contacts(session: AsyncSession, *, authority: Authority, contact_ids: list[str]) -> int:
    """Delete the caller's contacts among `contact_ids` (others' ids are ignored, not revealed)."""
    require(authority, CONTACTS_MANAGE)
    if len(contact_ids) > MAX_BULK:
        raise InvalidRequest("too_many_ids", f"At most {MAX_BULK} ids at once.", field="ids")
    owned = select(Contact.id).where(Contact.account_id == authority.account_id, Contact.id.in_(contact_ids))
    await session.execute(delete(GroupMember).where(GroupMember.contact_id.in_(owned)))
    result = await session.execute(delete(Contact).where(Contact.account_id == authority.account_id,
                                                         Contact.id.in_(contact_ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- groups ---------------------------------------------------------------------------------------
FILTER_KEYS = {"tags_any", "tags_all", "countries"}


def _check_filter(kind: str, spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if kind == "static":
        if spec:
            raise InvalidRequest("filter_not_allowed", "A static group lists its members; use kind filter.",
                                 field="filter")
        return None
    if kind != "filter":
        raise InvalidRequest("invalid_group_kind", "kind is static or filter.", field="kind")
    if not spec or set(spec) - FILTER_KEYS:
        raise InvalidRequest("invalid_group_filter", f"A filter uses {', '.join(sorted(FILTER_KEYS))}.", field="filter")
    for key, value in spec.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest("invalid_group_filter", f"{key} is a list of strings.", field=f"filter.{key}")
    return {k: sorted(set(v)) for k, v in spec.items()}


def group_member_ids(group: ContactGroup) -> Any:
    """A subquery of the group's contact ids: its members, or the contacts its filter matches."""
    if group.kind == "static":
        return select(GroupMember.contact_id).where(GroupMember.group_id == group.id)
    spec = group.filter or {}
    query = select(Contact.id).where(Contact.account_id == group.account_id)
    if spec.get("countries"):
        query = query.where(Contact.country.in_(spec["countries"]))
    tag_any, tag_all = spec.get("tags_any") or [], spec.get("tags_all") or []
    if tag_any or tag_all:
        # JSON list membership, portably: the list's JSON text contains "tag" (tags hold no quote or
        # backslash, and both databases keep JSON text unescaped: see db.engine)
        text = cast(Contact.tags, Text)
        if tag_any:
            query = query.where(or_(*(text.contains(f'"{t}"', autoescape=True) for t in tag_any)))
        if tag_all:
            query = query.where(and_(*(text.contains(f'"{t}"', autoescape=True) for t in tag_all)))
    return query


async def create_group(session: AsyncSession, *, authority: Authority, name: str, kind: str = "static",
                       filter: dict[str, Any] | None = None, description: str = "") -> ContactGroup:
    require(authority, CONTACTS_MANAGE)
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("name_required", "Give the group a name (up to 100 characters).", field="name")
    if await session.scalar(select(ContactGroup.id).where(ContactGroup.account_id == authority.account_id,
                                                          ContactGroup.name == name)):
        raise Conflict("group_name_taken", f"A group named {name} exists.", field="name")
    now = utcnow()
    group = ContactGroup(id=ids.new_id("grp"), account_id=authority.account_id, name=name, kind=kind,
                         filter=_check_filter(kind, filter), description=description[:200], created_at=now,
                         updated_at=now)
    session.add(group)
    await session.flush()
    return group


async def get_group(session: AsyncSession, *, account_id: str, group_id: str) -> ContactGroup:
    group = await session.scalar(select(ContactGroup).where(ContactGroup.id == group_id,
                                                            ContactGroup.account_id == account_id))
    if group is None:
        raise NotFound("group_not_found", "No such group.", field="group_id")
    return group


async def group_size(session: AsyncSession, group: ContactGroup) -> int:
    return int(await session.scalar(select(func.count()).select_from(group_member_ids(group).subquery())) or 0)


async def add_members(session: AsyncSession, *, authority: Authority, group_id: str, contact_ids: list[str]) -> int:
    """Add the caller's contacts to a static group; returns how many were new members."""
    require(authority, CONTACTS_MANAGE)
    group = await get_group(session, account_id=authority.account_id, group_id=group_id)
    if group.kind != "static":
        raise InvalidRequest("group_is_filter", "Members of a filter group are whoever matches its filter.",
                             field="group_id")
    if len(contact_ids) > MAX_BULK:
        raise InvalidRequest("too_many_ids", f"At most {MAX_BULK} ids at once.", field="contact_ids")
    owned = set(await session.scalars(select(Contact.id).where(Contact.account_id == authority.account_id,
                                                               Contact.id.in_(contact_ids))))
    missing = [i for i in contact_ids if i not in owned]
    if missing:
        raise NotFound("contact_not_found", f"No such contact: {missing[0]}.", field="contact_ids")
    present = set(await session.scalars(select(GroupMember.contact_id).where(GroupMember.group_id == group.id,
                                                                             GroupMember.contact_id.in_(owned))))
    now = utcnow()
    new = sorted(owned - present)
    session.add_all(GroupMember(group_id=group.id, contact_id=c, added_at=now) for c in new)
    await session.flush()
    return len(new)


async def remove_members(session: AsyncSession, *, authority: Authority, group_id: str, contact_ids: list[str]) -> int:
    require(authority, CONTACTS_MANAGE)
    group = await get_group(session, account_id=authority.account_id, group_id=group_id)
    result = await session.execute(delete(GroupMember).where(GroupMember.group_id == group.id,
                                                             GroupMember.contact_id.in_(contact_ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_group(session: AsyncSession, *, authority: Authority, group_id: str) -> None:
    """The group goes; its contacts stay."""
    require(authority, CONTACTS_MANAGE)
    group = await get_group(session, account_id=authority.account_id, group_id=group_id)
    await session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
    await session.delete(group)


# -- bulk (imports) -------------------------------------------------------------------------------
@dataclass(slots=True)
class UpsertCounts:
    created: int = 0
    updated: int = 0
    skipped: int = 0


def _stored(value: object) -> str:
    """A typed draft value as contacts keep it (as typed_fields does): a number as written ("12.50"), a
    date as ISO 8601."""
    if isinstance(value, str):
        return value
    return value.isoformat() if isinstance(value, date) else str(value)


_CONTACT = Contact.__table__
_UPDATE_CONTACT = update(_CONTACT).where(_CONTACT.c.id == bindparam("b_id")).values(
    name=bindparam("b_name", type_=_CONTACT.c.name.type), tags=bindparam("b_tags", type_=_CONTACT.c.tags.type),
    fields=bindparam("b_fields", type_=_CONTACT.c.fields.type),
    updated_at=bindparam("b_updated_at", type_=_CONTACT.c.updated_at.type))


async def upsert_contacts(
    session: AsyncSession, *, account_id: str, drafts: list[Any], source: str = "import",
    existing: str = "update", group_id: str | None = None,
) -> UpsertCounts:
    """Store checked rows (campaigns.rows.ContactDraft) as contacts, one chunk per call (≤ MAX_BULK).

    A number already in the address book is updated (name if given, tags added, fields merged) or, with
    existing="skip", left alone. A number given twice in one call is one contact, counted once: its rows
    are folded in order (a later name wins, tags and fields merged). With `group_id` every row's contact
    joins that static group. Imports of one account run one after another (the import job's rule); a
    concurrent insert of the same number would hit the unique (account, number) index rather than make a
    duplicate.

    Core statements, not ORM objects (the import's hot path): one read of the chunk's numbers, one INSERT
    and one UPDATE executemany, one INSERT of memberships. Contact objects already loaded in `session` are
    not refreshed."""
    if len(drafts) > MAX_BULK:
        raise InvalidRequest("too_many_ids", f"At most {MAX_BULK} rows at once.", field="rows")
    group = await get_group(session, account_id=account_id, group_id=group_id) if group_id else None
    if group is not None and group.kind != "static":
        raise InvalidRequest("group_is_filter", "Import into a static group.", field="group_id")
    types = await field_types(session, account_id)
    unknown = sorted({name for d in drafts for name in (d.fields or {})} - set(types))
    if unknown:  # the import's mapping step defines its fields first (define_field)
        raise Unprocessable("unknown_contact_field", f"No contact field '{unknown[0]}'; define it first.",
                            field=f"fields.{unknown[0]}")
    by_bidx = _fold_by_number(drafts)
    columns = [_CONTACT.c.id, _CONTACT.c.phone_bidx]
    if existing != "skip":  # what an update merges with
        columns += [_CONTACT.c.name, _CONTACT.c.tags, _CONTACT.c.fields]
    found = {row.phone_bidx: row for row in await session.execute(select(*columns).where(
        _CONTACT.c.account_id == account_id, _CONTACT.c.phone_bidx.in_(list(by_bidx))))}
    now = utcnow()
    new = {bidx: d for bidx, d in by_bidx.items() if bidx not in found}
    contact_ids = dict(zip(new, ids.new_ids("ct", len(new)), strict=True))
    if new:  # time zone and consent stay NULL (an import sets them afterwards for its own rows)
        await session.execute(insert(_CONTACT), [
            {"id": contact_ids[bidx], "account_id": account_id, "phone": d.phone, "phone_bidx": bidx,
             "country": d.country, "name": d.name, "tags": clean_tags(d.tags) if d.tags else [],
             "fields": d.fields, "source": source, "created_at": now, "updated_at": now}
            for bidx, d in new.items()])
    changes = []
    for bidx, row in found.items():
        contact_ids[bidx] = row.id
        if existing != "skip":
            d = by_bidx[bidx]
            changes.append({"b_id": row.id, "b_name": d.name or row.name,
                            "b_tags": clean_tags([*(row.tags or []), *d.tags]),
                            "b_fields": {**(row.fields or {}), **d.fields}, "b_updated_at": now})
    if changes:
        await session.execute(_UPDATE_CONTACT, changes)
    if group is not None and contact_ids:  # a contact already in the group stays as it was
        dialect = session.bind.dialect.name if session.bind is not None else ""
        members = (pg_insert if dialect == "postgresql" else sqlite_insert)(GroupMember.__table__)
        await session.execute(members.on_conflict_do_nothing(), [
            {"group_id": group.id, "contact_id": c, "added_at": now} for c in contact_ids.values()])
    return UpsertCounts(created=len(new), updated=len(changes), skipped=len(found) - len(changes))


def _fold_by_number(drafts: list[ContactDraft]) -> dict[str, ContactDraft]:
    """Drafts by the blind index of their number, in first-seen order, fields as stored (_stored); a
    number's later rows fold into its first (a later name wins, tags and fields added)."""
    out: dict[str, ContactDraft] = {}
    for d in drafts:
        bidx = blind_index(d.phone)
        fields: dict[str, Any] = {k: _stored(v) for k, v in (d.fields or {}).items()}
        seen = out.get(bidx)
        if seen is None:
            out[bidx] = ContactDraft(d.row, d.phone, d.country, d.name, list(d.tags or []), fields)
        else:
            seen.name = d.name or seen.name
            seen.tags.extend(d.tags or [])
            seen.fields.update(fields)
    return out
