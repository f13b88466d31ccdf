"""Build pacing (HONGYAN_CAMPAIGN_BUILD_AHEAD): a run is built only a bounded amount ahead of its release,
resumes as the pump releases, completes with every recipient once; pause, cancel, quiet hours, pacing off.

The engine runs without dispatchers: the test takes the released items from the memory queue itself, so
nothing is released while it does not (the release window, 100 messages, is full)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from hongyan.accounts.permissions import Authority
from hongyan.audit.service import actor_for_cli
from hongyan.billing import charging, ledger
from hongyan.campaigns import quiet_hours, runs, service
from hongyan.campaigns.campaign_routes import run_json
from hongyan.campaigns.engine import CampaignEngine
from hongyan.campaigns.models import CampaignRun
from hongyan.config import Settings
from hongyan.console.campaign_views import run_view
from hongyan.db.engine import Database
from hongyan.dispatch.queue import DISPATCH, MemoryQueue
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.models import Message
from support import AccountFixture, quiet_window_now, wait_until

N = 300  # recipients
CHUNK = 10
AHEAD = 25
WINDOW = 100  # campaign_release_window: released and not yet taken from the queue
PRICE = 40_000  # default price per segment
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.campaign_chunk = CHUNK
    settings.campaign_build_ahead = AHEAD
    settings.campaign_release_window = WINDOW
    settings.dispatch_chunk = 10
    settings.campaign_poll_s = 0.01
    return settings


def _authority(account: AccountFixture) -> Authority:
    return Authority.of_key(account_id=account.account_id, key_id=account.key_id, scopes=("send", "read"))


async def _campaign(db: Database, settings: Settings, account: AccountFixture, *,
                    message_type: str = "notification") -> str:
    """A started campaign to N typed numbers (the sandbox delivers numbers ending in 00001)."""
    data = service.CampaignInput(name="c", text="您好{name|客户}", message_type=message_type, schedule={"mode": "now"},
                                 numbers=[f"+86138{i:03d}00001" for i in range(N)], time_zone="Asia/Shanghai")
    async with db.write() as session:
        campaign = await service.create_campaign(session, settings, authority=_authority(account),
                                                 actor=actor_for_cli(), data=data)
    await service.start_campaign(db, settings, authority=_authority(account), actor=actor_for_cli(),
                                 campaign_id=campaign.id)
    return campaign.id


async def _run(db: Database, campaign_id: str) -> CampaignRun | None:
    async with db.read() as session:
        return await session.scalar(select(CampaignRun).where(CampaignRun.campaign_id == campaign_id))


async def _held(db: Database, account: AccountFixture) -> int:
    async with db.read() as session:
        balances = await ledger.balances_of(session, account.account_id)
    return abs(balances[ledger.held(account.account_id, "CNY")].balance)


async def _counts(db: Database, batch_id: str) -> dict[str, int]:
    async with db.read() as session:
        return await runs.status_counts(session, batch_id)


async def _paced(db: Database, engine: CampaignEngine, campaign_id: str, *, queued: int = 0,
                 scheduled: int = AHEAD) -> CampaignRun:
    """Tick (fire, build, release) until the run's builder waits for the pump with `queued` messages released
    and at least `scheduled` built ahead (the steady state when nothing is taken from the queue)."""

    async def waiting() -> CampaignRun | None:
        await engine.tick()
        run = await _run(db, campaign_id)
        if run is None or run.id not in engine.paced_runs:
            return None
        counts = await _counts(db, run.batch_id)
        return run if counts.get("queued", 0) == queued and counts.get("scheduled", 0) >= scheduled else None

    run = await wait_until(waiting, timeout=20, message="the builder waits for the pump")
    assert isinstance(run, CampaignRun)
    return run


async def _take(queue: MemoryQueue, runtime: Runtime) -> list[str]:
    """Take every released item from the queue and send it (sandbox), as a dispatcher would."""
    taken: list[str] = []
    while sum(queue.depth(DISPATCH).values()):
        item = await queue.get(DISPATCH)
        taken += item.body["ids"]
        await runtime.dispatch(item.body["ids"])
        await item.ack()
    return taken


async def _run_to_completion(db: Database, settings: Settings, engine: CampaignEngine, queue: MemoryQueue,
                             campaign_id: str) -> CampaignRun:
    """Send what is released until the run completes; checks that never more than the limit and a chunk were
    built and waiting for release, and that every recipient got exactly one message. Returns the run."""
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.reload_channels()  # the sandbox carrier, without the runtime's loops (this test is the loop)
    released: list[str] = []
    most = 0

    async def completed() -> CampaignRun | None:
        nonlocal most
        await engine.tick()
        released.extend(await _take(queue, runtime))
        run = await _run(db, campaign_id)
        assert run is not None
        most = max(most, (await _counts(db, run.batch_id)).get("scheduled", 0))
        return run if run.status == "completed" else None

    try:
        run = await wait_until(completed, timeout=60, message="the run completes")
    finally:
        await runtime.stop()
    assert isinstance(run, CampaignRun)
    assert most <= AHEAD + CHUNK
    await _assert_each_recipient_once(db, run, released)
    return run


async def _ticks_change_nothing(db: Database, engine: CampaignEngine, campaign_id: str,
                                materialized: int) -> CampaignRun:
    """More engine rounds build nothing more (the run waits for room); returns the run as it stands."""
    for _ in range(20):
        await engine.tick()
    again = await _run(db, campaign_id)
    assert again is not None and again.materialized == materialized
    return again


async def _assert_each_recipient_once(db: Database, run: CampaignRun, released: list[str]) -> None:
    assert run.audience_total == N and run.accepted_count == N and run.rejected_count == 0
    assert len(released) == len(set(released)) == N
    async with db.read() as session:
        rows = (await session.execute(select(Message.id, Message.to_number, Message.status)
                                      .where(Message.batch_id == run.batch_id))).all()
    assert len(rows) == N and {r.id for r in rows} == set(released)
    assert len({r.to_number for r in rows}) == N
    assert {r.status for r in rows} <= {"sent", "delivered"}


def test_room_counts_later_messages_against_twice_the_limit() -> None:
    cases = [  # (due, total) -> room with build_ahead 100
        ((0, 0), 100), ((40, 40), 60), ((100, 100), 0), ((130, 130), -30),
        ((0, 150), 50), ((0, 200), 0), ((50, 190), 10), ((99, 120), 1),
    ]
    for (due, total), room in cases:
        assert runs.Backlog(due, total).room(100) == room, (due, total)


async def test_builder_stops_at_the_limit_and_resumes_as_messages_are_released(
        db: Database, settings: Settings, account: AccountFixture) -> None:
    cid = await _campaign(db, settings, account)
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    run = await _paced(db, engine, cid, queued=WINDOW)
    # nothing taken from the queue yet: WINDOW released, then the builder stopped AHEAD (+ a chunk) further
    counts = await _counts(db, run.batch_id)
    assert counts.get("queued") == WINDOW
    assert AHEAD <= counts.get("scheduled", 0) <= AHEAD + CHUNK
    assert run.audience_total is None and run.materialized == WINDOW + counts["scheduled"] < N
    assert await _held(db, account) == run.materialized * PRICE  # funds are held for what is built only
    # the console says more is coming (its total grows as the run is built)
    assert run_view(run_json(run, counts), "Asia/Shanghai")["progress"]["building"] is True
    # more rounds change nothing while the queue is full
    again = await _ticks_change_nothing(db, engine, cid, run.materialized)
    assert again.id in engine.paced_runs
    run = await _run_to_completion(db, settings, engine, queue, cid)
    assert run_view(run_json(run, {"sent": N}), "Asia/Shanghai")["progress"]["building"] is False
    assert await charging.verify_all(db) == []
    await engine.close()


async def test_a_paused_run_is_not_built_ahead_and_resumes(db: Database, settings: Settings,
                                                          account: AccountFixture) -> None:
    cid = await _campaign(db, settings, account)
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    assert await runs.fire_due(db, settings) == 1
    await service.pause_campaign(db, authority=_authority(account), actor=actor_for_cli(), campaign_id=cid)
    run = await _paced(db, engine, cid)  # the builder builds the paused run up to the limit, no further
    assert run.status == "paused" and run.audience_total is None
    assert sum(queue.depth(DISPATCH).values()) == 0
    counts = await _counts(db, run.batch_id)
    assert AHEAD <= counts.get("scheduled", 0) <= AHEAD + CHUNK and counts == {"scheduled": run.materialized}
    await _ticks_change_nothing(db, engine, cid, run.materialized)
    await service.resume_campaign(db, authority=_authority(account), actor=actor_for_cli(), campaign_id=cid)
    await _run_to_completion(db, settings, engine, queue, cid)
    await engine.close()


async def test_cancel_a_paced_run_releases_exactly_what_was_held(db: Database, settings: Settings,
                                                                account: AccountFixture) -> None:
    cid = await _campaign(db, settings, account)
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    run = await _paced(db, engine, cid, queued=WINDOW)
    built = run.materialized
    assert built < N
    out = await service.cancel_campaign(db, authority=_authority(account), actor=actor_for_cli(), campaign_id=cid)
    assert out == {"canceled_messages": built, "released_micros": built * PRICE}

    async def let_go() -> bool:  # the builder forgets the run and stops
        await engine.tick()
        return not engine.paced_runs and (engine._builder is None or engine._builder.done())

    await wait_until(let_go, timeout=10, message="the builder lets the canceled run go")
    run = await _run(db, cid)
    assert run is not None and run.status == "canceled" and run.audience_total == run.materialized == built
    assert await _counts(db, run.batch_id) == {"canceled": built}
    assert await _held(db, account) == 0
    assert await charging.verify_all(db) == []
    await engine.close()


async def test_build_ahead_zero_builds_everything_at_once(db: Database, settings: Settings,
                                                         account: AccountFixture) -> None:
    settings.campaign_build_ahead = 0
    cid = await _campaign(db, settings, account)
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)

    async def built() -> CampaignRun | None:
        await engine.tick()
        run = await _run(db, cid)
        return run if run is not None and run.audience_total is not None else None

    run = await wait_until(built, timeout=30, message="the run is built")
    assert isinstance(run, CampaignRun) and run.materialized == N and not engine.paced_runs
    counts = await _counts(db, run.batch_id)
    assert counts.get("queued", 0) <= WINDOW and counts.get("scheduled", 0) >= N - WINDOW
    await engine.close()


async def test_messages_held_by_quiet_hours_pace_the_build_at_twice_the_limit(
        db: Database, settings: Settings, account: AccountFixture) -> None:
    window = await quiet_window_now(db, account.account_id)
    cid = await _campaign(db, settings, account, message_type="marketing")
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    run = await _paced(db, engine, cid, scheduled=2 * AHEAD)  # nothing goes before the window ends: not built whole
    counts = await _counts(db, run.batch_id)
    assert counts == {"scheduled": run.materialized} and 2 * AHEAD <= run.materialized <= 2 * AHEAD + CHUNK
    assert sum(queue.depth(DISPATCH).values()) == 0
    # when the window has ended they are due: the build waits until the pump releases some of them
    opens = quiet_hours.next_allowed(window, ("Asia/Shanghai",), datetime.now(UTC))
    later = opens + timedelta(minutes=3)
    assert (await runs.build_backlog(db, run_id=run.id, build_ahead=AHEAD, now=later)).room(AHEAD) <= 0
    assert await engine.pump.release_once(now=later) > 0
    backlog = await runs.build_backlog(db, run_id=run.id, build_ahead=AHEAD, now=later)
    assert backlog.room(AHEAD) > 0 and backlog.total < run.materialized
    await engine.close()


async def test_a_stopping_builder_gives_its_build_lease_up(db: Database, settings: Settings,
                                                           account: AccountFixture) -> None:
    cid = await _campaign(db, settings, account)
    engine = CampaignEngine(db, settings, MemoryQueue(), holder="first")
    run = await _paced(db, engine, cid, queued=WINDOW)
    assert run.lease_holder == "first" and run.lease_until is not None
    other = CampaignEngine(db, settings, MemoryQueue(), holder="second")
    assert not await runs.claim_build(db, run_id=run.id, holder="second", ttl_s=30)  # the paced run is kept
    assert await runs.pending_materialization(db, holder="second") == []
    await engine.close()
    assert await runs.pending_materialization(db, holder="second") == [(run.id, "running")]
    assert await runs.claim_build(db, run_id=run.id, holder="second", ttl_s=30)
    await other.close()
