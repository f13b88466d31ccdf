"""The worker runtime: outbox relay → queue lanes → dispatch → connector; receipts → intake; sweeps.

One process in the embedded default (inside `hongyan serve`), or `hongyan worker` processes in production.
Crash safety: the database is the record. The in-process queue is rebuilt at start from messages that
are `queued` or were `sending` when the process died (a `sending` message may have reached the carrier:
it is submitted again — at-least-once — and counted in `recovered_sending`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from hongyan.channels.base import Connector, DeliveryReceipt, OutboundSms, SubmitOutcome
from hongyan.channels.registry import load_connectors
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.dispatch.queue import Queue
from hongyan.messaging.models import IdempotencyRecord, Message
from hongyan.messaging.states import FINAL, Status
from hongyan.messaging.transitions import Transition, apply_transitions
from hongyan.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

DISPATCH = "dispatch"
RECEIPT_PARK_LIMIT = timedelta(minutes=10)
_FINAL_VALUES = frozenset(s.value for s in FINAL)  # how long a receipt may wait for its submit response


@dataclass(slots=True)
class RuntimeStats:
    relayed: int = 0
    submitted: int = 0
    receipts: int = 0
    receipts_parked: int = 0
    recovered_queued: int = 0
    recovered_sending: int = 0
    expired: int = 0
    retries: int = 0
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Runtime:
    def __init__(self, db: Database, settings: Settings, queue: Queue, *, dispatchers: int = 2) -> None:
        self.db = db
        self.settings = settings
        self.queue = queue
        self.dispatchers = dispatchers
        self.connectors: dict[str, Connector] = {}
        self.default_channel: str | None = None
        self.outbox_wakeup = asyncio.Event()
        self.webhooks = WebhookSender(db, settings)
        self.stats = RuntimeStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._receipts: list[tuple[DeliveryReceipt, float]] = []
        self._receipt_wakeup = asyncio.Event()
        self._parked: list[tuple[DeliveryReceipt, float]] = []
        self._stopping = False
        self._stop_event = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self.connectors, self.default_channel = await load_connectors(self.db, self.settings)
        for connector in self.connectors.values():
            await connector.start(self.on_receipts)
        if not self.queue.durable:
            await self.recover()
        loops = [self._relay_loop(), self._receipt_loop(), self._sweep_loop(), self.webhooks.run()]
        loops += [self._dispatch_loop(i) for i in range(self.dispatchers)]
        self._tasks = [asyncio.create_task(c) for c in loops]

    async def stop(self, timeout: float = 15.0) -> None:
        """Let every loop finish its current transaction and exit; cancel only what overruns `timeout`.

        Cancelling a task in the middle of a write transaction could leave a pooled SQLite connection
        holding the write lock, so loops check `_stopping` at safe points instead."""
        self._stopping = True
        self._stop_event.set()
        self.outbox_wakeup.set()
        self._receipt_wakeup.set()
        self.webhooks.stop()
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_receipts()
        for connector in self.connectors.values():
            await connector.stop()
        await self.webhooks.close()

    def notify_outbox(self) -> None:
        """Called after a submit commits, so the relay does not wait for its next poll."""
        self.outbox_wakeup.set()

    # -- recovery ---------------------------------------------------------------------------------
    async def recover(self) -> None:
        """Rebuild the in-process queue from the database after a (possibly unclean) stop."""
        chunk = self.settings.dispatch_chunk
        async with self.db.write() as session:
            sending = (await session.scalars(select(Message.id).where(Message.status == Status.SENDING.value))).all()
            if sending:
                await apply_transitions(session, [Transition(mid, Status.QUEUED) for mid in sending])
            self.stats.recovered_sending += len(sending)
            queued = (
                await session.execute(
                    select(Message.id, Message.priority).where(Message.status == Status.QUEUED.value).order_by(Message.id)
                )
            ).all()
            owed = (
                await session.execute(
                    select(Message.id, Message.to_number, Message.channel_id).where(Message.status == Status.SENT.value)
                )
            ).all()
        by_lane: dict[int, list[str]] = {}
        for row in queued:
            by_lane.setdefault(row.priority, []).append(row.id)
        for lane, ids_ in by_lane.items():
            for i in range(0, len(ids_), chunk):
                await self.queue.publish(DISPATCH, lane, {"ids": ids_[i : i + chunk]})
        self.stats.recovered_queued += len(queued)
        by_channel: dict[str, list[tuple[str, str]]] = {}
        for row in owed:
            if row.channel_id in self.connectors:
                by_channel.setdefault(row.channel_id, []).append((row.id, row.to_number))
        for channel_id, items in by_channel.items():
            await self.connectors[channel_id].resume(items)
        if queued or sending or owed:
            log.info("recovered %d queued, %d sending, %d awaiting receipts", len(queued), len(sending), len(owed))

    # -- outbox relay -----------------------------------------------------------------------------
    async def relay_once(self, limit: int = 8) -> int:
        """Move due outbox items to the queue: accepted/scheduled → queued, in one transaction each round.

        A small `limit` keeps each relay transaction (and, on SQLite, the write lock) short, so dispatch
        and receipts interleave with it instead of waiting behind tens of thousands of rows."""
        now = utcnow()
        async with self.db.write() as session:
            query = (
                select(OutboxItem)
                .where(OutboxItem.topic == DISPATCH, OutboxItem.available_at <= now)
                .order_by(OutboxItem.lane, OutboxItem.id)
                .limit(limit)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            items = list((await session.scalars(query)).all())
            if not items:
                return 0
            publish: list[tuple[int, list[str]]] = []
            for item in items:
                ids_ = list(item.payload["ids"])
                outcome = await apply_transitions(session, [Transition(mid, Status.QUEUED) for mid in ids_])
                if outcome.applied:
                    publish.append((item.lane, outcome.applied_ids))
            await session.execute(delete(OutboxItem).where(OutboxItem.id.in_([i.id for i in items])))
        for lane, ids_ in publish:
            await self.queue.publish(DISPATCH, lane, {"ids": ids_})
            self.stats.relayed += len(ids_)
        return len(items)

    async def _relay_loop(self) -> None:
        poll = self.settings.outbox_poll_ms / 1000
        while not self._stopping:
            try:
                moved = await self.relay_once()
            except Exception:
                self.stats.errors += 1
                log.exception("outbox relay round failed")
                moved = 0
            if moved == 0:
                self.outbox_wakeup.clear()
                try:
                    await asyncio.wait_for(self.outbox_wakeup.wait(), timeout=poll)
                except TimeoutError:
                    pass

    # -- dispatch ---------------------------------------------------------------------------------
    async def _dispatch_loop(self, worker: int) -> None:
        while not self._stopping:
            try:
                item = await asyncio.wait_for(self.queue.get(DISPATCH), timeout=0.2)
            except TimeoutError:
                continue
            try:
                await self.dispatch(item.body["ids"])
            except Exception:
                # the rows stay `sending`/`queued`; the next start's recovery (or the lease sweep in
                # production mode) picks them up again
                self.stats.errors += 1
                log.exception("dispatch of %d messages failed", len(item.body["ids"]))

    async def dispatch(self, message_ids: list[str]) -> None:
        """queued → sending → connector → sent | rejected | failed | queued (retry)."""
        async with self.db.write() as session:
            outcome = await apply_transitions(session, [Transition(mid, Status.SENDING) for mid in message_ids])
            if not outcome.applied:
                return
        batch = [
            OutboundSms(r["id"], r["to_number"], r["sender"], r["body"], r["encoding"], r["segment_count"],
                        r["message_type"], r["priority"])
            for r in outcome.applied
        ]
        channel_id = self.default_channel
        connector = self.connectors.get(channel_id or "")
        if connector is None:
            results = [SubmitOutcome(m.message_id, False, error_code="no_route") for m in batch]
        else:
            try:
                results = await connector.submit(batch)
            except Exception:  # a connector bug or a dropped link must not strand messages in `sending`
                log.exception("connector %s failed on %d messages; they go back to the queue", channel_id, len(batch))
                results = [SubmitOutcome(m.message_id, False, retry=True) for m in batch]
        await self._record_submits(results, channel_id, {m.message_id: m.priority for m in batch})

    async def _record_submits(
        self, results: list[SubmitOutcome], channel_id: str | None, lanes: dict[str, int]
    ) -> None:
        transitions: list[Transition] = []
        retry: list[str] = []
        for r in results:
            if r.accepted:
                transitions.append(
                    Transition(r.message_id, Status.SENT, carrier_message_id=r.carrier_message_id, channel_id=channel_id)
                )
            elif r.retry:
                retry.append(r.message_id)
                transitions.append(Transition(r.message_id, Status.QUEUED, carrier_error_code=r.carrier_error_code))
            elif r.error_code == "carrier_rejected":
                transitions.append(
                    Transition(r.message_id, Status.REJECTED, error_code=r.error_code,
                               carrier_error_code=r.carrier_error_code, channel_id=channel_id)
                )
            else:
                transitions.append(
                    Transition(r.message_id, Status.FAILED, error_code=r.error_code or "submit_failed",
                               carrier_error_code=r.carrier_error_code, channel_id=channel_id)
                )
        async with self.db.write() as session:
            await apply_transitions(session, transitions)
        self.stats.submitted += sum(1 for r in results if r.accepted)
        if retry:
            self.stats.retries += len(retry)
            by_lane: dict[int, list[str]] = {}
            for mid in retry:
                by_lane.setdefault(lanes.get(mid, 1), []).append(mid)
            for lane, ids_ in by_lane.items():
                asyncio.get_running_loop().call_later(1.0, self._requeue, lane, ids_)
        self.webhooks.wakeup.set()

    def _requeue(self, lane: int, message_ids: list[str]) -> None:
        """Throttled or link-down messages go back on their lane after a pause (they are `queued`)."""
        if not self._stopping:
            task = asyncio.ensure_future(self.queue.publish(DISPATCH, lane, {"ids": message_ids}))
            task.add_done_callback(lambda _t: None)

    # -- receipts ---------------------------------------------------------------------------------
    async def on_receipts(self, receipts: list[DeliveryReceipt]) -> None:
        loop_time = asyncio.get_running_loop().time()
        self._receipts.extend((r, loop_time) for r in receipts)
        self._receipt_wakeup.set()

    async def _receipt_loop(self) -> None:
        while not self._stopping:
            await self._receipt_wakeup.wait()
            if self._stopping:
                break
            self._receipt_wakeup.clear()
            await asyncio.sleep(0.005)  # gather receipts for a few ms: one transaction for many
            try:
                await self._flush_receipts()
            except Exception:
                self.stats.errors += 1
                log.exception("receipt intake round failed")

    async def _flush_receipts(self) -> None:
        pending, self._receipts = self._receipts, []
        if not pending:
            return
        transitions = [
            Transition(r.message_id, r.status, carrier_error_code=r.carrier_error_code,
                       error_code=None if r.status is Status.DELIVERED else f"carrier_{r.status.value}")
            for r, _ in pending
            if r.message_id is not None
        ]
        async with self.db.write() as session:
            outcome = await apply_transitions(session, transitions)
            skipped = {t.message_id for t in outcome.skipped}
            parked: list[tuple[DeliveryReceipt, float]] = []
            if skipped:
                # receipts can beat the commit of their submit response: keep those still `sending`
                current = dict(
                    (await session.execute(select(Message.id, Message.status).where(Message.id.in_(skipped)))).all()
                )
                now = asyncio.get_running_loop().time()
                for receipt, first_seen in pending:
                    # not final yet (maybe `sent` by now: the submit committed after our UPDATE): retry
                    status = current.get(receipt.message_id)
                    if status is not None and status not in _FINAL_VALUES and receipt.message_id in skipped:
                        if now - first_seen < RECEIPT_PARK_LIMIT.total_seconds():
                            parked.append((receipt, first_seen))
        self.stats.receipts += len(outcome.applied)
        if parked:
            self.stats.receipts_parked += len(parked)
            self._parked.extend(parked)
            if not self._stopping:
                asyncio.get_running_loop().call_later(0.05, self._retry_parked)
        self.webhooks.wakeup.set()

    # -- sweeps -----------------------------------------------------------------------------------
    async def sweep_once(self) -> None:
        """Expire messages past their validity; retry parked receipts; drop old idempotency records."""
        now = utcnow()
        async with self.db.write() as session:
            due = (
                await session.scalars(
                    select(Message.id)
                    .where(
                        Message.status.in_([Status.SCHEDULED.value, Status.QUEUED.value, Status.SENT.value]),
                        Message.expires_at <= now,
                    )
                    .limit(5000)
                )
            ).all()
            if due:
                outcome = await apply_transitions(
                    session, [Transition(mid, Status.EXPIRED, error_code="validity_expired") for mid in due]
                )
                self.stats.expired += len(outcome.applied)
            await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - timedelta(hours=24)))
        self._retry_parked()

    def _retry_parked(self) -> None:
        if self._parked:
            parked, self._parked = self._parked, []
            self._receipts.extend(parked)
            self._receipt_wakeup.set()

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            try:  # a periodic timer that ends early on stop
                await asyncio.wait_for(self._stop_event.wait(), timeout=1.0)
                break
            except TimeoutError:
                pass
            try:
                await self.sweep_once()
            except Exception:
                self.stats.errors += 1
                log.exception("sweep failed")
