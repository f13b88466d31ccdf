"""Record changes in the hash-chained audit log, and verify the chain.

Call `record()` inside the transaction that makes the change, so the entry exists exactly when the change
does. Entries are serialized on the one `audit_head` row (FOR UPDATE on PostgreSQL; SQLite writers are
serialized already): each gets the next sequence number and links to the previous hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.models import AuditEntry, AuditHead
from hongyan.core.clock import isoformat, utcnow

GENESIS = "0" * 64
# never written into before/after: secrets and personal data (the log is kept longer than content)
REDACTED_KEYS = frozenset(
    {"password", "password_hash", "secret", "secret_hash", "signing_secret", "token", "key", "mfa_secret",
     "mfa_recovery_hashes", "to", "to_number", "from_number", "body", "text", "number", "phone"}
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a console user, an API key, the CLI, or the platform itself; and from where."""

    type: str  # user | api_key | cli | system
    id: str | None = None
    label: str | None = None
    ip: str | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls("system", None, label)


def redact(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: ("[redacted]" if k in REDACTED_KEYS and v is not None else v) for k, v in values.items()}


def entry_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the row's canonical JSON (sorted keys, UTC ISO times)."""
    canonical = {
        "seq": row["seq"],
        "occurred_at": isoformat(row["occurred_at"]),
        "account_id": row["account_id"],
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "actor_label": row["actor_label"],
        "ip": row["ip"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "before": row["before"],
        "after": row["after"],
    }
    data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev_hash.encode() + data).hexdigest()


async def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    account_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> int:
    """Append one entry (inside the caller's transaction); returns its sequence number."""
    head_query = select(AuditHead).where(AuditHead.id == 1)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        head_query = head_query.with_for_update()
    head = (await session.execute(head_query)).scalar_one_or_none()
    if head is None:  # first entry ever (the migration seeds the row; this covers a hand-made database)
        session.add(AuditHead(id=1, seq=0, hash=GENESIS))
        await session.flush()
        head = (await session.execute(head_query)).scalar_one()
    row: dict[str, Any] = {
        "seq": head.seq + 1,
        "occurred_at": occurred_at or utcnow(),
        "account_id": account_id,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_label": actor.label,
        "ip": actor.ip,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "before": redact(before),
        "after": redact(after),
    }
    row["prev_hash"] = head.hash
    row["hash"] = entry_hash(head.hash, row)
    await session.execute(insert(AuditEntry.__table__), [row])
    await session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=row["seq"], hash=row["hash"]))
    head.seq, head.hash = row["seq"], row["hash"]
    return int(row["seq"])


def changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that differ, as (before, after): what an edit entry should show."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    entries: int
    ok: bool
    first_bad_seq: int | None = None
    problem: str | None = None


async def verify_chain(session: AsyncSession, *, batch: int = 5000) -> VerifyResult:
    """Walk the chain in order: gap-free sequence, each prev_hash = the previous hash, each hash recomputed,
    and the head row pointing at the last entry."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    last_seq = 0
    while True:
        rows = (
            await session.execute(
                select(AuditEntry.__table__).where(AuditEntry.seq > last_seq).order_by(AuditEntry.seq).limit(batch)
            )
        ).mappings().all()
        if not rows:
            break
        for row in rows:
            if row["seq"] != expected_seq:
                return VerifyResult(count, False, expected_seq, f"entry {expected_seq} is missing")
            if row["prev_hash"] != prev_hash:
                return VerifyResult(count, False, row["seq"], f"entry {row['seq']} does not link to entry {row['seq'] - 1}")
            if entry_hash(prev_hash, dict(row)) != row["hash"]:
                return VerifyResult(count, False, row["seq"], f"entry {row['seq']} was altered")
            prev_hash, expected_seq, count = row["hash"], expected_seq + 1, count + 1
            last_seq = row["seq"]
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    if head is not None and (head.seq != count or head.hash != prev_hash):
        return VerifyResult(count, False, count + 1 if head.seq > count else head.seq,
                            f"the chain head says {head.seq} entries, the table has {count} (entries removed at the end?)")
    return VerifyResult(count, True)
