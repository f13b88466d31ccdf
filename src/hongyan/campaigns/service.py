"""Campaigns: create (draft), preview, estimate, start, pause, resume, cancel.

A draft has a text with variables, an audience (groups, saved filters, and its own audience group holding
uploaded files and typed numbers) and a schedule (now, at a time, or an RRULE in a time zone). Starting it
checks the variables and the balance and hands it to the scheduler (campaigns.runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import ACCOUNT_SETTINGS, Authority, require
from hongyan.audit.service import Actor, record
from hongyan.billing import charging
from hongyan.billing.rates import load_price_list
from hongyan.campaigns import audience, contacts, quiet_hours
from hongyan.campaigns.models import Campaign, CampaignRun, ContactGroup
from hongyan.campaigns.recurrence import next_occurrence, parse_rrule, to_rrule
from hongyan.campaigns.rows import ContactDraft
from hongyan.campaigns.runs import ACTIVE, WAIT_LIMIT, account_window, refresh_campaign
from hongyan.compliance.gate import load_gate
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.messaging.states import Status
from hongyan.messaging.transitions import Transition, apply_transitions

CAMPAIGNS_MANAGE = contacts.CONTACTS_MANAGE
PRIORITIES = {"high": 0, "normal": 1, "low": 2}
CAMPAIGN_TYPES = ("marketing", "notification")
MAX_TYPED_NUMBERS = 10_000
MAX_GROUPS = 50


@dataclass(slots=True)
class CampaignInput:
    name: str
    text: str
    message_type: str = "marketing"
    sender: str | None = None
    group_ids: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    on_missing: str = "skip"
    schedule: dict[str, Any] = field(default_factory=lambda: {"mode": "now"})
    time_zone: str | None = None
    priority: str = "normal"
    tps_cap: int | None = None
    validity_hours: int | None = None


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Unprocessable("invalid_time_zone", f"Unknown time zone {name!r} (use an IANA name such as "
                            "Asia/Shanghai).", field="time_zone") from exc
    return name


def _local(value: Any, tz: str, field_name: str) -> datetime:
    """A naive local wall-clock time; an aware one is converted to `tz` first."""
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise Unprocessable("invalid_datetime", f"{field_name} is not an ISO 8601 date-time.",
                            field=field_name) from exc
    if at.tzinfo is not None:
        at = at.astimezone(ZoneInfo(tz)).replace(tzinfo=None)
    return at.replace(microsecond=0)


def check_schedule(schedule: dict[str, Any], tz: str, *, now: datetime) -> tuple[dict[str, Any], datetime | None]:
    """The schedule in canonical form and its first occurrence (UTC; None when a rule never fires)."""
    mode = schedule.get("mode", "now")
    if mode == "now":
        return {"mode": "now"}, now
    if mode == "at":
        local = _local(schedule.get("at"), tz, "schedule.at")
        first = local.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
        if first < now:
            raise Unprocessable("schedule_in_past", f"{local.isoformat()} ({tz}) has passed.", field="schedule.at")
        return {"mode": "at", "at": local.isoformat()}, first
    if mode == "recurring":
        if not schedule.get("rrule"):
            raise Unprocessable("invalid_rrule", "A recurring campaign needs an RRULE (e.g. FREQ=WEEKLY;BYDAY=MO;COUNT=4).",
                                field="schedule.rrule")
        rule = parse_rrule(str(schedule["rrule"]))
        start = _local(schedule.get("start"), tz, "schedule.start") if schedule.get("start") else None
        if start is None:
            raise Unprocessable("invalid_datetime", "A recurring campaign needs its first date and time (start).",
                                field="schedule.start")
        first = next_occurrence(rule, start_local=start, tz=tz, after=now)
        if first is None:
            raise Unprocessable("schedule_in_past", "The rule has no occurrence after now.", field="schedule.rrule")
        return {"mode": "recurring", "start": start.isoformat(), "rrule": to_rrule(rule)}, first
    raise Unprocessable("invalid_schedule", "schedule.mode is now, at or recurring.", field="schedule.mode")


async def _check(session: AsyncSession, settings: Settings, account_id: str, data: CampaignInput) -> None:
    if not data.name.strip() or len(data.name) > 100:
        raise InvalidRequest("name_required", "Give the campaign a name (up to 100 characters).", field="name")
    if data.message_type not in CAMPAIGN_TYPES:
        raise Unprocessable("invalid_message_type", "A campaign is marketing or notification.", field="message_type")
    if data.on_missing not in audience.ON_MISSING:
        raise Unprocessable("invalid_on_missing", "on_missing is skip or empty.", field="on_missing")
    if data.priority not in PRIORITIES:
        raise Unprocessable("invalid_priority", "priority is high, normal or low.", field="priority")
    if data.tps_cap is not None and not 1 <= data.tps_cap <= 10_000:
        raise Unprocessable("invalid_tps_cap", "tps_cap is between 1 and 10000 messages per second.", field="tps_cap")
    if data.validity_hours is not None and not 1 <= data.validity_hours <= 72:
        raise Unprocessable("invalid_validity", "validity_hours is between 1 and 72.", field="validity_hours")
    if not data.text.strip() or len(data.text) > settings.max_text_chars:
        raise Unprocessable("text_empty" if not data.text.strip() else "text_too_long",
                            f"The text is 1 to {settings.max_text_chars} characters.", field="text")
    audience.check_variables(data.text, await contacts.field_types(session, account_id))
    # compliance, before anything is built: verification for marketing, signature, opt-out wording, content
    gate = await load_gate(session, settings, account_id=account_id)
    gate.check_request(data.message_type, has_template=False)
    gate.compose(data.text, data.message_type)
    if len(data.group_ids) > MAX_GROUPS:
        raise Unprocessable("too_many_groups", f"At most {MAX_GROUPS} groups.", field="group_ids")
    for i, group_id in enumerate(data.group_ids):
        found = await session.scalar(select(ContactGroup.id).where(ContactGroup.id == group_id,
                                                                   ContactGroup.account_id == account_id))
        if found is None:
            raise NotFound("group_not_found", f"No group {group_id}.", field=f"group_ids[{i}]")
    if len(data.numbers) > MAX_TYPED_NUMBERS:
        raise Unprocessable("too_many_recipients", f"At most {MAX_TYPED_NUMBERS} typed numbers; import a file for "
                            "more.", field="numbers")


def _drafts(numbers: list[str], region: str) -> list[ContactDraft]:
    drafts: list[ContactDraft] = []
    for i, raw in enumerate(numbers):
        try:
            number = normalize(raw, region)
        except NumberProblem as problem:
            raise Unprocessable(problem.code, f"numbers[{i}]: {problem.message}", field=f"numbers[{i}]") from problem
        drafts.append(ContactDraft(row=i + 1, phone=number.e164, country=number.region, name=None))
    return drafts


async def create_campaign(session: AsyncSession, settings: Settings, *, authority: Authority, actor: Actor,
                          data: CampaignInput) -> Campaign:
    """A draft campaign with its own static audience group (typed numbers become contacts in it)."""
    require(authority, CAMPAIGNS_MANAGE)
    await _check(session, settings, authority.account_id, data)
    tz = _zone(data.time_zone or settings.default_time_zone)
    schedule, _first = check_schedule(data.schedule, tz, now=utcnow())
    now = utcnow()
    campaign_id = ids.new_id("cmp")
    group = ContactGroup(id=ids.new_id("grp"), account_id=authority.account_id,
                         name=f"campaign {campaign_id}", kind="static", filter=None,
                         description=f"Audience of campaign {data.name[:80]}", created_at=now, updated_at=now)
    session.add(group)
    campaign = Campaign(id=campaign_id, account_id=authority.account_id, name=data.name.strip(), status="draft",
                        message_type=data.message_type, sender=data.sender, text=data.text, on_missing=data.on_missing,
                        group_ids=list(dict.fromkeys(data.group_ids)), audience_group_id=group.id, schedule=schedule,
                        time_zone=tz, next_fire_at=None, runs_fired=0, priority=PRIORITIES[data.priority],
                        tps_cap=data.tps_cap, validity_hours=data.validity_hours,
                        created_by=authority.user_id or authority.key_id, created_at=now, updated_at=now)
    session.add(campaign)
    await session.flush()
    if data.numbers:
        await contacts.upsert_contacts(session, account_id=authority.account_id, source="campaign",
                                       drafts=_drafts(data.numbers, settings.default_region), existing="skip",
                                       group_id=group.id)
    await record(session, actor=actor, action="campaign.created", account_id=authority.account_id,
                 target_type="campaign", target_id=campaign.id, after={"name": campaign.name,
                                                                       "schedule": schedule})
    return campaign


async def get_campaign(session: AsyncSession, *, account_id: str, campaign_id: str) -> Campaign:
    campaign = await session.scalar(select(Campaign).where(Campaign.id == campaign_id,
                                                           Campaign.account_id == account_id))
    if campaign is None:
        raise NotFound("campaign_not_found", "No such campaign.", field="campaign_id")
    return campaign


async def list_campaigns(session: AsyncSession, *, account_id: str, limit: int = 50,
                         before: str | None = None) -> list[Campaign]:
    query = select(Campaign).where(Campaign.account_id == account_id).order_by(Campaign.id.desc()).limit(limit)
    if before:
        query = query.where(Campaign.id < before)
    return list((await session.scalars(query)).all())


@dataclass(slots=True)
class Estimate:
    audience: int
    messages: int
    skipped: int
    segments: int
    price_micros: int
    currency: str
    samples: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    by_country: dict[str | None, list[int]] = field(default_factory=dict)  # country -> [segments, price]
    sampled: bool = False  # extrapolated from the first EXACT_UP_TO contacts

    def funding_rows(self, message_type: str) -> list[dict[str, Any]]:
        """One pseudo message row per country, for charging.plan_funding (packages are per country)."""
        return [{"to_country": c, "message_type": message_type, "segment_count": seg, "price_micros": price}
                for c, (seg, price) in self.by_country.items()]


EXACT_UP_TO = 20_000  # audiences up to this size are rendered whole for an estimate; larger ones are sampled


async def estimate(session: AsyncSession, settings: Settings, campaign: Campaign, *, samples: int = 5,
                   full: bool = True) -> Estimate:
    """Render the audience: counts, segments and cost. Exact up to EXACT_UP_TO contacts; a larger audience
    is estimated from its first EXACT_UP_TO (`sampled`), and the run itself holds the exact amounts."""
    now = utcnow()
    prices = await load_price_list(session, settings, account_id=campaign.account_id, currency=settings.currency)
    template = audience.check_variables(campaign.text, await contacts.field_types(session, campaign.account_id))
    if campaign.on_missing == "empty":
        template = audience.with_empty_defaults(template)
    window = await account_window(session, settings, campaign.account_id)
    renderer = audience.Renderer(template, prices, campaign.message_type, window, settings.max_text_chars)
    groups = await audience.audience_groups(session, campaign)
    out = Estimate(await audience.audience_size(session, campaign), 0, 0, 0, 0, prices.currency, [], [])
    cursor: str | None = None
    while True:
        chunk = await audience.audience_chunk(session, campaign, groups, after=cursor,
                                              limit=settings.campaign_chunk if full else samples)
        for contact in chunk:
            r = renderer.render(contact, now)
            if isinstance(r, audience.Skipped):
                out.skipped += 1
                if len(out.problems) < 20:
                    out.problems.append({"contact_id": r.contact_id, "to": r.to, "code": r.code,
                                         "message": r.message, "field": r.field})
                continue
            out.messages += 1
            out.segments += r.seg.segment_count
            out.price_micros += r.price_micros
            per_country = out.by_country.setdefault(r.country, [0, 0])
            per_country[0] += r.seg.segment_count
            per_country[1] += r.price_micros
            if len(out.samples) < samples:
                out.samples.append({"contact_id": r.contact_id, "to": r.to, "text": r.text,
                                    "encoding": r.seg.encoding, "segments": r.seg.segment_count,
                                    "price_micros": r.price_micros,
                                    "release_at": isoformat(r.release_at) if r.release_at != now else None})
        if not full or len(chunk) < settings.campaign_chunk:
            break
        cursor = chunk[-1].id
        read = out.messages + out.skipped
        if read >= EXACT_UP_TO and out.audience > read:
            _extrapolate(out, out.audience / read)
            break
    return out


def _extrapolate(out: Estimate, factor: float) -> None:
    out.sampled = True
    out.messages, out.skipped = round(out.messages * factor), round(out.skipped * factor)
    out.segments, out.price_micros = round(out.segments * factor), round(out.price_micros * factor)
    out.by_country = {c: [round(seg * factor), round(price * factor)] for c, (seg, price) in out.by_country.items()}


async def start_campaign(db: Database, settings: Settings, *, authority: Authority, actor: Actor,
                         campaign_id: str) -> Campaign:
    """draft → scheduled: checked again (variables, audience, schedule, balance for the first run)."""
    require(authority, CAMPAIGNS_MANAGE)
    async with db.read() as session:
        campaign = await get_campaign(session, account_id=authority.account_id, campaign_id=campaign_id)
        if campaign.status != "draft":
            raise Conflict("campaign_not_draft", f"The campaign is {campaign.status}; only a draft can start.",
                           field="status")
        if await audience.audience_size(session, campaign) == 0:
            raise Unprocessable("audience_empty", "The audience is empty: add groups, numbers or a file.",
                                field="group_ids")
        schedule, first = check_schedule(campaign.schedule, campaign.time_zone, now=utcnow())
        quote = await estimate(session, settings, campaign, samples=0)
        if quote.messages == 0:
            raise Unprocessable("no_valid_recipients", "No audience member can be sent to "
                                f"({quote.skipped} skipped: {quote.problems[0]['message'] if quote.problems else ''}).",
                                field="text")
        plan = await charging.plan_funding(session, quote.funding_rows(campaign.message_type), account_id=campaign.account_id, currency=quote.currency, lock=False,
                                           at=utcnow())
        if plan.allocation.cash_micros > plan.available_micros:
            raise charging.insufficient_balance(currency=quote.currency, needed=plan.allocation.cash_micros,
                                                available=plan.available_micros)
    async with db.write() as session:
        campaign = await get_campaign(session, account_id=authority.account_id, campaign_id=campaign_id)
        if campaign.status != "draft":
            raise Conflict("campaign_not_draft", f"The campaign is {campaign.status}; only a draft can start.",
                           field="status")
        campaign.schedule = schedule
        campaign.status = "scheduled"
        campaign.next_fire_at = first
        campaign.updated_at = utcnow()
        await record(session, actor=actor, action="campaign.started", account_id=campaign.account_id,
                     target_type="campaign", target_id=campaign.id,
                     after={"next_fire_at": isoformat(first) if first else None,
                            "estimate_micros": quote.price_micros, "messages": quote.messages})
    return campaign


async def set_quiet_hours(session: AsyncSession, settings: Settings, *, authority: Authority, actor: Actor,
                          value: str | None) -> str:
    """The account's quiet window for marketing ("21:00-08:00"); None returns to the platform default. An
    account cannot switch it off (marketing at night is not allowed): only the platform setting can."""
    require(authority, ACCOUNT_SETTINGS)
    window = quiet_hours.parse_window(value) if value is not None else None
    if value is not None and window is None:
        raise Unprocessable("quiet_hours_required", "Marketing needs a quiet window; give one such as 21:00-08:00 "
                            "(null returns to the platform default).", field="quiet_hours")
    account = await session.get(Account, authority.account_id)
    assert account is not None
    stored = quiet_hours.format_window(window) if window is not None else None
    if account.quiet_hours != stored:
        await record(session, actor=actor, action="account.quiet_hours_changed", account_id=account.id,
                     target_type="account", target_id=account.id, before={"quiet_hours": account.quiet_hours},
                     after={"quiet_hours": stored})
        account.quiet_hours = stored
    return effective_quiet_hours(settings, account.quiet_hours)


def effective_quiet_hours(settings: Settings, own: str | None) -> str:
    return quiet_hours.format_window(quiet_hours.parse_window(own if own is not None else settings.quiet_hours))


async def _active_runs(session: AsyncSession, campaign_id: str, db: Database) -> list[CampaignRun]:
    query = select(CampaignRun).where(CampaignRun.campaign_id == campaign_id, CampaignRun.status.in_(ACTIVE))
    if db.dialect == "postgresql":
        query = query.with_for_update()
    return list((await session.scalars(query)).all())


async def pause_campaign(db: Database, *, authority: Authority, actor: Actor, campaign_id: str) -> dict[str, int]:
    """No more releases, no more firings; what was released but not yet taken by a dispatcher goes back to
    `scheduled`. Messages a carrier already has are not recalled."""
    require(authority, CAMPAIGNS_MANAGE)
    now = utcnow()
    async with db.write() as session:
        campaign = await get_campaign(session, account_id=authority.account_id, campaign_id=campaign_id)
        if campaign.status not in ("scheduled", "running"):
            raise Conflict("campaign_not_running", f"The campaign is {campaign.status}.", field="status")
        taken_back = 0
        for run in await _active_runs(session, campaign.id, db):
            run.status = "paused"
            run.updated_at = now
            queued = (await session.scalars(select(Message.id).where(Message.batch_id == run.batch_id,
                                                                     Message.status == Status.QUEUED.value))).all()
            outcome = await apply_transitions(session, [Transition(m, Status.SCHEDULED) for m in queued])
            taken_back += len(outcome.applied)
        campaign.status = "paused"
        campaign.updated_at = now
        await record(session, actor=actor, action="campaign.paused", account_id=campaign.account_id,
                     target_type="campaign", target_id=campaign.id, after={"taken_back": taken_back})
    return {"taken_back": taken_back}


async def resume_campaign(db: Database, *, authority: Authority, actor: Actor, campaign_id: str) -> None:
    """paused → running again. An occurrence that came due meanwhile follows the scheduler's catch-up rule."""
    require(authority, CAMPAIGNS_MANAGE)
    now = utcnow()
    async with db.write() as session:
        campaign = await get_campaign(session, account_id=authority.account_id, campaign_id=campaign_id)
        if campaign.status != "paused":
            raise Conflict("campaign_not_paused", f"The campaign is {campaign.status}.", field="status")
        for run in await _active_runs(session, campaign.id, db):
            run.status = "running"
            run.updated_at = now
            await session.execute(update(Message).where(Message.batch_id == run.batch_id,
                                                        Message.status == Status.SCHEDULED.value)
                                  .values(expires_at=func.max(Message.expires_at, now + WAIT_LIMIT)
                                          if db.dialect == "sqlite" else func.greatest(Message.expires_at,
                                                                                       now + WAIT_LIMIT)),
                                  execution_options={"synchronize_session": False})
        campaign.status = "running"
        await refresh_campaign(session, campaign.id, now=now)
        await record(session, actor=actor, action="campaign.resumed", account_id=campaign.account_id,
                     target_type="campaign", target_id=campaign.id)


async def cancel_campaign(db: Database, *, authority: Authority, actor: Actor, campaign_id: str) -> dict[str, int]:
    """Stop for good: no more runs; every message not yet with a carrier is canceled and its hold released."""
    require(authority, CAMPAIGNS_MANAGE)
    now = utcnow()
    canceled = released = 0
    async with db.write() as session:
        campaign = await get_campaign(session, account_id=authority.account_id, campaign_id=campaign_id)
        if campaign.status in ("canceled", "completed"):
            raise Conflict("campaign_finished", f"The campaign is {campaign.status}.", field="status")
        for run in await _active_runs(session, campaign.id, db):
            run.status = "canceled"
            run.finished_at = run.updated_at = now
            if run.audience_total is None:
                run.audience_total = run.materialized
            left = (await session.scalars(select(Message.id).where(
                Message.batch_id == run.batch_id,
                Message.status.in_((Status.ACCEPTED.value, Status.SCHEDULED.value, Status.HELD.value,
                                    Status.QUEUED.value))))).all()
            for i in range(0, len(left), 5000):
                outcome = await apply_transitions(session, [Transition(m, Status.CANCELED, error_code="campaign_canceled")
                                                            for m in left[i : i + 5000]])
                canceled += len(outcome.applied)
                released += sum(int(r["price_micros"]) for r in outcome.applied if r.get("funding") == "cash")
        campaign.status = "canceled"
        campaign.next_fire_at = None
        campaign.finished_at = campaign.updated_at = now
        await record(session, actor=actor, action="campaign.canceled", account_id=campaign.account_id,
                     target_type="campaign", target_id=campaign.id,
                     after={"canceled_messages": canceled, "released_micros": released})
    return {"canceled_messages": canceled, "released_micros": released}
