"""The whole path over SMPP: submit → outbox → queue → route → SMPP channel → simulator → receipts → status.

Real database (SQLite and PostgreSQL), real SMPP to the independent simulator."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select

from hongyan.channels import service as channels
from hongyan.channels.models import CarrierMessage
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch.queue import MemoryQueue
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.models import InboundMessage, Message
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from hongyan.webhooks import service as webhooks
from hongyan.webhooks.models import WebhookEvent
from smsc import SmscSim
from support import AccountFixture, wait_until


async def add_channel(db: Database, name: str, config: dict[str, Any], *, priority: int = 10, **route: Any) -> str:
    async with db.write() as session:
        channel = await channels.create_channel(session, name=name, kind="smpp", config=config)
        await channels.create_route(session, channel=channel.id, priority=priority, **route)
        return channel.id


async def send(db: Database, settings: Settings, account: AccountFixture, numbers: list[str], text: str = "SMPP test",
               **kw: Any) -> list[str]:
    request = SubmitRequest(text=text, recipients=[Recipient(to=n) for n in numbers], **kw)
    result = await submit_batch(db, settings, request, account_id=account.account_id, source="api")
    return [m.id for m in result.accepted]


async def statuses(db: Database, ids: list[str]) -> Counter[str]:
    async with db.read() as session:
        rows = (await session.execute(select(Message.status).where(Message.id.in_(ids)))).scalars().all()
    return Counter(rows)


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+86138{start + i:08d}" for i in range(n)]


async def wait_final(db: Database, ids: list[str], expect: dict[str, int], timeout: float = 30) -> None:
    async def done() -> bool:
        return dict(await statuses(db, ids)) == expect

    try:
        await wait_until(done, timeout=timeout, interval=0.05, message=f"statuses {expect}")
    except AssertionError:
        raise AssertionError(f"statuses {dict(await statuses(db, ids))}, expected {expect}") from None


async def test_messages_delivered_over_smpp(db: Database, settings: Settings, account: AccountFixture,
                                            smsc: SmscSim) -> None:
    await add_channel(db, "sim", smsc.channel_config(window=20))
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    try:
        ids = await send(db, settings, account, numbers(200))
        long_ids = await send(db, settings, account, numbers(5, 500), text="长短信" * 40)  # 120 chars: 2 parts
        runtime.notify_outbox()
        await wait_final(db, ids + long_ids, {"delivered": 205})
        async with db.read() as session:
            parts = await session.scalar(select(func.count()).select_from(CarrierMessage))
            row = await session.get(Message, long_ids[0])
        assert parts == 200 + 5 * 2
        assert row is not None and row.channel_id and row.carrier_message_id
        assert smsc.stats()["submit_sm"] == 210 and smsc.stats()["concat_messages_completed"] == 5
    finally:
        await runtime.stop()


async def test_receipt_mix_maps_to_statuses(db: Database, settings: Settings, account: AccountFixture) -> None:
    with SmscSim(DLR_STAT="DELIVRD:5,UNDELIV:2,REJECTD:1,EXPIRED:1,ENROUTE:1") as sim:
        await add_channel(db, "mix", sim.channel_config())
        runtime = Runtime(db, settings, MemoryQueue(), dispatchers=1)
        await runtime.start()
        try:
            ids = await send(db, settings, account, numbers(90))
            runtime.notify_outbox()
            # ENROUTE is intermediate: those messages stay `sent`, waiting for a final receipt
            await wait_final(db, ids, {"delivered": 45, "undelivered": 18, "rejected": 9, "expired": 9, "sent": 9})
            async with db.read() as session:
                codes = set((await session.execute(
                    select(Message.carrier_error_code).where(Message.status == "undelivered"))).scalars())
            assert codes and all(c.startswith("UNDELIV") for c in codes)
        finally:
            await runtime.stop()


async def test_failover_to_next_route_when_a_channel_is_down(db: Database, settings: Settings,
                                                             account: AccountFixture, smsc: SmscSim) -> None:
    down = await add_channel(db, "wrong-password", smsc.channel_config(password="nope"), priority=1)
    good = await add_channel(db, "good", smsc.channel_config(), priority=2)
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    try:
        assert not runtime.connectors[down].up
        assert await runtime.connectors[good].wait_up(10)  # type: ignore[attr-defined]
        ids = await send(db, settings, account, numbers(20))
        runtime.notify_outbox()
        await wait_final(db, ids, {"delivered": 20})
        async with db.read() as session:
            used = set((await session.execute(select(Message.channel_id).where(Message.id.in_(ids)))).scalars())
        assert used == {good}
    finally:
        await runtime.stop()


async def test_temporary_errors_fail_over_then_exhaust(db: Database, settings: Settings, account: AccountFixture,
                                                       smsc: SmscSim) -> None:
    with SmscSim(FAIL_EVERY=1) as broken:  # every submit answered ESME_RSYSERR
        await add_channel(db, "broken", broken.channel_config(), priority=1, countries=["CN"])
        good = await add_channel(db, "good", smsc.channel_config(), priority=2, countries=["CN"])
        settings.max_submit_attempts = 2
        runtime = Runtime(db, settings, MemoryQueue())
        await runtime.start()
        try:
            for connector in runtime.connectors.values():
                if connector.kind == "smpp":
                    assert await connector.wait_up(10)  # type: ignore[attr-defined]
            ids = await send(db, settings, account, numbers(10))
            runtime.notify_outbox()
            await wait_final(db, ids, {"delivered": 10})
            # a number only the broken channel may carry (prefix route): retried, then failed with the reason
            async with db.write() as session:
                await channels.create_route(session, channel="broken", priority=0, prefixes=["44"])
            await runtime.reload_channels()
            [lone] = await send(db, settings, account, ["+447911123456"])
            runtime.notify_outbox()
            await wait_final(db, [lone], {"failed": 1}, timeout=20)
            async with db.read() as session:
                row = await session.get(Message, lone)
            assert row is not None and row.error_code == "submit_attempts_exhausted"
            assert row.carrier_error_code == "ESME_RSYSERR" and row.attempts == 2
            # and a number no route matches fails at once with no_route
            [nowhere] = await send(db, settings, account, ["+14155552671"])
            runtime.notify_outbox()
            await wait_final(db, [nowhere], {"failed": 1})
            async with db.read() as session:
                assert (await session.get(Message, nowhere)).error_code == "no_route"  # type: ignore[union-attr]
            assert good in runtime.connectors
        finally:
            await runtime.stop()


async def test_smsc_restart_mid_stream_every_message_final(db: Database, settings: Settings,
                                                           account: AccountFixture) -> None:
    sim = SmscSim(DLR_DELAY_MS=20).start()
    try:
        await add_channel(db, "restarting", sim.channel_config(window=50))
        runtime = Runtime(db, settings, MemoryQueue())
        await runtime.start()
        try:
            ids = await send(db, settings, account, numbers(3000))
            runtime.notify_outbox()

            async def some() -> bool:
                return sim.stats()["submit_sm"] >= 500

            await wait_until(some, timeout=30, message="traffic flowing")
            sim.kill()
            sim.start()  # a fresh SMSC: receipts owed by the old one are lost with it
            async def all_left_queue() -> bool:
                counts = await statuses(db, ids)
                return counts["queued"] + counts["sending"] + counts["accepted"] == 0

            await wait_until(all_left_queue, timeout=60, interval=0.1, message="every message submitted")
            # messages acknowledged by the killed SMSC may wait for receipts that died with it (they expire at
            # validity); every other one went to the new instance, was acknowledged and gets its receipt
            resubmitted = sim.stats()["submit_sm_resp_ok"]
            assert resubmitted > 0

            async def receipts_in() -> bool:
                return (await statuses(db, ids))["delivered"] >= resubmitted

            await wait_until(receipts_in, timeout=30, message="receipts from the new SMSC")
            counts = await statuses(db, ids)
            assert counts["delivered"] + counts["sent"] == 3000, counts
            assert sum(counts.values()) == 3000 and counts["failed"] == 0
        finally:
            await runtime.stop()
    finally:
        sim.stop()


async def test_inbound_message_stored_and_webhooked(db: Database, settings: Settings, account: AccountFixture,
                                                   smsc: SmscSim) -> None:
    async with db.write() as session:
        await webhooks.create_endpoint(session, account_id=account.account_id, url="http://127.0.0.1:9/hook",
                                       event_types=["message.received"])
    await add_channel(db, "sim", smsc.channel_config())
    runtime = Runtime(db, settings, MemoryQueue())
    runtime.webhooks.stop()  # keep the events pending so the test can read them
    await runtime.start()
    try:
        [mid] = await send(db, settings, account, ["+8613800138000"])
        runtime.notify_outbox()
        await wait_final(db, [mid], {"delivered": 1})
        smsc.api("/mo", {"from": "8613800138000", "to": "10690001", "text": "退订"})

        async def stored() -> Any:
            async with db.read() as session:
                return (await session.execute(select(InboundMessage))).scalars().first()

        mo = await wait_until(stored, message="inbound stored")
        assert mo.account_id == account.account_id and mo.in_reply_to == mid
        assert mo.from_number == "+8613800138000" and mo.body == "退订"
        async with db.read() as session:
            events = (await session.execute(
                select(WebhookEvent).where(WebhookEvent.event_type == "message.received"))).scalars().all()
        assert len(events) == 1 and "退订" in events[0].payload
    finally:
        await runtime.stop()
