"""Variable types of message templates (`${code}`, `${name}`, …): what a parameter value may be.

Reviewers approve a template's fixed text; the parameters are filled in per message, so each one is
checked against its declared type. `min` / `max` are always lengths in characters (for `code` and `digits`
the number of digits), with a default and a hard ceiling per type. Pure: no I/O.

No parameter of any type may carry a link (a URL must be part of the reviewed text, or the review means
nothing), braces (they would become personalization placeholders of the submit path), line breaks or
other control characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

_DIGITS = re.compile(r"[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_AMOUNT = re.compile(r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]{1,2})?")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_CN_DATE = re.compile(r"(?:([0-9]{4})年)?([0-9]{1,2})月([0-9]{1,2})日")
_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?")
_CN_TIME = re.compile(r"([01]?[0-9]|2[0-3])(?:点|时)(?:([0-5]?[0-9])分)?")
_PHONE = re.compile(r"\+?[0-9](?:[0-9 \-]*[0-9])?")
_PLATE = re.compile(
    r"[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领][A-Z][A-HJ-NP-Z0-9]{4,5}[挂学警港澳]?"
)
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
_NAME_CHARS = re.compile(r"[^\W\d_]|[ ·•.\-']", re.UNICODE)
# a link: a scheme, "www.", or a host name ending in a common top-level domain (t.cn/x, abc.com, 短链.top)
URL_PATTERN = re.compile(
    r"(?i)(?:[a-z][a-z0-9+.\-]*://|\bwww\.|[a-z0-9\-]+\.(?:com|cn|net|org|info|biz|top|xyz|vip|club|shop|site|"
    r"online|link|app|io|co|cc|me|tv|ly|gl|to|ink|wang|ltd|group|store|tech|fun|icu|live|work|asia|hk|tw|us|uk)\b)"
)


def contains_url(value: str) -> bool:
    """Whether a value looks like it carries a link (scheme, www., or host.tld)."""
    return URL_PATTERN.search(value) is not None


def _real_date(y: int, m: int, d: int) -> bool:
    try:
        date(y, m, d)
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    if match := _ISO_DATE.fullmatch(value):
        return _real_date(int(match[1]), int(match[2]), int(match[3]))
    if match := _CN_DATE.fullmatch(value):
        return _real_date(int(match[1] or 2000), int(match[2]), int(match[3]))  # 2000: 2月29日 is a date
    return False


def _is_name(value: str) -> bool:
    stripped = value.strip()
    return (
        bool(stripped)
        and all(_NAME_CHARS.fullmatch(ch) for ch in stripped)
        and any(ch.isalpha() for ch in stripped)
    )


@dataclass(frozen=True, slots=True)
class VariableType:
    """One type: a check of the value's shape, default length bounds and the ceiling a template may set."""

    name: str
    description: str
    example: str
    min_length: int
    max_length: int
    ceiling: int
    check: Callable[[str], bool]
    rule: str  # what the shape check requires, for the error message


VARIABLE_TYPES: dict[str, VariableType] = {
    t.name: t
    for t in (
        VariableType(
            "code",
            "verification code: digits only",
            "4821",
            4,
            8,
            10,
            lambda v: _DIGITS.fullmatch(v) is not None,
            "digits only (0–9)",
        ),
        VariableType(
            "digits",
            "digits only (account tail, quantity)",
            "6688",
            1,
            20,
            32,
            lambda v: _DIGITS.fullmatch(v) is not None,
            "digits only (0–9)",
        ),
        VariableType(
            "number",
            "a decimal number",
            "-12.5",
            1,
            20,
            32,
            lambda v: _NUMBER.fullmatch(v) is not None,
            "a number such as 12 or -3.5",
        ),
        VariableType(
            "amount",
            "money: up to 2 decimals, optional thousands separators",
            "1,280.50",
            1,
            20,
            24,
            lambda v: _AMOUNT.fullmatch(v) is not None,
            "an amount such as 12.50 or 1,280.00",
        ),
        VariableType(
            "text", "free text without links", "金卡会员", 1, 20, 100, lambda v: bool(v.strip()), "some text"
        ),
        VariableType(
            "name",
            "a person's or company's name",
            "张三",
            1,
            20,
            40,
            _is_name,
            "letters (a name), not digits or symbols only",
        ),
        VariableType(
            "date",
            "a date: 2026-01-02, 2026年1月2日 or 1月2日",
            "2026-01-02",
            4,
            11,
            11,
            _is_date,
            "a date such as 2026-01-02 or 2026年1月2日",
        ),
        VariableType(
            "time",
            "a time of day: 14:30, 14:30:05 or 14点30分",
            "14:30",
            2,
            8,
            8,
            lambda v: _TIME.fullmatch(v) is not None or _CN_TIME.fullmatch(v) is not None,
            "a time such as 14:30 or 14点30分",
        ),
        VariableType(
            "phone",
            "a phone number: digits, spaces, dashes, an optional leading +",
            "400-820-8820",
            3,
            20,
            24,
            lambda v: _PHONE.fullmatch(v) is not None,
            "a phone number such as 400-820-8820",
        ),
        VariableType(
            "plate",
            "a mainland vehicle plate",
            "粤B12345",
            7,
            8,
            8,
            lambda v: _PLATE.fullmatch(v) is not None,
            "a vehicle plate such as 粤B12345",
        ),
        VariableType(
            "ref",
            "a reference: order, tracking or ticket number (letters, digits, - and _)",
            "SF1234567890",
            1,
            32,
            64,
            lambda v: _REF.fullmatch(v) is not None,
            "letters, digits, - and _",
        ),
    )
}


def default_type_for(variable: str) -> str:
    """The type of a body variable the template did not declare: its own name when that is a type
    (`${code}`, `${name}`, `${date}`, `${amount}` …), otherwise `text` (at most 20 characters)."""
    return variable if variable in VARIABLE_TYPES else "text"


def value_problem(value: str, type_name: str, min_length: int, max_length: int) -> str | None:
    """Why `value` is not a valid value of the type (English sentence), or None when it is."""
    kind = VARIABLE_TYPES[type_name]
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        return "line breaks and control characters are not allowed"
    if "{" in value or "}" in value:
        return "braces { } are not allowed"
    if contains_url(value):
        return "links are not allowed in parameters (put a link in the template's reviewed text)"
    length = len(value)
    if length < min_length or length > max_length:
        bounds = f"{min_length}" if min_length == max_length else f"{min_length}–{max_length}"
        unit = "digits" if type_name in ("code", "digits") else "characters"
        return f"must have {bounds} {unit}; it has {length}"
    if not kind.check(value):
        return f"must be {kind.rule}"
    return None
