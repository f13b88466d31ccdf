"""The two catalogs stay in step with each other and with every key the templates and code ask for."""

from __future__ import annotations

import re
from pathlib import Path
from string import Formatter

import pytest

from hongyan.accounts.keys import ALL_SCOPES
from hongyan.console.i18n import LANGUAGES, Translator, catalog, negotiate
from hongyan.messaging.states import Status
from hongyan.messaging.submit import MESSAGE_TYPES

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "hongyan" / "console"
# t("key") / t('key') in templates and Python; key="flash.x" for flashes
_KEY_USES = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+)["']|\bkey=["']([a-z0-9_.]+)["']""")


def _placeholders(text: str) -> set[str]:
    return {name for _literal, name, _spec, _conv in Formatter().parse(text) if name}


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in [*CONSOLE.glob("templates/*.html"), *CONSOLE.glob("*.py")]:
        for a, b in _KEY_USES.findall(path.read_text(encoding="utf-8")):
            keys.add(a or b)
    # keys built at run time from a prefix and a value
    keys.discard("send.preview.position_")
    keys.update(f"status.{s.value}" for s in Status)
    keys.update(f"message_type.{m}" for m in MESSAGE_TYPES)
    keys.update(f"scope.{s}" for s in ALL_SCOPES)
    keys.update(f"send.preview.position_{kind}" for kind in ("item", "line"))
    keys.update(f"not_found.{what}" for what in ("page", "message", "batch"))
    keys.update(f"nav.{area}" for area in ("dashboard", "send", "messages", "keys", "webhooks"))
    return {k for k in keys if not k.endswith(("_", "."))}


def test_catalogs_have_the_same_keys_and_no_empty_texts() -> None:
    zh, en = catalog("zh-CN"), catalog("en")
    assert set(zh) == set(en), f"only in zh-CN: {set(zh) - set(en)}; only in en: {set(en) - set(zh)}"
    assert all(v.strip() for v in [*zh.values(), *en.values()])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_key_used_is_in_the_catalog(lang: str) -> None:
    missing = sorted(_used_keys() - set(catalog(lang)))
    assert not missing, f"keys missing from {lang}.json: {missing}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_placeholders_match_between_languages(lang: str) -> None:
    """A text's {placeholders} are the same in both languages, so format() never fails in one of them."""
    other = catalog("en" if lang == "zh-CN" else "zh-CN")
    for key, text in catalog(lang).items():
        assert _placeholders(text) == _placeholders(other[key]), key


def test_chinese_texts_use_full_width_punctuation() -> None:
    """`号码,内容` reads as a typo in Chinese; examples of what to type (placeholders) are exempt."""
    ascii_next_to_han = re.compile(r"[\u4e00-\u9fff][,;:!?]|[,;:!?][\u4e00-\u9fff]")
    offenders = {
        k: v
        for k, v in catalog("zh-CN").items()
        if ascii_next_to_han.search(v) and not k.endswith("_placeholder")
    }
    assert not offenders


@pytest.mark.parametrize(
    ("cookie", "accept_language", "expected"),
    [
        (None, None, "zh-CN"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "zh-TW,zh;q=0.9,en;q=0.8", "zh-CN"),
        (None, "fr-FR,en;q=0.5", "en"),
        (None, "fr-FR,de;q=0.5", "zh-CN"),
        (None, "en;q=0.4,zh;q=0.8", "zh-CN"),
        (None, "zh;q=0,en;q=0.1", "en"),
        (None, "en;q=abc", "zh-CN"),
        ("en", "zh-CN", "en"),
        ("zh-CN", "en", "zh-CN"),
        ("klingon", "en", "en"),
    ],
)
def test_language_negotiation(cookie: str | None, accept_language: str | None, expected: str) -> None:
    assert negotiate(cookie, accept_language) == expected


def test_translator_formats_and_falls_back() -> None:
    t = Translator("en")
    assert t("confirm.submit", n=3) == "Send 3 messages"
    assert t("no.such.key") == "no.such.key"
    assert Translator("xx").lang == "zh-CN"
    assert Translator("zh-CN").status("delivered") == "已送达"


def test_domain_errors_keep_the_api_message() -> None:
    message = "'12345' is not a valid phone number."
    assert Translator("zh-CN").error("invalid_phone_number", message) == ("号码无效", message)
    assert Translator("en").error("invalid_phone_number", message) == (message, None)
    assert Translator("zh-CN").error("some_new_code", "Something.") == ("Something.", None)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_text_formats(lang: str) -> None:
    """Texts always go through str.format: a literal brace must be doubled, or the page fails."""
    for key, text in catalog(lang).items():
        Translator(lang)(key, **dict.fromkeys(_placeholders(text), "x"))
