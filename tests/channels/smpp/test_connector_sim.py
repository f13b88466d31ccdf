"""The SMPP connector against the independent SMSC simulator (real TCP, real SMPP)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hongyan.channels.base import DeliveryReceipt, InboundSms, OutboundSms
from hongyan.channels.smpp.connector import SmppConnector
from hongyan.messaging.encoding import segment
from hongyan.messaging.states import Status
from smsc import SmscSim
from support import wait_until


def sms(i: int, body: str = "", to: str = "+8613800138000", sender: str | None = "HONGYAN") -> OutboundSms:
    text = body or f"message {i}"
    seg = segment(text)
    return OutboundSms(f"msg_{i:06d}", to, sender, text, seg.encoding, seg.segment_count, "notification", 1)


class Sink:
    def __init__(self) -> None:
        self.receipts: list[DeliveryReceipt] = []
        self.inbound: list[InboundSms] = []

    async def on_receipts(self, receipts: list[DeliveryReceipt]) -> None:
        self.receipts.extend(receipts)

    async def on_inbound(self, messages: list[InboundSms]) -> None:
        self.inbound.extend(messages)


async def started(config: dict[str, Any], sink: Sink, *, wait: bool = True) -> SmppConnector:
    connector = SmppConnector("chn_test", config, name="test")
    await connector.start(sink.on_receipts, sink.on_inbound)
    if wait:
        assert await connector.wait_up(10), connector.status()
    return connector


async def test_submit_window_and_receipts(smsc: SmscSim) -> None:
    sink = Sink()
    connector = await started(smsc.channel_config(window=10, binds=2), sink)
    try:
        results = await connector.submit([sms(i) for i in range(300)])
        assert all(r.accepted for r in results)
        carrier_ids = {r.carrier_message_id for r in results}
        assert len(carrier_ids) == 300 and all(len(r.parts) == 1 for r in results)
        await wait_until(lambda: _ready(len(sink.receipts) >= 300), message="300 receipts")
        assert {r.carrier_message_id for r in sink.receipts} == carrier_ids
        assert {r.status for r in sink.receipts} == {Status.DELIVERED}
        # deliver_sm_resp goes out after our handler returns, so the simulator may count the last one a
        # moment after the sink has it: poll its counter
        await wait_until(lambda: _ready(smsc.stats()["dlr_acked"] >= 300), message="300 receipts acknowledged")
        stats = smsc.stats()
        assert stats["submit_sm"] == 300 and stats["dlr_acked"] == 300
        status = connector.status()
        assert status["binds_up"] == 2 and status["counters"]["acked"] == 300
    finally:
        await connector.stop()
    assert smsc.stats()["unbinds"] >= 2  # clean unbind on shutdown


async def _ready(value: bool) -> bool:
    return value


@pytest.mark.parametrize("long_mode", ["udh8", "udh16", "sar", "payload"])
async def test_long_messages_reassemble_at_the_smsc(smsc: SmscSim, long_mode: str) -> None:
    gsm = "Hello {world} [€] " * 20  # extension characters cost two septets and are never split
    ucs2 = "鸿雁传书😀，" * 30  # surrogate pairs never split
    sink = Sink()
    connector = await started(smsc.channel_config(long_mode=long_mode), sink)
    try:
        results = await connector.submit([sms(1, gsm, to="+447700900001"), sms(2, ucs2, to="+447700900002")])
        assert all(r.accepted for r in results)
        if long_mode == "payload":
            assert [len(r.parts) for r in results] == [1, 1]
        else:
            assert len(results[0].parts) == segment(gsm, udh_octets=7 if long_mode == "udh16" else 6).segment_count
            assert len(results[1].parts) > 1
        for dest, text in (("447700900001", gsm), ("447700900002", ucs2)):
            got = smsc.messages(dest=dest)
            assert len(got) == 1, got
            assert got[0]["text"] == text
            assert got[0]["mode"] == {"udh8": "udh", "udh16": "udh", "sar": "sar", "payload": "message_payload"}[long_mode]
    finally:
        await connector.stop()


async def test_wrong_credentials_mark_the_channel_down(smsc: SmscSim, caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    connector = await started(smsc.channel_config(password="wrong"), sink, wait=False)
    try:
        async def refused() -> bool:
            return connector.sessions[0].bind_error is not None

        await wait_until(refused, message="bind refused")
        assert not connector.up
        assert "ESME_RBINDFAIL" in (connector.status()["binds"][0]["bind_error"] or "")
        assert any("bind refused" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
        [result] = await connector.submit([sms(1)])
        assert not result.accepted and result.retry and result.error_code == "channel_down"
    finally:
        await connector.stop()


async def test_throttling_adapts_and_nothing_fails() -> None:
    with SmscSim(THROTTLE_TPS=200) as sim:
        sink = Sink()
        connector = await started(sim.channel_config(window=20, throttle_pause_s=0.05), sink)
        try:
            results = await connector.submit([sms(i) for i in range(400)])
            assert all(r.accepted for r in results), [r for r in results if not r.accepted][:3]
            assert sim.stats()["throttled"] > 0
            assert connector.status()["counters"]["throttled"] > 0
            assert sim.stats()["submit_sm_resp_ok"] == 400
        finally:
            await connector.stop()


async def test_temporary_errors_are_returned_for_retry() -> None:
    with SmscSim(FAIL_EVERY=3) as sim:
        sink = Sink()
        connector = await started(sim.channel_config(window=1), sink)
        try:
            results = await connector.submit([sms(i) for i in range(9)])
            failed = [r for r in results if not r.accepted]
            assert len(failed) == 3
            assert all(r.retry and r.carrier_error_code == "ESME_RSYSERR" for r in failed)
        finally:
            await connector.stop()


async def test_smsc_killed_mid_window_nothing_lost() -> None:
    """Every message is either acknowledged (with a carrier id) or handed back for retry."""
    sim = SmscSim(DLR_DELAY_MS=5).start()
    sink = Sink()
    connector = await started(sim.channel_config(window=50), sink)
    try:
        first = asyncio.ensure_future(connector.submit([sms(i) for i in range(3000)]))

        async def some_sent() -> bool:
            return connector.status()["counters"]["acked"] >= 300

        await wait_until(some_sent, message="some traffic acknowledged")
        seen_before_kill = sim.stats()["submit_sm"]
        sim.kill()
        results = await first
        accepted = [r for r in results if r.accepted]
        back = [r for r in results if not r.accepted]
        assert all(r.retry for r in back) and len(accepted) + len(back) == 3000
        assert len(accepted) <= seen_before_kill + 50  # nothing is "accepted" that the SMSC did not see
        assert back, "the kill happened mid-stream, some messages must come back"
        sim.start()  # the carrier returns on the same port: the session rebinds by itself
        assert await connector.wait_up(15)
        again = await connector.submit([sms(10_000 + i) for i in range(len(back))])
        assert all(r.accepted for r in again)
    finally:
        await connector.stop()
        sim.stop()


async def test_mo_messages_reach_the_inbound_sink(smsc: SmscSim) -> None:
    sink = Sink()
    connector = await started(smsc.channel_config(), sink)
    try:
        long_reply = "回复内容" * 30  # > 70 UCS-2 units: the simulator splits it with a UDH
        smsc.api("/mo", {"from": "8613800138000", "to": "10690001", "text": "TD"})
        smsc.api("/mo", {"from": "8613800138001", "to": "10690001", "text": long_reply})

        async def both() -> bool:
            return len(sink.inbound) >= 2

        await wait_until(both, message="two MOs")
        by_from = {m.from_number: m for m in sink.inbound}
        assert by_from["8613800138000"].body == "TD" and by_from["8613800138000"].to_number == "10690001"
        assert by_from["8613800138001"].body == long_reply
        assert smsc.stats()["mo_acked"] >= 3  # the long one came in parts, every part acknowledged
    finally:
        await connector.stop()
