"""Helpers shared by tests (importable as `support`; tests/ is on pythonpath)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sqlalchemy import text

from hongyan.db.engine import Database
from hongyan.db.models import metadata
from hongyan.webhooks import service as webhook_service


class AccountFixture:
    def __init__(self, account_id: str, token: str, key_id: str) -> None:
        self.account_id = account_id
        self.token = token
        self.key_id = key_id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


FUNDED = 1_000_000 * 1_000_000  # ¥1,000,000: more than any test sends


async def make_account(
    db: Database, *, name: str = "Acme", scopes: tuple[str, ...] = ("send", "read", "billing", "admin"),
    balance_micros: int = FUNDED, kyc_status: str = "verified",
) -> AccountFixture:
    """An account with an API key and (by default) a balance large enough that billing never gets in the way,
    verified (compliance limits on unverified accounts have their own tests)."""
    from hongyan.accounts import keys, service
    from hongyan.billing.recharge import top_up

    async with db.write() as session:
        account = await service.create_account(session, name=name, kyc_status=kyc_status)
        created = await keys.create_api_key(session, account_id=account.id, name="test", scopes=scopes)
        if balance_micros:
            await top_up(session, account_id=account.id, amount_micros=balance_micros, currency=account.currency,
                         actor="test", note="test funds")
    return AccountFixture(account.id, created.token, created.key.id)


async def approved_signature(db: Database, account_id: str, name: str = "鸿雁", *, default: bool = False) -> str:
    """An approved signature of the account (what a reviewer's approval leaves), for tests that send signed text."""
    from hongyan.compliance.models import Signature
    from hongyan.core import ids
    from hongyan.core.clock import utcnow

    now = utcnow()
    signature_id = ids.new_id("sig")
    async with db.write() as session:
        session.add(Signature(id=signature_id, account_id=account_id, name=name, purpose="test", source="company",
                              status="approved", is_default=default, created_at=now, updated_at=now))
    return signature_id


async def wait_until(predicate: Any, *, timeout: float = 10.0, interval: float = 0.02, message: str = "condition") -> Any:
    """Poll an async predicate until it returns a truthy value or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


async def truncate_all(db: Database) -> None:
    """Empty every table between tests. PostgreSQL: TRUNCATE only the tables that hold rows or whose
    sequence was used (what RESTART IDENTITY would reset) — a TRUNCATE of all 50+ tables costs 0.2–0.5 s
    per test, the probe a few milliseconds."""
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    webhook_service.forget_all_endpoints()  # per-process cache of rows this removes
    async with db.write() as session:
        if db.dialect == "postgresql":
            probe = " UNION ALL ".join(f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in tables)
            dirty = {row[0] for row in (await session.execute(text(probe))).all()}
            used = (await session.execute(text(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL"
            ))).scalars().all()
            dirty.update(t for t in tables for seq in used if seq.startswith(t + "_"))
            if dirty:
                await session.execute(text(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables if t in dirty) + " RESTART IDENTITY CASCADE"))
        else:
            for t in tables:
                await session.execute(text(f'DELETE FROM "{t}"'))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    """The synchronous wait_until, for tests that drive real processes: poll `predicate` until it returns
    something truthy (returned), failing after `timeout` seconds with its last value."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)  # polling interval, bounded by the deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def quiet_window_now(db: Database, account_id: str) -> Any:
    """Give the account a quiet window around the current Shanghai time (2 h before to 2 h after); returns it."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from sqlalchemy import update

    from hongyan.accounts.models import Account
    from hongyan.campaigns import quiet_hours

    local = datetime.now(ZoneInfo("Asia/Shanghai"))
    text = f"{(local - timedelta(hours=2)):%H:%M}-{(local + timedelta(hours=2)):%H:%M}"
    async with db.write() as session:
        await session.execute(update(Account).where(Account.id == account_id).values(quiet_hours=text))
    window = quiet_hours.parse_window(text)
    assert window is not None
    return window
