"""The campaign scheduler: occurrences fire once (even concurrently), missed ones follow the catch-up rule,
quiet hours hold marketing back until the recipient's window ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import Authority
from hongyan.audit.service import actor_for_cli
from hongyan.campaigns import quiet_hours, runs, service
from hongyan.campaigns.engine import CampaignEngine
from hongyan.campaigns.models import Campaign, CampaignRun
from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.dispatch.queue import MemoryQueue
from hongyan.messaging.models import Message
from support import AccountFixture, quiet_window_now, wait_until

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def _campaign(db: Database, settings: Settings, account: AccountFixture, *, schedule: dict[str, str],
                    message_type: str = "notification", numbers: int = 3) -> str:
    authority = Authority.of_key(account_id=account.account_id, key_id=account.key_id, scopes=("send", "read"))
    data = service.CampaignInput(name="c", text="您好{name|客户}", message_type=message_type, schedule=schedule,
                                 numbers=[f"+86139{i:08d}" for i in range(numbers)], time_zone="Asia/Shanghai")
    async with db.write() as session:
        campaign = await service.create_campaign(session, settings, authority=authority, actor=actor_for_cli(),
                                                 data=data)
    await service.start_campaign(db, settings, authority=authority, actor=actor_for_cli(), campaign_id=campaign.id)
    return campaign.id


async def _runs(db: Database, campaign_id: str) -> list[CampaignRun]:
    async with db.read() as session:
        return list((await session.scalars(select(CampaignRun).where(CampaignRun.campaign_id == campaign_id)
                                           .order_by(CampaignRun.occurrence_at))).all())


def _utc(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


async def test_recurring_fires_each_occurrence_once_and_catches_up(db: Database, settings: Settings,
                                                                   account: AccountFixture) -> None:
    cid = await _campaign(db, settings, account, schedule={"mode": "recurring", "start": "2030-01-01T09:00",
                                                           "rrule": "FREQ=DAILY;COUNT=5"})
    first = _utc("2030-01-01T09:00")
    assert await runs.fire(db, settings, campaign_id=cid, now=first - timedelta(seconds=1)) == 0
    assert await runs.fire(db, settings, campaign_id=cid, now=first + timedelta(seconds=1)) == 1
    assert await runs.fire(db, settings, campaign_id=cid, now=first + timedelta(seconds=2)) == 0
    async with db.read() as session:
        campaign = await session.get(Campaign, cid)
        assert campaign is not None and campaign.next_fire_at == _utc("2030-01-02T09:00")
    # down for two days: the 2nd and 3rd are superseded, the 4th (10 s late) fires
    assert await runs.fire(db, settings, campaign_id=cid, now=_utc("2030-01-04T09:00:10")) == 1
    # the 5th is reached 2 h late: more than the 1 h grace, skipped as missed
    assert await runs.fire(db, settings, campaign_id=cid, now=_utc("2030-01-05T11:00")) == 0
    got = [(r.occurrence_at, r.status, (r.error or {}).get("code")) for r in await _runs(db, cid)]
    assert got == [
        (_utc("2030-01-01T09:00"), "running", None),
        (_utc("2030-01-02T09:00"), "skipped", "superseded"),
        (_utc("2030-01-03T09:00"), "skipped", "superseded"),
        (_utc("2030-01-04T09:00"), "running", None),
        (_utc("2030-01-05T09:00"), "skipped", "missed"),
    ]
    async with db.read() as session:
        campaign = await session.get(Campaign, cid)
        assert campaign is not None and campaign.next_fire_at is None and campaign.runs_fired == 2
        assert campaign.status == "running"  # two runs still to build and send


async def test_concurrent_schedulers_fire_once(db: Database, settings: Settings, account: AccountFixture) -> None:
    cid = await _campaign(db, settings, account, schedule={"mode": "at", "at": "2030-06-01T10:00"})
    now = _utc("2030-06-01T10:00:01")
    fired = await asyncio.gather(*(runs.fire(db, settings, campaign_id=cid, now=now) for _ in range(8)))
    assert sum(fired) == 1
    assert [r.status for r in await _runs(db, cid)] == ["running"]


async def _quiet_now(db: Database, account: AccountFixture) -> quiet_hours.QuietWindow:
    """A quiet window around the current Shanghai time (2 h before to 2 h after)."""
    return await quiet_window_now(db, account.account_id)  # type: ignore[no-any-return]


async def _build(db: Database, settings: Settings, engine: CampaignEngine, cid: str) -> CampaignRun:
    """Tick the engine until the campaign's run is built (the builder runs beside the ticks)."""

    async def built() -> CampaignRun | None:
        await engine.tick()
        done = [r for r in await _runs(db, cid) if r.audience_total is not None]
        return done[0] if done else None

    run = await wait_until(built, timeout=10, message="the run is built")
    assert isinstance(run, CampaignRun)
    return run


async def test_marketing_waits_for_the_end_of_quiet_hours(db: Database, settings: Settings,
                                                          account: AccountFixture) -> None:
    window = await _quiet_now(db, account)
    cid = await _campaign(db, settings, account, schedule={"mode": "now"}, message_type="marketing")
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    run = await _build(db, settings, engine, cid)
    assert run.accepted_count == 3
    assert sum(queue.depth("dispatch").values()) == 0  # nothing released inside the window
    async with db.read() as session:
        rows = (await session.execute(select(Message.status, Message.scheduled_at, Message.time_zone)
                                      .where(Message.batch_id == run.batch_id))).all()
    assert {r.status for r in rows} == {"scheduled"}
    opens = quiet_hours.next_allowed(window, ("Asia/Shanghai",), datetime.now(UTC))
    assert all(abs((r.scheduled_at - opens).total_seconds()) < 120 and r.time_zone == "Asia/Shanghai" for r in rows)
    # a minute before the window ends nothing goes; when it has ended everything does
    assert await engine.pump.release_once(now=opens - timedelta(minutes=1)) == 0
    assert await engine.pump.release_once(now=opens + timedelta(minutes=3)) == 3
    assert sum(queue.depth("dispatch").values()) == 1
    await engine.close()


async def test_notifications_ignore_quiet_hours(db: Database, settings: Settings, account: AccountFixture) -> None:
    await _quiet_now(db, account)
    cid = await _campaign(db, settings, account, schedule={"mode": "now"}, message_type="notification")
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    await _build(db, settings, engine, cid)
    await engine.tick()
    assert engine.pump.released == 3
    await engine.close()


async def test_standby_engine_waits_for_the_lease(db: Database, settings: Settings, account: AccountFixture) -> None:
    leader = CampaignEngine(db, settings, MemoryQueue(), holder="a")
    standby = CampaignEngine(db, settings, MemoryQueue(), holder="b")
    await leader.tick()
    await standby.tick()
    assert leader.leader and not standby.leader
    await leader.close()
    await standby.tick()
    assert standby.leader
    await standby.close()


async def test_dispatch_holds_back_marketing_when_the_window_began_after_release(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    from hongyan.dispatch.models import OutboxItem
    from hongyan.dispatch.runtime import Runtime

    local = datetime.now(SHANGHAI)
    far = f"{(local + timedelta(hours=6)):%H:%M}-{(local + timedelta(hours=8)):%H:%M}"
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account.account_id).values(quiet_hours=far))
    cid = await _campaign(db, settings, account, schedule={"mode": "now"}, message_type="marketing")
    queue = MemoryQueue()
    engine = CampaignEngine(db, settings, queue)
    run = await _build(db, settings, engine, cid)
    while engine.pump.released < 3:  # released outside the window
        await engine.tick()
    item = await queue.get("dispatch")
    await engine.close()
    window = await _quiet_now(db, account)  # ... and then the window begins before a dispatcher takes them
    runtime = Runtime(db, settings, MemoryQueue())
    await runtime.dispatch(item.body["ids"])
    opens = quiet_hours.next_allowed(window, ("Asia/Shanghai",), datetime.now(UTC))
    async with db.read() as session:
        rows = (await session.execute(select(Message.status, Message.scheduled_at, Message.attempts)
                                      .where(Message.batch_id == run.batch_id))).all()
        outbox = (await session.scalars(select(OutboxItem))).all()
    assert [r.status for r in rows] == ["scheduled"] * 3
    assert all(abs((r.scheduled_at - opens).total_seconds()) < 120 and r.attempts == 0 for r in rows)
    assert outbox == []  # campaign messages come back through their run's pump, not the outbox


async def test_a_standby_worker_builds_runs_while_the_leader_releases(db: Database, settings: Settings,
                                                                      account: AccountFixture) -> None:
    leader = CampaignEngine(db, settings, MemoryQueue(), holder="leader")
    standby = CampaignEngine(db, settings, MemoryQueue(), holder="standby")
    await leader.tick()
    await standby.tick()  # announces itself (the campaign-standby lease)
    leader._lease_at = 0.0  # the leader looks for helpers when it renews its lease
    await leader.tick()
    assert leader.leader and not standby.leader
    cid = await _campaign(db, settings, account, schedule={"mode": "now"}, numbers=5)

    async def built() -> CampaignRun | None:
        await leader.tick()
        await standby.tick()
        done = [r for r in await _runs(db, cid) if r.audience_total is not None]
        return done[0] if done else None

    run = await wait_until(built, timeout=10, message="the run is built")
    assert run.lease_holder == "standby" and run.accepted_count == 5
    await leader.close()
    await standby.close()
