"""/v1/audit-log: the account's audit log (scope `admin`), and /v1/operator/audit-log: every account's, plus
the chain check (scope `operator`). Thin routes over audit.service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hongyan.api.body import UtcDatetime
from hongyan.api.deps import AdminAccount, DbDep, OperatorAccount
from hongyan.api.responses import JsonResponse
from hongyan.audit import service
from hongyan.audit.service import AuditFilter
from hongyan.db.engine import Database

router = APIRouter(tags=["audit log"])

ActionQ = Annotated[str | None, Query(max_length=48, description="Action or prefix: `billing.` or `channel.updated`.")]
ActorQ = Annotated[str | None, Query(max_length=254, description="Actor id (`key_…`, `usr_…`) or label (email).")]
TargetQ = Annotated[str | None, Query(max_length=64, description="Id of the changed object.")]
SinceQ = Annotated[UtcDatetime | None, Query(description="Occurred at or after (ISO 8601).")]
UntilQ = Annotated[UtcDatetime | None, Query(description="Occurred before (ISO 8601).")]
CursorQ = Annotated[int | None, Query(ge=1, le=2**63 - 1, description="`next_cursor` of the previous page.")]
LimitQ = Annotated[int, Query(ge=1, le=service.MAX_PAGE)]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "Entries oldest first, one per row (UTF-8 with BOM).",
          "content": {"text/csv": {"schema": {"type": "string"}}}},
}


async def _page(db: Database, filters: AuditFilter, cursor: int | None, limit: int) -> JsonResponse:
    async with db.read() as session:
        rows, next_cursor = await service.search(session, filters=filters, cursor=cursor, limit=limit)
    return JsonResponse({"data": [service.entry_json(e) for e in rows], "next_cursor": next_cursor,
                         "has_more": next_cursor is not None})


def _csv(db: Database, filters: AuditFilter) -> StreamingResponse:
    return StreamingResponse(service.export_csv(db, filters), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="audit-log.csv"'})


@router.get("/v1/audit-log", summary="Who changed what in this account, newest first (cursor pagination)")
async def list_audit_log(
    db: DbDep, ctx: AdminAccount, action: ActionQ = None, actor: ActorQ = None, target_id: TargetQ = None,
    since: SinceQ = None, until: UntilQ = None, cursor: CursorQ = None, limit: LimitQ = 50,
) -> JsonResponse:
    filters = AuditFilter(ctx.account_id, action, actor, target_id, since, until)
    return await _page(db, filters, cursor, limit)


@router.get("/v1/audit-log.csv", summary="The account's audit log as CSV (same filters)",
            response_class=StreamingResponse, responses=CSV_RESPONSE)
async def export_audit_log(
    db: DbDep, ctx: AdminAccount, action: ActionQ = None, actor: ActorQ = None, target_id: TargetQ = None,
    since: SinceQ = None, until: UntilQ = None,
) -> StreamingResponse:
    return _csv(db, AuditFilter(ctx.account_id, action, actor, target_id, since, until))


@router.get("/v1/operator/audit-log", tags=["operator: audit log"],
            summary="Every account's audit log and the platform's own changes, newest first")
async def operator_audit_log(
    db: DbDep, ctx: OperatorAccount,
    account_id: Annotated[str | None, Query(max_length=30, description="Only this account's entries.")] = None,
    action: ActionQ = None, actor: ActorQ = None, target_id: TargetQ = None, since: SinceQ = None,
    until: UntilQ = None, cursor: CursorQ = None, limit: LimitQ = 50,
) -> JsonResponse:
    return await _page(db, AuditFilter(account_id, action, actor, target_id, since, until), cursor, limit)


@router.get("/v1/operator/audit-log.csv", tags=["operator: audit log"],
            summary="Every account's audit log as CSV (same filters)",
            response_class=StreamingResponse, responses=CSV_RESPONSE)
async def operator_export_audit_log(
    db: DbDep, ctx: OperatorAccount,
    account_id: Annotated[str | None, Query(max_length=30, description="Only this account's entries.")] = None,
    action: ActionQ = None, actor: ActorQ = None, target_id: TargetQ = None, since: SinceQ = None,
    until: UntilQ = None,
) -> StreamingResponse:
    return _csv(db, AuditFilter(account_id, action, actor, target_id, since, until))


@router.get("/v1/operator/audit-log/verify", tags=["operator: audit log"],
            summary="Check the hash chain (same check as `hongyan audit verify`)")
async def operator_verify_audit_log(db: DbDep, ctx: OperatorAccount) -> JsonResponse:
    async with db.read() as session:
        result = await service.verify_chain(session)
    return JsonResponse({"ok": result.ok, "entries": result.entries, "first_bad_seq": result.first_bad_seq,
                         "problem": result.problem})
