"""The per-process cache of an account's webhook endpoints (webhooks.service._endpoints_by_account)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.webhooks import service
from hongyan.webhooks.models import WebhookEndpoint


async def _endpoint_ids(db: Database, account_id: str) -> list[str]:
    async with db.read() as session:
        return [ep.id for ep in (await service._endpoints_by_account(session, {account_id})).get(account_id, [])]


async def test_changes_made_here_are_seen_at_once_others_within_the_cache_time(
    db: Database, account: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = account.account_id  # type: ignore[attr-defined]
    assert await _endpoint_ids(db, account_id) == []  # cached: none
    async with db.write() as session:
        created, _secret = await service.create_endpoint(session, account_id=account_id, url="https://example.com/h")
    assert await _endpoint_ids(db, account_id) == [created.id]  # this process created it: no wait

    other = ids.new_id("whk")  # another process adds one: this cache does not know yet
    async with db.write() as session:
        await session.execute(insert(WebhookEndpoint.__table__).values(
            id=other, account_id=account_id, url="https://example.com/o", secret="whsec_x", event_types=[],
            description="", enabled=True, created_at=utcnow()))
    assert await _endpoint_ids(db, account_id) == [created.id]
    monkeypatch.setattr(service, "ENDPOINTS_CACHE_S", 0.0)  # the cache time has passed
    assert sorted(await _endpoint_ids(db, account_id)) == sorted([created.id, other])

    monkeypatch.setattr(service, "ENDPOINTS_CACHE_S", 3600.0)
    async with db.write() as session:
        await service.delete_endpoint(session, account_id=account_id, endpoint_id=created.id)
    assert await _endpoint_ids(db, account_id) == [other]  # disabled here: gone at once


async def test_sender_is_woken_only_when_this_process_wrote_events(db: Database, account: object, settings: object) -> None:
    from hongyan.webhooks.sender import WebhookSender

    account_id = account.account_id  # type: ignore[attr-defined]
    sender = WebhookSender(db, settings)  # type: ignore[arg-type]
    try:
        async with db.write() as session:  # no endpoint: no event written
            await service.enqueue_account_event(session, account_id=account_id, event_type="balance.low",
                                                data={}, occurred_at=utcnow())
        sender.nudge()
        assert not sender.wakeup.is_set()
        async with db.write() as session:
            await service.create_endpoint(session, account_id=account_id, url="https://example.com/h")
        async with db.write() as session:
            assert await service.enqueue_account_event(session, account_id=account_id, event_type="balance.low",
                                                       data={}, occurred_at=utcnow()) == 1
        sender.nudge()
        assert sender.wakeup.is_set()
        sender.wakeup.clear()
        sender.nudge()  # nothing new since
        assert not sender.wakeup.is_set()
    finally:
        await sender.close()
