"""From table rows to contact drafts: the column mapping a person chose (or one guessed from the header),
typed fields, and a precise problem for every row that cannot be imported (row, column, code, message).

Pure, streaming: `check_rows` takes rows one at a time and yields either a `ContactDraft` or a
`RowProblem`, so a file with half its numbers wrong still imports the other half, and the problems make
the downloadable error file (`problems_csv`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from hongyan.campaigns.tabular import SourceRow
from hongyan.core.errors import Unprocessable
from hongyan.messaging.numbers import NumberProblem, normalize

FIELD_TYPES = ("text", "number", "date")
FIELD_NAME = re.compile(r"^[\w\u4e00-\u9fff]{1,40}$")  # usable as {name} in message templates
# header names a person is likely to have used, in Chinese and English (lower-cased, no spaces)
PHONE_HEADERS = {"手机", "手机号", "手机号码", "电话", "电话号码", "号码", "phone", "mobile", "phonenumber",
                 "mobilenumber", "msisdn", "tel", "number", "cellphone"}
NAME_HEADERS = {"姓名", "名字", "客户姓名", "联系人", "name", "fullname", "customer", "contact"}
TAG_HEADERS = {"标签", "tags", "tag"}
TAG_SPLIT = re.compile(r"[,;，；、|]")


@dataclass(frozen=True, slots=True)
class FieldColumn:
    index: int  # 0-based column
    name: str  # the contact field, e.g. 订单号 → {订单号} in templates
    type: str = "text"


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    phone: int
    name: int | None = None
    tags: int | None = None
    fields: tuple[FieldColumn, ...] = ()
    header_rows: int = 1  # rows at the top that are not contacts

    def validate(self, width: int | None = None) -> None:
        used = [self.phone] + [c for c in (self.name, self.tags) if c is not None] + [f.index for f in self.fields]
        if any(i < 0 or (width is not None and i >= width) for i in used):
            raise Unprocessable("column_out_of_range", "A mapped column is not in the file.", field="mapping")
        if len(set(used)) != len(used):
            raise Unprocessable("column_mapped_twice", "Each column can be mapped once.", field="mapping")
        names = [f.name for f in self.fields]
        for i, f in enumerate(self.fields):
            if not FIELD_NAME.match(f.name):
                raise Unprocessable("invalid_field_name", f"Field name '{f.name[:40]}': letters, digits, _ or "
                                    "Chinese, up to 40.", field=f"mapping.fields[{i}].name")
            if f.type not in FIELD_TYPES:
                raise Unprocessable("invalid_field_type", f"Field type is one of {', '.join(FIELD_TYPES)}.",
                                    field=f"mapping.fields[{i}].type")
            if names.count(f.name) > 1:
                raise Unprocessable("duplicate_field_name", f"Field '{f.name}' is mapped twice.",
                                    field=f"mapping.fields[{i}].name")


def _key(header: str) -> str:
    return re.sub(r"[\s_\-]", "", header).lower()


def guess_mapping(header: list[str]) -> ColumnMapping | None:
    """A mapping from a header row (phone, name, tags by their usual names; the rest as text fields), or
    None when no column looks like the phone number (then the person picks it)."""
    keys = [_key(h) for h in header]
    phone = next((i for i, k in enumerate(keys) if k in PHONE_HEADERS), None)
    if phone is None:
        return None
    name = next((i for i, k in enumerate(keys) if k in NAME_HEADERS and i != phone), None)
    tags = next((i for i, k in enumerate(keys) if k in TAG_HEADERS and i not in (phone, name)), None)
    fields = tuple(
        FieldColumn(i, h.strip()) for i, h in enumerate(header)
        if i not in (phone, name, tags) and FIELD_NAME.match(h.strip() or "-")
    )
    return ColumnMapping(phone=phone, name=name, tags=tags, fields=fields, header_rows=1)


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int
    column: int | None  # 1-based, as spreadsheets count (None: the whole row)
    column_name: str | None
    code: str
    message: str
    value: str = ""


@dataclass(slots=True)
class ContactDraft:
    row: int
    phone: str  # E.164
    country: str | None
    name: str | None
    tags: list[str] = field(default_factory=list)
    fields: dict[str, str | Decimal | date] = field(default_factory=dict)


@dataclass(slots=True)
class CheckCounts:
    rows: int = 0
    valid: int = 0
    problems: int = 0
    duplicates: int = 0


def parse_number(text: str) -> Decimal:
    cleaned = text.replace(",", "").replace("，", "").strip()
    value = Decimal(cleaned)
    if not value.is_finite():
        raise InvalidOperation
    return value


DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")


def parse_date(text: str) -> date:
    text = text.strip()
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text).date()  # "2026-11-25 08:00:00" from Excel date-times
    except ValueError:
        raise ValueError(text) from None


def check_rows(
    rows: Iterable[SourceRow], mapping: ColumnMapping, *, region: str, header: list[str] | None = None,
    counts: CheckCounts | None = None,
) -> Iterator[ContactDraft | RowProblem]:
    """Each data row → a draft, or the first problem that stops it (one per row: the row is fixed and sent
    again as a whole). The same number twice in a file keeps the first row."""
    counts = counts if counts is not None else CheckCounts()
    names = header or []

    def col(i: int | None) -> str | None:
        return None if i is None else (names[i] if i < len(names) and names[i] else f"column {i + 1}")

    seen: dict[str, int] = {}
    for row in rows:
        if row.number <= mapping.header_rows:
            continue
        counts.rows += 1
        problem = _problem(row, mapping, col)
        if problem is None:
            raw = row.cells[mapping.phone] if mapping.phone < len(row.cells) else ""
            try:
                number = normalize(raw, region)
            except NumberProblem as exc:
                problem = RowProblem(row.number, mapping.phone + 1, col(mapping.phone), exc.code, exc.message, raw)
            else:
                first = seen.get(number.e164)
                if first is not None:
                    counts.duplicates += 1
                    problem = RowProblem(row.number, mapping.phone + 1, col(mapping.phone), "duplicate_phone_number",
                                         f"{number.e164} is already on row {first}; that row is kept.", raw)
                else:
                    draft = _draft(row, mapping, number.e164, number.region, col)
                    if isinstance(draft, RowProblem):
                        problem = draft
                    else:
                        seen[number.e164] = row.number
                        counts.valid += 1
                        yield draft
                        continue
        counts.problems += 1
        yield problem


ColumnName = Callable[[int | None], str | None]  # column index → its header name for messages


def _problem(row: SourceRow, mapping: ColumnMapping, name_of: ColumnName) -> RowProblem | None:
    if row.undecodable:
        bad = next(i for i, c in enumerate(row.cells) if "\ufffd" in c)
        return RowProblem(row.number, bad + 1, name_of(bad), "invalid_text_encoding",
                          "This row has bytes that are not text in the file's encoding; save the file as UTF-8 "
                          "or choose its encoding.", row.cells[bad][:60])
    if row.too_long:
        i = row.too_long[0]
        return RowProblem(row.number, i + 1, name_of(i), "cell_too_long",
                          "This cell is longer than 1,000 characters.", row.cells[i][:60])
    if mapping.phone >= len(row.cells) or not row.cells[mapping.phone].strip():
        return RowProblem(row.number, mapping.phone + 1, name_of(mapping.phone), "phone_number_missing",
                          "No phone number in this row.")
    return None


def _draft(row: SourceRow, mapping: ColumnMapping, e164: str, country: str | None,
           col: ColumnName) -> ContactDraft | RowProblem:
    def cell(i: int | None) -> str:
        return row.cells[i].strip() if i is not None and i < len(row.cells) else ""

    draft = ContactDraft(row.number, e164, country, cell(mapping.name) or None)
    if mapping.tags is not None:
        draft.tags = sorted({t.strip() for t in TAG_SPLIT.split(cell(mapping.tags)) if t.strip()})
    for f in mapping.fields:
        text = cell(f.index)
        if not text:
            continue
        try:
            draft.fields[f.name] = parse_number(text) if f.type == "number" else parse_date(text) if f.type == "date" else text
        except (InvalidOperation, ValueError):
            expected = "a number" if f.type == "number" else "a date such as 2026-11-25"
            return RowProblem(row.number, f.index + 1, col(f.index), f"invalid_{f.type}",
                              f"{f.name} should be {expected}.", text[:60])
    return draft


def problems_csv(problems: Iterable[RowProblem]) -> Iterator[bytes]:
    """The error file: one line per refused row, UTF-8 with BOM so Excel opens Chinese text correctly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "column", "column_name", "code", "message", "value"])
    yield ("\ufeff" + buffer.getvalue()).encode()
    for p in problems:
        buffer.seek(0)
        buffer.truncate()
        # a cell starting with = + - @ would run as a formula in a spreadsheet: quote it
        value = "'" + p.value if p.value[:1] in ("=", "+", "-", "@") else p.value
        writer.writerow([p.row, p.column or "", p.column_name or "", p.code, p.message, value])
        yield buffer.getvalue().encode()
