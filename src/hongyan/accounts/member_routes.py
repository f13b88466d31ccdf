"""/v1/members (team: list, invite, change role, remove) and /v1/sub-accounts (create, list, show, change,
API keys of a sub-account). Admin-scoped keys; the services check the permission again (accounts.permissions)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.accounts import keys, members, subaccounts
from hongyan.accounts.permissions import CUSTOMER_ROLES, Authority
from hongyan.accounts.routes import key_json
from hongyan.api.body import UtcDatetime, openapi_body, parse_body
from hongyan.api.client import client_ip
from hongyan.api.deps import AdminAccount, DbDep, SettingsDep
from hongyan.api.responses import JsonResponse
from hongyan.core.clock import isoformat

members_router = APIRouter(prefix="/v1/members", tags=["members"])
sub_accounts_router = APIRouter(prefix="/v1/sub-accounts", tags=["sub-accounts"])


def member_json(m: members.Member) -> dict[str, object]:
    return {"user_id": m.user_id, "email": m.email, "display_name": m.display_name, "role": m.role,
            "joined_at": isoformat(m.joined_at)}


def invitation_json(i: members.Invitation) -> dict[str, object]:
    return {"id": i.id, "email": i.email, "role": i.role, "created_at": isoformat(i.created_at),
            "expires_at": isoformat(i.expires_at)}


class MemberInvite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[StrictStr, Field(max_length=254)]
    role: Annotated[StrictStr, Field(description=f"One of {', '.join(CUSTOMER_ROLES)}.")]
    locale: Literal["zh-CN", "en"] = Field("zh-CN", description="Language of the invitation email.")


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: StrictStr


@members_router.get("", summary="Members of the account and pending invitations")
async def list_members(db: DbDep, ctx: AdminAccount) -> JsonResponse:
    authority = Authority.of_api(ctx)
    async with db.read() as session:
        rows = await members.list_members(session, authority=authority)
        invitations = await members.list_invitations(session, authority=authority)
    return JsonResponse({"data": [member_json(m) for m in rows],
                         "invitations": [invitation_json(i) for i in invitations]})


@members_router.post("", status_code=201, summary="Invite someone by email (the link is valid 7 days)",
                     openapi_extra=openapi_body(MemberInvite, {"email": "dev@example.com", "role": "developer"}))
async def invite_member(request: Request, db: DbDep, settings: SettingsDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, MemberInvite)
    async with db.write() as session:
        invitation, _token = await members.invite(session, settings, authority=Authority.of_api(ctx), email=data.email,
                                                  role=data.role, locale=data.locale, ip=client_ip(request))
    return JsonResponse(invitation_json(invitation), status_code=201)


@members_router.delete("/invitations/{invitation_id}", summary="Withdraw a pending invitation")
async def revoke_invitation(invitation_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.write() as session:
        await members.revoke_invitation(session, authority=Authority.of_api(ctx), invitation_id=invitation_id,
                                        ip=client_ip(request))
    return JsonResponse({"id": invitation_id, "revoked": True})


@members_router.patch("/{user_id}", summary="Change a member's role",
                      openapi_extra=openapi_body(MemberUpdate, {"role": "finance"}))
async def change_role(user_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, MemberUpdate)
    async with db.write() as session:
        member = await members.change_role(session, authority=Authority.of_api(ctx), user_id=user_id, role=data.role,
                                           ip=client_ip(request))
    return JsonResponse(member_json(member))


@members_router.delete("/{user_id}", summary="Remove a member from the account")
async def remove_member(user_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.write() as session:
        await members.remove_member(session, authority=Authority.of_api(ctx), user_id=user_id, ip=client_ip(request))
    return JsonResponse({"user_id": user_id, "removed": True})


# -- sub-accounts --------------------------------------------------------------------------------------
class SubAccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)]
    spend_limit: StrictStr | None = Field(None, description='Cap per period, e.g. "500.00"; null: no cap.')
    spend_limit_period: Literal["day", "month"] = "month"


class SubAccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)] | None = None
    status: Literal["active", "suspended"] | None = None
    spend_limit: StrictStr | None = Field(None, description='New cap, e.g. "500.00"; "" removes the cap.')
    spend_limit_period: Literal["day", "month"] | None = None


class SubAccountKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(max_length=200)]
    scopes: list[StrictStr] = Field(default_factory=lambda: ["send", "read"], max_length=8)
    allowed_cidrs: list[StrictStr] = Field(default_factory=list, max_length=keys.MAX_CIDRS)
    expires_at: UtcDatetime | None = None


def _limit(raw: str | None) -> int | None:
    from hongyan.billing.routes import amount_param

    return None if raw is None or raw == "" else amount_param(raw, "spend_limit")


@sub_accounts_router.get("", summary="Sub-accounts with their spend this period")
async def list_sub_accounts(db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        rows = await subaccounts.list_sub_accounts(session, authority=Authority.of_api(ctx))
    return JsonResponse({"data": [subaccounts.sub_account_json(s) for s in rows]})


@sub_accounts_router.post("", status_code=201, summary="Create a sub-account (paid from this account's balance)",
                          openapi_extra=openapi_body(SubAccountCreate, {"name": "Shop Shenzhen", "spend_limit": "500.00",
                                                                        "spend_limit_period": "month"}))
async def create_sub_account(request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, SubAccountCreate)
    async with db.write() as session:
        created = await subaccounts.create_sub_account(
            session, authority=Authority.of_api(ctx), name=data.name, spend_limit_micros=_limit(data.spend_limit),
            spend_limit_period=data.spend_limit_period, ip=client_ip(request),
        )
        return JsonResponse(subaccounts.sub_account_json(created), status_code=201)


@sub_accounts_router.get("/{sub_account_id}", summary="Show a sub-account")
async def get_sub_account(sub_account_id: str, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    async with db.read() as session:
        item = await subaccounts.show_sub_account(session, authority=Authority.of_api(ctx), sub_account_id=sub_account_id)
        return JsonResponse(subaccounts.sub_account_json(item))


@sub_accounts_router.patch("/{sub_account_id}", summary="Rename, suspend or resume, change the spend limit",
                           openapi_extra=openapi_body(SubAccountUpdate, {"spend_limit": "800.00"}))
async def update_sub_account(sub_account_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, SubAccountUpdate)
    async with db.write() as session:
        item = await subaccounts.update_sub_account(
            session, authority=Authority.of_api(ctx), sub_account_id=sub_account_id, name=data.name, status=data.status,
            spend_limit_micros=_limit(data.spend_limit), clear_spend_limit=data.spend_limit == "",
            spend_limit_period=data.spend_limit_period, ip=client_ip(request),
        )
        return JsonResponse(subaccounts.sub_account_json(item))


@sub_accounts_router.post("/{sub_account_id}/api-keys", status_code=201,
                          summary="Create an API key of the sub-account (the key is shown once)",
                          openapi_extra=openapi_body(SubAccountKeyCreate, {"name": "shop-sz", "scopes": ["send", "read"]}))
async def create_sub_account_key(sub_account_id: str, request: Request, db: DbDep, ctx: AdminAccount) -> JsonResponse:
    data = await parse_body(request, SubAccountKeyCreate)
    async with db.write() as session:
        created = await subaccounts.create_sub_account_key(
            session, authority=Authority.of_api(ctx), sub_account_id=sub_account_id, name=data.name,
            scopes=tuple(data.scopes), allowed_cidrs=data.allowed_cidrs,
            expires_at=data.expires_at.astimezone(UTC) if data.expires_at else None, ip=client_ip(request),
        )
        return JsonResponse({**key_json(created.key), "account_id": created.key.account_id, "key": created.token},
                            status_code=201)
