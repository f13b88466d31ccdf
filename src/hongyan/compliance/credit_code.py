"""The unified social credit code (统一社会信用代码, GB 32100-2015) of a Chinese organization: 18 characters
whose last one is a check character over the first 17, so a typo in a KYC application is caught before a
reviewer spends time on it. Pure functions, no I/O.

GB 32100-2015 §4: characters from a 31-letter alphabet (digits and upper-case Latin letters without
I, O, Z, S, V); positions 1–2 registration authority and organization type, 3–8 the administrative division
code (digits), 9–17 the organization code, 18 the check character (§5, ISO 7064 MOD 31-3 style):
    C18 = 31 − (Σ Ci·Wi mod 31), Wi = 3^(i−1) mod 31, and 31 is written as 0.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015 Table 1: no I, O, Z, S, V
VALUES = {c: i for i, c in enumerate(ALPHABET)}
WEIGHTS = tuple(
    pow(3, i, 31) for i in range(17)
)  # 1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28
LENGTH = 18


def normalize(code: str) -> str:
    """Upper case without spaces or hyphens (how people copy it from a licence)."""
    return "".join(code.split()).replace("-", "").upper()


def check_character(first17: str) -> str:
    """The GB 32100-2015 check character for the first 17 characters (which must be in the alphabet)."""
    total = sum(VALUES[c] * w for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def problem(code: str) -> str | None:
    """Why a (normalized) code is not a valid unified social credit code, or None when it is.

    One of: "length", "character", "division" (positions 3–8 must be digits), "check"."""
    if len(code) != LENGTH:
        return "length"
    if any(c not in VALUES for c in code):
        return "character"
    if not code[2:8].isdigit():
        return "division"
    if check_character(code[:17]) != code[17]:
        return "check"
    return None


def is_valid(code: str) -> bool:
    return problem(normalize(code)) is None
