"""Content-filter rules: add, bulk add, list and delete the platform's list and each account's own, and
`load_filter`, the compiled filter the submit gate checks every distinct message text with.

Every change bumps the list's `filter_version` row in the same transaction, and each process keeps the
compiled lists keyed by that version: a submit costs one indexed read of two version rows, and a list is
compiled again only after it changed (in whichever process changed it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import ACCOUNT_SETTINGS, OPERATOR_REVIEW, Authority, require
from hongyan.audit.service import Actor, record
from hongyan.compliance import filter_patterns as fp
from hongyan.compliance import normalize
from hongyan.compliance.content_filter import ACCOUNT, PLATFORM, ContentFilter, Rule, RuleList
from hongyan.compliance.models import FilterRule, FilterVersion
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import Conflict, HongyanError, NotFound, Unprocessable

PLATFORM_SCOPE = "platform"  # filter_version.scope of the platform list
MAX_ACCOUNT_RULES = 10_000
MAX_PLATFORM_RULES = 100_000
MAX_ACCOUNT_REGEXES = 200  # every regex runs on every message of the account: keep the cost bounded
MAX_BULK_LINES = 10_000
AUDITED_PATTERNS = 100  # a bulk add's audit entry lists this many patterns (and the count)


def scope_key(account_id: str | None) -> str:
    return account_id or PLATFORM_SCOPE


def _authorize(authority: Authority | None, account_id: str | None) -> None:
    """An account's list needs account settings rights; the platform list needs a reviewer or admin."""
    if authority is not None:
        require(authority, ACCOUNT_SETTINGS if account_id is not None else OPERATOR_REVIEW)


def match_key(kind: str, pattern: str) -> str:
    """Two rules of one kind with the same key are the same rule (`代 开发票` and `代开发票` are one keyword)."""
    return normalize.compact(pattern) if kind == "keyword" else pattern


def rule_view(rule: FilterRule) -> dict[str, Any]:
    """A rule as the API, the console and the audit log show it."""
    return {
        "id": rule.id,
        "scope": ACCOUNT if rule.account_id else PLATFORM,
        "kind": rule.kind,
        "pattern": rule.pattern,
        "action": rule.action,
        "category": rule.category,
        "note": rule.note,
        "created_by": rule.created_by,
        "created_at": isoformat(rule.created_at),
    }


def _optional(value: str | None, limit: int, name: str) -> str | None:
    value = (value or "").strip()
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise Unprocessable("invalid_value", f"{name} contains a NUL character.", field=name)
    if len(value) > limit:
        raise Unprocessable("invalid_value", f"{name} is longer than {limit} characters.", field=name)
    return value or None


def _creator(actor: Actor) -> str | None:
    prefix = {"user": "user", "api_key": "key"}.get(actor.type, actor.type)
    return f"{prefix}:{actor.id}" if actor.id else actor.label


async def bump_version(session: AsyncSession, scope: str) -> int:
    """Next version of a list (created at 1), in the caller's transaction."""
    now = utcnow()
    dialect = session.bind.dialect.name if session.bind is not None else ""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(FilterVersion).values(
        scope=scope, version=1, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[FilterVersion.scope], set_={"version": FilterVersion.version + 1, "updated_at": now}
    )
    version = await session.scalar(stmt.returning(FilterVersion.version))
    return int(version or 0)


async def count_rules(session: AsyncSession, account_id: str | None, kind: str | None = None) -> int:
    owner = FilterRule.account_id.is_(None) if account_id is None else FilterRule.account_id == account_id
    query = select(func.count()).select_from(FilterRule).where(owner)
    if kind is not None:
        query = query.where(FilterRule.kind == kind)
    return int(await session.scalar(query) or 0)


async def _check_room(session: AsyncSession, account_id: str | None, kind: str, adding: int) -> None:
    """`filter_rule_limit` when the list would grow past its size (and an account's past 200 regexes)."""
    limits = [(None, MAX_PLATFORM_RULES if account_id is None else MAX_ACCOUNT_RULES)]
    if kind == "regex" and account_id is not None:
        limits.append(("regex", MAX_ACCOUNT_REGEXES))
    for counted_kind, limit in limits:
        existing = await count_rules(session, account_id, counted_kind)
        if existing + adding > limit:
            what = "regex rules" if counted_kind else "rules"
            raise Unprocessable(
                "filter_rule_limit",
                f"A list holds at most {limit:,} {what}; it has {existing:,}.",
                field="pattern",
                details={"limit": limit, "count": existing},
            )


async def _existing_keys(session: AsyncSession, account_id: str | None, kind: str) -> dict[str, str]:
    owner = FilterRule.account_id.is_(None) if account_id is None else FilterRule.account_id == account_id
    rows = await session.execute(
        select(FilterRule.id, FilterRule.pattern).where(owner, FilterRule.kind == kind)
    )
    return {match_key(kind, r.pattern): r.id for r in rows}


async def add_rule(
    session: AsyncSession,
    *,
    account_id: str | None,
    kind: str,
    pattern: str,
    action: str | None = None,
    category: str | None = None,
    note: str | None = None,
    actor: Actor,
    authority: Authority | None,
) -> FilterRule:
    """One rule in the account's list (account_id) or the platform's (None); audited, version bumped."""
    _authorize(authority, account_id)
    action = fp.check_kind_action(kind, action)
    stored = fp.clean_pattern(kind, pattern)
    category = _optional(category, fp.MAX_CATEGORY, "category")
    note = _optional(note, fp.MAX_NOTE, "note")
    existing = await _existing_keys(session, account_id, kind)
    if match_key(kind, stored) in existing:
        raise Conflict(
            "filter_rule_exists",
            "The list already has this pattern.",
            field="pattern",
            details={"id": existing[match_key(kind, stored)]},
        )
    await _check_room(session, account_id, kind, 1)
    rule = FilterRule(
        id=ids.new_id("flt"),
        account_id=account_id,
        kind=kind,
        pattern=stored,
        action=action,
        category=category,
        note=note,
        created_by=_creator(actor),
        created_at=utcnow(),
    )
    session.add(rule)
    await session.flush()
    await bump_version(session, scope_key(account_id))
    await record(
        session,
        actor=actor,
        action="filter_rule.created",
        account_id=account_id,
        target_type="filter_rule",
        target_id=rule.id,
        after=rule_view(rule),
    )
    return rule


@dataclass(slots=True)
class BulkResult:
    added: int = 0
    duplicates: list[int] = field(default_factory=list)  # line numbers (1-based) already in the list
    invalid: list[dict[str, Any]] = field(default_factory=list)  # {line, code, message, field}

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "duplicates": len(self.duplicates),
            "duplicate_lines": self.duplicates,
            "invalid": self.invalid,
        }


async def bulk_add(
    session: AsyncSession,
    *,
    account_id: str | None,
    kind: str,
    lines: str,
    action: str | None = None,
    category: str | None = None,
    note: str | None = None,
    actor: Actor,
    authority: Authority | None,
) -> BulkResult:
    """Many rules of one kind, one per line: valid new lines are added, lines already in the list (or
    earlier in the text) counted as duplicates, and each invalid line reported with its number (empty, over
    500 characters, a regex that does not compile…). One version bump and one audit entry for the lot."""
    _authorize(authority, account_id)
    action = fp.check_kind_action(kind, action)
    category = _optional(category, fp.MAX_CATEGORY, "category")
    note = _optional(note, fp.MAX_NOTE, "note")
    texts = lines.splitlines()
    if len(texts) > MAX_BULK_LINES:
        raise Unprocessable(
            "filter_bulk_too_large",
            f"Send at most {MAX_BULK_LINES:,} lines at once (this has {len(texts):,}).",
            field="text",
        )
    result = BulkResult()
    seen = await _existing_keys(session, account_id, kind)
    rows: list[dict[str, Any]] = []
    now, creator = utcnow(), _creator(actor)
    for number, text in enumerate(texts, start=1):
        try:
            stored = fp.clean_pattern(kind, text)
        except HongyanError as exc:
            result.invalid.append({"line": number, "code": exc.code, "message": exc.message, "field": "text"})
            continue
        key = match_key(kind, stored)
        if key in seen:
            result.duplicates.append(number)
            continue
        seen[key] = ""
        rows.append(
            {
                "id": ids.new_id("flt"),
                "account_id": account_id,
                "kind": kind,
                "pattern": stored,
                "action": action,
                "category": category,
                "note": note,
                "created_by": creator,
                "created_at": now,
            }
        )
    if not rows:
        return result
    await _check_room(session, account_id, kind, len(rows))
    await session.execute(insert(FilterRule), rows)
    result.added = len(rows)
    await bump_version(session, scope_key(account_id))
    patterns = [r["pattern"] for r in rows[:AUDITED_PATTERNS]]
    await record(
        session,
        actor=actor,
        action="filter_rule.bulk_created",
        account_id=account_id,
        target_type="filter_list",
        target_id=scope_key(account_id),
        after={
            "kind": kind,
            "action": action,
            "category": category,
            "added": len(rows),
            "patterns": patterns,
            "patterns_truncated": len(rows) > AUDITED_PATTERNS,
        },
    )
    return result


async def list_rules(
    session: AsyncSession,
    *,
    account_id: str | None,
    kind: str | None = None,
    search: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> list[FilterRule]:
    """A list's rules, newest first, `limit` from the cursor `before` (a rule id)."""
    owner = FilterRule.account_id.is_(None) if account_id is None else FilterRule.account_id == account_id
    query = select(FilterRule).where(owner)
    if kind:
        query = query.where(FilterRule.kind == kind)
    search = (search or "").replace("\x00", "")
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(FilterRule.pattern.like(f"%{escaped}%", escape="\\"))
    if before:
        query = query.where(FilterRule.id < before.replace("\x00", ""))
    return list(await session.scalars(query.order_by(FilterRule.id.desc()).limit(limit)))


async def delete_rule(
    session: AsyncSession, *, account_id: str | None, rule_id: str, actor: Actor, authority: Authority | None
) -> FilterRule:
    """Remove a rule of this list; another account's rule, or a platform rule asked for through an
    account, is "not found" like an unknown id."""
    _authorize(authority, account_id)
    owner = FilterRule.account_id.is_(None) if account_id is None else FilterRule.account_id == account_id
    rule = (
        None
        if "\x00" in rule_id
        else await session.scalar(select(FilterRule).where(FilterRule.id == rule_id, owner))
    )
    if rule is None:
        raise NotFound("filter_rule_not_found", "No such rule in this list.", field="id")
    before = rule_view(rule)
    await session.delete(rule)
    await session.flush()
    await bump_version(session, scope_key(account_id))
    await record(
        session,
        actor=actor,
        action="filter_rule.deleted",
        account_id=account_id,
        target_type="filter_rule",
        target_id=rule_id,
        before=before,
    )
    return rule


# -- the compiled filter ---------------------------------------------------------------------------
Stamp = tuple[int, datetime | None]


@dataclass(slots=True)
class _Entry:
    stamp: Stamp
    rules: RuleList
    combined: ContentFilter | None = None  # this account's list with the platform list it was paired with


class FilterCache:
    """Compiled lists of one process, keyed by database and list, valid while the list's version row is
    unchanged (version and time, so a list emptied and refilled in tests is not mistaken for the old)."""

    def __init__(self, max_accounts: int = 10_000) -> None:
        self.max_accounts = max_accounts
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.compiles = 0  # lists compiled so far (tests and metrics)

    async def _list(self, session: AsyncSession, db_key: str, account_id: str | None, stamp: Stamp) -> _Entry:
        key = (db_key, scope_key(account_id))
        entry = self._entries.get(key)
        if entry is not None and entry.stamp == stamp:
            self._entries.move_to_end(key)
            return entry
        owner = FilterRule.account_id.is_(None) if account_id is None else FilterRule.account_id == account_id
        rows = await session.execute(
            select(FilterRule.id, FilterRule.kind, FilterRule.pattern, FilterRule.action, FilterRule.category)
            .where(owner)
            .order_by(FilterRule.id)
        )
        rules = [Rule(r.id, r.kind, r.pattern, r.action, r.category) for r in rows]
        entry = _Entry(stamp, RuleList(PLATFORM if account_id is None else ACCOUNT, rules))
        self.compiles += 1
        self._entries[key] = entry
        while len(self._entries) > self.max_accounts:
            self._entries.popitem(last=False)
        return entry

    async def load(self, session: AsyncSession, account_id: str | None) -> ContentFilter:
        bind = session.bind
        db_key = str(bind.url) if bind is not None else ""
        scopes = [PLATFORM_SCOPE] if account_id is None else [PLATFORM_SCOPE, account_id]
        rows = await session.execute(
            select(FilterVersion.scope, FilterVersion.version, FilterVersion.updated_at).where(
                FilterVersion.scope.in_(scopes)
            )
        )
        stamps: dict[str, Stamp] = {r.scope: (r.version, r.updated_at) for r in rows}
        platform = await self._list(session, db_key, None, stamps.get(PLATFORM_SCOPE, (0, None)))
        if account_id is None:
            if platform.combined is None:
                platform.combined = ContentFilter(platform.rules, RuleList(ACCOUNT, ()))
            return platform.combined
        account = await self._list(session, db_key, account_id, stamps.get(account_id, (0, None)))
        combined = account.combined
        if combined is None or combined.platform is not platform.rules:
            combined = account.combined = ContentFilter(platform.rules, account.rules)
        return combined

    def clear(self) -> None:
        self._entries.clear()


CACHE = FilterCache()


async def load_filter(session: AsyncSession, account_id: str) -> ContentFilter:
    """The platform's list and this account's, compiled: `load_filter(...).check(text)` → Verdict | None.
    Reads the two version rows; compiles a list again only when its version changed."""
    return await CACHE.load(session, account_id)


async def load_platform_filter(session: AsyncSession) -> ContentFilter:
    """The platform's list alone (the operators' "test a text")."""
    return await CACHE.load(session, None)
