"""db.statistics: with autovacuum off, the workers ANALYZE tables whose planner statistics went stale (a
table that grew from nothing is planned as empty: whole-table scans for a few rows)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, text

from hongyan.core.clock import utcnow
from hongyan.db import statistics
from hongyan.db.engine import Database
from hongyan.messaging.models import MessageEvent
from support import wait_until


def _postgres_only(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite: no autovacuum, and its planner does not depend on gathered statistics")


async def _last_analyze(db: Database, table: str) -> Any:
    async with db.autocommit() as session:
        return await session.scalar(text(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = :t"),
            {"t": table})


async def _stale(db: Database, table: str) -> bool:
    async with db.autocommit() as session:
        return bool(await session.scalar(text(
            "SELECT n_mod_since_analyze > :b FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname = :t"), {"t": table, "b": statistics.ANALYZE_BASE}))


async def _analyze_everything(db: Database) -> None:
    """Earlier tests' tables too (a round takes the MAX_TABLES most changed): only this test's are stale after."""
    async with db.write() as session:
        await session.execute(text("ANALYZE"))


async def test_a_table_that_grew_is_analyzed_and_a_quiet_one_is_not(db: Database) -> None:
    _postgres_only(db)
    await _analyze_everything(db)
    before = await _last_analyze(db, "carrier_message")
    now = utcnow()
    async with db.write() as session:
        await session.execute(insert(MessageEvent.__table__), [
            {"message_id": f"msg_{i}", "status": "queued", "occurred_at": now} for i in range(2_000)])
    await wait_until(lambda: _stale(db, "message_event"), message="the server counted the inserts")
    analyzed = await statistics.analyze_stale_tables(db)
    assert analyzed == ["message_event"]
    assert await _last_analyze(db, "message_event") is not None
    assert await _last_analyze(db, "carrier_message") == before
    assert "message_event" not in await statistics.analyze_stale_tables(db)  # fresh now


async def test_the_keeper_works_only_when_autovacuum_is_off(db: Database) -> None:
    _postgres_only(db)
    keeper = statistics.StatisticsKeeper(db)
    now = utcnow()
    await _analyze_everything(db)
    async with db.write() as session:
        await session.execute(insert(MessageEvent.__table__), [
            {"message_id": f"msg_{i}", "status": "queued", "occurred_at": now} for i in range(2_000)])
    await wait_until(lambda: _stale(db, "message_event"), message="the server counted the inserts")
    done = await keeper.round()
    if await statistics.autovacuum_on(db):
        assert done == []  # autovacuum's job
    else:
        assert done == ["message_event"] and keeper.analyzed == 1


async def test_the_keeper_analyzes_with_a_small_sample(db: Database) -> None:
    """Its rounds must not take a backend for seconds: a histogram of at most STATISTICS_TARGET + 1 bounds
    (PostgreSQL's default target would give up to 101 for 2,000 distinct values)."""
    _postgres_only(db)
    await _analyze_everything(db)
    now = utcnow()
    async with db.write() as session:
        await session.execute(insert(MessageEvent.__table__), [
            {"message_id": f"msg_{i:05d}", "status": "queued", "occurred_at": now} for i in range(2_000)])
    await wait_until(lambda: _stale(db, "message_event"), message="the server counted the inserts")
    assert await statistics.analyze_stale_tables(db) == ["message_event"]
    async with db.autocommit() as session:
        bounds = await session.scalar(text(
            "SELECT array_length(histogram_bounds, 1) FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'message_event' AND attname = 'message_id'"))
    assert bounds is not None and 2 <= bounds <= statistics.STATISTICS_TARGET + 1
