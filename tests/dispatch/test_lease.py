"""Named leases on both backends: one holder at a time, takeover after expiry, renewal, release, and a
real race of 20 acquirers on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from hongyan.db.engine import Database
from hongyan.dispatch.lease import acquire, new_holder_id, release
from hongyan.dispatch.models import Lease

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def _row(db: Database, name: str) -> tuple[str, datetime] | None:
    async with db.read() as session:
        lease = await session.get(Lease, name)
        return (lease.holder, lease.expires_at) if lease else None


async def test_first_acquire_wins_and_others_are_refused_while_valid(db: Database) -> None:
    assert await acquire(db, "scheduler", "a", ttl_s=30, now=T0)
    assert await _row(db, "scheduler") == ("a", T0 + timedelta(seconds=30))
    assert not await acquire(db, "scheduler", "b", ttl_s=30, now=T0 + timedelta(seconds=1))
    assert not await acquire(db, "scheduler", "b", ttl_s=30, now=T0 + timedelta(seconds=29.9))
    assert await _row(db, "scheduler") == ("a", T0 + timedelta(seconds=30))  # the refusal changed nothing


async def test_takeover_after_expiry(db: Database) -> None:
    assert await acquire(db, "scheduler", "a", ttl_s=30, now=T0)
    # exactly at expires_at the lease is still valid (expired means expires_at < now)
    assert not await acquire(db, "scheduler", "b", ttl_s=30, now=T0 + timedelta(seconds=30))
    later = T0 + timedelta(seconds=31)
    assert await acquire(db, "scheduler", "b", ttl_s=10, now=later)
    assert await _row(db, "scheduler") == ("b", later + timedelta(seconds=10))
    assert not await acquire(db, "scheduler", "a", ttl_s=30, now=later + timedelta(seconds=1))


async def test_owner_renews_before_expiry_and_keeps_others_out(db: Database) -> None:
    assert await acquire(db, "scheduler", "a", ttl_s=30, now=T0)
    for step in range(1, 6):  # renew every 20 s: never expires
        now = T0 + timedelta(seconds=20 * step)
        assert await acquire(db, "scheduler", "a", ttl_s=30, now=now)
        assert not await acquire(db, "scheduler", "b", ttl_s=30, now=now + timedelta(seconds=25))
    assert await _row(db, "scheduler") == ("a", T0 + timedelta(seconds=130))


async def test_owner_can_renew_even_after_its_own_expiry(db: Database) -> None:
    assert await acquire(db, "scheduler", "a", ttl_s=5, now=T0)
    assert await acquire(db, "scheduler", "a", ttl_s=5, now=T0 + timedelta(hours=1))


async def test_release_lets_another_acquire_and_only_the_owner_can_release(db: Database) -> None:
    assert await acquire(db, "scheduler", "a", ttl_s=300, now=T0)
    await release(db, "scheduler", "b")  # not b's: nothing happens
    assert not await acquire(db, "scheduler", "b", ttl_s=300, now=T0)
    await release(db, "scheduler", "a")
    assert await _row(db, "scheduler") is None
    assert await acquire(db, "scheduler", "b", ttl_s=300, now=T0)
    await release(db, "missing", "b")  # releasing a lease that does not exist is a no-op


async def test_leases_are_independent_by_name(db: Database) -> None:
    assert await acquire(db, "scheduler", "a", ttl_s=30)
    assert await acquire(db, "billing-sweep", "b", ttl_s=30)
    assert not await acquire(db, "scheduler", "b", ttl_s=30)


async def test_default_now_is_the_clock(db: Database) -> None:
    before = datetime.now(UTC)
    assert await acquire(db, "scheduler", "a", ttl_s=60)
    row = await _row(db, "scheduler")
    assert row is not None
    assert before + timedelta(seconds=59) <= row[1] <= datetime.now(UTC) + timedelta(seconds=61)


async def test_bad_arguments_are_programming_errors(db: Database) -> None:
    with pytest.raises(ValueError):
        await acquire(db, "x" * 65, "a", ttl_s=30)
    with pytest.raises(ValueError):
        await acquire(db, "scheduler", "", ttl_s=30)
    with pytest.raises(ValueError):
        await acquire(db, "scheduler", "a", ttl_s=0)
    with pytest.raises(ValueError):
        await acquire(db, "scheduler", "a", ttl_s=30, now=datetime(2030, 1, 1))


def test_new_holder_id_is_unique_and_fits_the_column() -> None:
    ids = {new_holder_id() for _ in range(100)}
    assert len(ids) == 100
    for holder in ids:
        assert 0 < len(holder) <= 64
        host, pid, rand = holder.rsplit(":", 2)
        assert host and pid.isdigit() and rand


async def test_concurrent_acquirers_exactly_one_wins(db: Database) -> None:
    """The point is PostgreSQL (overlapping statements on 20 connections); SQLite serializes the same calls
    with BEGIN IMMEDIATE and must give the same answer."""
    racers = Database(db.url, pool_size=20)  # 20 separate connections, so the statements really overlap
    try:
        for round_ in range(5):
            name = f"race-{round_}"
            results = await asyncio.gather(
                *(acquire(racers, name, f"holder-{i}", ttl_s=30, now=T0) for i in range(20))
            )
            assert sum(results) == 1, results
            winner = f"holder-{results.index(True)}"
            assert await _row(db, name) == (winner, T0 + timedelta(seconds=30))
            # and once it has expired, 20 more race to take it over: again exactly one
            later = T0 + timedelta(minutes=1)
            results = await asyncio.gather(
                *(acquire(racers, name, f"late-{i}", ttl_s=30, now=later) for i in range(20))
            )
            assert sum(results) == 1, results
            async with db.read() as session:
                holders = (await session.scalars(select(Lease.holder).where(Lease.name == name))).all()
            assert holders == [f"late-{results.index(True)}"]
    finally:
        await racers.dispose()
