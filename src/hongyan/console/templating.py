"""The console's Jinja2 environment: autoescaped templates, display filters, versioned static URLs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from hongyan.core.money import format_micros
from hongyan.messaging.queries import visible_text

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
_CURRENCY_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "HKD": "HK$"}


def money(micros: int | None, currency: str) -> str:
    """40000, CNY → ¥0.04 (micro-units, exact; a currency without a symbol gets its code after)."""
    if micros is None:
        return "—"
    amount = format_micros(abs(micros), currency)
    symbol = _CURRENCY_SYMBOLS.get(currency)
    sign = "-" if micros < 0 else ""  # -¥0.16, not ¥-0.16 (statements, a balance on credit)
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def _as_datetime(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # SQLite gives naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def when(value: datetime | str | None, precise: bool = False) -> Markup:
    """A <time> in UTC; console.js rewrites its text into the browser's time zone (the edge).

    `precise` adds milliseconds: a status history often changes several times within one second."""
    moment = _as_datetime(value)
    if moment is None:
        return Markup('<span class="muted">—</span>')
    iso = moment.isoformat().replace("+00:00", "Z")
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if precise:
        text += f".{moment.microsecond // 1000:03d}"
    text += " UTC"
    return Markup('<time datetime="{}" title="{}"{}>{}</time>').format(
        iso, text, Markup(" data-precise") if precise else "", text
    )


def encoding_name(encoding: str | None) -> str:
    return {"gsm7": "GSM-7", "ucs2": "UCS-2"}.get(encoding or "", encoding or "—")


def mask_text(value: str, limit: int = 60) -> Markup:
    """A long message body shortened for a table cell; the full text in the title attribute."""
    if len(value) <= limit:
        return Markup(escape(value))
    return Markup('<span title="{}">{}…</span>').format(value, value[:limit])


def _static_versions() -> dict[str, str]:
    """Content hashes of our own static files, so a new release is never served from a stale cache."""
    versions = {}
    for name in ("console.css", "console.js"):
        path = STATIC_DIR / name
        if path.exists():
            versions[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return versions


def build_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    versions = _static_versions()
    env.globals["static"] = lambda name: f"/static/{name}?v={versions.get(name, '0')}"
    env.filters["money"] = money
    env.filters["when"] = when
    env.filters["encoding_name"] = encoding_name
    env.filters["shorten"] = mask_text
    env.filters["message_text"] = lambda m: visible_text(m.message_type, m.client_ref, m.body)
    return env
