"""The new-campaign form as typed by a person, turned into a `campaigns.service.CampaignInput` (pure: no I/O).

The schedule is chosen with plain fields: now; at a local date-time in a time zone; or recurring from a
start with a frequency, interval, weekdays (weekly), day of month (monthly, -1 = the last day) and an end
(after a count of runs or on a date). The RRULE is built here from those fields with
`campaigns.recurrence.to_rrule`, so it is exactly what the API would store; an expert may type a raw
RRULE instead, which then wins. Range checks stay in the service, so the console shows the API's messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from hongyan.campaigns.recurrence import WEEKDAYS, Recurrence, to_rrule
from hongyan.campaigns.service import CampaignInput
from hongyan.messaging.numbers import split_recipients

SCHEDULE_MODES = ("now", "at", "recurring")
FREQUENCIES = ("daily", "weekly", "monthly")
ENDS = ("count", "until", "never")
PRIORITIES = ("high", "normal", "low")
DEFAULT_TIME_ZONE = "Asia/Shanghai"
# the zones offered in the select (any IANA name is accepted by the API)
TIME_ZONES = (
    "Asia/Shanghai",
    "Asia/Hong_Kong",
    "Asia/Taipei",
    "Asia/Tokyo",
    "Asia/Seoul",
    "Asia/Singapore",
    "Asia/Bangkok",
    "Asia/Jakarta",
    "Asia/Kolkata",
    "Asia/Dubai",
    "Europe/London",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Moscow",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "UTC",
)
TEXT_FIELDS = (
    "name",
    "message_type",
    "sender",
    "text",
    "on_missing",
    "numbers",
    "schedule_mode",
    "at",
    "time_zone",
    "start",
    "freq",
    "interval",
    "month_day",
    "end",
    "count",
    "until",
    "rrule",
    "priority",
    "tps_cap",
    "validity_hours",
)


class FormProblem(ValueError):
    """A field that is not even the right shape (a number that is not a number): a catalog key."""

    def __init__(self, field: str, key: str, **params: object) -> None:
        super().__init__(key)
        self.field = field
        self.key = key
        self.params = params


@dataclass(slots=True)
class CampaignForm:
    """The form's values as strings (what is shown again when the form comes back with errors)."""

    name: str = ""
    message_type: str = "marketing"
    sender: str = ""
    text: str = ""
    on_missing: str = "skip"
    group_ids: list[str] = field(default_factory=list)
    numbers: str = ""
    schedule_mode: str = "now"
    at: str = ""
    time_zone: str = DEFAULT_TIME_ZONE
    start: str = ""
    freq: str = "weekly"
    interval: str = "1"
    weekdays: list[str] = field(default_factory=list)
    month_day: str = "1"
    end: str = "count"
    count: str = "4"
    until: str = ""
    rrule: str = ""
    priority: str = "normal"
    tps_cap: str = ""
    validity_hours: str = ""

    @classmethod
    def from_fields(cls, get: dict[str, str], *, group_ids: list[str], weekdays: list[str]) -> CampaignForm:
        values = {k: get[k] for k in TEXT_FIELDS if k in get}
        form = cls(
            **values,
            group_ids=list(dict.fromkeys(group_ids)),
            weekdays=[d for d in WEEKDAYS if d in weekdays],
        )
        form.text = form.text.replace("\r\n", "\n")
        form.time_zone = form.time_zone.strip() or DEFAULT_TIME_ZONE
        return form


def _whole(value: str, form_field: str) -> int | None:
    """An optional whole number field ('' → None)."""
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise FormProblem(form_field, "campaigns.form.not_a_number") from None


def _required_whole(value: str, form_field: str) -> int:
    number = _whole(value, form_field)
    if number is None:
        raise FormProblem(form_field, "campaigns.form.number_required")
    return number


def build_rrule(form: CampaignForm) -> str:
    """The RRULE of the recurrence fields (or the raw RRULE typed by an expert, as typed).

    `to_rrule` checks ranges and combinations (INTERVAL 1..366, COUNT 1..1000, BYMONTHDAY ±31) and raises
    the API's own `invalid_rrule` error."""
    if form.rrule.strip():
        return form.rrule.strip()
    if form.freq not in FREQUENCIES:
        raise FormProblem("freq", "campaigns.form.choose")
    rec = Recurrence(freq=form.freq, interval=_required_whole(form.interval, "interval"))
    if form.freq == "weekly":
        if not form.weekdays:
            raise FormProblem("weekdays", "campaigns.form.weekdays_required")
        rec = Recurrence(
            freq=rec.freq, interval=rec.interval, by_weekday=tuple(WEEKDAYS.index(d) for d in form.weekdays)
        )
    elif form.freq == "monthly":
        rec = Recurrence(
            freq=rec.freq, interval=rec.interval, by_month_day=(_required_whole(form.month_day, "month_day"),)
        )
    if form.end == "count":
        rec = Recurrence(
            freq=rec.freq,
            interval=rec.interval,
            by_weekday=rec.by_weekday,
            by_month_day=rec.by_month_day,
            count=_required_whole(form.count, "count"),
        )
    elif form.end == "until":
        try:
            until = date.fromisoformat(form.until.strip())
        except ValueError:
            raise FormProblem("until", "campaigns.form.date_required") from None
        rec = Recurrence(
            freq=rec.freq,
            interval=rec.interval,
            by_weekday=rec.by_weekday,
            by_month_day=rec.by_month_day,
            until=until,
        )
    return to_rrule(rec)


def schedule_of(form: CampaignForm) -> dict[str, Any]:
    """The API's `schedule` object of the form."""
    if form.schedule_mode == "at":
        return {"mode": "at", "at": form.at.strip()}
    if form.schedule_mode == "recurring":
        return {"mode": "recurring", "start": form.start.strip(), "rrule": build_rrule(form)}
    return {"mode": "now"}


def campaign_input(form: CampaignForm) -> CampaignInput:
    """What the service gets; FormProblem for a field that is not even the right shape."""
    return CampaignInput(
        name=form.name,
        text=form.text,
        message_type=form.message_type,
        sender=form.sender.strip() or None,
        group_ids=form.group_ids,
        numbers=split_recipients(form.numbers),
        on_missing=form.on_missing,
        schedule=schedule_of(form),
        time_zone=form.time_zone,
        priority=form.priority,
        tps_cap=_whole(form.tps_cap, "tps_cap"),
        validity_hours=_whole(form.validity_hours, "validity_hours"),
    )


# an error's API field → the form field it is shown next to
_FIELD_OF = {
    "schedule.at": "at",
    "schedule.start": "start",
    "schedule.mode": "schedule_mode",
    "time_zone": "time_zone",
    "body": "form",
}


def form_field_for(error_field: str | None, form: CampaignForm) -> str:
    """Where a domain error goes: `numbers[3]` → the numbers box, `schedule.rrule` → the recurrence fields
    (or the raw RRULE box when one was typed), `fields.订单号` → the text."""
    if not error_field:
        return "form"
    if error_field in _FIELD_OF:
        return _FIELD_OF[error_field]
    if error_field == "schedule.rrule":
        return "rrule" if form.rrule.strip() else "recurrence"
    base = error_field.split("[", 1)[0]
    if base in ("numbers", "group_ids"):
        return base
    if base.startswith("fields."):
        return "text"
    if base in {
        "name",
        "message_type",
        "sender",
        "text",
        "on_missing",
        "priority",
        "tps_cap",
        "validity_hours",
    }:
        return base
    return "form"
