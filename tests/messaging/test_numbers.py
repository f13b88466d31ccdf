from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.messaging.numbers import NumberProblem, normalize, split_recipients


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("13800138000", "CN", "+8613800138000"),
        ("+86 138-0013-8000", "CN", "+8613800138000"),
        ("008613800138000", "CN", "+8613800138000"),
        ("  13800138000 ", "CN", "+8613800138000"),
        ("+447911123456", "CN", "+447911123456"),
        ("07911 123456", "GB", "+447911123456"),
        ("+1 415 555 2671", "CN", "+14155552671"),  # US numbers: mobile and fixed can't be told apart
    ],
)
def test_normalize(raw: str, region: str, e164: str) -> None:
    assert normalize(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "invalid_phone_number"),
        ("abc", "invalid_phone_number"),
        ("1380013800", "invalid_phone_number"),  # one digit short
        ("+86123", "invalid_phone_number"),
        ("1" * 40, "invalid_phone_number"),
        ("01088886666", "not_mobile_number"),  # Beijing landline
        ("4008123123", "not_mobile_number"),  # CN toll free
    ],
)
def test_bad_numbers(raw: str, code: str) -> None:
    with pytest.raises(NumberProblem) as err:
        normalize(raw, "CN")
    assert err.value.code == code
    assert err.value.message


def test_normalize_region_comes_back() -> None:
    assert normalize("13800138000", "CN").region == "CN"


def test_split_recipients_separators() -> None:
    assert split_recipients("1,2;3\n4\r\n5；6，7\t8、9 , ,") == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]


@given(
    st.sampled_from(["86", "1", "44", "49", "91", "81", "852", "65", "800", "888"]),
    st.text(alphabet="0123456789", min_size=4, max_size=13),
    st.sampled_from(["CN", "US", "GB"]),
)
def test_validity_agrees_with_libphonenumber(cc: str, digits: str, region: str) -> None:
    """Our single number_type() call must judge validity exactly like phonenumbers.is_valid_number."""
    raw = f"+{cc}{digits}"
    try:
        expected = phonenumbers.is_valid_number(phonenumbers.parse(raw, region))
    except phonenumbers.NumberParseException:
        expected = False
    try:
        normalize(raw, region)
        ours = True
    except NumberProblem as problem:
        ours = problem.code == "not_mobile_number"
    assert ours == expected


@given(
    st.sampled_from(["", "+86"]),
    st.from_regex(r"1[0-9]{10}", fullmatch=True),
    st.sampled_from(["CN", "US", "HK"]),
)
def test_cn_mobile_fast_path_equals_parse(prefix: str, digits: str, region: str) -> None:
    """The shortcut for Chinese mobiles must give exactly what phonenumbers.parse gives."""
    from hongyan.messaging.numbers import _parse_fast

    raw = prefix + digits
    fast = _parse_fast(raw, region)
    if fast is None:
        return
    assert fast == phonenumbers.parse(raw, region)


def test_cn_mobile_fast_path_every_prefix() -> None:
    from hongyan.messaging.numbers import _parse_fast

    for head in range(1000, 2000):
        raw = f"{head}{head * 7 % 10_000_000:07d}"
        for text in (raw, "+86" + raw):
            fast = _parse_fast(text, "CN")
            if fast is not None:
                assert fast == phonenumbers.parse(text, "CN"), text
