"""The double-entry journal: the only code that changes a balance.

`post()` writes one balanced entry and moves every balance it touches with a conditional UPDATE
(`balance + amount >= min_balance`), so a floor can never be crossed whatever runs concurrently; the
ledger rows are updated in id order, which gives every transaction the same lock order (no deadlocks
between holds, settlements and recharges of the same account).

Ledger account ids are deterministic (`acc_…:cash:CNY`, `pkg_…:package:SMS`), so posting never needs a
lookup; an account is created on first use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.billing.models import DeferredEntry, JournalEntry, JournalLine, LedgerAccount
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db import gathered
from hongyan.db.base import UtcDateTime

UNITS = "SMS"  # the "currency" of package units: one unit pays one segment

# customer-side balances: never below their floor (0, or minus the credit limit for cash)
FLOORED_KINDS = frozenset({"cash", "held", "package"})
# platform-side counterparts: money in from outside, revenue, promotions, operator adjustments, breakage
CONTRA_KINDS = frozenset({"funding", "revenue", "bonus", "adjustment", "sales", "expired", "issued", "consumed"})

ENTRY_KINDS = (
    "recharge", "bonus", "package_purchase", "subscription_fee", "hold", "settle", "release", "refund",
    "expiry", "adjustment", "credit_limit",
)

_LA = LedgerAccount.__table__
_ENTRY = JournalEntry.__table__
_LINE = JournalLine.__table__

# statements built once with bound parameters (hot: every send holds, every final status settles); composing
# them per call cost more CPU than running them
_AMOUNT = bindparam("la_amount", type_=_LA.c.balance.type)
_MOVE = (
    update(_LA)
    .where(_LA.c.id == bindparam("la_id"))
    .where(_LA.c.min_balance.is_(None) | (_LA.c.balance + _AMOUNT >= _LA.c.min_balance))
    .values(balance=_LA.c.balance + _AMOUNT, updated_at=bindparam("la_now", type_=_LA.c.updated_at.type))
    .returning(_LA.c.balance)
)
_CURRENT = select(_LA.c.balance, _LA.c.min_balance).where(_LA.c.id == bindparam("la_id"))
_LOCK_PG = _CURRENT.with_for_update()
_INSERT_ENTRY = insert(_ENTRY)
_INSERT_LINES = insert(_LINE)

# PostgreSQL: a whole entry in one statement (one round trip instead of 2 + one per posting). The rows are
# locked in id order first (`l`: LockRows sits above the sort), every floor is checked against the locked
# balances (`ok`), and only when all pass are the balances moved and the entry and its lines written, so a
# refusal changes nothing. Fewer round trips while the rows are locked also shortens the time a busy
# account's cash and held rows stay locked (a hold at the end of every submit, a settlement per receipt flush).
_POST_PG = text("""
WITH v AS (
    SELECT * FROM unnest(CAST(:p_ids AS varchar[]), CAST(:p_amounts AS bigint[]), CAST(:p_currencies AS varchar[]))
        AS v(id, amount, currency)
), l AS (
    SELECT la.id, la.balance, la.min_balance, v.amount, v.currency
    FROM ledger_account la JOIN v ON v.id = la.id
    ORDER BY la.id
    FOR UPDATE OF la
), ok AS (
    SELECT count(*) = CAST(:p_n AS integer)
           AND coalesce(bool_and(l.min_balance IS NULL OR l.balance + l.amount >= l.min_balance), false) AS ok
    FROM l
), m AS (
    UPDATE ledger_account la SET balance = la.balance + l.amount, updated_at = CAST(:p_now AS timestamptz)
    FROM l, ok
    WHERE la.id = l.id AND ok.ok
    RETURNING la.id, la.balance, l.amount, l.currency
), e AS (
    INSERT INTO journal_entry (id, account_id, kind, reference, note, actor, actor_ip, idempotency_key, detail,
                               created_at)
    SELECT CAST(:e_id AS varchar), CAST(:e_account_id AS varchar), CAST(:e_kind AS varchar),
           CAST(:e_reference AS varchar), CAST(:e_note AS text), CAST(:e_actor AS varchar),
           CAST(:e_actor_ip AS varchar), CAST(:e_idempotency_key AS varchar), CAST(:e_detail AS jsonb),
           CAST(:p_now AS timestamptz)
    FROM ok WHERE ok.ok
    RETURNING id
), ln AS (
    INSERT INTO journal_line (entry_id, ledger_account_id, currency, amount, balance_after, created_at)
    SELECT e.id, m.id, m.currency, m.amount, m.balance, CAST(:p_now AS timestamptz) FROM m, e ORDER BY m.id
)
SELECT m.id, m.balance FROM m
""").bindparams(
    bindparam("p_ids", type_=ARRAY(String)), bindparam("p_amounts", type_=ARRAY(BigInteger)),
    bindparam("p_currencies", type_=ARRAY(String)), bindparam("p_now", type_=UtcDateTime()),
    bindparam("e_detail", type_=JSONB()),
)
_POST_PG_ATTEMPTS = 3  # a refusal is re-examined; missing accounts are created, a floor moved under us is retried


def ledger_id(owner: str, kind: str, currency: str) -> str:
    return f"{owner}:{kind}:{currency}"


def cash(account_id: str, currency: str) -> str:
    return ledger_id(account_id, "cash", currency)


def held(account_id: str, currency: str) -> str:
    return ledger_id(account_id, "held", currency)


def package_account(package_id: str) -> str:
    return ledger_id(package_id, "package", UNITS)


def parse_id(ledger_account_id: str) -> tuple[str, str, str]:
    owner, kind, currency = ledger_account_id.rsplit(":", 2)
    return owner, kind, currency


class UnbalancedEntry(ValueError):
    """A programming error: the postings of one entry do not add up to zero in some currency."""


class InsufficientFunds(Exception):
    """A floored balance would go below its floor; nothing of the entry was applied (caller rolls back)."""

    def __init__(self, ledger_account_id: str, *, available: int, needed: int) -> None:
        super().__init__(f"{ledger_account_id}: {needed} needed, {available} available")
        self.ledger_account_id = ledger_account_id
        self.available = available
        self.needed = needed

    @property
    def shortfall(self) -> int:
        return self.needed - self.available


@dataclass(frozen=True, slots=True)
class Posted:
    entry_id: str
    balances: dict[str, int]  # ledger account id → balance after the entry


def check_balanced(postings: Mapping[str, int]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for ledger_account_id, amount in postings.items():
        totals[parse_id(ledger_account_id)[2]] += amount
    unbalanced = {c: t for c, t in totals.items() if t != 0}
    if unbalanced:
        raise UnbalancedEntry(f"entry does not balance: {unbalanced}")


def _checked(kind: str, postings: Mapping[str, int]) -> dict[str, int]:
    """The entry's postings without zeros; raises on an unknown kind or postings that do not balance."""
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown journal entry kind {kind!r}")
    postings = {k: v for k, v in postings.items() if v != 0}
    check_balanced(postings)
    return postings


async def post(
    session: AsyncSession,
    *,
    account_id: str,
    kind: str,
    postings: Mapping[str, int],
    reference: str | None = None,
    note: str | None = None,
    actor: str = "system",
    actor_ip: str | None = None,
    idempotency_key: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Posted:
    """Write one balanced entry in the caller's transaction; raises InsufficientFunds (apply nothing more)."""
    postings = _checked(kind, postings)
    now = at or utcnow()
    entry_id = ids.new_id("je")
    conn = await session.connection()
    if postings and session.bind.dialect.name == "postgresql":
        entry = {"e_id": entry_id, "e_account_id": account_id, "e_kind": kind, "e_reference": reference,
                 "e_note": note, "e_actor": actor, "e_actor_ip": actor_ip, "e_idempotency_key": idempotency_key,
                 "e_detail": detail or {}}
        return Posted(entry_id, await _post_pg(session, entry, postings, now))
    # the entry first: a repeated idempotency key fails here, before any balance moved
    await conn.execute(
        _INSERT_ENTRY,
        {"id": entry_id, "account_id": account_id, "kind": kind, "reference": reference, "note": note,
         "actor": actor, "actor_ip": actor_ip, "idempotency_key": idempotency_key, "detail": detail or {},
         "created_at": now},
    )
    balances: dict[str, int] = {}
    for ledger_account_id in sorted(postings):
        balances[ledger_account_id] = await _move(session, ledger_account_id, postings[ledger_account_id], now)
    if postings:
        await conn.execute(
            _INSERT_LINES,
            [
                {"entry_id": entry_id, "ledger_account_id": la, "currency": parse_id(la)[2], "amount": amount,
                 "balance_after": balances[la], "created_at": now}
                for la, amount in sorted(postings.items())
            ],
        )
    return Posted(entry_id, balances)


# SQLSTATE of a deferred entry refused at COMMIT (the trigger's RAISE; DETAIL: JSON with ledger_account_id,
# available, needed)
DEFERRED_REFUSED = "HY402"
_DEFERRED = DeferredEntry.__table__


def can_post_at_commit(session: AsyncSession) -> bool:
    return bool(session.bind.dialect.name == "postgresql")


async def post_at_commit(
    session: AsyncSession,
    *,
    account_id: str,
    kind: str,
    postings: Mapping[str, int],
    reference: str | None = None,
    actor: str = "system",
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> str:
    """`post()` carried out when the caller's transaction commits (PostgreSQL: `can_post_at_commit`); returns
    the entry id. For the hot paths (a submit's hold, a receipt batch's settlement): the account's rows are
    locked only during the COMMIT, in id order with every other posting; accounts are created on first use
    there (FLOORED_KINDS get a floor of 0, as ensure_account gives them). No balance is known before the
    commit; a floor that would be crossed fails the COMMIT with SQLSTATE DEFERRED_REFUSED
    (`refused_at_commit` reads it) and nothing of the transaction stays."""
    postings = _checked(kind, postings)
    now = at or utcnow()
    entry_id = ids.new_id("je")
    if not postings:
        return entry_id
    await gathered.insert(session, _DEFERRED, [{  # with the transaction's gathered inserts, if any
        "entry_id": entry_id, "account_id": account_id, "kind": kind, "reference": reference, "actor": actor,
        "detail": detail or {}, "postings": dict(postings), "created_at": now,
    }])
    return entry_id


def refused_at_commit(exc: BaseException) -> InsufficientFunds | None:
    """The InsufficientFunds behind a COMMIT that a deferred entry refused (else None)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) != DEFERRED_REFUSED:
        return None
    import json

    raw = getattr(getattr(orig, "__cause__", None), "detail", None) or "{}"
    try:
        facts = json.loads(raw)
    except ValueError:
        facts = {}
    return InsufficientFunds(str(facts.get("ledger_account_id", "?")), available=int(facts.get("available", 0)),
                             needed=int(facts.get("needed", 0)))


async def _post_pg(session: AsyncSession, entry: dict[str, Any], postings: Mapping[str, int], now: datetime) -> dict[str, int]:
    """The entry of `post()` in one statement (`_POST_PG`); balances after it. When the statement moved nothing
    (an account does not exist yet, or a floor would be crossed) the rows are read: missing accounts are
    created and the statement runs again; a floor raises InsufficientFunds for the first such account in id
    order, as the posting-by-posting path does."""
    conn = await session.connection()
    ordered = sorted(postings)
    params = {**entry, "p_ids": ordered, "p_amounts": [postings[la] for la in ordered],
              "p_currencies": [parse_id(la)[2] for la in ordered], "p_n": len(ordered), "p_now": now}
    for _attempt in range(_POST_PG_ATTEMPTS):
        moved = (await conn.execute(_POST_PG, params)).all()
        if moved:
            return {row.id: int(row.balance) for row in moved}
        current = {
            row.id: row for row in await conn.execute(
                select(_LA.c.id, _LA.c.balance, _LA.c.min_balance).where(_LA.c.id.in_(ordered))
            )
        }
        missing = [la for la in ordered if la not in current]
        for la in missing:
            await ensure_account(session, la, now=now)
        if missing:
            continue
        for la in ordered:
            row = current[la]
            if row.min_balance is not None and row.balance + postings[la] < row.min_balance:
                raise InsufficientFunds(la, available=row.balance - row.min_balance, needed=-postings[la])
        # nothing refused it when read again: a concurrent entry changed the balance in between; try again
    raise RuntimeError(f"ledger entry {entry['e_id']} could not be posted after {_POST_PG_ATTEMPTS} attempts")


async def _move(session: AsyncSession, ledger_account_id: str, amount: int, now: datetime) -> int:
    conn = await session.connection()
    params = {"la_id": ledger_account_id, "la_amount": amount, "la_now": now}
    balance = (await conn.execute(_MOVE, params)).scalar()
    if balance is not None:
        return int(balance)
    current = (await conn.execute(_CURRENT, params)).first()
    if current is None:
        await ensure_account(session, ledger_account_id, now=now)
        balance = (await conn.execute(_MOVE, params)).scalar()
        if balance is not None:
            return int(balance)
        current = (await conn.execute(_CURRENT, params)).first()
        assert current is not None
    floor = current.min_balance or 0
    raise InsufficientFunds(ledger_account_id, available=current.balance - floor, needed=-amount)


async def ensure_account(session: AsyncSession, ledger_account_id: str, *, now: datetime | None = None) -> None:
    """Create a ledger account if it does not exist (concurrent creators are fine: ON CONFLICT DO NOTHING)."""
    owner, kind, currency = parse_id(ledger_account_id)
    now = now or utcnow()
    values = {
        "id": ledger_account_id, "account_id": owner, "kind": kind, "currency": currency, "balance": 0,
        "min_balance": 0 if kind in FLOORED_KINDS else None, "created_at": now, "updated_at": now,
    }
    if session.bind.dialect.name == "postgresql":
        stmt: Any = pg_insert(_LA).values(values).on_conflict_do_nothing(index_elements=["id"])
    else:
        stmt = sqlite_insert(_LA).values(values).on_conflict_do_nothing(index_elements=["id"])
    await (await session.connection()).execute(stmt)


async def lock_for_update(session: AsyncSession, ledger_account_id: str) -> tuple[int, int] | None:
    """Balance and floor of one account, row-locked on PostgreSQL (SQLite writers are serialized anyway).

    Used to serialize decisions that read before they write (allocating a batch between packages and cash)."""
    query = _LOCK_PG if session.bind.dialect.name == "postgresql" else _CURRENT
    row = (await (await session.connection()).execute(query, {"la_id": ledger_account_id})).first()
    if row is None:
        return None
    return int(row.balance), int(row.min_balance or 0)


async def balances_of(session: AsyncSession, account_id: str) -> dict[str, LedgerAccount]:
    rows = await session.scalars(select(LedgerAccount).where(LedgerAccount.account_id == account_id))
    return {r.id: r for r in rows}


async def set_floor(session: AsyncSession, ledger_account_id: str, floor: int) -> bool:
    """Change a floored account's floor (credit limit); refused (False) when the balance is already below it."""
    await ensure_account(session, ledger_account_id)
    result = await session.execute(
        update(_LA).where(_LA.c.id == ledger_account_id, _LA.c.balance >= floor).values(min_balance=floor, updated_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    subject: str
    detail: str


async def verify(session: AsyncSession) -> list[Problem]:
    """Prove journal and balances agree. Run in one snapshot (REPEATABLE READ on PostgreSQL)."""
    problems: list[Problem] = []
    conn = await session.connection()
    line = JournalLine.__table__
    unbalanced = await conn.execute(
        select(line.c.entry_id, line.c.currency, func.sum(line.c.amount))
        .group_by(line.c.entry_id, line.c.currency)
        .having(func.sum(line.c.amount) != 0)
    )
    for entry_id, currency, total in unbalanced:
        problems.append(Problem("entry_balanced", entry_id, f"{currency} lines add up to {total}, not 0"))
    sums = select(line.c.ledger_account_id.label("la"), func.sum(line.c.amount).label("total")).group_by(
        line.c.ledger_account_id
    ).subquery()
    mismatched = await conn.execute(
        select(_LA.c.id, _LA.c.balance, func.coalesce(sums.c.total, 0))
        .select_from(_LA.outerjoin(sums, sums.c.la == _LA.c.id))
        .where(_LA.c.balance != func.coalesce(sums.c.total, 0))
    )
    for la, balance, total in mismatched:
        problems.append(Problem("balance_matches_journal", la, f"balance {balance}, journal lines add up to {total}"))
    below = await conn.execute(
        select(_LA.c.id, _LA.c.balance, _LA.c.min_balance).where(
            _LA.c.min_balance.is_not(None), _LA.c.balance < _LA.c.min_balance
        )
    )
    for la, balance, floor in below:
        problems.append(Problem("floor", la, f"balance {balance} is below its floor {floor}"))
    orphan = await conn.execute(
        select(line.c.ledger_account_id).where(~line.c.ledger_account_id.in_(select(_LA.c.id))).limit(10)
    )
    for (la,) in orphan:
        problems.append(Problem("line_account_exists", la, "journal line on an unknown ledger account"))
    return problems


async def begin_snapshot(session: AsyncSession) -> None:
    """Make the session's transaction one consistent snapshot for multi-statement checks."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def group_postings(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for la, amount in pairs:
        out[la] += amount
    return dict(out)
