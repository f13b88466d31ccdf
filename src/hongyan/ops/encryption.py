"""Encryption-at-rest operations: which key sealed what (status), re-encrypt to the active key
(rotation), seal rows written while encryption was off, decrypt everything (before a downgrade), and
rebuild blind indexes after the index key changed. `hongyan security …` runs these.

Rows are rewritten in primary-key order, `batch` rows per transaction, so a long run never holds a long
lock and can be stopped and restarted at any time (every value it has not reached yet still opens).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from sqlalchemy import Table, select, tuple_, update

from hongyan.config import get_settings
from hongyan.core.crypto import (
    DecryptionError,
    EncryptedBytes,
    EncryptedJson,
    EncryptedText,
    Keyring,
    KeyringError,
    keyring,
    new_key_text,
)
from hongyan.db.engine import Database
from hongyan.db.models import metadata
from hongyan.privacy.scrub import ERASED_NUMBER

SEALED_TYPES = (EncryptedText, EncryptedJson, EncryptedBytes)
# blind index column ← the sealed number it indexes
BLIND_INDEXES = {("message", "to_number"): "to_bidx", ("inbound_message", "from_number"): "from_bidx"}


def sealed_columns() -> dict[str, list[str]]:
    """table → its sealed columns, found from the models (a new sealed column is covered automatically)."""
    out: dict[str, list[str]] = {}
    for table in metadata.sorted_tables:
        cols = [c.name for c in table.columns if isinstance(c.type, SEALED_TYPES)]
        if cols:
            out[table.name] = cols
    return out


@dataclass(slots=True)
class Report:
    keys: dict[str, Counter[str]] = field(default_factory=dict)  # "table.column" → key id | "plaintext" → rows
    rewritten: int = 0
    reindexed: int = 0


def _key_label(ring: Keyring, value: Any) -> str:
    return ring.key_id_of(value) or "plaintext"


async def _walk(db: Database, table: Table, columns: list[str], batch: int,
                visit: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
    """Visit every row (pk + raw sealed values) in pk order; `visit` returns new raw values or None."""
    from sqlalchemy import literal_column

    pk = list(table.primary_key.columns)
    raw_cols = [literal_column(f'"{c}"').label(c) for c in columns]
    changed = 0
    last: tuple[Any, ...] | None = None
    while True:
        async with db.write() as session:
            query = select(*pk, *raw_cols).select_from(table).order_by(*pk).limit(batch)
            if last is not None:
                query = query.where(tuple_(*pk) > tuple_(*last)) if len(pk) > 1 else query.where(pk[0] > last[0])
            rows = (await session.execute(query)).mappings().all()
            if not rows:
                return changed
            updates = []
            for row in rows:
                new = visit(dict(row))
                if new:
                    updates.append(({c.name: row[c.name] for c in pk}, new))
            for key, values in updates:
                stmt = update(table).where(*(table.c[k] == v for k, v in key.items()))
                # bind the raw value through the column's plain type: no second sealing
                await session.execute(stmt.values({table.c[n]: _plain_bind(table, n, v) for n, v in values.items()}))
            changed += len(updates)
            last = tuple(rows[-1][c.name] for c in pk)


def _plain_bind(table: Table, name: str, value: Any) -> Any:
    from sqlalchemy import bindparam

    column = table.c[name]
    impl = column.type.impl if isinstance(column.type, SEALED_TYPES) else column.type
    return bindparam(None, value, type_=impl)


async def status(db: Database) -> Report:
    ring, report = keyring(), Report()
    for table_name, columns in sealed_columns().items():
        table = metadata.tables[table_name]
        counters = {c: report.keys.setdefault(f"{table_name}.{c}", Counter()) for c in columns}

        def count(row: dict[str, Any], counters: dict[str, Counter[str]] = counters) -> None:
            for c, counter in counters.items():
                if row[c] is not None:
                    counter[_key_label(ring, row[c])] += 1

        await _walk(db, table, columns, 2000, count)
    return report


async def reencrypt(db: Database, *, decrypt: bool = False, reindex: bool = False, batch: int = 1000) -> Report:
    """Seal every value with the active key (or, with decrypt, store plaintext); optionally rebuild
    blind indexes. Values already sealed with the active key are left alone (restartable)."""
    ring, report = keyring(), Report()
    seal = ring.enabled and not decrypt  # encryption off: never seal (only --decrypt or --reindex work)
    for table_name, columns in sealed_columns().items():
        table = metadata.tables[table_name]
        indexes = {c: BLIND_INDEXES[(table_name, c)] for c in columns if (table_name, c) in BLIND_INDEXES}
        read_cols = columns + (list(indexes.values()) if reindex else [])

        def rewrite(row: dict[str, Any], columns: list[str] = columns, indexes: dict[str, str] = indexes) -> dict[str, Any] | None:
            new: dict[str, Any] = {}
            for c in columns:
                value = row[c]
                if value is None:
                    continue
                if isinstance(value, (bytes, memoryview)):
                    value = bytes(value)
                    label = ring.key_id_of(value)
                    if decrypt and label is not None:
                        new[c] = ring.plain_bytes(ring.open_bytes(value))
                    elif seal and label != ring.active_id:
                        new[c] = ring.seal_bytes(ring.open_bytes(value))
                    continue
                label = ring.key_id_of(value)
                plain = ring.open(value)
                if decrypt and label is not None:
                    new[c] = ring.plain(plain)
                elif seal and label != ring.active_id:
                    new[c] = ring.seal(plain)
                if reindex and c in indexes and plain != ERASED_NUMBER:  # erased rows keep no index
                    bidx = ring.blind_index(plain)
                    if row.get(indexes[c]) != bidx:
                        new[indexes[c]] = bidx
                        report.reindexed += 1
            return new or None

        report.rewritten += await _walk(db, table, read_cols, batch, rewrite)
    return report


# -- CLI ----------------------------------------------------------------------------------------
security_cli = typer.Typer(help="Encryption at rest: keys, status, re-encryption.", no_args_is_help=True)


def _run(main: Any) -> None:
    """Run against the database; a key problem is one line on stderr and exit code 1, not a traceback."""
    from hongyan.cli import _with_db

    async def guarded(db: Database) -> int:
        try:
            return int(await main(db))
        except (DecryptionError, KeyringError) as exc:
            typer.echo(f"error: {exc}", err=True)
            return 1

    try:
        keyring()
    except KeyringError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(_with_db(get_settings(), guarded))


def _print(report: Report) -> None:
    for column, counter in sorted(report.keys.items()):
        parts = ", ".join(f"{label} {n}" for label, n in sorted(counter.items())) or "empty"
        typer.echo(f"{column}: {parts}")


@security_cli.command("new-key")
def new_key(key_id: Annotated[str, typer.Argument(help="Id of the new key (letters/digits).")] = "k2") -> None:
    """Print a new key entry to put FIRST in HONGYAN_ENCRYPTION_KEYS (keep the old ones after it)."""
    typer.echo(new_key_text(key_id))


@security_cli.command("status")
def status_command() -> None:
    """Rows per sealed column by the key that sealed them (plaintext: written while encryption was off)."""
    async def main(db: Database) -> int:
        ring = keyring()
        typer.echo(f"encryption {'on' if ring.enabled else 'OFF'}; active key {ring.active_id}; "
                   f"keys {', '.join(ring.keys)}")
        _print(await status(db))
        return 0

    _run(main)


@security_cli.command("re-encrypt")
def reencrypt_command(
    decrypt: Annotated[bool, typer.Option(help="Store everything as plaintext (before a downgrade).")] = False,
    reindex: Annotated[bool, typer.Option(help="Rebuild blind indexes (after HONGYAN_BLIND_INDEX_KEY changed).")] = False,
    batch: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """Rewrite sealed values with the active key (after adding a new key first in the list), seal
    plaintext rows, or --decrypt. Restartable; afterwards the old key can leave the list."""
    async def main(db: Database) -> int:
        if not keyring().enabled and not (decrypt or reindex):
            typer.echo("encryption is off (HONGYAN_ENCRYPTION=off): nothing to seal; --decrypt stores plaintext",
                       err=True)
            return 2
        report = await reencrypt(db, decrypt=decrypt, reindex=reindex, batch=batch)
        typer.echo(f"rewrote {report.rewritten} rows; rebuilt {report.reindexed} blind index values")
        _print(await status(db))
        return 0

    _run(main)
