"""Contact files of imports: the upload (spooled to a temporary file, never whole in memory, checked to be
a table, stored sealed in ~1 MiB `upload_chunk` rows so any worker can run the job), the preview with a
guessed mapping, the stored file back as a temporary file, and the error file streamed."""

from __future__ import annotations

import asyncio
import inspect
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select

from hongyan.accounts.permissions import Authority, require
from hongyan.campaigns import contacts
from hongyan.campaigns.import_mapping import ImportMapping, mapping_from_json
from hongyan.campaigns.models import ImportJob, UploadChunk
from hongyan.campaigns.rows import ContactDraft, RowProblem, check_rows, guess_mapping, problems_csv
from hongyan.campaigns.tabular import (
    DELIMITERS,
    SNIFF_BYTES,
    SourceRow,
    TableFormat,
    TableProblem,
    detect_encoding,
    detect_format,
    iter_rows,
)
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError, Unprocessable
from hongyan.db.engine import Database

SOURCE, ERRORS = "source", "errors"  # upload_chunk kinds
CHUNK_BYTES = 1024 * 1024
SPOOL_MEMORY = 4 * 1024 * 1024  # a temporary file stays in memory up to this, then goes to disk
PREVIEW_ROWS = 10
PREVIEW_CELL_CHARS = 100
MAX_COLUMNS = 200


# -- upload ---------------------------------------------------------------------------------------
async def _read(stream: Any, size: int) -> bytes:
    """A block from a file object or an async one (starlette's UploadFile)."""
    data = stream.read(size)
    if inspect.isawaitable(data):
        data = await data
    return bytes(data)


async def _spool(stream: Any, spool: IO[bytes], limit: int) -> int:
    size = 0
    while block := await _read(stream, CHUNK_BYTES):
        size += len(block)
        if size > limit:
            raise HongyanError(
                "file_too_large",
                f"The file is larger than {limit // (1024 * 1024)} MiB; split it into smaller files.",
                field="file",
                status_code=413,
            )
        spool.write(block)
    return size


@dataclass(frozen=True, slots=True)
class _Shape:
    header: list[str]
    estimate: int | None  # data rows, from the sheet's dimension (Excel)


def _inspect_table(spool: IO[bytes], fmt: TableFormat) -> _Shape:
    """The header row, and that there is at least one row under it (runs in a thread)."""
    rows = iter_rows(spool, fmt)
    try:
        header = next(rows, None)
        first = next(rows, None)
    except UnicodeError as exc:  # e.g. UTF-16 chosen for a file without a byte-order mark
        raise Unprocessable(
            "file_unreadable",
            f"The file cannot be read as {fmt.encoding} ({exc}); choose "
            "another encoding or let it be detected.",
            field="encoding",
        ) from exc
    finally:
        rows.close()
    if header is None:
        raise TableProblem("file_has_no_rows", "The file has no rows.")
    if first is None:
        raise TableProblem(
            "file_has_no_rows",
            "The file has only one row (the column names); there are no contacts under it.",
        )
    if len(header.cells) > MAX_COLUMNS:
        raise TableProblem(
            "too_many_columns",
            f"The first row has {len(header.cells)} columns; at most {MAX_COLUMNS} can be imported.",
        )
    if fmt.kind == "csv" and len(header.cells) == 1:
        other = next((d for d in DELIMITERS if d != fmt.delimiter and d in header.cells[0]), None)
        if other is not None:
            shown = "tab" if other == "\t" else other
            raise Unprocessable(
                "delimiter_mismatch",
                f"The first row is one column that contains '{shown}': the "
                f"columns seem to be separated by '{shown}'; choose that delimiter.",
                field="delimiter",
            )
    return _Shape([c.strip() for c in header.cells], _estimate(spool, fmt))


def _estimate(spool: IO[bytes], fmt: TableFormat) -> int | None:
    spool.seek(0)
    try:
        if fmt.kind == "xlsx":
            from openpyxl import load_workbook

            workbook = load_workbook(spool, read_only=True, data_only=True)
            try:
                rows = workbook.worksheets[0].max_row  # from the sheet's <dimension>: an estimate
            finally:
                workbook.close()
        elif fmt.kind == "xls":
            from python_calamine import CalamineWorkbook

            rows = CalamineWorkbook.from_filelike(spool).get_sheet_by_index(0).total_height
        else:
            return None
    except Exception:  # no dimension, odd writer: progress falls back to "unknown"
        return None
    return max(int(rows) - 1, 0) if rows else None


async def create_import(
    db: Database,
    settings: Settings,
    *,
    authority: Authority,
    filename: str,
    stream: Any,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> ImportJob:
    """Store an uploaded file as a new import (status `uploaded`) once it reads as a table."""
    require(authority, contacts.CONTACTS_MANAGE)
    filename = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()[:255] or "upload"
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
        size = await _spool(stream, spool, settings.import_max_bytes)
        spool.seek(0)
        head = spool.read(SNIFF_BYTES)
        fmt = detect_format(head, filename=filename, encoding=encoding or None, delimiter=delimiter or None)
        if fmt.kind == "csv" and encoding and encoding != "utf-16":
            detect_encoding(head)  # a chosen encoding skips detection; binary files are still refused
        spool.seek(0)
        shape = await asyncio.to_thread(_inspect_table, spool, fmt)
        now = utcnow()
        job = ImportJob(
            id=ids.new_id("imp"),
            account_id=authority.account_id,
            created_by=authority.user_id or authority.key_id,
            status="uploaded",
            filename=filename,
            format=fmt.kind,
            encoding=fmt.encoding,
            delimiter=fmt.delimiter,
            size_bytes=size,
            header=shape.header,
            mapping=None,
            options={},
            group_id=None,
            campaign_id=None,
            rows_total=shape.estimate,
            rows_done=0,
            bytes_done=0,
            created_count=0,
            updated_count=0,
            skipped_count=0,
            failed_count=0,
            error=None,
            cancel_requested=False,
            lease_holder=None,
            lease_until=None,
            created_at=now,
            started_at=None,
            finished_at=None,
            updated_at=now,
        )
        spool.seek(0)
        async with db.write() as session:
            session.add(job)
            await session.flush()
            seq = 0
            # Core inserts: ORM objects would keep every chunk in the session until commit
            while block := spool.read(CHUNK_BYTES):
                await session.execute(
                    insert(UploadChunk), [{"owner_id": job.id, "kind": SOURCE, "seq": seq, "data": block}]
                )
                seq += 1
    return job


async def materialize(
    db: Database, job_id: str, *, kind: str = SOURCE, max_chunks: int | None = None
) -> IO[bytes]:
    """The stored file as a temporary file (chunk by chunk: at most one chunk in memory), at offset 0."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (the caller closes it)
    async with db.read() as session:
        seqs = list(
            await session.scalars(
                select(UploadChunk.seq)
                .where(UploadChunk.owner_id == job_id, UploadChunk.kind == kind)
                .order_by(UploadChunk.seq)
            )
        )
        for seq in seqs[:max_chunks]:
            spool.write(
                await session.scalar(
                    select(UploadChunk.data).where(
                        UploadChunk.owner_id == job_id, UploadChunk.kind == kind, UploadChunk.seq == seq
                    )
                )
                or b""
            )
    spool.seek(0)
    return spool


async def preview(db: Database, job: ImportJob, rows: int = PREVIEW_ROWS) -> dict[str, Any]:
    """The header, the first rows (cells cut to 100 characters), the detected format and a guessed mapping."""
    # a CSV's first rows are in its first chunk; a workbook is only readable whole
    spool = await materialize(db, job.id, max_chunks=1 if job.format == "csv" else None)
    try:
        sample = await asyncio.to_thread(
            _first_rows, spool, TableFormat(job.format, job.encoding, job.delimiter), rows + 1
        )
    finally:
        spool.close()
    guess = guess_mapping(job.header)
    return {
        "id": job.id,
        "format": job.format,
        "encoding": job.encoding,
        "delimiter": job.delimiter,
        "header": job.header,
        "rows": [{"row": n, "cells": c} for n, c in sample[1:]],
        "mapping": ImportMapping(guess).to_json() if guess else None,
    }


def _first_rows(spool: IO[bytes], fmt: TableFormat, count: int) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    rows = iter_rows(spool, fmt)
    try:
        for row in rows:
            out.append((row.number, [c[:PREVIEW_CELL_CHARS] for c in row.cells]))
            if len(out) >= count:
                break
    except (TableProblem, UnicodeError):  # the first chunk may end inside a quoted cell: show what was read
        pass
    finally:
        rows.close()
    return out


async def error_file(db: Database, job: ImportJob) -> AsyncIterator[bytes]:
    """The refused rows as CSV (rows.problems_csv's header, then the lines the worker stored), streamed."""
    yield next(problems_csv([]))
    async with db.read() as session:
        seqs = list(
            await session.scalars(
                select(UploadChunk.seq)
                .where(UploadChunk.owner_id == job.id, UploadChunk.kind == ERRORS)
                .order_by(UploadChunk.seq)
            )
        )
        for seq in seqs:
            yield (
                await session.scalar(
                    select(UploadChunk.data).where(
                        UploadChunk.owner_id == job.id, UploadChunk.kind == ERRORS, UploadChunk.seq == seq
                    )
                )
                or b""
            )


# -- reading --------------------------------------------------------------------------------------
@dataclass(slots=True)
class Chunk:
    drafts: list[ContactDraft] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    zones: dict[int, str] = field(default_factory=dict)  # row → time zone cell (when that column is mapped)
    rows: int = 0
    done: bool = False
    bytes_read: int = 0
    fatal: dict[str, Any] | None = None  # the file cannot be read on (the rows before are still committed)


class ChunkReader:
    """The job's rows through check_rows, `size` results at a time (sync: run it in a thread)."""

    def __init__(self, stream: IO[bytes], fmt: TableFormat, job: ImportJob, region: str) -> None:
        self.mapping = mapping_from_json(job.mapping)
        self.stream = stream
        self.fmt = fmt
        self.last_row = 0
        self._zones: dict[int, str] = {}
        self._skip = job.rows_done
        self._rows = iter_rows(stream, fmt)
        self._track = self._tracked(self._rows)
        self._results = check_rows(self._track, self.mapping.columns, region=region, header=job.header)

    def close(self) -> None:
        """End the generators (outermost first) while the file is still open."""
        for generator in (self._results, self._track, self._rows):
            generator.close()

    def _tracked(self, rows: Iterator[SourceRow]) -> Iterator[SourceRow]:
        tz = self.mapping.time_zone
        for row in rows:
            self.last_row = row.number
            if tz is not None and tz < len(row.cells) and row.cells[tz].strip():
                self._zones[row.number] = row.cells[tz].strip()
            yield row

    def next_chunk(self, size: int) -> Chunk:
        chunk = Chunk()
        try:
            while self._skip:  # committed before a restart: checked again (duplicates), not stored again
                item = next(self._results, None)
                if item is None:
                    break
                self._zones.pop(item.row, None)
                self._skip -= 1
            self._take(chunk, size)
        except TableProblem as exc:  # e.g. a line deep in the file that is not CSV
            chunk.fatal = {"code": exc.code, "message": exc.message, "row": self.last_row + 1}
        chunk.done = chunk.rows < size or chunk.fatal is not None
        chunk.bytes_read = self.stream.tell() if self.fmt.kind == "csv" else 0
        return chunk

    def _take(self, chunk: Chunk, size: int) -> None:
        for item in islice(self._results, size):
            chunk.rows += 1
            zone = self._zones.pop(item.row, None)
            if isinstance(item, RowProblem):
                chunk.problems.append(item)
                continue
            if zone is not None:
                if not _valid_zone(zone):
                    column = (self.mapping.time_zone or 0) + 1
                    chunk.problems.append(
                        RowProblem(
                            item.row,
                            column,
                            None,
                            "invalid_time_zone",
                            "Not an IANA time zone such as Asia/Shanghai.",
                            zone[:60],
                        )
                    )
                    continue
                chunk.zones[item.row] = zone
            chunk.drafts.append(item)


def _valid_zone(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
