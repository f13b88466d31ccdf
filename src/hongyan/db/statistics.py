"""Planner statistics of Hongyan's tables on a PostgreSQL server whose autovacuum is off.

PostgreSQL plans every statement from per-table statistics that ANALYZE gathers; autovacuum runs it when a
table has changed by 10 % since the last time. Where autovacuum is off (some CI and test configurations
turn it off; an operator may too), a table that grew from nothing keeps the statistics of an empty table:
the planner then reads the whole `carrier_message` table to match 30 receipts (16 ms at 150,000 rows,
against 0.07 ms by the index once analyzed) and the whole `message` table to move a campaign chunk to
`sending`. On the 2-core benchmark machine that was half of PostgreSQL's CPU during a campaign
(docs/benchmarks.md, "Stale planner statistics").

So the workers check every STATISTICS_S, and only when autovacuum is off: each table of the database's
schema changed by more than ANALYZE_BASE + ANALYZE_FRACTION × its rows since its last analyze is analyzed
(at most MAX_TABLES per round, the most changed first), under an advisory lock so that one worker does it at
a time, and cheaply: with a sample of 300 × STATISTICS_TARGET rows (3,000 instead of the default 30,000; a
150,000-row message table analyzes in 19 ms instead of 230 ms) and autovacuum's cost-based pauses
(vacuum_cost_delay). Full-sample rounds took a PostgreSQL backend for up to 2 s every 30 s on a saturated
2-core machine, which showed as bursts of slow verification codes (docs/benchmarks.md); the coarser
histograms still tell the planner what it lacked, how big each table is and how its values spread.
Autovacuum on (the production setting, docs/deployment.md): nothing is done here. Vacuuming (dead
rows, wraparound) is not replaced: with autovacuum off a warning is logged once per process.
"""

from __future__ import annotations

import logging

from sqlalchemy import text

from hongyan.db.engine import Database

log = logging.getLogger(__name__)
STATISTICS_S = 30.0
ANALYZE_BASE = 500
ANALYZE_FRACTION = 0.1
MAX_TABLES = 4
STATISTICS_TARGET = 10  # default_statistics_target for these ANALYZEs (PostgreSQL's default: 100)
COST_DELAY_MS = 2  # vacuum_cost_delay for them, as autovacuum's own (manual ANALYZE: 0, no pauses)
_LOCK_KEY = "hongyan:analyze"

_STALE = text("""
    SELECT relname, quote_ident(relname) AS quoted FROM pg_stat_user_tables
    WHERE schemaname = current_schema()
      AND n_mod_since_analyze > :base + :fraction * GREATEST(n_live_tup, 0)
    ORDER BY n_mod_since_analyze DESC
    LIMIT :n
""")


async def autovacuum_on(db: Database) -> bool:
    async with db.autocommit() as session:
        return str(await session.scalar(text("SELECT current_setting('autovacuum')"))).lower() == "on"


async def analyze_stale_tables(db: Database) -> list[str]:
    """ANALYZE the tables whose statistics are stale (the rule above); returns their names. Another worker
    doing it at the same moment: nothing (it holds the lock)."""
    async with db.write() as session:
        if not await session.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK_KEY}):
            return []
        await session.execute(text(f"SET LOCAL default_statistics_target = {STATISTICS_TARGET}"))
        await session.execute(text(f"SET LOCAL vacuum_cost_delay = {COST_DELAY_MS}"))
        stale = (await session.execute(_STALE, {"base": ANALYZE_BASE, "fraction": ANALYZE_FRACTION,
                                                 "n": MAX_TABLES})).all()
        for row in stale:
            await session.execute(text(f"ANALYZE {row.quoted}"))
    return [row.relname for row in stale]


class StatisticsKeeper:
    """The workers' periodic round (dispatch.runtime): decides once whether autovacuum is off."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._needed: bool | None = None
        self.analyzed = 0  # tables analyzed by this process

    async def round(self) -> list[str]:
        if self.db.is_sqlite:
            return []
        if self._needed is None:
            self._needed = not await autovacuum_on(self.db)
            if self._needed:
                log.warning("PostgreSQL autovacuum is off: planner statistics of changed tables are refreshed "
                            "by the workers (ANALYZE), but nothing vacuums dead rows; turn autovacuum on in "
                            "production (docs/deployment.md)")
        if not self._needed:
            return []
        names = await analyze_stale_tables(self.db)
        if names:
            self.analyzed += len(names)
            log.info("analyzed %s (statistics were stale; autovacuum is off)", ", ".join(names))
        return names
