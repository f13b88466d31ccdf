"""Console languages: zh-CN (default) and en, from JSON catalogs; chosen by cookie, then Accept-Language.

Catalog keys are dotted (`send.counter.segments`); values are `str.format` templates. A key missing from
a catalog falls back to zh-CN and then to the key itself, so a gap shows up on screen instead of
failing a page; tests/console/test_i18n.py keeps the two catalogs and the templates in step.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
LANGUAGE_COOKIE = "hongyan_lang"
CATALOG_DIR = Path(__file__).parent / "i18n"


@cache
def catalog(lang: str) -> dict[str, str]:
    """The flat key → text mapping of one language: `<lang>.json` plus one `<area>.<lang>.json` per console
    area (compliance, …), so that areas built side by side do not edit one file."""
    data: dict[str, str] = json.loads((CATALOG_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    for extra in sorted(CATALOG_DIR.glob(f"*.{lang}.json")):
        data.update(json.loads(extra.read_text(encoding="utf-8")))
    return data


def language_of(tag: str | None) -> str | None:
    """`zh`, `zh-Hans-CN`, `zh_CN` → zh-CN; `en-GB` → en; anything else → None."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-")[0].lower()
    return {"zh": "zh-CN", "en": "en"}.get(primary)


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The cookie wins; then the first language of Accept-Language (by q-value) we have; then zh-CN."""
    if cookie in LANGUAGES:
        return cookie
    choices: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        lang = language_of(tag)
        if lang is not None and quality > 0:
            choices.append((-quality, position, lang))
    return min(choices)[2] if choices else DEFAULT_LANGUAGE


class Translator:
    """`t("send.title")`, `t("confirm.submit", n=2)`: the text of a key in one language.

    Every text goes through str.format, so literal braces in a catalog are written `{{` and `}}`."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        self._texts = catalog(self.lang)
        self._fallback = catalog(DEFAULT_LANGUAGE)

    def __call__(self, key: str, /, **params: object) -> str:
        text = self._texts.get(key) or self._fallback.get(key) or key
        return text.format(**params)

    def has(self, key: str) -> bool:
        return key in self._texts

    def status(self, status: str) -> str:
        """The label of a message status (已送达 / Delivered)."""
        return self(f"status.{status}")

    def error(self, code: str, message: str | None) -> tuple[str, str | None]:
        """(title, detail) for a domain error: the catalog's short text for the code when this language has
        one, with the API's own message as detail; otherwise the API message alone."""
        key = f"errors.{code}"
        if self.lang != "en" and self.has(key):
            return self(key), message
        if message:
            return message, None
        return self(key), None

    def rejection(self, code: str, message: str, field: str | None = None) -> tuple[str, str | None]:
        """(title, detail) for a recipient left out of a batch. The API's duplicate message counts
        recipients from 0 (like its field paths); people count from 1, so the console says it its own way."""
        if code == "duplicate_phone_number":
            return self("errors.duplicate_phone_number"), self("errors.duplicate_detail")
        if code == "template_variable_missing" and field and ".vars." in field:
            name = field.split(".vars.", 1)[1]
            return self("errors.template_variable_missing"), self(
                "errors.template_variable_missing_detail", name=name
            )
        return self.error(code, message)
