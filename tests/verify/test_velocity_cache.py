"""The velocity counts of a destination are read at most once a second per process; in between, the figure
is the one read plus this process's own sends (verify.windows). SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.ids import new_ids
from hongyan.db.engine import Database
from hongyan.verify import windows
from hongyan.verify.limits import VerifySettings, effective
from hongyan.verify.models import Verification
from support import AccountFixture


@pytest.fixture(autouse=True)
def _fresh() -> None:
    windows.clear_velocity_cache()


async def _add(db: Database, account_id: str, count: int, at: datetime) -> None:
    rows = []
    for i, vid in enumerate(new_ids("ver", count)):
        rows.append({
            "id": vid, "account_id": account_id, "to_number": f"+2348030{i:06d}", "to_bidx": f"b{vid}",
            "to_country": "NG", "to_prefix": "+234803", "code_hash": "0" * 64, "code_length": 6, "ttl_s": 300,
            "expires_at": at + timedelta(seconds=300), "status": "pending", "max_attempts": 5,
            "last_sent_at": at, "created_at": at, "updated_at": at,
        })
    async with db.write() as session:
        await session.execute(insert(Verification), rows)


async def _recent(db: Database, settings: Settings, account_id: str) -> dict[tuple[str, str], int]:
    async with db.read() as session:
        got = await windows.read_windows(
            session, effective(settings, VerifySettings()), account_id=account_id, to_bidx="bx", client_ip=None,
            api_key_id=None, prefix="+234803", country="NG", velocity_window_s=600, now=utcnow())
    return got.recent


async def test_counts_are_reread_once_a_second_and_own_sends_added_between(
    db: Database, settings: Settings, account: AccountFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = account.account_id
    await _add(db, acc, 5, utcnow() - timedelta(minutes=2))
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 5, ("country", "NG"): 5}
    await _add(db, acc, 40, utcnow() - timedelta(seconds=30))  # a burst from another process
    # within the second: the figure read plus this process's send in between, not the burst yet
    monkeypatch.setattr(windows, "VELOCITY_REREAD_S", 3600.0)
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 6, ("country", "NG"): 6}
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 7, ("country", "NG"): 7}
    # once the figure is older than VELOCITY_REREAD_S it is read again: the burst shows
    monkeypatch.setattr(windows, "VELOCITY_REREAD_S", 0.0)
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 45, ("country", "NG"): 45}
    # another account's figures are its own
    windows.clear_velocity_cache()
    monkeypatch.setattr(windows, "VELOCITY_REREAD_S", 3600.0)
    assert await _recent(db, settings, "acc_other") == {("prefix", "+234803"): 0, ("country", "NG"): 0}
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 45, ("country", "NG"): 45}


async def test_a_full_cache_is_emptied_without_losing_the_figure_being_used(
    db: Database, settings: Settings, account: AccountFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = account.account_id
    await _add(db, acc, 3, utcnow() - timedelta(minutes=1))
    monkeypatch.setattr(windows, "VELOCITY_REREAD_S", 3600.0)
    monkeypatch.setattr(windows, "VELOCITY_CACHE_MAX", 3)
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 3, ("country", "NG"): 3}
    await _recent(db, settings, "acc_other")  # 4 entries now: more than the cache keeps
    # a cached figure used while the cache is emptied: used (3 + this process's send), then kept alone
    assert await _recent(db, settings, acc) == {("prefix", "+234803"): 4, ("country", "NG"): 4}
    assert set(windows._velocity) == {(acc, "prefix", "+234803"), (acc, "country", "NG")}
