"""Database engine behaviour on PostgreSQL: idle-only pings (db.engine._install_idle_ping) and autocommit reads."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from hongyan.db import engine as engine_module
from hongyan.db.engine import Database


async def _backend_pid(db: Database) -> int:
    async with db.read() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(pg_url: str, pid: int) -> None:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_idle_connection_killed_by_the_server_is_replaced_before_use(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as idle
    db = Database(pg_url, pool_size=1)
    try:
        first = await _backend_pid(db)
        await _terminate(pg_url, first)
        # the ping fails, the pool connects anew and the statement runs: no error reaches the caller
        second = await _backend_pid(db)
        assert second != first
    finally:
        await db.dispose()


async def test_connection_in_busy_use_is_not_pinged_and_a_dead_one_fails_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 3600.0)  # never idle long enough for a ping
    db = Database(pg_url, pool_size=1)
    try:
        first = await _backend_pid(db)
        await _terminate(pg_url, first)
        with pytest.raises(DBAPIError) as failure:  # no ping: the first statement finds the connection dead
            await _backend_pid(db)
        assert failure.value.connection_invalidated
        assert await _backend_pid(db) != first  # the pool was invalidated: a fresh connection
    finally:
        await db.dispose()


async def test_autocommit_session_runs_each_statement_on_its_own(pg_url: str) -> None:
    db = Database(pg_url, pool_size=1)
    try:
        async with db.autocommit() as session:  # each statement is its own transaction: now() moves
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await session.execute(text("SELECT pg_sleep(0.01)"))
            second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert second > first
        async with db.read() as session:  # a read session is one transaction: now() stands still
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await session.execute(text("SELECT pg_sleep(0.01)"))
            second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert second == first
    finally:
        await db.dispose()
