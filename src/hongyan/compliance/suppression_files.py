"""Suppression list files: import a column of numbers (CSV, XLSX, XLS) and export the list as CSV.

Import reuses the contact-import readers (campaigns.tabular for the file, campaigns.rows for the number
column and per-row problems): the phone column is found by its header (手机号, phone, number, …) or is
the first column when there is no header. Valid rows are added, every refused row is reported with its
row number and reason, and the file is handled in the request (it is bounded by the request body limit,
HONGYAN_MAX_BODY_BYTES: about half a million numbers at the default 8 MiB).

Export streams the list (one short read transaction per 5,000 entries), UTF-8 with BOM so Excel opens
it, in a shape the import takes back (its `number` column is found by name).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from sqlalchemy import and_, or_, select

from hongyan.audit.service import Actor
from hongyan.campaigns.rows import (
    CheckCounts,
    ColumnMapping,
    ContactDraft,
    RowProblem,
    check_rows,
    guess_mapping,
)
from hongyan.campaigns.tabular import SNIFF_BYTES, TableProblem, detect_format, iter_rows
from hongyan.compliance import suppression
from hongyan.compliance.models import Suppression
from hongyan.core.clock import isoformat
from hongyan.db.engine import Database

MAX_REPORTED_PROBLEMS = 1_000  # the rest are counted
EXPORT_CHUNK = 5_000
IMPORT_CHUNK = 10_000  # numbers per transaction
EXPORT_COLUMNS = ("number", "scope", "signature", "source", "keyword", "note", "created_at")


@dataclass(slots=True)
class ImportReport:
    rows: int = 0  # data rows read (header excluded)
    added: int = 0
    existing: int = 0  # already on the list in that scope
    duplicates: int = 0  # the same number again further down the file (counted once)
    problems_total: int = 0
    problems: list[RowProblem] = field(default_factory=list)  # the first MAX_REPORTED_PROBLEMS

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "added": self.added,
            "existing": self.existing,
            "duplicates": self.duplicates,
            "rejected_count": self.problems_total,
            "rejected": [
                {"row": p.row, "column": p.column, "code": p.code, "message": p.message, "value": p.value}
                for p in self.problems
            ],
        }


def read_numbers(data: bytes, *, filename: str, region: str) -> tuple[list[str], ImportReport]:
    """Pure (no database): the valid E.164 numbers of a file and the report of its refused rows."""
    fmt = detect_format(data[:SNIFF_BYTES], filename=filename)
    rows = iter_rows(io.BytesIO(data), fmt)
    first = next(rows, None)
    if first is None:
        raise TableProblem("file_empty", "The file has no rows.")
    guessed = guess_mapping(first.cells)
    # a header row names the phone column; without one, the numbers are in the first column
    mapping = (
        ColumnMapping(phone=guessed.phone, header_rows=first.number)
        if guessed
        else ColumnMapping(phone=0, header_rows=0)
    )
    header = first.cells if guessed else None
    counts, report, numbers = CheckCounts(), ImportReport(), []
    for item in check_rows(chain([first], rows), mapping, region=region, header=header, counts=counts):
        if isinstance(item, ContactDraft):
            numbers.append(item.phone)
        elif item.code == "duplicate_phone_number":
            report.duplicates += 1
        else:
            report.problems_total += 1
            if len(report.problems) < MAX_REPORTED_PROBLEMS:
                report.problems.append(item)
    report.rows = counts.rows
    return numbers, report


async def import_file(
    db: Database,
    *,
    account_id: str,
    actor: Actor,
    region: str,
    filename: str,
    data: bytes,
    scope: str = "",
    note: str | None = None,
) -> ImportReport:
    """Read the file (off the event loop) and add its valid numbers IMPORT_CHUNK at a time, each chunk its
    own short transaction (a big file must not hold SQLite's write lock for long; adding is idempotent, so a
    file cut short by a crash is simply imported again); the last chunk carries the audit entry."""
    numbers, report = await asyncio.to_thread(read_numbers, data, filename=filename, region=region)
    for start in range(0, len(numbers), IMPORT_CHUNK):
        chunk = numbers[start : start + IMPORT_CHUNK]
        async with db.write() as session:
            outcome = await suppression.add(session, account_id, chunk, scope, "import", note=note)
            report.added += outcome.added
            report.existing += outcome.existing
            if start + IMPORT_CHUNK >= len(numbers):
                total = suppression.AddOutcome(report.added, report.existing)
                await suppression.audit_add(
                    session,
                    account_id=account_id,
                    actor=actor,
                    numbers=numbers,
                    scope=scope,
                    source="import",
                    note=note,
                    outcome=total,
                    rejected=report.problems_total,
                )
    return report


def _cell(value: str | None) -> str:
    """Free text as a CSV cell that a spreadsheet will not run as a formula."""
    text = value or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


async def export_csv(db: Database, *, account_id: str) -> AsyncIterator[bytes]:
    """The whole list as CSV, streamed in chunks (in primary-key order, each chunk one short read)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield ("\ufeff" + buffer.getvalue()).encode()
    async with db.read() as session:
        names = await suppression.signature_names(session, account_id)
    after: tuple[str, str] | None = None
    while True:
        query = select(Suppression).where(Suppression.account_id == account_id)
        if after is not None:
            query = query.where(
                or_(
                    Suppression.number_bidx > after[0],
                    and_(Suppression.number_bidx == after[0], Suppression.scope > after[1]),
                )
            )
        async with db.read() as session:
            rows = list(
                (
                    await session.scalars(
                        query.order_by(Suppression.number_bidx, Suppression.scope).limit(EXPORT_CHUNK)
                    )
                ).all()
            )
        if not rows:
            return
        buffer.seek(0)
        buffer.truncate()
        for r in rows:
            writer.writerow(
                [
                    r.number,
                    r.scope or "account",
                    _cell(names.get(r.scope)) if r.scope else "",
                    r.source,
                    _cell(r.keyword),
                    _cell(r.note),
                    isoformat(r.created_at),
                ]
            )
        yield buffer.getvalue().encode()
        after = (rows[-1].number_bidx, rows[-1].scope)
