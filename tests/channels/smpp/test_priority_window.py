"""Verification codes overtake waiting marketing PDUs at an SMPP bind: window slots and TPS tokens by lane.

Real TCP to the independent simulator; the order in which the simulator received the PDUs is the proof.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hongyan.channels.base import OutboundSms
from hongyan.channels.smpp.connector import SmppConnector
from hongyan.channels.smpp.pacing import PriorityWindow, TokenBucket
from hongyan.channels.smpp.pdu import Pdu
from hongyan.channels.smpp.session import SessionConfig, SmppSession
from hongyan.messaging.encoding import segment
from smsc import SmscSim
from support import wait_until

MESSAGE_TYPES = {0: "verification", 1: "notification", 2: "marketing"}


def sms(i: int, to: str, lane: int) -> OutboundSms:
    text = f"lane {lane} message {i}"
    seg = segment(text)
    return OutboundSms(
        f"msg_{lane}_{i:06d}", to, "HONGYAN", text, seg.encoding, seg.segment_count, MESSAGE_TYPES[lane], lane
    )


def submit_sm(to: str) -> Pdu:
    return Pdu("submit_sm", source_addr="HONGYAN", destination_addr=to, short_message=b"hello")


async def _true(value: Any) -> Any:
    return value


def position(smsc: SmscSim, dest: str, total: int) -> int:
    """Where `dest` is in the order the simulator received the messages (0 = first)."""
    received = [m["dest"] for m in smsc.messages(limit=total + 10)]
    assert dest in received, f"{dest} never reached the SMSC"
    return received.index(dest)


async def test_verification_pdu_gets_the_next_window_slot(smsc: SmscSim) -> None:
    """300 marketing PDUs wait for a 2-slot window; a verification PDU submitted after them is sent next."""
    connector = SmppConnector("chn_test", smsc.channel_config(window=2, binds=1), name="test")
    await connector.start(_noop, None)
    try:
        assert await connector.wait_up(10), connector.status()
        session = connector.sessions[0]
        marketing = asyncio.create_task(connector.submit([sms(i, "+447700900001", 2) for i in range(300)]))
        # the window is full and marketing PDUs wait for a slot when the code arrives
        await wait_until(lambda: _true(session._window.waiting >= 100), message="marketing PDUs waiting")
        ahead = 300 - session._window.waiting  # sent or in the window when the code arrives
        code = await connector.submit([sms(1, "+447700900999", 0)])
        assert code[0].accepted
        results = await marketing
        assert all(r.accepted for r in results)
        # FIFO would have put it last (position 300); by lane it takes the next slot that frees up (a few
        # more marketing PDUs may get theirs while the code's submit task starts)
        at = position(smsc, "447700900999", 301)
        assert at <= ahead + 20 and at < 220, (at, ahead)
        assert smsc.stats()["submit_sm"] == 301
    finally:
        await connector.stop()


async def test_verification_pdu_gets_the_next_tps_token(smsc: SmscSim) -> None:
    """Per-bind TPS cap 25/s with a window of 20: marketing PDUs hold the slots and wait for tokens; the code
    takes the next slot and then the next token, ahead of every marketing PDU already waiting for one."""
    config = SessionConfig.from_mapping(smsc.channel_config(window=20, tps=25))
    session = SmppSession(config, name="tps")
    session.start()
    try:
        assert await session.wait_bound(10)
        marketing = [
            asyncio.create_task(session.submit(submit_sm("447700900002"), lane=2)) for _ in range(40)
        ]
        # the window is full of marketing PDUs that wait for a token
        await wait_until(
            lambda: _true(session._window.waiting > 0 and session.stats.submitted >= 2),
            message="window full, burst spent",
        )
        ahead = session.stats.submitted
        resp = await asyncio.wait_for(session.submit(submit_sm("447700900998"), lane=0), timeout=5)
        assert resp.status == 0
        responses = await asyncio.gather(*marketing)
        assert all(r.status == 0 for r in responses)
        # FIFO would have put the code behind all 40 marketing PDUs (1.6 s at 25/s); by lane it waits for
        # one slot (tokens keep going to the PDUs holding slots meanwhile) and then takes the next token
        at = position(smsc, "447700900998", 41)
        assert at <= ahead + 6 and at < 20, (at, ahead)
    finally:
        await session.stop()


async def _noop(*_args: Any) -> None:
    return None


# -- the pacing structures alone (no network) ----------------------------------------------------------


async def test_window_serves_lanes_then_arrival_and_survives_cancellation() -> None:
    window = PriorityWindow(1)
    await window.acquire(2)  # the only slot
    order: list[str] = []

    async def take(name: str, lane: int) -> None:
        await window.acquire(lane)
        order.append(name)
        window.release(lane)

    tasks = [
        asyncio.create_task(take(name, lane))
        for name, lane in [("m1", 2), ("n1", 1), ("m2", 2), ("v1", 0), ("gone", 0), ("v2", 0)]
    ]
    await asyncio.sleep(0)
    tasks[4].cancel()  # a cancelled waiter must neither take a slot nor lose one
    await asyncio.sleep(0)
    window.release(2)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["v1", "v2", "n1", "m1", "m2"]
    await asyncio.wait_for(window.acquire(2), 1)  # the slot came back


async def test_marketing_cannot_take_the_slot_kept_for_codes() -> None:
    """A window of 3 keeps one slot for lane 0: two marketing PDUs fill what marketing may use; a third waits
    although a slot is free, and a code takes that slot at once."""
    window = PriorityWindow(3)
    await window.acquire(2)
    await window.acquire(1)
    third = asyncio.create_task(window.acquire(2))
    await asyncio.sleep(0)
    assert not third.done() and window.waiting == 1
    await asyncio.wait_for(window.acquire(0), 1)  # the reserved slot
    window.release(0)  # the code answered: only the reserved slot is free again, marketing still waits
    await asyncio.sleep(0)
    assert not third.done()
    window.release(1)  # a marketing PDU answered: its slot goes to the waiting one
    await asyncio.wait_for(third, 1)
    assert PriorityWindow(1).reserve == 0  # a window of one has nothing to keep


async def test_token_bucket_grants_by_lane() -> None:
    bucket = TokenBucket(20.0)  # one token every 50 ms
    bucket.tokens = -2.0  # owe two tokens, so that all five requests below are waiting when tokens come
    order: list[int] = []

    async def take(lane: int) -> None:
        await bucket.acquire(lane)
        order.append(lane)

    tasks = [asyncio.create_task(take(lane)) for lane in (2, 2, 2, 1, 0)]
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert order == [0, 1, 2, 2, 2]
    bucket.close()
