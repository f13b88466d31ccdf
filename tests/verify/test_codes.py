"""Pure code handling: generation, HMAC layout, constant-time matching, keeping the previous code; the
account's settings combined with the platform's (stricter only)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.config import Settings
from hongyan.verify import codes
from hongyan.verify.limits import VerifySettings, checked_settings, effective
from hongyan.verify.texts import default_locale, ttl_minutes

SECRET = "test-secret"


@pytest.mark.parametrize("length", range(4, 11))
def test_codes_are_digits_of_the_asked_length(length: int) -> None:
    seen = {codes.generate_code(length) for _ in range(200)}
    assert all(len(c) == length and c.isdigit() for c in seen)
    assert len(seen) > 150  # random, not a counter


@pytest.mark.parametrize("length", [0, 3, 11])
def test_other_lengths_are_refused(length: int) -> None:
    with pytest.raises(ValueError):
        codes.generate_code(length)


@given(st.from_regex(r"[0-9]{4,10}", fullmatch=True), st.from_regex(r"[0-9]{4,10}", fullmatch=True))
def test_only_the_code_matches_its_hash(code: str, other: str) -> None:
    stored = codes.code_hash(SECRET, "ver_1", code)
    assert len(stored) == 64 and code not in stored
    assert codes.code_matches(SECRET, "ver_1", code, stored)
    assert codes.code_matches(SECRET, "ver_1", other, stored) == (other == code)
    assert not codes.code_matches(SECRET, "ver_2", code, stored)  # the id is part of the hash
    assert not codes.code_matches("another-secret", "ver_1", code, stored)


def test_keeping_the_previous_code_accepts_exactly_two() -> None:
    h1 = codes.code_hash(SECRET, "ver_1", "111111")
    h2 = codes.keep_previous(codes.code_hash(SECRET, "ver_1", "222222"), h1)
    h3 = codes.keep_previous(codes.code_hash(SECRET, "ver_1", "333333"), h2)
    assert [codes.code_matches(SECRET, "ver_1", c, h3) for c in ("111111", "222222", "333333")] == [
        False,
        True,
        True,
    ]


def test_account_limits_are_only_ever_stricter() -> None:
    platform = Settings(secret_key="x")
    own = VerifySettings.from_dict(
        {
            "per_number_hour": 3,
            "per_ip_hour": 1000,
            "resend_cooldown_s": 10,
            "max_attempts": 3,
            "code_length": 8,
            "ttl_s": 5,
            "countries": ["CN"],
            "per_key_minute": "many",
            "keep_previous_code": True,
        }
    )
    limits = effective(platform, own)
    assert (limits.per_number_hour, limits.per_ip_hour, limits.resend_cooldown_s) == (3, 30, 60)
    assert (limits.max_attempts, limits.code_length, limits.ttl_s) == (3, 8, 300)  # ttl 5 s is out of range
    assert limits.per_key_minute == 600 and limits.keep_previous_code is True
    assert effective(platform, VerifySettings.from_dict(None)).per_number_day == 10


@pytest.mark.parametrize(("name", "value"), [("code_length", 3), ("ttl_s", 4000), ("per_number_hour", 0)])
def test_settings_out_of_range_name_their_field(name: str, value: int) -> None:
    from hongyan.core.errors import Unprocessable

    with pytest.raises(Unprocessable) as refused:
        checked_settings(VerifySettings(), {name: value})
    assert refused.value.field == name and refused.value.code == "verify_settings_invalid"


def test_texts_locale_and_minutes() -> None:
    assert [default_locale(r) for r in ("CN", "hk", "US", None)] == ["zh-CN", "zh-CN", "en", "en"]
    assert [ttl_minutes(s) for s in (30, 60, 90, 300, 3600)] == [1, 1, 2, 5, 60]
