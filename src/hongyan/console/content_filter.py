"""Content-filter pages: the account's own rules (/console/filter, permission account.settings) and the
platform's list for staff (/console/review/filter, reviewers and platform administrators): the rules with
search and paging, add one, add many (invalid lines listed by number), delete, and "test a text" showing
the verdict the submit gate would reach. The same services as /v1/filter-rules (compliance.filter_rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from hongyan.accounts.permissions import (
    ACCOUNT_SETTINGS,
    OPERATOR_REVIEW,
    PLATFORM_ADMIN,
    REVIEWER,
    Authority,
)
from hongyan.audit.service import actor_for_console
from hongyan.compliance import filter_rules, normalize
from hongyan.compliance.filter_patterns import KIND_ACTIONS, KINDS
from hongyan.console.access import NoPermission, can, member_authority
from hongyan.console.channels import RoleAwareUser, with_platform_role
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE_SIZE = 100
MAX_TEST_TEXT = 5_000
RULE_FIELDS = ("kind", "pattern", "action", "category", "note")
BULK_FIELDS = ("bulk_kind", "bulk_action", "bulk_category", "lines")


@dataclass(frozen=True, slots=True)
class ListScope:
    """Which list a page works on: an account's (account_id) or the platform's (None)."""

    account_id: str | None
    page: str
    authority: Authority

    @property
    def is_platform(self) -> bool:
        return self.account_id is None


async def account_list(console: SignedIn) -> tuple[Console, ListScope]:
    if not can(console, ACCOUNT_SETTINGS):
        raise NoPermission(console, ACCOUNT_SETTINGS)
    return console, ListScope(console.account_id, "/console/filter", member_authority(console))


async def platform_list(
    console: Annotated[Console, Depends(with_platform_role)],
) -> tuple[Console, ListScope]:
    """Staff only: a reviewer or platform administrator; anyone else gets the 403 page (operator.review)."""
    user = console.user
    if not (isinstance(user, RoleAwareUser) and user.platform_role in (REVIEWER, PLATFORM_ADMIN)):
        raise NoPermission(console, OPERATOR_REVIEW)
    authority = Authority.of_member(
        account_id=user.account_id, user_id=user.user_id, role=user.platform_role or "", label=user.email
    )
    return console, ListScope(None, "/console/review/filter", authority)


AccountList = Annotated[tuple[Console, ListScope], Depends(account_list)]
PlatformList = Annotated[tuple[Console, ListScope], Depends(platform_list)]


def _empty_rule_form() -> dict[str, str]:
    return {"kind": "keyword", "pattern": "", "action": "block", "category": "", "note": ""}


def _empty_bulk_form() -> dict[str, str]:
    return {"bulk_kind": "keyword", "bulk_action": "block", "bulk_category": "", "lines": ""}


async def _render(
    console: Console,
    scope: ListScope,
    *,
    status: int = 200,
    q: str = "",
    kind: str = "",
    cursor: str = "",
    **values: Any,
) -> Any:
    kind = kind if kind in KINDS else ""
    async with console.db.read() as session:
        rows = await filter_rules.list_rules(
            session,
            account_id=scope.account_id,
            kind=kind or None,
            search=q.strip()[:100] or None,
            before=cursor or None,
            limit=PAGE_SIZE + 1,
        )
        total = await filter_rules.count_rules(session, scope.account_id)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    values.setdefault("rule_form", _empty_rule_form())
    values.setdefault("bulk_form", _empty_bulk_form())
    values.setdefault("test_text", "")
    values.setdefault("tested", False)
    values.setdefault("verdict", None)
    values.setdefault("bulk_result", None)
    return console.render(
        "content_filter.html",
        status=status,
        active="review" if scope.is_platform else "content_filter",
        review_tab="filter",
        platform=scope.is_platform,
        page=scope.page,
        rules=rows,
        total=total,
        next_cursor=rows[-1].id if more else None,
        q=q,
        kind_filter=kind,
        kinds=KINDS,
        kind_actions=KIND_ACTIONS,
        **values,
    )


def _rule_error_field(exc: HongyanError) -> str:
    return exc.field if exc.field in RULE_FIELDS else "pattern"


async def _add(console: Console, scope: ListScope, form: Any) -> Any:
    values = {name: form_text(form, name) for name in RULE_FIELDS}
    try:
        async with console.db.write() as session:
            rule = await filter_rules.add_rule(
                session,
                account_id=scope.account_id,
                kind=values["kind"],
                pattern=values["pattern"],
                action=values["action"] or None,
                category=values["category"],
                note=values["note"],
                actor=actor_for_console(console),
                authority=scope.authority,
            )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, _rule_error_field(exc), exc)
        return await _render(console, scope, status=422, errors=errors, rule_form=values)
    return console.redirect(
        scope.page, flash=Flash(kind="success", key="filter.flash.added", params={"pattern": rule.pattern})
    )


async def _bulk(console: Console, scope: ListScope, form: Any) -> Any:
    values = {name: form_text(form, name) for name in BULK_FIELDS}
    try:
        async with console.db.write() as session:
            result = await filter_rules.bulk_add(
                session,
                account_id=scope.account_id,
                kind=values["bulk_kind"],
                lines=values["lines"],
                action=values["bulk_action"] or None,
                category=values["bulk_category"],
                actor=actor_for_console(console),
                authority=scope.authority,
            )
    except HongyanError as exc:
        errors = FieldErrors()
        field = {"kind": "bulk_kind", "action": "bulk_action", "category": "bulk_category"}.get(
            exc.field or ""
        )
        console.field_error(errors, field or "lines", exc)
        return await _render(console, scope, status=422, errors=errors, bulk_form=values)
    if not result.invalid:
        return console.redirect(
            scope.page,
            flash=Flash(
                kind="success",
                key="filter.flash.bulk_added",
                params={"added": result.added, "duplicates": len(result.duplicates)},
            ),
        )
    # some lines were refused: show them by number, and keep only those lines in the box to fix and resend
    lines = values["lines"].splitlines()
    values["lines"] = "\n".join(lines[item["line"] - 1] for item in result.invalid)
    return await _render(
        console, scope, status=200 if result.added else 422, bulk_form=values, bulk_result=result.as_dict()
    )


async def _delete(console: Console, scope: ListScope, rule_id: str) -> Any:
    try:
        async with console.db.write() as session:
            rule = await filter_rules.delete_rule(
                session,
                account_id=scope.account_id,
                rule_id=rule_id,
                actor=actor_for_console(console),
                authority=scope.authority,
            )
    except HongyanError as exc:
        return console.redirect_error(scope.page, exc)
    return console.redirect(
        scope.page, flash=Flash(kind="success", key="filter.flash.deleted", params={"pattern": rule.pattern})
    )


async def _test(console: Console, scope: ListScope, form: Any) -> Any:
    text = form_text(form, "text")[:MAX_TEST_TEXT]
    async with console.db.read() as session:
        if scope.account_id is None:
            content_filter = await filter_rules.load_platform_filter(session)
        else:
            content_filter = await filter_rules.load_filter(session, scope.account_id)
    verdict = content_filter.check(text) if text.strip() else None
    return await _render(
        console,
        scope,
        test_text=text,
        tested=bool(text.strip()),
        verdict=verdict,
        normalized=normalize.compact(text),
    )


# -- the account's list ----------------------------------------------------------------------------
@router.get("/filter")
async def account_page(listing: AccountList, q: str = "", kind: str = "", cursor: str = "") -> Any:
    return await _render(*listing, q=q, kind=kind, cursor=cursor)


@router.post("/filter")
async def account_add(listing: AccountList, form: CheckedForm) -> Any:
    return await _add(*listing, form)


@router.post("/filter/bulk")
async def account_bulk(listing: AccountList, form: CheckedForm) -> Any:
    return await _bulk(*listing, form)


@router.post("/filter/test")
async def account_test(listing: AccountList, form: CheckedForm) -> Any:
    return await _test(*listing, form)


@router.post("/filter/{rule_id}/delete")
async def account_delete(listing: AccountList, form: CheckedForm, rule_id: str) -> Any:
    return await _delete(*listing, rule_id)


# -- the platform's list (staff) -------------------------------------------------------------------
@router.get("/review/filter")
async def platform_page(listing: PlatformList, q: str = "", kind: str = "", cursor: str = "") -> Any:
    return await _render(*listing, q=q, kind=kind, cursor=cursor)


@router.post("/review/filter")
async def platform_add(listing: PlatformList, form: CheckedForm) -> Any:
    return await _add(*listing, form)


@router.post("/review/filter/bulk")
async def platform_bulk(listing: PlatformList, form: CheckedForm) -> Any:
    return await _bulk(*listing, form)


@router.post("/review/filter/test")
async def platform_test(listing: PlatformList, form: CheckedForm) -> Any:
    return await _test(*listing, form)


@router.post("/review/filter/{rule_id}/delete")
async def platform_delete(listing: PlatformList, form: CheckedForm, rule_id: str) -> Any:
    return await _delete(*listing, rule_id)
