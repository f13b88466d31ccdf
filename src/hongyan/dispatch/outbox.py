"""The transactional outbox: an `outbox` row is an obligation to publish a chunk of message ids.

Rows are written in the same transaction as the state change that needs them (a submit, a campaign
release, a retry after a throttled submit, a quiet-hours deferral). Publishing is two-phase, so neither a
crash nor a broker outage loses an item:

1. claim: in one transaction, lock due rows (FOR UPDATE SKIP LOCKED on PostgreSQL, so several relays share
   the work), move their messages to `queued`, and push the rows' `available_at` CLAIM_S into the future;
2. publish the ids that are `queued` (on RabbitMQ: with publisher confirms);
3. delete the rows (batched into the next claim transaction).

A relay that dies between 1 and 3 leaves claimed rows that fall due again after CLAIM_S and are published
again: consumers are idempotent (`queued → sending` happens once), so a duplicate item costs one skipped
UPDATE. A publish that fails un-claims its rows at once (`available_at = now`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch.codes_first import REQUEST_STARTED
from hongyan.dispatch.models import OutboxItem, outbox_rows
from hongyan.dispatch.queue import DISPATCH, Queue
from hongyan.messaging.models import Message
from hongyan.messaging.states import Status
from hongyan.messaging.transitions import Transition, apply_transitions

CLAIM_S = 60.0  # a claimed row that was not deleted by then (its relay died) is published again
# published rows wait for the next claim transaction; when the relay is idle they are deleted on their own
# once this many are waiting or the oldest waited this long (one transaction per verification code was a
# tenth of the API's work at 30 codes/s). Undeleted rows are harmless: claimed, they fall due after CLAIM_S
# and are published again, which dispatch skips.
FORGET_BATCH = 500
FORGET_AFTER_S = 1.0


async def add(session: Any, items: list[dict[str, Any]]) -> None:
    if items:
        await session.execute(insert(OutboxItem.__table__), items)


class Relay:
    """Claims due outbox rows, publishes them, forgets them. One per process that publishes."""

    def __init__(self, db: Database, queue: Queue) -> None:
        self.db = db
        self.queue = queue
        self._done: list[int] = []  # published rows, deleted in the next claim transaction
        self._done_since = 0.0  # monotonic time the oldest of them was published
        self.published = 0  # message ids
        self.republished = 0  # ids that were already `queued` (a retry, a release, a relay that died)

    async def once(self, limit: int = 8) -> int:
        """One round: returns how many outbox rows it claimed (0: nothing due)."""
        now = utcnow()
        async with self.db.write() as session:
            if self._done:
                done, self._done = self._done, []
                await session.execute(delete(OutboxItem).where(OutboxItem.id.in_(done)))
            query = (select(OutboxItem).where(OutboxItem.topic == DISPATCH, OutboxItem.available_at <= now)
                     .order_by(OutboxItem.lane, OutboxItem.id).limit(limit))
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            items = list((await session.scalars(query)).all())
            if not items:
                return 0
            plan: list[tuple[int, int, dict[str, Any]]] = []
            not_moved: set[str] = set()
            for item in items:
                ids_ = list(item.payload["ids"])
                outcome = await apply_transitions(session, [Transition(mid, Status.QUEUED) for mid in ids_])
                not_moved.update(t.message_id for t in outcome.skipped)
                plan.append((item.id, item.lane, dict(item.payload)))
            already: set[str] = set()
            if not_moved:  # already `queued` → publish them too; any other status → nothing to do
                already = set((await session.scalars(select(Message.id).where(
                    Message.id.in_(not_moved), Message.status == Status.QUEUED.value))).all())
                self.republished += len(already)
            skip = not_moved - already
            plan = [(oid, lane, {**body, "ids": [m for m in body["ids"] if m not in skip]}) for oid, lane, body in plan]
            await session.execute(update(OutboxItem).where(OutboxItem.id.in_([i.id for i in items]))
                                  .values(available_at=now + timedelta(seconds=CLAIM_S)))
        await self.publish(plan)
        return len(items)

    async def publish(self, plan: list[tuple[int, int, dict[str, Any]]]) -> None:
        """Publish claimed rows (outbox id, lane, payload: {"ids": […], maybe "account"}) and remember them
        for deletion; on a failure the unpublished rows are un-claimed so that the next round (after a
        reconnect) publishes them."""
        for n, (outbox_id, lane, body) in enumerate(plan):
            try:
                if body["ids"]:
                    await self.queue.publish(DISPATCH, lane, body)
                    self.published += len(body["ids"])
                    if lane == 0 and (started := REQUEST_STARTED.get()) is not None:
                        self.queue.signal.observe("api", time.perf_counter() - started)  # request → published
            except BaseException:
                left = [oid for oid, _lane, _ids in plan[n:]]
                async with self.db.write() as session:
                    await session.execute(update(OutboxItem).where(OutboxItem.id.in_(left)).values(available_at=utcnow()))
                raise
            if not self._done:
                self._done_since = time.monotonic()
            self._done.append(outbox_id)

    async def forget(self, *, now: bool = False) -> None:
        """Delete published rows: when idle, once FORGET_BATCH are waiting or FORGET_AFTER_S has passed;
        `now` on shutdown."""
        if self._done and not now and len(self._done) < FORGET_BATCH:
            if time.monotonic() - self._done_since < FORGET_AFTER_S:
                return
        if self._done:
            done, self._done = self._done, []
            async with self.db.write() as session:
                await session.execute(delete(OutboxItem).where(OutboxItem.id.in_(done)))


async def add_claimed(session: Any, lane: int, ids: list[str], *, chunk: int, now: datetime,
                      account_id: str | None = None) -> list[tuple[int, int, dict[str, Any]]]:
    """Rows for messages the caller moves to `queued` itself and publishes right after its commit (the
    campaign pump, a submit with a publisher): inserted already claimed, in one statement, so only a crash
    between commit and publish needs the relay. Returns them as `Relay.publish` takes them: (outbox id,
    lane, payload)."""
    items = claimed_rows(lane, ids, chunk=chunk, now=now, account_id=account_id)
    if not items:
        return []
    returned = await (await session.connection()).execute(
        insert(OutboxItem.__table__).returning(OutboxItem.id, sort_by_parameter_order=True), items)
    return claimed_plan(lane, list(returned.scalars()), items)


def claimed_rows(lane: int, ids: list[str], *, chunk: int, now: datetime,
                 account_id: str | None = None) -> list[dict[str, Any]]:
    """`add_claimed`'s rows: due only when the claim runs out (the relay's fallback after a crash)."""
    return outbox_rows(lane, ids, chunk=chunk, available_at=now + timedelta(seconds=CLAIM_S), now=now,
                       account_id=account_id)


def claimed_plan(lane: int, outbox_ids: list[int], items: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """Claimed rows as `Relay.publish` takes them, given their ids in row order."""
    return [(oid, lane, item["payload"]) for oid, item in zip(outbox_ids, items, strict=True)]


async def republish_queued(db: Database, *, chunk: int) -> int:
    """Give every `queued` message a fresh outbox row (`hongyan queue republish`): after the broker lost its
    queues (a new broker, a deleted vhost, a restore from backup), nothing names those messages any more.
    Messages that still have an item get a second one; dispatch skips it (`queued → sending` happens once)."""
    now = utcnow()
    async with db.read() as session:
        found = (await session.execute(select(Message.id, Message.priority).where(
            Message.status == Status.QUEUED.value).order_by(Message.id))).all()
    by_lane: dict[int, list[str]] = {}
    for message_id, lane in found:
        by_lane.setdefault(int(lane), []).append(message_id)
    for lane, ids_ in by_lane.items():
        for i in range(0, len(ids_), 50 * chunk):
            async with db.write() as session:
                await add(session, outbox_rows(lane, ids_[i : i + 50 * chunk], chunk=chunk, available_at=now, now=now))
    return len(found)
