"""Recipient numbers: E.164 normalization with `phonenumbers` and per-recipient problems reported."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

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


def split_recipients(text: str) -> list[str]:
    """Recipients typed by a person: separated by comma, semicolon (ASCII or full-width), newline or tab."""
    for sep in (";", "；", "，", "\n", "\r", "\t", "、"):
        text = text.replace(sep, ",")
    return [part.strip() for part in text.split(",") if part.strip()]
