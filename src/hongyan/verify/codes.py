"""Verification codes (pure, no I/O): generate with `secrets`, keep only an HMAC, compare in constant time.

The stored `code_hash` is HMAC-SHA256(secret key, "<verification id>:<code>") in hex. The secret key keeps a
leaked table from being brute-forced offline (10^6 codes are nothing to try without it); the id makes a
hash useless for any other verification. When an account keeps the previous code valid after a resend,
the column holds two 128-bit halves instead (new code's first half, then the previous one's); `code_matches`
accepts a code whose HMAC starts with either half, so one comparison rule covers both layouts: for a
single-code row the second half is the tail of the same HMAC, which a wrong code hits with probability 2^-128.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

MIN_LENGTH, MAX_LENGTH = 4, 10
_HALF = 32  # hex characters: 128 bits


def generate_code(length: int) -> str:
    """A uniformly random numeric code of `length` digits (leading zeros allowed: "004217")."""
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"code length must be {MIN_LENGTH}–{MAX_LENGTH}, not {length}")
    return f"{secrets.randbelow(10**length):0{length}d}"


def code_hash(secret_key: str, verification_id: str, code: str) -> str:
    """HMAC-SHA256(secret_key, "<id>:<code>"), 64 hex characters."""
    message = f"{verification_id}:{code}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def keep_previous(new_hash: str, previous_stored: str) -> str:
    """The stored value that accepts the new code and the one sent before it (not older ones)."""
    return new_hash[:_HALF] + previous_stored[:_HALF]


def code_matches(secret_key: str, verification_id: str, code: str, stored: str) -> bool:
    """Whether `code` is the verification's (current or kept previous) code. Constant time: both halves
    are always compared, with hmac.compare_digest, whatever the input."""
    candidate = code_hash(secret_key, verification_id, code)[:_HALF]
    first = hmac.compare_digest(candidate, stored[:_HALF])
    second = hmac.compare_digest(candidate, stored[_HALF : 2 * _HALF])
    return first | second
