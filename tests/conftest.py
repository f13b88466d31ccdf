"""Shared fixtures: real databases (SQLite file and PostgreSQL), settings, the app, an account with a key.

Every database test runs on both backends (`db_backend` parameter). PostgreSQL is the real server at
127.0.0.1:5432 (HONGYAN_TEST_PG_URL to change); each test session creates its own database and drops
it at the end. Locally a missing server skips those cases; under CI=true it fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hongyan.config import Settings
from hongyan.db.engine import Database
from hongyan.db.migrate import upgrade
from support import AccountFixture, make_account, truncate_all

# fixed test-only keys (not secrets): every app, CLI call and migration in the run seals and opens alike
os.environ.setdefault("HONGYAN_ENCRYPTION_KEYS", "t1:" + "dGVzdC1vbmx5LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGU")
os.environ.setdefault("HONGYAN_BLIND_INDEX_KEY", "dGVzdC1vbmx5LWJsaW5kLWluZGV4LWtleS0zMi1ieXRlcw")

PG_ADMIN_URL = os.environ.get("HONGYAN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> str | None:
    """None if reachable, else the reason."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
        return None
    except Exception as exc:  # any connection failure
        return f"{type(exc).__name__}: {exc}"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    reason = _pg_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true and is not reachable: {reason}")
        pytest.skip(f"PostgreSQL not reachable: {reason}")
    name = f"hongyan_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


AMQP_URL = os.environ.get("HONGYAN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The RabbitMQ broker (production mode tests): skipped when absent locally, a failure under CI=true.
    Tests isolate themselves with a queue prefix of their own (`rabbit_prefix`)."""
    import aio_pika

    async def probe() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"RabbitMQ is required under CI=true and is not reachable: {type(exc).__name__}: {exc}")
        pytest.skip(f"RabbitMQ not reachable: {type(exc).__name__}: {exc}")
    return AMQP_URL


@pytest.fixture
def rabbit_prefix(amqp_url: str) -> Iterator[str]:
    """A queue-name prefix for one test; its queues are deleted afterwards."""
    prefix = f"hytest{uuid.uuid4().hex[:10]}"
    yield prefix

    async def drop() -> None:
        import aio_pika

        from hongyan.dispatch.queue import LANES
        from hongyan.dispatch.rabbit import codes_exchange, dead_name, queue_name

        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel()
            for name in [queue_name("dispatch", lane, prefix) for lane in LANES] + [dead_name(prefix)]:
                await channel.queue_delete(name)
            await channel.exchange_delete(codes_exchange(prefix))  # codes-first reports (listeners' queues are exclusive)
        finally:
            await connection.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "hongyan.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_url" if db_backend == "postgresql" else "sqlite_url"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url, pool_size=5)
    await truncate_all(database)
    yield database
    await database.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=db_url,
        sandbox_delay_ms=0,
        outbox_poll_ms=20,
        secret_key="test-secret-key",
        # marketing is deferred by the quiet window of the recipient's zone: off, so that a test's outcome does
        # not depend on the hour it runs; quiet-hours tests set a window on the account
        quiet_hours="off",
    )


@pytest.fixture
async def account(db: Database) -> AccountFixture:
    return await make_account(db)


@pytest.fixture
async def app(db: Database, settings: Settings) -> AsyncIterator[Any]:
    """The app with its embedded workers running (sandbox carrier, delay 0)."""
    from hongyan.app import create_app

    application = create_app(settings, run_workers=True, db=db)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=account.headers) as c:
        yield c


@pytest.fixture(scope="session")
def smsc_shared() -> Iterator[Any]:
    """One simulator for tests that only need a well-behaved SMSC (reset per test with `smsc`)."""
    from smsc import SmscSim

    sim = SmscSim().start()
    yield sim
    sim.stop()


@pytest.fixture
def smsc(smsc_shared: Any) -> Any:
    smsc_shared.api("/reset", {})
    return smsc_shared
