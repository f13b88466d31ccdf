"""Races of a verification start with the workers on PostgreSQL (row locks; SQLite serializes writers).

Under overload the 500s of POST /v1/verify were deadlocks: a receipt batch that both settles (delivered) and
releases (failed) messages of one account posted two ledger entries in one transaction — `held` locked by
the settlement, then `cash` by the release — while a start's hold locks `cash`, then `held`. The test builds
exactly that interleaving with a third transaction as a gate, and checks that the start is answered 201
without a deadlock (nor a retry hiding one) and the ledger still adds up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from tests.support import AccountFixture, approved_signature, wait_until
from tests.verify.helpers import start

from hongyan.billing import charging, ledger
from hongyan.billing.models import LedgerAccount
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.models import Message


@pytest.fixture
def db_backend() -> str:
    return "postgresql"


@pytest.fixture
async def api(db: Database, settings: Settings, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    """The API alone (no workers: the test plays the receipt worker itself)."""
    from hongyan.app import create_app

    await approved_signature(db, account.account_id, default=True)
    app = create_app(settings, run_workers=False, db=db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=account.headers) as c:
            yield c


async def _lock_waiters(db: Database) -> int:
    async with db.read() as session:
        return int(
            await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            or 0
        )


async def _final_rows(db: Database, message_ids: list[str], outcomes: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The rows messaging.transitions hands to settle_final for these messages reaching these outcomes."""
    async with db.read() as session:
        found = {
            m.id: m for m in (await session.scalars(select(Message).where(Message.id.in_(message_ids)))).all()
        }
    return [
        {
            "id": mid,
            "account_id": found[mid].account_id,
            "status": status,
            "funding": found[mid].funding,
            "billing_state": billing_state,
            "price_micros": found[mid].price_micros,
            "segment_count": found[mid].segment_count,
            "currency": found[mid].currency,
        }
        for mid, (status, billing_state) in zip(message_ids, outcomes, strict=True)
    ]


async def test_a_start_and_a_receipt_batch_that_settles_and_releases_do_not_deadlock(
    api: httpx.AsyncClient, db: Database, account: AccountFixture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hongyan.messaging.submit")
    sent = [await start(api, to=f"+86138001380{i:02d}") for i in range(2)]
    rows = await _final_rows(
        db, [v["message_id"] for v in sent], [("delivered", charging.SETTLED), ("failed", charging.RELEASED)]
    )
    assert {r["funding"] for r in rows} == {charging.CASH}
    revenue = ledger.ledger_id(account.account_id, "revenue", rows[0]["currency"])
    async with db.write() as session:
        await ledger.ensure_account(session, revenue)

    gate_taken, open_gate = asyncio.Event(), asyncio.Event()

    async def gate() -> None:  # holds the revenue row: the receipt batch stops between its two entries
        async with db.write() as session:
            await session.execute(select(LedgerAccount.id).where(LedgerAccount.id == revenue).with_for_update())
            gate_taken.set()
            await open_gate.wait()

    async def receipts() -> None:  # what the receipt worker does for one delivered and one failed message
        async with db.write() as session:
            for r in rows:
                await session.execute(
                    update(Message)
                    .where(Message.id == r["id"])
                    .values(status=r["status"], billing_state=r["billing_state"])
                )
            await charging.settle_final(session, rows, at=utcnow())

    gate_task = asyncio.create_task(gate())
    await gate_taken.wait()
    receipt_task = asyncio.create_task(receipts())
    await wait_until(lambda: _lock_waiters(db), message="the receipt batch waiting at the gate")
    start_task = asyncio.create_task(api.post("/v1/verify", json={"to": "+8613800138099"}))

    async def both_waiting() -> bool:
        return await _lock_waiters(db) >= 2 or start_task.done()

    await wait_until(both_waiting, message="the start waiting for the receipt batch's locks")
    open_gate.set()
    answer, _, _ = await asyncio.wait_for(asyncio.gather(start_task, receipt_task, gate_task), timeout=30)

    assert answer.status_code == 201, answer.text
    assert "transient database error" not in caplog.text  # not even a deadlock retried away
    assert await charging.verify_all(db) == []


class _Deadlock(Exception):
    sqlstate = "40P01"


async def test_a_deadlock_that_outlives_the_retries_is_a_503_with_its_trace_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi import FastAPI
    from sqlalchemy.exc import DBAPIError

    from hongyan.api import errors

    app = FastAPI()
    errors.install(app)

    @app.get("/deadlock")
    async def deadlock() -> None:
        raise DBAPIError("UPDATE ledger_account …", {}, _Deadlock("deadlock detected"))

    @app.get("/other")
    async def other() -> None:
        raise DBAPIError("SELECT …", {}, Exception("syntax error"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        busy = await client.get("/deadlock")
        broken = await client.get("/other")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert busy.json()["error"]["code"] == "database_busy"
    assert broken.status_code == 500 and broken.json()["error"]["code"] == "internal_error"
    traces = [r for r in caplog.records if r.exc_info]
    assert [r.levelname for r in traces] == ["WARNING", "ERROR"] and "Traceback" in caplog.text
