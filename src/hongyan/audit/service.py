"""Record changes in the hash-chained audit log, and verify the chain.

Call `record()` inside the transaction that makes the change, so the entry exists exactly when the change
does. Entries are serialized on the one `audit_head` row (FOR UPDATE on PostgreSQL; SQLite writers are
serialized already): each gets the next sequence number and links to the previous hash.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Select, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.models import AuditEntry, AuditHead
from hongyan.core.clock import isoformat, utcnow

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from hongyan.accounts.keys import AccountContext
    from hongyan.db.engine import Database

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


def actor_for_api(ctx: AccountContext, request: HTTPConnection) -> Actor:
    """The API key that made a request (or the user, for calls made on a user's behalf), from its client IP."""
    from hongyan.api.client import client_ip

    if ctx.key_id is None and ctx.user_id is not None:
        return Actor("user", ctx.user_id, None, client_ip(request))
    return Actor("api_key", ctx.key_id, ctx.key_name, client_ip(request))


def actor_for_cli() -> Actor:
    """A command run on the server (`hongyan …`): labelled with the operating-system user."""
    import getpass

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        who = None
    return Actor("cli", None, who)


def actor_for_console(console: Any) -> Actor:
    """The signed-in console user (`hongyan.console.context.Console`): user id, email, client IP."""
    from hongyan.api.client import client_ip

    user = console.user
    assert user is not None, "route must depend on SignedIn"
    return Actor("user", user.user_id, user.email, client_ip(console.request))


def _redact_value(key: str, value: Any) -> Any:
    if key.rsplit(".", 1)[-1] in REDACTED_KEYS and value is not None:  # "config.password" too
        return "[redacted]"
    if isinstance(value, dict):  # nested settings (a channel's config holds its SMPP password)
        return {k: _redact_value(k, v) for k, v in value.items()}
    return value


def redact(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Known secret and personal keys become "[redacted]", at any depth of nested objects."""
    if values is None:
        return None
    return {k: _redact_value(k, v) for k, v in values.items()}


def _as_stored(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """Redacted and put through JSON once, so the hash covers exactly what the database gives back
    (datetimes become ISO text, tuples lists, keys strings)."""
    cleaned = redact(values)
    if cleaned is None:
        return None
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(cleaned, option=orjson.OPT_NON_STR_KEYS))
    return loaded


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
    # columns, not the ORM object: a second record() in the same transaction must see the new head, and
    # an identity-mapped AuditHead would keep its first-loaded values
    head_query = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect == "postgresql":
        head_query = head_query.with_for_update()
    head = (await session.execute(head_query)).first()
    if head is None:  # the migration seeds the row; this covers an emptied table (concurrent first writers too)
        seed = (pg_insert if dialect == "postgresql" else sqlite_insert)(AuditHead.__table__)
        await session.execute(seed.values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing())
        head = (await session.execute(head_query)).one()
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
        "before": _as_stored(before),
        "after": _as_stored(after),
    }
    row["prev_hash"] = head.hash
    row["hash"] = entry_hash(head.hash, row)
    await session.execute(insert(AuditEntry.__table__), [row])
    await session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=row["seq"], hash=row["hash"]))
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
    and the head row pointing at the last entry.

    The head is read first and the walk stops at its seq: the head moves in the transaction that appends, so
    every entry up to it is committed, and entries appended while the check runs are left for the next one
    (no false alarm on a busy platform)."""
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).first()
    prev_hash, expected_seq, count = GENESIS, 1, 0
    while True:
        query = select(AuditEntry.__table__).where(AuditEntry.seq >= expected_seq)
        if head is not None:
            query = query.where(AuditEntry.seq <= head.seq)
        rows = (await session.execute(query.order_by(AuditEntry.seq).limit(batch))).mappings().all()
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
    if head is not None and head.seq > count:
        return VerifyResult(count, False, count + 1,
                            f"the chain head says {head.seq} entries, the table has {count}: entries were removed at the end")
    if head is not None and head.hash != prev_hash:
        return VerifyResult(count, False, count, f"the chain head does not match entry {count}")
    return VerifyResult(count, True)


# -- reading ------------------------------------------------------------------------------------
MAX_PAGE = 500
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
EXPORT_COLUMNS = ("seq", "occurred_at", "account_id", "actor_type", "actor_id", "actor_label", "ip", "action",
                  "target_type", "target_id", "before", "after", "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What to look for. `account_id` None: every account and the platform's own entries (staff only)."""

    account_id: str | None
    action: str | None = None  # prefix: "billing." matches billing.top_up, billing.adjusted, …
    actor: str | None = None  # actor id (key_…, usr_…) or label (email, key name)
    target_id: str | None = None
    since: datetime | None = None  # occurred at or after
    until: datetime | None = None  # occurred before


def _utc_bound(value: datetime | None) -> datetime | None:
    """A bound in UTC; one that falls outside the representable years (0001-01-01T00:00+01:00) bounds nothing."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


def _filtered(query: Select[Any], f: AuditFilter) -> Select[Any]:
    if f.account_id is not None:
        query = query.where(AuditEntry.account_id == f.account_id)
    if f.action:
        query = query.where(AuditEntry.action.startswith(f.action, autoescape=True))
    if f.actor:
        query = query.where(or_(AuditEntry.actor_id == f.actor, AuditEntry.actor_label == f.actor))
    if f.target_id:
        query = query.where(AuditEntry.target_id == f.target_id)
    since, until = _utc_bound(f.since), _utc_bound(f.until)
    if since is not None:
        query = query.where(AuditEntry.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEntry.occurred_at < until)
    return query


async def search(
    session: AsyncSession, *, filters: AuditFilter, cursor: int | None = None, limit: int = 50
) -> tuple[list[AuditEntry], int | None]:
    """Newest first; `cursor` is the `next_cursor` of the previous page (entries with a lower seq)."""
    query = _filtered(select(AuditEntry), filters)
    if cursor is not None:
        query = query.where(AuditEntry.seq < cursor)
    rows = list(await session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].seq if len(rows) > limit else None
    return rows[:limit], next_cursor


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "occurred_at": isoformat(e.occurred_at), "account_id": e.account_id,
            "actor": {"type": e.actor_type, "id": e.actor_id, "label": e.actor_label}, "ip": e.ip,
            "action": e.action, "target_type": e.target_type, "target_id": e.target_id,
            "before": e.before, "after": e.after, "prev_hash": e.prev_hash, "hash": e.hash}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, datetime):
        return isoformat(value) or ""
    text = str(value)
    # a spreadsheet would run a cell starting like a formula (key names and labels are typed by people); an
    # apostrophe itself is escaped too, so a reader drops exactly one leading apostrophe to get the value back
    return "'" + text if text[:1] in FORMULA_STARTS else text


async def export_csv(db: Database, filters: AuditFilter, *, batch: int = 1000) -> AsyncIterator[bytes]:
    """The matching entries oldest first as CSV (UTF-8 with BOM for Excel), read and sent in batches."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    yield ("\ufeff" + buffer.getvalue()).encode()
    last = 0
    while True:
        async with db.read() as session:
            query = _filtered(select(AuditEntry.__table__), filters).where(AuditEntry.seq > last)
            rows = (await session.execute(query.order_by(AuditEntry.seq).limit(batch))).mappings().all()
        if not rows:
            return
        buffer.seek(0)
        buffer.truncate()
        for row in rows:
            writer.writerow([_cell(row[c]) for c in EXPORT_COLUMNS])
        yield buffer.getvalue().encode()
        last = rows[-1]["seq"]
