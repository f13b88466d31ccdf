"""Migrations and models agree (alembic check) on both backends; upgrade is idempotent."""

from __future__ import annotations

import asyncio

from hongyan.db.migrate import check, upgrade


def test_models_match_migrations(db_url: str) -> None:
    upgrade(db_url)  # already at head: a no-op
    check(db_url)  # raises if autogenerate would produce operations


def test_fresh_sqlite_upgrade(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    check(url)

    async def tables() -> set[str]:
        from sqlalchemy import text

        from hongyan.db.engine import Database

        db = Database(url)
        async with db.read() as s:
            rows = (await s.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))).scalars().all()
        await db.dispose()
        return set(rows)

    assert {"message", "batch", "outbox", "webhook_event", "api_key", "alembic_version"} <= asyncio.run(tables())
