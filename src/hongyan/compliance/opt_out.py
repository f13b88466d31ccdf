"""Opt-out and opt-in keywords in replies (MO): pure matching, no I/O.

The rule (docs/opt-out.md): a reply is an opt-out when, once normalized, the WHOLE reply is one of the
account's opt-out keywords — optionally with courtesy words around it ("退订，谢谢", "请退订", "STOP please",
"thank you, stop"). A keyword inside a sentence does not count: "N号楼", "the end of the day", "stop by at
5" and "不要退订" are ordinary replies. Single letters such as T and N are in the default list (carriers
ask for 回T退订), which is why the reply must be the keyword and not merely contain it.

Normalization makes the match width-, case- and whitespace-insensitive: Unicode NFKC (full-width
ＳＴＯＰ → STOP, ideographic space → space), case folding, every whitespace and invisible formatting
character removed (so "退 订" and " td " match), punctuation around the keyword removed ("退订。", "STOP!").
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

DEFAULT_OPT_OUT_KEYWORDS: tuple[str, ...] = (
    "TD",
    "T",
    "N",
    "退订",
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "REVOKE",
)
DEFAULT_OPT_IN_KEYWORDS: tuple[str, ...] = ("START", "UNSTOP", "订阅")
# always account-wide, even when the account scopes opt-outs per signature (CTIA: STOPALL = everything)
ACCOUNT_WIDE_KEYWORDS = frozenset({"stopall"})
# words people put around a keyword; stripped from either end, repeatedly ("请退订，谢谢！")
COURTESY_WORDS: tuple[str, ...] = (
    "谢谢您",
    "谢谢你",
    "谢谢",
    "多谢",
    "谢了",
    "感谢",
    "请",
    "麻烦",
    "了",
    "吧",
    "啊",
    "呀",
    "please",
    "thankyou",
    "thanks",
    "thx",
)
MAX_REPLY_CHARS = 60  # a longer reply is a message, not a keyword: not even normalized

ReplyKind = Literal["opt_out", "opt_in"]


@dataclass(frozen=True, slots=True)
class ReplyMatch:
    kind: ReplyKind
    keyword: str  # normalized (what Suppression.keyword stores)
    account_wide: bool  # STOPALL: applies to every signature of the account


def _is_punctuation(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category[0] == "P" or category in ("Sm", "Sk", "So")  # ~ ^ emoji and the like count too


def _strip_punctuation(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_punctuation(text[start]):
        start += 1
    while end > start and _is_punctuation(text[end - 1]):
        end -= 1
    return text[start:end]


def normalize_keyword(text: str) -> str:
    """Width-, case- and whitespace-insensitive form of a keyword or a reply: NFKC, casefold, no whitespace
    or invisible characters anywhere, no punctuation at either end."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    compact = "".join(
        ch for ch in folded if not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc")
    )
    return _strip_punctuation(compact)


def _without_courtesy(text: str) -> str:
    """Strip courtesy words (and the punctuation next to them) from both ends; never down to nothing."""
    changed = True
    while changed:
        changed = False
        for word in COURTESY_WORDS:
            if text != word and text.endswith(word):
                text, changed = _strip_punctuation(text[: -len(word)]), True
            if text != word and text.startswith(word):
                text, changed = _strip_punctuation(text[len(word) :]), True
    return text


@lru_cache(maxsize=256)
def _keyword_set(keywords: tuple[str, ...]) -> frozenset[str]:
    return frozenset(k for k in (normalize_keyword(k) for k in keywords) if k)


def match_reply(
    body: str,
    *,
    opt_out_keywords: tuple[str, ...] = DEFAULT_OPT_OUT_KEYWORDS,
    opt_in_keywords: tuple[str, ...] = DEFAULT_OPT_IN_KEYWORDS,
) -> ReplyMatch | None:
    """The keyword a reply consists of, with its kind; None for any other reply. A word in both lists is an
    opt-out (when in doubt, stop sending)."""
    if not body or len(body) > MAX_REPLY_CHARS:
        return None
    text = normalize_keyword(body)
    if not text:
        return None
    opt_out, opt_in = _keyword_set(tuple(opt_out_keywords)), _keyword_set(tuple(opt_in_keywords))
    for candidate in (text, _without_courtesy(text)):
        if candidate in opt_out:
            return ReplyMatch("opt_out", candidate, candidate in ACCOUNT_WIDE_KEYWORDS)
        if candidate in opt_in:
            return ReplyMatch("opt_in", candidate, False)
    return None


def classify_reply(
    body: str,
    *,
    opt_out_keywords: tuple[str, ...] = DEFAULT_OPT_OUT_KEYWORDS,
    opt_in_keywords: tuple[str, ...] = DEFAULT_OPT_IN_KEYWORDS,
) -> ReplyKind | None:
    """`opt_out`, `opt_in` or None: see `match_reply` and the module docstring for the rule."""
    found = match_reply(body, opt_out_keywords=opt_out_keywords, opt_in_keywords=opt_in_keywords)
    return found.kind if found else None


def signature_name(text: str, position: Literal["prefix", "suffix"] = "prefix") -> str | None:
    """The name inside the 【…】 signature of a message text (at its start, or its end for "suffix")."""
    stripped = text.strip()
    if position == "prefix":
        if stripped.startswith("【") and "】" in stripped:
            name = stripped[1 : stripped.index("】")]
            return name.strip() or None
        return None
    if stripped.endswith("】") and "【" in stripped:
        name = stripped[stripped.rindex("【") + 1 : -1]
        return name.strip() or None
    return None
