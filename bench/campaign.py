"""Benchmark: a personalized campaign to a group of contacts, from start to every message handed to a carrier.

One process (like `hongyan serve`'s embedded workers) on a fresh PostgreSQL database: contacts with a custom
field are loaded into a static group (not timed), then a marketing campaign `{name|客户}您好，订单{订单号}…` is
created and started, and the clock runs until no message of its run is scheduled, queued or sending (all
`sent` or final). Quiet hours are off for the account so the figure does not depend on the time of day.
Prints one JSON object.

  .venv/bin/python bench/campaign.py [--contacts 100000] [--carrier sandbox|smpp] [--backend postgresql|sqlite]

--workers 2 starts a second `hongyan worker` process on the same database: whichever leads releases and
dispatches, the other builds the run (production topology on PostgreSQL).
--carrier smpp sends over real SMPP to the SMSC simulator (tests/peers/smsc-sim; `npm ci` there first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import func, select, text, update  # noqa: E402

from hongyan.accounts import service as accounts  # noqa: E402
from hongyan.accounts.models import Account  # noqa: E402
from hongyan.accounts.permissions import Authority  # noqa: E402
from hongyan.audit.service import actor_for_cli  # noqa: E402
from hongyan.billing.recharge import top_up  # noqa: E402
from hongyan.campaigns import contacts, service  # noqa: E402
from hongyan.campaigns.models import CampaignRun  # noqa: E402
from hongyan.campaigns.rows import ContactDraft  # noqa: E402
from hongyan.config import Settings  # noqa: E402
from hongyan.core import crypto  # noqa: E402
from hongyan.db.engine import Database  # noqa: E402
from hongyan.db.migrate import upgrade  # noqa: E402
from hongyan.dispatch import lease  # noqa: E402
from hongyan.dispatch.queue import MemoryQueue  # noqa: E402
from hongyan.dispatch.runtime import Runtime  # noqa: E402
from hongyan.messaging.models import Message  # noqa: E402

PG_ADMIN = os.environ.get("HONGYAN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
UNSENT = ("accepted", "scheduled", "queued", "sending")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fresh_database(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    import asyncpg

    name = f"bench_campaign_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    # HONGYAN_BENCH_PG_URL may name a Unix socket directory (…/postgres?host=/var/run/postgresql)
    address, _, query = PG_ADMIN.partition("?")
    base = address.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.partition("?")[0].rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def start_workers(n: int, tmp: Path, url: str, chunk: int) -> list[subprocess.Popen[bytes]]:
    """More `hongyan worker` processes on the same database (and keys: the same data dir)."""
    env = dict(os.environ, HONGYAN_DATA_DIR=str(tmp), HONGYAN_DATABASE_URL=url, HONGYAN_LOG_LEVEL="WARNING",
               HONGYAN_SANDBOX_DELAY_MS="0", HONGYAN_SANDBOX_OUTCOMES="delivered:100", HONGYAN_CAMPAIGN_CHUNK=str(chunk))
    with (tmp / "worker.log").open("ab") as log:
        return [subprocess.Popen([sys.executable, "-m", "hongyan.cli", "worker"], env=env, stdout=log, stderr=log)
                for _ in range(n)]


async def load_contacts(db: Database, authority: Authority, n: int) -> str:
    async with db.write() as session:
        await contacts.define_field(session, authority=authority, name="订单号", type="text")
        group = await contacts.create_group(session, authority=authority, name="bench")
    chunk = 10_000
    for start in range(0, n, chunk):
        drafts = [ContactDraft(row=i, phone=f"+8613{i:08d}9", country="CN", name=f"客户{i}",
                               fields={"订单号": f"DD{i:08d}"}) for i in range(start, min(n, start + chunk))]
        async with db.write() as session:
            await contacts.upsert_contacts(session, account_id=authority.account_id, drafts=drafts, group_id=group.id)
    return group.id


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hongyan-bench-"))
    url = await fresh_database(args.backend, tmp)
    smsc = None
    try:
        await asyncio.to_thread(upgrade, url)
        settings = Settings(data_dir=tmp, database_url=url, sandbox_delay_ms=0, sandbox_outcomes="delivered:100",
                            log_level="WARNING", campaign_chunk=args.chunk)
        crypto.configure(crypto.keyring_from_settings(settings))  # key files in the data dir, shared by workers
        db = Database(url, pool_size=10)
        async with db.write() as session:
            account = await accounts.create_account(session, name="bench")
            await top_up(session, account_id=account.id, amount_micros=10**13, currency=account.currency,
                         actor="bench", note="bench funds")
            await session.execute(update(Account).where(Account.id == account.id).values(quiet_hours="off"))
        authority = Authority.of_member(account_id=account.id, user_id="usr_bench", role="owner")
        t0 = time.perf_counter()
        group_id = await load_contacts(db, authority, args.contacts)
        load_s = time.perf_counter() - t0
        if args.carrier == "smpp":
            from hongyan.channels import service as channels
            from smsc import SmscSim

            smsc = SmscSim().start()
            async with db.write() as session:
                channel = await channels.create_channel(session, name="sim", kind="smpp",
                                                        config=smsc.channel_config(window=100, binds=2))
                await channels.create_route(session, channel=channel.id, priority=10)
        rss_before = rss_mb()
        helpers = start_workers(args.workers - 1, tmp, url, args.chunk)
        runtime = Runtime(db, settings, MemoryQueue())
        await runtime.start()
        if helpers:  # the others announce themselves (campaign-standby lease) before the campaign starts
            deadline = time.perf_counter() + 30
            while runtime.campaigns is None or not await lease.held_by_other(db, "campaign-standby",
                                                                             runtime.campaigns.holder):
                if time.perf_counter() > deadline:
                    raise RuntimeError((tmp / "worker.log").read_text())
                await asyncio.sleep(0.2)
            runtime.campaigns._lease_at = 0.0  # look for helpers now rather than at the next lease renewal
        try:
            async with db.write() as session:
                campaign = await service.create_campaign(
                    session, settings, authority=authority, actor=actor_for_cli(),
                    data=service.CampaignInput(name="bench", text="{name|客户}您好，您的订单{订单号}已发货，感谢惠顾。",
                                               group_ids=[group_id], message_type="marketing"))
            t_start = time.perf_counter()
            await service.start_campaign(db, settings, authority=authority, actor=actor_for_cli(),
                                         campaign_id=campaign.id)
            started_s = time.perf_counter() - t_start
            runtime.campaigns.wakeup.set()
            built_s = None
            deadline = time.perf_counter() + args.timeout
            while time.perf_counter() < deadline:
                async with db.read() as session:
                    run_row = await session.scalar(select(CampaignRun).where(CampaignRun.campaign_id == campaign.id))
                    if run_row is not None and run_row.audience_total is not None and built_s is None:
                        built_s = time.perf_counter() - t_start
                    left = None
                    if run_row is not None and run_row.audience_total is not None:
                        left = await session.scalar(select(func.count()).select_from(Message).where(
                            Message.batch_id == run_row.batch_id, Message.status.in_(UNSENT)))
                if left == 0:
                    break
                if args.progress and run_row is not None:
                    print(f"{time.perf_counter() - t_start:6.1f}s built {run_row.materialized} released "
                          f"{runtime.campaigns.pump.released} submitted {runtime.stats.submitted}", file=sys.stderr)
                await asyncio.sleep(0.2 if not args.progress else 2.0)
            submitted_s = time.perf_counter() - t_start
            async with db.read() as session:
                counts = dict((await session.execute(select(Message.status, func.count()).where(
                    Message.campaign_id == campaign.id).group_by(Message.status))).all())
        finally:
            await runtime.stop()
            for proc in helpers:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        if args.backend == "postgresql":
            async with db.read() as session:
                size = await session.scalar(text("select pg_database_size(current_database())"))
        else:
            size = None
        await db.dispose()
        return {
            "benchmark": "campaign", "backend": args.backend, "carrier": args.carrier, "contacts": args.contacts, "workers": args.workers,
            "campaign_chunk": args.chunk,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "contacts_load_s": round(load_s, 1),
            "start_call_s": round(started_s, 2),
            "run_built_s": round(built_s, 1) if built_s else None,
            "fully_submitted_s": round(submitted_s, 1),
            "submitted_per_s": round(args.contacts / submitted_s) if submitted_s else None,
            "statuses": counts,
            "peak_rss_mb": round(rss_mb()), "rss_before_run_mb": round(rss_before),
            "db_size_mb": round(size / 2**20) if size else None,
            "smsc": smsc.stats() if smsc else None,
        }
    finally:
        if smsc is not None:
            smsc.stop()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--carrier", choices=["sandbox", "smpp"], default="sandbox")
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--progress", action="store_true", help="print progress every 2 s on stderr")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes in all (this one included): the others build runs (PostgreSQL)")
    parser.add_argument("--chunk", type=int, default=Settings().campaign_chunk, help="HONGYAN_CAMPAIGN_CHUNK")
    print(json.dumps(asyncio.run(run(parser.parse_args())), ensure_ascii=False))


if __name__ == "__main__":
    main()
