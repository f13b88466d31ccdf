"""Production mode, proven with real processes: API (`serve --no-workers`) and two workers on PostgreSQL and
RabbitMQ send a 20,000-message campaign to the SMSC simulator; one worker and then the API are killed with
SIGKILL mid-run and restarted. Afterwards every accepted message has exactly one final state, the simulator
saw each message once except those a killed worker had submitted without committing (counted from the
survivors' takeovers, and reported), the ledger is exact, and webhooks arrived at least once per event with
stable event ids."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from hongyan.db.engine import Database
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.states import FINAL
from production.procs import Proc, WebhookSink, api_key, cli, production_env, wait_for
from support import free_port, truncate_all

pytestmark = pytest.mark.slow

N = 20_000
FINAL_VALUES = sorted(s.value for s in FINAL)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _clean(db_url: str) -> None:
    db = Database(db_url)
    await truncate_all(db)
    await db.dispose()


async def _load_audience(db_url: str, n: int) -> tuple[str, str]:
    """n contacts in one group of the bootstrap account (quiet hours off for it)."""
    from hongyan.accounts.models import Account
    from hongyan.accounts.permissions import Authority
    from hongyan.campaigns import contacts
    from hongyan.campaigns.rows import ContactDraft

    db = Database(db_url)
    try:
        async with db.write() as session:
            account_id = await session.scalar(select(Account.id).order_by(Account.created_at).limit(1))
            await session.execute(update(Account).where(Account.id == account_id).values(quiet_hours="off"))
        authority = Authority.of_member(account_id=account_id, user_id="usr_test", role="owner")
        async with db.write() as session:
            group = await contacts.create_group(session, authority=authority, name="crash test")
        for start in range(0, n, 5000):
            drafts = [ContactDraft(row=i, phone=f"+8613{i:08d}9", country="CN", name=f"客户{i}", fields={})
                      for i in range(start, min(n, start + 5000))]
            async with db.write() as session:
                await contacts.upsert_contacts(session, account_id=account_id, drafts=drafts, group_id=group.id)
        return account_id, group.id
    finally:
        await db.dispose()


async def _counts(db_url: str, batch_filter: Any = None) -> dict[str, int]:
    db = Database(db_url)
    try:
        async with db.read() as session:
            return dict((await session.execute(select(Message.status, func.count()).group_by(Message.status))).all())
    finally:
        await db.dispose()


async def _expire_lost_receipts(db_url: str) -> int:
    """Messages whose receipt the simulator sent to the killed worker (it never resends an unacknowledged
    deliver_sm, a real SMSC would): let their validity end now, as it would later, so the sweep expires them."""
    from hongyan.core.clock import utcnow

    db = Database(db_url)
    try:
        async with db.write() as session:
            result = await session.execute(update(Message).where(Message.status == "sent").values(expires_at=utcnow()))
            return int(result.rowcount or 0)
    finally:
        await db.dispose()


async def _double_finals(db_url: str) -> int:
    db = Database(db_url)
    try:
        async with db.read() as session:
            per_message = (select(MessageEvent.message_id).where(MessageEvent.status.in_(FINAL_VALUES))
                           .group_by(MessageEvent.message_id).having(func.count() > 1)).subquery()
            return int(await session.scalar(select(func.count()).select_from(per_message)) or 0)
    finally:
        await db.dispose()


def test_kill9_worker_and_api_mid_campaign(tmp_path: Path, pg_url: str, amqp_url: str, rabbit_prefix: str) -> None:
    from smsc import SmscSim

    _run(_clean(pg_url))
    port = free_port()
    env = production_env(tmp_path, pg_url, amqp_url, rabbit_prefix, HONGYAN_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    with SmscSim(MESSAGES_KEEP="60000").start() as sim, WebhookSink() as sink:
        cli(env, "migrate")
        cli(env, "channel", "add", "sim", "--kind", "smpp",
            *(f"{k}={v}" for k, v in sim.channel_config(binds=2, window=50).items()))
        cli(env, "route", "add", "sim")
        api = Proc("api", ["serve", "--no-workers"], env, tmp_path)
        workers = [Proc(f"worker-{i}", ["worker"], env, tmp_path) for i in (1, 2)]
        try:
            banner = api.start(f"http:{base}")
            key = api_key(banner)
            headers = {"Authorization": f"Bearer {key}"}
            for w in workers:
                w.start("worker running")
            _account_id, group_id = _run(_load_audience(pg_url, N))
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                r = c.post("/v1/webhooks", json={"url": sink.url, "event_types": [
                    "message.delivered", "message.undelivered", "message.expired", "message.rejected"]})
                assert r.status_code == 201, r.text
                r = c.post("/v1/campaigns", json={"name": "crash", "text": "{name|客户}您好，订单已发货。",
                                                  "group_ids": [group_id], "message_type": "notification"})
                assert r.status_code in (200, 201), r.text
                campaign_id = r.json()["id"]
                assert c.post(f"/v1/campaigns/{campaign_id}/start").status_code in (200, 202)

            wait_for(lambda: sim.stats()["submit_sm"] >= N // 4, 180, "a quarter of the campaign at the SMSC")
            # at most `binds` sessions at the SMSC across both workers (bind leases)
            assert sim.stats()["sessions_bound"] <= 2, sim.stats()
            workers[0].kill9()
            wait_for(lambda: sim.stats()["submit_sm"] >= N // 2, 180, "half of the campaign at the SMSC")
            api.kill9()
            api.start(f"http:{base}")
            workers[0].start("worker running")

            def settled() -> dict[str, int] | None:
                counts = _run(_counts(pg_url))
                waiting = sum(n for s, n in counts.items() if s not in FINAL_VALUES and s != "sent")
                return counts if waiting == 0 and sum(counts.values()) == N else None

            wait_for(settled, 300, "every message submitted", interval=1.0)
            # receipts still on their way arrive; those the simulator sent to the killed worker never will
            previous: list[int] = [-1]

            def receipts_quiet() -> bool:
                sent = _run(_counts(pg_url)).get("sent", 0)
                stable = sent == previous[0]
                previous[0] = sent
                return stable

            wait_for(receipts_quiet, 60, "receipts to stop arriving", interval=2.0)
            stats = sim.stats()
            unanswered = stats["dlr_sent"] - stats["dlr_acked"] - stats["dlr_nacked"]
            lost = _run(_expire_lost_receipts(pg_url))
            assert lost <= unanswered, (lost, stats)
            final = wait_for(lambda: (c := _run(_counts(pg_url))) and set(c) <= set(FINAL_VALUES) and c, 60,
                             "every message final")
            assert sum(final.values()) == N
            assert _run(_double_finals(pg_url)) == 0, "a message reached two final states"

            # the simulator: each message once, except those taken over after the kill (reported)
            seen = Counter(m["dest"] for m in sim.messages(limit=60_000))
            assert len(seen) == N, f"{N - len(seen)} messages never reached the SMSC"
            duplicates = sum(n - 1 for n in seen.values() if n > 1)
            takeovers = sum(int(x.split()[0]) for w in workers for x in w.output.split("took over ")[1:])
            print(f"\ncrash test: {duplicates} duplicate submits, {takeovers} messages taken over, "
                  f"{lost} receipts lost with the killed worker, final {final}")
            assert duplicates <= takeovers, (duplicates, takeovers)

            # money: nothing held, the ledger agrees with the messages
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                balance = c.get("/v1/billing/balance").json()
                assert balance["held"] == "0.00", balance
            verified = cli(env, "billing", "verify")
            assert "ledger OK" in verified, verified

            # webhooks: every final message announced at least once; a repeat keeps its event id
            def announced() -> bool:
                got = {e["data"]["message_id"] for e in sink.snapshot()}
                return len(got) >= N
            wait_for(announced, 180, "a webhook for every final message", interval=1.0)
            events = sink.snapshot()
            by_id: dict[str, set[tuple[str, str]]] = {}
            for e in events:
                by_id.setdefault(e["id"], set()).add((e["type"], e["data"]["message_id"]))
            assert all(len(v) == 1 for v in by_id.values()), "an event id reused for another event"
            per_message = Counter((e["data"]["message_id"], e["type"]) for e in {e["id"]: e for e in events}.values())
            assert max(per_message.values()) == 1, "two event ids for one message's final status"
        finally:
            for p in [*workers, api]:
                p.terminate(timeout=30)
