"""kill -9 of the whole embedded server mid-run: after a restart every accepted message reaches a final
state, exactly once in the history, nothing accepted is lost, and every message is charged exactly once
(`hongyan billing verify` agrees)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from production.procs import Proc, api_key
from support import free_port, wait_for


class Server(Proc):
    """`hongyan serve` with embedded workers on the sandbox carrier."""

    def __init__(self, data_dir: Path, db_url: str) -> None:
        port = free_port()
        env = dict(
            os.environ,
            HONGYAN_DATA_DIR=str(data_dir),
            HONGYAN_DATABASE_URL=db_url,
            HONGYAN_PORT=str(port),
            HONGYAN_SANDBOX_DELAY_MS="1500",  # many messages are `sent` and owed a receipt at the kill
            HONGYAN_SANDBOX_OUTCOMES="delivered:90,undelivered:10",
        )
        super().__init__("server", ["serve"], env, data_dir)
        self.base = f"http://127.0.0.1:{port}"
        self.run_output = ""  # this run's output (the log file keeps every run)

    def start_serving(self) -> str:
        """Start, wait for /health; returns the API key of a first start ('' on a restart)."""
        self.run_output = self.start(f"http:{self.base}", timeout=60)
        return api_key(self.run_output)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_then_restart_finishes_every_message(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgresql":
        db_url = request.getfixturevalue("pg_url")
        # the session database is shared with other tests: start from empty tables
        import asyncio

        from hongyan.db.engine import Database
        from support import truncate_all

        async def clean() -> None:
            d = Database(db_url)
            await truncate_all(d)
            await d.dispose()

        asyncio.run(clean())
    else:
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    server = Server(tmp_path, db_url)
    try:
        key = server.start_serving()
        assert key, server.run_output
        headers = {"Authorization": f"Bearer {key}"}
        accepted: list[str] = []
        with httpx.Client(base_url=server.base, headers=headers, timeout=30) as c:
            for batch in range(5):
                recipients = [f"+86139{batch:02d}{i + 100:06d}" for i in range(400)]
                r = c.post("/v1/batches", json={"text": f"crash test {batch}", "recipients": recipients})
                assert r.status_code == 202, r.text
                accepted += [m["id"] for m in r.json()["messages"]]
                bid = r.json()["id"]

            def some_sent() -> bool:
                b = c.get(f"/v1/batches/{bid}").json()["counts"]
                return b["sent"] > 0 or b["delivered"] > 0

            wait_for(some_sent, 30, "messages in flight")
        server.kill9()

        key2 = server.start_serving()  # restart on the same database
        assert key2 == "", "restart must not bootstrap again"
        with httpx.Client(base_url=server.base, headers=headers, timeout=30) as c:
            def all_final() -> bool:
                total = 0
                cursor = None
                while True:
                    params = {"status": "delivered,undelivered", "limit": 1000}
                    if cursor:
                        params["cursor"] = cursor
                    page = c.get("/v1/messages", params=params).json()
                    total += len(page["data"])
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
                return total == len(accepted)

            wait_for(all_final, 120, "every message final after restart")
            assert "recovered" in server.run_output, server.run_output
            for mid in accepted[::97]:
                events = [e["status"] for e in c.get(f"/v1/messages/{mid}").json()["events"]]
                final = [e for e in events if e in ("delivered", "undelivered")]
                assert len(final) == 1, events
                assert events[0] == "accepted"
            # nothing double-charged: every message held once and settled once (delivered and undelivered
            # both reached the carrier), from the ¥100 first-start credit
            balance = c.get("/v1/billing/balance").json()
            assert balance["held"] == "0.00", balance
            assert balance["balance_micros"] == 100_000_000 - len(accepted) * 40_000, balance
        verified = subprocess.run([sys.executable, "-m", "hongyan.cli", "billing", "verify"], env=server.env,
                                  capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0 and "ledger OK" in verified.stdout, verified.stdout + verified.stderr
    finally:
        server.terminate(timeout=15)
