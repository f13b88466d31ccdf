"""The RabbitMQ queue backend against the real broker: lanes, manual acks, redelivery after a consumer dies,
retries and the dead-letter queue, depth; and two worker runtimes sharing one PostgreSQL and one broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.dispatch.queue import MAX_DELIVERIES, create_queue
from hongyan.dispatch.rabbit import RabbitQueue, dead_letters, queue_status
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from support import AccountFixture, free_port, wait_until


@pytest.fixture
async def queues(amqp_url: str, rabbit_prefix: str) -> Any:
    made: list[RabbitQueue] = []

    def make(**kw: Any) -> RabbitQueue:
        q = RabbitQueue(amqp_url, prefix=rabbit_prefix, **kw)
        made.append(q)
        return q

    yield make
    for q in made:
        await q.close()


async def test_create_queue_picks_the_backend(amqp_url: str) -> None:
    q = create_queue(amqp_url, lanes=(0,))
    assert isinstance(q, RabbitQueue) and q.durable and q.lanes == (0,)
    await q.ping()
    await q.close()
    with pytest.raises(ValueError, match="unsupported queue URL"):
        create_queue("redis://127.0.0.1/")


async def test_ping_fails_on_a_dead_broker() -> None:
    q = RabbitQueue("amqp://guest:guest@127.0.0.1:1/")  # nothing listens on port 1
    with pytest.raises(Exception):  # noqa: B017 - any connection error is the point
        await q.ping()
    await q.close()


async def test_publish_get_ack_and_max_lane(queues: Any) -> None:
    producer, consumer = queues(), queues(prefetch=1)
    for n in range(3):
        await producer.publish("dispatch", 2, {"ids": [f"m{n}"]})
    item = await asyncio.wait_for(consumer.get("dispatch"), 5)
    assert item.lane == 2 and item.body["ids"][0].startswith("m") and not item.redelivered
    # a verification item overtakes marketing items held in the broker (prefetch 1 keeps them there)
    await producer.publish("dispatch", 0, {"ids": ["code"]})
    code = await asyncio.wait_for(consumer.get("dispatch", max_lane=0), 5)
    assert code.lane == 0 and code.body == {"ids": ["code"]}
    await code.ack()
    await item.ack()
    seen = Counter()
    for _ in range(2):
        rest = await asyncio.wait_for(consumer.get("dispatch"), 5)
        seen[rest.body["ids"][0]] += 1
        await rest.ack()
    assert sum(seen.values()) == 2 and all(v == 1 for v in seen.values())


async def test_unacked_item_is_redelivered_to_another_worker(queues: Any, amqp_url: str, rabbit_prefix: str) -> None:
    producer, first = queues(), queues()
    await producer.publish("dispatch", 1, {"ids": ["a", "b"]})
    taken = await asyncio.wait_for(first.get("dispatch"), 5)
    assert not taken.redelivered
    await first.close()  # the worker dies without acking: the broker gets the item back
    second = queues()
    again = await asyncio.wait_for(second.get("dispatch"), 5)
    assert again.body == {"ids": ["a", "b"]} and again.redelivered
    await again.ack()

    async def drained() -> bool:
        status = await queue_status(amqp_url, prefix=rabbit_prefix)
        return status[f"{rabbit_prefix}.dispatch.notification"] == 0

    await wait_until(drained, timeout=10, message="the acked item gone from the broker")


async def test_failing_item_is_retried_then_dead_lettered_and_can_be_requeued(
    queues: Any, amqp_url: str, rabbit_prefix: str
) -> None:
    producer, consumer = queues(), queues()
    await producer.publish("dispatch", 2, {"ids": ["poison"]})
    for attempt in range(MAX_DELIVERIES):
        item = await asyncio.wait_for(consumer.get("dispatch"), 5)
        assert item.body == {"ids": ["poison"]}
        await item.retry()  # handling failed
        if attempt < MAX_DELIVERIES - 1:
            assert consumer.stats["retried"] == attempt + 1
    assert consumer.stats["dead_lettered"] == 1
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consumer.get("dispatch"), 0.5)

    async def dead() -> list[dict[str, Any]]:
        return await dead_letters(amqp_url, prefix=rabbit_prefix)

    listed = await wait_until(dead, timeout=10, message="the item in the dead-letter queue")
    assert listed[0]["lane"] == 2 and listed[0]["first_id"] == "poison"
    assert listed[0]["queue"] == f"{rabbit_prefix}.dispatch.marketing"
    assert len(await dead()) == 1, "listing does not consume"
    moved = await dead_letters(amqp_url, prefix=rabbit_prefix, requeue=True)
    assert len(moved) == 1
    back = await asyncio.wait_for(consumer.get("dispatch"), 5)
    assert back.body == {"ids": ["poison"]}
    await back.ack()
    assert await dead() == []


async def test_depth_reports_the_brokers_count_per_lane(queues: Any) -> None:
    producer = queues()
    for lane, n in ((0, 1), (2, 3)):
        for _ in range(n):
            await producer.publish("dispatch", lane, {"ids": ["x"]})

    async def counted() -> bool:
        return producer.depth("dispatch") == {0: 1, 1: 0, 2: 3}

    await wait_until(counted, timeout=10, message="depth from the broker")


# -- two workers on one PostgreSQL and one broker --------------------------------------------------------------
# (numbers end in 9: the sandbox's magic endings 00001-00008 pick outcomes such as "no receipt ever")
SANDBOX_FINAL = ("delivered", "undelivered", "rejected")  # its mix for ordinary numbers: 95 / 3 / 2 %


async def wait_final(db: Database, ids: list[str], *, timeout: float, message: str,
                     context: Any = lambda: "") -> None:
    """Until every message of `ids` has a final status; on a timeout the statuses (and `context()`) say why."""
    async def final() -> bool:
        async with db.read() as session:
            n = await session.scalar(select(func.count()).select_from(Message).where(
                Message.id.in_(ids), Message.status.in_(SANDBOX_FINAL)))
        return n == len(ids)

    try:
        await wait_until(final, timeout=timeout, message=message)
    except AssertionError:
        async with db.read() as session:
            counts = dict((await session.execute(select(Message.status, func.count()).where(
                Message.id.in_(ids)).group_by(Message.status))).all())
        raise AssertionError(f"{message}: statuses {counts}; {context()}") from None
@pytest.fixture
def pg_settings(settings: Settings, db_backend: str, amqp_url: str, rabbit_prefix: str) -> Settings:
    if db_backend != "postgresql":
        pytest.skip("production mode runs on PostgreSQL")
    return settings.model_copy(update={"queue_url": amqp_url, "queue_prefix": rabbit_prefix, "dispatch_chunk": 50})


async def test_two_workers_share_the_work_and_deliver_each_message_once(
    db: Database, pg_settings: Settings, account: AccountFixture, amqp_url: str, rabbit_prefix: str
) -> None:
    from hongyan.dispatch.queue import queue_for

    api = Runtime(db, pg_settings, queue_for(pg_settings), relay_only=True)
    workers = [Runtime(db, pg_settings, queue_for(pg_settings)) for _ in range(2)]
    for r in [api, *workers]:
        await r.start()
    try:
        accepted: list[str] = []
        for batch in range(4):
            request = SubmitRequest(text=f"two workers {batch}",
                                    recipients=[Recipient(to=f"+861390{batch}{i:05d}9") for i in range(250)])
            result = await submit_batch(db, pg_settings, request, account_id=account.account_id, source="api")
            accepted += [m.id for m in result.accepted]
            api.notify_outbox()

        await wait_final(db, accepted, timeout=60, message="1,000 messages final",
                         context=lambda: f"workers {[w.stats for w in workers]}; "
                                         f"channels {[w.channel_status() for w in workers]}")
        assert all(w.stats.submitted > 0 for w in workers), [w.stats.submitted for w in workers]
        assert sum(w.stats.submitted for w in workers) == len(accepted)
        # every process relays (SKIP LOCKED shares the outbox); only workers dispatch
        assert api.stats.submitted == 0 and sum(r.stats.relayed for r in [api, *workers]) == len(accepted)
        async with db.read() as session:
            sending = await session.scalar(select(func.count()).select_from(MessageEvent).where(
                MessageEvent.message_id.in_(accepted), MessageEvent.status == "sending"))
            left = await session.scalar(select(func.count()).select_from(OutboxItem))
        assert sending == len(accepted), "each message taken by exactly one dispatcher"

        async def outbox_empty() -> bool:
            async with db.read() as session:
                return await session.scalar(select(func.count()).select_from(OutboxItem)) == 0

        await wait_until(outbox_empty, timeout=10, message=f"published outbox rows deleted ({left} left)")
    finally:
        for r in [api, *workers]:
            await r.stop(timeout=10)


async def test_a_dead_workers_messages_in_sending_are_taken_over(
    db: Database, pg_settings: Settings, account: AccountFixture
) -> None:
    """A worker takes an item, moves its messages to `sending` and dies before submitting: the broker
    redelivers the item, and another worker submits them (counted as recovered)."""
    from hongyan.dispatch.queue import queue_for
    from hongyan.messaging.states import Status
    from hongyan.messaging.transitions import Transition, apply_transitions

    request = SubmitRequest(text="takeover", recipients=[Recipient(to=f"+8613900{i:05d}9") for i in range(20)])
    result = await submit_batch(db, pg_settings, request, account_id=account.account_id, source="api")
    ids = [m.id for m in result.accepted]
    relay = Runtime(db, pg_settings, queue_for(pg_settings), relay_only=True)
    await relay.relay_once(100)
    doomed = queue_for(pg_settings)
    item = await asyncio.wait_for(doomed.get("dispatch"), 5)
    async with db.write() as session:  # what a dispatcher does first, then the process is killed
        await apply_transitions(session, [Transition(mid, Status.SENDING) for mid in item.body["ids"]])
    await doomed.close()
    survivor = Runtime(db, pg_settings, queue_for(pg_settings))
    await survivor.start()
    try:
        await wait_final(db, ids, timeout=30, message="the dead worker's messages final")
        assert survivor.stats.recovered_sending == len(ids)
    finally:
        await survivor.stop(timeout=10)
        await relay.stop(timeout=5)


async def test_republish_after_the_broker_lost_its_queues(
    db: Database, pg_settings: Settings, account: AccountFixture, amqp_url: str, rabbit_prefix: str
) -> None:
    """Queued messages whose items vanished with the broker's data are given new items by
    `hongyan queue republish`; a worker then delivers each once."""
    import aio_pika

    from hongyan.dispatch.outbox import republish_queued
    from hongyan.dispatch.queue import queue_for
    from hongyan.dispatch.rabbit import queue_name

    request = SubmitRequest(text="lost", recipients=[Recipient(to=f"+8613911{i:05d}9") for i in range(30)])
    ids = [m.id for m in (await submit_batch(db, pg_settings, request, account_id=account.account_id,
                                             source="api")).accepted]
    relay = Runtime(db, pg_settings, queue_for(pg_settings), relay_only=True)
    while await relay.relay_once(100):
        pass
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    lost = await channel.declare_queue(queue_name("dispatch", 1, rabbit_prefix), passive=True)
    assert (await lost.purge()).message_count == 1  # the broker's data is gone
    await connection.close()
    assert await republish_queued(db, chunk=pg_settings.dispatch_chunk) == len(ids)
    worker = Runtime(db, pg_settings, queue_for(pg_settings))
    await worker.start()
    try:
        await wait_final(db, ids, timeout=30, message="republished messages final",
                         context=lambda: f"worker {worker.stats}, queue {worker.queue.stats}")
        assert worker.stats.submitted == len(ids)
    finally:
        await worker.stop(timeout=10)
        await relay.stop(timeout=5)


async def test_a_worker_outlives_an_unreachable_broker(db: Database, pg_settings: Settings) -> None:
    """Started before the broker (or while it restarts): the dispatch loops keep asking instead of dying."""
    from hongyan.dispatch.queue import queue_for

    dead = pg_settings.model_copy(update={"queue_url": f"amqp://guest:guest@127.0.0.1:{free_port()}/"})
    runtime = Runtime(db, dead, queue_for(dead))
    await runtime.start()
    try:
        async def complained_twice() -> bool:
            return runtime.stats.errors >= 4  # the general and the verification dispatchers, twice each

        await wait_until(complained_twice, timeout=15, message="dispatchers retrying the broker")
        assert not any(t.done() for t in runtime._tasks), "a loop died"
    finally:
        await runtime.stop(timeout=5)


async def test_a_failed_dispatch_is_retried_and_its_messages_in_sending_taken_over(
    db: Database, pg_settings: Settings, account: AccountFixture
) -> None:
    """Recording the submit results fails once (database trouble after the carrier took them): the item is
    retried, and the retry takes the messages left in `sending` over instead of skipping them."""
    from hongyan.dispatch.queue import queue_for

    request = SubmitRequest(text="retry", recipients=[Recipient(to=f"+8613912{i:05d}9") for i in range(10)])
    ids = [m.id for m in (await submit_batch(db, pg_settings, request, account_id=account.account_id,
                                             source="api")).accepted]
    worker = Runtime(db, pg_settings, queue_for(pg_settings))
    real = worker._record_submits
    calls = {"n": 0}

    async def flaky(results: Any, messages: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionResetError("database connection lost")
        await real(results, messages)

    worker._record_submits = flaky  # type: ignore[method-assign]
    await worker.start()
    worker.notify_outbox()
    try:
        await wait_final(db, ids, timeout=30, message="every message final after the retry")
        assert worker.stats.recovered_sending == len(ids) and worker.queue.stats["retried"] == 1
    finally:
        await worker.stop(timeout=10)
