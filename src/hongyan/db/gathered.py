"""Inserts gathered during a write transaction and sent together at its end, as one statement on PostgreSQL.

A short write transaction such as a verification start inserts one row into each of six tables (batch,
message, its history, the claimed outbox row, the verification, the deferred ledger entry). Six INSERTs are
six round trips: each a wait for this process's event loop to come back and a statement for the server to
parse, plan and snapshot. On PostgreSQL `Gathered.flush` sends them as one statement of data-modifying CTEs

    WITH g0 AS (INSERT INTO batch …), g1 AS (INSERT INTO message …), … INSERT INTO outbox … RETURNING id

whose foreign keys and constraints are checked at its end, as for separate statements. The statement of
each shape (which tables, which columns, how many rows) is built once and cached; its values are bound
parameters. Larger sets (a many-recipient batch) and other dialects (SQLite) execute the parts one by one,
in order, each as one multi-row INSERT, as before.

Use: `gathered = Gathered.begin(session)`, then `insert(session, table, rows)` anywhere in that transaction
(it adds to the session's gathered inserts, or executes at once when the transaction gathers none), and
`await gathered.flush(session)` before anything reads the rows and before the commit. A step that must see
the rows (an UPDATE that checks them, a read) calls `flush` first: flushing twice is harmless.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam
from sqlalchemy import insert as sql_insert
from sqlalchemy.ext.asyncio import AsyncSession

INFO_KEY = "hongyan.gathered"
# one statement only for small sets: each value is a bound parameter (asyncpg takes at most 32,767), and
# each new shape is compiled once; a batch of many recipients is one multi-row INSERT per table anyway
MAX_ROWS = 8


class Gathered:
    """The inserts of one transaction not yet sent; at most one part may ask for a column back (RETURNING)."""

    __slots__ = ("_parts", "_returning", "returned")

    def __init__(self) -> None:
        self._parts: list[tuple[Table, list[dict[str, Any]]]] = []
        self._returning: tuple[int, str] | None = None  # (part index, column name)
        self.returned: list[Any] = []  # the RETURNING part's values once flushed, in row order

    @classmethod
    def begin(cls, session: AsyncSession) -> Gathered:
        """Gather this session's inserts from now on (until `flush` has sent them: later ones gather again)."""
        gathered = cls()
        session.info[INFO_KEY] = gathered
        return gathered

    @staticmethod
    def of(session: AsyncSession) -> Gathered | None:
        found = session.info.get(INFO_KEY)
        return found if isinstance(found, Gathered) else None

    def add(self, table: Table, rows: list[dict[str, Any]], *, returning: str | None = None) -> None:
        """Rows of one table (every row with the same keys). `returning`: a column whose values `flush`
        returns, in the order of `rows` (at most one part per flush)."""
        if not rows:
            return
        if returning is not None:
            if self._returning is not None:
                raise ValueError("one part per flush may return values")
            self._returning = (len(self._parts), returning)
        self._parts.append((table, rows))

    async def flush(self, session: AsyncSession) -> list[Any]:
        """Send what was gathered; returns the RETURNING part's values (empty when none was asked for), also
        when an earlier flush of this transaction sent that part."""
        parts, returning = self._parts, self._returning
        self._parts, self._returning = [], None
        returned: list[Any] = []
        if parts:
            conn = await session.connection()
            rows_total = sum(len(rows) for _t, rows in parts)
            one_returned = returning is None or len(parts[returning[0]][1]) == 1  # RETURNING order of a
            # multi-row VALUES is not promised: that case goes the separate way (sort_by_parameter_order)
            if conn.dialect.name == "postgresql" and rows_total <= MAX_ROWS and one_returned and len(parts) > 1:
                shape = tuple((table, tuple(rows[0]), len(rows)) for table, rows in parts)
                params = {f"g{i}_{r}_{key}": value for i, (_t, rows) in enumerate(parts)
                          for r, row in enumerate(rows) for key, value in row.items()}
                result = await conn.execute(_combined(shape, returning), params)
                if returning is not None:
                    returned = list(result.scalars())
            else:
                for i, (table, rows) in enumerate(parts):
                    if returning is not None and returning[0] == i:
                        stmt = sql_insert(table).returning(table.c[returning[1]], sort_by_parameter_order=True)
                        returned = list((await conn.execute(stmt, rows)).scalars())
                    else:
                        await conn.execute(sql_insert(table), rows)
        if returning is not None:
            self.returned = returned
        return self.returned


async def insert(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` with the transaction's gathered inserts when it gathers them (sent by its `flush`),
    else now."""
    if not rows:
        return
    gathered = Gathered.of(session)
    if gathered is not None:
        gathered.add(table, rows)
    else:
        await (await session.connection()).execute(sql_insert(table), rows)


@lru_cache(maxsize=128)  # shapes come from code paths (a start, a single send), not from data
def _combined(shape: tuple[tuple[Table, tuple[str, ...], int], ...], returning: tuple[int, str] | None) -> Any:
    """`WITH g0 AS (INSERT …), … <last INSERT>`: the part that returns values is the main statement (its
    RETURNING is the statement's result); the others are CTEs, which PostgreSQL runs whether or not they
    are referenced."""
    statements = []
    for i, (table, keys, count) in enumerate(shape):
        values = [{key: bindparam(f"g{i}_{r}_{key}", type_=table.c[key].type) for key in keys}
                  for r in range(count)]
        stmt = sql_insert(table).values(values if count > 1 else values[0])
        if returning is not None and returning[0] == i:
            stmt = stmt.returning(table.c[returning[1]])
        statements.append(stmt)
    main_index = returning[0] if returning is not None else len(statements) - 1
    main = statements[main_index]
    ctes = [stmt.cte(f"g{i}") for i, stmt in enumerate(statements) if i != main_index]
    return main.add_cte(*ctes)
