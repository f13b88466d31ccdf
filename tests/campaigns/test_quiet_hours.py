"""Quiet hours: window parsing, recipient zones from the number or the contact, exact boundaries in several
zones and across DST days, several zones at once, and a property test that next_allowed skips nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.campaigns.quiet_hours import (
    QuietWindow,
    format_window,
    is_quiet,
    next_allowed,
    pack_zones,
    parse_window,
    unpack_zones,
    zones_for_number,
)
from hongyan.core.errors import Unprocessable

NIGHT = QuietWindow(time(21), time(8))


def local(tz: str, text: str, fold: int = 0) -> datetime:
    """An aware UTC instant from a local wall-clock time in `tz`."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz), fold=fold).astimezone(UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- parsing -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("21:00-08:00", NIGHT),
        ("21:00–08:00", NIGHT),  # en dash
        ("21:00—08:00", NIGHT),  # em dash
        (" 21:00 - 8:00 ", NIGHT),
        ("9:30-9:45", QuietWindow(time(9, 30), time(9, 45))),
        ("12:00-14:00", QuietWindow(time(12), time(14))),
        ("00:00-23:59", QuietWindow(time(0), time(23, 59))),
        ("off", None),
        ("OFF", None),
        ("none", None),
        ("", None),
        ("  ", None),
        (None, None),
    ],
)
def test_parse_window(text: str | None, window: QuietWindow | None) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("21:00", "is not a quiet window"),
        ("21-08", "is not a quiet window"),
        ("21:00 to 08:00", "is not a quiet window"),
        ("21:0-08:00", "is not a quiet window"),
        ("21:00-08:00:00", "is not a quiet window"),
        ("24:00-08:00", "from 00:00 to 23:59"),
        ("21:00-08:60", "from 00:00 to 23:59"),
        ("08:00-08:00", "starts and ends at the same time"),
        ("8:00-08:00", "starts and ends at the same time"),
        ("x" * 500, "is not a quiet window"),
    ],
)
def test_parse_window_errors(text: str, message: str) -> None:
    with pytest.raises(Unprocessable) as err:
        parse_window(text, field="settings.quiet_hours")
    assert (err.value.code, err.value.field, err.value.status_code) == (
        "invalid_quiet_hours",
        "settings.quiet_hours",
        422,
    )
    assert message in err.value.message
    assert len(err.value.message) < 200


def test_format_round_trips() -> None:
    assert format_window(NIGHT) == "21:00-08:00"
    assert format_window(None) == "off"
    assert format_window(parse_window("9:05–7:00")) == "09:05-07:00"
    for text in ("21:00-08:00", "12:00-14:00", "off"):
        assert format_window(parse_window(text)) == text


# -- zones ---------------------------------------------------------------------------------------------------
def test_zones_for_number() -> None:
    assert zones_for_number("+8613800138000") == ("Asia/Shanghai",)
    assert zones_for_number("+4915112345678") == ("Europe/Berlin",)
    # Idaho's area code spans two zones
    assert zones_for_number("+12085551234") == ("America/Boise", "America/Los_Angeles")
    assert zones_for_number("+15555550100") == ()  # Etc/Unknown is dropped
    assert zones_for_number("not a number") == ()


def test_override_beats_the_number() -> None:
    assert zones_for_number("+8613800138000", "Europe/London") == ("Europe/London",)
    assert zones_for_number("+12085551234", "Asia/Tokyo") == ("Asia/Tokyo",)
    # a broken override is ignored rather than silencing quiet hours
    assert zones_for_number("+8613800138000", "Mars/Olympus") == ("Asia/Shanghai",)
    assert zones_for_number("+8613800138000", "") == ("Asia/Shanghai",)


def test_pack_and_unpack() -> None:
    assert pack_zones(()) is None
    assert unpack_zones(None) == () and unpack_zones("") == ()
    zones = ("America/Boise", "America/Los_Angeles")
    assert pack_zones(zones) == "America/Boise America/Los_Angeles"
    assert unpack_zones(pack_zones(zones)) == zones
    # a toll-free +1 number maps to 40-odd zones: whole names, ≤ 64 characters, the extremes kept
    many = zones_for_number("+18005550100")
    assert len(many) > 20
    packed = pack_zones(many)
    assert packed is not None and len(packed) <= 64
    kept = unpack_zones(packed)
    assert set(kept) <= set(many) and len(kept) >= 2
    assert "Pacific/Pago_Pago" in kept and "Pacific/Guam" in kept  # UTC-11 and UTC+10


# -- boundaries --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tz", "day"),
    [
        ("Asia/Shanghai", "2024-06-12"),
        ("America/New_York", "2024-06-12"),
        ("Europe/London", "2024-06-12"),
        ("America/New_York", "2024-03-10"),  # spring forward at 02:00
        ("America/New_York", "2024-11-03"),  # fall back at 02:00
        ("Europe/London", "2024-03-31"),  # spring forward at 01:00
        ("Europe/London", "2024-10-27"),  # fall back at 02:00
    ],
)
def test_boundaries(tz: str, day: str) -> None:
    zones = (tz,)
    assert is_quiet(NIGHT, zones, local(tz, f"{day} 07:59:59"))
    assert is_quiet(NIGHT, zones, local(tz, f"{day} 07:59:59.999999"))
    assert not is_quiet(NIGHT, zones, local(tz, f"{day} 08:00:00"))
    assert not is_quiet(NIGHT, zones, local(tz, f"{day} 20:59:59"))
    assert is_quiet(NIGHT, zones, local(tz, f"{day} 21:00:00"))
    assert is_quiet(NIGHT, zones, local(tz, f"{day} 00:00:00"))
    eight = local(tz, f"{day} 08:00")
    assert next_allowed(NIGHT, zones, local(tz, f"{day} 00:30")) == eight
    assert next_allowed(NIGHT, zones, local(tz, f"{day} 07:59:59")) == eight
    assert next_allowed(NIGHT, zones, eight) == eight
    # from 21:00 the evening before (across the DST change on the change days)
    evening = local(tz, f"{date.fromisoformat(day) - timedelta(days=1)} 21:00")
    assert is_quiet(NIGHT, zones, evening)
    assert next_allowed(NIGHT, zones, evening) == eight


def test_dst_days_move_the_utc_instant() -> None:
    ny = ("America/New_York",)
    assert next_allowed(NIGHT, ny, utc(2024, 3, 10, 3)) == utc(2024, 3, 10, 12)  # 08:00 EDT
    assert next_allowed(NIGHT, ny, utc(2024, 11, 3, 3)) == utc(2024, 11, 3, 13)  # 08:00 EST
    london = ("Europe/London",)
    assert next_allowed(NIGHT, london, utc(2024, 3, 30, 22)) == utc(2024, 3, 31, 7)  # 08:00 BST
    assert next_allowed(NIGHT, london, utc(2024, 10, 26, 22)) == utc(2024, 10, 27, 8)  # 08:00 GMT


def test_a_window_end_in_the_spring_forward_gap_ends_when_the_gap_does() -> None:
    late = QuietWindow(time(22), time(2, 30))  # 02:30 does not exist in New York on 2024-03-10
    ny = ("America/New_York",)
    at = local("America/New_York", "2024-03-10 01:00")  # 06:00 UTC
    assert is_quiet(late, ny, at)
    assert next_allowed(late, ny, at) == utc(2024, 3, 10, 7)  # 03:00 EDT, the first instant after the gap
    assert not is_quiet(late, ny, utc(2024, 3, 10, 7))
    assert is_quiet(late, ny, utc(2024, 3, 10, 6, 59, 59))


def test_a_fall_back_can_leave_the_window_early() -> None:
    # quiet from 01:30: at 01:45 EDT it is quiet, then clocks go back to 01:00 EST, which is outside it again
    early = QuietWindow(time(1, 30), time(8))
    ny = ("America/New_York",)
    at = local("America/New_York", "2024-11-03 01:45")  # 05:45 UTC
    assert is_quiet(early, ny, at)
    assert next_allowed(early, ny, at) == utc(2024, 11, 3, 6)  # 01:00 EST
    assert next_allowed(early, ny, local("America/New_York", "2024-11-03 01:30", fold=1)) == utc(
        2024, 11, 3, 13
    )


def test_window_within_a_day() -> None:
    lunch = QuietWindow(time(12), time(14))
    sh = ("Asia/Shanghai",)
    assert not is_quiet(lunch, sh, local("Asia/Shanghai", "2024-06-12 11:59:59"))
    assert is_quiet(lunch, sh, local("Asia/Shanghai", "2024-06-12 12:00"))
    assert is_quiet(lunch, sh, local("Asia/Shanghai", "2024-06-12 13:59:59"))
    assert not is_quiet(lunch, sh, local("Asia/Shanghai", "2024-06-12 14:00"))
    assert not is_quiet(lunch, sh, local("Asia/Shanghai", "2024-06-12 23:00"))
    at = local("Asia/Shanghai", "2024-06-12 12:10")
    assert next_allowed(lunch, sh, at) == local("Asia/Shanghai", "2024-06-12 14:00")


def test_no_window_and_unknown_zones() -> None:
    assert not is_quiet(None, ("Asia/Shanghai",), utc(2024, 1, 1, 15))
    assert next_allowed(None, (), utc(2024, 1, 1, 15)) == utc(2024, 1, 1, 15)
    # unknown zones: the default zone (Asia/Shanghai unless given)
    at = utc(2024, 1, 1, 15)  # 23:00 in Shanghai, 10:00 in New York
    assert is_quiet(NIGHT, (), at)
    assert not is_quiet(NIGHT, (), at, default_zone="America/New_York")
    assert is_quiet(NIGHT, ("Mars/Olympus",), at)
    assert next_allowed(NIGHT, (), at) == utc(2024, 1, 2, 0)  # 08:00 in Shanghai
    assert next_allowed(NIGHT, (), at, default_zone="America/New_York") == at
    with pytest.raises(ValueError):
        is_quiet(NIGHT, (), datetime(2024, 1, 1, 15))


def test_several_zones_quiet_if_quiet_in_any() -> None:
    both = ("Asia/Shanghai", "Europe/Berlin")  # in January daytime overlaps 07:00-13:00 UTC
    assert is_quiet(NIGHT, both, utc(2024, 1, 10, 2))  # 10:00 Shanghai, 03:00 Berlin
    assert next_allowed(NIGHT, both, utc(2024, 1, 10, 2)) == utc(2024, 1, 10, 7)
    assert next_allowed(NIGHT, both, utc(2024, 1, 10, 13)) == utc(2024, 1, 11, 7)
    assert not is_quiet(NIGHT, both, utc(2024, 1, 10, 12, 59))
    idaho = zones_for_number("+12085551234")  # Boise UTC-7, Los Angeles UTC-8 in January
    assert next_allowed(NIGHT, idaho, utc(2024, 1, 10, 15, 30)) == utc(2024, 1, 10, 16)
    assert next_allowed(NIGHT, idaho, utc(2024, 1, 10, 4, 30)) == utc(2024, 1, 10, 16)  # 21:30 Boise
    # a number covering 40-odd zones still finds the hours that are daytime everywhere
    many = zones_for_number("+18005550100")
    found = next_allowed(NIGHT, many, utc(2024, 1, 10, 13))
    assert not is_quiet(NIGHT, many, found)
    assert is_quiet(NIGHT, many, found - timedelta(seconds=1))


def test_no_common_daytime_falls_back_to_the_first_zone() -> None:
    long_night = QuietWindow(time(20), time(10))  # daytime: Shanghai 02-12 UTC, New York 15-01 UTC
    zones = ("Asia/Shanghai", "America/New_York")
    at = utc(2024, 1, 10, 13)
    assert next_allowed(long_night, zones, at) == utc(2024, 1, 11, 2)  # 10:00 in Shanghai
    assert next_allowed(long_night, tuple(reversed(zones)), at) == utc(2024, 1, 10, 15)  # 10:00 New York


# -- property: next_allowed is allowed, not early, and skips nothing ---------------------------------------
ZONES = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/St_Johns",
    "Pacific/Chatham",
]


# 2024 DST changes (UTC) in those zones: the property is drawn around them as well as anywhere
DST_CHANGES = [
    utc(2024, 3, 10, 7),
    utc(2024, 11, 3, 6),
    utc(2024, 3, 31, 1),
    utc(2024, 10, 27, 1),
    utc(2024, 3, 10, 10),
    utc(2024, 11, 3, 9),
    utc(2024, 4, 6, 15),
    utc(2024, 10, 5, 15),
    utc(2024, 4, 6, 14),
    utc(2024, 9, 28, 14),
    utc(2024, 3, 10, 5, 30),
    utc(2024, 11, 3, 2, 30),
]


def _minutes(start: datetime, end: datetime) -> list[datetime]:
    return [start + timedelta(minutes=m) for m in range(int((end - start) / timedelta(minutes=1)) + 1)]


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 24 * 60 - 1),
    length=st.integers(1, 24 * 60 - 1),
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True),
    at=st.datetimes(datetime(2024, 1, 1), datetime(2025, 12, 31), timezones=st.just(UTC))
    | st.builds(
        lambda change, minutes: change + timedelta(minutes=minutes),
        st.sampled_from(DST_CHANGES),
        st.integers(-36 * 60, 36 * 60),
    ),
)
def test_next_allowed_is_allowed_and_skips_nothing(
    start: int, length: int, zones: list[str], at: datetime
) -> None:
    end = (start + length) % (24 * 60)
    w = QuietWindow(time(start // 60, start % 60), time(end // 60, end % 60))
    found = next_allowed(w, tuple(zones), at)
    assert found >= at
    if is_quiet(w, tuple(zones), found):
        # the documented compromise: no common daytime within 48 h, the first zone alone decides
        assert found == next_allowed(w, tuple(zones[:1]), at)
        assert not is_quiet(w, tuple(zones[:1]), found)
        assert all(is_quiet(w, tuple(zones), m) for m in _minutes(at, at + timedelta(hours=48)))
    elif found != at:
        assert is_quiet(w, tuple(zones), at)
        assert is_quiet(w, tuple(zones), max(at, found - timedelta(minutes=1)))
        # nothing allowed was skipped (checked minute by minute)
        assert all(is_quiet(w, tuple(zones), m) for m in _minutes(at, found - timedelta(microseconds=1)))
