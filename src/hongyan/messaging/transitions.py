"""Apply state changes in bulk, guarded by the state machine, with history and webhook events.

Every status change of every message goes through `apply_transitions`; it is the only code that writes
message.status after insert. A transition whose current status does not allow it changes no row (it is
counted in `TransitionOutcome.skipped`): late, duplicated or out-of-order events are harmless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import String, and_, bindparam, case, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ClauseElement

from hongyan.billing import charging
from hongyan.channels.models import CarrierMessage
from hongyan.core.clock import utcnow
from hongyan.db.gathered import MAX_ROWS as GATHER_MAX_ROWS
from hongyan.db.gathered import Gathered
from hongyan.messaging.models import Message, MessageEvent
from hongyan.messaging.states import FINAL, Status, allowed_from
from hongyan.ops.metrics import count_transitions
from hongyan.webhooks import service as webhooks

# columns returned by a change: what history, billing and the next step need — no more (fetching and
# converting RETURNING rows was the largest cost of a campaign run); a webhook payload reads the rest
_M = Message.__table__
_TEXT_ARRAY = ARRAY(String)
_BASE = ("id", "account_id", "status", "error_code", "carrier_error_code")
# a final status settles, releases or refunds the held funds (charging.settle_final)
_FOR_BILLING = ("funding", "billing_state", "price_micros", "segment_count", "currency")
# queued → sending: what a connector needs, so dispatch does not read the rows again
_FOR_SENDING = ("to_number", "sender", "body", "encoding", "segment_count", "message_type", "priority", "to_country",
                "attempts", "time_zone", "campaign_id")
_COLUMNS = {
    to: tuple(_M.c[name] for name in dict.fromkeys(
        _BASE + (_FOR_BILLING if to in FINAL else ()) + (_FOR_SENDING if to is Status.SENDING else ())))
    for to in Status
}


_FINAL_VALUES = frozenset(s.value for s in FINAL)


def _returned(to: Status) -> tuple[Any, ...]:
    return _COLUMNS[to]


@dataclass(frozen=True, slots=True)
class Transition:
    message_id: str
    to: Status
    error_code: str | None = None
    carrier_error_code: str | None = None
    carrier_message_id: str | None = None
    channel_id: str | None = None


@dataclass(slots=True)
class TransitionOutcome:
    applied: list[dict[str, Any]] = field(default_factory=list)  # rows after the change
    skipped: list[Transition] = field(default_factory=list)  # not allowed from the current status

    @property
    def applied_ids(self) -> list[str]:
        return [row["id"] for row in self.applied]


def _dicts(result: Any) -> list[dict[str, Any]]:
    """Rows as dicts; zip over the keys is several times cheaper than Row._asdict() per row."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=False)) for row in result.all()]  # rows have exactly len(keys)


def _milestones(to: Status, now: datetime) -> dict[str, Any]:
    """Timestamps a status sets besides updated_at: sent_at on `sent`, done_at on a final status."""
    out: dict[str, Any] = {}
    if to is Status.SENT:
        out["sent_at"] = now
    if to in FINAL:
        out["done_at"] = now
    return out


def _billing_state(to: Status) -> Any:
    """SQL for message.billing_state when `to` is final: held funds become settled or released (the rule is
    charging.final_billing_state; `sent_at` is the old value, set when the carrier took the message)."""
    sent = charging.final_billing_state(to.value, sent=True)
    unsent = charging.final_billing_state(to.value, sent=False)
    outcome: Any = literal(sent) if sent == unsent else case((_M.c.sent_at.is_not(None), sent), else_=unsent)
    return case((_M.c.billing_state == charging.HELD, outcome), else_=_M.c.billing_state)


# Statements are built once per shape (target status, which optional columns a transition sets, account scope,
# the columns of `also`) with everything that varies per call as a bound parameter, and reused: composing them
# per call (the history CTE's column proxies, coercions, a new cache key at every execute) cost about two thirds
# of the CPU of a one-message change on PostgreSQL (≈1.8 of 2.7 ms). The parameter names are prefixed (t_, v_)
# so that they never meet the names SQLAlchemy gives the SET and WHERE parameters of a column.
_EVENT = MessageEvent.__table__
_REFS = CarrierMessage.__table__
_REF_COLUMNS = ("channel_id", "carrier_message_id", "message_id", "group_ref", "part", "parts")
_HISTORY_COLUMNS = ("message_id", "status", "error_code", "carrier_error_code", "occurred_at")
_NOW = bindparam("t_now", type_=_M.c.updated_at.type)  # updated_at, sent_at, done_at and the history's occurred_at
_ERR = bindparam("t_err", type_=_M.c.error_code.type)
_CERR = bindparam("t_cerr", type_=_M.c.carrier_error_code.type)
_CHN = bindparam("t_chn", type_=_M.c.channel_id.type)
_ACCOUNT = bindparam("t_account", type_=_M.c.account_id.type)
_ALSO = "t_also_"  # + column name


def _set_values(to: Status, *, error_code: bool, carrier_error_code: bool, channel_id: bool) -> dict[str, Any]:
    """The SET clause of a uniform change to `to`; the flags say which optional columns it sets (bound)."""
    values: dict[str, Any] = {"status": to.value, "updated_at": _NOW}
    if to is Status.SENT:
        values["sent_at"] = _NOW
    if to in FINAL:
        values["done_at"] = _NOW
        values["billing_state"] = _billing_state(to)
    if to is Status.SENDING:
        values["attempts"] = _M.c.attempts + 1
    if error_code:
        values["error_code"] = _ERR
    if carrier_error_code:
        values["carrier_error_code"] = _CERR
    if channel_id:
        values["channel_id"] = _CHN
    return values


def _with_history(stmt: Any) -> Any:
    """PostgreSQL: the UPDATE … RETURNING wrapped so that the same statement writes the history rows
    (`WITH u AS (UPDATE … RETURNING …), h AS (INSERT INTO message_event SELECT … FROM u) SELECT * FROM u`):
    one round trip instead of two per change."""
    changed = stmt.cte("u")
    history = insert(_EVENT).from_select(
        list(_HISTORY_COLUMNS),
        select(changed.c.id, changed.c.status, changed.c.error_code, changed.c.carrier_error_code, _NOW),
    ).cte("h")
    return select(changed).add_cte(history)


def _build_uniform(to: Status, flags: tuple[bool, bool, bool], scoped: bool, also: dict[str, Any],
                   postgres: bool) -> Any:
    # PostgreSQL: `= ANY(array)` keeps one statement text (and one prepared statement) for any number of ids;
    # an expanding IN renders and prepares a new statement per list length
    ids = bindparam("t_ids", type_=_TEXT_ARRAY)
    id_match = _M.c.id == func.any(ids) if postgres else _M.c.id.in_(bindparam("t_ids", expanding=True))
    cond = [id_match, _M.c.status.in_([s.value for s in allowed_from(to)])]
    if scoped:
        cond.append(_M.c.account_id == _ACCOUNT)
    error_code, carrier_error_code, channel_id = flags
    values = {**_set_values(to, error_code=error_code, carrier_error_code=carrier_error_code,
                            channel_id=channel_id), **also}  # `also` wins
    stmt = update(_M).where(and_(*cond)).values(values).returning(*_returned(to))
    return _with_history(stmt) if postgres else stmt


@lru_cache(maxsize=512)  # shapes come from code, not data: a few dozen at most
def _uniform(to: Status, flags: tuple[bool, bool, bool], scoped: bool, also: tuple[str, ...], postgres: bool) -> Any:
    """The cached statement of one shape (never modified: statements are generative)."""
    return _build_uniform(to, flags, scoped, {k: bindparam(_ALSO + k, type_=_M.c[k].type) for k in also}, postgres)


def _is_sql(value: Any) -> bool:
    return isinstance(value, ClauseElement) or hasattr(value, "__clause_element__")


async def apply_transitions(
    session: AsyncSession,
    transitions: Sequence[Transition],
    *,
    at: datetime | None = None,
    account_id: str | None = None,
    also: dict[str, Any] | None = None,
    carrier_refs: list[dict[str, Any]] | None = None,
) -> TransitionOutcome:
    """Apply many transitions in the caller's transaction. `account_id` scopes them (API cancel); `also` sets
    more columns in the same UPDATE (a campaign's release sets expires_at; not for carrier-id transitions).
    `carrier_refs`: carrier_message rows (the parts a submit was accepted as) written with the changes; on
    PostgreSQL in the statement of the carrier-id transitions, so that a submit's record is one statement
    (atomic by itself: the dispatcher runs it without a transaction around it)."""
    now = at or utcnow()
    outcome = TransitionOutcome()
    refs = carrier_refs or []
    postgres = session.bind.dialect.name == "postgresql"
    if refs and not (postgres and any(t.carrier_message_id is not None for t in transitions)):
        await (await session.connection()).execute(insert(_REFS), refs)
        refs = []
    if not transitions:
        return outcome
    uniform: dict[tuple[Any, ...], list[Transition]] = defaultdict(list)
    individual: list[Transition] = []
    for t in transitions:
        if t.carrier_message_id is not None:
            individual.append(t)
        else:
            uniform[(t.to, t.error_code, t.carrier_error_code, t.channel_id)].append(t)

    also = also or {}
    # `also` with plain values under column names: bound parameters of a cached statement; an SQL expression
    # (or a Column as key) has no parameter to bind, so that rare call builds its statement anew
    cached = all(isinstance(k, str) and k in _M.c and not _is_sql(v) for k, v in also.items())
    also_keys = tuple(also)
    scoped = account_id is not None
    for group in uniform.values():
        first = group[0]
        flags = (first.error_code is not None, first.carrier_error_code is not None, first.channel_id is not None)
        params: dict[str, Any] = {"t_ids": [t.message_id for t in group], "t_now": now}
        if first.error_code is not None:
            params["t_err"] = first.error_code
        if first.carrier_error_code is not None:
            params["t_cerr"] = first.carrier_error_code
        if first.channel_id is not None:
            params["t_chn"] = first.channel_id
        if scoped:
            params["t_account"] = account_id
        if cached:
            stmt = _uniform(first.to, flags, scoped, also_keys, postgres)
            for k, v in also.items():
                params[_ALSO + k] = v
        else:
            stmt = _build_uniform(first.to, flags, scoped, also, postgres)
        rows = await _changed(session, stmt, params)
        outcome.applied.extend(rows)
        if len(rows) != len(group):
            done = {r["id"] for r in rows}
            outcome.skipped.extend(t for t in group if t.message_id not in done)

    if individual:
        await _apply_individual(session, individual, now, outcome, account_id, refs)

    if outcome.applied:
        count_transitions(session, outcome.applied)  # hongyan_message_transitions_total, on commit
        if not postgres:  # PostgreSQL wrote the history in the UPDATE statement itself (_with_history)
            await record_history(session, outcome.applied, now, postgres)
        final = [row for row in outcome.applied if row["status"] in _FINAL_VALUES]
        if final:
            await charging.settle_final(session, final, at=now)
        await webhooks.enqueue_message_status_events(session, outcome.applied, occurred_at=now)
    return outcome


async def announce_queued(session: AsyncSession, rows: list[dict[str, Any]], now: datetime) -> None:
    """Messages stored `queued` at once (a submit that publishes after its commit) are counted and announced
    (`message.queued` webhooks) as the relay's accepted → queued change would have; their history row is
    written with the insert (`record_history`)."""
    if rows:
        count_transitions(session, rows)
        await webhooks.enqueue_message_status_events(session, rows, occurred_at=now)


async def _changed(session: AsyncSession, stmt: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run an UPDATE … RETURNING of messages (on PostgreSQL wrapped by `_with_history`); the changed rows as
    dicts."""
    conn = await session.connection()
    return _dicts(await conn.execute(stmt, params))


_RECORD_HISTORY_PG = insert(_EVENT).from_select(
    list(_HISTORY_COLUMNS),
    select(*(func.unnest(bindparam(name, type_=_TEXT_ARRAY)) for name in ("h_ids", "h_statuses", "h_errs", "h_cerrs")),
           bindparam("h_now", type_=_EVENT.c.occurred_at.type)),
)


async def record_history(session: AsyncSession, rows: list[dict[str, Any]], now: datetime, postgres: bool) -> None:
    """One message_event row per row (`id`, `status`, `error_code`, `carrier_error_code`): every applied change,
    and the `scheduled` state of messages stored as scheduled (Core insert: the ORM bulk path costs more than
    the rows). A few rows in a transaction that gathers its inserts (db.gathered) go with them."""
    gathered = Gathered.of(session)
    if gathered is not None and len(rows) <= GATHER_MAX_ROWS:  # sent with the transaction's other inserts
        gathered.add(_EVENT, history_rows(rows, now))
        return
    conn = await session.connection()
    if postgres:  # one INSERT … SELECT unnest(arrays), built once: no per-row parameter sets
        await conn.execute(_RECORD_HISTORY_PG, {
            "h_ids": [r["id"] for r in rows], "h_statuses": [r["status"] for r in rows],
            "h_errs": [r["error_code"] for r in rows], "h_cerrs": [r["carrier_error_code"] for r in rows],
            "h_now": now,
        })
        return
    await conn.execute(insert(_EVENT), history_rows(rows, now))


def history_rows(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    return [{"message_id": r["id"], "status": r["status"], "occurred_at": now, "error_code": r["error_code"],
             "carrier_error_code": r["carrier_error_code"]} for r in rows]


async def _apply_individual(
    session: AsyncSession,
    transitions: list[Transition],
    now: datetime,
    outcome: TransitionOutcome,
    account_id: str | None,
    refs: list[dict[str, Any]],
) -> None:
    """Per-row values (carrier message ids). PostgreSQL: one UPDATE … FROM unnest(arrays) per target status
    (the first also inserts `refs`); SQLite (writers already serialized by BEGIN IMMEDIATE): read statuses,
    then executemany (`refs` are inserted by the caller)."""
    if session.bind.dialect.name == "postgresql":
        await _apply_individual_pg(session, transitions, now, outcome, account_id, refs)
        return
    by_id = {t.message_id: t for t in transitions}
    query = select(Message.id, Message.status).where(Message.id.in_(list(by_id))).order_by(Message.id)
    if account_id is not None:
        query = query.where(Message.account_id == account_id)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    current = {r.id: r.status for r in (await session.execute(query)).all()}
    accepted: list[Transition] = []
    for t in transitions:
        status = current.get(t.message_id)
        if status is not None and Status(status) in allowed_from(t.to):
            accepted.append(t)
        else:
            outcome.skipped.append(t)
    if not accepted:
        return
    by_target: dict[Status, list[Transition]] = defaultdict(list)
    for t in accepted:
        by_target[t.to].append(t)
    table = Message.__table__
    conn = await session.connection()
    for to, group in by_target.items():
        extra = _milestones(to, now)
        if to in FINAL:
            extra["billing_state"] = _billing_state(to)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.status == bindparam("b_from"))
            .values(
                status=to.value,
                updated_at=now,
                carrier_message_id=bindparam("b_cid"),
                error_code=bindparam("b_err"),
                carrier_error_code=bindparam("b_cerr"),
                channel_id=bindparam("b_chn"),
                **extra,
            )
        )
        params = [
            {
                "b_id": t.message_id,
                "b_from": current[t.message_id],
                "b_cid": t.carrier_message_id,
                "b_err": t.error_code,
                "b_cerr": t.carrier_error_code,
                "b_chn": t.channel_id,
            }
            for t in group
        ]
        await conn.execute(stmt, params)
    rows = await conn.execute(select(*_COLUMNS[Status.FAILED]).where(_M.c.id.in_([t.message_id for t in accepted])))
    outcome.applied.extend(_dicts(rows))


async def _apply_individual_pg(
    session: AsyncSession,
    transitions: list[Transition],
    now: datetime,
    outcome: TransitionOutcome,
    account_id: str | None,
    refs: list[dict[str, Any]],
) -> None:
    by_target: dict[Status, list[Transition]] = defaultdict(list)
    for t in transitions:
        by_target[t.to].append(t)
    for to, group in by_target.items():
        params: dict[str, Any] = {
            "v_ids": [t.message_id for t in group],
            "v_cids": [t.carrier_message_id for t in group],
            "v_errs": [t.error_code for t in group],
            "v_cerrs": [t.carrier_error_code for t in group],
            "v_chns": [t.channel_id for t in group],
            "t_now": now,
        }
        if account_id is not None:
            params["t_account"] = account_id
        if refs:
            params.update({f"r_{key}s": [r[key] for r in refs] for key in _REF_COLUMNS})
        applied = await _changed(session, _individual_pg(to, account_id is not None, bool(refs)), params)
        refs = []  # written by this statement
        outcome.applied.extend(applied)
        done = {r["id"] for r in applied}
        outcome.skipped.extend(t for t in group if t.message_id not in done)


@lru_cache(maxsize=64)
def _individual_pg(to: Status, scoped: bool, with_refs: bool = False) -> Any:
    """UPDATE … FROM unnest(arrays) to `to`, with its history (`_with_history`) and, `with_refs`, an INSERT of
    carrier_message rows from arrays of their own (`r_<column>s`); built once per shape."""
    # arrays + unnest keep the statement text constant (compiled once, cached); a VALUES list of
    # 500 rows would be compiled anew on every call
    rows = select(
        func.unnest(bindparam("v_ids", type_=_TEXT_ARRAY)).label("v_id"),
        func.unnest(bindparam("v_cids", type_=_TEXT_ARRAY)).label("v_cid"),
        func.unnest(bindparam("v_errs", type_=_TEXT_ARRAY)).label("v_err"),
        func.unnest(bindparam("v_cerrs", type_=_TEXT_ARRAY)).label("v_cerr"),
        func.unnest(bindparam("v_chns", type_=_TEXT_ARRAY)).label("v_chn"),
    ).subquery("v")
    extra: dict[str, Any] = {}
    if to is Status.SENT:
        extra["sent_at"] = _NOW
    if to in FINAL:
        extra["done_at"] = _NOW
        extra["billing_state"] = _billing_state(to)
    cond = [_M.c.id == rows.c.v_id, _M.c.status.in_([s.value for s in allowed_from(to)])]
    if scoped:
        cond.append(_M.c.account_id == _ACCOUNT)
    stmt = (
        update(_M)
        .where(*cond)
        .values(status=to.value, updated_at=_NOW, carrier_message_id=rows.c.v_cid, error_code=rows.c.v_err,
                carrier_error_code=rows.c.v_cerr, channel_id=rows.c.v_chn, **extra)
        .returning(*_returned(to))
    )
    if not with_refs:
        return _with_history(stmt)
    ref_rows = select(*(func.unnest(bindparam(f"r_{key}s", type_=ARRAY(_REFS.c[key].type))).label(key)
                        for key in _REF_COLUMNS), _NOW)
    written = insert(_REFS).from_select([*_REF_COLUMNS, "created_at"], ref_rows).cte("r")
    return _with_history(stmt).add_cte(written)
