"""The worker runtime: outbox relay → queue lanes → dispatch → connector; receipts → intake; sweeps.

One process in the embedded default (inside `hongyan serve`), or `hongyan worker` processes in production.
Crash safety: the database is the record. The in-process queue is rebuilt at start from messages that
are `queued` or were `sending` when the process died (a `sending` message may have reached the carrier:
it is submitted again — at-least-once — and counted in `recovered_sending`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import String, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from hongyan.campaigns.pump import WindowCache, hold_back_quiet
from hongyan.channels.base import (
    Connector,
    DeliveryReceipt,
    InboundSms,
    OutboundSms,
    ReceiptsNotStored,
    SubmitOutcome,
)
from hongyan.channels.models import CarrierMessage
from hongyan.channels.registry import build_connector, fingerprint, load_setup
from hongyan.channels.routing import Router
from hongyan.compliance import replies as opt_out_replies  # registers the opt-out reply hook (MO)
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db import statistics
from hongyan.db.engine import Database, is_transient
from hongyan.dispatch import codes_first, lease, outbox
from hongyan.dispatch.binds import BindLeases
from hongyan.dispatch.codes_first import BulkGate
from hongyan.dispatch.models import outbox_rows
from hongyan.dispatch.queue import DISPATCH, LANES, Queue, QueueItem
from hongyan.messaging import inbound
from hongyan.messaging.models import IdempotencyRecord, Message
from hongyan.messaging.states import FINAL, Status
from hongyan.messaging.transitions import Transition, apply_transitions
from hongyan.webhooks import service as webhook_events
from hongyan.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

RECEIPT_PARK_LIMIT = timedelta(minutes=10)
RECEIPT_ACK_HOLD_S = 10.0  # a parked receipt is answered to the carrier after this long at the latest
RECEIPT_WRITE_ATTEMPTS = 3  # tries of a receipt round's transaction on a deadlock or serialization failure
RECEIPT_GATHER_S = 0.005  # a receipt round gathers the receipts arriving in this long: one transaction for many
# … in a verification-only worker (`--lanes verification`): its receipts come one by one (50 codes/s: one
# every 20 ms), so 5 ms rounds were a transaction per receipt; nothing waits on a code's receipt but the
# carrier's deliver_sm_resp, so its rounds gather for longer and the worker's CPU stays with the codes
RECEIPT_GATHER_CODES_S = 0.1
RECORD_EVERY = 50  # accepted submits are committed in slices of this many (see Runtime._submit_recording)
EMAIL_POLL_S = 10.0  # HONGYAN_EMAIL_BACKEND=smtp: how often pending account emails are sent
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


_CM = CarrierMessage.__table__
_MATCH_COLUMNS = (_CM.c.id, _CM.c.channel_id, _CM.c.carrier_message_id, _CM.c.message_id, _CM.c.group_ref,
                  _CM.c.parts, _CM.c.status)
# receipts → their submits (PostgreSQL): `= ANY(array)`, not an IN list whose every length is a new statement
_MATCH_CARRIER_IDS_PG = select(*_MATCH_COLUMNS).where(
    _CM.c.carrier_message_id == func.any(bindparam("c_ids", type_=ARRAY(String))))


class Runtime:
    def __init__(self, db: Database, settings: Settings, queue: Queue, *, dispatchers: int = 2,
                 verification_dispatchers: int = 8, lanes: tuple[int, ...] = LANES, relay_only: bool = False) -> None:
        self.db = db
        self.settings = settings
        self.queue = queue
        self.lanes = lanes  # the lanes this process dispatches (`hongyan worker --lanes`)
        self.relay_only = relay_only  # `hongyan serve --no-workers` on RabbitMQ: publishes, dispatches nothing
        self.holder = lease.new_holder_id()
        self.relay = outbox.Relay(db, queue)
        # bulk lanes slow down while codes are slow (dispatch.codes_first); only where bulk traffic is sent
        self.gate = (BulkGate(queue.signal, target_ms=settings.codes_first_target_ms,
                              min_tps=settings.codes_first_min_tps)
                     if settings.codes_first_target_ms > 0 and any(lane > 0 for lane in lanes) and not relay_only
                     else None)
        # several processes share the carriers: each SMPP bind is leased to one of them (dispatch.binds)
        self.bind_leases = (BindLeases(db, self.holder, ttl_s=settings.bind_lease_s)
                            if queue.durable and not relay_only else None)
        self.dispatchers = dispatchers  # general: every lane, lowest first
        self.verification_dispatchers = verification_dispatchers  # lane 0 only, concurrent
        self.connectors: dict[str, Connector] = {}
        self.router = Router([])
        self._fingerprints: dict[str, str] = {}
        self._setup_signature: tuple[Any, ...] | None = None
        self.outbox_wakeup = asyncio.Event()
        self.confirmations_wakeup = asyncio.Event()  # an MO was stored: opt-out confirmations may be due
        self.webhooks = WebhookSender(db, settings)
        self.stats = RuntimeStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._receipts: list[tuple[DeliveryReceipt, _Seen]] = []
        self._receipt_wakeup = asyncio.Event()
        self.receipt_gather_s = RECEIPT_GATHER_CODES_S if set(lanes) == {0} else RECEIPT_GATHER_S
        self._parked: list[tuple[DeliveryReceipt, _Seen]] = []
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.campaigns: Any = None  # campaigns.engine.CampaignEngine, once started
        self.quiet_windows = WindowCache(db, settings)
        self.statistics = statistics.StatisticsKeeper(db)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.relay_only:
            self._tasks = [asyncio.create_task(self._relay_loop())]
            return
        await self.reload_channels()
        if self.bind_leases is not None:
            await self.bind_leases.tick(self.connectors)
        if not self.queue.durable:
            await self.recover()
        loops = [self._relay_loop(), self._receipt_loop(), self._sweep_loop(), self._reload_loop(), self.webhooks.run(),
                 self._periodic("billing sweep", self.settings.billing_sweep_s, self._billing_sweep),
                 self._periodic("privacy retention sweep", self.settings.privacy_sweep_s, self._privacy_sweep)]
        if not self.db.is_sqlite:  # PostgreSQL with autovacuum off: keep planner statistics fresh (db.statistics)
            loops.append(self._periodic("table statistics", statistics.STATISTICS_S, self.statistics.round))
        if self.verification_dispatchers > 0 and 0 in self.lanes:
            loops.append(self._verification_loop())
        if self.bind_leases is not None:
            loops.append(self._periodic("SMPP bind leases", self.settings.bind_lease_s / 3, self._bind_tick))
        if any(lane > 0 for lane in self.lanes):
            # general dispatchers and the bulk work (building campaign runs, importing contact files) stay off
            # verification-only workers (`--lanes verification`): their CPU is for codes
            loops += [self._dispatch_loop(i) for i in range(self.dispatchers)]
            loops.append(self._periodic("contact imports", self.settings.import_poll_s, self._imports))
            loops.append(self._campaign_loop())
            if self.gate is not None:
                loops.append(self._gate_loop())
        loops.append(self._confirmation_loop())
        if self.settings.email_backend == "smtp":
            loops.append(self._periodic("email delivery", EMAIL_POLL_S, self._email_delivery))
        self._tasks = [asyncio.create_task(c) for c in loops]

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown (SIGTERM): stop taking work, let every loop finish its current item — a
        dispatch drains its carrier window and commits — then unbind and close; cancel only what overruns
        `timeout` (HONGYAN_SHUTDOWN_TIMEOUT_S). Items taken from a durable queue and not acked go back to
        the broker. Cancelling a task in the middle of a write transaction could leave a pooled SQLite
        connection holding the write lock, so loops check `_stopping` at safe points instead."""
        timeout = self.settings.shutdown_timeout_s if timeout is None else timeout
        self._stopping = True
        self._stop_event.set()
        if self.campaigns is not None:
            self.campaigns.wakeup.set()
        self.outbox_wakeup.set()
        self.confirmations_wakeup.set()
        self._receipt_wakeup.set()
        self.webhooks.stop()
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # every dispatch has finished and recorded its submits: receipts parked while waiting for those records
        # can be stored now, with the ones still buffered (a carrier that is told to resend may never do so)
        self._unpark()
        await self._flush_receipts()
        for _receipt, seen in self._parked:  # not stored: the carrier is told to send them again
            seen.fail(ReceiptsNotStored("stopping before the receipt's submit was recorded"))
        with contextlib.suppress(Exception):
            await self.relay.forget(now=True)
        for connector in self.connectors.values():
            await connector.stop()
        if self.bind_leases is not None:
            with contextlib.suppress(Exception):
                await self.bind_leases.release_all()
        await self.webhooks.close()
        if self.gate is not None:
            self.gate.close()
        await self.queue.close()

    async def reload_channels(self) -> bool:
        """Start connectors of new or changed channels, stop removed ones, rebuild the router."""
        if self.relay_only:  # an API process in production mode: the workers run the carriers
            return False
        setup = await load_setup(self.db)
        if setup.signature == self._setup_signature:
            return False
        wanted = {c.id: c for c in setup.channels}
        for channel_id in [cid for cid in self.connectors if cid not in wanted]:
            await self._stop_connector(channel_id)
        for channel_id, channel in wanted.items():
            fp = fingerprint(channel)
            if self._fingerprints.get(channel_id) == fp:
                continue
            if channel_id in self.connectors:
                await self._stop_connector(channel_id)
            try:
                connector = build_connector(channel, self.settings, gate=self.gate)
            except ValueError as exc:
                log.error("channel %s (%s) cannot start: %s", channel.name, channel_id, exc)
                continue
            if self.bind_leases is not None and hasattr(connector, "set_active"):
                await connector.set_active(set())  # binds come with their leases (dispatch.binds)
            await connector.start(self.on_receipts, self.on_inbound)
            self.connectors[channel_id] = connector
            self._fingerprints[channel_id] = fp
        self.router = Router(setup.rules, setup.default_channel)
        self._setup_signature = setup.signature
        return True

    async def _stop_connector(self, channel_id: str) -> None:
        connector = self.connectors.pop(channel_id)
        self._fingerprints.pop(channel_id, None)
        try:
            await connector.stop()
        except Exception:
            log.exception("stopping channel %s failed", channel_id)

    async def _reload_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._stop_event.wait(), timeout=self.settings.channel_reload_s)
                break
            except TimeoutError:
                pass
            try:
                await self.reload_channels()
            except Exception:
                self.stats.errors += 1
                log.exception("reloading channels failed")

    def channel_status(self) -> dict[str, dict[str, Any]]:
        return {cid: c.status() for cid, c in self.connectors.items()}

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
        """Move due outbox items to the queue (dispatch.outbox): accepted/scheduled → queued.

        A small `limit` keeps each relay transaction (and, on SQLite, the write lock) short, so dispatch
        and receipts interleave with it instead of waiting behind tens of thousands of rows."""
        before = self.relay.published
        moved = await self.relay.once(limit)
        self.stats.relayed += self.relay.published - before
        return moved

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
                with contextlib.suppress(Exception):
                    await self.relay.forget()
                self.outbox_wakeup.clear()
                try:
                    await asyncio.wait_for(self.outbox_wakeup.wait(), timeout=poll)
                except TimeoutError:
                    pass

    # -- dispatch ---------------------------------------------------------------------------------
    async def _dispatch_loop(self, worker: int) -> None:
        max_lane = max(self.lanes)
        while not self._stopping:
            if not await self._can_submit():
                continue
            try:
                item = await asyncio.wait_for(self.queue.get(DISPATCH, max_lane=max_lane), timeout=0.2)
            except TimeoutError:
                continue
            except Exception:
                await self._queue_trouble()
                continue
            await self._dispatch_item(item)

    async def _queue_trouble(self) -> None:
        """The broker is unreachable (not started yet, restarting): wait a moment and ask again."""
        self.stats.errors += 1
        log.warning("the work queue is unreachable; retrying in 1 s", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout=1.0)

    async def _can_submit(self) -> bool:
        """A worker that holds no bind of any channel (more workers than binds) leaves the queue to the
        others instead of taking items it could only put back; waits up to 0.2 s for one."""
        if self.bind_leases is None or not self.connectors or any(c.up for c in self.connectors.values()):
            return True
        await asyncio.sleep(0.2)
        return False

    async def _verification_loop(self) -> None:
        """Lane 0 has consumers of its own: each verification item is dispatched at once in its own task
        (at most `verification_dispatchers` at a time). The general dispatchers may all be inside a
        500-message marketing chunk that waits for the carrier's window; a code must not wait for one of
        them to come back (docs/lanes.md)."""
        slots = asyncio.Semaphore(self.verification_dispatchers)
        running: set[asyncio.Task[None]] = set()
        while not self._stopping:
            if not await self._can_submit():
                continue
            await slots.acquire()
            try:
                item = await asyncio.wait_for(self.queue.get(DISPATCH, max_lane=0), timeout=0.2)
            except TimeoutError:
                slots.release()
                continue
            except Exception:
                slots.release()
                await self._queue_trouble()
                continue
            task = asyncio.create_task(self._dispatch_item(item))
            running.add(task)
            task.add_done_callback(lambda t: (running.discard(t), slots.release()))
        await asyncio.gather(*running, return_exceptions=True)

    async def _gate_loop(self) -> None:
        """Adjust the codes-first gate's cap on this process's bulk submits every STEP_S."""
        assert self.gate is not None
        while not self._stopping:
            self.gate.step()
            await asyncio.sleep(codes_first.STEP_S)

    async def _to_sending(self, message_ids: list[str], *, takeover: bool) -> list[dict[str, Any]]:
        """queued → sending in a transaction (taking over what a dead worker left in `sending` first); the
        rows that may be sent now (a marketing message whose quiet window began goes back to `scheduled`)."""
        async with self.db.write() as session:
            if takeover:
                stuck = (await session.scalars(select(Message.id).where(
                    Message.id.in_(message_ids), Message.status == Status.SENDING.value))).all()
                if stuck:
                    await apply_transitions(session, [Transition(mid, Status.QUEUED) for mid in stuck])
                    self.stats.recovered_sending += len(stuck)
                    log.warning("took over %d messages left in sending by a worker that died", len(stuck))
            outcome = await apply_transitions(session, [Transition(mid, Status.SENDING) for mid in message_ids])
            if not outcome.applied:
                return []
            return await hold_back_quiet(session, outcome.applied, self.quiet_windows, now=utcnow())

    async def _to_sending_at_once(self, message_ids: list[str], account_id: str) -> list[dict[str, Any]] | None:
        """A verification code's queued → sending without a transaction around it (PostgreSQL): the change
        and its history row are one statement (messaging.transitions), atomic and durable by itself, so
        BEGIN and COMMIT — two round trips, each a wait for this busy worker's event loop — are left out.
        Only when nothing else belongs in the same transaction: no endpoint of the account receives
        `message.sending` (else its webhook event is written with the change, in `_to_sending`). Lane 0
        carries verification messages only (messaging.submit.LANES), which quiet hours never hold back, so
        `hold_back_quiet` has nothing to do here. None: not taken, use `_to_sending`."""
        async with self.db.autocommit() as session:
            if await webhook_events.subscribed(session, account_id, "message.sending"):
                return None
            outcome = await apply_transitions(session, [Transition(mid, Status.SENDING) for mid in message_ids])
            await session.commit()  # no COMMIT is sent (autocommit); counts the transitions (ops.metrics)
        return outcome.applied

    async def _dispatch_item(self, item: QueueItem) -> None:
        """Dispatch one queue item and ack it once the outcome is committed. On a failure the item is
        retried (a durable queue redelivers it, then dead-letters it); in-process, the rows stay `queued`
        or `sending` and the next start's recovery picks them up."""
        message_ids = item.body["ids"]
        try:
            await self.dispatch(message_ids, takeover=item.redelivered, lane=item.lane,
                                account_id=item.body.get("account"))
            if item.lane == 0:  # handed to this process → submitted and recorded (codes_first)
                self.queue.signal.observe("dispatch", time.monotonic() - item.received)
        except Exception:
            self.stats.errors += 1
            log.exception("dispatch of %d messages failed", len(message_ids))
            await item.retry()
            return
        await item.ack()

    async def dispatch(self, message_ids: list[str], *, takeover: bool = False, lane: int | None = None,
                       account_id: str | None = None) -> None:
        """queued → sending → route → connector → sent | rejected | failed | queued (retry).

        Each message tries its route candidates in order: a channel that is down is skipped, a channel
        that refuses the message (permanently, or with a temporary error) passes it to the next candidate.
        With no candidate left the last answer stands; with every candidate down the message waits.

        `takeover`: the item was delivered before to a consumer that never acked it (that worker died):
        its messages still `sending` are taken over and submitted again — the carrier may have had them
        already (counted in `recovered_sending`: the only source of duplicate submits).

        `lane` and `account_id` (the one account of `message_ids`, from the item): a verification code's
        queued → sending is one statement on PostgreSQL (`_to_sending_at_once`)."""
        applied = None
        if lane == 0 and account_id is not None and not takeover and not self.db.is_sqlite:
            applied = await self._to_sending_at_once(message_ids, account_id)
        if applied is None:
            applied = await self._to_sending(message_ids, takeover=takeover)
        batch = [
            OutboundSms(r["id"], r["to_number"], r["sender"], r["body"], r["encoding"], r["segment_count"],
                        r["message_type"], r["priority"], r["account_id"], r["to_country"], r["attempts"])
            for r in applied
        ]
        if not batch:
            return
        final: list[tuple[SubmitOutcome, str | None]] = []
        tried: dict[str, list[str]] = {}
        last: dict[str, tuple[SubmitOutcome, str]] = {}
        pending = batch
        while pending:
            groups: dict[str, list[OutboundSms]] = {}
            for m in pending:
                candidates = self.router.candidates(m.to, m.country, m.message_type, m.account_id)
                done = tried.get(m.message_id, ())
                left = [c for c in candidates if c not in done and c in self.connectors]
                up = [c for c in left if self.connectors[c].up]
                if up:
                    groups.setdefault(up[0], []).append(m)
                elif m.message_id in last:
                    final.append(last[m.message_id])
                elif not candidates:
                    final.append((SubmitOutcome(m.message_id, False, error_code="no_route"), None))
                else:
                    final.append((SubmitOutcome(m.message_id, False, retry=True, error_code="channel_down"), None))
            if not groups:
                break
            channel_ids = list(groups)
            by_id = {m.message_id: m for m in batch}
            answers = await asyncio.gather(*(self._submit_recording(cid, groups[cid], by_id) for cid in channel_ids))
            pending = []
            for channel_id, results in zip(channel_ids, answers, strict=True):
                for r in results:
                    if r.accepted:
                        continue  # committed as `sent` already
                    tried.setdefault(r.message_id, []).append(channel_id)
                    if r.retry and r.error_code == "channel_down":
                        # the link dropped before this message was acknowledged: another channel or later
                        pending.append(by_id[r.message_id])
                        continue
                    last[r.message_id] = (r, channel_id)
                    pending.append(by_id[r.message_id])
        await self._record_submits(final, {m.message_id: m for m in batch})

    async def _submit_recording(self, channel_id: str, messages: list[OutboundSms],
                                by_id: dict[str, OutboundSms]) -> list[SubmitOutcome]:
        """Submit in slices of RECORD_EVERY, all at once (the carrier window keeps them in order), and commit
        each slice's accepted messages as `sent` as soon as the slice is answered, not at the end of the
        500-message chunk: a worker killed mid-chunk leaves at most a window's worth of messages in `sending`
        (submitted perhaps, not recorded: the ones another worker submits again), and receipts find their
        message sooner (fewer parked)."""

        async def one(part: list[OutboundSms]) -> list[SubmitOutcome]:
            results = await self._submit_to(channel_id, part)
            accepted = [(r, channel_id) for r in results if r.accepted]
            if accepted:
                await self._record_submits(accepted, by_id)
            return results

        parts = [messages[i : i + RECORD_EVERY] for i in range(0, len(messages), RECORD_EVERY)]
        return [r for results in await asyncio.gather(*(one(p) for p in parts)) for r in results]

    async def _submit_to(self, channel_id: str, messages: list[OutboundSms]) -> list[SubmitOutcome]:
        connector = self.connectors[channel_id]
        try:
            return await connector.submit(messages)
        except Exception:  # a connector bug must not strand messages in `sending`
            log.exception("connector %s failed on %d messages; they go back to the queue", channel_id, len(messages))
            return [SubmitOutcome(m.message_id, False, retry=True, error_code="channel_down") for m in messages]

    async def _record_submits(
        self, results: list[tuple[SubmitOutcome, str | None]], messages: dict[str, OutboundSms]
    ) -> None:
        if not results:
            return
        transitions: list[Transition] = []
        retry: list[OutboundSms] = []
        refs: list[dict[str, Any]] = []
        now = utcnow()
        max_attempts = self.settings.max_submit_attempts
        for r, channel_id in results:
            m = messages[r.message_id]
            if r.accepted:
                transitions.append(
                    Transition(r.message_id, Status.SENT, carrier_message_id=r.carrier_message_id, channel_id=channel_id)
                )
                if r.parts and channel_id:
                    group = r.parts[0]
                    refs.extend(
                        {"channel_id": channel_id, "carrier_message_id": cid, "message_id": r.message_id,
                         "group_ref": group, "part": i, "parts": len(r.parts), "status": None,
                         "carrier_error_code": None, "created_at": now}
                        for i, cid in enumerate(r.parts, 1)
                    )
            elif r.retry and not (r.carrier_error_code and m.attempts >= max_attempts):
                # throttled, link down, carrier busy: back to the queue (waits at most until validity ends)
                retry.append(m)
                transitions.append(Transition(r.message_id, Status.QUEUED, carrier_error_code=r.carrier_error_code))
            elif r.error_code == "carrier_rejected":
                transitions.append(
                    Transition(r.message_id, Status.REJECTED, error_code=r.error_code,
                               carrier_error_code=r.carrier_error_code, channel_id=channel_id)
                )
            else:
                code = r.error_code or "submit_failed"
                if r.retry:
                    code = "submit_attempts_exhausted"
                transitions.append(
                    Transition(r.message_id, Status.FAILED, error_code=code,
                               carrier_error_code=r.carrier_error_code, channel_id=channel_id)
                )
        # throttled or link-down messages go back on their lane after a pause (1 s, 2 s, 4 s … 30 s), by an
        # outbox row written with their transition back to `queued`: a crash cannot strand them
        by_lane: dict[tuple[int, float], list[str]] = {}
        for m in retry:
            pause = min(30.0, 2.0 ** max(0, min(m.attempts, 10) - 1))
            by_lane.setdefault((m.priority, pause), []).append(m.message_id)
        accounts = {messages[t.message_id].account_id for t in transitions}
        if by_lane or not await self._record_sent_at_once(transitions, refs, accounts):
            async with self.db.write() as session:
                await apply_transitions(session, transitions, carrier_refs=refs)
                for (lane, pause), ids_ in by_lane.items():
                    await outbox.add(session, outbox_rows(lane, ids_, chunk=self.settings.dispatch_chunk,
                                                          available_at=now + timedelta(seconds=pause), now=now))
        self.stats.submitted += sum(1 for r, _ in results if r.accepted)
        self.stats.retries += len(retry)
        self.webhooks.nudge()

    async def _record_sent_at_once(self, transitions: list[Transition], refs: list[dict[str, Any]],
                                   accounts: set[str]) -> bool:
        """Accepted submits recorded without a transaction around them (PostgreSQL), as `_to_sending_at_once`:
        the `sent` changes, their history and their carrier_message rows are one statement
        (messaging.transitions), atomic and durable by itself — BEGIN and COMMIT, two round trips of this busy
        worker, are left out. Only when nothing else belongs with it: every change is to `sent` with a
        carrier id, and no endpoint of the messages' accounts receives `message.sent` (its webhook events
        are written with the change, in a transaction). False: not done, record them in a transaction."""
        if self.db.dialect != "postgresql" or not all(
                t.to is Status.SENT and t.carrier_message_id is not None for t in transitions):
            return False
        async with self.db.autocommit() as session:
            for account_id in accounts:
                if await webhook_events.subscribed(session, account_id, "message.sent"):
                    return False
            await apply_transitions(session, transitions, carrier_refs=refs)
            await session.commit()  # no COMMIT is sent (autocommit); counts the transitions (ops.metrics)
        return True

    # -- receipts ---------------------------------------------------------------------------------
    async def on_receipts(self, receipts: list[DeliveryReceipt]) -> None:
        """Buffer receipts; returns once they are committed, so a connector acknowledges to the carrier only
        what is stored: an SMSC resends unacknowledged receipts. A receipt that beat the commit of its own
        submit is parked and retried; its answer waits up to RECEIPT_ACK_HOLD_S for that (a crash meanwhile
        loses nothing: the carrier has no answer and sends it again), then it is acknowledged and kept in
        memory until RECEIPT_PARK_LIMIT."""
        if not receipts:
            return
        loop = asyncio.get_running_loop()
        ack = _Ack(loop.create_future(), len(receipts))
        ack.future.add_done_callback(_retrieved)  # a stopped connector may no longer be waiting for it
        at = loop.time()
        self._receipts.extend((r, _Seen(at, ack)) for r in receipts)
        self._receipt_wakeup.set()
        await ack.future

    async def _receipt_loop(self) -> None:
        while not self._stopping:
            await self._receipt_wakeup.wait()
            if self._stopping:
                break
            self._receipt_wakeup.clear()
            await asyncio.sleep(self.receipt_gather_s)  # gather receipts: one transaction for many
            try:
                await self._flush_receipts()
            except Exception:
                self.stats.errors += 1
                log.exception("receipt intake round failed")

    async def _flush_receipts(self) -> None:
        pending, self._receipts = self._receipts, []
        if not pending:
            return
        try:
            for attempt in range(1, RECEIPT_WRITE_ATTEMPTS + 1):
                try:
                    parked = await self._apply_receipts(pending)
                    break
                except Exception as exc:
                    # a deadlock or serialization failure rolled the whole round back: nothing is stored,
                    # so the same receipts go in again (a carrier may never resend what it was refused)
                    if not is_transient(exc) or attempt == RECEIPT_WRITE_ATTEMPTS:
                        raise
                    log.info("receipt intake round: transient database error (%s), attempt %d",
                             getattr(getattr(exc, "orig", None), "sqlstate", "?"), attempt)
                    await asyncio.sleep(0.01 * attempt)
        except BaseException as exc:
            for _r, seen in pending:
                seen.fail(ReceiptsNotStored(f"{type(exc).__name__}: {exc}"))
            raise
        held = {id(seen) for _r, seen in parked}
        for _r, seen in pending:
            if id(seen) not in held:
                seen.release()  # stored (or dropped as unmatched for too long): answer the carrier
        now = asyncio.get_running_loop().time()
        for _r, seen in parked:
            if now - seen.at >= RECEIPT_ACK_HOLD_S:
                seen.release()

    async def _apply_receipts(self, pending: list[tuple[DeliveryReceipt, _Seen]]) -> list[tuple[DeliveryReceipt, _Seen]]:
        """Store receipts; returns those parked (their submit is not committed yet), to be tried again."""
        unmatched: list[tuple[DeliveryReceipt, _Seen]] = []
        by_message: list[tuple[DeliveryReceipt, _Seen]] = []
        async with self.db.write() as session:
            by_carrier = [(r, t) for r, t in pending if r.message_id is None and r.carrier_message_id]
            if by_carrier:
                matched, unmatched = await self._match_carrier_ids(session, by_carrier)
                by_message.extend(matched)
            by_message.extend((r, t) for r, t in pending if r.message_id is not None)
            transitions = [
                Transition(r.message_id, r.status, carrier_error_code=r.carrier_error_code,
                           error_code=None if r.status is Status.DELIVERED else f"carrier_{r.status.value}")
                for r, _ in by_message
                if r.message_id is not None
            ]
            outcome = await apply_transitions(session, transitions)
            skipped = {t.message_id for t in outcome.skipped}
            parked: list[tuple[DeliveryReceipt, _Seen]] = []
            now = asyncio.get_running_loop().time()
            limit = RECEIPT_PARK_LIMIT.total_seconds()
            if skipped:
                # receipts can beat the commit of their submit response: keep those still `sending`
                current = dict(
                    (await session.execute(select(Message.id, Message.status).where(Message.id.in_(skipped)))).all()
                )
                for receipt, first_seen in by_message:
                    # not final yet (maybe `sent` by now: the submit committed after our UPDATE): retry
                    status = current.get(receipt.message_id)
                    if status is not None and status not in _FINAL_VALUES and receipt.message_id in skipped:
                        if now - first_seen.at < limit:
                            parked.append((receipt, first_seen))
            # a carrier id nobody knows yet: its submit_sm_resp is probably not committed yet
            parked.extend((r, t) for r, t in unmatched if now - t.at < limit)
            dropped = sum(1 for _r, t in unmatched if now - t.at >= limit)
        # counted once committed (a round rolled back is tried again whole: _flush_receipts)
        self.stats.extra["receipts_unmatched_dropped"] = self.stats.extra.get("receipts_unmatched_dropped", 0) + dropped
        self.stats.receipts += len(outcome.applied)
        if parked:
            self.stats.receipts_parked += len(parked)
            self._parked.extend(parked)
            if not self._stopping:
                asyncio.get_running_loop().call_later(0.05 if len(parked) < 1000 else 0.2, self._retry_parked)
        self.webhooks.nudge()
        return parked

    async def _match_carrier_ids(
        self, session: Any, receipts: list[tuple[DeliveryReceipt, _Seen]]
    ) -> tuple[list[tuple[DeliveryReceipt, _Seen]], list[tuple[DeliveryReceipt, _Seen]]]:
        """Carrier ids → message ids. Multipart messages: record the part, and emit the message's receipt
        only when every part of its submission has one (delivered if all were, else the worst)."""
        cm = CarrierMessage.__table__
        keys = sorted({r.carrier_message_id for r, _ in receipts if r.carrier_message_id})
        if self.db.dialect == "postgresql":  # one statement text (prepared once) for any number of ids
            rows = (await session.execute(_MATCH_CARRIER_IDS_PG, {"c_ids": keys})).all()
        else:
            rows = (await session.execute(select(*_MATCH_COLUMNS).where(cm.c.carrier_message_id.in_(keys)))).all()
        index: dict[tuple[str, str], Any] = {}
        for row in rows:  # the newest row wins when a carrier reuses ids (e.g. after an SMSC restart)
            key = (row.channel_id, row.carrier_message_id)
            if key not in index or row.id > index[key].id:
                index[key] = row
        matched: list[tuple[DeliveryReceipt, _Seen]] = []
        unmatched: list[tuple[DeliveryReceipt, _Seen]] = []
        part_updates: list[dict[str, Any]] = []
        groups: dict[str, tuple[DeliveryReceipt, _Seen, str]] = {}
        for r, t in receipts:
            row = index.get((r.channel_id, r.carrier_message_id or ""))
            if row is None:
                unmatched.append((r, t))
            elif row.parts <= 1:
                matched.append((_with_message(r, row.message_id), t))
            else:
                part_updates.append({"rid": row.id, "st": r.status.value, "err": r.carrier_error_code})
                groups[row.group_ref] = (r, t, row.message_id)
        if part_updates:
            await session.execute(
                update(cm).where(cm.c.id == bindparam("rid")).values(status=bindparam("st"),
                                                                    carrier_error_code=bindparam("err")),
                part_updates,
                execution_options={"synchronize_session": False},
            )
            parts = (
                await session.execute(
                    select(cm.c.group_ref, cm.c.parts, cm.c.status, cm.c.carrier_error_code).where(
                        cm.c.group_ref.in_(list(groups))
                    )
                )
            ).all()
            by_group: dict[str, list[Any]] = {}
            for p in parts:
                by_group.setdefault(p.group_ref, []).append(p)
            for group, (r, t, message_id) in groups.items():
                members = by_group.get(group, [])
                if len(members) < members[0].parts if members else True:
                    continue
                if any(p.status is None for p in members):
                    continue  # other parts still on their way
                worst = next((p for p in members if p.status != Status.DELIVERED.value), None)
                status = Status(worst.status) if worst else Status.DELIVERED
                code = worst.carrier_error_code if worst else r.carrier_error_code
                matched.append((DeliveryReceipt(status, r.channel_id, message_id=message_id,
                                                carrier_message_id=r.carrier_message_id, carrier_error_code=code), t))
        return matched, unmatched

    # -- inbound (MO) -------------------------------------------------------------------------------------
    async def on_inbound(self, messages: list[InboundSms]) -> None:
        """Store replies, match them to the account that wrote to the number, emit message.received."""
        async with self.db.write() as session:
            await inbound.store_inbound(session, messages)
        self.webhooks.nudge()
        self.confirmations_wakeup.set()

    async def _confirmation_loop(self) -> None:
        """Opt-out confirmations the reply hook queued (compliance.replies), sent after the reply committed;
        also every CONFIRMATION_RETRY_S, for those a crash left behind."""
        while not self._stopping:
            self.confirmations_wakeup.clear()
            try:
                if await opt_out_replies.send_confirmations(self.db, self.settings):
                    self.outbox_wakeup.set()
            except Exception:
                self.stats.errors += 1
                log.exception("opt-out confirmations failed")
            try:
                await asyncio.wait_for(self.confirmations_wakeup.wait(), timeout=opt_out_replies.CONFIRMATION_RETRY_S)
            except TimeoutError:
                pass

    # -- sweeps -----------------------------------------------------------------------------------
    async def sweep_once(self) -> None:
        """Expire messages past their validity; retry parked receipts; drop old idempotency records."""
        now = utcnow()
        async with self.db.write() as session:
            due = (
                await session.scalars(
                    select(Message.id)
                    .where(
                        Message.status.in_([Status.SCHEDULED.value, Status.HELD.value, Status.QUEUED.value,
                                            Status.SENT.value]),
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
        """The parked receipts' next try (a timer after each round that parked some, and the sweep)."""
        if self._unpark():
            self._receipt_wakeup.set()

    def _unpark(self) -> bool:
        """Parked receipts back to the ones waiting for a round; whether there were any."""
        if not self._parked:
            return False
        parked, self._parked = self._parked, []
        self._receipts.extend(parked)
        return True

    async def _periodic(self, what: str, interval_s: float, work: Callable[[], Awaitable[Any]]) -> None:
        """Run `work` at start and then every `interval_s` until stop; a failure is logged and counted, and
        the next round comes as usual (one bad row must not stop the sweeps)."""
        while not self._stopping:
            try:
                await work()
            except Exception:
                self.stats.errors += 1
                log.exception("%s failed", what)
            try:
                await asyncio.wait_for(self._stop_event.wait(), timeout=interval_s)
                break
            except TimeoutError:
                pass

    async def _billing_sweep(self) -> None:
        """Package expiry (with notices beforehand), subscription renewals and stale recharge orders.

        Each package and subscription changes in its own conditional transaction, so several workers may
        run this at once without expiring or renewing anything twice (issue 9 adds a leader lease)."""
        from hongyan.billing import packages, payments

        await packages.sweep_once(self.db, self.settings)
        await payments.expire_stale_orders(self.db, self.settings)

    async def _privacy_sweep(self) -> None:
        """Retention: content and numbers past each account's retention_days purged (bounded transactions;
        a purged row is skipped, so concurrent workers only repeat cheap reads)."""
        from hongyan.privacy.retention import purge_expired

        await purge_expired(self.db)

    async def _campaign_loop(self) -> None:
        """Campaigns (campaigns.engine): scheduler, run building and paced release, on the lease holder."""
        from hongyan.campaigns.engine import CampaignEngine

        self.campaigns = engine = CampaignEngine(self.db, self.settings, self.queue, gate=self.gate)
        while not self._stopping:
            try:
                busy = await engine.tick()
            except Exception:
                self.stats.errors += 1
                log.exception("campaign engine round failed")
                busy = False
            if busy:
                await asyncio.sleep(0)
                continue
            engine.wakeup.clear()
            try:
                await asyncio.wait_for(engine.wakeup.wait(), timeout=self.settings.campaign_poll_s)
            except TimeoutError:
                pass
        try:
            await engine.close()
        except Exception:
            log.exception("closing the campaign engine failed")

    async def _bind_tick(self) -> None:
        assert self.bind_leases is not None
        await self.bind_leases.tick(self.connectors)

    async def _imports(self) -> None:
        """Contact-file imports (campaigns.import_worker): queued jobs run chunk by chunk, one at a time."""
        from hongyan.campaigns.import_worker import run_pending

        await run_pending(self.db, self.settings, should_stop=lambda: self._stopping)

    async def _email_delivery(self) -> None:
        """Account emails (verification, reset, invitations) over SMTP."""
        from hongyan.accounts.email import deliver_pending

        await deliver_pending(self.db, self.settings)

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


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class _Ack:
    """The carrier's answer to one on_receipts call: given once each of its receipts is stored (or held
    for RECEIPT_ACK_HOLD_S), an error if storing failed (the SMSC then sends them again)."""

    future: asyncio.Future[None]
    remaining: int


@dataclass(slots=True)
class _Seen:
    """One receipt in the intake: when it first arrived, and the answer it belongs to."""

    at: float
    ack: _Ack
    answered: bool = False

    def release(self) -> None:
        if not self.answered:
            self.answered = True
            self.ack.remaining -= 1
            if self.ack.remaining <= 0 and not self.ack.future.done():
                self.ack.future.set_result(None)

    def fail(self, exc: Exception) -> None:
        if not self.answered:
            self.answered = True
            if not self.ack.future.done():
                self.ack.future.set_exception(exc)


def _with_message(r: DeliveryReceipt, message_id: str) -> DeliveryReceipt:
    return DeliveryReceipt(r.status, r.channel_id, message_id=message_id, carrier_message_id=r.carrier_message_id,
                           carrier_error_code=r.carrier_error_code)
