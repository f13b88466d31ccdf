"""Quiet hours: no marketing message reaches a recipient during the quiet window of their local time.

The window is wall-clock time in the recipient's zone(s): a contact's own zone when set, else the zones of
the number's prefix (phonenumbers' metadata), else a default zone. A number whose prefix covers several
zones (+1 208…: America/Boise and America/Los_Angeles) is quiet when it is quiet in ANY of them, so a
message is only sent when it is daytime everywhere the recipient may be. Quiet hours defer, never drop:
`next_allowed` says when the message may go.

DST: the window is compared with the local wall clock, so it keeps its local times across DST changes; a
window end inside a spring-forward gap (02:30 on the DST day) ends at the first instant after the gap, and
after a fall-back the repeated hour is judged by its wall-clock time each time it occurs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, NumberParseException
from phonenumbers import parse as parse_phone
from phonenumbers import timezone as phone_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from hongyan.core.errors import Unprocessable

DEFAULT_ZONE = "Asia/Shanghai"
PACKED_MAX_CHARS = 64  # message.time_zone is String(64)
SEARCH_HOURS = 48  # how far next_allowed looks for an instant that is daytime in every zone
OFF = ("off", "none", "")
_WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*[-–—]\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """Local times: quiet from `start` (inclusive) to `end` (exclusive); start > end spans midnight."""

    start: time  # local time the window opens (e.g. 21:00); inclusive
    end: time  # local time it closes (e.g. 08:00); exclusive


def parse_window(text: str | None, *, field: str = "quiet_hours") -> QuietWindow | None:
    """ "21:00-08:00" (en/em dash and spaces allowed, H:MM accepted) as a window; "off", "none", "" or None:
    no quiet hours. Anything else raises Unprocessable("invalid_quiet_hours")."""
    if text is None or text.strip().lower() in OFF:
        return None
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise Unprocessable(
            "invalid_quiet_hours",
            f"{text.strip()[:40]!r} is not a quiet window: write start-end in 24-hour local time, such as "
            "21:00-08:00, or off.",
            field=field,
        )
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise Unprocessable(
            "invalid_quiet_hours",
            "Quiet hours use times from 00:00 to 23:59, such as 21:00-08:00.",
            field=field,
        )
    if (h1, m1) == (h2, m2):
        raise Unprocessable(
            "invalid_quiet_hours",
            "The quiet window starts and ends at the same time; give two different times, or off.",
            field=field,
        )
    return QuietWindow(time(h1, m1), time(h2, m2))


def format_window(w: QuietWindow | None) -> str:
    """The canonical text parse_window reads back: "21:00-08:00", or "off"."""
    return "off" if w is None else f"{w.start:%H:%M}-{w.end:%H:%M}"


# -- the recipient's zones -------------------------------------------------------------------------------
def zones_for_number(e164: str, override: str | None = None) -> tuple[str, ...]:
    """The zones the recipient may be in: the contact's own zone when set, else all zones of the number's
    prefix (as contacts.derived_time_zone reads them); empty when unknown. An override that is not an IANA
    zone is ignored (contacts validate it on save; an old row should not stop a campaign)."""
    if override and _load(override) is not None:
        return (override,)
    whole_country = _country_zones(e164)
    if whole_country is not None:
        return whole_country
    try:
        zones = phone_timezone.time_zones_for_number(parse_phone(e164))
    except NumberParseException:
        return ()
    return tuple(dict.fromkeys(z for z in zones if z != "Etc/Unknown"))


def _country_zones(e164: str) -> tuple[str, ...] | None:
    """Fast path (a campaign asks for every recipient): a country whose every prefix has the same zones, as
    China's +86 (Asia/Shanghai), needs no parsing of the number. None when the prefix decides."""
    digits = e164[1:4] if e164.startswith("+") else ""
    for size in (1, 2, 3):  # ITU calling codes are prefix-free: at most one of these is a country
        code = digits[:size]
        if code and int(code) in COUNTRY_CODE_TO_REGION_CODE:
            return _single_zone_set(code)
    return None


@lru_cache(maxsize=512)
def _single_zone_set(code: str) -> tuple[str, ...] | None:
    sets = {tuple(z for z in zones if z != "Etc/Unknown") for prefix, zones in TIMEZONE_DATA.items()
            if prefix.startswith(code)}
    return sets.pop() if len(sets) == 1 and all(sets) else None


@lru_cache(maxsize=1024)
def _load(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@lru_cache(maxsize=1024)
def _offset_range(name: str) -> tuple[timedelta, timedelta]:
    zone = _load(name)
    if zone is None:
        return timedelta(0), timedelta(0)
    offsets = [
        datetime(2025, month, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset() or timedelta(0)
        for month in (1, 7)
    ]
    return min(offsets), max(offsets)


def pack_zones(zones: tuple[str, ...]) -> str | None:
    """Zones as one space-separated text of at most 64 characters (message.time_zone), whole names only;
    None when there are none. When they do not all fit, the westernmost and easternmost zones go first —
    together they decide whether a moment is daytime everywhere in between — then the others in order."""
    names = list(dict.fromkeys(z for z in zones if z and " " not in z))
    if len(" ".join(names)) > PACKED_MAX_CHARS:
        west = min(names, key=lambda z: _offset_range(z)[0])
        east = max(names, key=lambda z: _offset_range(z)[1])
        names = list(dict.fromkeys([west, east, *names]))
    packed: list[str] = []
    for name in names:
        if len(" ".join([*packed, name])) <= PACKED_MAX_CHARS:
            packed.append(name)
    return " ".join(packed) or None


def unpack_zones(text: str | None) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def _zones(names: tuple[str, ...], default_zone: str) -> list[ZoneInfo]:
    """The loadable zones (a misspelt contact zone is ignored); the default zone when none is left."""
    zones = [z for z in (_load(n) for n in dict.fromkeys(names)) if z is not None]
    if not zones:
        fallback = _load(default_zone)
        if fallback is None:
            raise ValueError(f"default zone {default_zone!r} is not an IANA time zone")
        zones = [fallback]
    return zones


# -- quiet or not ------------------------------------------------------------------------------------------
def _quiet_in(w: QuietWindow, zone: ZoneInfo, at: datetime) -> bool:
    local = at.astimezone(zone).time()
    if w.start < w.end:
        return w.start <= local < w.end
    return local >= w.start or local < w.end


def _aware(at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError("quiet hours need an aware datetime (UTC inside)")


def is_quiet(
    w: QuietWindow | None, zones: tuple[str, ...], at: datetime, *, default_zone: str = DEFAULT_ZONE
) -> bool:
    """True if `at` (aware) is inside the window in any of the recipient's zones (the default zone when
    none is known). No window: never quiet."""
    _aware(at)
    if w is None:
        return False
    return any(_quiet_in(w, zone, at) for zone in _zones(zones, default_zone))


def _transitions(zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """UTC instants in (after, until] where the zone's offset changes (DST), to the second. Sampled hourly
    (zones change offset at most a few times a year) and bisected."""
    found: list[datetime] = []
    step = timedelta(hours=1)
    a, offset_a = after, after.astimezone(zone).utcoffset()
    while a < until:
        b = min(a + step, until)
        offset_b = b.astimezone(zone).utcoffset()
        if offset_b != offset_a:
            lo, hi = a, b  # offset(lo) == offset_a, offset(hi) == offset_b
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                if mid <= lo:
                    break
                if mid.astimezone(zone).utcoffset() == offset_a:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        a, offset_a = b, offset_b
    return found


def _exits(w: QuietWindow, zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Every instant in (after, until] at which the zone can leave the window: the window's end on each local
    day (both instances of an ambiguous time) and the zone's offset changes (a jump can leave the window:
    a gap swallowing the end, or a fall-back to before the start). The window is only ever left there."""
    instants = set(_transitions(zone, after, until))
    first: date = after.astimezone(zone).date() - timedelta(days=1)
    last: date = until.astimezone(zone).date() + timedelta(days=1)
    day = first
    while day <= last:
        local = datetime.combine(day, w.end)
        for fold in (0, 1):
            at = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if at.astimezone(zone).replace(tzinfo=None) == local and after < at <= until:  # exists locally
                instants.add(at)
        day += timedelta(days=1)
    return sorted(instants)


def next_allowed(
    w: QuietWindow | None, zones: tuple[str, ...], at: datetime, *, default_zone: str = DEFAULT_ZONE
) -> datetime:
    """`at` itself when not quiet; else the earliest instant after it that is outside the window in every
    zone (exact: the window end or DST jump that opens it). When the zones leave no such instant within 48 h
    (zones far apart and a long window), the first zone alone decides: the end of its window — the
    compromise is that the other zones may still be quiet then."""
    _aware(at)
    if w is None:
        return at
    loaded = _zones(zones, default_zone)
    if not any(_quiet_in(w, zone, at) for zone in loaded):
        return at
    at_utc = at.astimezone(UTC)
    until = at_utc + timedelta(hours=SEARCH_HOURS)
    candidates = sorted({c for zone in loaded for c in _exits(w, zone, at_utc, until)})
    for candidate in candidates:
        if not any(_quiet_in(w, zone, candidate) for zone in loaded):
            return candidate
    first = loaded[0]
    if not _quiet_in(w, first, at_utc):
        return at
    return next(c for c in _exits(w, first, at_utc, until) if not _quiet_in(w, first, c))
