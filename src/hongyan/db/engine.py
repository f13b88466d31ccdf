"""Engine and sessions. SQLite (embedded) and PostgreSQL (production) behind the same interface.

SQLite quirk: a deferred transaction that reads and then writes can fail with SQLITE_BUSY at once when
another writer committed in between (the busy handler is not consulted on lock upgrade). Write sessions
therefore start with BEGIN IMMEDIATE; read sessions stay deferred so readers never wait (WAL).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# a pooled connection used again within this many seconds is not pinged first (see _install_idle_ping)
PING_AFTER_IDLE_S = 1.0
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})  # serialization failure, deadlock, lock not available


def is_transient(error: BaseException) -> bool:
    """A PostgreSQL error that says "try the transaction again": serialization failure, deadlock (the
    database aborted this transaction to break a cycle), lock not available."""
    return isinstance(error, exc.DBAPIError) and getattr(error.orig, "sqlstate", None) in TRANSIENT_SQLSTATES


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False, name: str = "hongyan") -> None:
        """`name`: PostgreSQL's application_name of every connection (pg_stat_activity, the server log's %a),
        so an operator sees which process holds a lock or runs a slow statement."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
            # JSON as written by orjson: unescaped UTF-8, as PostgreSQL's jsonb shows it, so a text match on a
            # JSON column (contact tags in saved filters) works the same on both
            kwargs["json_serializer"] = _json_text
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size,
                          connect_args={"server_settings": {"application_name": name[:63]}})
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            self._install_sqlite_hooks(self.engine)
        else:
            self._install_idle_ping(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL: sessions whose statements each run on their own (see `autocommit`); SQLite: plain reads
        self._autocommit = (async_sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                                               expire_on_commit=False) if not self.is_sqlite else None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _install_sqlite_hooks(engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

    @staticmethod
    def _install_idle_ping(engine: AsyncEngine) -> None:
        """Pessimistic disconnect handling without a round trip per checkout: a connection is pinged before
        use only when it sat in the pool for PING_AFTER_IDLE_S or more (HikariCP's rule). SQLAlchemy's
        pool_pre_ping pings at every checkout — with asyncpg that is BEGIN + ROLLBACK, two round trips per
        transaction, the largest single cost of a short transaction on the hot paths. A connection that
        breaks while in busy use (the server restarted) fails its statement once; SQLAlchemy then sees the
        disconnect and invalidates the whole pool, so the next checkout connects afresh."""
        dialect = engine.sync_engine.dialect

        @event.listens_for(engine.sync_engine.pool, "checkin")
        def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
            if record is not None:
                record.info["idle_since"] = time.monotonic()

        @event.listens_for(engine.sync_engine.pool, "checkout")
        def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
            since = record.info.get("idle_since")
            if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
                return  # just connected, or in use a moment ago
            try:
                alive = dialect.do_ping(dbapi_connection)
            except Exception as error:
                raise exc.DisconnectionError(str(error)) from error  # the pool connects anew and retries
            if not alive:
                raise exc.DisconnectionError("ping failed")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one write transaction, committed on success, rolled back on error."""
        async with self._sessions() as session:
            async with session.begin():
                yield session

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A read-only session (deferred transaction on SQLite so it never blocks writers). `snapshot`: every
        statement sees the same committed state (PostgreSQL REPEATABLE READ; a read-only transaction there
        never fails to serialize) — for answers built from several reads that must agree, e.g. a run and its
        campaign, which one transaction completes together. SQLite's read transaction is a snapshot already."""
        async with self._sessions() as session:
            if self.is_sqlite:
                await session.connection(execution_options={"sqlite_begin": "DEFERRED"})
            elif snapshot:
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            try:
                yield session
            finally:
                await session.close()  # ends the transaction; loaded objects stay usable (not expired)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncSession]:
        """For a hot read of one statement (the API key of every request): on PostgreSQL no BEGIN and
        ROLLBACK around it — two round trips fewer; each statement sees the data committed when it starts.
        Never for writes or for reads that must agree with each other (use `read`/`write`). SQLite: `read`."""
        if self._autocommit is None:
            async with self.read() as session:
                yield session
            return
        async with self._autocommit() as session:
            try:
                yield session
            finally:
                await session.close()

    async def dispose(self) -> None:
        await self.engine.dispose()
