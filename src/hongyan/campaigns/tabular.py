"""Customer lists as rows: CSV in any common encoding and Excel (XLSX streamed, legacy XLS), read one row
at a time with its 1-based row number, never the whole file in memory.

Pure reading, no database: `detect_format` looks at the first bytes (file type, encoding, delimiter);
`iter_rows` yields `SourceRow`s; a row that cannot be read as text in the chosen encoding is still yielded,
marked, so the caller reports it (row number and column) and goes on with the rest. File-level problems
(empty, binary garbage, unknown type) raise `TableProblem` with a stable code.

Encodings (the lists Chinese businesses export): UTF-8 with or without BOM, UTF-16 with BOM (Excel's
"Unicode text"), and GB18030 — a superset of GBK and GB2312, so it reads all three.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import IO

from hongyan.core.errors import Unprocessable

KINDS = ("csv", "xlsx", "xls")
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "gb18030")
DELIMITERS = (",", ";", "\t", "|")
MAX_CELL_CHARS = 1_000  # longer is a problem of that cell, reported (the rest of the row still counts)
SNIFF_BYTES = 64 * 1024
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE2 compound document (BIFF8 .xls)
_CSV_FIELD_LIMIT = 16 * 1024 * 1024  # the csv module's own 128 KiB limit would abort the file on one huge cell
REPLACEMENT = "\ufffd"


class TableProblem(Unprocessable):
    """The file as a whole cannot be read (nothing is imported): a stable code, a message, field `file` (or
    `encoding` when the chosen encoding is what cannot read it)."""

    def __init__(self, code: str, message: str, *, field: str = "file") -> None:
        super().__init__(code, message, field=field)


def _no_utf16_bom() -> TableProblem:
    return TableProblem("file_unreadable", "UTF-16 was chosen but the file does not start with a UTF-16 byte-order "
                        "mark, so its byte order is unknown; choose another encoding or let it be detected.",
                        field="encoding")


@dataclass(frozen=True, slots=True)
class TableFormat:
    kind: str  # csv | xlsx | xls
    encoding: str | None = None  # csv only
    delimiter: str | None = None  # csv only


@dataclass(slots=True)
class SourceRow:
    """One row as read: `number` is the row in the file (1 = the first line or sheet row)."""

    number: int
    cells: list[str]
    undecodable: bool = False  # bytes that are not text in the file's encoding (shown as U+FFFD)
    too_long: list[int] = field(default_factory=list)  # indexes of cells over MAX_CELL_CHARS (cut there)


# -- format detection -----------------------------------------------------------------------------
def detect_format(head: bytes, *, filename: str = "", encoding: str | None = None,
                  delimiter: str | None = None) -> TableFormat:
    """From the first bytes of a file (and its name, as a hint): type, encoding and delimiter. A person's
    choice of `encoding` or `delimiter` wins over detection."""
    if not head:
        raise TableProblem("file_empty", "The file is empty.")
    name = filename.lower()
    if head.startswith(_XLSX_MAGIC):
        return TableFormat("xlsx")
    if head.startswith(_XLS_MAGIC):
        return TableFormat("xls")
    if name.endswith((".xlsx", ".xls")):
        raise TableProblem("file_unreadable", "The file is named as Excel but is not an Excel workbook.")
    if encoding is not None and encoding not in ENCODINGS:
        raise Unprocessable("invalid_encoding_choice", f"Encoding is one of {', '.join(ENCODINGS)}.", field="encoding")
    if encoding == "utf-16" and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _no_utf16_bom()  # Python's utf-16 decoder refuses a stream without one (a raw UnicodeError)
    found = encoding or detect_encoding(head)
    text = head.decode(found, errors="replace")
    if delimiter is not None and delimiter not in DELIMITERS:
        raise Unprocessable("invalid_delimiter", "The delimiter is one of , ; tab |.", field="delimiter")
    return TableFormat("csv", found, delimiter or detect_delimiter(text))


def detect_encoding(head: bytes) -> str:
    """BOMs first; then UTF-8 (allowing a sequence cut at the end of the sample, and a few broken bytes
    among much valid UTF-8); else GB18030.
    Binary data (NUL bytes, many control characters) is refused: it is not a list."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:SNIFF_BYTES]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 13))
    if b"\x00" in sample or controls > len(sample) // 100 + 2:
        raise TableProblem("file_not_text", "The file is not text (it looks binary): export the list as CSV or "
                           "XLSX and upload that.")
    for cut in range(4):  # a multibyte character may be cut by the sample's end
        try:
            sample[: len(sample) - cut].decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError as exc:
            if exc.start < len(sample) - 4:
                break
    # mostly UTF-8 with a few broken bytes (a bad row) stays UTF-8, and the bad rows are reported; GBK text
    # read as UTF-8 breaks on nearly every Chinese character
    as_utf8 = sample.decode("utf-8", errors="replace")
    broken = as_utf8.count(REPLACEMENT)
    multibyte = sum(1 for ch in as_utf8 if ord(ch) > 127 and ch != REPLACEMENT)
    if broken * 2 < multibyte:
        return "utf-8"
    return "gb18030"


def detect_delimiter(text: str) -> str:
    """The candidate that splits the first lines into the same number (>1) of fields most often."""
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may end in the middle of a line
    best, best_score = ",", 0
    for candidate in DELIMITERS:
        counts = [len(next(csv.reader([line], delimiter=candidate))) for line in lines]
        if not counts or max(counts) < 2:
            continue
        common = max(set(counts), key=counts.count)
        score = counts.count(common) * (common > 1)
        if score > best_score:
            best, best_score = candidate, score
    return best


# -- reading --------------------------------------------------------------------------------------
def iter_rows(stream: IO[bytes], fmt: TableFormat, *, max_cell_chars: int = MAX_CELL_CHARS) -> Iterator[SourceRow]:
    """Rows of the first sheet (or the CSV), streamed. Trailing empty cells are dropped; empty rows skipped."""
    if fmt.kind == "csv":
        rows = _csv_rows(stream, fmt)
    elif fmt.kind == "xlsx":
        rows = _xlsx_rows(stream)
    elif fmt.kind == "xls":
        rows = _xls_rows(stream)
    else:
        raise TableProblem("unsupported_file_type", "Upload a CSV, XLSX or XLS file.")
    for number, cells in rows:
        while cells and not cells[-1].strip():
            cells.pop()
        if not cells:
            continue
        row = SourceRow(number, cells)
        for i, cell in enumerate(cells):
            if REPLACEMENT in cell:
                row.undecodable = True
            if len(cell) > max_cell_chars:
                row.too_long.append(i)
                cells[i] = cell[:max_cell_chars]
        yield row


def _csv_rows(stream: IO[bytes], fmt: TableFormat) -> Iterator[tuple[int, list[str]]]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    text = io.TextIOWrapper(stream, encoding=fmt.encoding or "utf-8", errors="replace", newline="")
    try:
        reader = csv.reader(text, delimiter=fmt.delimiter or ",")
        try:
            for cells in reader:
                yield reader.line_num, cells
        except csv.Error as exc:  # e.g. a NUL byte deep in the file, or a cell over 16 MiB
            raise TableProblem("file_unreadable", f"Line {reader.line_num + 1} cannot be read as CSV ({exc}); "
                               "the rows before it were read.") from exc
        # a TableFormat made without detect_format: utf-16 for a stream without a byte-order mark
        except UnicodeError as exc:
            raise _no_utf16_bom() from exc
    finally:
        text.detach()  # leave the caller's stream open


def cell_text(value: object) -> str:
    """An Excel value as the text a person sees: 13800138000.0 → "13800138000", dates as ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip() if isinstance(value, str) else str(value)


def _xlsx_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """openpyxl in read-only mode: rows are parsed from the sheet's XML as they are iterated."""
    import zipfile

    from openpyxl import load_workbook

    try:
        workbook = load_workbook(stream, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise TableProblem("file_unreadable", f"The workbook cannot be opened ({type(exc).__name__}).") from exc
    try:
        sheet = workbook.worksheets[0]
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield number, [cell_text(v) for v in values]
    finally:
        workbook.close()


def _xls_rows(stream: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """Legacy .xls (BIFF) through calamine, a maintained reader (Rust); such files are small (65,536 rows)."""
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_filelike(stream)
        sheet = workbook.get_sheet_by_index(0)
    except Exception as exc:  # calamine raises its own error types for broken files
        raise TableProblem("file_unreadable", f"The workbook cannot be opened ({type(exc).__name__}).") from exc
    for number, values in enumerate(sheet.iter_rows(), start=1):
        yield number, [cell_text(v) for v in values]
