"""Recipient numbers: E.164 normalization with `phonenumbers` and per-recipient problems reported."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberType

from hongyan.core.errors import Unprocessable

_NOT_MOBILE = frozenset(
    {
        PhoneNumberType.FIXED_LINE,
        PhoneNumberType.TOLL_FREE,
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.VOIP,
        PhoneNumberType.UAN,
        PhoneNumberType.VOICEMAIL,
    }
)


@dataclass(frozen=True, slots=True)
class NormalizedNumber:
    e164: str
    region: str | None


class NumberProblem(ValueError):
    """A recipient that cannot be sent to: `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Chinese mobile numbers are most of the traffic: 11 digits from 13x to 19x, written `+86…`, `0086…` or
# bare with region CN (`0086` became `+86` above). For them `phonenumbers.parse` (60 % of the cost of a check) is skipped and the
# number is built directly; number_type() below still decides validity. Excluded: `179…`, which CN's
# national_prefix_for_parsing treats as a carrier-selection code. tests/messaging/test_numbers.py
# checks that this path gives what parse() gives.
_CN_MOBILE = re.compile(r"(?:\+86)?(1[3-9]\d{9})")  # `0086` is already `+86` here


def _parse_fast(text: str, default_region: str) -> PhoneNumber | None:
    match = _CN_MOBILE.fullmatch(text)
    if match is None or match.group(1).startswith("179"):
        return None
    if len(text) == 11 and default_region.upper() != "CN":
        return None
    return PhoneNumber(country_code=86, national_number=int(match.group(1)))


@lru_cache(maxsize=65536)
def normalize(raw: str, default_region: str) -> NormalizedNumber:
    """`13800138000` with region CN → `+8613800138000`. Raises NumberProblem for bad or non-mobile numbers."""
    text = raw.strip()
    if not text:
        raise NumberProblem("invalid_phone_number", "The phone number is empty.")
    if len(text) > 32:
        raise NumberProblem("invalid_phone_number", "The phone number is too long.")
    if text.startswith("00"):
        text = "+" + text[2:]
    parsed = _parse_fast(text, default_region)
    if parsed is None:
        try:
            parsed = phonenumbers.parse(text, default_region.upper())
        except NumberParseException as exc:
            raise NumberProblem("invalid_phone_number", f"'{raw}' is not a phone number ({exc._msg}).") from exc
    # number_type() is UNKNOWN exactly when is_valid_number() is false (both come from the region's
    # metadata patterns); asking once halves the cost of the hottest call at ingest
    region = phonenumbers.region_code_for_number(parsed)
    number_type = phonenumbers.number_type(parsed) if region else PhoneNumberType.UNKNOWN
    if number_type == PhoneNumberType.UNKNOWN:
        raise NumberProblem("invalid_phone_number", f"'{raw}' is not a valid phone number.")
    if number_type in _NOT_MOBILE:
        raise NumberProblem("not_mobile_number", f"'{raw}' is not a mobile number and cannot receive SMS.")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return NormalizedNumber(e164=e164, region=region)


def normalize_field(raw: str, default_region: str, *, field: str) -> NormalizedNumber:
    """`normalize` for a request field: a bad number is 422 with the NumberProblem's code, naming `field`."""
    try:
        return normalize(raw, default_region)
    except NumberProblem as problem:
        raise Unprocessable(problem.code, problem.message, field=field) from None


def split_recipients(text: str) -> list[str]:
    """Recipients typed by a person: separated by comma, semicolon (ASCII or full-width), newline or tab."""
    for sep in (";", "；", "，", "\n", "\r", "\t", "、"):
        text = text.replace(sep, ",")
    return [part.strip() for part in text.split(",") if part.strip()]
