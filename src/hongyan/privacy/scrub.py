"""Pure rewriting of stored documents that carry a phone number or content: webhook payloads and a batch's
rejected recipients. No I/O: the service reads the (decrypted) values, these return what to write back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

# what an erased or purged number reads as: E.164-shaped (API clients parsing `to` keep working) but not a
# number anyone has (country code 0 does not exist, ITU-T E.164 §6.2)
ERASED_NUMBER = "+00000000000"
ERASED_TEXT = ""
INBOUND_EVENT_TYPE = "message.received"


def scrub_event_payload(payload: str) -> str:
    """A webhook event's JSON body with the person's number and content removed, still valid JSON.

    Status events (`message.*`) carry `data.to`; `message.received` carries `data.from` and `data.body`
    (its `data.to` is the platform's own number or short code and stays). Account events carry neither."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return orjson.dumps({"erased": True}).decode()  # not ours to parse: drop rather than keep
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        return payload
    if document.get("type") == INBOUND_EVENT_TYPE:
        if "from" in data:
            data["from"] = ERASED_NUMBER
        if "body" in data:
            data["body"] = ERASED_TEXT
    else:
        if "to" in data:
            data["to"] = ERASED_NUMBER
        for key in ("text", "body"):
            if key in data:
                data[key] = ERASED_TEXT
    return orjson.dumps(document).decode()


def inbound_id_of(payload: str) -> str | None:
    """The `data.inbound_id` of a `message.received` payload (None for anything else)."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    data = document.get("data") if isinstance(document, dict) else None
    value = data.get("inbound_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def scrub_rejected(
    entries: list[dict[str, Any]], matches: Callable[[str], bool] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """A batch's rejected recipients with the number (as typed) and the message naming it replaced.

    `matches(raw_to)` picks the entries of one person (erasure); None scrubs every entry (retention).
    Index, code and field stay: the batch's report still says how many were refused and why."""
    out: list[dict[str, Any]] = []
    changed = 0
    for entry in entries:
        raw = entry.get("to")
        if isinstance(raw, str) and raw != ERASED_NUMBER and (matches is None or matches(raw)):
            entry = {**entry, "to": ERASED_NUMBER, "message": "[erased]"}
            changed += 1
        out.append(entry)
    return out, changed
