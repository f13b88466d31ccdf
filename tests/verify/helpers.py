"""Shared steps of the verify tests: start, read the code from the stored message (the API never returns
it for live keys), move time back in the database instead of sleeping."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from hongyan.db.engine import Database
from hongyan.messaging.models import Message
from hongyan.verify.models import Verification

NUMBER = "+8613800138000"


async def start(client: httpx.AsyncClient, to: str = NUMBER, **extra: Any) -> dict[str, Any]:
    r = await client.post("/v1/verify", json={"to": to, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def sent_code(db: Database, verification: dict[str, Any]) -> str:
    """The code in the body of the verification's latest message (as the phone received it)."""
    async with db.read() as session:
        body = await session.scalar(select(Message.body).where(Message.id == verification["message_id"]))
    assert body is not None
    match = re.search(rf"(?<!\d)(\d{{{verification['code_length']}}})(?!\d)", body)
    assert match, body
    return match.group(1)


async def move_back(db: Database, seconds: float, *, verification_id: str | None = None) -> None:
    """Pretend `seconds` passed: every verification message and verification (or one) gets older. Row by row
    in Python (the UTC column type stores text on SQLite: no date arithmetic in SQL)."""
    delta = timedelta(seconds=seconds)
    async with db.write() as session:
        rows = select(Verification)
        if verification_id is not None:
            rows = rows.where(Verification.id == verification_id)
        verifications = list((await session.scalars(rows)).all())
        messages = select(Message.id, Message.created_at).where(Message.message_type == "verification")
        if verification_id is not None:
            messages = messages.where(Message.id.in_([v.message_id for v in verifications]))
        for message_id, created_at in (await session.execute(messages)).all():
            await session.execute(
                update(Message).where(Message.id == message_id).values(created_at=created_at - delta)
            )
        for v in verifications:
            v.created_at, v.last_sent_at, v.expires_at = (
                v.created_at - delta,
                v.last_sent_at - delta,
                v.expires_at - delta,
            )
