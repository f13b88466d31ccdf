"""Codes first: processes measure how fast verification codes move and announce it; a process that sends
bulk traffic caps its notification and marketing submits while codes are slower than the target, never
holds a code, and lifts the cap once codes are fast again or stop (dispatch/codes_first.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from hongyan.channels.smpp.pdu import Pdu
from hongyan.channels.smpp.session import SessionConfig, SmppSession
from hongyan.dispatch import codes_first
from hongyan.dispatch.codes_first import BulkGate, CodeSignal
from hongyan.dispatch.queue import DISPATCH
from smsc import SmscSim
from support import wait_until


async def _true(value: Any) -> Any:
    return value


# -- the signal -----------------------------------------------------------------------------------------


def test_signal_keeps_a_one_second_p90_per_stage_and_sums_the_stages() -> None:
    signal = CodeSignal(source="here")
    t = 1000.0
    for i in range(10):  # 10 codes through the API stage: 1 … 10 ms
        signal.observe("api", (i + 1) / 1000, now=t + i * 0.01)
    assert signal.local(now=t + 0.1) == {"api": 10.0}  # p90 of ten samples: the tenth
    signal.observe("dispatch", 0.004, now=t + 0.1)
    assert signal.latency_ms(now=t + 0.1) == 14.0  # a code passes both stages
    # a second later the API samples are gone; the dispatch sample (at t + 0.1) too at t + 1.2
    assert signal.local(now=t + 1.095) == {"dispatch": 4.0}
    assert signal.latency_ms(now=t + 1.2) is None
    assert signal.flowing(now=t + 1.2)  # codes moved less than HOLD_S ago
    assert not signal.flowing(now=t + 0.1 + codes_first.HOLD_S + 0.01)


def test_signal_takes_the_slowest_report_of_each_stage_and_ignores_its_own() -> None:
    signal = CodeSignal(source="worker-a")
    t = 50.0
    signal.observe("dispatch", 0.005, now=t)
    signal.heard("api-1", {"api": 12.0}, now=t)
    signal.heard("api-2", {"api": 30.0}, now=t)
    signal.heard("worker-b", {"dispatch": 9.0, "nonsense": 1e6}, now=t)
    signal.heard("worker-a", {"dispatch": 500.0}, now=t)  # its own report, back from the exchange
    assert signal.latency_ms(now=t + 0.5) == 39.0  # slowest API (30) + slowest dispatch (9)
    assert signal.latency_ms(now=t + 1.5) is None  # reports older than a second are not the present


# -- the gate's cap ---------------------------------------------------------------------------------------


def _gate(target_ms: float = 30.0, min_tps: float = 50.0) -> tuple[BulkGate, CodeSignal, float]:
    signal = CodeSignal(source="test")
    gate = BulkGate(signal, target_ms=target_ms, min_tps=min_tps)
    return gate, signal, time.monotonic()


async def _pass(gate: BulkGate, n: int) -> None:
    for _ in range(n):
        await gate.admit(2)


async def test_cap_falls_from_the_bulk_rate_to_the_floor_while_codes_are_slow() -> None:
    gate, signal, t = _gate()
    await _pass(gate, 500)  # bulk traffic at 500/s over the first step
    signal.observe("dispatch", 0.080, now=t + 1.0)  # codes take 80 ms > 30 ms
    assert gate.step(now=t + 1.0) == pytest.approx(350.0, rel=0.01)  # 70 % of what bulk traffic used
    steps = []
    for k in range(1, 12):
        signal.observe("dispatch", 0.080, now=t + 1.0 + 0.5 * k)
        steps.append(gate.step(now=t + 1.0 + 0.5 * k))
    assert steps[0] is not None and steps[0] < 349.0
    assert min(s for s in steps if s is not None) >= 50.0  # never below HONGYAN_CODES_FIRST_MIN_TPS
    assert gate.cap == 50.0


async def test_no_cap_while_codes_are_fast_or_there_is_no_bulk_traffic() -> None:
    gate, signal, t = _gate()
    await _pass(gate, 500)
    signal.observe("dispatch", 0.010, now=t + 1.0)  # 10 ms: under the target
    assert gate.step(now=t + 1.0) is None
    signal.observe("dispatch", 0.200, now=t + 1.4)  # slow codes, but no bulk traffic to slow down
    assert gate.step(now=t + 1.5) is None


async def test_cap_grows_when_codes_are_fast_again_and_is_lifted_when_they_stop() -> None:
    gate, signal, t = _gate()
    await _pass(gate, 1000)
    signal.observe("dispatch", 0.100, now=t + 1.0)
    assert gate.step(now=t + 1.0) == pytest.approx(700.0, rel=0.01)
    await _pass(gate, 350)  # bulk traffic goes on under the cap
    signal.observe("dispatch", 0.010, now=t + 2.1)  # fast again (below 70 % of the target)
    raised = gate.step(now=t + 2.1)
    assert raised is not None and raised > 701.0
    # codes stop: HOLD_S after the last one the cap is gone
    assert gate.step(now=t + 2.1 + codes_first.HOLD_S + 0.1) is None
    assert gate.stats["lifted"] == 1


async def test_where_codes_alone_are_slow_the_target_is_their_idle_latency_and_a_half() -> None:
    gate, signal, t = _gate(target_ms=30)
    for k in range(40):  # 20 s of codes at 40 ms with no bulk traffic: the baseline
        signal.observe("dispatch", 0.040, now=t + 0.5 * k)
        assert gate.step(now=t + 0.5 * k) is None
    assert gate.baseline == pytest.approx(40.0) and gate.target() == pytest.approx(60.0)
    assert gate.status()["target_ms"] == 60.0 and gate.status()["configured_target_ms"] == 30.0
    await _pass(gate, 500)  # a campaign starts; codes at 50 ms are within 1.5× their idle latency
    signal.observe("dispatch", 0.050, now=t + 20.0)
    assert gate.step(now=t + 20.0) is None
    await _pass(gate, 500)
    signal.observe("dispatch", 0.070, now=t + 21.05)  # 70 ms: slower than that
    assert gate.step(now=t + 21.05) is not None
    assert gate.baseline == pytest.approx(40.0)  # bulk traffic ran: the baseline stayed


async def test_campaign_runs_are_built_only_seconds_ahead_while_codes_are_slow() -> None:
    gate, signal, t = _gate(min_tps=200)
    assert gate.build_ahead(20_000) == 20_000  # nothing known: as configured
    gate.note_built(2_000)  # a campaign's first chunk stored
    signal.observe("dispatch", 0.080, now=t + 1.0)
    gate.step(now=t + 1.0)  # slow codes before any send (the builder's inserts): not capped, but
    assert gate.cap is None and gate.baseline is None  # not the codes' own latency: bulk work ran
    assert gate.build_ahead(20_000) == 2_000  # 10 s at the floor
    await _pass(gate, 1000)
    signal.observe("dispatch", 0.080, now=t + 2.0)
    assert gate.step(now=t + 2.0) == pytest.approx(700.0, rel=0.01)
    assert gate.build_ahead(20_000) == pytest.approx(7_000, rel=0.01)  # 10 s at the cap
    assert gate.build_ahead(500) == 500
    gate.step(now=t + 100)  # codes stopped
    assert gate.build_ahead(20_000) == 20_000


async def test_a_capped_gate_holds_bulk_pdus_and_lets_them_all_go_when_lifted() -> None:
    gate, signal, t = _gate(min_tps=2)
    await _pass(gate, 100)
    signal.observe("dispatch", 1.0, now=t + 1.0)
    for k in range(12):  # down to the floor of 2/s
        signal.observe("dispatch", 1.0, now=t + 1.0 + 0.5 * k)
        gate.step(now=t + 1.0 + 0.5 * k)
    assert gate.cap == 2.0
    waiting = [asyncio.create_task(gate.admit(2)) for _ in range(20)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sum(w.done() for w in waiting) <= 2  # a burst of one token, then one every half second
    gate.step(now=t + 100)  # codes stopped: lifted
    assert gate.cap is None
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    gate.close()


# -- at the SMPP bind: a code never waits for the gate -------------------------------------------------


def _submit_sm(to: str) -> Pdu:
    return Pdu("submit_sm", source_addr="HONGYAN", destination_addr=to, short_message=b"hello")


async def test_a_code_passes_a_capped_gate_that_holds_marketing(smsc: SmscSim) -> None:
    gate, signal, t = _gate(min_tps=1)
    await _pass(gate, 100)
    for k in range(15):
        signal.observe("dispatch", 1.0, now=t + 1.0 + 0.5 * k)
        gate.step(now=t + 1.0 + 0.5 * k)
    assert gate.cap == 1.0
    session = SmppSession(SessionConfig.from_mapping(smsc.channel_config(window=10)), name="gated", gate=gate)
    session.start()
    try:
        assert await session.wait_bound(10)
        marketing = [asyncio.create_task(session.submit(_submit_sm("447700900003"), lane=2)) for _ in range(20)]
        await wait_until(lambda: _true(gate._bucket.has_waiters), message="marketing PDUs held by the gate")
        held = 20 - session.stats.submitted
        assert held >= 15  # at 1/s almost all of them wait
        resp = await asyncio.wait_for(session.submit(_submit_sm("447700900997"), lane=0), timeout=5)
        assert resp.status == 0
        received = [m["dest"] for m in smsc.messages(limit=50)]
        assert "447700900997" in received and received.count("447700900003") <= 20 - held + 1
        gate.step(now=t + 100)  # codes stopped: everything goes
        responses = await asyncio.wait_for(asyncio.gather(*marketing), timeout=10)
        assert all(r.status == 0 for r in responses)
    finally:
        await session.stop()
        gate.close()


# -- across processes (RabbitMQ) and inside one (the API and the embedded workers) ------------------------


async def test_codes_announced_by_one_process_are_heard_by_a_bulk_worker(amqp_url: str, rabbit_prefix: str) -> None:
    from hongyan.dispatch.rabbit import RabbitQueue

    codes = RabbitQueue(amqp_url, prefix=rabbit_prefix, lanes=(0,))
    bulk = RabbitQueue(amqp_url, prefix=rabbit_prefix, lanes=(1, 2))
    codes.signal = CodeSignal(source="verification-worker")  # two processes in one: each its own name
    bulk.signal = CodeSignal(source="bulk-worker")
    try:
        try:  # starts the bulk worker's consumers, among them the one for codes reports
            await asyncio.wait_for(bulk.get(DISPATCH), timeout=0.5)
        except TimeoutError:
            pass
        await codes.ping()  # connects: the announcer runs from now on

        async def heard() -> float | None:
            codes.signal.observe("dispatch", 0.042)  # a code moving through the verification worker
            return bulk.signal.latency_ms()

        assert await wait_until(heard, message="the bulk worker hears the codes' latency") >= 42.0
        assert codes.signal.latency_ms() is not None and bulk.signal.flowing()
    finally:
        await codes.close()
        await bulk.close()


async def test_the_api_and_the_embedded_worker_measure_a_codes_stages(client: httpx.AsyncClient, app: Any) -> None:
    signal = app.state.runtime.queue.signal
    assert app.state.runtime.gate is not None  # embedded workers send bulk traffic too
    resp = await client.post("/v1/messages", json={"to": "+8613800000009", "text": "Your code is 123456",
                                                   "message_type": "verification"})
    assert resp.status_code in (200, 201, 202), resp.text

    async def both() -> dict[str, float] | None:
        stages = signal.local()
        return stages if {"api", "dispatch"} <= set(stages) else None

    stages = await wait_until(both, message="api and dispatch stages measured")
    assert all(ms > 0 for ms in stages.values())
    system = await client.get("/v1/messages")  # a bulk-free request is not a code: nothing more measured
    assert system.status_code == 200
