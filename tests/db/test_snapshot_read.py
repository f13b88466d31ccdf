"""`Database.read(snapshot=True)`: all statements of the session see one committed state (an answer built
from several reads, such as a campaign and its runs, never mixes before and after another commit)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from hongyan.accounts.models import Account
from hongyan.db.engine import Database
from support import AccountFixture


@pytest.mark.parametrize("snapshot", [True, False])
async def test_a_snapshot_read_does_not_see_a_commit_made_after_its_first_statement(
    db: Database, account: AccountFixture, snapshot: bool
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite: a read transaction is a snapshot whatever is asked (WAL)")
    query = select(Account.name).where(Account.id == account.account_id)
    async with db.read(snapshot=snapshot) as session:
        before = await session.scalar(query)
        async with db.write() as writer:
            await writer.execute(update(Account).where(Account.id == account.account_id).values(name="renamed"))
        after = await session.scalar(query)
    assert before != "renamed"
    assert after == (before if snapshot else "renamed")  # READ COMMITTED sees the commit: the race it removes
