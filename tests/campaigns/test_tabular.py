"""Reading customer lists: encodings, delimiters, Excel, bad files, and per-row problems with row and column."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.campaigns.rows import (
    CheckCounts,
    ColumnMapping,
    ContactDraft,
    FieldColumn,
    RowProblem,
    check_rows,
    guess_mapping,
    problems_csv,
)
from hongyan.campaigns.tabular import TableFormat, TableProblem, detect_format, iter_rows

HEADER = "手机号,姓名,订单号,金额,到期日\n"


def read(data: bytes, **choice: str) -> tuple[list[list[str]], list[int]]:
    fmt = detect_format(data[:65536], **choice)
    rows = list(iter_rows(io.BytesIO(data), fmt))
    return [r.cells for r in rows], [r.number for r in rows]


def check(data: bytes, *, mapping: ColumnMapping | None = None, filename: str = "") -> tuple[
        list[ContactDraft], list[RowProblem], CheckCounts]:
    fmt = detect_format(data[:65536], filename=filename)
    rows = list(iter_rows(io.BytesIO(data), fmt))
    header = rows[0].cells
    mapping = mapping or guess_mapping(header)
    assert mapping is not None
    counts = CheckCounts()
    out = list(check_rows(rows, mapping, region="CN", header=header, counts=counts))
    return ([d for d in out if isinstance(d, ContactDraft)], [p for p in out if isinstance(p, RowProblem)], counts)


@pytest.mark.parametrize("encoding, bom, expected", [
    ("utf-8", b"", "utf-8"),
    ("utf-8", b"\xef\xbb\xbf", "utf-8-sig"),
    ("gbk", b"", "gb18030"),
    ("gb18030", b"", "gb18030"),
    ("utf-16", b"", "utf-16"),  # Python's utf-16 writes the BOM itself
])
def test_encodings_are_detected(encoding: str, bom: bytes, expected: str) -> None:
    text = HEADER + "13800138000,张三,DD-001,12.50,2026-12-01\n13900139000,李四,DD-002,8,2027/01/31\n"
    data = bom + text.encode(encoding)
    assert detect_format(data).encoding == expected
    cells, numbers = read(data)
    assert cells[1] == ["13800138000", "张三", "DD-001", "12.50", "2026-12-01"]
    assert cells[2][1] == "李四" and numbers == [1, 2, 3]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters_are_detected(delimiter: str) -> None:
    rows = [["手机号", "姓名", "备注"], ["13800138000", "张三", "a, b"], ["13900139000", "李四", ""]]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    data = buffer.getvalue().encode()
    assert detect_format(data).delimiter == delimiter
    assert read(data)[0][1] == ["13800138000", "张三", "a, b"]


def test_a_chosen_encoding_and_delimiter_win() -> None:
    data = "手机号;姓名\n13800138000;张三\n".encode("gbk")
    assert read(data, encoding="gb18030", delimiter=";")[0][1] == ["13800138000", "张三"]
    # the wrong delimiter chosen by hand: one column, so no phone header can be found in it
    cells, _ = read(data, encoding="gb18030", delimiter=",")
    assert cells[0] == ["手机号;姓名"] and guess_mapping(cells[0]) is None


def test_binary_garbage_and_empty_files_are_refused() -> None:
    with pytest.raises(TableProblem) as empty:
        detect_format(b"")
    assert empty.value.code == "file_empty" and empty.value.field == "file"
    with pytest.raises(TableProblem) as binary:
        detect_format(bytes(range(256)) * 20)
    assert binary.value.code == "file_not_text"
    with pytest.raises(TableProblem) as fake:
        detect_format(b"just text", filename="list.xlsx")
    assert fake.value.code == "file_unreadable"


@pytest.mark.parametrize("data", [
    (HEADER + "13800138000,张三\n").encode("utf-16-le"),  # UTF-16 without its byte-order mark
    (HEADER + "13800138000,张三\n").encode("utf-8-sig"),
    b"phone\n13800138000\n",
])
def test_utf16_chosen_without_a_byte_order_mark_is_a_file_problem(data: bytes) -> None:
    with pytest.raises(TableProblem) as chosen:
        detect_format(data, encoding="utf-16")
    assert (chosen.value.code, chosen.value.field) == ("file_unreadable", "encoding")
    assert "byte-order mark" in chosen.value.message
    with pytest.raises(TableProblem) as reading:  # a format made without detect_format: the same problem
        list(iter_rows(io.BytesIO(data), TableFormat("csv", "utf-16", ",")))
    assert (reading.value.code, reading.value.field) == ("file_unreadable", "encoding")
    with_bom = b"\xff\xfe" + (HEADER + "13800138000,张三\n").encode("utf-16-le")
    assert read(with_bom, encoding="utf-16")[0][1] == ["13800138000", "张三"]


def test_half_the_numbers_invalid_the_other_half_imported() -> None:
    lines = [HEADER.strip()]
    for i in range(100):
        phone = f"1380013{i:04d}" if i % 2 == 0 else f"12{i:03d}"  # odd rows: too short
        lines.append(f"{phone},客户{i},DD-{i},1.5,2026-12-01")
    drafts, problems, counts = check(("\n".join(lines) + "\n").encode())
    assert (counts.rows, counts.valid, counts.problems) == (100, 50, 50)
    assert [p.row for p in problems] == list(range(3, 102, 2))  # file rows: header is row 1
    assert {p.code for p in problems} == {"invalid_phone_number"}
    assert problems[0].column == 1 and problems[0].column_name == "手机号" and problems[0].value == "12001"
    assert drafts[0].phone == "+8613800130000" and drafts[0].name == "客户0"


def test_duplicates_missing_numbers_typed_fields_and_huge_cells() -> None:
    text = (HEADER
            + "13800138000,张三,DD-1,12.50,2026-12-01\n"
            + "+86 138 0013 8000,张三二,DD-2,1,2026-12-01\n"  # the same number written differently
            + ",王五,DD-3,1,2026-12-01\n"
            + "13900139000,赵六,DD-4,十二,2026-12-01\n"
            + "13700137000,钱七,DD-5,3,明天\n"
            + "13600136000," + "长" * 5000 + ",DD-6,3,2026-12-01\n"
            + "13500135000,孙八,DD-7,\"1,234.5\",2026年12月1日\n")
    mapping = ColumnMapping(phone=0, name=1, fields=(FieldColumn(2, "订单号"), FieldColumn(3, "金额", "number"),
                                                     FieldColumn(4, "到期日", "date")))
    drafts, problems, counts = check(text.encode(), mapping=mapping)
    assert [(p.row, p.column, p.code) for p in problems] == [
        (3, 1, "duplicate_phone_number"), (4, 1, "phone_number_missing"), (5, 4, "invalid_number"),
        (6, 5, "invalid_date"), (7, 2, "cell_too_long")]
    assert "row 2" in problems[0].message and counts.duplicates == 1
    assert [d.row for d in drafts] == [2, 8]
    assert drafts[0].fields == {"订单号": "DD-1", "金额": Decimal("12.50"), "到期日": date(2026, 12, 1)}
    assert drafts[1].fields["金额"] == Decimal("1234.5") and drafts[1].fields["到期日"] == date(2026, 12, 1)


def test_undecodable_row_reported_and_the_rest_read() -> None:
    data = HEADER.encode() + "13800138000,张三,DD-1,1,2026-12-01\n".encode() + b"13900139000,\xff\xfe\xfa,DD-2,1,2026-12-01\n"
    drafts, problems, _ = check(data + "13700137000,李四,DD-3,1,2026-12-01\n".encode())
    assert [d.row for d in drafts] == [2, 4]
    assert (problems[0].row, problems[0].column, problems[0].code) == (3, 2, "invalid_text_encoding")


def test_header_guess() -> None:
    mapping = guess_mapping(["姓名", " 手机号码 ", "标签", "订单号", ""])
    assert mapping == ColumnMapping(phone=1, name=0, tags=2, fields=(FieldColumn(3, "订单号"),), header_rows=1)
    assert guess_mapping(["a", "b"]) is None


def test_mapping_checks() -> None:
    with pytest.raises(Exception) as twice:
        ColumnMapping(phone=0, name=0).validate(3)
    assert getattr(twice.value, "code", "") == "column_mapped_twice"
    with pytest.raises(Exception) as outside:
        ColumnMapping(phone=5).validate(3)
    assert getattr(outside.value, "code", "") == "column_out_of_range"
    with pytest.raises(Exception) as bad_name:
        ColumnMapping(phone=0, fields=(FieldColumn(1, "a b"),)).validate(3)
    assert getattr(bad_name.value, "field", "") == "mapping.fields[0].name"


def test_xlsx_is_streamed_with_numbers_and_dates_as_a_person_sees_them(tmp_path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(["手机号", "姓名", "金额", "到期日"])
    sheet.append([13800138000, "张三", 12.5, datetime(2026, 12, 1)])  # Excel keeps the number as a float
    sheet.append(["+8613900139000", "李四", 3, datetime(2026, 12, 1, 8, 30)])
    sheet.append([None, None, None, None])  # an empty row is skipped
    path = tmp_path / "list.xlsx"
    workbook.save(path)
    data = path.read_bytes()
    assert detect_format(data[:16], filename="list.xlsx").kind == "xlsx"
    cells, numbers = read(data)
    assert cells == [["手机号", "姓名", "金额", "到期日"], ["13800138000", "张三", "12.5", "2026-12-01"],
                     ["+8613900139000", "李四", "3", "2026-12-01 08:30:00"]]
    assert numbers == [1, 2, 3]
    drafts, problems, _ = check(data)
    assert [d.phone for d in drafts] == ["+8613800138000", "+8613900139000"] and not problems


def test_broken_xlsx_is_a_file_problem() -> None:
    with pytest.raises(TableProblem) as broken:
        list(iter_rows(io.BytesIO(b"PK\x03\x04" + b"\x00" * 100), detect_format(b"PK\x03\x04")))
    assert broken.value.code == "file_unreadable"


def test_error_file_is_excel_friendly() -> None:
    problems = [RowProblem(3, 1, "手机号", "invalid_phone_number", "不是有效号码", "=HYPERLINK(1)")]
    data = b"".join(problems_csv(problems))
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows == [["row", "column", "column_name", "code", "message", "value"],
                    ["3", "1", "手机号", "invalid_phone_number", "不是有效号码", "'=HYPERLINK(1)"]]


cell_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(cell_text, min_size=2, max_size=4), min_size=1, max_size=8),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030", "utf-16"]))
def test_csv_round_trip(rows: list[list[str]], encoding: str) -> None:
    """Whatever a spreadsheet writes (quotes, newlines and delimiters inside cells, any characters) reads
    back cell for cell, in each supported encoding."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["a", "b"], *rows])
    data = buffer.getvalue().encode(encoding)
    fmt = detect_format(data[:65536], encoding=encoding, delimiter=",")
    got = [r.cells for r in iter_rows(io.BytesIO(data), fmt, max_cell_chars=100)]
    expected = [list(r) for r in [["a", "b"], *rows]]
    for r in expected:
        while r and not r[-1].strip():
            r.pop()
    assert got == [r for r in expected if r]
