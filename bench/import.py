"""Benchmark: reading and checking customer lists (hongyan.campaigns.tabular + rows). Prints one JSON object.

  .venv/bin/python bench/import.py [--csv-rows 1000000] [--xlsx-rows 200000]
  .venv/bin/python bench/import.py --job [--csv-rows 1000000] [--backend postgresql]


Generates a CSV (GB18030, like a list exported on a Chinese Windows machine: phone, name, order number,
amount, date; 2 % invalid numbers, 1 % duplicates) and an XLSX, then reads each in a child process so its
peak RSS is the reader's own: rows/s through detection, streaming decode, column mapping, number
normalization and typed fields; the floor for the CSV is peak RSS under 300 MB.

--job: the whole import job instead, in one child process on a fresh database: the upload (spooled, stored
sealed in chunks), then import_worker.work_once to the end (contacts upserted, error file written, progress
committed per chunk); rows/s of the worker, seconds of the upload, peak RSS of the process.
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
            mapping = type(mapping)(
                phone=0,
                name=1,
                fields=(
                    FieldColumn(2, "订单号"),
                    FieldColumn(3, "金额", "number"),
                    FieldColumn(4, "到期日", "date"),
                ),
            )
        counts = CheckCounts()
        for _ in check_rows(rows, mapping, region="CN", header=first.cells, counts=counts):
            pass
    seconds = time.perf_counter() - started
    return {
        "kind": fmt.kind,
        "encoding": fmt.encoding,
        "rows": counts.rows,
        "valid": counts.valid,
        "problems": counts.problems,
        "duplicates": counts.duplicates,
        "seconds": round(seconds, 2),
        "rows_per_s": round(counts.rows / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure_job(path: Path, url: str) -> dict[str, Any]:
    """In the child: upload the file as an import, start it, run the worker to the end."""
    import asyncio

    return asyncio.run(_measure_job(path, url))


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def _measure_job(path: Path, url: str) -> dict[str, Any]:
    from hongyan.accounts.permissions import Authority
    from hongyan.accounts.service import create_account
    from hongyan.campaigns import import_files, import_worker, imports
    from hongyan.campaigns.models import ImportJob
    from hongyan.config import Settings
    from hongyan.core import crypto
    from hongyan.db.engine import Database

    settings = Settings(data_dir=path.parent, database_url=url)
    crypto.configure(crypto.keyring_from_settings(settings))
    db = Database(url, pool_size=2)
    async with db.write() as session:
        account = await create_account(session, name="bench")
    who = Authority(account_id=account.id, user_id="usr_bench", role="owner")
    started = time.perf_counter()
    with path.open("rb") as f:
        job = await import_files.create_import(db, settings, authority=who, filename=path.name, stream=f)
    upload_s = time.perf_counter() - started
    rss_upload = _rss_mb()
    mapping = {
        "phone": 0,
        "name": 1,
        "fields": [
            {"index": 2, "name": "订单号"},
            {"index": 3, "name": "金额", "type": "number"},
            {"index": 4, "name": "到期日", "type": "date"},
        ],
    }
    await imports.start_import(db, settings, authority=who, job_id=job.id, mapping=mapping)
    started = time.perf_counter()
    while await import_worker.work_once(db, settings, holder="bench"):
        pass
    work_s = time.perf_counter() - started
    async with db.read() as session:
        done = await session.get(ImportJob, job.id)
    await db.dispose()
    assert done is not None and done.status == "completed", done and done.status
    return {
        "kind": "csv job",
        "backend": url.split("+")[0].split(":")[0],
        "rows": done.rows_done,
        "created": done.created_count,
        "skipped": done.skipped_count,
        "failed": done.failed_count,
        "chunk_rows": settings.import_chunk_rows,
        "upload_s": round(upload_s, 2),
        "work_s": round(work_s, 2),
        "rows_per_s": round(done.rows_done / work_s),
        "peak_rss_upload_mb": rss_upload,
        "peak_rss_mb": _rss_mb(),
    }


def run_job_bench(args: argparse.Namespace) -> None:
    from hongyan.db.migrate import upgrade

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest import make_db

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.csv"
        make_csv(path, args.csv_rows)
        url, drop = make_db(args.backend, Path(tmp))
        try:
            upgrade(url)
            out = subprocess.run(
                [sys.executable, __file__, "--measure-job", str(path), "--db-url", url],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            result = {
                **json.loads(out.stdout.strip().splitlines()[-1]),
                "file_mb": round(path.stat().st_size / 1e6, 1),
            }
        finally:
            if drop is not None:
                drop()
    print(
        json.dumps(
            {
                "benchmark": "import job",
                "setup": {
                    "csv_rows": args.csv_rows,
                    "backend": args.backend,
                    "python": platform.python_version(),
                    "cpus": 2,
                },
                "results": {"csv_job": result},
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=200_000)
    parser.add_argument(
        "--job", action="store_true", help="the whole import job (upload + worker) on a database"
    )
    parser.add_argument("--backend", default="postgresql", choices=("postgresql", "sqlite"))
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure-job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    if args.measure_job:
        print(json.dumps(measure_job(args.measure_job, args.db_url)))
        return
    if args.job:
        run_job_bench(args)
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"csv": Path(tmp) / "list.csv", "xlsx": Path(tmp) / "list.xlsx"}
        make_csv(files["csv"], args.csv_rows)
        make_xlsx(files["xlsx"], args.xlsx_rows)
        for kind, path in files.items():
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=True
            )
            results[kind] = {**json.loads(out.stdout), "file_mb": round(path.stat().st_size / 1e6, 1)}
    print(
        json.dumps(
            {
                "benchmark": "import",
                "setup": {
                    "csv_rows": args.csv_rows,
                    "xlsx_rows": args.xlsx_rows,
                    "python": platform.python_version(),
                    "cpus": 2,
                },
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
