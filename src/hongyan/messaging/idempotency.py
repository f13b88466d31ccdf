"""Idempotency-Key: the first response to a request is stored with the messages it created (same
transaction); a retry with the same key and body gets that response back and sends nothing again."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.core.clock import utcnow
from hongyan.core.errors import Unprocessable
from hongyan.db.engine import Database
from hongyan.messaging.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Unprocessable(
            "invalid_idempotency_key", f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} printable characters.",
            field="Idempotency-Key",
        )
    return key


async def find(db: Database, *, account_id: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
    async with db.read() as session:
        record = await session.scalar(
            select(IdempotencyRecord).where(IdempotencyRecord.account_id == account_id, IdempotencyRecord.key == key)
        )
    if record is not None and record.request_hash != fingerprint:
        raise Unprocessable(
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request; use a new key for a new request.",
            field="Idempotency-Key",
        )
    return record


async def store(session: AsyncSession, *, account_id: str, key: str, fingerprint: str, status_code: int, body: bytes) -> None:
    session.add(IdempotencyRecord(account_id=account_id, key=key, request_hash=fingerprint, status_code=status_code,
                                  response_body=body, created_at=utcnow()))
    await session.flush()


def is_conflict(exc: Exception) -> bool:
    return isinstance(exc, IntegrityError)
