"""Lanes: a verification code overtakes a marketing backlog in the queue and a dispatcher busy with it.

The queue alone (lane order, verification-only consumers, no lost items) and the whole runtime over real
SMPP to the simulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select, update

from hongyan.accounts.models import Account
from hongyan.channels import service as channels
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch.queue import MemoryQueue
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.models import Message
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from smsc import SmscSim
from support import AccountFixture, wait_until

MARKETING = "春季新品八折，详情见官网。回T退订"


async def test_verification_consumer_takes_only_lane_zero_and_is_served_first() -> None:
    queue = MemoryQueue()
    general = asyncio.create_task(queue.get("dispatch"))
    codes = asyncio.create_task(queue.get("dispatch", max_lane=0))
    await asyncio.sleep(0)
    await queue.publish("dispatch", 2, {"ids": ["m1"]})
    await queue.publish("dispatch", 0, {"ids": ["v1"]})
    assert (await general).body["ids"] == ["m1"]  # the verification consumer never takes marketing
    assert (await codes).body["ids"] == ["v1"]
    # with both kinds waiting, a code goes to the verification consumer, not the general one
    general = asyncio.create_task(queue.get("dispatch"))
    await asyncio.sleep(0)
    codes = asyncio.create_task(queue.get("dispatch", max_lane=0))
    await asyncio.sleep(0)
    await queue.publish("dispatch", 0, {"ids": ["v2"]})
    assert (await codes).body["ids"] == ["v2"] and not general.done()
    general.cancel()
    # backlog: lowest lane first, FIFO within a lane; a lane-0 consumer sees nothing else
    for lane, mid in [(2, "m2"), (1, "n1"), (2, "m3"), (0, "v3")]:
        await queue.publish("dispatch", lane, {"ids": [mid]})
    assert queue.depth("dispatch") == {0: 1, 1: 1, 2: 2}
    assert (await queue.get("dispatch", max_lane=0)).body["ids"] == ["v3"]
    try:
        await asyncio.wait_for(queue.get("dispatch", max_lane=0), 0.05)
        raise AssertionError("a verification consumer took a marketing item")
    except TimeoutError:
        pass
    assert [(await queue.get("dispatch")).body["ids"][0] for _ in range(3)] == ["n1", "m2", "m3"]


async def test_cancelled_get_loses_no_item() -> None:
    """The dispatch loops poll with wait_for(get, 0.2): an item handed over as the wait times out stays."""
    queue = MemoryQueue()
    for _ in range(200):
        getter = asyncio.create_task(queue.get("dispatch", max_lane=0))
        await asyncio.sleep(0)
        await queue.publish("dispatch", 0, {"ids": ["v"]})
        getter.cancel()
        got = await asyncio.gather(getter, return_exceptions=True)
        if isinstance(got[0], asyncio.CancelledError):
            assert (await asyncio.wait_for(queue.get("dispatch"), 1)).body["ids"] == ["v"]
    assert queue.depth("dispatch") == {0: 0, 1: 0, 2: 0}


async def test_verification_overtakes_a_marketing_backlog_over_smpp(
    db: Database, settings: Settings, account: AccountFixture, smsc: SmscSim
) -> None:
    """1,000 marketing messages (two 500-id chunks) to a bind limited to 200/s, one general dispatcher: it is
    inside a chunk for 2.5 s (at 400/s, on SQLite under a slow CI machine, the code's own writes once took
    more than the 1 s of margin that left). A code sent meanwhile reaches the SMSC long before that chunk ends —
    without a lane-0 consumer it would wait for the chunk (position ≥ 500), without the window's lane order
    behind the chunk's queued PDUs."""
    async with db.write() as session:  # the test must not depend on the time of day
        await session.execute(
            update(Account).where(Account.id == account.account_id).values(quiet_hours="off")
        )
    await add_channel(db, smsc.channel_config(window=10, tps=200))
    runtime = Runtime(db, settings, MemoryQueue(), dispatchers=1)
    await runtime.start()
    try:
        backlog = await send(
            db,
            settings,
            account,
            [f"+86138{i:08d}" for i in range(1000)],
            text=MARKETING,
            message_type="marketing",
        )
        runtime.notify_outbox()
        await wait_until(lambda: _at_least(smsc, 20), timeout=20, message="the marketing chunk is being sent")
        code = await send(
            db,
            settings,
            account,
            ["+8613912345678"],
            text="您的验证码是482913,5分钟内有效。",
            message_type="verification",
        )
        runtime.notify_outbox()

        async def code_sent() -> bool:
            return bool({"sent", "delivered"} & set(await statuses(db, code)))

        await wait_until(code_sent, timeout=20, interval=0.02, message="the code sent")
        received = [m["dest"] for m in smsc.messages(limit=1100)]
        at = received.index("8613912345678")
        assert at < 400, f"the code was number {at} at the SMSC"
        await wait_until(lambda: _at_least(smsc, 1001), timeout=30, message="the backlog sent")
        assert sum((await statuses(db, backlog)).values()) == 1000
    finally:
        await runtime.stop()


async def _at_least(smsc: SmscSim, n: int) -> bool:
    return int(smsc.stats()["submit_sm"]) >= n


async def send(
    db: Database, settings: Settings, account: AccountFixture, to: list[str], *, text: str, message_type: str
) -> list[str]:
    request = SubmitRequest(text=text, recipients=[Recipient(to=n) for n in to], message_type=message_type)
    result = await submit_batch(db, settings, request, account_id=account.account_id, source="api")
    assert len(result.accepted) == len(to)
    return [m.id for m in result.accepted]


async def statuses(db: Database, ids: list[str]) -> dict[str, int]:
    async with db.read() as session:
        rows = (await session.scalars(select(Message.status).where(Message.id.in_(ids)))).all()
    return {s: rows.count(s) for s in set(rows)}


async def add_channel(db: Database, config: dict[str, Any]) -> None:
    async with db.write() as session:
        channel = await channels.create_channel(session, name="sim", kind="smpp", config=config)
        await channels.create_route(session, channel=channel.id, priority=10)


async def test_a_verification_only_worker_does_no_bulk_work(db: Database, settings: Settings) -> None:
    """`hongyan worker --lanes verification`: no campaign engine, no contact imports, no general dispatchers."""
    codes_only = Runtime(db, settings, MemoryQueue(), lanes=(0,))
    everything = Runtime(db, settings, MemoryQueue())
    await codes_only.start()
    await everything.start()
    try:
        async def engine_started() -> bool:
            return everything.campaigns is not None

        await wait_until(engine_started, message="the full worker's campaign engine")
        names = {t.get_coro().__qualname__ for t in codes_only._tasks}
        assert codes_only.campaigns is None and "Runtime._campaign_loop" not in names
        assert "Runtime._dispatch_loop" not in names and "Runtime._verification_loop" in names
    finally:
        await codes_only.stop(timeout=5)
        await everything.stop(timeout=5)
