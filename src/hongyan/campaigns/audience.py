"""A campaign's audience and what each member's message becomes: the personalized text, its segments,
price and the earliest instant it may go out (quiet hours).

The audience is the union of the campaign's groups (static or saved filters) and its own audience group
(uploaded files and typed numbers, stored as contacts), deduplicated by contact — and contacts are unique
per number — read in contact-id order so a run can resume from its cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.billing.rates import PriceList
from hongyan.campaigns import quiet_hours
from hongyan.campaigns.contacts import group_member_ids
from hongyan.campaigns.models import Campaign, Contact, ContactGroup, GroupMember
from hongyan.compliance.gate import Gate, TextRefused
from hongyan.core.errors import Unprocessable
from hongyan.messaging.encoding import Segmentation, segment
from hongyan.messaging.personalize import MissingVariable, Template, parse_template, render

BUILTIN_VARIABLES = {"name": "name", "姓名": "name", "phone": "phone", "手机号": "phone"}
ON_MISSING = ("skip", "empty")


async def audience_groups(session: AsyncSession, campaign: Campaign) -> list[ContactGroup]:
    wanted = list(campaign.group_ids)
    own = campaign.audience_group_id
    if own and await session.scalar(select(GroupMember.contact_id).where(GroupMember.group_id == own).limit(1)):
        wanted.append(own)  # only when it holds someone: one static group alone is read the fast way
    if not wanted:
        return []
    found = (await session.scalars(select(ContactGroup).where(ContactGroup.id.in_(wanted),
                                                              ContactGroup.account_id == campaign.account_id))).all()
    return list(found)


def audience_ids(groups: Sequence[ContactGroup]) -> Any:
    """A subquery of distinct contact ids in any of the groups."""
    queries = [group_member_ids(g) for g in groups]
    return union(*queries).subquery() if len(queries) > 1 else queries[0].subquery()


async def audience_size(session: AsyncSession, campaign: Campaign) -> int:
    groups = await audience_groups(session, campaign)
    if not groups:
        return 0
    return int(await session.scalar(select(func.count()).select_from(audience_ids(groups))) or 0)


# what rendering reads of a contact (rows, not ORM objects: a run reads every contact of its audience)
_COLUMNS = (Contact.id, Contact.phone, Contact.name, Contact.country, Contact.time_zone, Contact.fields)


async def audience_chunk(session: AsyncSession, campaign: Campaign, groups: Sequence[ContactGroup], *,
                         after: str | None, limit: int) -> list[Any]:
    """The next `limit` contacts after contact id `after`, in id order (rows with the _COLUMNS)."""
    if not groups:
        return []
    if len(groups) == 1 and groups[0].kind == "static":
        # the common case, and the one that must scale: walk the membership's primary key from the cursor
        # (a semi-join over the whole group per chunk would make a large run quadratic)
        query = (select(*_COLUMNS).join(GroupMember, GroupMember.contact_id == Contact.id)
                 .where(GroupMember.group_id == groups[0].id, Contact.account_id == campaign.account_id)
                 .order_by(GroupMember.contact_id).limit(limit))
        if after is not None:
            query = query.where(GroupMember.contact_id > after)
    else:
        ids_ = audience_ids(groups)
        query = (select(*_COLUMNS).where(Contact.account_id == campaign.account_id, Contact.id.in_(select(ids_.c[0])))
                 .order_by(Contact.id).limit(limit))
        if after is not None:
            query = query.where(Contact.id > after)
    return list((await session.execute(query)).all())


def check_variables(text: str, field_types: dict[str, str], *, field: str = "text") -> Template:
    """The campaign text parsed; a variable that is neither built in nor a contact field is refused by name."""
    template = parse_template(text)
    unknown = [v for v in template.variables if v not in BUILTIN_VARIABLES and v not in field_types]
    if unknown:
        known = ", ".join(sorted({*BUILTIN_VARIABLES, *field_types}))
        raise Unprocessable("unknown_template_variable",
                            f"The text uses {{{unknown[0]}}}, which is not a contact field (known: {known}).",
                            field=field, details={"variables": unknown})
    return template


def with_empty_defaults(template: Template) -> Template:
    """on_missing="empty": a variable without a value (and without a default of its own) becomes ""."""
    parts = tuple((p[0], "" if p[1] is None else p[1]) if isinstance(p, tuple) else p for p in template.parts)
    return Template(parts=parts, variables=template.variables)


def contact_values(contact: Any) -> dict[str, str]:
    values = {k: str(v) for k, v in (contact.fields or {}).items() if v is not None and v != ""}
    for alias, attr in BUILTIN_VARIABLES.items():
        value = getattr(contact, attr)
        if value and alias not in values:
            values[alias] = value
    return values


@dataclass(frozen=True, slots=True)
class Rendered:
    contact_id: str
    to: str
    country: str | None
    text: str
    seg: Segmentation
    price_micros: int
    zones: tuple[str, ...]
    release_at: datetime  # the planned time, or when the recipient's quiet window ends
    held: Any = None  # content-filter verdict "review": the message waits for a reviewer
    signature_id: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    contact_id: str
    to: str
    code: str
    message: str
    field: str


@dataclass(slots=True)
class Renderer:
    """Renders contacts for one campaign run (pure; caches segmentation and prices)."""

    template: Template
    prices: PriceList
    message_type: str
    window: quiet_hours.QuietWindow | None
    max_chars: int
    gate: Gate | None = None
    _segs: dict[str, Segmentation] = field(default_factory=dict)

    def render(self, contact: Any, at: datetime) -> Rendered | Skipped:
        try:
            text = render(self.template, contact_values(contact))
        except MissingVariable as missing:
            return Skipped(contact.id, contact.phone, "template_variable_missing",
                           f"The contact has no value for {{{missing.name}}}.", f"fields.{missing.name}")
        if not text.strip():
            return Skipped(contact.id, contact.phone, "text_empty", "The personalized text is empty.", "text")
        held = signature_id = None
        if self.gate is not None:  # compliance: signature, opt-out wording, content rules
            try:
                composed = self.gate.compose(text, self.message_type)
            except TextRefused as refused:
                return Skipped(contact.id, contact.phone, refused.code, refused.message, "text")
            text, held, signature_id = composed.text, composed.verdict, composed.signature_id
        if len(text) > self.max_chars:
            return Skipped(contact.id, contact.phone, "text_too_long",
                           f"The personalized text has {len(text)} characters; the limit is {self.max_chars}.", "text")
        seg = self._segs.get(text)
        if seg is None:
            seg = segment(text)
            if len(self._segs) < 4096:
                self._segs[text] = seg
        price = self.prices.price(contact.country, self.message_type)
        zones = quiet_hours.zones_for_number(contact.phone, contact.time_zone)
        release_at = at
        if self.message_type == "marketing" and self.window is not None:
            release_at = quiet_hours.next_allowed(self.window, zones, at)
        return Rendered(contact.id, contact.phone, contact.country, text, seg,
                        price.per_segment_micros * seg.segment_count, zones, release_at, held, signature_id)

