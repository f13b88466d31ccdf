"""/v1/filter-rules (the account's own content-filter list; permission account.settings) and
/v1/operator/filter-rules (the platform's list; API key scope `operator`): list, add, bulk add, delete,
and "test a text" against the filter as the submit gate applies it. Thin routes over filter_rules."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts.keys import AccountContext
from hongyan.accounts.permissions import ACCOUNT_SETTINGS, Authority, require
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import DbDep, OperatorAccount, current_account
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.compliance import filter_rules, normalize
from hongyan.compliance.filter_patterns import KINDS

router = APIRouter(tags=["content filter"])
operator_router = APIRouter(tags=["operator: content filter"])
AnyAccount = Annotated[AccountContext, Depends(current_account)]
Kind = Literal["keyword", "regex", "url_allow", "url_deny"]
Action = Literal["block", "review", "allow"]
MAX_TEST_TEXT = 5_000
MAX_BULK_TEXT = 6_000_000  # 10,000 lines of up to 500 characters, with room for line breaks


class FilterRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind = "keyword"
    pattern: Annotated[StrictStr, Field(max_length=2000)]
    action: Action | None = Field(
        None, description="block | review | allow; default: block (url_allow: allow)"
    )
    category: Annotated[StrictStr, Field(max_length=200)] | None = None
    note: Annotated[StrictStr, Field(max_length=1000)] | None = None


class FilterRuleBulk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind = "keyword"
    text: Annotated[StrictStr, Field(max_length=MAX_BULK_TEXT, description="One pattern per line.")]
    action: Action | None = None
    category: Annotated[StrictStr, Field(max_length=200)] | None = None
    note: Annotated[StrictStr, Field(max_length=1000)] | None = None


class FilterTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[StrictStr, Field(max_length=MAX_TEST_TEXT)]


_RULE_EXAMPLE = {"kind": "keyword", "pattern": "代开发票", "action": "block", "category": "invoice"}
_BULK_EXAMPLE = {"kind": "keyword", "action": "review", "category": "finance", "text": "贷款\n低息贷款\n网贷"}
_TEST_EXAMPLE = {"text": "代 開 發 票，联系V信"}


def _authority(ctx: AccountContext) -> Authority:
    authority = Authority.of_api(ctx)
    require(authority, ACCOUNT_SETTINGS)
    return authority


async def _list(
    db: DbDep, account_id: str | None, kind: str | None, q: str | None, cursor: str | None, limit: int
) -> JsonResponse:
    async with db.read() as session:
        rows = await filter_rules.list_rules(
            session, account_id=account_id, kind=kind, search=q, before=cursor, limit=limit + 1
        )
        total = await filter_rules.count_rules(session, account_id)
    more = len(rows) > limit
    rows = rows[:limit]
    return JsonResponse(
        {
            "data": [filter_rules.rule_view(r) for r in rows],
            "has_more": more,
            "next_cursor": rows[-1].id if more else None,
            "total": total,
        }
    )


async def _create(
    request: Request, db: DbDep, ctx: AccountContext, account_id: str | None, authority: Authority
) -> JsonResponse:
    data = await parse_body(request, FilterRuleCreate)
    async with db.write() as session:
        rule = await filter_rules.add_rule(
            session,
            account_id=account_id,
            kind=data.kind,
            pattern=data.pattern,
            action=data.action,
            category=data.category,
            note=data.note,
            actor=actor_for_api(ctx, request),
            authority=authority,
        )
        return JsonResponse(filter_rules.rule_view(rule), status_code=201)


async def _bulk(
    request: Request, db: DbDep, ctx: AccountContext, account_id: str | None, authority: Authority
) -> JsonResponse:
    data = await parse_body(request, FilterRuleBulk)
    async with db.write() as session:
        result = await filter_rules.bulk_add(
            session,
            account_id=account_id,
            kind=data.kind,
            lines=data.text,
            action=data.action,
            category=data.category,
            note=data.note,
            actor=actor_for_api(ctx, request),
            authority=authority,
        )
    return JsonResponse(result.as_dict(), status_code=201 if result.added else 200)


async def _delete(
    rule_id: str,
    request: Request,
    db: DbDep,
    ctx: AccountContext,
    account_id: str | None,
    authority: Authority,
) -> JsonResponse:
    async with db.write() as session:
        await filter_rules.delete_rule(
            session,
            account_id=account_id,
            rule_id=rule_id,
            actor=actor_for_api(ctx, request),
            authority=authority,
        )
    return JsonResponse({"id": rule_id, "deleted": True})


async def _test(request: Request, db: DbDep, account_id: str | None) -> JsonResponse:
    data = await parse_body(request, FilterTest)
    async with db.read() as session:
        if account_id is None:
            content_filter = await filter_rules.load_platform_filter(session)
        else:
            content_filter = await filter_rules.load_filter(session, account_id)
    verdict = content_filter.check(data.text)
    body: dict[str, Any] = {
        "verdict": verdict.as_dict() if verdict else None,
        "normalized": normalize.compact(data.text),
    }
    return JsonResponse(body)


KindQuery = Annotated[Kind | None, Query(description=f"one of {', '.join(KINDS)}")]
SearchQuery = Annotated[str | None, Query(max_length=100, description="patterns containing this text")]
CursorQuery = Annotated[str | None, Query(max_length=40)]
LimitQuery = Annotated[int, Query(ge=1, le=500)]


# -- the account's own list ------------------------------------------------------------------------
@router.get("/v1/filter-rules", summary="The account's own content-filter rules, newest first")
async def list_account_rules(
    db: DbDep,
    ctx: AnyAccount,
    kind: KindQuery = None,
    q: SearchQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> JsonResponse:
    _authority(ctx)
    return await _list(db, ctx.account_id, kind, q, cursor, limit)


@router.post(
    "/v1/filter-rules",
    status_code=201,
    summary="Add a rule to the account's content filter",
    openapi_extra=openapi_body(FilterRuleCreate, _RULE_EXAMPLE),
)
async def create_account_rule(request: Request, db: DbDep, ctx: AnyAccount) -> JsonResponse:
    return await _create(request, db, ctx, ctx.account_id, _authority(ctx))


_BULK_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"description": "At least one rule was added; invalid lines are listed with their line numbers."},
    200: {"description": "Nothing was added (every line was a duplicate or invalid); the lines are listed."},
}


@router.post(
    "/v1/filter-rules/bulk",
    summary="Add many rules of one kind, one per line (invalid lines reported)",
    openapi_extra=openapi_body(FilterRuleBulk, _BULK_EXAMPLE),
    responses=_BULK_RESPONSES,
)
async def bulk_account_rules(request: Request, db: DbDep, ctx: AnyAccount) -> JsonResponse:
    return await _bulk(request, db, ctx, ctx.account_id, _authority(ctx))


@router.post(
    "/v1/filter-rules/test",
    summary="Check a text against the platform's and the account's rules",
    openapi_extra=openapi_body(FilterTest, _TEST_EXAMPLE),
)
async def test_account_text(request: Request, db: DbDep, ctx: AnyAccount) -> JsonResponse:
    _authority(ctx)
    return await _test(request, db, ctx.account_id)


@router.delete("/v1/filter-rules/{rule_id}", summary="Delete one of the account's rules")
async def delete_account_rule(rule_id: str, request: Request, db: DbDep, ctx: AnyAccount) -> JsonResponse:
    return await _delete(rule_id, request, db, ctx, ctx.account_id, _authority(ctx))


# -- the platform's list ---------------------------------------------------------------------------
@operator_router.get("/v1/operator/filter-rules", summary="The platform's content-filter rules, newest first")
async def list_platform_rules(
    db: DbDep,
    ctx: OperatorAccount,
    kind: KindQuery = None,
    q: SearchQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> JsonResponse:
    return await _list(db, None, kind, q, cursor, limit)


@operator_router.post(
    "/v1/operator/filter-rules",
    status_code=201,
    summary="Add a rule to the platform's content filter (applies to every account)",
    openapi_extra=openapi_body(FilterRuleCreate, _RULE_EXAMPLE),
)
async def create_platform_rule(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    return await _create(request, db, ctx, None, Authority.of_api(ctx))


@operator_router.post(
    "/v1/operator/filter-rules/bulk",
    summary="Add many platform rules of one kind, one per line",
    openapi_extra=openapi_body(FilterRuleBulk, _BULK_EXAMPLE),
    responses=_BULK_RESPONSES,
)
async def bulk_platform_rules(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    return await _bulk(request, db, ctx, None, Authority.of_api(ctx))


@operator_router.post(
    "/v1/operator/filter-rules/test",
    summary="Check a text against the platform's rules",
    openapi_extra=openapi_body(FilterTest, _TEST_EXAMPLE),
)
async def test_platform_text(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    return await _test(request, db, None)


@operator_router.delete("/v1/operator/filter-rules/{rule_id}", summary="Delete a platform rule")
async def delete_platform_rule(
    rule_id: str, request: Request, db: DbDep, ctx: OperatorAccount
) -> JsonResponse:
    return await _delete(rule_id, request, db, ctx, None, Authority.of_api(ctx))
