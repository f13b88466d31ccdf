"""Benchmark: what one verification start costs the API — SQL statements, CPU and wall time per request.

Setup: a fresh PostgreSQL database (migrated), one funded and verified account with an approved default
signature and an API key, the app in this process (`create_app(run_workers=False)`: only the API path is
measured, no relay or dispatchers), driven through httpx's ASGI transport. Per-IP, per-key and pumping
thresholds are lifted so that every request is a real start; every request goes to its own number.

Per endpoint (POST /v1/verify, then POST /v1/messages with message_type "verification" for comparison):
  - "sequential": --requests calls one after the other: statements per request (a `before_cursor_execute`
    listener on the engine), transactions per request (`begin` events), CPU ms per request
    (time.process_time: server and the in-process client together), wall p50/p99;
  - "concurrent": the same number of calls, --concurrency at a time: wall p50/p99 and throughput.
A "floor" line gives the same figures for GET /v1/balance-like trivial work (authentication only, `GET
/health`), i.e. what the in-process client and the framework cost without any verify work.

  .venv/bin/python bench/verify_cost.py [--requests 500] [--concurrency 20] [--workers]

--workers runs the embedded workers too (relay, dispatch, sandbox carrier) — then CPU includes theirs.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from campaign import drop_database, fresh_database  # noqa: E402  (bench helpers; puts tests/ and src/ on the path)
from sqlalchemy import event  # noqa: E402

from hongyan.config import Settings  # noqa: E402
from hongyan.db.engine import Database  # noqa: E402
from hongyan.db.migrate import upgrade  # noqa: E402
from support import approved_signature, make_account  # noqa: E402  (tests/support.py)

# test-only keys when none are configured (the bench database is thrown away)
os.environ.setdefault("HONGYAN_ENCRYPTION_KEYS", "b1:" + "YmVuY2gtb25seS1lbmNyeXB0aW9uLWtleS0zMi1ieXQ")
os.environ.setdefault("HONGYAN_BLIND_INDEX_KEY", "YmVuY2gtb25seS1ibGluZC1pbmRleC1rZXktMzItYnl0")
OTP_TEXT = "您的验证码是{code}，5分钟内有效。请勿泄露给他人。"


class Counter:
    """Statements and transactions on one engine (sync events: asyncpg runs them in the greenlet)."""

    def __init__(self, db: Database) -> None:
        self.statements = 0
        self.transactions = 0
        self.by_text: dict[str, int] = {}
        self.trace = False
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._on_execute)
        event.listen(db.engine.sync_engine, "begin", self._on_begin)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements += 1
        if self.trace:
            key = " ".join(statement.split())[:160]
            self.by_text[key] = self.by_text.get(key, 0) + 1

    def _on_begin(self, _conn: Any) -> None:
        self.transactions += 1


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return round(v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))], 2)


def body_for(endpoint: str, to: str, i: int) -> dict[str, Any]:
    if endpoint == "/v1/verify":  # every end user has an address of their own (the per-IP limit)
        return {"to": to, "locale": "zh-CN", "device_ip": f"198.18.{i // 256 % 256}.{i % 256}"}
    return {"to": to, "text": OTP_TEXT.format(code=f"{i % 1_000_000:06d}"), "message_type": "verification"}


async def measure(
    client: httpx.AsyncClient, counter: Counter, endpoint: str, prefix: str, n: int, concurrency: int
) -> dict[str, Any]:
    expected = 200 if endpoint == "/health" else (201 if endpoint == "/v1/verify" else 202)
    errors: dict[str, int] = {}

    async def one(i: int, to_prefix: str) -> float:
        to = f"{to_prefix}{i:07d}"
        t = time.perf_counter()
        if endpoint == "/health":
            r = await client.get("/health")
        else:
            r = await client.post(endpoint, json=body_for(endpoint, to, i))
        ms = (time.perf_counter() - t) * 1000
        if r.status_code != expected:
            key = f"{r.status_code}:{r.json().get('error', {}).get('code', '?') if r.content else '?'}"
            errors[key] = errors.get(key, 0) + 1
        return ms

    await one(9_999_999, prefix + "9")  # warm-up (connections, caches) outside the figures
    s0, t0, c0 = counter.statements, counter.transactions, time.process_time()
    w0 = time.perf_counter()
    seq = [await one(i, prefix + "0") for i in range(n)]
    seq_wall = time.perf_counter() - w0
    cpu_ms = (time.process_time() - c0) * 1000 / n
    statements, transactions = (counter.statements - s0) / n, (counter.transactions - t0) / n

    sem = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> float:
        async with sem:
            return await one(i, prefix + "1")

    c1 = time.process_time()
    w1 = time.perf_counter()
    par = await asyncio.gather(*(limited(i) for i in range(n)))
    par_wall = time.perf_counter() - w1
    par_cpu = (time.process_time() - c1) * 1000 / n
    return {
        "statements_per_request": round(statements, 2),
        "transactions_per_request": round(transactions, 2),
        "cpu_ms_per_request": round(cpu_ms, 2),
        "sequential": {
            "p50_ms": pct(seq, 50),
            "p99_ms": pct(seq, 99),
            "mean_ms": round(statistics.fmean(seq), 2),
            "per_s": round(n / seq_wall, 1),
        },
        "concurrent": {
            "concurrency": concurrency,
            "p50_ms": pct(par, 50),
            "p99_ms": pct(par, 99),
            "per_s": round(n / par_wall, 1),
            "cpu_ms_per_request": round(par_cpu, 2),
        },
        "errors": errors,
    }


async def statement_profile(client: httpx.AsyncClient, counter: Counter, endpoint: str, to: str) -> dict[str, int]:
    """The statements of one request, by text (for --trace)."""
    counter.by_text = {}
    counter.trace = True
    try:
        await client.post(endpoint, json=body_for(endpoint, to, 1))
    finally:
        counter.trace = False
    return counter.by_text


class Failures(logging.Handler):
    """Every logged record with a traceback (the app's unhandled-error handler logs one per 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append(logging.Formatter().format(record))

    def by_cause(self) -> dict[str, int]:
        """Tracebacks grouped by their last hongyan frame and the error's first line."""
        out: dict[str, int] = {}
        for tb in self.tracebacks:
            frames = re.findall(r'File "[^"]*/hongyan/([^"]+)", line (\d+), in (\w+)', tb)
            where = ":".join(frames[-1]) if frames else "?"
            error = next((line for line in reversed(tb.splitlines()) if re.match(r"^[\w.]+(Error|Exception)\b", line)), "?")
            key = f"{where} {error[:140]}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


async def overload(client: httpx.AsyncClient, total: int, concurrency: int, same_number_every: int) -> dict[str, Any]:
    """`total` starts with `concurrency` in flight; every `same_number_every`-th request reuses one number (the
    per-number limit races), the rest go to numbers of their own. Returns status/code counts."""
    sem = asyncio.Semaphore(concurrency)
    outcomes: dict[str, int] = {}
    latencies: list[float] = []

    async def one(i: int) -> None:
        to = "+8613699999999" if same_number_every and i % same_number_every == 0 else f"+86135{i:08d}"
        async with sem:
            t = time.perf_counter()
            try:
                r = await client.post("/v1/verify", json=body_for("/v1/verify", to, i))
                key = str(r.status_code)
                if r.status_code >= 400:
                    key += ":" + str(r.json().get("error", {}).get("code", "?"))
            except Exception as exc:  # a transport-level failure is an outcome too
                key = type(exc).__name__
            latencies.append((time.perf_counter() - t) * 1000)
            outcomes[key] = outcomes.get(key, 0) + 1

    w = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    return {
        "requests": total,
        "concurrency": concurrency,
        "seconds": round(time.perf_counter() - w, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from hongyan.app import create_app

    tmp = Path(tempfile.mkdtemp(prefix="hongyan-verify-cost-"))
    url = await fresh_database("postgresql", tmp)
    try:
        await asyncio.to_thread(upgrade, url)
        settings = Settings(
            data_dir=tmp,
            database_url=url,
            secret_key="bench-secret-key",
            sandbox_delay_ms=0,
            quiet_hours="off",
            log_level="WARNING",
            verify_per_ip_hour=10**9,
            verify_per_key_minute=10**9,
            verify_velocity_min=10**9,
            verify_conversion_min_started=10**9,
            api_rate_per_ip=10**9,
            api_rate_per_key=10**9,
        )
        db = Database(url, pool_size=args.pool)
        counter = Counter(db)
        app = create_app(settings, run_workers=args.workers, db=db)
        account = await make_account(db, name="bench")
        await approved_signature(db, account.account_id, "鸿雁", default=True)
        result: dict[str, Any] = {
            "benchmark": "verify_cost",
            "setup": {
                "backend": "postgresql",
                "requests": args.requests,
                "concurrency": args.concurrency,
                "workers": args.workers,
                "pool_size": args.pool,
                "client": "httpx ASGITransport, in process (its CPU is in cpu_ms)",
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
        }
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is an answer
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=account.headers, timeout=120
            ) as client:
                if args.overload:
                    failures = Failures()
                    logging.getLogger().addHandler(failures)
                    try:
                        result["overload"] = await overload(
                            client, args.requests, args.concurrency, args.same_number_every
                        )
                    finally:
                        logging.getLogger().removeHandler(failures)
                    result["tracebacks_total"] = len(failures.tracebacks)
                    result["tracebacks_by_cause"] = failures.by_cause()
                    if args.tracebacks:
                        result["tracebacks"] = failures.tracebacks[: args.tracebacks]
                else:
                    result["floor_health"] = await measure(
                        client, counter, "/health", "+86138", 200, args.concurrency
                    )
                    result["verify"] = await measure(
                        client, counter, "/v1/verify", "+86139", args.requests, args.concurrency
                    )
                    result["messages"] = await measure(
                        client, counter, "/v1/messages", "+86137", args.requests, args.concurrency
                    )
                if args.trace:
                    result["trace"] = {
                        "verify": await statement_profile(client, counter, "/v1/verify", "+8613939999999"),
                        "messages": await statement_profile(client, counter, "/v1/messages", "+8613949999999"),
                    }
        await db.dispose()
        return result
    finally:
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--pool", type=int, default=10, help="connection pool size (max overflow the same)")
    parser.add_argument("--workers", action="store_true", help="run the embedded workers too")
    parser.add_argument("--overload", action="store_true",
                        help="only POST /v1/verify, --requests total, --concurrency in flight: outcomes and tracebacks")
    parser.add_argument("--same-number-every", type=int, default=0,
                        help="with --overload: every n-th request goes to one shared number")
    parser.add_argument("--tracebacks", type=int, default=0, help="with --overload: print this many tracebacks")
    parser.add_argument("--trace", action="store_true", help="list the statements of one request of each kind")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
