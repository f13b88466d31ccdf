"""/v1/held-messages (an account's own messages the content filter holds, read-only, its numbers in full) and
/v1/operator/reviews/messages (the reviewers' queue, numbers masked; approve or reject several at once;
API key scope `operator`). Thin routes over compliance.holds.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts import permissions as p
from hongyan.api.body import openapi_body, parse_body
from hongyan.api.deps import DbDep, OperatorAccount
from hongyan.api.responses import JsonResponse
from hongyan.audit.service import actor_for_api
from hongyan.compliance import holds
from hongyan.compliance.held_review import held_json, rule_kinds
from hongyan.compliance.kyc_routes import NO_NUL, CallingAccount, authority_with

router = APIRouter(tags=["verification and reviews"])


@router.get(
    "/v1/held-messages", summary="The account's messages the content filter holds for review (read-only)"
)
async def account_held_messages(
    db: DbDep,
    ctx: CallingAccount,
    status: Literal["open", "all"] = "open",
    cursor: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JsonResponse:
    authority_with(ctx, p.MESSAGES_READ)
    async with db.read() as session:
        rows = await holds.list_holds(
            session, account_id=ctx.account_id, open_only=status == "open", limit=limit + 1, before=cursor
        )
        kinds = await rule_kinds(session, rows)
    more = len(rows) > limit
    rows = rows[:limit]
    return JsonResponse(
        {
            "data": [held_json(h, kinds=kinds, masked=False) for h in rows],
            "has_more": more,
            "next_cursor": rows[-1].message_id if more else None,
        }
    )


# -- reviewers: held messages ----------------------------------------------------------------------------
class HoldDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_ids: Annotated[
        list[Annotated[StrictStr, Field(max_length=40, pattern=NO_NUL)]], Field(max_length=500)
    ]
    decision: Literal["approved", "rejected"]
    reason: Annotated[StrictStr, Field(max_length=1000)] | None = None


@router.get(
    "/v1/operator/reviews/messages",
    summary="Messages held by the content filter (numbers masked), newest first, with the matched rule",
)
async def list_held(
    db: DbDep,
    ctx: OperatorAccount,
    status: Literal["open", "all"] = "open",
    account_id: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    cursor: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JsonResponse:
    authority_with(ctx, p.OPERATOR_REVIEW)
    async with db.read() as session:
        rows = await holds.list_holds(
            session, account_id=account_id, open_only=status == "open", limit=limit + 1, before=cursor
        )
        kinds = await rule_kinds(session, rows)
        open_count = await holds.count_open(session)
    more = len(rows) > limit
    rows = rows[:limit]
    return JsonResponse(
        {
            "open": open_count,
            "data": [held_json(h, kinds=kinds, masked=True) for h in rows],
            "has_more": more,
            "next_cursor": rows[-1].message_id if more else None,
        }
    )


@router.post(
    "/v1/operator/reviews/messages/decide",
    summary="Approve (sent on) or reject (not sent, funds released) held messages",
    openapi_extra=openapi_body(
        HoldDecision, {"message_ids": ["msg_01…"], "decision": "rejected", "reason": "疑似诈骗内容"}
    ),
)
async def decide_held(request: Request, db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    authority_with(ctx, p.OPERATOR_REVIEW)
    data = await parse_body(request, HoldDecision)
    decided = await holds.decide(
        db,
        message_ids=list(dict.fromkeys(data.message_ids)),
        decision=data.decision,
        actor=actor_for_api(ctx, request),
        reason=data.reason,
    )
    return JsonResponse(
        {"decided": decided, "requested": len(set(data.message_ids)), "decision": data.decision}
    )
