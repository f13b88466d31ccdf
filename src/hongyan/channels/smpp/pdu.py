"""SMPP 3.4 protocol data units: encode and decode, no I/O.

Every PDU the platform sends or receives is described once, in `_BODIES`, as a list of mandatory
parameters (name, kind, max length); TLVs (optional parameters, §5.3) follow the mandatory part. Known TLV
tags are decoded to typed values under their names; unknown tags are kept as raw bytes under their integer
tag and written back unchanged, so a carrier's private TLVs pass through.

Malformed input raises `PduError` carrying the command_status a peer should get back; `fatal` is set when
the framing itself is lost (a bad command_length), after which the session must close the connection.
"""

from __future__ import annotations

import struct
from typing import Any

# -- command ids (§5.1.2.1) ---------------------------------------------------------------------------
RESP = 0x80000000
COMMANDS: dict[str, int] = {
    "generic_nack": 0x80000000,
    "bind_receiver": 0x00000001,
    "bind_receiver_resp": 0x80000001,
    "bind_transmitter": 0x00000002,
    "bind_transmitter_resp": 0x80000002,
    "query_sm": 0x00000003,
    "query_sm_resp": 0x80000003,
    "submit_sm": 0x00000004,
    "submit_sm_resp": 0x80000004,
    "deliver_sm": 0x00000005,
    "deliver_sm_resp": 0x80000005,
    "unbind": 0x00000006,
    "unbind_resp": 0x80000006,
    "replace_sm": 0x00000007,
    "replace_sm_resp": 0x80000007,
    "cancel_sm": 0x00000008,
    "cancel_sm_resp": 0x80000008,
    "bind_transceiver": 0x00000009,
    "bind_transceiver_resp": 0x80000009,
    "outbind": 0x0000000B,
    "enquire_link": 0x00000015,
    "enquire_link_resp": 0x80000015,
    "submit_multi": 0x00000021,
    "submit_multi_resp": 0x80000021,
    "alert_notification": 0x00000102,
    "data_sm": 0x00000103,
    "data_sm_resp": 0x80000103,
}
COMMAND_NAMES: dict[int, str] = {v: k for k, v in COMMANDS.items()}

# -- command_status values (§5.1.3) ---------------------------------------------------------------------
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RINVNUMDESTS = 0x33
ESME_RINVDESTFLAG = 0x40
ESME_RINVESMCLASS = 0x43
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65
ESME_RX_R_APPN = 0x66
ESME_RINVOPTPARSTREAM = 0xC0
ESME_RINVPARLEN = 0xC2
ESME_RMISSINGOPTPARAM = 0xC3
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF

STATUS_NAMES: dict[int, str] = {
    0x00: "ESME_ROK", 0x01: "ESME_RINVMSGLEN", 0x02: "ESME_RINVCMDLEN", 0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS", 0x05: "ESME_RALYBND", 0x06: "ESME_RINVPRTFLG", 0x07: "ESME_RINVREGDLVFLG",
    0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR", 0x0B: "ESME_RINVDSTADR", 0x0C: "ESME_RINVMSGID",
    0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD", 0x0F: "ESME_RINVSYSID", 0x11: "ESME_RCANCELFAIL",
    0x13: "ESME_RREPLACEFAIL", 0x14: "ESME_RMSGQFUL", 0x15: "ESME_RINVSERTYP", 0x33: "ESME_RINVNUMDESTS",
    0x34: "ESME_RINVDLNAME", 0x40: "ESME_RINVDESTFLAG", 0x42: "ESME_RINVSUBREP", 0x43: "ESME_RINVESMCLASS",
    0x44: "ESME_RCNTSUBDL", 0x45: "ESME_RSUBMITFAIL", 0x48: "ESME_RINVSRCTON", 0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON", 0x51: "ESME_RINVDSTNPI", 0x53: "ESME_RINVSYSTYP", 0x54: "ESME_RINVREPFLAG",
    0x55: "ESME_RINVNUMMSGS", 0x58: "ESME_RTHROTTLED", 0x61: "ESME_RINVSCHED", 0x62: "ESME_RINVEXPIRY",
    0x63: "ESME_RINVDFTMSGID", 0x64: "ESME_RX_T_APPN", 0x65: "ESME_RX_P_APPN", 0x66: "ESME_RX_R_APPN",
    0x67: "ESME_RQUERYFAIL", 0xC0: "ESME_RINVOPTPARSTREAM", 0xC1: "ESME_ROPTPARNOTALLWD",
    0xC2: "ESME_RINVPARLEN", 0xC3: "ESME_RMISSINGOPTPARAM", 0xC4: "ESME_RINVOPTPARAMVAL",
    0xFE: "ESME_RDELIVERYFAILURE", 0xFF: "ESME_RUNKNOWNERR",
}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


# -- TLVs (§5.3.2) ----------------------------------------------------------------------------------------
# kinds: u8, u16, u32, cstr (NUL-terminated text), str (text without NUL), oct (raw bytes)
TLVS: dict[int, tuple[str, str]] = {
    0x0005: ("dest_addr_subunit", "u8"),
    0x0006: ("dest_network_type", "u8"),
    0x0007: ("dest_bearer_type", "u8"),
    0x0008: ("dest_telematics_id", "u16"),
    0x000D: ("source_addr_subunit", "u8"),
    0x000E: ("source_network_type", "u8"),
    0x000F: ("source_bearer_type", "u8"),
    0x0010: ("source_telematics_id", "u8"),
    0x0017: ("qos_time_to_live", "u32"),
    0x0019: ("payload_type", "u8"),
    0x001D: ("additional_status_info_text", "cstr"),
    0x001E: ("receipted_message_id", "cstr"),
    0x0030: ("ms_msg_wait_facilities", "u8"),
    0x0201: ("privacy_indicator", "u8"),
    0x0202: ("source_subaddress", "oct"),
    0x0203: ("dest_subaddress", "oct"),
    0x0204: ("user_message_reference", "u16"),
    0x0205: ("user_response_code", "u8"),
    0x020A: ("source_port", "u16"),
    0x020B: ("destination_port", "u16"),
    0x020C: ("sar_msg_ref_num", "u16"),
    0x020D: ("language_indicator", "u8"),
    0x020E: ("sar_total_segments", "u8"),
    0x020F: ("sar_segment_seqnum", "u8"),
    0x0210: ("sc_interface_version", "u8"),
    0x0302: ("callback_num_pres_ind", "u8"),
    0x0303: ("callback_num_atag", "oct"),
    0x0304: ("number_of_messages", "u8"),
    0x0381: ("callback_num", "oct"),
    0x0420: ("dpf_result", "u8"),
    0x0421: ("set_dpf", "u8"),
    0x0422: ("ms_availability_status", "u8"),
    0x0423: ("network_error_code", "oct"),
    0x0424: ("message_payload", "oct"),
    0x0425: ("delivery_failure_reason", "u8"),
    0x0426: ("more_messages_to_send", "u8"),
    0x0427: ("message_state", "u8"),
    0x0501: ("ussd_service_op", "u8"),
    0x1201: ("display_time", "u8"),
    0x1203: ("sms_signal", "u16"),
    0x1204: ("ms_validity", "u8"),
    0x130C: ("alert_on_message_delivery", "oct"),
    0x1380: ("its_reply_type", "u8"),
    0x1383: ("its_session_info", "oct"),
}
_CSTR_TLV_MAX = {0x001D: 256, 0x001E: 65}  # §5.3.2.27 / §5.3.2.12: Var. max incl. the NUL
TLV_TAGS: dict[str, tuple[int, str]] = {name: (tag, kind) for tag, (name, kind) in TLVS.items()}

# message_state values (§5.2.28), used by query_sm_resp and the message_state TLV of receipts
MESSAGE_STATES: dict[int, str] = {
    1: "ENROUTE", 2: "DELIVERED", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIVERABLE", 6: "ACCEPTED",
    7: "UNKNOWN", 8: "REJECTED",
}

# -- mandatory parameters per PDU (§4) ---------------------------------------------------------------------
# kinds: u8, u32, ("c", max) C-octet string with max length including the NUL, "sm" short_message with
# its sm_length prefix, "dests" submit_multi destinations, "unsuccess" submit_multi_resp failures
_Field = tuple[str, Any]
_BIND: list[_Field] = [
    ("system_id", ("c", 16)), ("password", ("c", 9)), ("system_type", ("c", 13)), ("interface_version", "u8"),
    ("addr_ton", "u8"), ("addr_npi", "u8"), ("address_range", ("c", 41)),
]
_SM: list[_Field] = [
    ("service_type", ("c", 6)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", ("c", 21)),
    ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"), ("destination_addr", ("c", 21)), ("esm_class", "u8"),
    ("protocol_id", "u8"), ("priority_flag", "u8"), ("schedule_delivery_time", ("c", 17)),
    ("validity_period", ("c", 17)), ("registered_delivery", "u8"), ("replace_if_present_flag", "u8"),
    ("data_coding", "u8"), ("sm_default_msg_id", "u8"), ("short_message", "sm"),
]
_MESSAGE_ID: list[_Field] = [("message_id", ("c", 65))]
_BODIES: dict[str, list[_Field]] = {
    "generic_nack": [],
    "bind_receiver": _BIND,
    "bind_transmitter": _BIND,
    "bind_transceiver": _BIND,
    "bind_receiver_resp": [("system_id", ("c", 16))],
    "bind_transmitter_resp": [("system_id", ("c", 16))],
    "bind_transceiver_resp": [("system_id", ("c", 16))],
    "outbind": [("system_id", ("c", 16)), ("password", ("c", 9))],
    "unbind": [],
    "unbind_resp": [],
    "enquire_link": [],
    "enquire_link_resp": [],
    "submit_sm": _SM,
    "submit_sm_resp": _MESSAGE_ID,
    "deliver_sm": _SM,
    "deliver_sm_resp": [("message_id", ("c", 65))],  # always empty ("NULL") in 3.4; tolerated when not
    "data_sm": [
        ("service_type", ("c", 6)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
        ("source_addr", ("c", 65)), ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"),
        ("destination_addr", ("c", 65)), ("esm_class", "u8"), ("registered_delivery", "u8"), ("data_coding", "u8"),
    ],
    "data_sm_resp": _MESSAGE_ID,
    "query_sm": [
        ("message_id", ("c", 65)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", ("c", 21)),
    ],
    "query_sm_resp": [
        ("message_id", ("c", 65)), ("final_date", ("c", 17)), ("message_state", "u8"), ("error_code", "u8"),
    ],
    "cancel_sm": [
        ("service_type", ("c", 6)), ("message_id", ("c", 65)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
        ("source_addr", ("c", 21)), ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"), ("destination_addr", ("c", 21)),
    ],
    "cancel_sm_resp": [],
    "replace_sm": [
        ("message_id", ("c", 65)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", ("c", 21)),
        ("schedule_delivery_time", ("c", 17)), ("validity_period", ("c", 17)), ("registered_delivery", "u8"),
        ("sm_default_msg_id", "u8"), ("short_message", "sm"),
    ],
    "replace_sm_resp": [],
    "submit_multi": [
        ("service_type", ("c", 6)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", ("c", 21)),
        ("dest_address", "dests"), ("esm_class", "u8"), ("protocol_id", "u8"), ("priority_flag", "u8"),
        ("schedule_delivery_time", ("c", 17)), ("validity_period", ("c", 17)), ("registered_delivery", "u8"),
        ("replace_if_present_flag", "u8"), ("data_coding", "u8"), ("sm_default_msg_id", "u8"),
        ("short_message", "sm"),
    ],
    "submit_multi_resp": [("message_id", ("c", 65)), ("unsuccess_sme", "unsuccess")],
    "alert_notification": [
        ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", ("c", 65)),
        ("esme_addr_ton", "u8"), ("esme_addr_npi", "u8"), ("esme_addr", ("c", 65)),
    ],
}
_DEFAULTS = {"u8": 0, "u32": 0, "sm": b"", "dests": (), "unsuccess": ()}

HEADER = struct.Struct(">IIII")
MAX_PDU_LENGTH = 65536  # larger command_length values are treated as lost framing
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TLV_HEAD = struct.Struct(">HH")


class PduError(Exception):
    """Malformed or unacceptable PDU. `status` is the command_status to answer with."""

    def __init__(self, message: str, *, status: int = ESME_RSYSERR, command_id: int = 0, sequence: int = 0,
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence = sequence
        self.fatal = fatal


class Pdu:
    """One PDU: command name, status, sequence number, mandatory parameters and TLVs."""

    __slots__ = ("command", "command_id", "status", "sequence", "params", "tlvs")

    def __init__(self, command: str, sequence: int = 0, status: int = 0, tlvs: dict[Any, Any] | None = None,
                 **params: Any) -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown SMPP command {command!r}")
        self.command = command
        self.command_id = COMMANDS[command]
        self.status = status
        self.sequence = sequence
        self.params = params
        self.tlvs: dict[Any, Any] = tlvs if tlvs is not None else {}

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        if value is None:
            field = dict(_BODIES[self.command]).get(name)
            if field is None:
                return default
            return _DEFAULTS.get(field, "") if isinstance(field, str) else ""
        return value

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pdu):
            return NotImplemented
        return (self.command, self.status, self.sequence, self._normal(), self.tlvs) == (
            other.command, other.status, other.sequence, other._normal(), other.tlvs
        )

    def _normal(self) -> dict[str, Any]:
        return {name: self.get(name) for name, _ in _BODIES[self.command]}

    def __repr__(self) -> str:
        return f"Pdu({self.command!r}, seq={self.sequence}, status={status_name(self.status)}, {self.params}, tlvs={self.tlvs})"

    def response(self, status: int = 0, **params: Any) -> Pdu:
        """The matching *_resp (or generic_nack for PDUs without one) with the same sequence number."""
        name = self.command + "_resp"
        if name not in COMMANDS:
            name = "generic_nack"
        return Pdu(name, self.sequence, status, **params)


# -- encoding -----------------------------------------------------------------------------------------------
def _cstr(value: str | bytes, limit: int, name: str) -> bytes:
    raw = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if len(raw) >= limit:
        raise PduError(f"{name} is {len(raw)} octets; at most {limit - 1} allowed", status=ESME_RINVPARLEN)
    if b"\0" in raw:
        raise PduError(f"{name} contains a NUL octet", status=ESME_RINVPARLEN)
    return raw + b"\0"


def _encode_tlv(key: Any, value: Any) -> bytes:
    if isinstance(key, int):
        tag, kind = key, "oct"
        if key in TLVS:
            kind = TLVS[key][1]
    else:
        if key not in TLV_TAGS:
            raise PduError(f"unknown TLV {key!r}", status=ESME_RINVOPTPARSTREAM)
        tag, kind = TLV_TAGS[key]
    if kind == "u8":
        raw = bytes((value,))
    elif kind == "u16":
        raw = _U16.pack(value)
    elif kind == "u32":
        raw = _U32.pack(value)
    elif kind == "cstr":
        raw = _cstr(value, _CSTR_TLV_MAX.get(tag, 65536), TLVS[tag][0])
    else:
        raw = bytes(value)
    if len(raw) > 0xFFFF:
        raise PduError(f"TLV 0x{tag:04X} is longer than 65535 octets", status=ESME_RINVPARLEN)
    return _TLV_HEAD.pack(tag, len(raw)) + raw


def encode(pdu: Pdu) -> bytes:
    """The PDU as bytes on the wire (header + body). Raises PduError for values the spec does not allow."""
    try:
        return _encode(pdu)
    except (struct.error, ValueError, OverflowError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        raise PduError(f"{pdu.command}: value out of range: {exc}", status=ESME_RINVPARLEN,
                       command_id=pdu.command_id, sequence=pdu.sequence if isinstance(pdu.sequence, int) else 0) from None


def _encode(pdu: Pdu) -> bytes:
    parts: list[bytes] = []
    params = pdu.params
    # error responses carry no body (§4: "the body is not returned if command_status is non-zero")
    body_fields = _BODIES[pdu.command] if not (pdu.status and pdu.is_response and not params) else []
    for name, kind in body_fields:
        value = params.get(name)
        if kind == "u8":
            v = value or 0
            if not 0 <= v <= 0xFF:
                raise PduError(f"{name}={v} does not fit one octet", status=ESME_RINVPARLEN)
            parts.append(bytes((v,)))
        elif kind == "sm":
            raw = bytes(value or b"")
            if len(raw) > 254:
                raise PduError(f"short_message is {len(raw)} octets; at most 254 (use message_payload)",
                               status=ESME_RINVMSGLEN)
            parts.append(bytes((len(raw),)))
            parts.append(raw)
        elif kind == "dests":
            dests = list(value or ())
            if not 1 <= len(dests) <= 254:
                raise PduError("submit_multi needs 1 to 254 destinations", status=ESME_RINVNUMDESTS)
            parts.append(bytes((len(dests),)))
            for dest in dests:
                if "dl_name" in dest:
                    parts.append(b"\x02" + _cstr(dest["dl_name"], 21, "dl_name"))
                else:
                    parts.append(bytes((1, dest.get("dest_addr_ton", 0), dest.get("dest_addr_npi", 0))))
                    parts.append(_cstr(dest.get("destination_addr", ""), 21, "destination_addr"))
        elif kind == "unsuccess":
            items = list(value or ())
            parts.append(bytes((len(items),)))
            for item in items:
                parts.append(bytes((item.get("dest_addr_ton", 0), item.get("dest_addr_npi", 0))))
                parts.append(_cstr(item.get("destination_addr", ""), 21, "destination_addr"))
                parts.append(_U32.pack(item.get("error_status_code", 0)))
        else:
            parts.append(_cstr(value or "", kind[1], name))
    for key, value in pdu.tlvs.items():
        parts.append(_encode_tlv(key, value))
    body = b"".join(parts)
    return HEADER.pack(16 + len(body), pdu.command_id, pdu.status, pdu.sequence) + body


# -- decoding -------------------------------------------------------------------------------------------------
def _read_cstr(data: bytes, pos: int, limit: int, name: str, ctx: tuple[int, int]) -> tuple[str, int]:
    end = data.find(b"\0", pos, pos + limit)
    if end < 0:
        if len(data) - pos < limit and data.find(b"\0", pos) < 0:
            raise PduError(f"{name} is not NUL-terminated", status=ESME_RINVPARLEN, command_id=ctx[0], sequence=ctx[1])
        raise PduError(f"{name} is longer than {limit - 1} octets", status=ESME_RINVPARLEN,
                       command_id=ctx[0], sequence=ctx[1])
    return data[pos:end].decode("latin-1"), end + 1


def _need(data: bytes, pos: int, size: int, name: str, ctx: tuple[int, int]) -> None:
    if pos + size > len(data):
        raise PduError(f"PDU ends inside {name}", status=ESME_RINVCMDLEN, command_id=ctx[0], sequence=ctx[1])


def _decode_tlvs(data: bytes, pos: int, ctx: tuple[int, int]) -> dict[Any, Any]:
    tlvs: dict[Any, Any] = {}
    end = len(data)
    while pos < end:
        if pos + 4 > end:
            raise PduError("truncated TLV header", status=ESME_RINVOPTPARSTREAM, command_id=ctx[0], sequence=ctx[1])
        tag, length = _TLV_HEAD.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise PduError(f"TLV 0x{tag:04X} runs past the end of the PDU", status=ESME_RINVOPTPARSTREAM,
                           command_id=ctx[0], sequence=ctx[1])
        raw = data[pos : pos + length]
        pos += length
        known = TLVS.get(tag)
        if known is None:
            tlvs[tag] = raw
            continue
        name, kind = known
        size = {"u8": 1, "u16": 2, "u32": 4}.get(kind)
        if size is not None and length != size:
            raise PduError(f"TLV {name} has length {length}, expected {size}", status=ESME_RINVPARLEN,
                           command_id=ctx[0], sequence=ctx[1])
        if kind == "u8":
            tlvs[name] = raw[0]
        elif kind == "u16":
            tlvs[name] = _U16.unpack(raw)[0]
        elif kind == "u32":
            tlvs[name] = _U32.unpack(raw)[0]
        elif kind == "cstr":
            tlvs[name] = raw.rstrip(b"\0").decode("latin-1")
        else:
            tlvs[name] = raw
    return tlvs


def decode(data: bytes) -> Pdu:
    """One whole PDU (header included) to a Pdu. Raises PduError on anything malformed."""
    if len(data) < 16:
        raise PduError("PDU shorter than its 16-octet header", status=ESME_RINVCMDLEN, fatal=True)
    length, command_id, status, sequence = HEADER.unpack_from(data)
    if length != len(data):
        raise PduError(f"command_length {length} but {len(data)} octets given", status=ESME_RINVCMDLEN,
                       command_id=command_id, sequence=sequence, fatal=True)
    name = COMMAND_NAMES.get(command_id)
    if name is None:
        raise PduError(f"unknown command_id 0x{command_id:08X}", status=ESME_RINVCMDID,
                       command_id=command_id, sequence=sequence)
    ctx = (command_id, sequence)
    params: dict[str, Any] = {}
    pos = 16
    end = len(data)
    fields = _BODIES[name]
    # responses with an error status usually carry no body at all
    if not (command_id & RESP and pos == end):
        for field, kind in fields:
            if kind == "u8":
                _need(data, pos, 1, field, ctx)
                params[field] = data[pos]
                pos += 1
            elif kind == "sm":
                _need(data, pos, 1, "sm_length", ctx)
                sm_length = data[pos]
                _need(data, pos + 1, sm_length, field, ctx)
                params[field] = data[pos + 1 : pos + 1 + sm_length]
                pos += 1 + sm_length
            elif kind == "dests":
                _need(data, pos, 1, "number_of_dests", ctx)
                count = data[pos]
                pos += 1
                dests = []
                for _ in range(count):
                    _need(data, pos, 1, "dest_flag", ctx)
                    flag = data[pos]
                    pos += 1
                    if flag == 1:
                        _need(data, pos, 2, "dest_address", ctx)
                        ton, npi = data[pos], data[pos + 1]
                        addr, pos = _read_cstr(data, pos + 2, 21, "destination_addr", ctx)
                        dests.append({"dest_addr_ton": ton, "dest_addr_npi": npi, "destination_addr": addr})
                    elif flag == 2:
                        dl_name, pos = _read_cstr(data, pos, 21, "dl_name", ctx)
                        dests.append({"dl_name": dl_name})
                    else:
                        raise PduError(f"dest_flag {flag} is neither 1 nor 2", status=ESME_RINVDESTFLAG,
                                       command_id=command_id, sequence=sequence)
                params[field] = tuple(dests)
            elif kind == "unsuccess":
                _need(data, pos, 1, "no_unsuccess", ctx)
                count = data[pos]
                pos += 1
                items = []
                for _ in range(count):
                    _need(data, pos, 2, "unsuccess_sme", ctx)
                    ton, npi = data[pos], data[pos + 1]
                    addr, pos = _read_cstr(data, pos + 2, 21, "destination_addr", ctx)
                    _need(data, pos, 4, "error_status_code", ctx)
                    code = _U32.unpack_from(data, pos)[0]
                    pos += 4
                    items.append({"dest_addr_ton": ton, "dest_addr_npi": npi, "destination_addr": addr,
                                  "error_status_code": code})
                params[field] = tuple(items)
            else:
                if pos >= end and command_id & RESP:
                    break  # a response may stop after its last present field
                params[field], pos = _read_cstr(data, pos, kind[1], field, ctx)
    tlvs = _decode_tlvs(data, pos, ctx) if pos < end else {}
    pdu = Pdu(name, sequence, status, tlvs, **params)
    return pdu


class FrameReader:
    """Cuts a byte stream into whole PDUs. `feed` returns the complete frames received so far."""

    __slots__ = ("_buf", "max_length")

    def __init__(self, max_length: int = MAX_PDU_LENGTH) -> None:
        self._buf = bytearray()
        self.max_length = max_length

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        size = len(buf)
        while size - pos >= 4:
            length = _U32.unpack_from(buf, pos)[0]
            if length < 16 or length > self.max_length:
                raise PduError(f"command_length {length} is out of range; framing lost", status=ESME_RINVCMDLEN,
                               fatal=True)
            if size - pos < length:
                break
            frames.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return frames
