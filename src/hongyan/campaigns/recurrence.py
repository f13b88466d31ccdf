"""Recurring campaign schedules: a small RFC 5545 RRULE subset, expanded in the campaign's time zone.

Supported parts: FREQ (DAILY, WEEKLY, MONTHLY), INTERVAL, BYDAY (MO..SU, no numeric prefixes), BYMONTHDAY,
COUNT, UNTIL. Expansion is dateutil.rrule on naive local wall-clock times, then each occurrence is placed
in the zone:

- the wall-clock time is kept across DST changes (09:00 stays 09:00 local, so the UTC instant moves);
- a local time that does not exist (spring-forward gap, 02:30 in America/New_York on the DST day) fires at
  the same UTC offset as before the gap, i.e. shifted forward by the gap (03:30);
- an ambiguous local time (fall-back) fires at its first instance (fold=0, the earlier UTC instant);
- BYMONTHDAY=31 skips months without a 31st (RFC 5545 §3.3.10: invalid dates are ignored), BYMONTHDAY=-1
  is the last day of every month; MONTHLY without BYMONTHDAY (or BYDAY) repeats the start date's day of
  month, so a start on the 31st skips short months — use BYMONTHDAY=-1 for "last day of the month".

The start (first occurrence) sets the time of day. RFC 5545 leaves a start that does not match the rule
undefined; here, as in dateutil, the occurrences are the rule's dates on or after the start's date (a start
on a Tuesday with BYDAY=MO first fires the following Monday) and COUNT counts those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as du

from hongyan.core.errors import Unprocessable

FREQS = {"daily": du.DAILY, "weekly": du.WEEKLY, "monthly": du.MONTHLY}
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # index = datetime.weekday()
PARTS = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL")
OTHER_RFC_PARTS = ("BYSECOND", "BYMINUTE", "BYHOUR", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST")
MAX_INTERVAL = 366
MAX_COUNT = 1000
# an occurrence further than this past `after` is not looked for (the rule counts as exhausted): bounds the
# work for rules that never fire again (MONTHLY;INTERVAL=12;BYMONTHDAY=30 started in February)
HORIZON_YEARS = 10
HORIZON_PERIODS = 50

_UNTIL = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})Z?)?")
_NUMBERED_DAY = re.compile(r"[+-]?\d+(MO|TU|WE|TH|FR|SA|SU)")


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A parsed RRULE. Build it with parse_rrule (which sorts and de-duplicates the BY lists)."""

    freq: str  # "daily" | "weekly" | "monthly"
    interval: int = 1  # 1..366
    by_weekday: tuple[int, ...] = ()  # 0=Mon..6=Sun (weekly; optional for others)
    by_month_day: tuple[int, ...] = ()  # 1..31 or -31..-1 (-1 = last day of month) (monthly)
    count: int | None = None  # total occurrences including the first (1..1000)
    until: date | None = None  # last local date (inclusive)


def _bad(message: str, field: str) -> Unprocessable:
    return Unprocessable("invalid_rrule", message, field=field)


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _whole(part: str, value: str, field: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,6}", value):
        raise _bad(f"{part} must be a whole number, not {_show(value)}.", field)
    return int(value)


def parse_rrule(text: str, *, field: str = "schedule.rrule") -> Recurrence:
    """An RRULE (with or without "RRULE:", any case) as a Recurrence; anything outside the subset or out of
    range raises Unprocessable("invalid_rrule") with a message naming the part."""
    if not isinstance(text, str):
        raise _bad("The rule must be text such as FREQ=WEEKLY;BYDAY=MO,WE;COUNT=8.", field)
    body = text.strip()
    if body[:6].upper() == "RRULE:":
        body = body[6:]
    if not body.strip():
        raise _bad("The rule is empty; start with FREQ=DAILY, FREQ=WEEKLY or FREQ=MONTHLY.", field)
    values: dict[str, str] = {}
    for item in body.split(";"):
        if not item.strip():
            continue  # tolerate "FREQ=DAILY;" and ";;"
        name, sep, value = item.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not sep or not name:
            raise _bad(f"{_show(item.strip())} is not NAME=VALUE.", field)
        if name in OTHER_RFC_PARTS:
            raise _bad(f"{name} is not supported (supported parts: {', '.join(PARTS)}).", field)
        if name not in PARTS:
            raise _bad(f"Unknown rule part {_show(name)} (supported parts: {', '.join(PARTS)}).", field)
        if name in values:
            raise _bad(f"{name} is given twice.", field)
        if not value:
            raise _bad(f"{name} has no value.", field)
        values[name] = value
    if "FREQ" not in values:
        raise _bad("FREQ is required (DAILY, WEEKLY or MONTHLY).", field)
    freq = values["FREQ"]
    if freq in ("SECONDLY", "MINUTELY"):
        raise _bad(
            f"FREQ={freq} would send more often than once per hour; use DAILY, WEEKLY or MONTHLY.", field
        )
    if freq.lower() not in FREQS:
        raise _bad(f"FREQ={_show(freq)} is not supported; use DAILY, WEEKLY or MONTHLY.", field)
    rec = Recurrence(freq=freq.lower())
    if "INTERVAL" in values:
        rec = replace(rec, interval=_whole("INTERVAL", values["INTERVAL"], field))
    if "BYDAY" in values:
        days: set[int] = set()
        for day in values["BYDAY"].split(","):
            day = day.strip()
            if _NUMBERED_DAY.fullmatch(day):
                raise _bad(
                    f"BYDAY={day}: numbered weekdays (the 1st Monday, the last Friday) are not supported; "
                    "use plain MO..SU.",
                    field,
                )
            if day not in WEEKDAYS:
                raise _bad(
                    f"BYDAY has {_show(day)}; use MO, TU, WE, TH, FR, SA, SU separated by commas.", field
                )
            days.add(WEEKDAYS.index(day))
        rec = replace(rec, by_weekday=tuple(sorted(days)))
    if "BYMONTHDAY" in values:
        month_days = {_whole("BYMONTHDAY", d.strip(), field) for d in values["BYMONTHDAY"].split(",")}
        rec = replace(rec, by_month_day=tuple(sorted(month_days)))
    if "COUNT" in values:
        rec = replace(rec, count=_whole("COUNT", values["COUNT"], field))
    if "UNTIL" in values:
        rec = replace(rec, until=_parse_until(values["UNTIL"], field))
    return _checked(rec, field)


def _parse_until(value: str, field: str) -> date:
    """YYYYMMDD, or YYYYMMDDTHHMMSS[Z] of which only the date is kept: UNTIL is read as the last local date
    (campaigns repeat whole days at the start's time, so the time of day carries no meaning here)."""
    match = _UNTIL.fullmatch(value)
    try:
        if match is None:
            raise ValueError
        year, month, day = (int(g) for g in match.groups()[:3])
        if match.group(4) is not None:
            time(*(int(g) for g in match.groups()[3:]))  # validates the time part
        return date(year, month, day)
    except ValueError:
        raise _bad(f"UNTIL={_show(value)} is not a date (YYYYMMDD or YYYYMMDDTHHMMSSZ).", field) from None


def _checked(rec: Recurrence, field: str = "schedule.rrule") -> Recurrence:
    """Ranges and combinations, also for a Recurrence built by hand (bad values are a 422, never a 500)."""
    if rec.freq not in FREQS:
        raise _bad(
            f"FREQ={_show(str(rec.freq).upper())} is not supported; use DAILY, WEEKLY or MONTHLY.", field
        )
    if not 1 <= rec.interval <= MAX_INTERVAL:
        raise _bad(f"INTERVAL must be from 1 to {MAX_INTERVAL}, not {rec.interval}.", field)
    if any(not 0 <= d <= 6 for d in rec.by_weekday):
        raise _bad("BYDAY weekdays are 0 (Monday) to 6 (Sunday).", field)
    bad_days = [d for d in rec.by_month_day if not (1 <= d <= 31 or -31 <= d <= -1)]
    if bad_days:
        raise _bad(f"BYMONTHDAY must be 1 to 31 or -31 to -1 (-1: the last day), not {bad_days[0]}.", field)
    if rec.by_month_day and rec.freq == "weekly":
        raise _bad("BYMONTHDAY cannot be used with FREQ=WEEKLY (RFC 5545 §3.3.10).", field)
    if rec.count is not None and not 1 <= rec.count <= MAX_COUNT:
        raise _bad(f"COUNT must be from 1 to {MAX_COUNT}, not {rec.count}.", field)
    if rec.count is not None and rec.until is not None:
        raise _bad("COUNT and UNTIL cannot be used together (RFC 5545 §3.3.10); choose one.", field)
    return rec


def to_rrule(rec: Recurrence) -> str:
    """Canonical text (fixed part order, INTERVAL=1 left out, sorted BY lists) that parse_rrule reads back."""
    _checked(rec)
    parts = [f"FREQ={rec.freq.upper()}"]
    if rec.interval != 1:
        parts.append(f"INTERVAL={rec.interval}")
    if rec.by_weekday:
        parts.append("BYDAY=" + ",".join(WEEKDAYS[d] for d in sorted(set(rec.by_weekday))))
    if rec.by_month_day:
        parts.append("BYMONTHDAY=" + ",".join(str(d) for d in sorted(set(rec.by_month_day))))
    if rec.count is not None:
        parts.append(f"COUNT={rec.count}")
    if rec.until is not None:
        parts.append(f"UNTIL={rec.until:%Y%m%d}")
    return ";".join(parts)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise Unprocessable(
            "invalid_time_zone",
            f"{_show(str(tz))} is not an IANA time zone such as Asia/Shanghai.",
            field="time_zone",
        ) from None


def local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in `zone` as aware UTC: fold=0 gives the first instance of an ambiguous time
    and moves a non-existent one forward by the gap (zoneinfo uses the offset from before the transition)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _months(a: datetime, b: datetime) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _rule(rec: Recurrence, start: datetime, cursor: datetime, horizon: datetime) -> du.rrule:
    """The dateutil rule, its start moved forward by whole intervals to just before `cursor` when COUNT does
    not need the occurrences in between (so a rule queried years after its start costs a few steps)."""
    by_weekday = rec.by_weekday
    by_month_day = rec.by_month_day
    # make dateutil's implicit defaults (taken from dtstart) explicit before moving dtstart
    if rec.freq == "weekly" and not by_weekday:
        by_weekday = (start.weekday(),)
    if rec.freq == "monthly" and not by_weekday and not by_month_day:
        by_month_day = (start.day,)
    dtstart = start
    if rec.count is None and cursor > start:
        if rec.freq == "monthly":
            periods = _months(start, cursor) // rec.interval - 1
            if periods > 0:
                month = start.month - 1 + periods * rec.interval
                dtstart = datetime.combine(date(start.year + month // 12, month % 12 + 1, 1), start.time())
        else:
            step = rec.interval * (7 if rec.freq == "weekly" else 1)
            periods = (cursor.date() - start.date()).days // step - 1
            if periods > 0:
                dtstart = start + timedelta(days=periods * step)
    until = horizon
    if rec.until is not None:
        until = min(until, datetime.combine(rec.until, time.max))
    return du.rrule(
        FREQS[rec.freq],
        dtstart=dtstart,
        interval=rec.interval,
        byweekday=by_weekday or None,
        bymonthday=by_month_day or None,
        until=until,
        cache=False,
    )


def occurrences(
    rec: Recurrence, *, start_local: datetime, tz: str, after: datetime, limit: int
) -> list[datetime]:
    """The next `limit` occurrences strictly after `after` (aware UTC), as aware UTC datetimes, for previews
    and the scheduler. `start_local` is the naive local wall-clock first occurrence in `tz` (its time of day
    is every occurrence's); COUNT counts from it, including occurrences before `after`."""
    _checked(rec)
    if start_local.tzinfo is not None:
        raise ValueError("start_local must be a naive local wall-clock time")
    if after.tzinfo is None:
        raise ValueError("after must be an aware datetime")
    if limit <= 0:
        return []
    zone = _zone(tz)
    start = start_local.replace(microsecond=0)
    # two days of margin: occurrences are at least a day apart, and an offset change never exceeds a day,
    # so no occurrence later than `after` in UTC lies before this local cursor
    cursor = max(after.astimezone(zone).replace(tzinfo=None) - timedelta(days=2), start)
    months = HORIZON_PERIODS * rec.interval if rec.freq == "monthly" else 0
    days = HORIZON_PERIODS * rec.interval * (7 if rec.freq == "weekly" else 1) if rec.freq != "monthly" else 0
    horizon_date = max(
        cursor.date() + timedelta(days=max(days, 366 * HORIZON_YEARS)), _add_months(cursor.date(), months)
    )
    horizon = datetime.combine(min(horizon_date, date(9999, 12, 31)), time.max)
    rule = _rule(rec, start, cursor, horizon)
    found: list[datetime] = []
    if _never_fires(rec, start):
        return found
    seen = 0
    local_iter = iter(rule) if rec.count is not None else rule.xafter(cursor, inc=True)
    for local in local_iter:
        seen += 1
        if rec.count is not None and seen > rec.count:
            break
        at = local_to_utc(local, zone)
        # `found` stays increasing even where a zone skipped a whole day (Pacific/Apia, 2011-12-30)
        if at > after and (not found or at > found[-1]):
            found.append(at)
            if len(found) >= limit:
                break
    return found


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: 29 in leap years


def _never_fires(rec: Recurrence, start: datetime) -> bool:
    """Rules that cannot match any date from this start. dateutil looks for a first match until the year 9999
    (UNTIL is only checked against matches), so these are answered here instead of costing a second."""
    if rec.freq == "daily" and rec.interval % 7 == 0 and rec.by_weekday:
        return start.weekday() not in rec.by_weekday  # every step lands on the start's weekday
    if rec.freq == "monthly" and rec.by_month_day:
        visited = {(start.month - 1 + k * rec.interval) % 12 for k in range(12)}
        longest = max(_MONTH_DAYS[m] for m in visited)
        return all(abs(d) > longest for d in rec.by_month_day)
    return False


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year = day.year + month // 12
    return date(9999, 12, 31) if year > 9999 else date(year, month % 12 + 1, 1)


def next_occurrence(rec: Recurrence, *, start_local: datetime, tz: str, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after` (aware UTC) as aware UTC, or None when the rule is exhausted
    (COUNT reached, past UNTIL, or nothing within max(10 years, 50 intervals) of `after`)."""
    found = occurrences(rec, start_local=start_local, tz=tz, after=after, limit=1)
    return found[0] if found else None
