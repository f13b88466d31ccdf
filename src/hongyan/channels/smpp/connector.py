"""The SMPP channel: N binds to one carrier, message → submit_sm PDUs, receipts and MO back to the core.

A message is turned into one submit_sm (single part, or the whole text in `message_payload`) or one per
segment (UDH 8/16-bit reference, or SAR TLVs), segmented by the core's GSM 03.38 / UCS-2 splitter. Parts go
out in order on the least busy bound session; the message is accepted when every part is acknowledged, and
its carrier ids (one per part) are returned so that receipts can be matched part by part.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from hongyan.channels.base import (
    DeliveryReceipt,
    InboundSink,
    InboundSms,
    OutboundSms,
    ReceiptSink,
    ReceiptsNotStored,
    SubmitOutcome,
)
from hongyan.channels.smpp import pdu as P
from hongyan.channels.smpp.pdu import Pdu, PduError
from hongyan.channels.smpp.receipts import Concat, decode_text, normalize_carrier_id, parse_receipt, split_udh
from hongyan.channels.smpp.session import LinkDown, SessionConfig, SmppSession
from hongyan.core.clock import utcnow
from hongyan.messaging.encoding import encode_gsm7, pack_septets, segment
from hongyan.ops import metrics

log = logging.getLogger(__name__)

# answers after which the same message may succeed later or elsewhere; any other error is permanent
TEMPORARY_STATUSES = frozenset({P.ESME_RSYSERR, P.ESME_RMSGQFUL, P.ESME_RTHROTTLED, P.ESME_RX_T_APPN, 0x61})
LONG_MODES = ("udh8", "udh16", "payload", "sar")


@dataclass(slots=True)
class ChannelOptions:
    """Per-channel message settings (the `config` JSON of an smpp channel; docs/smpp.md)."""

    binds: int = 1
    long_mode: str = "udh8"  # udh8 | udh16 | payload | sar
    gsm_packed: bool = False  # data_coding 0 as packed septets (most SMSCs want unpacked, one per octet)
    gsm_data_coding: int = 0  # 0 = SMSC default alphabet (GSM 03.38); 1 = IA5 for carriers that say so
    latin1: bool = False  # send GSM-compatible Latin-1 text as data_coding 3 (8-bit, 140/134 per part)
    registered_delivery: int = 1
    source_addr: str | None = None  # force this source address (e.g. the carrier's 1069… service code)
    source_ton: int | None = None  # None: derived from the address (alphanumeric 5/0, E.164 1/1, short 3/0)
    source_npi: int | None = None
    dest_ton: int = 1
    dest_npi: int = 1
    dest_plus: bool = False  # keep the leading + of E.164 destinations
    service_type: str = ""
    receipt_id_format: str = "same"  # same | hex_to_dec | dec_to_hex
    submit_deadline_s: float = 30.0  # how long a half-sent multipart message waits for a bind to come back
    mo_concat_timeout_s: float = 120.0

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ChannelOptions:
        known = set(cls.__slots__)  # type: ignore[attr-defined]
        opts = cls(**{k: v for k, v in values.items() if k in known})
        if opts.long_mode not in LONG_MODES:
            raise ValueError(f"long_mode must be one of {', '.join(LONG_MODES)}")
        if opts.receipt_id_format not in ("same", "hex_to_dec", "dec_to_hex"):
            raise ValueError("receipt_id_format must be same, hex_to_dec or dec_to_hex")
        return opts


@dataclass(slots=True)
class ChannelCounters:
    submitted: int = 0  # messages handed to the channel
    acked: int = 0  # messages whose every part was acknowledged
    parts_acked: int = 0
    rejected: int = 0
    temporary_errors: int = 0
    link_retries: int = 0
    receipts: int = 0
    receipts_intermediate: int = 0
    inbound: int = 0
    receipt_latency_sum_s: float = 0.0
    receipt_latency_count: int = 0
    receipt_latency_buckets: dict[str, int] = field(default_factory=dict)


_LATENCY_BOUNDS = (0.1, 0.5, 1, 5, 30, 120, 600, 3600)


def source_address(sender: str, opts: ChannelOptions) -> tuple[str, int, int]:
    """(source_addr, ton, npi): alphanumeric → 5/0, +E.164 → 1/1 without the +, digits → 3/0 (short code)."""
    addr = opts.source_addr or sender or ""
    if addr.startswith("+") and addr[1:].isdigit():
        ton, npi, addr = 1, 1, addr[1:]
    elif addr.isdigit():
        ton, npi = (1, 1) if len(addr) > 8 else (3, 0)
    else:
        ton, npi = 5, 0
    return addr, opts.source_ton if opts.source_ton is not None else ton, (
        opts.source_npi if opts.source_npi is not None else npi
    )


class PduBuilder:
    """Message → submit_sm PDUs according to the channel options (pure; tested without a network)."""

    def __init__(self, opts: ChannelOptions) -> None:
        self.opts = opts
        self._refs = itertools.count(1)

    def _payload(self, text: str, encoding: str) -> tuple[int, bytes, str]:
        """(data_coding, user data, unit kind) for text."""
        if encoding == "gsm7":
            if self.opts.latin1:
                try:
                    return 3, text.encode("latin-1"), "octet"
                except UnicodeEncodeError:
                    pass  # € and friends: GSM yes, Latin-1 no
            return self.opts.gsm_data_coding, encode_gsm7(text), "septet"
        return 8, text.encode("utf-16-be"), "ucs2"

    def parts(self, text: str, encoding: str) -> list[tuple[int, bytes]]:
        """(data_coding, text bytes) per part, before any UDH."""
        coding, whole, kind = self._payload(text, encoding)
        mode = self.opts.long_mode
        if kind == "octet":
            single, multi = 140, 140 - (7 if mode == "udh16" else 6)
            if len(whole) <= single or mode == "payload":
                return [(coding, whole)]
            return [(coding, whole[i : i + multi]) for i in range(0, len(whole), multi)]
        seg = segment(text, udh_octets=7 if mode == "udh16" else 6)
        if seg.segment_count == 1 or mode == "payload":
            return [(coding, whole)]
        if kind == "septet":
            return [(coding, encode_gsm7(s)) for s in seg.segments]
        return [(coding, s.encode("utf-16-be")) for s in seg.segments]

    def build(self, m: OutboundSms) -> list[Pdu]:
        opts = self.opts
        src, src_ton, src_npi = source_address(m.sender or "", opts)
        dest = m.to if opts.dest_plus else m.to.lstrip("+")
        common = {
            "service_type": opts.service_type, "source_addr_ton": src_ton, "source_addr_npi": src_npi,
            "source_addr": src, "dest_addr_ton": opts.dest_ton, "dest_addr_npi": opts.dest_npi,
            "destination_addr": dest, "registered_delivery": opts.registered_delivery,
            "priority_flag": 1 if m.priority == 0 else 0,
        }
        parts = self.parts(m.body, m.encoding)
        packed = opts.gsm_packed
        if len(parts) == 1:
            coding, data = parts[0]
            if packed and coding == 0:
                data = pack_septets(data)
            if len(data) > 254 or (opts.long_mode == "payload" and len(data) > 140):
                return [Pdu("submit_sm", data_coding=coding, short_message=b"", tlvs={"message_payload": data}, **common)]
            return [Pdu("submit_sm", data_coding=coding, short_message=data, **common)]
        total = len(parts)
        if opts.long_mode == "sar":
            ref = next(self._refs) & 0xFFFF
            return [
                Pdu("submit_sm", data_coding=coding, short_message=pack_septets(data) if packed and coding == 0 else data,
                    tlvs={"sar_msg_ref_num": ref, "sar_total_segments": total, "sar_segment_seqnum": i}, **common)
                for i, (coding, data) in enumerate(parts, 1)
            ]
        sixteen = opts.long_mode == "udh16"
        ref = next(self._refs) & (0xFFFF if sixteen else 0xFF)
        out = []
        for i, (coding, data) in enumerate(parts, 1):
            if sixteen:
                udh = bytes((6, 0x08, 4, ref >> 8, ref & 0xFF, total, i))
            else:
                udh = bytes((5, 0x00, 3, ref, total, i))
            if packed and coding == 0:
                skip = -(-len(udh) * 8 // 7)  # header octets rounded up to whole septets (fill bits)
                body = udh + pack_septets(bytes(skip) + data)[len(udh) :]
            else:
                body = udh + data
            out.append(Pdu("submit_sm", esm_class=0x40, data_coding=coding, short_message=body, **common))
        return out


class SmppConnector:
    kind = "smpp"

    def __init__(self, channel_id: str, config: dict[str, Any], *, name: str | None = None, gate: Any = None) -> None:
        self.channel_id = channel_id
        self.gate = gate  # the process's codes-first gate for bulk PDUs (dispatch.codes_first), shared by every bind
        self.name = name or channel_id
        self.options = ChannelOptions.from_mapping(config)
        self.session_config = SessionConfig.from_mapping(config)
        self.builder = PduBuilder(self.options)
        self.counters = ChannelCounters()
        self.bind_count = max(1, int(self.options.binds))
        self._slots = {i: self._new_session(i) for i in range(self.bind_count)}  # bind index → active session
        self.sessions = list(self._slots.values())
        self._started = False
        self._on_receipts: ReceiptSink | None = None
        self._on_inbound: InboundSink | None = None
        self._rr = 0
        self._sent_at: OrderedDict[str, float] = OrderedDict()  # carrier id → submit time (receipt latency)
        self._mo_parts: dict[tuple[str, str, int], dict[int, str]] = {}
        self._mo_first: dict[tuple[str, str, int], float] = {}
        self._up_event = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _new_session(self, index: int) -> SmppSession:
        return SmppSession(self.session_config, name=f"{self.name}#{index + 1}", on_deliver=self._on_deliver,
                           gate=self.gate)

    async def start(self, on_receipts: ReceiptSink, on_inbound: InboundSink | None = None) -> None:
        self._on_receipts = on_receipts
        self._on_inbound = on_inbound
        self._started = True
        for s in self.sessions:
            s.on_state = self._session_state
            s.start()

    @property
    def active_binds(self) -> set[int]:
        return set(self._slots)

    async def set_active(self, indices: set[int]) -> None:
        """Run exactly the binds numbered `indices` (0 … binds−1): with several worker processes each runs
        the binds it holds a lease on (dispatch.binds), so the channel's binds and TPS (per bind) add up to
        what the carrier allows. A bind given up drains its window and unbinds first."""
        indices = {i for i in indices if 0 <= i < self.bind_count}
        gone = [self._slots.pop(i) for i in sorted(set(self._slots) - indices)]
        for i in sorted(indices - set(self._slots)):
            session = self._slots[i] = self._new_session(i)
            if self._started:
                session.on_state = self._session_state
                session.start()
        self.sessions = [self._slots[i] for i in sorted(self._slots)]
        if gone:
            await asyncio.gather(*(s.stop() for s in gone), return_exceptions=True)
        self._session_state(None)

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.sessions), return_exceptions=True)

    async def resume(self, messages: list[tuple[str, str]]) -> None:
        """Receipts of accepted messages come from the SMSC (it resends unacknowledged ones): nothing to do."""

    @property
    def up(self) -> bool:
        return any(s.can_submit for s in self.sessions)

    def _session_state(self, _session: SmppSession | None) -> None:
        if self.up:
            self._up_event.set()
        else:
            self._up_event.clear()

    async def wait_up(self, timeout: float) -> bool:
        if self.up:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up_event.wait(), timeout)
        return self.up

    def status(self) -> dict[str, Any]:
        """State and counters for operators (API, console) and later for analytics."""
        c = self.counters
        binds = []
        for s in self.sessions:
            st = s.stats
            binds.append({
                "name": s.name, "bound": s.bound, "in_flight": s.in_flight, "bind_error": s.bind_error,
                "last_error": st.last_error, "connects": st.connects, "submitted": st.submitted, "acked": st.acked,
                "errors": st.errors, "throttled": st.throttled, "link_losses": st.link_losses,
                "delivers": st.delivers, "malformed": st.malformed,
            })
        avg = c.receipt_latency_sum_s / c.receipt_latency_count if c.receipt_latency_count else None
        return {
            "up": self.up,
            "binds_up": sum(1 for s in self.sessions if s.bound),
            "binds": binds,
            "counters": {
                "submitted": c.submitted, "acked": c.acked, "parts_acked": c.parts_acked, "rejected": c.rejected,
                "temporary_errors": c.temporary_errors, "throttled": sum(s.stats.throttled for s in self.sessions),
                "link_retries": c.link_retries, "receipts": c.receipts,
                "receipts_intermediate": c.receipts_intermediate, "inbound": c.inbound,
                "receipt_latency_avg_s": round(avg, 4) if avg is not None else None,
                "receipt_latency_buckets": dict(c.receipt_latency_buckets),
            },
        }

    # -- submit ------------------------------------------------------------------------------------------
    def _pick(self) -> SmppSession | None:
        best: SmppSession | None = None
        n = len(self.sessions)
        for k in range(n):
            s = self.sessions[(self._rr + k) % n]
            if s.can_submit and (best is None or s.in_flight < best.in_flight):
                best = s
        self._rr += 1
        return best

    async def submit(self, messages: list[OutboundSms]) -> list[SubmitOutcome]:
        return list(await asyncio.gather(*(self._submit_one(m) for m in messages)))

    async def _submit_one(self, m: OutboundSms) -> SubmitOutcome:
        self.counters.submitted += 1
        try:
            pdus = self.builder.build(m)
        except (PduError, ValueError) as exc:
            self.counters.rejected += 1
            return SubmitOutcome(m.message_id, False, error_code="unsendable", carrier_error_code=str(exc)[:32])
        carrier_ids: list[str] = []
        started = time.monotonic()
        deadline = started + self.options.submit_deadline_s
        for pdu in pdus:
            while True:
                session = self._pick()
                if session is None:
                    # nothing sent yet: give the message back (the router may fail over to another channel);
                    # half sent: wait for a bind so that the handset gets whole text without duplicate parts
                    if not carrier_ids or time.monotonic() >= deadline:
                        return SubmitOutcome(m.message_id, False, retry=True, error_code="channel_down")
                    await self.wait_up(deadline - time.monotonic())
                    continue
                try:  # by lane: a verification code takes the next window slot before waiting marketing PDUs
                    resp = await session.submit(pdu, lane=m.priority)
                except LinkDown:
                    self.counters.link_retries += 1
                    if not carrier_ids:
                        return SubmitOutcome(m.message_id, False, retry=True, error_code="channel_down")
                    continue
                break
            if resp.status != P.ESME_ROK:
                code = P.status_name(resp.status)
                if resp.status in TEMPORARY_STATUSES:
                    self.counters.temporary_errors += 1
                    return SubmitOutcome(m.message_id, False, retry=True, carrier_error_code=code,
                                         error_code="carrier_temporary_error")
                self.counters.rejected += 1
                return SubmitOutcome(m.message_id, False, error_code="carrier_rejected", carrier_error_code=code)
            carrier_id = str(resp.get("message_id") or "")
            carrier_ids.append(carrier_id)
            self.counters.parts_acked += 1
            self._sent_at[carrier_id] = time.monotonic()
        if len(self._sent_at) > 200_000:
            for _ in range(len(self._sent_at) - 100_000):
                self._sent_at.popitem(last=False)
        self.counters.acked += 1
        metrics.observe_submit(self.channel_id, m.priority, time.monotonic() - started)  # window wait + round trip
        return SubmitOutcome(m.message_id, True, carrier_message_id=carrier_ids[0] if carrier_ids else None,
                             parts=tuple(carrier_ids))

    # -- receipts and MO ---------------------------------------------------------------------------------
    async def _on_deliver(self, pdu: Pdu) -> int:
        receipt = parse_receipt(pdu)
        if receipt is not None:
            if receipt.status is None:
                self.counters.receipts_intermediate += 1
                return P.ESME_ROK
            carrier_id = normalize_carrier_id(receipt.carrier_message_id, self.options.receipt_id_format)
            self.counters.receipts += 1
            sent = self._sent_at.pop(carrier_id, None)
            if sent is not None:
                self._observe_latency(time.monotonic() - sent)
            if self._on_receipts is not None:
                try:
                    await self._on_receipts([
                        DeliveryReceipt(receipt.status, self.channel_id, carrier_message_id=carrier_id,
                                        carrier_error_code=f"{receipt.stat}:{receipt.error}" if receipt.error
                                        else receipt.stat)
                    ])
                except ReceiptsNotStored as exc:  # the SMSC sends it again later
                    log.info("smpp %s: receipt not stored (%s); asking the SMSC to resend", self.name, exc)
                    return P.ESME_RX_T_APPN
            return P.ESME_ROK
        return await self._on_mo(pdu)

    def _observe_latency(self, seconds: float) -> None:
        metrics.observe_receipt(self.channel_id, seconds)
        c = self.counters
        c.receipt_latency_sum_s += seconds
        c.receipt_latency_count += 1
        for bound in _LATENCY_BOUNDS:
            if seconds <= bound:
                key = f"le_{bound}"
                break
        else:
            key = "gt_3600"
        c.receipt_latency_buckets[key] = c.receipt_latency_buckets.get(key, 0) + 1

    async def _on_mo(self, pdu: Pdu) -> int:
        data = pdu.tlvs.get("message_payload") or pdu.get("short_message") or b""
        coding = pdu.get("data_coding") or 0
        header = 0
        concat = None
        if (pdu.get("esm_class") or 0) & 0x40:
            concat, header = split_udh(bytes(data))
        text = decode_text(bytes(data), coding, gsm_packed=self.options.gsm_packed, header_octets=header)
        sender, to = str(pdu.get("source_addr") or ""), str(pdu.get("destination_addr") or "")
        if concat is None and "sar_msg_ref_num" in pdu.tlvs:
            concat = Concat(pdu.tlvs["sar_msg_ref_num"], pdu.tlvs.get("sar_total_segments", 1),
                            pdu.tlvs.get("sar_segment_seqnum", 1))
        if concat is not None and concat.total > 1:
            key = (sender, to, concat.reference)
            parts = self._mo_parts.setdefault(key, {})
            self._mo_first.setdefault(key, time.monotonic())
            parts[concat.sequence] = text
            self._expire_mo_parts()
            if len(parts) < concat.total:
                return P.ESME_ROK
            text = "".join(parts[i] for i in sorted(parts))
            del self._mo_parts[key]
            self._mo_first.pop(key, None)
        self.counters.inbound += 1
        if self._on_inbound is not None:
            await self._on_inbound([
                InboundSms(self.channel_id, from_number=sender, to_number=to, body=text, received_at=utcnow())
            ])
        return P.ESME_ROK

    def _expire_mo_parts(self) -> None:
        limit = time.monotonic() - self.options.mo_concat_timeout_s
        for key in [k for k, t in self._mo_first.items() if t < limit]:
            parts = self._mo_parts.pop(key, {})
            self._mo_first.pop(key, None)
            log.warning("smpp %s: dropping an incomplete long MO (%d parts received)", self.name, len(parts))
