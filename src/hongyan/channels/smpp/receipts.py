"""Delivery receipts and inbound (MO) short messages carried by deliver_sm / data_sm.

Receipts (SMPP 3.4 §2.11, Appendix B): esm_class bits 2–5 say "SMSC delivery receipt" (0x04) or an
intermediate notification (0x20); the carrier's message id and final state come from the
`receipted_message_id` and `message_state` TLVs when present, else from the text format
`id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:…`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hongyan.channels.smpp.pdu import Pdu
from hongyan.messaging.encoding import decode_gsm7, unpack_septets
from hongyan.messaging.states import Status

ESM_TYPE_MASK = 0x3C
ESM_DELIVERY_RECEIPT = 0x04
ESM_INTERMEDIATE = 0x20
ESM_UDHI = 0x40

# stat: values of the text format, and message_state TLV values (§5.2.28), to our statuses.
# None = not final (the message is still on its way): recorded as seen, no state change.
STAT_TO_STATUS: dict[str, Status | None] = {
    "DELIVRD": Status.DELIVERED,
    "UNDELIV": Status.UNDELIVERED,
    "EXPIRED": Status.EXPIRED,
    "REJECTD": Status.REJECTED,
    "DELETED": Status.UNDELIVERED,
    "UNKNOWN": Status.UNDELIVERED,
    "ACCEPTD": None,
    "ENROUTE": None,
}
STATE_TO_STAT = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN",
                 8: "REJECTD"}

_FIELD_RE = re.compile(r"(id|stat|err|sub|dlvrd|submit date|done date)\s*:\s*(\S*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    carrier_message_id: str
    stat: str  # DELIVRD, UNDELIV, … as the carrier said it (upper case)
    status: Status | None  # None: intermediate
    error: str | None


def is_receipt(pdu: Pdu) -> bool:
    esm = pdu.get("esm_class") or 0
    return bool(esm & ESM_TYPE_MASK in (ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE, 0x08, 0x10)) or (
        "receipted_message_id" in pdu.tlvs
    )


def parse_receipt_text(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in _FIELD_RE.finditer(text)}


def parse_receipt(pdu: Pdu) -> ParsedReceipt | None:
    """The receipt in a deliver_sm/data_sm, or None when the PDU is not a receipt or names no message."""
    if not is_receipt(pdu):
        return None
    raw = pdu.get("short_message") or pdu.tlvs.get("message_payload") or b""
    fields = parse_receipt_text(bytes(raw).decode("latin-1")) if raw else {}
    carrier_id = pdu.tlvs.get("receipted_message_id") or fields.get("id")
    if not carrier_id:
        return None
    state = pdu.tlvs.get("message_state")
    stat = STATE_TO_STAT.get(state) if state is not None else None
    stat = (stat or fields.get("stat") or "UNKNOWN").upper()
    error = fields.get("err")
    nec = pdu.tlvs.get("network_error_code")
    if (not error or error.strip("0") == "") and isinstance(nec, bytes) and len(nec) == 3 and nec[1:] != b"\0\0":
        error = f"{nec[0]}:{int.from_bytes(nec[1:], 'big')}"  # network type : network-specific code
    return ParsedReceipt(str(carrier_id), stat, STAT_TO_STATUS.get(stat, Status.UNDELIVERED), error)


def normalize_carrier_id(carrier_id: str, mode: str) -> str:
    """Some SMSCs answer submit_sm with a hex id but put a decimal one in receipts (or the reverse).

    Channels declare `receipt_id_format`: `same` (default), `hex_to_dec` (receipt id is the decimal of
    the hex submit id) or `dec_to_hex`. Ids are stored as the submit_sm_resp gave them; receipt ids are
    converted back before matching. Ids are also stripped of leading zeros in the numeric modes."""
    if mode == "hex_to_dec":
        try:
            return format(int(carrier_id, 10), "x")
        except ValueError:
            return carrier_id
    if mode == "dec_to_hex":
        try:
            return str(int(carrier_id, 16))
        except ValueError:
            return carrier_id
    return carrier_id


# -- MO text ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Concat:
    reference: int
    total: int
    sequence: int


def split_udh(payload: bytes) -> tuple[Concat | None, int]:
    """(concatenation info, header length in octets incl. the UDHL octet). Malformed headers: no concat."""
    if not payload:
        return None, 0
    udhl = payload[0]
    header = payload[1 : 1 + udhl]
    concat = None
    i = 0
    while i + 2 <= len(header):
        iei, length = header[i], header[i + 1]
        value = header[i + 2 : i + 2 + length]
        if iei == 0x00 and length == 3 and len(value) == 3:
            concat = Concat(value[0], value[1], value[2])
        elif iei == 0x08 and length == 4 and len(value) == 4:
            concat = Concat(int.from_bytes(value[:2], "big"), value[2], value[3])
        i += 2 + length
    return concat, min(len(payload), 1 + udhl)


def decode_text(data: bytes, data_coding: int, *, gsm_packed: bool = False, header_octets: int = 0) -> str:
    """Text of an MO's user data (`data` includes the UDH of `header_octets`, 0 without one) from its
    data_coding (TS 23.038 coding groups); unknown codings as Latin-1. Packed GSM text after a UDH starts
    at the next septet boundary (fill bits), so it is unpacked from the start of the user data."""
    coding = data_coding
    if coding & 0xF0 == 0xF0:  # data coding / message class group: bit 2 = 8-bit data
        coding = 4 if coding & 0x04 else 0
    elif coding & 0xC0 == 0x00 and coding & 0x0C:  # general data coding group with an alphabet set
        coding = {0x04: 4, 0x08: 8}.get(coding & 0x0C, coding)
    if coding == 0 and gsm_packed:
        skip = -(-header_octets * 8 // 7)
        septets = unpack_septets(data, len(data) * 8 // 7)[skip:]
        if septets.endswith(b"\0") and (len(data) * 8) % 7 == 0:
            septets = septets[:-1]  # a last septet of padding (TS 23.038 §6.1.2.3.1: CR or zero)
        return decode_gsm7(septets)
    data = data[header_octets:]
    if coding == 8:
        return data[: len(data) // 2 * 2].decode("utf-16-be", errors="replace")
    if coding == 0:
        try:
            return decode_gsm7(bytes(b & 0x7F for b in data))
        except ValueError:
            return data.decode("latin-1")
    if coding == 1:
        return data.decode("ascii", errors="replace")
    return data.decode("latin-1")
