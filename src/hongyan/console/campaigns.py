"""Campaign pages: the list, the new-campaign form, a campaign with its preview, runs and live progress,
and the start / pause / resume / cancel actions. The same services as /v1/campaigns (campaigns.service),
so an error is shown next to its field with the API's own message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.accounts.permissions import MESSAGES_SEND
from hongyan.audit.service import actor_for_console
from hongyan.campaigns import contacts, service
from hongyan.campaigns.audience import BUILTIN_VARIABLES
from hongyan.campaigns.campaign_routes import campaign_json, estimate_json
from hongyan.campaigns.engine import wake
from hongyan.campaigns.models import Campaign, ContactGroup
from hongyan.campaigns.recurrence import WEEKDAYS
from hongyan.config import Settings
from hongyan.console import campaign_form as cf
from hongyan.console.access import NoPermission, can, member_authority
from hongyan.console.campaign_views import (
    building,
    campaign_progress,
    latest_runs,
    local_time,
    progress,
    releasable,
)
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.console.templating import money
from hongyan.core.errors import HongyanError, NotFound
from hongyan.messaging.states import Status

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/campaigns"
PAGE_SIZE = 50
IMPORT_WIZARD = "/console/contacts/import"
CAMPAIGN_STATUSES = ("draft", "scheduled", "running", "paused", "completed", "canceled", "skipped", "failed")


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


def import_url(campaign: Campaign) -> str:
    """The contact import wizard with this campaign's own audience group as the target."""
    return f"{IMPORT_WIZARD}?{urlencode({'group_id': campaign.audience_group_id or ''})}"


def _require_manage(console: Console) -> None:
    """GET pages that only a sender can use (the form): refused like a page of the access table."""
    if not can(console, MESSAGES_SEND):
        raise NoPermission(console, MESSAGES_SEND)


# -- list ------------------------------------------------------------------------------------------
@router.get("/campaigns")
async def campaigns_page(console: SignedIn, cursor: str = "") -> Any:
    async with console.db.read() as session:
        rows = await service.list_campaigns(
            session, account_id=console.account_id, limit=PAGE_SIZE + 1, before=cursor or None
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        last = await latest_runs(session, [c.id for c in rows])
    items = []
    for c in rows:
        run = last.get(c.id)
        items.append(
            {
                **campaign_json(c),
                "next_local": local_time(c.next_fire_at, c.time_zone),
                "last_run": run,
                "progress": progress(run["counts"], run["accepted"] or 0, building=building(run)) if run else None,
            }
        )
    return console.render(
        "campaigns.html",
        active="campaigns",
        items=items,
        next_cursor=rows[-1].id if more else None,
        can_manage=can(console, MESSAGES_SEND),
    )


# -- new -------------------------------------------------------------------------------------------
async def _form_choices(console: Console) -> dict[str, Any]:
    """Groups (not campaigns' own audience groups) with sizes, and the variables a text may use."""
    async with console.db.read() as session:
        own = select(Campaign.audience_group_id).where(
            Campaign.account_id == console.account_id, Campaign.audience_group_id.is_not(None)
        )
        groups = list(
            await session.scalars(
                select(ContactGroup)
                .where(ContactGroup.account_id == console.account_id, ContactGroup.id.not_in(own))
                .order_by(ContactGroup.name)
            )
        )
        sizes = {g.id: await contacts.group_size(session, g) for g in groups}
        fields = await contacts.field_types(session, console.account_id)
    return {
        "groups": groups,
        "sizes": sizes,
        "builtins": list(BUILTIN_VARIABLES),
        "fields": fields,
        "time_zones": cf.TIME_ZONES,
        "weekdays": WEEKDAYS,
        "priorities": cf.PRIORITIES,
        "message_types": service.CAMPAIGN_TYPES,
        "on_missing_choices": ("skip", "empty"),
    }


async def _render_form(
    console: Console, form: cf.CampaignForm, *, errors: FieldErrors | None = None, status: int = 200
) -> Any:
    return console.render(
        "campaigns_new.html",
        status=status,
        active="campaigns",
        form=form,
        errors=errors or FieldErrors(),
        **await _form_choices(console),
    )


@router.get("/campaigns/new")
async def new_campaign_page(console: SignedIn) -> Any:
    _require_manage(console)
    return await _render_form(console, cf.CampaignForm())


def _read_form(form: Any) -> cf.CampaignForm:
    texts = {name: form_text(form, name) for name in cf.TEXT_FIELDS if form.get(name) is not None}
    return cf.CampaignForm.from_fields(
        texts,
        group_ids=[g for g in form.getlist("group_ids") if isinstance(g, str) and g],
        weekdays=[d for d in form.getlist("weekdays") if isinstance(d, str)],
    )


@router.post("/campaigns/new")
async def create_campaign(console: SignedIn, form: CheckedForm) -> Any:
    """Create a draft, then its page (or, with "create and import", the import wizard for its audience)."""
    typed = _read_form(form)
    errors = FieldErrors()
    try:
        data = cf.campaign_input(typed)
    except cf.FormProblem as problem:
        errors[problem.field] = (console.t(problem.key, **problem.params), None)
        return await _render_form(console, typed, errors=errors, status=422)
    except HongyanError as exc:  # the RRULE built from the fields is out of range
        console.field_error(errors, cf.form_field_for(exc.field, typed), exc)
        return await _render_form(console, typed, errors=errors, status=422)
    try:
        async with console.db.write() as session:
            campaign = await service.create_campaign(
                session,
                _settings(console),
                authority=member_authority(console),
                actor=actor_for_console(console),
                data=data,
            )
    except HongyanError as exc:
        console.field_error(errors, cf.form_field_for(exc.field, typed), exc)
        status = exc.status_code if 400 <= exc.status_code < 500 and exc.status_code != 404 else 422
        return await _render_form(console, typed, errors=errors, status=status)
    flash = Flash(kind="success", key="campaigns.flash.created", params={"name": campaign.name})
    if form_text(form, "action") == "import":
        return console.redirect(import_url(campaign), flash=flash)
    return console.redirect(f"{PAGE}/{campaign.id}", flash=flash)


# -- one campaign ----------------------------------------------------------------------------------
async def _campaign(console: Console, campaign_id: str) -> Campaign | None:
    async with console.db.read() as session:
        try:
            return await service.get_campaign(session, account_id=console.account_id, campaign_id=campaign_id)
        except NotFound:
            return None


@router.get("/campaigns/{campaign_id}")
async def campaign_page(console: SignedIn, campaign_id: str) -> Any:
    settings = _settings(console)
    async with console.db.read() as session:
        try:
            campaign = await service.get_campaign(
                session, account_id=console.account_id, campaign_id=campaign_id
            )
        except NotFound:
            return console.render("not_found.html", status=404, what="page")
        preview: dict[str, Any] | None = None
        preview_error = None
        try:
            # before the first run the whole audience is rendered for the totals; afterwards the runs have them
            estimate = await service.estimate(
                session, settings, campaign, samples=5, full=campaign.status in ("draft", "scheduled")
            )
            preview = estimate_json(estimate)
        except HongyanError as exc:  # e.g. a contact field used by the text was deleted since
            preview_error = console.t.error(exc.code, exc.message)
        live = await campaign_progress(session, campaign)
        group_names = {
            g.id: g.name
            for g in await session.scalars(
                select(ContactGroup).where(ContactGroup.id.in_(campaign.group_ids or [""]))
            )
        }
    return console.render(
        "campaigns_detail.html",
        active="campaigns",
        campaign=campaign_json(campaign),
        preview=preview,
        preview_error=preview_error,
        live=live,
        group_names=group_names,
        import_url=import_url(campaign),
        preview_full=campaign.status in ("draft", "scheduled"),
        can_manage=can(console, MESSAGES_SEND),
        created_local=local_time(campaign.created_at, campaign.time_zone),
        labels=_labels(console),
    )


def _labels(console: Console) -> dict[str, dict[str, str]]:
    """Status names for campaigns.js, which redraws badges as runs progress."""
    return {
        "campaign": {s: console.t(f"campaigns.status.{s}") for s in CAMPAIGN_STATUSES},
        "message": {s.value: console.t.status(s.value) for s in Status},
    }


@router.get("/campaigns/{campaign_id}/progress.json")
async def campaign_progress_json(console: SignedIn, campaign_id: str) -> Any:
    """The live part of the campaign page (campaigns.js polls it every 2 s while a run is going). One snapshot:
    read statement by statement, a run could show `completed` next to its campaign still `running`."""
    async with console.db.read(snapshot=True) as session:
        try:
            campaign = await service.get_campaign(
                session, account_id=console.account_id, campaign_id=campaign_id
            )
        except NotFound as exc:
            return console.json({"error": exc.to_dict()}, status=404)
        return console.json(await campaign_progress(session, campaign))


async def _act(console: Console, campaign_id: str, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run a campaign action as the member; (result, None), or (None, a redirect showing the error: back to
    the campaign, or to the list for an unknown id so that the id is not echoed)."""
    try:
        return await call(console.db, *args, authority=member_authority(console), actor=actor_for_console(console),
                          campaign_id=campaign_id), None
    except HongyanError as exc:
        return None, console.redirect_error(PAGE if isinstance(exc, NotFound) else f"{PAGE}/{campaign_id}", exc)


@router.post("/campaigns/{campaign_id}/start")
async def start_campaign(console: SignedIn, campaign_id: str, form: CheckedForm) -> Any:
    campaign, failed = await _act(console, campaign_id, service.start_campaign, _settings(console))
    if failed is not None:
        return failed
    wake(console.request.app)
    key = "campaigns.flash.started_now" if campaign.schedule.get("mode") == "now" else "campaigns.flash.scheduled"
    return console.redirect(f"{PAGE}/{campaign_id}", flash=Flash(
        kind="success", key=key, params={"when": local_time(campaign.next_fire_at, campaign.time_zone)}))


@router.post("/campaigns/{campaign_id}/pause")
async def pause_campaign(console: SignedIn, campaign_id: str, form: CheckedForm) -> Any:
    out, failed = await _act(console, campaign_id, service.pause_campaign)
    if failed is not None:
        return failed
    return console.redirect(f"{PAGE}/{campaign_id}", flash=Flash(
        kind="success", key="campaigns.flash.paused", params={"count": out["taken_back"]}))


@router.post("/campaigns/{campaign_id}/resume")
async def resume_campaign(console: SignedIn, campaign_id: str, form: CheckedForm) -> Any:
    _out, failed = await _act(console, campaign_id, service.resume_campaign)
    if failed is not None:
        return failed
    wake(console.request.app)
    return console.redirect(f"{PAGE}/{campaign_id}", flash=Flash(kind="success", key="campaigns.flash.resumed",
                                                                 params={}))


@router.get("/campaigns/{campaign_id}/cancel")
async def cancel_confirm_page(console: SignedIn, campaign_id: str) -> Any:
    """The confirm step: what stops, and the money that goes back to the balance."""
    _require_manage(console)
    assert console.user is not None
    campaign = await _campaign(console, campaign_id)
    if campaign is None:
        return console.render("not_found.html", status=404, what="page")
    async with console.db.read() as session:
        held = await releasable(session, campaign.id)
    return console.render(
        "campaigns_cancel.html",
        active="campaigns",
        campaign=campaign_json(campaign),
        held=held,
        released=money(held["cash_micros"], console.user.currency),
    )


@router.post("/campaigns/{campaign_id}/cancel")
async def cancel_campaign(console: SignedIn, campaign_id: str, form: CheckedForm) -> Any:
    assert console.user is not None
    out, failed = await _act(console, campaign_id, service.cancel_campaign)
    if failed is not None:
        return failed
    released = money(out["released_micros"], console.user.currency)
    return console.redirect(f"{PAGE}/{campaign_id}", flash=Flash(
        kind="success", key="campaigns.flash.canceled", params={"count": out["canceled_messages"],
                                                                "released": released}))
