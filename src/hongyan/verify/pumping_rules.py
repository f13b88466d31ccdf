"""The pure rules of pumping protection (no I/O, table-tested): a number's prefix, the velocity-spike and
conversion-collapse rules, the country allow-lists. verify/pumping.py applies them to the database's counts.
"""

from __future__ import annotations

from typing import Any

import phonenumbers

from hongyan.config import Settings

COUNTRY_NOT_ALLOWED = "verify_country_not_allowed"  # 403
DESTINATION_THROTTLED = "verify_destination_throttled"  # 429
STATUS_BY_CODE = {COUNTRY_NOT_ALLOWED: 403, DESTINATION_THROTTLED: 429}

# National digits kept after the country code in a prefix. Three is the block a carrier (or a premium
# range) is allocated in most numbering plans: the area code in NANP (+1 415), the mobile network code in
# China (+86 138) and Nigeria (+234 803). Countries listed here use another length.
PREFIX_NATIONAL_DIGITS: dict[int, int] = {}
DEFAULT_PREFIX_NATIONAL_DIGITS = 3
# A country spans many prefixes; its cold-start minimum is this many times the prefix minimum
COUNTRY_MIN_FACTOR = 5
DAY_S = 86_400


def country_code_of(e164: str) -> int | None:
    """The ITU country calling code of an E.164 number (codes are prefix-free: 1 to 3 digits)."""
    digits = e164.lstrip("+")
    for length in (1, 2, 3):
        code = digits[:length]
        if code.isdigit() and int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return int(code)
    return None


def prefix_of(e164: str) -> str:
    """`+8613800138000` → `+86138`: the country code and the first national digits (3 by default, see
    PREFIX_NATIONAL_DIGITS), never more than leaves 4 subscriber digits. Velocity is counted per prefix."""
    digits = "".join(ch for ch in e164 if ch.isdigit())
    code = country_code_of(e164)
    if code is None:
        return "+" + digits[:4]
    national = digits[len(str(code)) :]
    keep = min(PREFIX_NATIONAL_DIGITS.get(code, DEFAULT_PREFIX_NATIONAL_DIGITS), max(len(national) - 4, 0))
    return f"+{code}{national[:keep]}"


def velocity_threshold(*, baseline_24h: int, window_s: int, factor: float, minimum: int) -> float:
    """Verifications in the window from which a spike is declared: `factor` × the baseline scaled to the
    window, but never below `minimum` (cold start: with no history the threshold is the minimum itself)."""
    expected = baseline_24h * window_s / DAY_S
    return max(factor * expected, float(minimum))


def is_velocity_spike(*, recent: int, baseline_24h: int, window_s: int, factor: float, minimum: int) -> bool:
    """`recent` (including the request being judged) reaches the threshold and exceeds factor × baseline."""
    expected = baseline_24h * window_s / DAY_S
    return recent >= minimum and recent > factor * expected


def is_conversion_collapse(*, judged: int, approved: int, floor: float, min_started: int) -> bool:
    """Enough judged verifications and too few approved: codes are going to numbers nobody reads."""
    return judged >= min_started and approved < floor * judged


# -- allow-list ----------------------------------------------------------------------------------------
def platform_countries(settings: Settings) -> frozenset[str]:
    """HONGYAN_VERIFY_COUNTRIES as a set of ISO codes (empty: every country)."""
    raw = settings.verify_countries
    return frozenset(c.strip().upper() for c in raw.split(",") if c.strip())


def account_countries(account: Any) -> frozenset[str]:
    """account.settings["verify"]["countries"] (empty or absent: every country the platform allows)."""
    verify = (account.settings or {}).get("verify") if account is not None else None
    countries = verify.get("countries") if isinstance(verify, dict) else None
    if not isinstance(countries, list):
        return frozenset()
    return frozenset(str(c).strip().upper() for c in countries if str(c).strip())


def country_refusal(country: str | None, *, platform: frozenset[str], account: frozenset[str]) -> str | None:
    """Why `country` may not receive codes, or None. The platform list bounds every account; an account's
    list narrows it further (it can never widen it)."""
    label = country or "unknown"
    if platform and (country is None or country not in platform):
        return f"Verification codes to {label} numbers are not offered on this platform."
    if account and (country is None or country not in account):
        return (
            f"Verification codes to {label} numbers are not enabled for this account "
            f"(allowed: {', '.join(sorted(account))})."
        )
    return None
