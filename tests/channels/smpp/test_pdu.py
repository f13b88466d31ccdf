"""The SMPP 3.4 PDU codec: round trips, spec byte layouts, malformed input, fuzzing, and a cross-check
against an independent implementation (smpplib 2.2.3)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import smpplib.consts
import smpplib.smpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hongyan.channels.smpp.pdu import (
    _BODIES,
    COMMAND_NAMES,
    COMMANDS,
    MAX_PDU_LENGTH,
    TLV_TAGS,
    TLVS,
    FrameReader,
    Pdu,
    PduError,
    decode,
    encode,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _header(length: int, command_id: int, status: int = 0, sequence: int = 1) -> bytes:
    return struct.pack(">IIII", length, command_id, status, sequence)


def _with_length(wire: bytes) -> bytes:
    """`wire` with its command_length rewritten to its real size."""
    return struct.pack(">I", len(wire)) + wire[4:]


# -- the mandatory parameters of every PDU, written out from SMPP 3.4 §4 (independently of _BODIES) --------
def C(size: int) -> tuple[str, int]:  # noqa: N802 - reads like the spec's "C-Octet String, max size"
    return ("c", size)


_SPEC_BIND = [
    ("system_id", C(16)), ("password", C(9)), ("system_type", C(13)), ("interface_version", "u8"),
    ("addr_ton", "u8"), ("addr_npi", "u8"), ("address_range", C(41)),
]
_SPEC_SM = [
    ("service_type", C(6)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", C(21)),
    ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"), ("destination_addr", C(21)), ("esm_class", "u8"),
    ("protocol_id", "u8"), ("priority_flag", "u8"), ("schedule_delivery_time", C(17)),
    ("validity_period", C(17)), ("registered_delivery", "u8"), ("replace_if_present_flag", "u8"),
    ("data_coding", "u8"), ("sm_default_msg_id", "u8"), ("short_message", "sm"),
]
SPEC_BODIES: dict[str, list[tuple[str, Any]]] = {
    "generic_nack": [],
    "bind_receiver": _SPEC_BIND,
    "bind_transmitter": _SPEC_BIND,
    "bind_transceiver": _SPEC_BIND,
    "bind_receiver_resp": [("system_id", C(16))],
    "bind_transmitter_resp": [("system_id", C(16))],
    "bind_transceiver_resp": [("system_id", C(16))],
    "outbind": [("system_id", C(16)), ("password", C(9))],
    "unbind": [],
    "unbind_resp": [],
    "enquire_link": [],
    "enquire_link_resp": [],
    "submit_sm": _SPEC_SM,
    "submit_sm_resp": [("message_id", C(65))],
    "deliver_sm": _SPEC_SM,
    "deliver_sm_resp": [("message_id", C(65))],
    "data_sm": [
        ("service_type", C(6)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", C(65)),
        ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"), ("destination_addr", C(65)), ("esm_class", "u8"),
        ("registered_delivery", "u8"), ("data_coding", "u8"),
    ],
    "data_sm_resp": [("message_id", C(65))],
    "query_sm": [("message_id", C(65)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", C(21))],
    "query_sm_resp": [("message_id", C(65)), ("final_date", C(17)), ("message_state", "u8"), ("error_code", "u8")],
    "cancel_sm": [
        ("service_type", C(6)), ("message_id", C(65)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"),
        ("source_addr", C(21)), ("dest_addr_ton", "u8"), ("dest_addr_npi", "u8"), ("destination_addr", C(21)),
    ],
    "cancel_sm_resp": [],
    "replace_sm": [
        ("message_id", C(65)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", C(21)),
        ("schedule_delivery_time", C(17)), ("validity_period", C(17)), ("registered_delivery", "u8"),
        ("sm_default_msg_id", "u8"), ("short_message", "sm"),
    ],
    "replace_sm_resp": [],
    "submit_multi": [
        ("service_type", C(6)), ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", C(21)),
        ("dest_address", "dests"), ("esm_class", "u8"), ("protocol_id", "u8"), ("priority_flag", "u8"),
        ("schedule_delivery_time", C(17)), ("validity_period", C(17)), ("registered_delivery", "u8"),
        ("replace_if_present_flag", "u8"), ("data_coding", "u8"), ("sm_default_msg_id", "u8"),
        ("short_message", "sm"),
    ],
    "submit_multi_resp": [("message_id", C(65)), ("unsuccess_sme", "unsuccess")],
    "alert_notification": [
        ("source_addr_ton", "u8"), ("source_addr_npi", "u8"), ("source_addr", C(65)),
        ("esme_addr_ton", "u8"), ("esme_addr_npi", "u8"), ("esme_addr", C(65)),
    ],
}

SPEC_COMMAND_IDS = {
    "generic_nack": 0x80000000, "bind_receiver": 0x01, "bind_receiver_resp": 0x80000001,
    "bind_transmitter": 0x02, "bind_transmitter_resp": 0x80000002, "query_sm": 0x03, "query_sm_resp": 0x80000003,
    "submit_sm": 0x04, "submit_sm_resp": 0x80000004, "deliver_sm": 0x05, "deliver_sm_resp": 0x80000005,
    "unbind": 0x06, "unbind_resp": 0x80000006, "replace_sm": 0x07, "replace_sm_resp": 0x80000007,
    "cancel_sm": 0x08, "cancel_sm_resp": 0x80000008, "bind_transceiver": 0x09, "bind_transceiver_resp": 0x80000009,
    "outbind": 0x0B, "enquire_link": 0x15, "enquire_link_resp": 0x80000015, "submit_multi": 0x21,
    "submit_multi_resp": 0x80000021, "alert_notification": 0x102, "data_sm": 0x103, "data_sm_resp": 0x80000103,
}


def test_command_ids_match_the_spec() -> None:
    assert COMMANDS == SPEC_COMMAND_IDS
    assert {v: k for k, v in SPEC_COMMAND_IDS.items()} == COMMAND_NAMES


@pytest.mark.parametrize("command", sorted(SPEC_COMMAND_IDS))
def test_mandatory_parameters_match_the_spec(command: str) -> None:
    assert list(_BODIES[command]) == SPEC_BODIES[command]


# -- values for every mandatory parameter -------------------------------------------------------------------
def _filler(length: int, salt: int = 0) -> str:
    """`length` printable ASCII characters (no space, never NUL)."""
    return "".join(chr(33 + (i * 7 + salt) % 94) for i in range(length))


def _value(name: str, kind: Any, variant: str) -> Any:
    salt = sum(map(ord, name))
    if kind == "u8":
        return 1 + salt % 254 if variant == "typical" else 0xFF
    if kind == "sm":
        if variant == "typical":
            return b"Hello \x00\xff\x1b world"  # NUL and high octets are plain data in short_message
        return bytes(i % 256 for i in range(254))  # the largest short_message allowed
    if kind == "dests":
        if variant == "typical":
            return (
                {"dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "8613800000001"},
                {"dl_name": "friends"},
                {"dest_addr_ton": 5, "dest_addr_npi": 0, "destination_addr": "HONGYAN"},
            )
        sme = [{"dest_addr_ton": i % 7, "dest_addr_npi": i % 19, "destination_addr": _filler(20, i)} for i in range(200)]
        dls = [{"dl_name": _filler(20, i)} for i in range(54)]
        return tuple(sme[:100] + dls + sme[100:])  # 254 destinations, both kinds, interleaved
    if kind == "unsuccess":
        if variant == "typical":
            return (
                {"dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "8613800000002", "error_status_code": 0x0B},
                {"dest_addr_ton": 2, "dest_addr_npi": 9, "destination_addr": "447911123456", "error_status_code": 0x45},
            )
        return tuple(
            {"dest_addr_ton": 0xFF, "dest_addr_npi": 0xFF, "destination_addr": _filler(20, i),
             "error_status_code": 0xFFFFFFFF - i}
            for i in range(3)
        )
    size = kind[1]
    if variant == "typical":
        return _filler(max(1, (size - 1) // 2), salt)
    return _filler(size - 1, salt)  # a C-octet string at its max size: size - 1 characters and the NUL


TYPICAL_TLVS: dict[Any, Any] = {
    "user_message_reference": 0xBEEF,
    "qos_time_to_live": 0xDEADBEEF,
    "sar_segment_seqnum": 2,
    "receipted_message_id": "rcpt-0001",
    "message_payload": b"\x00\x01 long payload \xff",
    "alert_on_message_delivery": b"",  # a zero-length TLV
    0x1401: b"CARRIER-7",  # unknown (vendor) tag: kept as bytes under its number
}
MAX_TLVS: dict[Any, Any] = {
    "message_payload": bytes(i % 256 for i in range(4000)),
    "additional_status_info_text": _filler(255),
    "dest_telematics_id": 0xFFFF,
    "message_state": 8,
    0x1401: b"",
    0x3FFF: b"\x00" * 10,
}


def _params(command: str, variant: str) -> dict[str, Any]:
    return {name: _value(name, kind, variant) for name, kind in SPEC_BODIES[command]}


@pytest.mark.parametrize("variant", ["typical", "max"])
@pytest.mark.parametrize("command", sorted(SPEC_COMMAND_IDS))
def test_round_trip_every_command(command: str, variant: str) -> None:
    params = _params(command, variant)
    tlvs = dict(TYPICAL_TLVS if variant == "typical" else MAX_TLVS)
    sequence = 0x7FFFFFFF if variant == "max" else 4242
    pdu = Pdu(command, sequence, tlvs=dict(tlvs), **params)
    wire = encode(pdu)
    length, command_id, status, seq = struct.unpack(">IIII", wire[:16])
    assert (length, command_id, status, seq) == (len(wire), SPEC_COMMAND_IDS[command], 0, sequence)
    back = decode(wire)
    assert back == pdu
    assert back.command == command and back.sequence == sequence and back.status == 0
    assert back.params == params  # every mandatory parameter came back, none dropped, none added
    assert back.tlvs == tlvs
    assert encode(back) == wire
    assert FrameReader().feed(wire) == [wire]


def test_round_trip_keeps_tlv_order_and_types() -> None:
    tlvs = {0x1401: b"x", "sar_msg_ref_num": 7, "source_port": 0xFFFF, "sc_interface_version": 0x34,
            "network_error_code": b"\x03\x00\x11", "callback_num": b"\x01\x01123"}
    wire = encode(Pdu("data_sm", 5, tlvs=tlvs, source_addr="a", destination_addr="b"))
    back = decode(wire)
    assert list(back.tlvs.items()) == list(tlvs.items())
    assert isinstance(back.tlvs["sar_msg_ref_num"], int) and isinstance(back.tlvs["network_error_code"], bytes)


@pytest.mark.parametrize(
    ("command", "status", "params"),
    [("bind_transceiver_resp", 0x0D, {"system_id": "SMSC"}), ("submit_sm_resp", 0x58, {"message_id": ""}),
     ("submit_multi_resp", 0x45, {"message_id": "", "unsuccess_sme": ()}), ("generic_nack", 0x03, {})],
)
def test_error_responses_with_a_body_round_trip(command: str, status: int, params: dict[str, Any]) -> None:
    pdu = Pdu(command, 9, status, **params)
    wire = encode(pdu)
    back = decode(wire)
    assert back == pdu and back.status == status and encode(back) == wire


# -- exact bytes, computed by hand from the SMPP 3.4 layouts --------------------------------------------------
def test_enquire_link_bytes() -> None:
    wire = encode(Pdu("enquire_link", 1))
    assert wire == bytes.fromhex("00000010 00000015 00000000 00000001")
    assert len(wire) == 16
    assert decode(wire) == Pdu("enquire_link", 1)


BIND_TRANSCEIVER_HEX = (
    "0000002f 00000009 00000000 00000001"  # length 47, bind_transceiver, status 0, sequence 1
    "534d505033544553 5400"  # system_id "SMPP3TEST\0"
    "7365637265743038 00"  # password "secret08\0"
    "5355424d49543100"  # system_type "SUBMIT1\0"
    "34 01 01"  # interface_version 3.4, addr_ton 1, addr_npi 1
    "00"  # address_range ""
)


def test_bind_transceiver_bytes() -> None:
    pdu = Pdu("bind_transceiver", 1, system_id="SMPP3TEST", password="secret08", system_type="SUBMIT1",
              interface_version=0x34, addr_ton=1, addr_npi=1)
    assert encode(pdu) == bytes.fromhex(BIND_TRANSCEIVER_HEX)
    back = decode(bytes.fromhex(BIND_TRANSCEIVER_HEX))
    assert back == pdu
    assert back["system_id"] == "SMPP3TEST" and back["password"] == "secret08" and back["address_range"] == ""


def test_error_submit_sm_resp_is_header_only() -> None:
    wire = bytes.fromhex("00000010 80000004 00000045 00000007")  # ESME_RSUBMITFAIL, no body (§4.4.2)
    assert encode(Pdu("submit_sm_resp", 7, 0x45)) == wire
    back = decode(wire)
    assert (back.command, back.status, back.sequence, back.params, back.tlvs) == ("submit_sm_resp", 0x45, 7, {}, {})
    assert back["message_id"] == ""
    assert encode(back) == wire


DELIVERY_RECEIPT_HEX = (
    "0000004f 00000005 00000000 00000002"  # length 79, deliver_sm, status 0, sequence 2
    "00"  # service_type ""
    "01 01 38363133383030303030303031 00"  # source 1/1 "8613800000001"
    "00 00 3130363930 00"  # destination 0/0 "10690"
    "04"  # esm_class: SMSC delivery receipt
    "00 00 00 00 00 00 00 00"  # protocol_id, priority, schedule "", validity "", registered, replace, dcs, default id
    "11 69643a372073746174 3a44454c49565244"  # sm_length 17, "id:7 stat:DELIVRD"
    "001e 0002 3700"  # receipted_message_id "7\0"
    "0427 0001 02"  # message_state DELIVERED
)


def test_delivery_receipt_bytes() -> None:
    pdu = Pdu("deliver_sm", 2, tlvs={"receipted_message_id": "7", "message_state": 2}, source_addr_ton=1,
              source_addr_npi=1, source_addr="8613800000001", destination_addr="10690", esm_class=0x04,
              short_message=b"id:7 stat:DELIVRD")
    wire = bytes.fromhex(DELIVERY_RECEIPT_HEX)
    assert encode(pdu) == wire
    back = decode(wire)
    assert back == pdu
    assert back.tlvs == {"receipted_message_id": "7", "message_state": 2}
    assert back["short_message"] == b"id:7 stat:DELIVRD" and back["esm_class"] == 4


def test_submit_multi_and_resp_bytes() -> None:
    pdu = Pdu("submit_multi", 3, source_addr_ton=1, source_addr_npi=1, source_addr="123", registered_delivery=1,
              dest_address=({"dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "456"}, {"dl_name": "list"}),
              short_message=b"hi")
    wire = bytes.fromhex(
        "00000031 00000021 00000000 00000003"
        "00 01 01 31323300"  # service_type, source 1/1 "123"
        "02"  # number_of_dests
        "01 01 01 34353600"  # dest_flag 1 (SME), 1/1 "456"
        "02 6c69737400"  # dest_flag 2 (distribution list) "list"
        "00 00 00 00 00 01 00 00 00"  # esm, pid, priority, schedule, validity, registered 1, replace, dcs, default id
        "02 6869"  # "hi"
    )
    assert encode(pdu) == wire
    assert decode(wire) == pdu
    resp = Pdu("submit_multi_resp", 3, message_id="m1", unsuccess_sme=(
        {"dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "456", "error_status_code": 0x0B},))
    resp_wire = bytes.fromhex("0000001e 80000021 00000000 00000003 6d3100 01 01 01 34353600 0000000b")
    assert encode(resp) == resp_wire
    assert decode(resp_wire) == resp


# -- encode errors ------------------------------------------------------------------------------------------
def test_encode_rejects_too_long_c_string() -> None:
    encode(Pdu("bind_transceiver", 1, system_id="x" * 15))  # 15 + NUL = 16: allowed
    with pytest.raises(PduError) as err:
        encode(Pdu("bind_transceiver", 1, system_id="x" * 16))
    assert err.value.status == 0xC2
    with pytest.raises(PduError) as err:
        encode(Pdu("submit_sm", 1, destination_addr="1" * 21))
    assert err.value.status == 0xC2


def test_encode_rejects_nul_in_c_string() -> None:
    with pytest.raises(PduError) as err:
        encode(Pdu("bind_transceiver", 1, system_id="ab\0cd"))
    assert err.value.status == 0xC2


def test_encode_rejects_long_short_message() -> None:
    encode(Pdu("submit_sm", 1, short_message=b"x" * 254))
    with pytest.raises(PduError) as err:
        encode(Pdu("submit_sm", 1, short_message=b"x" * 255))
    assert err.value.status == 0x01


def test_encode_rejects_u8_out_of_range() -> None:
    with pytest.raises(PduError) as err:
        encode(Pdu("submit_sm", 1, esm_class=256))
    assert err.value.status == 0xC2


@pytest.mark.parametrize("count", [0, 255])
def test_encode_rejects_bad_destination_count(count: int) -> None:
    dests = tuple({"destination_addr": str(i)} for i in range(count))
    with pytest.raises(PduError) as err:
        encode(Pdu("submit_multi", 1, dest_address=dests))
    assert err.value.status == 0x33


# encode() promises "Raises PduError for values the spec does not allow": integers wider than their field,
# C-octet strings outside the 8-bit range, a receipted_message_id longer than its Var. max 65. (Found by
# this test: they used to escape as ValueError / struct.error / UnicodeEncodeError.)
OUT_OF_RANGE = {
    "tlv_u8_256": Pdu("submit_sm", 1, tlvs={"message_state": 256}),
    "tlv_u8_negative": Pdu("submit_sm", 1, tlvs={"sar_total_segments": -1}),
    "tlv_u16_65536": Pdu("submit_sm", 1, tlvs={"sar_msg_ref_num": 0x10000}),
    "tlv_u32_2**32": Pdu("submit_sm", 1, tlvs={"qos_time_to_live": 2**32}),
    "dest_addr_ton_256": Pdu("submit_multi", 1, dest_address=({"dest_addr_ton": 256, "destination_addr": "1"},)),
    "unsuccess_ton_256": Pdu("submit_multi_resp", 1, unsuccess_sme=({"dest_addr_ton": 256},)),
    "unsuccess_error_code_2**32": Pdu("submit_multi_resp", 1, unsuccess_sme=({"error_status_code": 2**32},)),
    "no_unsuccess_256": Pdu("submit_multi_resp", 1, unsuccess_sme=tuple({"destination_addr": "1"} for _ in range(256))),
    "sequence_2**32": Pdu("enquire_link", 2**32),
    "non_ascii_c_string": Pdu("submit_sm", 1, source_addr="中国"),
    "non_ascii_tlv_c_string": Pdu("deliver_sm", 1, tlvs={"receipted_message_id": "中"}),
    "receipted_message_id_65_chars": Pdu("deliver_sm", 1, tlvs={"receipted_message_id": "x" * 65}),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_encode_out_of_range_values_raise_pdu_error(case: str) -> None:
    with pytest.raises(PduError):
        encode(OUT_OF_RANGE[case])


# -- decode errors ------------------------------------------------------------------------------------------
RECEIPT_NO_TLVS = encode(Pdu("deliver_sm", 77, source_addr="8613800000001", destination_addr="10690",
                             service_type="CMT", short_message=b"id:7 stat:DELIVRD"))


@pytest.mark.parametrize("cut", range(16, len(RECEIPT_NO_TLVS)))
def test_decode_truncated_body_is_not_fatal(cut: int) -> None:
    with pytest.raises(PduError) as err:
        decode(_with_length(RECEIPT_NO_TLVS[:cut]))
    assert not err.value.fatal
    assert err.value.status != 0
    assert (err.value.sequence, err.value.command_id) == (77, 0x05)


def test_decode_missing_nul_terminator() -> None:
    with pytest.raises(PduError) as err:
        decode(_header(19, 0x02, 0, 5) + b"abc")  # bind_transmitter whose system_id never ends
    assert not err.value.fatal and err.value.status == 0xC2 and err.value.sequence == 5


def test_decode_too_long_c_string() -> None:
    body = b"x" * 16 + b"\0" + b"pw\0\0" + b"\x34\x00\x00\0"  # system_id of 16 characters
    with pytest.raises(PduError) as err:
        decode(_header(16 + len(body), 0x09, 0, 6) + body)
    assert not err.value.fatal and err.value.status == 0xC2


@pytest.mark.parametrize("command_id", [0x00000099, 0x80000099, 0x0000000A, 0x00000000, 0xFFFFFFFF])
def test_decode_unknown_command_id(command_id: int) -> None:
    with pytest.raises(PduError) as err:
        decode(_header(20, command_id, 0, 0x1234) + b"\0\0\0\0")
    assert err.value.status == 0x03  # ESME_RINVCMDID
    assert err.value.sequence == 0x1234 and err.value.command_id == command_id
    assert not err.value.fatal


def test_decode_tlv_running_past_the_end() -> None:
    wire = _with_length(RECEIPT_NO_TLVS + b"\x04\x24\x00\x10abc")  # message_payload claims 16 octets, has 3
    with pytest.raises(PduError) as err:
        decode(wire)
    assert err.value.status == 0xC0 and not err.value.fatal and err.value.sequence == 77


@pytest.mark.parametrize("tail", [b"\x04", b"\x04\x24", b"\x04\x24\x00"])
def test_decode_truncated_tlv_header(tail: bytes) -> None:
    with pytest.raises(PduError) as err:
        decode(_with_length(RECEIPT_NO_TLVS + tail))
    assert err.value.status == 0xC0 and not err.value.fatal


def test_decode_known_tlv_with_wrong_length() -> None:
    with pytest.raises(PduError) as err:
        decode(_with_length(RECEIPT_NO_TLVS + b"\x04\x27\x00\x02\x00\x02"))  # message_state is one octet
    assert err.value.status == 0xC2 and not err.value.fatal


def test_decode_bad_dest_flag() -> None:
    wire = encode(Pdu("submit_multi", 8, dest_address=({"dl_name": "x"},)))
    pos = 16 + 1 + 2 + 1 + 1  # service_type, ton/npi, source_addr "", number_of_dests
    assert wire[pos] == 2
    with pytest.raises(PduError) as err:
        decode(wire[:pos] + b"\x03" + wire[pos + 1 :])
    assert err.value.status == 0x40 and err.value.sequence == 8


@pytest.mark.parametrize("delta", [-1, 1, 100])
def test_decode_command_length_mismatch_is_fatal(delta: int) -> None:
    wire = encode(Pdu("enquire_link", 3)) + b"\0"
    with pytest.raises(PduError) as err:
        decode(struct.pack(">I", len(wire) + delta) + wire[4:])
    assert err.value.fatal and err.value.status == 0x02


@pytest.mark.parametrize("size", [0, 4, 15])
def test_decode_shorter_than_header_is_fatal(size: int) -> None:
    with pytest.raises(PduError) as err:
        decode(bytes.fromhex("00000010 00000015 00000000 00000001")[:size])
    assert err.value.fatal


# -- framing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [0, 1, 15])
def test_frame_reader_rejects_short_command_length(length: int) -> None:
    with pytest.raises(PduError) as err:
        FrameReader().feed(_header(length, 0x15))
    assert err.value.fatal and err.value.status == 0x02


def test_frame_reader_rejects_huge_command_length() -> None:
    FrameReader().feed(struct.pack(">I", MAX_PDU_LENGTH))  # the limit itself is acceptable
    with pytest.raises(PduError) as err:
        FrameReader().feed(struct.pack(">I", MAX_PDU_LENGTH + 1))
    assert err.value.fatal
    with pytest.raises(PduError) as err:
        FrameReader(max_length=100).feed(_header(101, 0x04) + b"\0" * 85)
    assert err.value.fatal


def test_frame_reader_byte_at_a_time() -> None:
    pdus = [
        encode(Pdu("enquire_link", 1)),
        bytes.fromhex(BIND_TRANSCEIVER_HEX),
        bytes.fromhex(DELIVERY_RECEIPT_HEX),
        encode(Pdu("submit_sm", 4, tlvs=dict(TYPICAL_TLVS), **_params("submit_sm", "max"))),
        bytes.fromhex("00000010 80000004 00000045 00000007"),
    ]
    reader = FrameReader()
    frames: list[bytes] = []
    stream = b"".join(pdus)
    for i in range(len(stream)):
        got = reader.feed(stream[i : i + 1])
        frames += got
        if got:
            assert frames[-1] == stream[i + 1 - len(frames[-1]) : i + 1]
    assert frames == pdus
    assert [decode(f).command for f in frames] == [
        "enquire_link", "bind_transceiver", "deliver_sm", "submit_sm", "submit_sm_resp"]


def test_frame_reader_keeps_partial_frames() -> None:
    wire = bytes.fromhex(DELIVERY_RECEIPT_HEX)
    reader = FrameReader()
    assert reader.feed(b"") == []
    assert reader.feed(wire[:3]) == []
    assert reader.feed(wire[3:40]) == []
    assert reader.feed(wire[40:] + wire + wire[:20]) == [wire, wire]
    assert reader.feed(wire[20:]) == [wire]


# -- property tests ---------------------------------------------------------------------------------------
KNOWN_IDS = sorted(COMMAND_NAMES)


def _decode_or_error(data: bytes) -> Pdu | None:
    """decode(); a PduError is fine, anything else fails the test. A decoded PDU must survive re-encoding."""
    try:
        pdu = decode(data)
    except PduError as exc:
        assert isinstance(exc.status, int) and exc.status != 0
        return None
    assert isinstance(pdu, Pdu)
    try:
        again = encode(pdu)
    except PduError:
        return pdu  # e.g. a submit_multi with 0 destinations decodes but may not be sent
    assert decode(again) == pdu
    return pdu


@FUZZ
@given(
    command_id=st.sampled_from(KNOWN_IDS),
    status=st.one_of(st.just(0), st.integers(0, 0xFFFFFFFF)),
    sequence=st.integers(0, 0xFFFFFFFF),
    body=st.binary(max_size=400),
)
def test_fuzz_decode_random_body(command_id: int, status: int, sequence: int, body: bytes) -> None:
    _decode_or_error(_header(16 + len(body), command_id, status, sequence) + body)


SEED_WIRES = [
    encode(Pdu(c, 1, tlvs=dict(TYPICAL_TLVS), **_params(c, "typical"))) for c in sorted(SPEC_COMMAND_IDS)
] + [bytes.fromhex(DELIVERY_RECEIPT_HEX), bytes.fromhex(BIND_TRANSCEIVER_HEX)]


@FUZZ
@given(
    seed=st.sampled_from(SEED_WIRES),
    edits=st.lists(
        st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]), st.integers(0, 10_000),
                  st.integers(0, 255)),
        min_size=1, max_size=4,
    ),
)
def test_fuzz_decode_mutated_valid_pdus(seed: bytes, edits: list[tuple[str, int, int]]) -> None:
    body = bytearray(seed[16:])
    for op, where, byte in edits:
        at = where % (len(body) + 1)
        if op == "set" and at < len(body):
            body[at] = byte
        elif op == "insert":
            body.insert(at, byte)
        elif op == "delete" and at < len(body):
            del body[at]
        elif op == "truncate":
            del body[at:]
    _decode_or_error(_with_length(seed[:16] + bytes(body)))


def _random_frame() -> st.SearchStrategy[bytes]:
    """Something that looks like a frame: a plausible command_length and random content."""
    return st.binary(max_size=80).map(lambda b: _header(16 + len(b), 0x04) + b)


@FUZZ
@given(
    pieces=st.lists(st.one_of(_random_frame(), st.binary(max_size=40), st.sampled_from(SEED_WIRES)), max_size=8),
    cuts=st.lists(st.integers(0, 2_000), max_size=12),
    max_length=st.sampled_from([MAX_PDU_LENGTH, 64, 16]),
)
def test_fuzz_frame_reader(pieces: list[bytes], cuts: list[int], max_length: int) -> None:
    stream = b"".join(pieces)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = FrameReader(max_length=max_length)
    frames: list[bytes] = []
    try:
        for a, b in zip(points, points[1:], strict=False):
            frames += reader.feed(stream[a:b])
    except PduError as exc:
        assert exc.fatal
    for frame in frames:
        assert 16 <= len(frame) <= max_length
        assert struct.unpack(">I", frame[:4])[0] == len(frame)
    assert stream.startswith(b"".join(frames))


@FUZZ
@given(wires=st.lists(st.sampled_from(SEED_WIRES), max_size=6), cuts=st.lists(st.integers(0, 20_000), max_size=20))
def test_fuzz_frame_reader_valid_stream(wires: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(wires)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = FrameReader()
    frames: list[bytes] = []
    for a, b in zip(points, points[1:], strict=False):
        frames += reader.feed(stream[a:b])
    assert frames == wires


ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def _ascii(max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=ASCII, max_size=max_size)


U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
UNKNOWN_TAG = st.integers(0x1400, 0x3FFF).filter(lambda t: t not in TLVS)


@st.composite
def _messages(draw: st.DrawFn) -> Pdu:
    command = draw(st.sampled_from(["submit_sm", "deliver_sm"]))
    params = {
        "service_type": draw(_ascii(5)),
        "source_addr_ton": draw(U8), "source_addr_npi": draw(U8), "source_addr": draw(_ascii(20)),
        "dest_addr_ton": draw(U8), "dest_addr_npi": draw(U8), "destination_addr": draw(_ascii(20)),
        "esm_class": draw(U8), "protocol_id": draw(U8), "priority_flag": draw(U8),
        "schedule_delivery_time": draw(_ascii(16)), "validity_period": draw(_ascii(16)),
        "registered_delivery": draw(U8), "replace_if_present_flag": draw(U8), "data_coding": draw(U8),
        "sm_default_msg_id": draw(U8), "short_message": draw(st.binary(max_size=254)),
    }
    tlvs = draw(st.fixed_dictionaries({}, optional={
        "user_message_reference": U16, "sar_msg_ref_num": U16, "sar_total_segments": U8, "sar_segment_seqnum": U8,
        "message_payload": st.binary(max_size=1200), "receipted_message_id": _ascii(64), "message_state": U8,
        "qos_time_to_live": st.integers(0, 0xFFFFFFFF), "network_error_code": st.binary(min_size=3, max_size=3),
    }))
    tlvs.update(draw(st.dictionaries(UNKNOWN_TAG, st.binary(max_size=40), max_size=3)))
    return Pdu(command, draw(st.integers(1, 0x7FFFFFFF)), tlvs=tlvs, **params)


@FUZZ
@given(pdu=_messages())
def test_fuzz_valid_messages_round_trip(pdu: Pdu) -> None:
    wire = encode(pdu)
    back = decode(wire)
    assert back == pdu
    assert back.params == pdu.params and back.tlvs == pdu.tlvs
    assert encode(back) == wire


# -- cross-check against smpplib 2.2.3 ------------------------------------------------------------------------
class _SmpplibClient:
    """What smpplib's PDU objects ask of their client: the current `sequence` and `next_sequence()`."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


def _smpplib_wire(command: str, sequence: int, **kwargs: Any) -> bytes:
    pdu = smpplib.smpp.make_pdu(command, client=_SmpplibClient(), **kwargs)
    pdu.sequence = sequence
    return pdu.generate()


def _smpplib_parse(wire: bytes) -> Any:
    return smpplib.smpp.parse_pdu(wire, client=_SmpplibClient(), allow_unknown_opt_params=True)


UDH = b"\x05\x00\x03\xa5\x02\x01"  # concatenated SMS, ref 0xA5, part 1 of 2

SMPPLIB_CASES: list[tuple[str, dict[str, Any], str, int, dict[str, Any], dict[Any, Any]]] = [
    # (command, smpplib kwargs, expected command, expected status, expected params (subset), expected tlvs)
    ("bind_transceiver",
     {"system_id": "SMPP3TEST", "password": "secret08", "system_type": "SUBMIT1", "addr_ton": 1, "addr_npi": 1,
      "address_range": ""},
     "bind_transceiver", 0,
     {"system_id": "SMPP3TEST", "password": "secret08", "system_type": "SUBMIT1", "interface_version": 0x34,
      "addr_ton": 1, "addr_npi": 1, "address_range": ""}, {}),
    ("submit_sm",
     {"service_type": "CMT", "source_addr_ton": 5, "source_addr_npi": 0, "source_addr": "HONGYAN",
      "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "8613800000001", "registered_delivery": 1,
      "data_coding": 8, "short_message": "你好".encode("utf-16-be"), "validity_period": "000001000000000R"},
     "submit_sm", 0,
     {"service_type": "CMT", "source_addr_ton": 5, "source_addr_npi": 0, "source_addr": "HONGYAN",
      "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "8613800000001", "registered_delivery": 1,
      "data_coding": 8, "short_message": "你好".encode("utf-16-be"), "validity_period": "000001000000000R",
      "esm_class": 0, "schedule_delivery_time": ""}, {}),
    ("submit_sm",
     {"source_addr": "10690", "destination_addr": "447911123456", "esm_class": 0x40, "data_coding": 0,
      "short_message": UDH + b"Hello, part one"},
     "submit_sm", 0,
     {"source_addr": "10690", "destination_addr": "447911123456", "esm_class": 0x40,
      "short_message": UDH + b"Hello, part one"}, {}),
    ("submit_sm",
     {"source_addr": "10690", "destination_addr": "447911123456", "data_coding": 0,
      "message_payload": b"x" * 200 + b"\x00\xff", "user_message_reference": 0x1234, "source_port": 9200,
      "destination_port": 2948},
     "submit_sm", 0,
     {"source_addr": "10690", "destination_addr": "447911123456", "short_message": b""},
     {"message_payload": b"x" * 200 + b"\x00\xff", "user_message_reference": 0x1234, "source_port": 9200,
      "destination_port": 2948}),
    ("deliver_sm",
     {"source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "8613800000001", "destination_addr": "10690",
      "esm_class": 0x04, "short_message": b"id:abc123 sub:001 dlvrd:001 stat:DELIVRD err:000",
      "receipted_message_id": "abc123", "message_state": 2, "network_error_code": b"\x03\x00\x00"},
     "deliver_sm", 0,
     {"source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "8613800000001", "destination_addr": "10690",
      "esm_class": 0x04, "short_message": b"id:abc123 sub:001 dlvrd:001 stat:DELIVRD err:000"},
     {"receipted_message_id": "abc123", "message_state": 2, "network_error_code": b"\x03\x00\x00"}),
    ("enquire_link", {}, "enquire_link", 0, {}, {}),
    ("unbind", {}, "unbind", 0, {}, {}),
    ("submit_sm_resp", {"message_id": "4f1c2e9a-0001"}, "submit_sm_resp", 0, {"message_id": "4f1c2e9a-0001"}, {}),
    # smpplib always writes message_id, even for an error response (a lone NUL)
    ("submit_sm_resp", {"status": 0x45}, "submit_sm_resp", 0x45, {"message_id": ""}, {}),
    ("bind_transceiver_resp", {"system_id": "SMSC", "sc_interface_version": 0x34}, "bind_transceiver_resp", 0,
     {"system_id": "SMSC"}, {"sc_interface_version": 0x34}),
    ("query_sm_resp", {"message_id": "m-9", "final_date": "240615103000004+", "message_state": 2, "error_code": 0},
     "query_sm_resp", 0, {"message_id": "m-9", "final_date": "240615103000004+", "message_state": 2}, {}),
]


@pytest.mark.parametrize(("command", "kwargs", "expect_command", "expect_status", "expect_params", "expect_tlvs"),
                         SMPPLIB_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SMPPLIB_CASES)])
def test_decode_what_smpplib_encodes(command: str, kwargs: dict[str, Any], expect_command: str, expect_status: int,
                                     expect_params: dict[str, Any], expect_tlvs: dict[Any, Any]) -> None:
    wire = _smpplib_wire(command, 0x0102_0304, **kwargs)
    pdu = decode(wire)
    assert (pdu.command, pdu.status, pdu.sequence) == (expect_command, expect_status, 0x0102_0304)
    for name, value in expect_params.items():
        assert pdu[name] == value, name
    assert pdu.tlvs == expect_tlvs
    assert decode(encode(pdu)) == pdu


def test_smpplib_bind_transceiver_matches_the_hand_computed_bytes() -> None:
    wire = _smpplib_wire("bind_transceiver", 1, system_id="SMPP3TEST", password="secret08", system_type="SUBMIT1",
                         addr_ton=1, addr_npi=1, address_range="")
    assert wire == bytes.fromhex(BIND_TRANSCEIVER_HEX)
    assert _smpplib_wire("enquire_link", 1) == encode(Pdu("enquire_link", 1))
    assert _smpplib_wire("unbind", 9) == encode(Pdu("unbind", 9))


def test_smpplib_parses_our_submit_sm() -> None:
    pdu = Pdu("submit_sm", 31337, tlvs={"sar_msg_ref_num": 0xA5, "sar_total_segments": 2, "sar_segment_seqnum": 1,
                                        0x1401: b"vendor", "user_message_reference": 77},
              service_type="WAP", source_addr_ton=5, source_addr_npi=0, source_addr="HONGYAN", dest_addr_ton=1,
              dest_addr_npi=1, destination_addr="8613800000001", esm_class=0x40, protocol_id=0, priority_flag=1,
              schedule_delivery_time="240615103000004+", registered_delivery=1, data_coding=8,
              short_message=UDH + "你好".encode("utf-16-be"))
    parsed = _smpplib_parse(encode(pdu))
    assert parsed.command == "submit_sm" and parsed.sequence == 31337 and parsed.status == 0
    assert parsed.service_type == b"WAP"
    assert (parsed.source_addr_ton, parsed.source_addr_npi, parsed.source_addr) == (5, 0, b"HONGYAN")
    assert (parsed.dest_addr_ton, parsed.dest_addr_npi, parsed.destination_addr) == (1, 1, b"8613800000001")
    assert (parsed.esm_class, parsed.priority_flag, parsed.registered_delivery, parsed.data_coding) == (0x40, 1, 1, 8)
    assert parsed.schedule_delivery_time == b"240615103000004+" and parsed.validity_period == b""
    assert parsed.sm_length == len(UDH) + 4 and parsed.short_message == UDH + "你好".encode("utf-16-be")
    assert (parsed.sar_msg_ref_num, parsed.sar_total_segments, parsed.sar_segment_seqnum) == (0xA5, 2, 1)
    assert parsed.user_message_reference == 77  # read after smpplib skipped the unknown 0x1401 by its length


def test_smpplib_parses_our_submit_sm_with_message_payload() -> None:
    payload = bytes(range(256)) * 3
    parsed = _smpplib_parse(encode(Pdu("submit_sm", 2, tlvs={"message_payload": payload}, source_addr="1",
                                       destination_addr="2")))
    assert parsed.sm_length == 0 and parsed.message_payload == payload


def test_smpplib_parses_our_deliver_sm() -> None:
    text = b"id:abc123 sub:001 dlvrd:001 submit date:2406151030 done date:2406151031 stat:DELIVRD err:000 text:"
    pdu = Pdu("deliver_sm", 0x7FFFFFFF, tlvs={"receipted_message_id": "abc123", "message_state": 2,
                                              "network_error_code": b"\x03\x00\x01"},
              source_addr_ton=1, source_addr_npi=1, source_addr="8613800000001", destination_addr="10690",
              esm_class=0x04, short_message=text)
    parsed = _smpplib_parse(encode(pdu))
    assert parsed.command == "deliver_sm" and parsed.sequence == 0x7FFFFFFF
    assert (parsed.source_addr, parsed.destination_addr, parsed.esm_class) == (b"8613800000001", b"10690", 4)
    assert parsed.short_message == text and parsed.sm_length == len(text)
    assert parsed.receipted_message_id == b"abc123"
    assert parsed.message_state == 2
    assert parsed.network_error_code == b"\x03\x00\x01"


def test_tlv_tables_agree() -> None:
    assert {name: tag for name, (tag, _) in TLV_TAGS.items()} == {name: tag for tag, (name, _) in TLVS.items()}
    smpplib_tags = smpplib.consts.OPTIONAL_PARAMS
    for name, (tag, _) in TLV_TAGS.items():
        assert smpplib_tags[name] == tag, name
