"""Benchmark: the whole production path, HTTP batch API → PostgreSQL → queue → workers → SMPP → receipts → final status.

Setup: a fresh PostgreSQL database, the SMSC simulator (tests/peers/smsc-sim, receipts at once, no throttle)
and an SMPP channel to it (`--binds`, `--window`, tps 0) that the only route sends everything to.

  --workers 0   one `hongyan serve` with embedded workers and the in-process queue (memory://)
  --workers N   one `hongyan serve --no-workers` + N `hongyan worker` processes on RabbitMQ
                (HONGYAN_QUEUE_URL=amqp://…/<a fresh vhost>, created with `rabbitmqctl add_vhost` and deleted
                after the run, so no run sees another's queues)

Load: `--messages` distinct recipients posted to POST /v1/batches in batches of `--batch-size` by `--clients`
concurrent HTTP clients (request bodies built before the clock starts). Figures:

  ingest      accepted messages / (first POST sent → last POST answered)
  end_to_end  messages / (first message accepted → last message final), both from the database's timestamps
              (message.created_at, message_event.occurred_at); the run waits, polling the database, until
              every message is final or `--deadline` seconds have passed
  latency     per message, accepted → delivered, p50/p90/p99/max, plus where the time went (accepted →
              queued → sending → sent → delivered, p50/p99 of each step)
  cpu         CPU seconds of each component during the run (API, workers, PostgreSQL backends of this database,
              RabbitMQ, simulator, this load generator) from /proc, and per message: with 2 cores shared by
              everything, what is busy is the limit; `everything_else` shows other work on the machine
  postgresql_sessions  what this database's sessions were doing (pg_stat_activity every 0.2 s): commits
              waiting for the disk, row locks, or PostgreSQL waiting for the application

Prints one JSON object.

  .venv/bin/python bench/e2e.py [--workers 0|1|2] [--messages 50000] [--batch-size 5000] [--clients 4]
                                [--binds 2] [--window 100] [--deadline 600] [--lanes verification,…]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from campaign import drop_database, fresh_database  # noqa: E402  (bench helpers)
from ingest import Server, recipients  # noqa: E402

from smsc import SmscSim  # noqa: E402  (tests/ is on the path via ingest.py)

FINAL = ("delivered", "undelivered", "expired", "rejected", "failed", "canceled")
TEXT = "Hongyan e2e benchmark: your order has shipped and will arrive tomorrow."  # GSM-7, one segment
CLK_TCK = os.sysconf("SC_CLK_TCK")


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL of a database as asyncpg's own connect() takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


# ---------------------------------------------------------------- CPU accounting from /proc

def _proc_cpu(database: str) -> dict[int, tuple[str, float]]:
    """pid → (command name, user+system CPU seconds) for every process we can read; PostgreSQL backends
    serving `database` are named "postgres:<database>" (the others are other people's work or housekeeping)."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        if comm == "postgres":
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split()
            except OSError:
                title = []
            if database in title:  # "postgres: 15/main: <user> <database> <client> <state>"
                comm = f"postgres:{database}"
        out[int(entry)] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)  # utime, stime
    return out


class CpuMeter:
    """CPU seconds per component between `start()` and `stop()`: our processes by pid, services by name."""

    def __init__(self, roles: dict[int, str], database: str) -> None:
        self.roles = roles  # pid → component (api, worker-1, simulator, …)
        self.database = database
        self.services = {f"postgres:{database}": "postgresql_backends", "postgres": "postgresql_other",
                         "beam.smp": "rabbitmq"}
        self.before: dict[int, tuple[str, float]] = {}
        self.t0 = 0.0

    def _component(self, pid: int, comm: str) -> str | None:
        if pid in self.roles:
            return self.roles[pid]
        if pid == os.getpid():
            return "load_generator"
        return self.services.get(comm)

    def start(self) -> None:
        self.before = _proc_cpu(self.database)
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        after = _proc_cpu(self.database)
        used: dict[str, float] = {}
        other: dict[str, float] = {}
        for pid, (comm, cpu) in after.items():
            prev = self.before.get(pid)
            delta = cpu - (prev[1] if prev and prev[0] == comm else 0.0)
            component = self._component(pid, comm)
            if component is None:
                other[comm] = other.get(comm, 0.0) + delta
            else:
                used[component] = used.get(component, 0.0) + delta
        used["everything_else"] = sum(other.values())
        rss = {}
        for pid, role in self.roles.items():  # peak resident memory of our processes (VmHWM)
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss[role] = round(int(status.split("VmHWM:")[1].split()[0]) / 1024)
        top = sorted(other.items(), key=lambda kv: -kv[1])[:5]
        return {"wall_s": round(wall, 1), "cpu_s": {k: round(v, 1) for k, v in sorted(used.items())},
                "cores_busy": round(sum(used.values()) / wall, 2) if wall else None,
                "everything_else_top": {k: round(v, 1) for k, v in top if v >= 0.1}, "peak_rss_mb": rss}


# ---------------------------------------------------------------- RabbitMQ vhost per run

# the permissions docs/deployment.md gives Hongyan's RabbitMQ user: every run checks they are enough
PERMISSIONS = (r"^hongyan\..*", r"^(hongyan\..*|amq\.default)$", r"^hongyan\..*")  # configure, write, read


def rabbitmq_vhost(queue_type: str) -> tuple[str, str]:
    """A fresh vhost and a user of its own with the documented permissions → (amqp URL, name of both)."""
    name = f"hongyan_e2e_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", name, *(["--default-queue-type", queue_type] if queue_type else [])],
                   check=True, capture_output=True)
    subprocess.run([*ctl, "add_user", name, password], check=True, capture_output=True)
    subprocess.run([*ctl, "set_permissions", "-p", name, name, *PERMISSIONS], check=True, capture_output=True)
    host = os.environ.get("HONGYAN_BENCH_AMQP_HOST", "127.0.0.1:5672")
    return f"amqp://{name}:{password}@{host}/{name}", name


def delete_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], check=False, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "delete_user", name], check=False, capture_output=True)


# ---------------------------------------------------------------- processes

# `hongyan worker` on uvloop (an experiment: the command itself runs the default asyncio loop)
UVLOOP_WORKER = "import sys, uvloop; uvloop.install(); from hongyan.cli import app; sys.argv[0] = 'hongyan'; app()"


def start_workers(n: int, tmp: Path, db_url: str, lanes: str | None, log: Path,
                  uvloop: bool = False, nice: int = 0) -> list[subprocess.Popen[bytes]]:
    """N `hongyan worker` processes with the API's settings (same data dir: same key files); `nice`: their
    scheduling priority (docs/deployment.md: bulk workers below the API)."""
    env = dict(os.environ, HONGYAN_DATA_DIR=str(tmp), HONGYAN_DATABASE_URL=db_url, HONGYAN_LOG_LEVEL="WARNING")
    command = ["-c", UVLOOP_WORKER] if uvloop else ["-m", "hongyan.cli"]
    args = [*(["nice", "-n", str(nice)] if nice else []), sys.executable, *command, "worker",
            *(["--lanes", lanes] if lanes else [])]
    with log.open("ab") as out:
        return [subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT) for _ in range(n)]


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> list[float]:
    """SIGTERM all, then wait: returns each one's shutdown time (SIGKILL after `timeout`)."""
    t0 = time.perf_counter()
    for p in procs:
        if p.poll() is None:
            p.terminate()
    took = []
    for p in procs:
        try:
            p.wait(max(0.1, timeout - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        took.append(round(time.perf_counter() - t0, 2))
    return took


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


async def binds_spread(db_url: str, workers: int, binds: int) -> bool:
    """Production mode: the channel's bind leases are spread over the workers (dispatch.binds), so the run
    measures the steady state, not a rebalancing (the first worker up takes every bind, then gives some up)."""
    if workers < 2:
        return True
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        holders = await conn.fetch("SELECT holder, count(*) AS n FROM lease WHERE name LIKE 'bind:%' "
                                   "AND expires_at > now() GROUP BY holder")
    finally:
        await conn.close()
    share = -(-binds // workers)
    return sum(r["n"] for r in holders) == binds and all(r["n"] <= share for r in holders)


async def wait_binds(sim: SmscSim, binds: int, procs: list[subprocess.Popen[bytes]], log: Path, db_url: str,
                     workers: int, timeout: float = 60) -> float:
    """Until the simulator sees every bind of the channel, spread over the workers."""
    t0 = time.perf_counter()
    while (await asyncio.to_thread(sim.stats))["sessions_bound"] < binds or not await binds_spread(
            db_url, workers, binds):
        problem = "a process exited" if any(p.poll() is not None for p in procs) else None
        if time.perf_counter() - t0 > timeout:
            problem = f"the channel's {binds} binds were not up within {timeout} s"
        if problem:
            tail = await asyncio.to_thread(log_tail, log)
            raise RuntimeError(f"{problem}:\n{tail}")
        await asyncio.sleep(0.2)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- profiles (py-spy, optional)

class Profiler:
    """`py-spy record` on each Hongyan process for the run: collapsed stacks in `out_dir`, summarized as the
    share of samples in which a function is on the stack (inclusive) and at the top (self)."""

    def __init__(self, out_dir: Path, roles: dict[int, str]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.files = {role: out_dir / f"{role}.txt" for role in roles.values()}
        self.procs = [subprocess.Popen([spy, "record", "--nonblocking", "--rate", "50", "--format", "raw",
                                        "--duration", "3600", "-o", str(self.files[role]), "--pid", str(pid)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for pid, role in roles.items()]

    def stop(self, top: int = 12) -> dict[str, Any]:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        return {role: self.summarize(path, top) for role, path in self.files.items() if path.exists()}

    @staticmethod
    def summarize(path: Path, top: int) -> dict[str, Any]:
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].split(":")[0].rstrip(")") for f in stack.split(";")]
            for f in set(frames):
                inclusive[f] = inclusive.get(f, 0) + n
            own[frames[-1]] = own.get(frames[-1], 0) + n

        def share(d: dict[str, int]) -> dict[str, float]:
            return {k: round(100 * v / total, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}

        # the trunk (runpy, typer, uvicorn, the event loop) is on nearly every stack and says nothing
        branches = {k: v for k, v in inclusive.items() if v < 0.6 * total}
        return {"samples": total, "file": str(path), "self_pct": share(own), "inclusive_pct": share(branches)}


# ---------------------------------------------------------------- load

async def post_batches(base: str, key: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
    """`clients` HTTP clients (one connection each) take the next body until none is left."""
    todo = list(enumerate(bodies))
    requests: list[dict[str, Any]] = []
    errors: dict[str, int] = {}

    async def client() -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300,
                                     limits=httpx.Limits(max_connections=1)) as c:
            while todo:
                i, body = todo.pop(0)
                t = time.perf_counter()
                try:
                    r = await c.post("/v1/batches", content=body)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                done = time.perf_counter()
                if r.status_code != 202:
                    code = r.json().get("error", {}).get("code", "?") if r.content else "?"
                    errors[f"{r.status_code}:{code}"] = errors.get(f"{r.status_code}:{code}", 0) + 1
                    continue
                answer = r.json()
                requests.append({"i": i, "start": t, "end": done, "accepted": int(answer["accepted"]),
                                 "rejected": len(answer.get("rejected") or [])})

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    last = max((r["end"] for r in requests), default=time.perf_counter())
    accepted = sum(r["accepted"] for r in requests)
    took = sorted(r["end"] - r["start"] for r in requests) or [0.0]
    return {"requests": len(bodies), "answered_202": len(requests), "errors": errors, "accepted": accepted,
            "rejected": sum(r["rejected"] for r in requests), "seconds": round(last - t0, 3),
            "msg_per_s": round(accepted / (last - t0)) if last > t0 else None,
            "request_p50_s": round(took[len(took) // 2], 3), "request_max_s": round(took[-1], 3)}


# ---------------------------------------------------------------- the database's view

class WaitSampler:
    """What this database's sessions are doing, sampled every 0.2 s from pg_stat_activity: the share of
    busy session-samples per state and wait event. `active` with no wait = running SQL on a core;
    IO:WALSync/WALWrite = commits waiting for the disk; Lock:* = row locks; `idle in transaction` with
    Client:ClientRead = PostgreSQL waiting for the application in the middle of a transaction."""

    def __init__(self, url: str, database: str) -> None:
        self.url, self.database = url, database
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')",
                    self.database)
                self.samples += 1
                for r in rows:
                    key = f"{r['state']}:{r['wait_event_type'] or 'cpu'}:{r['wait_event'] or ''}".rstrip(":")
                    self.counts[key] = self.counts.get(key, 0) + 1
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        busy = sum(self.counts.values())
        top = sorted(self.counts.items(), key=lambda kv: -kv[1])[:10]
        return {"samples": self.samples,
                "busy_sessions_mean": round(busy / self.samples, 2) if self.samples else None,
                "share_pct": {k: round(100 * v / busy, 1) for k, v in top} if busy else {}}


async def wait_final(conn: Any, expected: int, deadline: float, progress: bool) -> tuple[bool, int]:
    """Poll (every 0.5 s, one indexed count) until every message is final or the deadline passes."""
    left = expected
    while time.monotonic() < deadline:
        left = await conn.fetchval("SELECT count(*) FROM message WHERE status <> ALL($1::text[])", list(FINAL))
        total = await conn.fetchval("SELECT count(*) FROM message")
        if progress:
            print(f"{time.strftime('%H:%M:%S')} messages {total}, not final {left}, load {os.getloadavg()[0]:.2f}",
                  file=sys.stderr)
        if total >= expected and left == 0:
            return True, 0
        await asyncio.sleep(0.5 if not progress else 2.0)
    return False, left


LATENCY_SQL = """
WITH steps AS (
  SELECT m.id, m.created_at AS accepted,
         min(e.occurred_at) FILTER (WHERE e.status = 'queued') AS queued,
         min(e.occurred_at) FILTER (WHERE e.status = 'sending') AS sending,
         min(e.occurred_at) FILTER (WHERE e.status = 'sent') AS sent,
         min(e.occurred_at) FILTER (WHERE e.status = 'delivered') AS delivered
  FROM message m JOIN message_event e ON e.message_id = m.id
  GROUP BY m.id, m.created_at
), ms AS (
  SELECT extract(epoch FROM delivered - accepted) * 1000 AS total,
         extract(epoch FROM queued - accepted) * 1000 AS accepted_to_queued,
         extract(epoch FROM sending - queued) * 1000 AS queued_to_sending,
         extract(epoch FROM sent - sending) * 1000 AS sending_to_sent,
         extract(epoch FROM delivered - sent) * 1000 AS sent_to_delivered
  FROM steps WHERE delivered IS NOT NULL
)
SELECT count(*) AS delivered,
       percentile_disc(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY total) AS total,
       max(total) AS total_max,
       percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY accepted_to_queued) AS accepted_to_queued,
       percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY queued_to_sending) AS queued_to_sending,
       percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY sending_to_sent) AS sending_to_sent,
       percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY sent_to_delivered) AS sent_to_delivered
FROM ms
"""


async def database_figures(conn: Any, accepted: int) -> dict[str, Any]:
    counts = dict(await conn.fetch("SELECT status, count(*) FROM message GROUP BY status"))
    first_accept = await conn.fetchval("SELECT min(created_at) FROM message")
    last_final = await conn.fetchval("SELECT max(occurred_at) FROM message_event WHERE status = ANY($1::text[])",
                                     list(FINAL))
    row = await conn.fetchrow(LATENCY_SQL)

    def ms(values: Any) -> list[float] | None:
        return [round(float(v), 1) for v in values] if values else None

    span = (last_final - first_accept).total_seconds() if first_accept and last_final else None
    total = ms(row["total"])
    return {
        "statuses": counts,
        "end_to_end": {"messages": accepted, "seconds": round(span, 3) if span else None,
                       "msg_per_s": round(accepted / span) if span else None},
        "latency_accepted_to_delivered_ms": {
            "count": row["delivered"],
            **({"p50": total[0], "p90": total[1], "p99": total[2], "max": round(float(row["total_max"]), 1)}
               if total else {}),
        },
        "steps_p50_p99_ms": {k: ms(row[k]) for k in ("accepted_to_queued", "queued_to_sending", "sending_to_sent",
                                                      "sent_to_delivered")},
    }


# ---------------------------------------------------------------- one run

async def run(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    result: dict[str, Any] = {
        "benchmark": "e2e",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine_before": machine(),
        "setup": {"backend": "postgresql", "messages": args.messages, "batch_size": args.batch_size,
                  "clients": args.clients,
                  "topology": "one `hongyan serve` with embedded workers, memory:// queue" if args.workers == 0 else
                  f"`hongyan serve --no-workers` + {args.workers} × `hongyan worker`"
                  f"{' --lanes ' + args.lanes if args.lanes else ''}, RabbitMQ (fresh vhost, "
                  f"{args.queue_type or 'classic'} queues){', workers on uvloop' if args.worker_uvloop else ''}"
                  f"{f', workers under nice {args.worker_nice}' if args.worker_nice else ''}",
                  "smsc": f"smsc-sim over SMPP, {args.binds} binds, window {args.window}, tps 0, receipts at once",
                  "text": "GSM-7, 1 segment"},
    }
    tmp = Path(tempfile.mkdtemp(prefix="hongyan-e2e-"))
    url = await fresh_database("postgresql", tmp)
    result["setup"]["database_connection"] = "Unix socket" if "host=/" in url else "TCP"
    vhost = None
    sim = SmscSim(DLR_DELAY_MS=0, MESSAGES_KEEP=1000).start()
    server: Server | None = None
    workers: list[subprocess.Popen[bytes]] = []
    log = tmp / "workers.log"
    saved_env = dict(os.environ)
    try:
        if args.workers > 0:
            queue_url, vhost = rabbitmq_vhost(args.queue_type)
            os.environ["HONGYAN_QUEUE_URL"] = queue_url
        else:
            os.environ["HONGYAN_QUEUE_URL"] = "memory://"
        os.environ["HONGYAN_QUIET_HOURS"] = "off"  # outcomes must not depend on the hour
        smpp = sim.channel_config(binds=args.binds, window=args.window, tps=0)
        server = Server(tmp, url, workers=args.workers == 0, smpp=smpp)
        workers = start_workers(args.workers, tmp, url, args.lanes, log, uvloop=args.worker_uvloop,
                                nice=args.worker_nice)
        bind_s = await wait_binds(sim, args.binds, [server.proc, *workers], log, url, args.workers)
        result["setup"]["binds_up_s"] = round(bind_s, 1)

        sizes = [min(args.batch_size, args.messages - b) for b in range(0, args.messages, args.batch_size)]
        bodies = [json.dumps({"text": TEXT, "recipients": recipients(100 + i, n)}).encode()
                  for i, n in enumerate(sizes)]
        roles = {server.proc.pid: "api", sim.proc.pid if sim.proc else -1: "simulator",
                 **{w.pid: f"worker_{i + 1}" for i, w in enumerate(workers)}}
        database = url.partition("?")[0].rsplit("/", 1)[1]
        meter = CpuMeter(roles, database)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            python_roles = {pid: role for pid, role in roles.items() if role != "simulator"}
            profiler = Profiler(Path(args.py_spy), python_roles) if args.py_spy else None
            waits = WaitSampler(asyncpg_dsn(url), database)
            waits.start()
            meter.start()
            ingest = await post_batches(server.base, server.key, bodies, args.clients)
            result["ingest"] = ingest
            finished, left = await wait_final(conn, ingest["accepted"], time.monotonic() + args.deadline,
                                              args.progress)
            result["cpu"] = meter.stop()
            result["postgresql_sessions"] = await waits.stop()
            if ingest["accepted"]:  # CPU cost of one message in each component: what the capacity divides by
                result["cpu"]["ms_per_message"] = {k: round(1000 * v / ingest["accepted"], 3)
                                                   for k, v in result["cpu"]["cpu_s"].items()
                                                   if k not in ("everything_else", "postgresql_other")}
            if profiler:
                result["py_spy"] = profiler.stop()
            result["machine_after"] = machine()
            result["all_final"] = finished
            result["not_final_at_deadline"] = left
            result.update(await database_figures(conn, ingest["accepted"]))
        finally:
            await conn.close()
        stats = sim.stats()
        result["smsc"] = {"submit_sm": stats.get("submit_sm"), "receipts_acked": stats.get("dlr_acked"),
                          "duplicates": (stats.get("submit_sm") or 0) - result["ingest"]["accepted"]}
        result["shutdown_s"] = {"workers": stop_processes(workers)}
        workers = []
        result["load_generator_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return result
    finally:
        stop_processes(workers)
        if server is not None:
            server.stop()
        sim.stop()
        os.environ.clear()
        os.environ.update(saved_env)
        await drop_database(url)
        if vhost:
            delete_vhost(vhost)
        if args.keep_logs:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=0,
                    help="0: one `serve` with embedded workers (memory queue); N: `serve --no-workers` + N workers on "
                         "RabbitMQ")
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=5_000, help="recipients per POST /v1/batches (≤ 10,000)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--binds", type=int, default=2)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--queue-type", choices=["", "classic", "quorum"], default="",
                    help="the vhost's default queue type (RabbitMQ; empty: the broker's default, classic)")
    ap.add_argument("--lanes", default=None, help="`hongyan worker --lanes` (default: every lane)")
    ap.add_argument("--worker-uvloop", action="store_true", help="run the workers on uvloop (experiment)")
    ap.add_argument("--worker-nice", type=int, default=0,
                    help="run the workers under `nice -n N` (the API keeps its priority: ingest first)")
    ap.add_argument("--deadline", type=float, default=600, help="seconds to wait for every message to be final")
    ap.add_argument("--progress", action="store_true", help="print progress every 2 s on stderr")
    ap.add_argument("--py-spy", metavar="DIR", help="profile the API and worker processes with py-spy during the run "
                    "(collapsed stacks in DIR, a summary in the JSON)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temporary data dir with the process logs")
    args = ap.parse_args()
    if args.workers < 0:
        ap.error("--workers must be 0 or more")
    print(json.dumps(asyncio.run(run(args)), ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
