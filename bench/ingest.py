"""Benchmark: batch API ingest rate and end-to-end rate to final status with the sandbox carrier.

Starts real `hongyan serve` processes (uvicorn, uvloop) on SQLite and on PostgreSQL and drives them over
HTTP from this process. Prints one JSON object.

  .venv/bin/python bench/ingest.py [--batches 10] [--batch-size 10000] [--e2e 20000] [--backends sqlite,postgresql]

ingest: POST /v1/batches with `--batch-size` distinct recipients, `--concurrency` requests in flight,
        workers off (`--no-workers`), so the figure is messages accepted into the store per second.
e2e:    workers on, sandbox delay 0; time from the first POST until every message is final.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("HONGYAN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from smsc import SmscSim  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, db_url: str, workers: bool, split: bool = False,
                 smpp: dict[str, Any] | None = None, own_session: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"server-{self.port}.log"
        env = dict(os.environ, HONGYAN_DATA_DIR=str(data_dir), HONGYAN_DATABASE_URL=db_url,
                   HONGYAN_PORT=str(self.port), HONGYAN_SANDBOX_DELAY_MS="0", HONGYAN_LOG_LEVEL="WARNING",
                   HONGYAN_SANDBOX_OUTCOMES="delivered:100",
                   HONGYAN_BOOTSTRAP_CREDIT_MICROS=str(10**15))  # ¥1,000,000,000: billing never the limit
        if smpp is not None:  # a real SMPP channel to the simulator, and a route that sends everything there
            cli = [sys.executable, "-m", "hongyan.cli"]
            subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
            subprocess.run([*cli, "channel", "add", "sim", *(f"{k}={v}" for k, v in smpp.items())], env=env,
                           check=True, capture_output=True)
            subprocess.run([*cli, "route", "add", "sim"], env=env, check=True, capture_output=True)
        args = [sys.executable, "-m", "hongyan.cli", "serve"] + ([] if workers and not split else ["--no-workers"])
        self.worker: subprocess.Popen[bytes] | None = None
        with self.log.open("ab") as out:
            # own_session: a scheduling group of its own (an autogroup), as a systemd unit has its own cgroup
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=own_session)
            if workers and split:  # API and workers in two processes: one core each
                self.worker = subprocess.Popen([sys.executable, "-m", "hongyan.cli", "worker"], env=env, stdout=out,
                                               stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
        text = self.log.read_text()
        m = re.search(r"API key:\s+(\S+)", text)
        self.key = m.group(1) if m else ""

    def stop(self) -> None:
        for proc in (self.proc, self.worker):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def recipients(batch: int, size: int) -> list[str]:
    """Distinct valid CN mobile numbers, avoiding the sandbox's magic suffixes (…00001–…00008)."""
    head = f"+8613{batch % 10}{batch // 10 % 100:02d}"
    return [f"{head}{i + 100:06d}" for i in range(size)]


async def ingest(server: Server, key: str, batches: int, size: int, concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [json.dumps({"text": "【鸿雁】您的验证码是123456,5分钟内有效。", "recipients": recipients(b, size)}).encode()
              for b in range(batches)]
    latencies: list[float] = []
    accepted = 0
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=300) as c:
        async def one(body: bytes) -> None:
            nonlocal accepted
            async with sem:
                t = time.perf_counter()
                r = await c.post("/v1/batches", content=body, headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - t)
                r.raise_for_status()
                accepted += r.json()["accepted"]

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"messages": accepted, "seconds": round(elapsed, 3), "msg_per_s": round(accepted / elapsed),
            "request_p50_s": round(latencies[len(latencies) // 2], 3), "request_max_s": round(latencies[-1], 3)}


async def end_to_end(server: Server, key: str, total: int, size: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=300) as c:
        t0 = time.perf_counter()
        batch_ids = []
        for b in range(0, total, size):
            r = await c.post("/v1/batches", json={"text": "e2e benchmark", "recipients": recipients(500 + b // size, min(size, total - b))})
            r.raise_for_status()
            batch_ids.append(r.json()["id"])
        accepted_s = time.perf_counter() - t0
        # poll one batch at a time, every 100 ms: counting a 10,000-message batch is real database work
        # that would otherwise compete with the pipeline being measured
        pending = list(batch_ids)
        deadline = time.monotonic() + 600
        while pending and time.monotonic() < deadline:
            if (await c.get(f"/v1/batches/{pending[0]}")).json()["completed"]:
                pending.pop(0)
                continue
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
    return {"messages": total, "seconds": round(elapsed, 3), "msg_per_s": round(total / elapsed),
            "ingest_part_s": round(accepted_s, 3), "all_final": not pending}


def make_db(backend: str, tmp: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / 'bench.db'}", None
    import asyncpg

    name = f"hongyan_bench_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(sql)
        await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}", lambda: asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--e2e", type=int, default=20_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--split", action="store_true", help="end-to-end with `serve --no-workers` + `worker`")
    ap.add_argument("--carrier", default="sandbox", choices=("sandbox", "smpp"),
                    help="end-to-end through the sandbox or over SMPP to tests/peers/smsc-sim")
    ap.add_argument("--binds", type=int, default=2)
    ap.add_argument("--window", type=int, default=100)
    args = ap.parse_args()
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "setup": {"batches": args.batches, "batch_size": args.batch_size, "concurrency": args.concurrency,
                  "e2e_messages": args.e2e, "split_processes": args.split, "cpus": os.cpu_count(), "python": platform.python_version(),
                  "carrier": "sandbox (delay 0)" if args.carrier == "sandbox" else
                  f"smpp to smsc-sim (binds {args.binds}, window {args.window}, receipts at once)"},
        "results": {},
    }
    for backend in args.backends.split(","):
        out: dict[str, Any] = {}
        for phase in ("ingest", "end_to_end"):
            # a fresh database per phase: the ingest phase leaves its messages undelivered (no workers)
            tmp = Path(tempfile.mkdtemp(prefix=f"hy-bench-{backend}-"))
            url, drop = make_db(backend, tmp)
            sim = None
            smpp = None
            if args.carrier == "smpp" and phase == "end_to_end":
                sim = SmscSim(DLR_DELAY_MS=0).start()
                smpp = sim.channel_config(binds=args.binds, window=args.window)
            server = Server(tmp, url, workers=phase == "end_to_end", split=args.split, smpp=smpp)
            try:
                if phase == "ingest":
                    out[phase] = asyncio.run(ingest(server, server.key, args.batches, args.batch_size, args.concurrency))
                else:
                    out[phase] = asyncio.run(end_to_end(server, server.key, args.e2e, args.batch_size))
            finally:
                server.stop()
                if sim is not None:
                    sim.stop()
                if drop:
                    drop()
                shutil.rmtree(tmp, ignore_errors=True)
        result["results"][backend] = out
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
