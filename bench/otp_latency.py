"""Benchmark: verification-code latency, API call → `submit_sm` seen by the SMSC, idle and under a campaign.

Setup: a fresh PostgreSQL database, the SMSC simulator (tests/peers/smsc-sim, receipts at once), one
`hongyan serve` process with embedded workers and an SMPP channel to the simulator (the route carries
everything), quiet hours off for the account. Driven over HTTP from this process. Prints one JSON object.

  phase "idle":     verification requests at --rate per second for --seconds, nothing else running;
  phase "campaign": a --campaign-size marketing campaign (personalized, one UCS-2 segment, to a static
                    group loaded beforehand, not timed) is started; once its first `submit_sm` reaches the
                    simulator, verification requests go out at --rate per second until the campaign is fully
                    submitted (or --campaign-max-s has passed).

Latency of one request = wall clock when the HTTP call started → `received_at` of its `submit_sm` in the
simulator (matched by destination number: every request has its own number; the simulator stamps in ms).
Requests are open-loop (one task per request at its due time), so a slow answer does not slow the load.
The breakdown splits it with the message's own history: accepted (row written) → queued (outbox relay) →
sending (a dispatcher took it) → at the SMSC (connector window, TPS throttle, the wire).

  .venv/bin/python bench/otp_latency.py [--seconds 20] [--rate 50] [--campaign-size 100000]
                                        [--endpoint auto|verify|messages] [--raw FILE]

Each phase also reports the CPU every part used (`cpu`: CPU seconds by process from /proc, as bench/e2e.py — the
API, each worker, the simulator, this load generator, the database's PostgreSQL backends, RabbitMQ — and, idle,
CPU ms per code), and `setup.machine`
how fast the machine was (a pure-Python loop, one PostgreSQL round trip): latency here is CPU queueing, and runs
on one machine differ by up to 2x within an hour.

--raw appends one JSON line per request that reached the SMSC with its history complete (phase, wall clock,
total and the four parts in ms) to FILE: a timeline of the run, where bursts of slow codes show up.
--endpoint auto uses POST /v1/verify when the server has it, else POST /v1/messages with
message_type "verification".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from campaign import drop_database, fresh_database, load_contacts  # noqa: E402  (bench helpers)
from ingest import Server  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from e2e import CpuMeter, asyncpg_dsn, delete_vhost, rabbitmq_vhost, stop_processes, wait_binds  # noqa: E402
from hongyan.accounts import keys  # noqa: E402
from hongyan.accounts import service as accounts  # noqa: E402
from hongyan.accounts.models import Account  # noqa: E402
from hongyan.accounts.permissions import Authority  # noqa: E402
from hongyan.billing.recharge import top_up  # noqa: E402
from hongyan.config import Settings  # noqa: E402
from hongyan.core import crypto  # noqa: E402
from hongyan.db.engine import Database  # noqa: E402
from hongyan.messaging.models import Message, MessageEvent  # noqa: E402
from smsc import SmscSim  # noqa: E402  (tests/ is on the path via campaign.py)

# the platform's per-IP limit as it is (each request names its own end user's device_ip); a per-key limit
# that a 50/s sender needs; the pumping protection off (a fresh database has no baseline: every rate is new)
SERVER_ENV = {
    "HONGYAN_VERIFY_PER_KEY_MINUTE": "6000",
    "HONGYAN_VERIFY_VELOCITY_MIN": "1000000",
    "HONGYAN_VERIFY_CONVERSION_MIN_STARTED": "1000000",
}
OTP_TEXT = "【鸿雁】您的验证码是{code},5分钟内有效。"
DRAIN_S = 30.0  # after a phase, how long requests still in flight may take


def percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    v = sorted(values)

    def pct(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))], 1)

    return {
        "count": len(v),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(v[-1], 1),
        "mean_ms": round(statistics.fmean(v), 1),
    }


class RawHttp:
    """The load's HTTP client: HTTP/1.1 keep-alive connections and nothing else (a JSON POST, the status, the
    JSON answer). httpx cost 3 ms of CPU per request here, and far more once answers slowed down and hundreds
    were in flight (its pool's waiting requests): on a 2-core machine the load generator then took half a
    core from the system it measures, and the slower the answers, the more it took."""

    IDLE_S = 2.0  # a connection unused this long is closed, not reused (uvicorn drops idle ones after 5 s)

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        host_port = base.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host_port, **headers,
                                                         "Content-Type": "application/json"}.items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    def close(self) -> None:
        for _r, w, _t in self.idle:
            w.close()
        self.idle.clear()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Status and parsed JSON answer (None when the answer is not JSON). A failed exchange raises OSError
        or asyncio.IncompleteReadError and its connection is dropped (never retried: a POST is not idempotent)."""
        now = time.monotonic()
        while self.idle:
            reader, writer, used = self.idle.pop()
            if now - used < self.IDLE_S:
                break
            writer.close()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        try:
            writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
            status = int((await reader.readline()).split(b" ", 2)[1])
            length, is_json, keep = 0, False, True
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "content-length":
                    length = int(value)
                elif name == "content-type":
                    is_json = value.startswith("application/json")
                elif name == "connection" and value.lower() == "close":
                    keep = False
            raw = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return status, (json.loads(raw) if is_json and raw else None)


class Load:
    """Open-loop verification requests: request i starts at t0 + i/rate, whatever the others are doing."""

    def __init__(self, client: RawHttp, endpoint: str, prefix: str, rate: float) -> None:
        self.client = client
        self.endpoint = endpoint
        self.prefix = prefix  # +86159 P xxxxxxx: one number per request, per phase
        self.rate = rate
        self.sent: dict[str, dict[str, Any]] = {}  # destination (as the SMSC sees it) → request facts
        self.errors: dict[str, int] = {}
        self.started = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self, i: int) -> None:
        to = f"{self.prefix}{i:07d}"
        if self.endpoint == "/v1/verify":
            # as a sign-up form's backend calls it: the end user's address as device_ip (the per-IP limit)
            body: dict[str, Any] = {"to": to, "locale": "zh-CN", "device_ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"}
        else:
            body = {
                "to": to,
                "text": OTP_TEXT.format(code=f"{i % 1_000_000:06d}"),
                "message_type": "verification",
            }
        wall = time.time()
        t = time.perf_counter()
        try:
            status, answer = await self.client.post(self.endpoint, body)
            ok = status in (200, 201, 202)
            key = "" if ok else f"{status}:" + str((answer or {}).get("error", {}).get("code", "?"))
            answer = (answer or {}) if ok else {}
            msg_id = answer.get("message_id") or answer.get("id")  # /v1/verify names the code's message
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            ok, key, msg_id = False, type(exc).__name__, None
        if not ok:
            self.errors[key] = self.errors.get(key, 0) + 1
            return
        self.sent[to.lstrip("+")] = {"wall": wall, "api_ms": (time.perf_counter() - t) * 1000, "id": msg_id}

    async def run(self, until: Any) -> int:
        """Send until `until()` is true (checked at every request); returns how many were started."""
        t0 = time.perf_counter()
        i = 0
        while not await until():
            due = t0 + i / self.rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            self._tasks.append(asyncio.create_task(self._one(i)))
            i += 1
            self.started = i
        # an overloaded server must not stretch the run: answers later than DRAIN_S count as unfinished
        _done, late = await asyncio.wait(self._tasks, timeout=DRAIN_S) if self._tasks else (set(), set())
        for task in late:
            task.cancel()
        if late:
            self.errors["unfinished"] = len(late)
        return i


def own_group_nice(pid: int, nice: int) -> bool:
    """Each server process runs in a session of its own, so the kernel schedules it as a group of its own
    (autogroup), as systemd schedules each unit in its own cgroup: CPU is shared between groups first, and a
    process's nice value only weighs inside its group. The bulk worker's group gets its nice value too
    (the CPUWeight= of its unit: docs/deployment.md). False where autogroups are off (then plain nice)."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError:
        return False
    return True


def seen_at_smsc(sim: SmscSim, limit: int) -> dict[str, float]:
    """destination → epoch seconds of the simulator's `received_at` (ms resolution)."""
    out: dict[str, float] = {}
    for m in sim.api(f"/messages?limit={limit}")["messages"]:
        dest = m["dest"]
        if isinstance(dest, str) and dest.startswith("86159") and dest not in out:
            out[dest] = datetime.fromisoformat(m["received_at"].replace("Z", "+00:00")).timestamp()
    return out


async def breakdown(db: Database, sent: dict[str, dict[str, Any]], seen: dict[str, float],
                    raw: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Where the time went, from each message's history (the message id: from /v1/messages, or the
    verification's `message_id`); with `raw`, one record per request is appended to it as well."""
    ids = [f["id"] for f in sent.values() if f.get("id", "").startswith("msg_")]
    if not ids:
        return {}
    async with db.read() as session:
        created = dict(
            (await session.execute(select(Message.id, Message.created_at).where(Message.id.in_(ids)))).all()
        )
        events: dict[str, dict[str, float]] = {}
        for mid, status, at in (
            await session.execute(
                select(MessageEvent.message_id, MessageEvent.status, MessageEvent.occurred_at).where(
                    MessageEvent.message_id.in_(ids), MessageEvent.status.in_(["queued", "sending"])
                )
            )
        ).all():
            events.setdefault(mid, {}).setdefault(status, at.timestamp())
    parts: dict[str, list[float]] = {
        "api_to_accepted": [],
        "accepted_to_queued": [],
        "queued_to_sending": [],
        "sending_to_smsc": [],
    }
    for dest, f in sent.items():
        mid, at_smsc = f.get("id"), seen.get(dest)
        ev = events.get(mid or "", {})
        if mid not in created or at_smsc is None or "queued" not in ev or "sending" not in ev:
            continue
        acc = created[mid].timestamp()
        row = {
            "api_to_accepted": (acc - f["wall"]) * 1000,
            "accepted_to_queued": (ev["queued"] - acc) * 1000,
            "queued_to_sending": (ev["sending"] - ev["queued"]) * 1000,
            "sending_to_smsc": (at_smsc - ev["sending"]) * 1000,
        }
        for k, v in row.items():
            parts[k].append(v)
        if raw is not None:
            raw.append({"wall": round(f["wall"], 4), "total_ms": round((at_smsc - f["wall"]) * 1000, 1),
                        **{k: round(v, 1) for k, v in row.items()}})
    return {k: percentiles(v) for k, v in parts.items()}


def write_raw(path: str, phase: str, rows: list[dict[str, Any]]) -> None:
    """--raw: one JSON line per request, in the order they were sent."""
    with open(path, "a", encoding="utf-8") as out:
        for row in sorted(rows, key=lambda r: r["wall"]):
            out.write(json.dumps({"phase": phase, **row}) + "\n")


async def phase_result(db: Database, sim: SmscSim, load: Load, started: int, limit: int,
                       raw_path: str | None = None, phase: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:  # stragglers: wait until every accepted request reached the SMSC (or 30 s)
        seen = await asyncio.to_thread(seen_at_smsc, sim, limit)
        if all(d in seen for d in load.sent) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    latencies = [(seen[d] - f["wall"]) * 1000 for d, f in load.sent.items() if d in seen]
    raw: list[dict[str, Any]] | None = [] if raw_path else None
    parts = await breakdown(db, load.sent, seen, raw)
    if raw_path:
        await asyncio.to_thread(write_raw, raw_path, phase, raw or [])
    return {
        "requests": started,
        "accepted": len(load.sent),
        "errors": load.errors,
        "reached_smsc": len(latencies),
        "api_to_submit_sm": percentiles(latencies),
        "api_response": percentiles([f["api_ms"] for f in load.sent.values()]),
        "breakdown": parts,
    }


def with_per_code(cpu: dict[str, Any], codes: int) -> dict[str, Any]:
    """CpuMeter's figures for a phase, with each part's CPU ms per code (meaningful with nothing else running)."""
    return {**cpu, "ms_per_code": {k: round(1000 * v / codes, 1) for k, v in cpu["cpu_s"].items() if v > 0}}


async def calibrate(url: str) -> dict[str, Any]:
    """How fast this machine is at the moment: pure-Python work, and one PostgreSQL round trip (client CPU and
    wall clock) — the figures a verification code's cost is made of. Runs on one machine differ by up to 2x
    within an hour (docs/benchmarks.md); these let results from different runs and machines be compared."""
    import asyncpg

    def loop() -> float:
        t = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        return time.process_time() - t

    python_ms = 1000 * min(loop() for _ in range(3))
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        n = 2000
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await conn.fetchval("SELECT 1")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await conn.close()
    return {"python_loop_1m_ms": round(python_ms, 1), "pg_round_trip_us": round(1e6 * wall / n, 1),
            "pg_round_trip_client_cpu_us": round(1e6 * cpu / n, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hongyan-otp-"))
    url = await fresh_database("postgresql", tmp)
    keep = args.campaign_size + 50_000
    sim = SmscSim(DLR_DELAY_MS=0, MESSAGES_KEEP=keep).start()
    saved_env = dict(os.environ)
    os.environ.update(SERVER_ENV)
    server = None
    workers: list[subprocess.Popen[bytes]] = []
    vhost = None
    db = Database(url, pool_size=4)
    group_niced = False
    try:
        smpp = sim.channel_config(binds=args.binds, window=args.window, tps=args.tps)
        if args.topology == "split":
            # production mode: API (+ outbox relay) alone, a worker for codes and a worker for the rest, each
            # with its own SMPP bind (leases), on RabbitMQ; the bulk worker niced so that codes get the CPU first
            queue_url, vhost = rabbitmq_vhost("")
            os.environ["HONGYAN_QUEUE_URL"] = queue_url
            server = Server(tmp, url, workers=False, smpp=smpp, own_session=True)
            log = tmp / "workers.log"
            env = dict(os.environ, HONGYAN_DATA_DIR=str(tmp), HONGYAN_DATABASE_URL=url)
            with log.open("ab") as out:
                own_group_nice(server.proc.pid, args.codes_nice)  # the API's unit: CPUWeight above the default
                for lanes, nice in (("verification", args.codes_nice), ("notification,marketing", args.bulk_nice)):
                    command = [sys.executable, "-m", "hongyan.cli", "worker", "--lanes", lanes]
                    if nice > 0:
                        command = ["nice", "-n", str(nice), *command]
                    workers.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,  # noqa: ASYNC220
                                                    start_new_session=True))
                    if nice:
                        group_niced = own_group_nice(workers[-1].pid, nice)
            await wait_binds(sim, args.binds, [server.proc, *workers], log, url, len(workers))
        else:
            server = Server(tmp, url, workers=True, smpp=smpp)
        settings = Settings(data_dir=tmp, database_url=url)
        crypto.configure(crypto.keyring_from_settings(settings))  # the server's key files (same data dir)
        async with db.write() as session:
            account = await session.scalar(select(Account).order_by(Account.created_at).limit(1))
            assert account is not None
            campaign_account, campaign_key = account.id, server.key
            if args.campaign_account == "other":  # another customer sends the campaign
                other = await accounts.create_account(session, name="campaign sender", kyc_status="verified")
                await top_up(
                    session,
                    account_id=other.id,
                    amount_micros=10**13,
                    currency=other.currency,
                    actor="bench",
                    note="bench funds",
                )
                campaign_account = other.id
                campaign_key = (await keys.create_api_key(session, account_id=other.id, name="bench")).token
            await session.execute(
                update(Account)
                .where(Account.id.in_([account.id, campaign_account]))
                .values(quiet_hours="off")
            )
        authority = Authority.of_member(account_id=campaign_account, user_id="usr_bench", role="owner")
        t = time.perf_counter()
        group_id = await load_contacts(db, authority, args.campaign_size)
        load_s = time.perf_counter() - t
        headers = {"Authorization": f"Bearer {server.key}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=server.base, headers=headers, timeout=60, limits=limits
        ) as client:
            load_client = RawHttp(server.base, headers)  # the measured requests (httpx for the rest)
            paths = (await client.get("/openapi.json")).json().get("paths", {})
            endpoint = args.endpoint
            if endpoint == "auto":
                endpoint = "verify" if "/v1/verify" in paths else "messages"
            path = "/v1/verify" if endpoint == "verify" else "/v1/messages"
            result: dict[str, Any] = {
                "benchmark": "otp_latency",
                "setup": {
                    "backend": "postgresql",
                    "endpoint": path,
                    "rate_per_s": args.rate,
                    "idle_seconds": args.seconds,
                    "warmup_seconds": args.warmup,
                    "campaign_size": args.campaign_size,
                    "campaign_account": args.campaign_account,
                    "smsc": f"smsc-sim, receipts at once, {args.binds} binds, window {args.window}, "
                            f"tps per bind {args.tps or 'unlimited'}",
                    "process": "one `hongyan serve` with embedded workers" if args.topology == "embedded" else
                    "`hongyan serve --no-workers` + `worker --lanes verification` + `worker --lanes "
                    f"notification,marketing` (nice {args.bulk_nice}), RabbitMQ, one bind per worker, each "
                    "process a scheduling group of its own"
                    + (f" (the bulk worker's group at nice {args.bulk_nice}, the API's and the verification "
                       f"worker's at nice {args.codes_nice})" if group_niced else ""),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "contacts_load_s": round(load_s, 1),
                    "machine": await calibrate(url),
                },
            }
            roles = {server.proc.pid: "api"}  # CPU by part (bench/e2e.py's CpuMeter; this process: load_generator)
            if sim.proc is not None:
                roles[sim.proc.pid] = "smsc_sim"
            for role, worker in zip(("codes_worker", "bulk_worker"), workers, strict=False):
                roles[worker.pid] = role
            if server.worker is not None:
                roles[server.worker.pid] = "worker"
            meter = CpuMeter(roles, url.partition("?")[0].rsplit("/", 1)[1])
            # phase 1: no background load
            await client.post(
                path,
                json={
                    "to": "+8615999999999",
                    "text": OTP_TEXT.format(code="000000"),
                    "message_type": "verification",
                }
                if path == "/v1/messages"
                else {"to": "+8615999999999", "locale": "zh-CN"},
            )  # warm-up: connections, caches
            # then --warmup seconds at the rate, not measured: every process's connection pool grown to what
            # the rate needs, statements prepared (the first second otherwise sets the idle phase's p99)
            warm = Load(load_client, path, "+861592", args.rate)
            warm_end = time.perf_counter() + args.warmup

            async def warm_done() -> bool:
                return time.perf_counter() >= warm_end

            if args.warmup > 0:
                await warm.run(warm_done)
            idle = Load(load_client, path, "+861590", args.rate)
            end = time.perf_counter() + args.seconds

            async def idle_done() -> bool:
                return time.perf_counter() >= end

            meter.start()
            started = await idle.run(idle_done)
            cpu_idle = with_per_code(meter.stop(), idle.started)
            result["idle"] = await phase_result(db, sim, idle, started, keep, args.raw, "idle")
            result["idle"]["cpu"] = cpu_idle

            # phase 2: the same while the campaign is being sent
            base = sim.stats()["submit_sm"]
            as_sender = {"Authorization": f"Bearer {campaign_key}"}
            r = await client.post(
                "/v1/campaigns",
                headers=as_sender,
                json={
                    "name": "otp bench",
                    "text": "{name|客户}您好，您的订单{订单号}已发货，感谢惠顾。",
                    "group_ids": [group_id],
                    "message_type": "marketing",
                },
            )
            r.raise_for_status()
            campaign_id = r.json()["id"]
            t_start = time.perf_counter()
            (await client.post(f"/v1/campaigns/{campaign_id}/start", headers=as_sender)).raise_for_status()
            while sim.stats()["submit_sm"] == base:  # the first campaign message at the SMSC
                if time.perf_counter() - t_start > 120:
                    raise RuntimeError("the campaign did not start sending within 120 s")
                await asyncio.sleep(0.05)
            first_s = time.perf_counter() - t_start
            busy = Load(load_client, path, "+861591", args.rate)
            t_load = time.perf_counter()
            stop_at = t_load + args.campaign_max_s
            last_check = [0.0, False]

            async def campaign_done() -> bool:
                now = time.perf_counter()
                if now - last_check[0] >= 1.0:  # the simulator's counter, once a second
                    stats = await asyncio.to_thread(sim.stats)
                    last_check[0] = now
                    last_check[1] = stats["submit_sm"] - base - busy.started >= args.campaign_size
                return last_check[1] or now >= stop_at

            meter.start()
            started = await busy.run(campaign_done)
            load_s = time.perf_counter() - t_load
            cpu_campaign = meter.stop()
            at_load_end = sim.stats()["submit_sm"]
            result["campaign"] = await phase_result(db, sim, busy, started, keep, args.raw, "campaign")
            # submit_sm seen while the codes were sent, less the codes (nearly all of them arrived by then)
            campaign_at_smsc = at_load_end - base - result["campaign"]["reached_smsc"]
            result["campaign"]["background"] = {
                "first_submit_sm_after_start_s": round(first_s, 1),
                "load_seconds": round(load_s, 1),
                "campaign_submit_sm_during_load": campaign_at_smsc,
                "campaign_rate_per_s": round(campaign_at_smsc / load_s) if load_s else None,
                "campaign_fully_submitted": campaign_at_smsc >= args.campaign_size,
            }
            result["campaign"]["cpu"] = cpu_campaign
            await client.post(f"/v1/campaigns/{campaign_id}/cancel", headers=as_sender)
            load_client.close()
        result["floor"] = {
            "p99_under_ms": 50,
            "met": bool(
                result["campaign"]["api_to_submit_sm"].get("p99_ms", 1e9) < 50
                and result["idle"]["api_to_submit_sm"].get("p99_ms", 1e9) < 50
            ),
        }
        return result
    finally:
        stop_processes(workers)
        if server is not None:
            server.stop()
        sim.stop()
        await db.dispose()
        await drop_database(url)
        if vhost:
            delete_vhost(vhost)
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="length of the idle phase")
    parser.add_argument("--rate", type=float, default=50, help="verification requests per second")
    parser.add_argument("--warmup", type=float, default=3, help="seconds at the rate before the idle phase, not measured")
    parser.add_argument("--campaign-size", type=int, default=100_000)
    parser.add_argument(
        "--campaign-max-s", type=float, default=180, help="longest verification load in phase 2"
    )
    parser.add_argument("--endpoint", choices=["auto", "verify", "messages"], default="auto")
    parser.add_argument(
        "--campaign-account",
        choices=["other", "same"],
        default="other",
        help="who sends the campaign: another account, or the one asking for codes (then both share its "
        "ledger balance row: docs/lanes.md)",
    )
    parser.add_argument("--topology", choices=["embedded", "split"], default="split",
                        help="embedded: one `hongyan serve`; split: production mode (API + 2 workers on RabbitMQ)")
    parser.add_argument("--bulk-nice", type=int, default=10, help="split: nice value of the bulk worker and of its scheduling group")
    parser.add_argument("--codes-nice", type=int, default=0,
                        help="split: nice value of the scheduling groups of the API and the verification worker "
                             "(negative: more CPU weight than PostgreSQL, RabbitMQ and the simulator, as CPUWeight=)")
    parser.add_argument("--binds", type=int, default=2)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--tps", type=int, default=0, help="submits per second per bind (0: unlimited), as a carrier sets")
    parser.add_argument("--raw", default=None,
                        help="append one JSON line per request (wall clock, latency and its parts) to this file")
    print(json.dumps(asyncio.run(run(parser.parse_args())), ensure_ascii=False))


if __name__ == "__main__":
    main()
