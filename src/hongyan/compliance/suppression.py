"""The per-account suppression list: numbers the account must not send to (opt-out replies, people, files).

An entry is (account, blind index of the E.164 number, scope); scope is a signature id, or "" for every
message of the account. The number itself is sealed at rest; lookups go through its blind index only.
`suppressed()` is what the submit gate (compliance.gate) asks, once per chunk of recipients.

Who wins when the same number is added twice: the first entry stays (its date and reason). An entry
that a reply added becomes a person's entry when a person adds it again (source manual/api/import), so a
later START reply — which only undoes the person's own opt-outs (compliance.replies) — leaves it alone.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import String, and_, delete, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.service import Actor, record
from hongyan.compliance.models import Signature, Suppression
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import InvalidRequest, NotFound, Unprocessable
from hongyan.messaging.numbers import NumberProblem, normalize

ACCOUNT_SCOPE = ""  # the entry applies to every message of the account
SOURCES = ("reply", "manual", "api", "import")
PEOPLE_SOURCES = ("manual", "api", "import")
MAX_NUMBERS_PER_REQUEST = 10_000
NOTE_CHARS = 200
WRITE_CHUNK = 1_000  # rows per INSERT (9 columns: well under SQLite's and asyncpg's parameter limits)
SQLITE_IN_CHUNK = 30_000  # SQLite ≥ 3.32 allows 32,766 parameters per statement
_TABLE = Suppression.__table__
_TEXT_ARRAY = ARRAY(String)


# -- numbers ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RejectedNumber:
    index: int
    number: str
    code: str
    message: str
    field: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "number": self.number,
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }


@dataclass(slots=True)
class ParsedNumbers:
    e164: list[str] = field(default_factory=list)  # valid, without repeats, in the order given
    rejected: list[RejectedNumber] = field(default_factory=list)


def parse_numbers(values: Sequence[str], region: str, *, field_name: str = "numbers") -> ParsedNumbers:
    """Each value → E.164 with the account's region, or a per-number problem at `numbers[i]`. A number
    given twice is kept once (not an error: the list is a set)."""
    out, seen = ParsedNumbers(), set()
    for i, raw in enumerate(values):
        try:
            e164 = normalize(raw, region).e164
        except NumberProblem as exc:
            out.rejected.append(RejectedNumber(i, raw[:40], exc.code, exc.message, f"{field_name}[{i}]"))
            continue
        if e164 not in seen:
            seen.add(e164)
            out.e164.append(e164)
    return out


def parse_one(raw: str, region: str, *, field_name: str = "number") -> str:
    try:
        return normalize(raw, region).e164
    except NumberProblem as exc:
        raise Unprocessable(exc.code, exc.message, field=field_name) from exc


# -- scopes ---------------------------------------------------------------------------------------
async def check_scope(
    session: AsyncSession, account_id: str, scope: str | None, *, field_name: str = "scope"
) -> str:
    """ "" for account-wide (None, "" or "account"), else a signature id of this account."""
    if scope in (None, "", "account"):
        return ACCOUNT_SCOPE
    assert scope is not None
    found = await session.scalar(
        select(Signature.id).where(Signature.account_id == account_id, Signature.id == scope)
    )
    if found is None:
        raise Unprocessable(
            "unknown_signature",
            f"The scope '{scope[:40]}' is not a signature of this account; "
            "use a signature id (sig_…) or omit it for every message.",
            field=field_name,
        )
    return str(found)


async def signature_names(session: AsyncSession, account_id: str) -> dict[str, str]:
    rows = await session.execute(
        select(Signature.id, Signature.name).where(Signature.account_id == account_id)
    )
    return {r.id: r.name for r in rows}


# -- lookups --------------------------------------------------------------------------------------
async def suppressed(
    session: AsyncSession, account_id: str, bidxs: Sequence[str], scopes: Sequence[str]
) -> set[str]:
    """The blind indexes among `bidxs` that are suppressed for ANY of `scopes` ("" = account-wide).

    The submit gate calls this once per chunk of up to 10,000 recipients: one query (PostgreSQL binds the
    list as one array; SQLite gets an IN list, split only beyond its parameter limit)."""
    if not bidxs or not scopes:
        return set()
    wanted = list(dict.fromkeys(bidxs))
    scope_list = list(dict.fromkeys(scopes))
    base = [_TABLE.c.account_id == account_id, _TABLE.c.scope.in_(scope_list)]
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = select(_TABLE.c.number_bidx).where(
            *base, _TABLE.c.number_bidx == func.any(literal(wanted, _TEXT_ARRAY))
        )
        return set((await session.scalars(query)).all())
    found: set[str] = set()
    for i in range(0, len(wanted), SQLITE_IN_CHUNK):
        query = select(_TABLE.c.number_bidx).where(
            *base, _TABLE.c.number_bidx.in_(wanted[i : i + SQLITE_IN_CHUNK])
        )
        found.update((await session.scalars(query)).all())
    return found


async def is_suppressed(
    session: AsyncSession, account_id: str, e164: str, scopes: Sequence[str] = (ACCOUNT_SCOPE,)
) -> bool:
    bidx = blind_index(e164)
    assert bidx is not None
    return bool(await suppressed(session, account_id, [bidx], scopes))


# -- changes --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AddOutcome:
    added: int  # new entries
    existing: int  # already on the list in that scope (left as they were, or taken over by a person)


async def add(
    session: AsyncSession,
    account_id: str,
    numbers: Sequence[str],
    scope: str = ACCOUNT_SCOPE,
    source: str = "manual",
    keyword: str | None = None,
    inbound_id: str | None = None,
    note: str | None = None,
    *,
    now: datetime | None = None,
) -> AddOutcome:
    """Put E.164 `numbers` on the list in `scope` (idempotent: a number already there stays as it was,
    except that a person's add takes over an entry a reply made). Call inside the caller's transaction."""
    if source not in SOURCES:
        raise ValueError(f"unknown suppression source {source!r}")
    now = now or utcnow()
    by_bidx: dict[str, str] = {}
    for number in numbers:
        bidx = blind_index(number)
        assert bidx is not None
        by_bidx.setdefault(bidx, number)
    if not by_bidx:
        return AddOutcome(0, 0)
    existing = await suppressed(session, account_id, list(by_bidx), [scope])
    new = [
        {
            "account_id": account_id,
            "number_bidx": bidx,
            "scope": scope,
            "number": number,
            "source": source,
            "keyword": keyword[:32] if keyword else None,
            "inbound_id": inbound_id,
            "note": note[:NOTE_CHARS] if note else None,
            "created_at": now,
        }
        for bidx, number in by_bidx.items()
        if bidx not in existing
    ]
    dialect_insert = pg_insert if _is_postgres(session) else sqlite_insert
    conn = await session.connection()
    for i in range(0, len(new), WRITE_CHUNK):
        # do nothing on conflict: a concurrent add of the same number (two replies at once) is no error
        await conn.execute(dialect_insert(_TABLE).on_conflict_do_nothing(), new[i : i + WRITE_CHUNK])
    if existing and source in PEOPLE_SOURCES:
        taken = list(existing)
        for i in range(0, len(taken), WRITE_CHUNK):
            values: dict[str, Any] = {"source": source}
            if note:
                values["note"] = note[:NOTE_CHARS]
            await conn.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.account_id == account_id,
                    _TABLE.c.scope == scope,
                    _TABLE.c.source == "reply",
                    _TABLE.c.number_bidx.in_(taken[i : i + WRITE_CHUNK]),
                )
                .values(values)
            )
    return AddOutcome(len(new), len(existing))


async def remove(
    session: AsyncSession,
    account_id: str,
    numbers: Sequence[str],
    scope: str | None = ACCOUNT_SCOPE,
    *,
    sources: Iterable[str] | None = None,
    scopes: Sequence[str] | None = None,
) -> int:
    """Take E.164 `numbers` off the list: in `scope` ("" account-wide, a signature id), in any of `scopes`,
    or in every scope (`scope=None`); only entries of `sources` when given. Returns entries removed."""
    bidxs = [b for b in (blind_index(n) for n in numbers) if b is not None]
    if not bidxs:
        return 0
    cond = [_TABLE.c.account_id == account_id, _TABLE.c.number_bidx.in_(bidxs)]
    if scopes is not None:
        cond.append(_TABLE.c.scope.in_(list(scopes)))
    elif scope is not None:
        cond.append(_TABLE.c.scope == scope)
    if sources is not None:
        cond.append(_TABLE.c.source.in_(list(sources)))
    result = await (await session.connection()).execute(delete(_TABLE).where(*cond))
    return int(result.rowcount or 0)


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


# -- people's changes (API and console), audited -----------------------------------------------------
async def add_by_person(
    session: AsyncSession,
    *,
    account_id: str,
    actor: Actor,
    numbers: Sequence[str],
    scope: str,
    source: str,
    note: str | None = None,
    rejected: int = 0,
) -> AddOutcome:
    """`add` for a person (console, API key, import), with one audit entry (counts, never the numbers)."""
    outcome = await add(session, account_id, numbers, scope, source, note=note)
    await audit_add(
        session,
        account_id=account_id,
        actor=actor,
        numbers=numbers,
        scope=scope,
        source=source,
        note=note,
        outcome=outcome,
        rejected=rejected,
    )
    return outcome


async def audit_add(
    session: AsyncSession,
    *,
    account_id: str,
    actor: Actor,
    numbers: Sequence[str],
    scope: str,
    source: str,
    note: str | None,
    outcome: AddOutcome,
    rejected: int,
) -> None:
    """The audit entry of a person's add: who, how many, which scope (a single number by blind index)."""
    await record(
        session,
        actor=actor,
        action="suppression.add",
        account_id=account_id,
        target_type="suppression",
        target_id=_audit_target(numbers),
        after={
            "source": source,
            "scope": scope or "account",
            "added": outcome.added,
            "existing": outcome.existing,
            "rejected": rejected,
            "note": note,
        },
    )


async def remove_by_person(
    session: AsyncSession, *, account_id: str, actor: Actor, e164: str, scope: str | None
) -> int:
    """Remove one number (in one scope, or every scope with None) for a person; 404 when not listed."""
    removed = await remove(session, account_id, [e164], scope)
    if not removed:
        raise NotFound(
            "suppression_not_found",
            "This number is not on the suppression list" + ("." if scope is None else " in that scope."),
            field="number",
        )
    await record(
        session,
        actor=actor,
        action="suppression.remove",
        account_id=account_id,
        target_type="suppression",
        target_id=blind_index(e164),
        before={"scope": "all" if scope is None else scope or "account", "entries": removed},
    )
    return removed


def _audit_target(numbers: Sequence[str]) -> str | None:
    """One number: its blind index (findable, not readable); several: none (the counts say how many)."""
    return blind_index(numbers[0]) if len(numbers) == 1 else None


# -- listing --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Suppression]
    next_cursor: str | None
    total: int


def _cursor_of(entry: Suppression) -> str:
    data = orjson.dumps([isoformat(entry.created_at), entry.number_bidx, entry.scope])
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str, str]:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at, bidx, scope = raw
        return datetime.fromisoformat(at.replace("Z", "+00:00")), str(bidx), str(scope)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest(
            "invalid_cursor", "The cursor is not one this list gave out.", field="cursor"
        ) from exc


async def list_page(
    session: AsyncSession,
    *,
    account_id: str,
    e164: str | None = None,
    scope: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Newest first; `e164` finds one number (through its blind index), `scope` one scope ("" account-wide)."""
    cond: list[Any] = [Suppression.account_id == account_id]
    if e164 is not None:
        cond.append(Suppression.number_bidx == blind_index(e164))
    if scope is not None:
        cond.append(Suppression.scope == scope)
    total = int(await session.scalar(select(func.count()).select_from(Suppression).where(*cond)) or 0)
    query = select(Suppression).where(*cond)
    if cursor:
        at, bidx, sc = _parse_cursor(cursor)
        query = query.where(
            or_(
                Suppression.created_at < at,
                and_(
                    Suppression.created_at == at,
                    or_(
                        Suppression.number_bidx < bidx,
                        and_(Suppression.number_bidx == bidx, Suppression.scope < sc),
                    ),
                ),
            )
        )
    query = query.order_by(
        Suppression.created_at.desc(), Suppression.number_bidx.desc(), Suppression.scope.desc()
    )
    rows = list((await session.scalars(query.limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _cursor_of(rows[-1]) if more and rows else None, total)


def entry_json(entry: Suppression, names: dict[str, str]) -> dict[str, Any]:
    return {
        "number": entry.number,
        "scope": entry.scope or None,
        "signature": names.get(entry.scope) if entry.scope else None,
        "source": entry.source,
        "keyword": entry.keyword,
        "inbound_id": entry.inbound_id,
        "note": entry.note,
        "created_at": isoformat(entry.created_at),
    }
