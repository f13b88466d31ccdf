"""Opaque, prefixed, time-sortable identifiers (`msg_…`, `bat_…`), never raw database integers.

Layout: 48-bit millisecond timestamp + 80 random bits, Crockford base32 (like ULID), so ids sort by
creation time and cursor pagination can use them directly.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}

PREFIXES = {
    "account": "acc",
    "user": "usr",
    "api_key": "key",
    "message": "msg",
    "batch": "bat",
    "campaign": "cmp",
    "channel": "chn",
    "webhook_endpoint": "whk",
    "event": "evt",
    "journal_entry": "je",
    "rate_card": "rc",
    "rate_card_version": "rcv",
    "product": "prd",
    "package": "pkg",
    "subscription": "sub",
    "payment_order": "pay",
    "email": "eml",
    "auth_token": "tok",
    "contact": "ct",
    "contact_group": "grp",
    "import_job": "imp",
    "campaign_run": "run",
    "signature": "sig",
    "message_template": "tpl",
    "kyc_application": "kyc",
    "compliance_document": "doc",
    "filter_rule": "flt",
    "inbound_message": "inb",
    "verification": "ver",
}


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str, *, at_ms: int | None = None) -> str:
    """A new id such as `msg_01JD3X...` (26 base32 chars after the prefix)."""
    ms = int(time.time() * 1000) if at_ms is None else at_ms
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode((ms << 80) | rand, 26)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """Many ids at once, strictly increasing within the call (same millisecond, rising random part)."""
    ms = int(time.time() * 1000)
    base = int.from_bytes(os.urandom(10), "big") >> 16  # room to add count without overflow
    head = ms << 80
    return [f"{prefix}_{_encode(head | (base + i), 26)}" for i in range(count)]


def id_time_ms(identifier: str) -> int:
    """Creation time (ms since epoch) encoded in an id."""
    body = identifier.split("_", 1)[1]
    value = 0
    for c in body:
        value = (value << 5) | _DECODE[c]
    return value >> 80


def looks_like(identifier: str, prefix: str) -> bool:
    if not identifier.startswith(prefix + "_"):
        return False
    body = identifier[len(prefix) + 1 :]
    return len(body) == 26 and all(c in _DECODE for c in body)
