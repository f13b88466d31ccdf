"""Runtime behaviour that the API tests do not reach: connector failures, expiry, lanes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from hongyan.accounts.models import Account
from hongyan.channels.base import OutboundSms, SubmitOutcome
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.dispatch.queue import MemoryQueue
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.models import Message
from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch
from support import AccountFixture, wait_until


async def _send(db: Database, settings: Settings, account: AccountFixture, to: str, **kw: object) -> str:
    request = SubmitRequest(text="runtime", recipients=[Recipient(to=to)], **kw)  # type: ignore[arg-type]
    return (await submit_batch(db, settings, request, account_id=account.account_id, source="api")).accepted[0].id


async def _status(db: Database, mid: str) -> str:
    async with db.read() as session:
        return str(await session.scalar(select(Message.status).where(Message.id == mid)))


async def test_connector_exception_requeues_instead_of_stranding(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    try:
        sandbox = runtime.connectors[runtime.router.default_channel or ""]
        real_submit = sandbox.submit
        calls = {"n": 0}

        async def flaky(messages: list[OutboundSms]) -> list[SubmitOutcome]:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ConnectionResetError("link dropped")
            return await real_submit(messages)

        sandbox.submit = flaky  # type: ignore[method-assign]
        mid = await _send(db, settings, account, "+8613800000001")
        runtime.notify_outbox()

        async def delivered() -> bool:
            return await _status(db, mid) == "delivered"

        await wait_until(delivered, message="delivered after a connector failure")
        assert calls["n"] == 2 and runtime.stats.retries == 1
    finally:
        await runtime.stop()


async def test_sent_without_receipt_expires_at_validity(db: Database, settings: Settings, account: AccountFixture) -> None:
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    try:
        mid = await _send(db, settings, account, "+8613800000006", validity=timedelta(minutes=1))  # silent number
        runtime.notify_outbox()

        async def sent() -> bool:
            return await _status(db, mid) == "sent"

        await wait_until(sent)
        async with db.write() as session:  # let the validity run out instead of waiting a minute
            await session.execute(update(Message).where(Message.id == mid).values(expires_at=utcnow()))
        await runtime.sweep_once()
        assert await _status(db, mid) == "expired"
        async with db.read() as session:
            assert await session.scalar(select(Message.error_code).where(Message.id == mid)) == "validity_expired"
    finally:
        await runtime.stop()


async def test_verification_lane_goes_first(db: Database, settings: Settings, account: AccountFixture) -> None:
    """With marketing and verification both waiting, the verification chunk is dispatched first."""
    async with db.write() as session:  # marketing is not deferred by the quiet window, whatever the hour
        await session.execute(update(Account).where(Account.id == account.account_id).values(quiet_hours="off"))
    marketing = await _send(db, settings, account, "+8613900000101", message_type="marketing")
    code = await _send(db, settings, account, "+8613900000102", message_type="verification")
    runtime = Runtime(db, settings, MemoryQueue(), dispatchers=1)
    await runtime.relay_once()  # both chunks now queued, marketing first in arrival order
    first = await runtime.queue.get("dispatch")
    assert first.body["ids"] == [code] and first.lane == 0
    second = await runtime.queue.get("dispatch")
    assert second.body["ids"] == [marketing] and second.lane == 2


async def test_memory_queue_serves_lower_lane_first_whatever_the_arrival() -> None:
    queue = MemoryQueue()
    await queue.publish("dispatch", 2, {"ids": ["m1"]})
    await queue.publish("dispatch", 1, {"ids": ["n1"]})
    await queue.publish("dispatch", 2, {"ids": ["m2"]})
    await queue.publish("dispatch", 0, {"ids": ["v1"]})
    assert queue.depth("dispatch") == {0: 1, 1: 1, 2: 2}
    order = [(await queue.get("dispatch")).body["ids"][0] for _ in range(4)]
    assert order == ["v1", "n1", "m1", "m2"]
    assert queue.depth("dispatch") == {0: 0, 1: 0, 2: 0}


async def test_relay_deletes_published_rows_in_batches(
    db: Database, settings: Settings, account: AccountFixture, monkeypatch: object
) -> None:
    """Published outbox rows wait for the next claim or for FORGET_AFTER_S / FORGET_BATCH when idle; a
    shutdown deletes them at once."""
    from hongyan.dispatch import outbox
    from hongyan.dispatch.models import OutboxItem

    async def rows() -> int:
        async with db.read() as session:
            return len((await session.scalars(select(OutboxItem.id))).all())

    await _send(db, settings, account, "+8613900000201")
    relay = outbox.Relay(db, MemoryQueue())
    assert await relay.once() == 1
    await relay.forget()  # idle a moment after publishing: the row stays (one transaction saved per code)
    assert await rows() == 1
    monkeypatch.setattr(outbox, "FORGET_AFTER_S", 0.0)  # type: ignore[attr-defined]
    await relay.forget()  # waited long enough
    assert await rows() == 0

    monkeypatch.setattr(outbox, "FORGET_AFTER_S", 3600.0)  # type: ignore[attr-defined]
    await _send(db, settings, account, "+8613900000202")
    assert await relay.once() == 1
    await relay.forget(now=True)  # shutdown
    assert await rows() == 0
    monkeypatch.setattr(outbox, "FORGET_BATCH", 1)  # type: ignore[attr-defined]
    await _send(db, settings, account, "+8613900000203")
    assert await relay.once() == 1
    await relay.forget()  # a full batch goes at once
    assert await rows() == 0


async def test_receipt_round_is_tried_again_after_a_deadlock(
    db: Database, settings: Settings, account: AccountFixture, monkeypatch: object
) -> None:
    """A deadlock (or serialization failure) aborts a whole receipt round: nothing of it is stored. The round
    is tried again instead of refusing the receipts to the carrier, which may never resend them."""
    import hongyan.dispatch.runtime as runtime_module
    from hongyan.messaging.states import Status

    real_apply = runtime_module.apply_transitions
    failed: list[int] = []

    class _Deadlock(Exception):
        sqlstate = "40P01"

    async def deadlocking_once(session: object, transitions: list, **kw: object) -> object:
        if not failed and any(t.to is Status.DELIVERED for t in transitions):
            failed.append(len(transitions))
            await real_apply(session, transitions, **kw)  # its writes are rolled back with the round
            raise DBAPIError("COMMIT", {}, _Deadlock("deadlock detected"))
        return await real_apply(session, transitions, **kw)

    monkeypatch.setattr(runtime_module, "apply_transitions", deadlocking_once)  # type: ignore[attr-defined]
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.start()
    try:
        mid = await _send(db, settings, account, "+8613800000001")  # sandbox: delivered
        runtime.notify_outbox()

        async def delivered() -> bool:
            return await _status(db, mid) == "delivered"

        await wait_until(delivered, message="delivered although the first receipt round deadlocked")
        assert failed == [1] and runtime.stats.errors == 0 and runtime.stats.receipts == 1
    finally:
        await runtime.stop()


async def test_a_verification_only_worker_gathers_receipts_in_longer_rounds(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    """Codes' receipts arrive one by one; a `--lanes verification` worker stores those of 100 ms in one round
    (5 ms rounds would be one transaction per receipt here), and every one of them is answered."""
    import asyncio

    from hongyan.channels.base import DeliveryReceipt
    from hongyan.dispatch import runtime as runtime_module
    from hongyan.messaging.states import Status

    rounds: dict[str, list[int]] = {}
    for name, lanes in (("codes", (0,)), ("all", (0, 1, 2))):
        runtime = Runtime(db, settings, MemoryQueue(), lanes=lanes)
        sizes = rounds[name] = []
        real_apply = runtime._apply_receipts

        async def counted(pending: list, real=real_apply, sizes=sizes) -> list:  # type: ignore[no-untyped-def]
            sizes.append(len(pending))
            return await real(pending)

        runtime._apply_receipts = counted  # type: ignore[method-assign]
        loop_task = asyncio.create_task(runtime._receipt_loop())
        try:
            async def one(i: int, runtime: Runtime = runtime) -> None:
                await asyncio.sleep(0.02 * i)  # one receipt every 20 ms, as codes at 50/s
                await runtime.on_receipts([DeliveryReceipt(Status.DELIVERED, "ch", message_id=f"msg_none_{i}")])

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(4))), timeout=30)
        finally:
            runtime._stopping = True
            runtime._receipt_wakeup.set()
            await loop_task
    assert runtime_module.RECEIPT_GATHER_CODES_S >= 0.06
    assert sum(rounds["codes"]) == 4 and len(rounds["codes"]) <= 2, rounds
    assert sum(rounds["all"]) == 4, rounds  # the others answer within RECEIPT_GATHER_S (bulk: 5 ms)


async def test_stopping_stores_receipts_parked_for_their_submit_record(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    """A receipt that beat its submit's record is parked; once every dispatch has finished (SIGTERM drain),
    stopping stores it instead of refusing it to the carrier, which may never send it again (the SMSC
    simulator does not: the cause of a rare failure of the production drain test)."""
    import asyncio

    from hongyan.channels.base import DeliveryReceipt
    from hongyan.messaging.states import Status
    from hongyan.messaging.transitions import Transition, apply_transitions

    mid = await _send(db, settings, account, "+8613800000077")
    async with db.write() as session:
        for status in (Status.QUEUED, Status.SENDING):
            await apply_transitions(session, [Transition(mid, status)])
    runtime = Runtime(db, settings, MemoryQueue())
    runtime._retry_parked = lambda: None  # type: ignore[method-assign]  # parked until stop, deterministically
    runtime._tasks = [asyncio.create_task(runtime._receipt_loop())]
    answered = asyncio.create_task(runtime.on_receipts([DeliveryReceipt(Status.DELIVERED, "ch", message_id=mid)]))

    async def parked() -> bool:
        return len(runtime._parked) == 1

    await wait_until(parked, message="the receipt waits for its submit's record")
    async with db.write() as session:  # the dispatch records the submit
        await apply_transitions(session, [Transition(mid, Status.SENT)])
    await runtime.stop()
    await asyncio.wait_for(answered, timeout=10)  # answered as stored: no ReceiptsNotStored
    assert await _status(db, mid) == "delivered"
