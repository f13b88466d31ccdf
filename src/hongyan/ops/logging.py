"""Process logging: text (default) or JSON lines (HONGYAN_LOG_FORMAT=json), phone numbers masked in both.

JSON fields: ts (ISO 8601 UTC), level, logger, msg, pid, the extras a call passes
(`log.info("…", extra={"message_id": …, "batch_id": …, "account_id": …})`) and exc (the traceback).

Redaction is a net, not a licence: code must never pass message content (text, template values, OTP codes) to
a logger, in the message or in extras; the filter masks phone numbers (E.164 `+` and 8–15 digits; Chinese
mobiles `1[3-9]` + 9 digits, with or without 86) to a prefix and the last two digits: +86138******01.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from hongyan.config import Settings

# RFC 5424 §6.2.1 severity names (and their common short forms) → Python levels. NOTICE has no Python level:
# it logs as INFO, as before.
LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO, "INFORMATIONAL": logging.INFO, "NOTICE": logging.INFO,
    "WARNING": logging.WARNING, "WARN": logging.WARNING,
    "ERROR": logging.ERROR, "ERR": logging.ERROR,
    "CRITICAL": logging.CRITICAL, "CRIT": logging.CRITICAL, "ALERT": logging.CRITICAL,
    "EMERGENCY": logging.CRITICAL, "EMERG": logging.CRITICAL,
}
# fields a LogRecord has of itself; anything else on a record came from `extra=`
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# never printed even if passed by mistake: message content
_CONTENT_FIELDS = frozenset({"body", "text", "content", "code", "otp"})
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# a phone number is not part of a longer ASCII word or number (`msg_01J…13800000000…` ids stay whole); Chinese
# text around it does not protect it (手机13800000000)
_PHONE = re.compile(r"(?<![A-Za-z0-9_+])(?:\+[0-9]{8,15}|(?:86)?1[3-9][0-9]{9})(?![A-Za-z0-9_])")


def _mask(match: re.Match[str]) -> str:
    number = match.group()
    plus = number.startswith("+")
    digits = number[1:] if plus else number
    keep = min(5, max(1, len(digits) - 8))  # at least 5 digits hidden, at most 5 shown before the last 2
    return ("+" if plus else "") + digits[:keep] + "*" * (len(digits) - keep - 2) + digits[-2:]


def redact(value: str) -> str:
    """`value` with every phone number masked."""
    return _PHONE.sub(_mask, value)


def level_number(name: str) -> int:
    try:
        return LEVELS[name.strip().upper()]
    except KeyError:
        raise ValueError(f"HONGYAN_LOG_LEVEL: unknown level {name!r}; one of {', '.join(LEVELS)}") from None


class RedactPhoneNumbers(logging.Filter):
    """Masks phone numbers in the formatted message, string extras and the traceback; drops content extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad %-arguments: keep both, masked, rather than a traceback quoting them in clear
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_FIELDS:
                continue
            if key in _CONTENT_FIELDS:
                record.__dict__[key] = "[redacted]"
            elif isinstance(value, str):
                record.__dict__[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic line, with extras appended as key=value."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging.Formatter's name)
        line = super().formatMessage(record)
        more = extras(record)
        return line + "".join(f" {k}={v}" for k, v in more.items()) if more else line


def configure_logging(settings: Settings, *, stream: Any = None) -> logging.Handler:
    """Install this process's log handler on the root logger (replacing one installed before) and return it."""
    level = level_number(settings.log_level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(RedactPhoneNumbers())
    handler._hongyan = True  # type: ignore[attr-defined]  # ours: replaced, not stacked, on a second call
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_hongyan", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter on every start
    return handler
