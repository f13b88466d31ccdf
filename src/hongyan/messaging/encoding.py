"""SMS text encoding and segmentation (3GPP TS 23.038, TS 23.040).

A message is sent in the GSM 7-bit default alphabet (TS 23.038 §6.2.1, with the extension table of
§6.2.1.1 reached through ESC, each such character costing 2 septets) when every character is in it,
otherwise in UCS-2 (§6.2.3; we send UTF-16 so characters above U+FFFF take a surrogate pair, 2 units).

One SMS carries 140 octets of user data: 160 septets or 70 UTF-16 units. A concatenated message spends
6 octets on the user data header (TS 23.040 §9.2.3.24.1, 8-bit reference), leaving 153 septets or 67
units per segment. Escape pairs and surrogate pairs are never split across segments.

Pure functions, no I/O; the only module state is the constant tables below.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Encoding",
    "Segmentation",
    "decode_gsm7",
    "encode_gsm7",
    "encode_ucs2",
    "gsm7_septet_length",
    "is_gsm7",
    "pack_septets",
    "segment",
    "unpack_septets",
]

Encoding = Literal["gsm7", "ucs2"]

GSM7_SINGLE, GSM7_MULTI = 160, 153  # septets per SMS: alone / with a concatenation UDH
UCS2_SINGLE, UCS2_MULTI = 70, 67  # UTF-16 code units per SMS: alone / with a concatenation UDH

_ESC = 0x1B
# TS 23.038 §6.2.1 default alphabet, indexed by septet value: one row per 16 codes. 0x1B is ESC (escape
# to the extension table), not a character: it is excluded from the character set below. 0x09 is "Ç" as
# printed in the spec (unicode.org's GSM0338.TXT maps it to "ç" instead; we follow the spec).
_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # 0x10-0x1F
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)
# TS 23.038 §6.2.1.1 extension table: sent as ESC + code, 2 septets each.
_GSM7_EXTENSION = {
    0x0A: "\f",  # form feed (page break)
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
assert len(_GSM7_BASIC) == 128 and len(set(_GSM7_BASIC)) == 128

_EXT_CHARS = frozenset(_GSM7_EXTENSION.values())
_BASIC_CHARS = frozenset(_GSM7_BASIC) - {"\x1b"}
_GSM_CHARS = _BASIC_CHARS | _EXT_CHARS
# char -> unpacked septet(s), as a str.translate table (one code point per septet, later latin-1 encoded)
_ENCODE_TABLE = {ord(c): chr(i) for i, c in enumerate(_GSM7_BASIC) if i != _ESC}
_ENCODE_TABLE.update({ord(c): f"\x1b{chr(code)}" for code, c in _GSM7_EXTENSION.items()})

# Fast paths. ASCII text is checked with bytes.translate (C speed): deleting every GSM byte leaves the
# non-GSM ones; deleting the extension bytes tells how many cost 2 septets.
_ASCII_GSM = bytes(sorted(ord(c) for c in _GSM_CHARS if c.isascii()))
_ASCII_EXT = bytes(sorted(ord(c) for c in _EXT_CHARS if c.isascii()))
_NON_GSM_RE = re.compile("[^" + re.escape("".join(sorted(_GSM_CHARS))) + "]")
_EXT_RE = re.compile("[" + re.escape("".join(sorted(_EXT_CHARS))) + "]")
_ASTRAL_RE = re.compile("[\U00010000-\U0010ffff]")  # one surrogate pair each in UTF-16


@dataclass(frozen=True, slots=True)
class Segmentation:
    """How a text goes on the air: encoding, segment texts and unit counts."""

    encoding: Encoding
    segments: tuple[str, ...]  # "".join(segments) == the counted text (signature included)
    segment_count: int  # == len(segments); 1 for the empty text
    units: int  # septets (gsm7, extension chars count 2) or UTF-16 code units (ucs2)
    characters: int  # len(text): Python code points
    unit_limit: int  # 160/153 (gsm7) or 70/67 (ucs2): the per-segment limit that applies
    units_remaining: int  # free units in the last segment


def _gsm7_units(text: str) -> int | None:
    """Septet length of text (§6.2.1, §6.2.1.1), or None if some character is not in GSM 7-bit."""
    if text.isascii():
        raw = text.encode("ascii")
        if raw.translate(None, _ASCII_GSM):
            return None
        return 2 * len(raw) - len(raw.translate(None, _ASCII_EXT))
    if _NON_GSM_RE.search(text) is not None:
        return None
    return len(text) + len(_EXT_RE.findall(text))


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM 7-bit default alphabet or its extension table."""
    return _gsm7_units(text) is not None


def gsm7_septet_length(text: str) -> int:
    """Septets needed for text in GSM 7-bit (extension characters count 2); ValueError if not GSM."""
    units = _gsm7_units(text)
    if units is None:
        bad = _NON_GSM_RE.search(text)
        assert bad is not None
        raise ValueError(f"character {bad.group()!r} at index {bad.start()} is not in the GSM 7-bit alphabet")
    return units


def _ucs2_units(text: str) -> int:
    """UTF-16 code units: 2 for characters above U+FFFF (a surrogate pair), else 1."""
    return len(text) + len(_ASTRAL_RE.findall(text))


def _split(text: str, limit: int, wide: re.Pattern[str]) -> tuple[tuple[str, ...], int]:
    """Greedy split into segments of at most `limit` units; returns (segments, units in the last one).

    A character matching `wide` (a GSM extension character, or one above U+FFFF in UCS-2) costs 2 units
    and moves whole to the next segment when only 1 unit is left. Splitting is per code point: grapheme
    clusters (ZWJ emoji sequences, combining marks) are not kept together. Carriers split at code units
    without regard to clusters either; that is fine.
    """
    wide_at = [m.start() for m in wide.finditer(text)]  # sorted indexes of the 2-unit characters
    segments: list[str] = []
    start, n = 0, len(text)
    while True:
        end = min(start + limit, n)
        before = bisect_left(wide_at, start)
        used = end - start + bisect_left(wide_at, end, before) - before
        while used > limit:  # drop the fewest trailing characters that can remove the excess
            end -= (used - limit + 1) // 2
            used = end - start + bisect_left(wide_at, end, before) - before
        segments.append(text[start:end])
        if end >= n:
            return tuple(segments), used
        start = end


def segment(text: str, *, signature: str = "", udh_octets: int = 6) -> Segmentation:
    """Choose the encoding for signature+text and split it into SMS segments (TS 23.038, TS 23.040).

    The signature (e.g. "【鸿雁科技】") is a prefix that is counted and included in the segments.
    `udh_octets` is the concatenation header of each part: 6 with an 8-bit reference (153/67 per part,
    the figure prices are based on), 7 with a 16-bit reference (152/66).
    """
    if signature:
        text = signature + text
    n = len(text)
    units = _gsm7_units(text)
    if units is not None:
        encoding: Encoding = "gsm7"
        single, multi, wide = GSM7_SINGLE, (140 - udh_octets) * 8 // 7, _EXT_RE
    else:
        encoding = "ucs2"
        units = _ucs2_units(text)
        single, multi, wide = UCS2_SINGLE, (140 - udh_octets) // 2, _ASTRAL_RE
    if units <= single:
        return Segmentation(encoding, (text,), 1, units, n, single, single - units)
    if units == n:  # no 2-unit characters: plain slicing
        segments = tuple(text[i : i + multi] for i in range(0, n, multi))
        last = len(segments[-1])
    else:
        segments, last = _split(text, multi, wide)
    return Segmentation(encoding, segments, len(segments), units, n, multi, multi - last)


def encode_gsm7(text: str) -> bytes:
    """Unpacked GSM 7-bit: one septet per byte, extension characters as 0x1B + code (§6.2.1.1)."""
    gsm7_septet_length(text)  # raises ValueError on a character outside the alphabet
    return text.translate(_ENCODE_TABLE).encode("latin-1")


def decode_gsm7(data: bytes) -> str:
    """Inverse of encode_gsm7 (unpacked septets).

    As §6.2.1.1 asks of a receiver: ESC + an unknown code gives the basic-table character for the code,
    and ESC ESC (reserved for a further extension table) or a trailing ESC gives a space.
    """
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b > 0x7F:
            raise ValueError(f"byte 0x{b:02X} at {i} is not a septet")
        if b != _ESC:
            out.append(_GSM7_BASIC[b])
            i += 1
            continue
        if i + 1 >= n or data[i + 1] == _ESC:
            out.append(" ")
        else:
            code = data[i + 1]
            if code > 0x7F:
                raise ValueError(f"byte 0x{code:02X} at {i + 1} is not a septet")
            out.append(_GSM7_EXTENSION.get(code, _GSM7_BASIC[code]))
        i += 2
    return "".join(out)


def pack_septets(septets: bytes) -> bytes:
    """Pack septets 8 to 7 octets, least significant bit first (TS 23.038 §6.1.2.1.1).

    Spare bits of the last octet are zero; the septet count travels separately (the SMS UDL).
    """
    out = bytearray()
    acc = bits = 0
    for s in septets:
        if s > 0x7F:
            raise ValueError(f"0x{s:02X} is not a septet")
        acc |= s << bits
        bits += 7
        if bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8
    if bits:
        out.append(acc)
    return bytes(out)


def unpack_septets(data: bytes, count: int) -> bytes:
    """Inverse of pack_septets: the first `count` septets of packed data (§6.1.2.1.1)."""
    if count < 0 or count * 7 > len(data) * 8:
        raise ValueError(f"{len(data)} octets cannot hold {count} septets")
    out = bytearray()
    acc = bits = 0
    it = iter(data)
    for _ in range(count):
        if bits < 7:
            acc |= next(it) << bits
            bits += 8
        out.append(acc & 0x7F)
        acc >>= 7
        bits -= 7
    return bytes(out)


def encode_ucs2(text: str) -> bytes:
    """UTF-16-BE (TS 23.038 §6.2.3 UCS-2, with surrogate pairs kept for characters above U+FFFF)."""
    return text.encode("utf-16-be")
