"""Message → PDUs, receipts, MO decoding and routing: pure functions, no network."""

from __future__ import annotations

import random

import pytest

from hongyan.channels.base import OutboundSms
from hongyan.channels.routing import Router, RouteRule, normalize_prefix
from hongyan.channels.smpp.connector import ChannelOptions, PduBuilder, source_address
from hongyan.channels.smpp.pdu import Pdu, decode, encode
from hongyan.channels.smpp.receipts import (
    decode_text,
    normalize_carrier_id,
    parse_receipt,
    split_udh,
)
from hongyan.messaging.encoding import encode_gsm7, pack_septets, segment, unpack_septets
from hongyan.messaging.states import Status


def sms(text: str, sender: str | None = "HONGYAN", to: str = "+8613800138000", priority: int = 1) -> OutboundSms:
    seg = segment(text)
    return OutboundSms("msg_1", to, sender, text, seg.encoding, seg.segment_count, "notification", priority)


def build(text: str, **opts: object) -> list[Pdu]:
    pdus = PduBuilder(ChannelOptions.from_mapping(dict(opts))).build(sms(text))
    return [decode(encode(p)) for p in pdus]  # everything built must survive the wire


def test_single_gsm_message() -> None:
    [p] = build("Hello {world}")
    assert p["data_coding"] == 0 and p["esm_class"] == 0
    assert p["short_message"] == encode_gsm7("Hello {world}")
    assert p["destination_addr"] == "8613800138000" and (p["dest_addr_ton"], p["dest_addr_npi"]) == (1, 1)
    assert (p["source_addr"], p["source_addr_ton"], p["source_addr_npi"]) == ("HONGYAN", 5, 0)
    assert p["registered_delivery"] == 1


def test_ucs2_message() -> None:
    [p] = build("验证码123456")
    assert p["data_coding"] == 8 and p["short_message"] == "验证码123456".encode("utf-16-be")


@pytest.mark.parametrize("mode,udh_len,iei", [("udh8", 6, 0x00), ("udh16", 7, 0x08)])
def test_udh_concatenation(mode: str, udh_len: int, iei: int) -> None:
    text = "€" * 100  # 200 septets, escape pairs never split
    pdus = build(text, long_mode=mode)
    seg = segment(text, udh_octets=udh_len)
    assert len(pdus) == seg.segment_count == 2
    refs = set()
    for i, p in enumerate(pdus, 1):
        data = p["short_message"]
        assert p["esm_class"] == 0x40 and data[0] == udh_len - 1 and data[1] == iei
        concat, header = split_udh(data)
        assert concat is not None and (concat.total, concat.sequence) == (2, i) and header == udh_len
        refs.add(concat.reference)
        assert data[header:] == encode_gsm7(seg.segments[i - 1])
        assert len(data) - header <= (140 - udh_len) * 8 // 7  # unpacked: one septet per octet
    assert len(refs) == 1


def test_ucs2_udh_parts_never_split_surrogates() -> None:
    text = "😀" * 40  # 80 UTF-16 units: 2 parts
    pdus = build(text, long_mode="udh8")
    joined = b"".join(p["short_message"][6:] for p in pdus).decode("utf-16-be")
    assert joined == text
    for p in pdus:
        p["short_message"][6:].decode("utf-16-be")  # each part decodes alone: no half pair


def test_sar_tlvs() -> None:
    pdus = build("x" * 200, long_mode="sar")
    assert [p.tlvs["sar_segment_seqnum"] for p in pdus] == [1, 2]
    assert {p.tlvs["sar_total_segments"] for p in pdus} == {2}
    assert len({p.tlvs["sar_msg_ref_num"] for p in pdus}) == 1
    assert all(p["esm_class"] == 0 for p in pdus)


def test_message_payload() -> None:
    [p] = build("y" * 400, long_mode="payload")
    assert p["short_message"] == b"" and p.tlvs["message_payload"] == b"y" * 400


def test_packed_gsm_with_udh_round_trips() -> None:
    text = "Packed septets " * 15
    pdus = build(text, long_mode="udh8", gsm_packed=True)
    seg = segment(text)
    for i, p in enumerate(pdus):
        data = p["short_message"]
        assert decode_text(data, 0, gsm_packed=True, header_octets=6) == seg.segments[i]
    [single] = build("short", gsm_packed=True)
    assert single["short_message"] == pack_septets(encode_gsm7("short"))
    assert unpack_septets(single["short_message"], 5) == encode_gsm7("short")


def test_latin1_channel() -> None:
    [p] = build("Voilà, café", latin1=True)  # GSM text that Latin-1 can carry
    assert p["data_coding"] == 3 and p["short_message"] == "Voilà, café".encode("latin-1")
    [euro] = build("5 €", latin1=True)  # not Latin-1: back to GSM
    assert euro["data_coding"] == 0
    parts = build("é" * 200, latin1=True)
    assert len(parts) == 2 and all(len(p["short_message"]) <= 140 for p in parts)


def test_source_address_rules() -> None:
    opts = ChannelOptions()
    assert source_address("+8613800138000", opts) == ("8613800138000", 1, 1)
    assert source_address("106900001234", opts) == ("106900001234", 1, 1)
    assert source_address("12345", opts) == ("12345", 3, 0)
    assert source_address("Hongyan", opts) == ("Hongyan", 5, 0)
    forced = ChannelOptions(source_addr="10690", source_ton=2, source_npi=1)
    assert source_address("Anything", forced) == ("10690", 2, 1)


def test_verification_gets_priority_flag() -> None:
    builder = PduBuilder(ChannelOptions())
    [p] = builder.build(sms("123456", priority=0))
    assert p["priority_flag"] == 1


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        ChannelOptions.from_mapping({"long_mode": "carrier-pigeon"})


# -- receipts ---------------------------------------------------------------------------------------------
def receipt_pdu(text: str, esm: int = 0x04, **tlvs: object) -> Pdu:
    return decode(encode(Pdu("deliver_sm", 1, esm_class=esm, short_message=text.encode(), tlvs=dict(tlvs))))


@pytest.mark.parametrize("stat,status", [("DELIVRD", Status.DELIVERED), ("UNDELIV", Status.UNDELIVERED),
                                         ("EXPIRED", Status.EXPIRED), ("REJECTD", Status.REJECTED),
                                         ("DELETED", Status.UNDELIVERED), ("UNKNOWN", Status.UNDELIVERED),
                                         ("ACCEPTD", None), ("ENROUTE", None)])
def test_text_receipts(stat: str, status: Status | None) -> None:
    r = parse_receipt(receipt_pdu(f"id:0123abc sub:001 dlvrd:001 submit date:2611250101 done date:2611250102 "
                                  f"stat:{stat} err:005 text:hello"))
    assert r is not None and r.carrier_message_id == "0123abc" and r.stat == stat and r.status == status
    assert r.error == "005"


def test_tlv_receipt_wins_over_text() -> None:
    r = parse_receipt(receipt_pdu("id:other stat:DELIVRD err:000", receipted_message_id="abc", message_state=5))
    assert r is not None and (r.carrier_message_id, r.stat, r.status) == ("abc", "UNDELIV", Status.UNDELIVERED)


def test_network_error_code_when_err_is_zero() -> None:
    r = parse_receipt(receipt_pdu("id:1 stat:UNDELIV err:000", network_error_code=b"\x03\x00\x22"))
    assert r is not None and r.error == "3:34"


def test_receipt_text_is_case_insensitive_and_mo_is_not_a_receipt() -> None:
    r = parse_receipt(receipt_pdu("ID:77 Stat:delivrd Err:0"))
    assert r is not None and r.status is Status.DELIVERED
    assert parse_receipt(receipt_pdu("TD", esm=0x00)) is None


def test_carrier_id_formats() -> None:
    assert normalize_carrier_id("255", "hex_to_dec") == "ff"
    assert normalize_carrier_id("ff", "dec_to_hex") == "255"
    assert normalize_carrier_id("zz", "hex_to_dec") == "zz"
    assert normalize_carrier_id("Ab1", "same") == "Ab1"


@pytest.mark.parametrize("coding,data,text", [
    (0, encode_gsm7("Hi {you}"), "Hi {you}"), (8, "退订".encode("utf-16-be"), "退订"),
    (3, "café".encode("latin-1"), "café"), (1, b"STOP", "STOP"), (0xF0, encode_gsm7("x"), "x"),
    (0x08 | 0x00, "ok".encode("utf-16-be"), "ok"),
])
def test_mo_text_decoding(coding: int, data: bytes, text: str) -> None:
    assert decode_text(data, coding) == text


# -- routing ----------------------------------------------------------------------------------------------
def test_router_default_without_rules() -> None:
    assert Router([], "chn_sandbox").candidates("+8613800138000", "CN", "marketing", "acc_1") == ["chn_sandbox"]
    assert Router([]).candidates("+8613800138000", "CN", "marketing", "acc_1") == []


def test_router_order_and_filters() -> None:
    rules = [
        RouteRule("r1", "cn-generic", priority=10, countries=frozenset({"CN"})),
        RouteRule("r2", "cn-mobile", priority=10, prefixes=("86138",)),
        RouteRule("r3", "backup", priority=50),
        RouteRule("r4", "otp", priority=5, message_types=frozenset({"verification"})),
        RouteRule("r5", "vip", priority=90, account_id="acc_vip"),
    ]
    router = Router(rules)
    assert router.candidates("+8613800138000", "CN", "notification", "acc_1") == ["cn-mobile", "cn-generic", "backup"]
    assert router.candidates("+8613900138000", "CN", "verification", "acc_1") == ["otp", "cn-generic", "backup"]
    assert router.candidates("+447911123456", "GB", "marketing", "acc_1") == ["backup"]
    assert router.candidates("+447911123456", "GB", "marketing", "acc_vip")[0] == "vip"


def test_router_weights() -> None:
    rules = [RouteRule("a", "A", weight=3), RouteRule("b", "B", weight=1)]
    router = Router(rules, rng=random.Random(7))
    firsts = [router.candidates("+86138", "CN", "notification", "x")[0] for _ in range(4000)]
    share = firsts.count("A") / len(firsts)
    assert 0.70 < share < 0.80  # 3:1 → 75 %
    assert set(router.candidates("+86138", "CN", "notification", "x")) == {"A", "B"}  # B stays as failover


def test_prefix_normalization() -> None:
    assert normalize_prefix("+86 138") == "86138"
    with pytest.raises(ValueError):
        normalize_prefix("86-138")
