"""Process logs: JSON lines with ids, text lines, RFC 5424 level names, phone numbers never in clear."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest

from hongyan.config import Settings
from hongyan.ops.logging import configure_logging, level_number, redact


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def logged(fmt: str, emit: object, level: str = "INFO") -> str:
    stream = io.StringIO()
    configure_logging(Settings(log_format=fmt, log_level=level), stream=stream)
    emit(logging.getLogger("hongyan.test"))  # type: ignore[operator]
    return stream.getvalue()


@pytest.mark.parametrize(("text", "masked"), [
    ("to +8613800138001 now", "to +86138******01 now"),
    ("to 13800138001.", "to 138******01."),
    ("to 8613800138001", "to 86138******01"),
    ("手机13912345678已停机", "手机139******78已停机"),
    ("US +14155550123", "US +141******23"),
    ("short +12345678", "short +1*****78"),
    ("longest +123456789012345", "longest +12345********45"),
    ("two: +8613800138001,+8613800138002", "two: +86138******01,+86138******02"),
])
def test_phone_numbers_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize("text", [
    "msg_01J8ZK13800138001ABCDEFGH",  # an id that happens to contain a mobile number's digits
    "took 12800138001 µs",  # 12…: not a Chinese mobile prefix
    "12 messages, 1700000000 epoch, 3 parts",
    "+1234567",  # 7 digits: not E.164
    "order 138001380011",  # 12 digits: a longer number, not a mobile
])
def test_other_numbers_stay(text: str) -> None:
    assert redact(text) == text


def test_json_lines(restore_root: None) -> None:
    def emit(log: logging.Logger) -> None:
        log.info("submitted to %s", "+8613800138001",
                 extra={"message_id": "msg_1", "batch_id": "bat_1", "account_id": "acc_1", "to": "13800138001"})
        try:
            raise ValueError("bad number +8613800138001")
        except ValueError:
            log.exception("failed")

    first, second = (orjson.loads(line) for line in logged("json", emit).splitlines())
    assert set(first) == {"ts", "level", "logger", "msg", "pid", "message_id", "batch_id", "account_id", "to"}
    assert first["msg"] == "submitted to +86138******01" and first["to"] == "138******01"
    assert first["level"] == "INFO" and first["logger"] == "hongyan.test" and isinstance(first["pid"], int)
    assert (first["message_id"], first["batch_id"], first["account_id"]) == ("msg_1", "bat_1", "acc_1")
    assert first["ts"].endswith("Z") and datetime.fromisoformat(first["ts"]).utcoffset().total_seconds() == 0
    assert second["level"] == "ERROR" and second["msg"] == "failed"
    assert "ValueError: bad number +86138******01" in second["exc"] and "13800138001" not in second["exc"]


def test_text_lines_are_masked_too(restore_root: None) -> None:
    def emit(log: logging.Logger) -> None:
        log.warning("receipt for %s", "13800138001", extra={"message_id": "msg_1"})

    line = logged("text", emit)
    assert "WARNING hongyan.test: receipt for 138******01 message_id=msg_1" in line
    assert "13800138001" not in line


def test_message_content_is_never_logged(restore_root: None) -> None:
    """A `text`/`body` extra passed by mistake is dropped (the code must not pass content at all)."""
    out = logged("json", lambda log: log.info("sent", extra={"body": "您的验证码是 482913", "message_id": "msg_1"}))
    assert "482913" not in out and orjson.loads(out)["body"] == "[redacted]"


def test_levels(restore_root: None) -> None:
    assert logged("text", lambda log: (log.debug("quiet"), log.info("shown")), level="NOTICE").count("\n") == 1
    assert "quiet" in logged("text", lambda log: log.debug("quiet"), level="debug")
    assert logged("text", lambda log: log.warning("hidden"), level="err") == ""
    assert {name: level_number(name) for name in ("DEBUG", "informational", "NOTICE", "warn", "crit", "emerg")} == {
        "DEBUG": logging.DEBUG, "informational": logging.INFO, "NOTICE": logging.INFO, "warn": logging.WARNING,
        "crit": logging.CRITICAL, "emerg": logging.CRITICAL}
    with pytest.raises(ValueError, match="HONGYAN_LOG_LEVEL"):
        level_number("LOUD")


def test_configure_twice_replaces_the_handler(restore_root: None) -> None:
    before = len(logging.getLogger().handlers)
    configure_logging(Settings(log_format="json"), stream=io.StringIO())
    configure_logging(Settings(log_format="text"), stream=io.StringIO())
    assert len(logging.getLogger().handlers) == before + 1


def test_log_format_is_validated() -> None:
    with pytest.raises(ValueError):
        Settings(log_format="xml")
