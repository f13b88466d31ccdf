"""Verification traffic in the review back office (platform staff: reviewers and platform administrators):
refused verification requests by error code, country and prefix; destination throttles in force with a
lift button; a form to throttle a country or prefix by hand; conversion (approved / judged) per destination.

Same services as /v1/operator/verify/… (verify.pumping_traffic); the tabs and the staff check come from
console.review. Numbers themselves are never shown: blocks keep only a blind index of the number.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.accounts.models import Account
from hongyan.audit.service import actor_for_console
from hongyan.config import Settings
from hongyan.console.context import CheckedForm, Console, FieldErrors, form_text
from hongyan.console.review import StaffReviewer, pending_counts
from hongyan.console.session import Flash
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError, NotFound, Unprocessable
from hongyan.verify import pumping_traffic as traffic

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/review/verify-traffic"
PERIODS = (1, 6, 24, 72, 168)  # hours the page can look back
FORM_FIELDS = ("kind", "value", "account_id", "max_per_hour", "minutes", "note")
DEFAULT_FORM = {
    "kind": "prefix",
    "value": "",
    "account_id": "",
    "max_per_hour": "",
    "minutes": "60",
    "note": "",
}


async def _page(
    console: Console,
    hours: int,
    *,
    form: dict[str, str] | None = None,
    errors: FieldErrors | None = None,
    status: int = 200,
) -> Any:
    hours = hours if hours in PERIODS else 24
    settings: Settings = console.request.app.state.settings
    since = utcnow() - timedelta(hours=hours)
    async with console.db.read() as session:
        groups = await traffic.blocked_groups(session, since=since)
        latest = await traffic.latest_blocks(session, since=since, limit=20)
        throttles = await traffic.list_throttles(session)
        by_country = await traffic.conversion_by_destination(session, kind="country", since=since, limit=20)
        by_prefix = await traffic.conversion_by_destination(session, kind="prefix", since=since, limit=20)
        ids = {b.account_id for b in latest} | {t.account_id for t in throttles if t.account_id}
        rows = (await session.execute(select(Account.id, Account.name).where(Account.id.in_(ids)))).all()
        names = {r.id: r.name for r in rows}
        counts = await pending_counts(session)
    by_code: dict[str, int] = {}
    for group in groups:
        by_code[group.code] = by_code.get(group.code, 0) + group.count
    return console.render(
        "verify_blocked.html",
        status=status,
        active="review",
        review_tab="verify",
        review_counts=counts,
        page=PAGE,
        hours=hours,
        periods=PERIODS,
        total=sum(by_code.values()),
        by_code=sorted(by_code.items(), key=lambda item: -item[1]),
        groups=groups,
        latest=latest,
        throttles=throttles,
        by_country=by_country,
        by_prefix=by_prefix,
        account_names=names,
        form=form or DEFAULT_FORM,
        # a conversion under the floor (over enough codes) is shown in the warning colour
        floor=settings.verify_conversion_floor,
        min_judged=settings.verify_conversion_min_started,
        errors=errors or FieldErrors(),
    )


@router.get("/review/verify-traffic")
async def verify_traffic(console: StaffReviewer, hours: int = 24) -> Any:
    return await _page(console, hours)


def _whole_number(text: str, field: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise Unprocessable("verify_throttle_invalid", f"{field} is a whole number.", field=field)
    return int(text)


@router.post("/review/verify-traffic/throttles")
async def create_throttle(console: StaffReviewer, form: CheckedForm) -> Any:
    values = {name: form_text(form, name) for name in FORM_FIELDS}
    try:
        minutes = _whole_number(values["minutes"], "minutes")
        max_per_hour = _whole_number(values["max_per_hour"], "max_per_hour")
        async with console.db.write() as session:
            throttle = await traffic.create_throttle(
                session,
                kind=values["kind"],
                value=values["value"],
                account_id=values["account_id"].strip() or None,
                max_per_hour=max_per_hour,
                minutes=60 if minutes is None else minutes,
                note=values["note"],
                actor=actor_for_console(console),
            )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, exc.field if exc.field in FORM_FIELDS else "value", exc)
        return await _page(console, 24, form=values, errors=errors, status=exc.status_code)
    flash = Flash(kind="success", key="verify_blocked.flash.created", params={"target": throttle.value})
    return console.redirect(PAGE, flash=flash)


@router.post("/review/verify-traffic/throttles/{throttle_id}/lift")
async def lift_throttle(console: StaffReviewer, form: CheckedForm, throttle_id: str) -> Any:
    if not throttle_id.isdigit() or len(throttle_id) > 12:
        return console.render("not_found.html", status=404, what="page")
    try:
        async with console.db.write() as session:
            throttle = await traffic.lift_throttle(
                session, int(throttle_id), actor=actor_for_console(console)
            )
    except NotFound:
        return console.render("not_found.html", status=404, what="page")
    except HongyanError:  # already ended (lifted by someone else, or expired): the list shows it gone
        return console.redirect(PAGE, flash=Flash(kind="info", key="verify_blocked.flash.ended"))
    flash = Flash(kind="success", key="verify_blocked.flash.lifted", params={"target": throttle.value})
    return console.redirect(PAGE, flash=flash)
