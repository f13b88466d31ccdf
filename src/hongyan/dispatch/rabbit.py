"""The RabbitMQ backend of the work queue (production mode), with aio-pika.

Mapping (docs/production.md, docs/lanes.md):
- one durable queue per topic and lane: `hongyan.dispatch.verification`, `….notification`, `….marketing`.
  Separate queues reserve capacity instead of only reordering it: a worker's verification consumers take
  lane 0 only, so a code never waits for a consumer busy with a marketing chunk, and each lane's depth is
  visible to operators. Items are small (a chunk of message ids), persistent, published with publisher
  confirms: `publish` returns once the broker has the item on disk.
- consumers ack manually, after the state change the item caused is committed. An unacked item (its worker
  died, or lost its connection) is redelivered with `redelivered` set; the runtime then takes over the
  messages left in `sending` (at-least-once towards the carrier: such a message may be submitted twice).
- a failed item is republished with an attempt count; after MAX_DELIVERIES attempts it is rejected and
  dead-lettered to `hongyan.dead` (the queues' x-dead-letter-routing-key); `hongyan queue dead` lists and
  requeues them.
- prefetch: lane 0 `verification_prefetch` (codes are handled concurrently, one per item); lanes 1 and 2
  `prefetch` per consumer (chunks of up to 500 ids; a low value keeps items in the broker, where another
  worker can take them, rather than waiting in this process's buffer).

Delivered items wait in a local MemoryQueue buffer, so `get(max_lane=…)` behaves exactly as in-process.
The connection is robust (aio-pika reconnects and restores consumers); after a reconnect the local buffer is
dropped, because the broker redelivers everything that was not acked on the old channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from hongyan.dispatch.codes_first import ANNOUNCE_S, CodeSignal
from hongyan.dispatch.queue import DISPATCH, LANE_NAMES, LANES, MAX_DELIVERIES, MemoryQueue, QueueItem

log = logging.getLogger(__name__)

PREFIX = "hongyan"  # HONGYAN_QUEUE_PREFIX: several installations (or test runs) on one vhost
DEPTH_REFRESH_S = 1.0


def queue_name(topic: str, lane: int, prefix: str = PREFIX) -> str:
    return f"{prefix}.{topic}.{LANE_NAMES[lane]}"


def codes_exchange(prefix: str = PREFIX) -> str:
    """The fanout exchange on which processes announce how fast codes move through them (codes_first)."""
    return f"{prefix}.codes"


def dead_name(prefix: str = PREFIX) -> str:
    return f"{prefix}.dead"


def queue_arguments(prefix: str = PREFIX) -> dict[str, Any]:
    """Every work queue dead-letters rejected items to <prefix>.dead (arguments must match on each declaration)."""
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_name(prefix)}


async def declare_lane(channel: AbstractChannel, topic: str, lane: int, prefix: str = PREFIX) -> Any:
    return await channel.declare_queue(queue_name(topic, lane, prefix), durable=True, arguments=queue_arguments(prefix))


async def declare_dead(channel: AbstractChannel, prefix: str = PREFIX) -> Any:
    return await channel.declare_queue(dead_name(prefix), durable=True)


def item_message(body: bytes, topic: str, lane: int, attempts: int) -> aio_pika.Message:
    """A work item as stored: persistent JSON, its topic, lane and attempt count in the headers."""
    return aio_pika.Message(body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            headers={"topic": topic, "lane": lane, "attempts": attempts})


class RabbitQueue:
    durable = True

    def __init__(self, url: str, *, lanes: tuple[int, ...] = LANES, prefetch: int = 2,
                 verification_prefetch: int = 64, prefix: str = PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.lanes = lanes  # the lanes this process consumes (`hongyan worker --lanes`)
        self.prefetch = prefetch
        self.verification_prefetch = verification_prefetch
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._connect_lock = asyncio.Lock()
        self._declared: set[str] = set()
        self._consuming: dict[str, asyncio.Future[None]] = {}
        self._consumer_channels: list[AbstractChannel] = []
        self._local = MemoryQueue()
        self.signal = CodeSignal()
        self._announce_task: asyncio.Task[None] | None = None
        self._listening = False
        self._depth: dict[str, dict[int, int]] = {}
        self._depth_task: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = {"published": 0, "delivered": 0, "redelivered": 0, "acked": 0, "ack_failed": 0,
                      "retried": 0, "dead_lettered": 0, "reconnects": 0}

    # -- connection -----------------------------------------------------------------------------------
    async def _channel(self) -> AbstractChannel:
        if self._pub is not None and not self._pub.is_closed:
            return self._pub
        async with self._connect_lock:
            if self._closed:
                raise RuntimeError("queue closed")
            if self._conn is None:
                self._conn = await aio_pika.connect_robust(
                    self.url, reconnect_interval=1.0, fail_fast=True,
                    client_properties={"connection_name": f"hongyan {socket.gethostname()}:{os.getpid()}"},
                )
                self._conn.reconnect_callbacks.add(self._on_reconnect)
                self._announce_task = asyncio.get_running_loop().create_task(self._announce())
            if self._pub is None or self._pub.is_closed:
                self._pub = await self._conn.channel(publisher_confirms=True)
                await declare_dead(self._pub, self.prefix)
        return self._pub

    def _on_reconnect(self, *_args: Any) -> None:
        self.stats["reconnects"] += 1
        dropped = self._local.drop_buffered()
        log.warning("RabbitMQ connection restored; %d buffered items dropped (the broker redelivers them)", dropped)

    async def _declare(self, channel: AbstractChannel, topic: str, lane: int) -> Any:
        return await declare_lane(channel, topic, lane, self.prefix)

    def name(self, topic: str, lane: int) -> str:
        return queue_name(topic, lane, self.prefix)

    # -- publishing -----------------------------------------------------------------------------------
    async def publish(self, topic: str, lane: int, body: dict[str, Any], *, attempts: int = 0) -> None:
        """Returns once the broker confirmed the item (persistent, on a durable queue); raises otherwise,
        and the caller keeps its outbox row to publish again."""
        channel = await self._channel()
        name = self.name(topic, lane)
        if name not in self._declared:
            await self._declare(channel, topic, lane)
            self._declared.add(name)
        await channel.default_exchange.publish(item_message(orjson.dumps(body), topic, lane, attempts), routing_key=name,
                                               mandatory=True)
        self.stats["published"] += 1

    # -- consuming ------------------------------------------------------------------------------------
    async def get(self, topic: str, *, max_lane: int = LANES[-1]) -> QueueItem:
        starting = self._consuming.get(topic)
        if starting is None or (starting.done() and starting.exception() is not None):
            # its own task: callers wrap get() in wait_for, and a cancelled basic.consume would leave the
            # channel half set up
            starting = self._consuming[topic] = asyncio.ensure_future(self._start_consumers(topic))
        await asyncio.shield(starting)
        return await self._local.get(topic, max_lane=max_lane)

    async def _start_consumers(self, topic: str) -> None:
        await self._channel()
        assert self._conn is not None
        for lane in self.lanes:
            channel = await self._conn.channel()
            self._consumer_channels.append(channel)
            await channel.set_qos(prefetch_count=self.verification_prefetch if lane == 0 else self.prefetch)
            queue = await self._declare(channel, topic, lane)
            await queue.consume(self._consumer(topic, lane))
        if any(lane > 0 for lane in self.lanes) and not self._listening:
            # a process that sends bulk traffic slows it down while codes are slow elsewhere (codes_first)
            self._listening = True
            channel = await self._conn.channel()
            self._consumer_channels.append(channel)
            exchange = await channel.declare_exchange(codes_exchange(self.prefix), aio_pika.ExchangeType.FANOUT)
            # named under the prefix (a server-named amq.gen-… queue is outside the permissions docs/deployment.md sets)
            heard = await channel.declare_queue(f"{codes_exchange(self.prefix)}.{self.signal.source}", exclusive=True,
                                                auto_delete=True, arguments={"x-message-ttl": 1000})
            await heard.bind(exchange)
            await heard.consume(self._on_codes, no_ack=True)

    async def _on_codes(self, message: AbstractIncomingMessage) -> None:
        try:
            report = orjson.loads(message.body)
            self.signal.heard(str(report["source"]), dict(report["stages"]))
        except (ValueError, KeyError, TypeError):
            log.debug("unreadable codes report ignored")

    async def _announce(self) -> None:
        """While codes move through this process, announce their latency per stage every ANNOUNCE_S (no
        confirms: a lost report is replaced by the next one)."""
        channel: AbstractChannel | None = None
        exchange: Any = None
        while not self._closed:
            await asyncio.sleep(ANNOUNCE_S)
            stages = self.signal.local()
            if not stages or self._conn is None:
                continue
            try:
                if channel is None or channel.is_closed:
                    channel = await self._conn.channel(publisher_confirms=False)
                    exchange = await channel.declare_exchange(codes_exchange(self.prefix), aio_pika.ExchangeType.FANOUT)
                await exchange.publish(aio_pika.Message(orjson.dumps({"source": self.signal.source, "stages": stages})),
                                       routing_key="", mandatory=False)  # nobody listening is fine
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                channel = None
                log.debug("codes report not sent: %s", exc)

    def _consumer(self, topic: str, lane: int) -> Any:
        async def on_message(message: AbstractIncomingMessage) -> None:
            self.stats["delivered"] += 1
            try:
                body = orjson.loads(message.body)
                if not isinstance(body, dict):
                    raise ValueError("item body is not an object")
            except ValueError:
                log.error("unreadable item on %s: dead-lettered", self.name(topic, lane))
                self.stats["dead_lettered"] += 1
                await message.reject(requeue=False)
                return
            if message.redelivered:
                self.stats["redelivered"] += 1
            attempts = int((message.headers or {}).get("attempts", 0) or 0)
            # a retry (attempts > 0) follows a failed attempt: like a redelivery, its messages may have
            # been left in `sending` and are taken over
            self._local.put(QueueItem(topic, lane, body, redelivered=bool(message.redelivered) or attempts > 0,
                                      ack=self._acker(message), retry=self._retrier(message, topic, lane, body, attempts)))

        return on_message

    def _acker(self, message: AbstractIncomingMessage) -> Any:
        async def ack() -> None:
            try:
                await message.ack()
                self.stats["acked"] += 1
            except Exception as exc:  # the channel closed meanwhile: the broker redelivers the item
                self.stats["ack_failed"] += 1
                log.warning("ack failed (%s): the item will be redelivered", type(exc).__name__)

        return ack

    def _retrier(self, message: AbstractIncomingMessage, topic: str, lane: int, body: dict[str, Any],
                 attempts: int) -> Any:
        async def retry() -> None:
            try:
                if attempts + 1 >= MAX_DELIVERIES:
                    await message.reject(requeue=False)  # → hongyan.dead, for an operator to look at
                    self.stats["dead_lettered"] += 1
                    log.error("item on %s failed %d times: dead-lettered", self.name(topic, lane), attempts + 1)
                    return
                await self.publish(topic, lane, body, attempts=attempts + 1)
                await message.ack()
                self.stats["retried"] += 1
            except Exception as exc:
                self.stats["ack_failed"] += 1
                log.warning("retry of an item failed (%s): the broker redelivers it", type(exc).__name__)

        return retry

    # -- depth, health, shutdown -----------------------------------------------------------------------
    def depth(self, topic: str) -> dict[int, int]:
        """The broker's ready count per lane plus what waits in this process's buffer; refreshed in the
        background about every second (the first call starts the refresher and answers zeros)."""
        if self._depth_task is None and not self._closed:
            with contextlib.suppress(RuntimeError):  # no running loop: answer from the cache
                self._depth_task = asyncio.get_running_loop().create_task(self._refresh_depth())
        self._depth.setdefault(topic, {lane: 0 for lane in LANES})
        local = self._local.depth(topic)
        return {lane: self._depth[topic].get(lane, 0) + local.get(lane, 0) for lane in LANES}

    async def _refresh_depth(self) -> None:
        while not self._closed:
            try:
                channel = await self._channel()
                for topic in list(self._depth):
                    counts = {}
                    for lane in LANES:
                        queue = await self._declare(channel, topic, lane)
                        counts[lane] = int(queue.declaration_result.message_count or 0)
                    self._depth[topic] = counts
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("queue depth refresh failed: %s", exc)
            await asyncio.sleep(DEPTH_REFRESH_S)

    async def ping(self) -> None:
        channel = await self._channel()
        if channel.is_closed or self._conn is None or self._conn.is_closed:
            raise ConnectionError("RabbitMQ connection is closed")

    async def close(self) -> None:
        """Stop consuming; unacked items go back to the broker when their channels close."""
        self._closed = True
        if self._announce_task is not None:
            self._announce_task.cancel()
        if self._depth_task is not None:
            self._depth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._depth_task
        for starting in self._consuming.values():
            starting.cancel()
        await self._local.close()
        for channel in self._consumer_channels:
            with contextlib.suppress(Exception):
                await channel.close()
        self._consumer_channels.clear()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = self._pub = None


# -- operator tools (hongyan queue …) ------------------------------------------------------------------
async def dead_letters(url: str, *, limit: int = 100, requeue: bool = False, prefix: str = PREFIX) -> list[dict[str, Any]]:
    """Items in hongyan.dead (oldest first). requeue=True moves each back to its lane's queue with a fresh
    attempt count (after the cause was fixed); otherwise they are only looked at and stay."""
    connection = await aio_pika.connect(url)
    out: list[dict[str, Any]] = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        dead = await declare_dead(channel, prefix)
        held: list[AbstractIncomingMessage] = []
        for _ in range(limit):
            message = await dead.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = message.headers or {}
            deaths = headers.get("x-death") or []
            origin = deaths[0].get("queue") if deaths and isinstance(deaths[0], dict) else None
            try:
                body = orjson.loads(message.body)
            except ValueError:
                body = {"unreadable": message.body[:200].decode("utf-8", "replace")}
            topic, lane = str(headers.get("topic") or DISPATCH), int(headers.get("lane", 1) or 1)
            ids = body.get("ids") if isinstance(body, dict) else None
            out.append({"queue": origin or queue_name(topic, lane, prefix), "topic": topic, "lane": lane,
                        "attempts": int(headers.get("attempts", 0) or 0),
                        "ids": len(ids) if isinstance(ids, list) else None, "first_id": ids[0] if ids else None})
            if requeue and isinstance(body, dict) and lane in LANES:
                queue = await declare_lane(channel, topic, lane, prefix)
                await channel.default_exchange.publish(item_message(message.body, topic, lane, 0),
                                                       routing_key=queue.name, mandatory=True)
                await message.ack()
            else:
                held.append(message)
        for message in held:  # looked at, not taken: back to the dead-letter queue
            await message.nack(requeue=True)
    finally:
        await connection.close()
    return out


async def queue_status(url: str, topics: tuple[str, ...] = (DISPATCH,), prefix: str = PREFIX) -> dict[str, int]:
    """Ready items per queue (including hongyan.dead) and consumers per queue, for `hongyan queue status`."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        out: dict[str, int] = {}
        for topic in topics:
            for lane in LANES:
                queue = await declare_lane(channel, topic, lane, prefix)
                out[queue.name] = int(queue.declaration_result.message_count or 0)
                out[queue.name + ":consumers"] = int(queue.declaration_result.consumer_count or 0)
        dead = await declare_dead(channel, prefix)
        out[dead.name] = int(dead.declaration_result.message_count or 0)
        return out
    finally:
        await connection.close()
