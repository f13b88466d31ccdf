"""Benchmark: reading and checking customer lists (hongyan.campaigns.tabular + rows). Prints one JSON object.

  .venv/bin/python bench/import.py [--csv-rows 1000000] [--xlsx-rows 200000]

Generates a CSV (GB18030, like a list exported on a Chinese Windows machine: phone, name, order number,
amount, date; 2 % invalid numbers, 1 % duplicates) and an XLSX, then reads each in a child process so its
peak RSS is the reader's own: rows/s through detection, streaming decode, column mapping, number
normalization and typed fields. Storing contacts is not part of this figure (the contacts table comes with
the rest of issue 6); the floor for the CSV is peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def make_csv(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="gb18030", newline="") as f:
        f.write("手机号,姓名,订单号,金额,到期日\n")
        for i in range(rows):
            r = rng.random()
            phone = "12345" if r < 0.02 else f"138{(i - 1 if r < 0.03 and i else i):08d}"
            f.write(f"{phone},客户{i},DD-{i:07d},{rng.randint(1, 99999) / 100},2026-12-{1 + i % 28:02d}\n")


def make_xlsx(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(["手机号", "姓名", "订单号", "金额"])
    for i in range(rows):
        sheet.append([13900000000 + i, f"客户{i}", f"DD-{i:07d}", i % 1000 / 10])
    workbook.save(path)


def measure(path: Path) -> dict[str, Any]:
    """In the child: read and check the whole file; counts, seconds, peak RSS."""
    from hongyan.campaigns.rows import CheckCounts, FieldColumn, check_rows, guess_mapping
    from hongyan.campaigns.tabular import detect_format, iter_rows

    started = time.perf_counter()
    with path.open("rb") as f:
        fmt = detect_format(f.read(65536), filename=path.name)
        f.seek(0)
        rows = iter_rows(f, fmt)
        first = next(rows)
        mapping = guess_mapping(first.cells)
        assert mapping is not None
        if fmt.kind == "csv":
            mapping = type(mapping)(phone=0, name=1, fields=(FieldColumn(2, "订单号"), FieldColumn(3, "金额", "number"),
                                                             FieldColumn(4, "到期日", "date")))
        counts = CheckCounts()
        for _ in check_rows(rows, mapping, region="CN", header=first.cells, counts=counts):
            pass
    seconds = time.perf_counter() - started
    return {"kind": fmt.kind, "encoding": fmt.encoding, "rows": counts.rows, "valid": counts.valid,
            "problems": counts.problems, "duplicates": counts.duplicates, "seconds": round(seconds, 2),
            "rows_per_s": round(counts.rows / seconds), "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=200_000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"csv": Path(tmp) / "list.csv", "xlsx": Path(tmp) / "list.xlsx"}
        make_csv(files["csv"], args.csv_rows)
        make_xlsx(files["xlsx"], args.xlsx_rows)
        for kind, path in files.items():
            out = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True,
                                 check=True)
            results[kind] = {**json.loads(out.stdout), "file_mb": round(path.stat().st_size / 1e6, 1)}
    print(json.dumps({"benchmark": "import", "setup": {"csv_rows": args.csv_rows, "xlsx_rows": args.xlsx_rows,
                                                       "python": platform.python_version(), "cpus": 2},
                      "results": results}))


if __name__ == "__main__":
    main()
