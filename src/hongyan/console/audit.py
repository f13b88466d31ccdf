"""Audit log page: who changed what, when and from where, with filters, pages and a CSV export.

Customers see their own account's entries; platform staff (`platform_role` set) may pick an account or
see every account and the platform's own changes (channels, prices). Same service as /v1/audit-log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from hongyan.audit import service
from hongyan.audit.service import AuditFilter
from hongyan.console.context import Console, FieldErrors, SignedIn
from hongyan.core.errors import InvalidRequest

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 50
VALUE_LIMIT = 80  # characters of one before/after value shown in the table (the export has all)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """The page's filters as typed (strings), so the form shows them back and links keep them."""

    action: str = ""
    actor: str = ""
    target: str = ""
    since: str = ""  # YYYY-MM-DD, from the start of that day (UTC)
    until: str = ""  # YYYY-MM-DD, to the end of that day (inclusive)
    account: str = ""  # staff only
    cursor: str = ""

    @classmethod
    def from_request(cls, console: Console) -> AuditQuery:
        params = console.request.query_params
        return cls(**{name: params.get(name, "").strip()[:254] for name in cls.__slots__})

    def query(self, **override: str) -> str:
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(override)
        return urlencode([(k, v) for k, v in values.items() if v])

    @property
    def active(self) -> bool:
        return any((self.action, self.actor, self.target, self.since, self.until, self.account))


def is_staff(console: Console) -> bool:
    return bool(getattr(console.user, "platform_role", None))


def _day(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest("invalid_date", f"{field} is a date such as 2026-11-25.", field=field) from None


def to_filter(console: Console, q: AuditQuery) -> AuditFilter:
    """The service filter; a customer's account is forced, whatever the query string says."""
    since, until = _day(q.since, "since"), _day(q.until, "until")
    account_id = (q.account or None) if is_staff(console) else console.account_id
    return AuditFilter(
        account_id=account_id, action=q.action or None, actor=q.actor or None, target_id=q.target or None,
        since=None if since is None else datetime.combine(since, time(), tzinfo=UTC),
        until=None if until is None else datetime.combine(until + timedelta(days=1), time(), tzinfo=UTC),
    )


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 1] + "…"


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[dict[str, str | None]]:
    """One line per field: `name: old → new` (old None for a creation, new None for a removal)."""
    before, after = before or {}, after or {}
    lines = []
    for key in dict.fromkeys([*before, *after]):
        lines.append({"field": key, "before": _shown(before[key]) if key in before else None,
                      "after": _shown(after[key]) if key in after else None})
    return lines


@router.get("/audit")
async def audit_page(console: SignedIn) -> Any:
    q = AuditQuery.from_request(console)
    errors = FieldErrors()
    rows: list[Any] = []
    next_cursor = None
    try:
        filters = to_filter(console, q)
        cursor = int(q.cursor) if q.cursor.isdigit() else None
        async with console.db.read() as session:
            rows, next_cursor = await service.search(session, filters=filters, cursor=cursor, limit=PAGE_SIZE)
    except InvalidRequest as exc:
        console.field_error(errors, exc.field or "since", exc)
    return console.render(
        "audit.html", status=422 if errors else 200, active="audit", q=q, errors=errors, staff=is_staff(console),
        entries=[(e, diff(e.before, e.after)) for e in rows], next_cursor=next_cursor,
    )


@router.get("/audit.csv")
async def audit_csv(console: SignedIn) -> Any:
    q = AuditQuery.from_request(console)
    try:
        filters = to_filter(console, q)
    except InvalidRequest as exc:
        return console.redirect_error("/console/audit", exc)
    response = StreamingResponse(service.export_csv(console.db, filters), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'})
    return console.finish(response)
