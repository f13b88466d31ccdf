"""History: the message list with filters and live rows, a message's status history, a batch's counts.

Pages poll small fragments (`…/rows`, `…/events`, `…/summary`) every 2 s through console.js, so a person
watches accepted → queued → sent → delivered without reloading. A fragment whose content can no longer
change answers with `X-Console-Final: 1` and the polling stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter

from hongyan.console.context import Console, FieldErrors, SignedIn
from hongyan.core.errors import NotFound
from hongyan.messaging import queries
from hongyan.messaging.models import Message
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.messaging.states import FINAL, Status

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
FINAL_HEADER = {"X-Console-Final": "1"}
ALL_STATUSES = [s.value for s in Status]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    statuses: tuple[str, ...]
    to: str  # as typed
    batch: str
    cursor: str

    @classmethod
    def from_query(cls, console: Console) -> MessageFilter:
        params = console.request.query_params
        statuses = tuple(s for s in params.getlist("status") if s in ALL_STATUSES)
        return cls(
            statuses=statuses,
            to=params.get("to", "").strip(),
            batch=params.get("batch", "").strip(),
            cursor=params.get("cursor", "").strip(),
        )

    def query(self, **override: Any) -> str:
        """The query string of this filter (with some values replaced), for links and fragment URLs."""
        values: dict[str, Any] = {
            "status": list(self.statuses),
            "to": self.to,
            "batch": self.batch,
            "cursor": self.cursor,
        }
        values.update(override)
        pairs = [(k, v) for k, vs in values.items() for v in (vs if isinstance(vs, list) else [vs]) if v]
        return urlencode(pairs)

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.to or self.batch)


async def _messages(
    console: Console, filters: MessageFilter
) -> tuple[list[Message], str | None, FieldErrors]:
    assert console.user is not None
    errors = FieldErrors()
    to_e164 = None
    if filters.to:
        try:
            to_e164 = normalize(filters.to, console.user.default_region).e164
        except NumberProblem as problem:
            errors["to"] = console.t.error(problem.code, problem.message)
            return [], None, errors
    async with console.db.read() as session:
        rows, next_cursor = await queries.list_messages(
            session,
            account_id=console.account_id,
            statuses=list(filters.statuses) or None,
            to=to_e164,
            batch_id=filters.batch or None,
            cursor=filters.cursor or None,
            limit=PAGE_SIZE,
        )
    return rows, next_cursor, errors


@router.get("/messages")
async def messages_page(console: SignedIn) -> Any:
    filters = MessageFilter.from_query(console)
    rows, next_cursor, errors = await _messages(console, filters)
    return console.render(
        "messages.html",
        active="messages",
        rows=rows,
        filters=filters,
        next_cursor=next_cursor,
        errors=errors,
        statuses=ALL_STATUSES,
    )


@router.get("/messages/rows")
async def message_rows(console: SignedIn) -> Any:
    filters = MessageFilter.from_query(console)
    rows, _next, _errors = await _messages(console, filters)
    # a batch gets no new messages after its submit: once all of its rows are final, nothing can change
    settled = bool(filters.batch) and bool(rows) and all(m.status in FINAL for m in rows)
    return console.fragment(
        "_message_rows.html", rows=rows, filters=filters, headers=FINAL_HEADER if settled else None
    )


async def _message(console: Console, message_id: str) -> dict[str, Any] | None:
    async with console.db.read() as session:
        try:
            message, events = await queries.get_message(
                session, account_id=console.account_id, message_id=message_id
            )
        except NotFound:
            return None
    return queries.message_public(message, events)


@router.get("/messages/{message_id}")
async def message_page(console: SignedIn, message_id: str) -> Any:
    message = await _message(console, message_id)
    if message is None:
        return console.render("not_found.html", status=404, what="message")
    return console.render(
        "message_detail.html", active="messages", message=message, final=message["status"] in FINAL
    )


@router.get("/messages/{message_id}/events")
async def message_events(console: SignedIn, message_id: str) -> Any:
    message = await _message(console, message_id)
    if message is None:
        return console.fragment("_message_events.html", message=None, headers=FINAL_HEADER)
    return console.fragment(
        "_message_events.html", message=message, headers=FINAL_HEADER if message["status"] in FINAL else None
    )


async def _batch(console: Console, batch_id: str) -> dict[str, Any] | None:
    async with console.db.read() as session:
        try:
            return await queries.batch_summary(session, account_id=console.account_id, batch_id=batch_id)
        except NotFound:
            return None


@router.get("/batches/{batch_id}")
async def batch_page(console: SignedIn, batch_id: str) -> Any:
    batch = await _batch(console, batch_id)
    if batch is None:
        return console.render("not_found.html", status=404, what="batch")
    filters = MessageFilter(statuses=(), to="", batch=batch_id, cursor="")
    rows, next_cursor, _errors = await _messages(console, filters)
    return console.render(
        "batch.html", active="messages", batch=batch, rows=rows, filters=filters, next_cursor=next_cursor
    )


@router.get("/batches/{batch_id}/summary")
async def batch_summary(console: SignedIn, batch_id: str) -> Any:
    batch = await _batch(console, batch_id)
    if batch is None:
        return console.fragment("_batch_summary.html", batch=None, headers=FINAL_HEADER)
    return console.fragment(
        "_batch_summary.html", batch=batch, headers=FINAL_HEADER if batch["completed"] else None
    )
