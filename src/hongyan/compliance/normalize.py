"""Text normalization for content-filter matching (pure, no I/O).

Senders dodge keyword lists by writing `代 开 发 票`, `代.开.发.票`, `ｄａｉｋａｉ`, `代開發票` or by hiding
zero-width characters between letters. Keywords and message texts go through the same per-character
mapping, so a keyword matches however the text dresses it up:

1. NFKC: full-width → half-width (`ｄａｉ` → `dai`), circled and styled letters and digits (`ⓐ`, `①`, `𝐚`), CJK
   compatibility ideographs → their plain forms.
2. casefold and accents removed (NFKD without combining marks): `VIAGRA`, `Viágra` → `viagra`.
3. traditional → simplified Chinese, character by character (`開發票` → `开发票`), from OpenCC's `t2s`
   character table. Phrase-level conversion is not used on purpose: it depends on the neighbouring
   characters, so a keyword converted alone could differ from the same words converted inside a text.
4. invisible characters (zero-width spaces and joiners, other format characters, combining marks such as
   the strike-through U+0336) are dropped; spaces, punctuation, symbols (emoji included) and control
   characters are separators.

Three forms come out of one table each: `fold()` keeps separators (what regexes and URL extraction read),
`compact()` drops them (what keywords are matched on), `spaced()` turns each into a space (where words
begin, for whole-word matching of Latin keywords); `compact(t) == spaced(t).replace(" ", "")` always.

Speed: the mapping is precomputed per code point into lists indexed by code point, so a message is one
`str.translate` call (C code, no per-character Python); pure-ASCII texts take a `bytes.translate` path.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import NamedTuple

# a separator between characters: spaces (Z*), punctuation (P*), symbols (S*: emoji, ★, ⚡, $), controls
SEPARATOR_CATEGORIES = frozenset(
    {"Zs", "Zl", "Zp", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Cc"}
)
# invisible: format characters (U+200B–U+200D, U+2060, U+FEFF, bidi marks, tags) and combining marks
INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
# code points with a slot in the lookup lists: the BMP and plane 1 (emoji, styled math letters)
_LISTED = 0x20000
# above that: CJK Extension B (traditional characters with simplified forms) and the invisible tag block
_CJK_BLOCKS = ((0x3400, 0x4DC0), (0x4E00, 0xA000), (0x20000, 0x2A6E0))
_TAGS = range(0xE0000, 0xE0080)
_ASTRAL = re.compile("[\U00020000-\U0010ffff]")


@cache
def traditional_to_simplified() -> dict[int, str]:
    """code point → simplified character, from OpenCC's t2s tables (converted once, ~40 ms).

    Every CJK character is converted on its own line in one call, so phrase rules never apply and each
    character gets its single-character form (the first candidate of TSCharacters)."""
    import opencc

    chars = [chr(c) for start, end in _CJK_BLOCKS for c in range(start, end)]
    converted = opencc.OpenCC("t2s.json").convert("\n".join(chars)).split("\n")
    if len(converted) != len(chars):  # a dictionary that maps a character to a line break: use none
        return {}
    return {ord(a): b for a, b in zip(chars, converted, strict=True) if a != b and len(b) == 1}


def _letter_form(char: str, t2s: dict[int, str]) -> str:
    """A non-separator character after casefold, accent removal and traditional → simplified."""
    folded = char.casefold()
    decomposed = unicodedata.normalize("NFKD", folded)
    if decomposed != folded:
        kept = "".join(x for x in decomposed if unicodedata.category(x) not in INVISIBLE_CATEGORIES)
        folded = unicodedata.normalize("NFC", kept)  # Hangul jamo back into syllables
    return "".join(t2s.get(ord(x), x) for x in folded)


def char_forms(char: str, t2s: dict[int, str]) -> tuple[str, str, str]:
    """(fold, compact, spaced) of one character. A character that NFKC changes is classified by what it
    becomes (`ⓐ` is a symbol that becomes the letter a; `！` becomes the separator `!`)."""
    category = unicodedata.category(char)
    if category in INVISIBLE_CATEGORIES:
        return "", "", ""
    nfkc = unicodedata.normalize("NFKC", char)
    if nfkc == char:
        if category in SEPARATOR_CATEGORIES:
            return char, "", " "
        form = _letter_form(char, t2s)
        return form, form, form
    fold: list[str] = []
    compact: list[str] = []
    spaced: list[str] = []
    for part in nfkc:
        part_category = unicodedata.category(part)
        if part_category in INVISIBLE_CATEGORIES:
            continue
        if part_category in SEPARATOR_CATEGORIES:
            fold.append(part)
            spaced.append(" ")
        else:
            form = _letter_form(part, t2s)
            fold.append(form)
            compact.append(form)
            spaced.append(form)
    return "".join(fold), "".join(compact), "".join(spaced)


class Tables(NamedTuple):
    """str.translate tables: lists indexed by code point below U+20000, dicts for the few above."""

    fold: list[str]
    compact: list[str]
    spaced: list[str]
    astral_fold: dict[int, str]
    astral_compact: dict[int, str]
    astral_spaced: dict[int, str]
    ascii_lower: bytes  # bytes.translate table of the ASCII compact form
    ascii_separators: bytes  # the ASCII bytes compact() deletes


@cache
def tables() -> Tables:
    """Built once per process (~0.3 s, ~12 MB): call `warm_up()` at start-up to keep it off a request."""
    t2s = traditional_to_simplified()
    fold: list[str] = []
    compact: list[str] = []
    spaced: list[str] = []
    category = unicodedata.category
    is_nfkc = unicodedata.is_normalized
    for code in range(_LISTED):
        char = chr(code)
        # the common case (a letter, digit or CJK character that no step changes) without building forms
        if (
            category(char) not in SEPARATOR_CATEGORIES
            and category(char) not in INVISIBLE_CATEGORIES
            and code not in t2s
            and is_nfkc("NFKD", char)
            and char.casefold() == char
            and is_nfkc("NFKC", char)
        ):
            fold.append(char)
            compact.append(char)
            spaced.append(char)
            continue
        f, c, s = char_forms(char, t2s)
        fold.append(f)
        compact.append(c)
        spaced.append(s)
    astral_fold: dict[int, str] = {}
    astral_compact: dict[int, str] = {}
    astral_spaced: dict[int, str] = {}
    for code in [c for c in t2s if c >= _LISTED] + list(_TAGS):
        astral_fold[code], astral_compact[code], astral_spaced[code] = char_forms(chr(code), t2s)
    lower = bytearray(range(256))
    separators = bytearray()
    for code in range(128):
        form = compact[code]
        if form == "":
            separators.append(code)
        else:
            assert len(form) == 1 and form.isascii(), (code, form)
            lower[code] = ord(form)
    return Tables(
        fold, compact, spaced, astral_fold, astral_compact, astral_spaced, bytes(lower), bytes(separators)
    )


def warm_up() -> None:
    """Build the tables now (at start-up) rather than on the first message."""
    tables()


def fold(text: str) -> str:
    """NFKC, casefold, accents removed, traditional → simplified, invisible characters dropped; separators
    kept (full-width ones as their half-width forms)."""
    if text.isascii():
        return text.lower()
    t = tables()
    out = text.translate(t.fold)
    return out.translate(t.astral_fold) if _ASTRAL.search(out) else out


def compact(text: str) -> str:
    """The matching form of a text or keyword: `代 開.發＊票` → `代开发票`, `ＶｉＡ-gra` → `viagra`."""
    t = tables()
    if text.isascii():
        return text.encode("ascii").translate(t.ascii_lower, t.ascii_separators).decode("ascii")
    out = text.translate(t.compact)
    return out.translate(t.astral_compact) if _ASTRAL.search(out) else out


def spaced(text: str) -> str:
    """Like `compact` with every separator a space instead of removed (the text's words stay apart)."""
    t = tables()
    out = text.translate(t.spaced)
    return out.translate(t.astral_spaced) if _ASTRAL.search(out) else out


def is_spaced_letter(char: str) -> bool:
    """A letter of a script written with spaces between words (Latin, Greek, Cyrillic…): a keyword edge of
    this kind must sit on a word boundary, so `sex` does not match inside `Essex`. CJK and kana (from
    U+2E80 on) are written without spaces, so their keywords match anywhere."""
    return char.isalpha() and ord(char) < 0x2E80


def word_starts(text: str) -> frozenset[int]:
    """Positions in `compact(text)` where a word of the text begins (and where the last one ends): any
    separator (space, dot, star, emoji) ends a word. Computed per word, not per character."""
    position = 0
    starts = {0}
    for word in spaced(text).split(" "):
        position += len(word)
        starts.add(position)
    return frozenset(starts)
