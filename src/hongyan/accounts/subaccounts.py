"""Sub-accounts: child accounts of a customer with their own API keys, members and a spend limit.

A sub-account has the parent's currency and region, spends from the parent's balance (billing.spend_limits)
and is capped per UTC day or month. One level only: a sub-account cannot have sub-accounts. The parent's
owners and admins manage them (`sub_accounts.manage`); another account's sub-account answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts import keys
from hongyan.accounts.members import actor_of
from hongyan.accounts.models import Account
from hongyan.accounts.permissions import API_KEYS_MANAGE, SUB_ACCOUNTS_MANAGE, Authority, require
from hongyan.audit.service import changes, record
from hongyan.billing.spend_limits import PERIODS, spend_summary
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import InvalidRequest, NotFound
from hongyan.core.money import format_micros

STATUSES = ("active", "suspended")
MAX_LIMIT_MICROS = 10**15  # ¥1,000,000,000: a typo guard, far above any real cap


@dataclass(frozen=True, slots=True)
class SubAccount:
    account: Account
    spend: dict[str, Any]


def view(account: Account) -> dict[str, Any]:
    """What the audit log records of a sub-account."""
    return {"name": account.name, "status": account.status, "spend_limit_micros": account.spend_limit_micros,
            "spend_limit_period": account.spend_limit_period}


def sub_account_json(item: SubAccount) -> dict[str, Any]:
    a = item.account
    return {
        "id": a.id, "parent_id": a.parent_id, "name": a.name, "status": a.status, "currency": a.currency,
        "default_region": a.default_region, "created_at": isoformat(a.created_at),
        "spend_limit": None if a.spend_limit_micros is None else format_micros(a.spend_limit_micros, a.currency),
        "spend_limit_micros": a.spend_limit_micros, "spend_limit_period": a.spend_limit_period,
        "spent": item.spend["spent"], "spent_micros": item.spend["spent_micros"],
        "spend_remaining_micros": item.spend["spend_remaining_micros"],
    }


def _name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidRequest("name_required", "Give the sub-account a name.", field="name")
    return name[:200]


def _limit(micros: int | None) -> int | None:
    if micros is not None and not (0 <= micros <= MAX_LIMIT_MICROS):
        raise InvalidRequest("invalid_spend_limit", "The spend limit must be zero or a positive amount.",
                             field="spend_limit")
    return micros


def _period(period: str) -> str:
    if period not in PERIODS:
        raise InvalidRequest("invalid_spend_period", "The spend limit period is 'day' or 'month' (UTC).",
                             field="spend_limit_period")
    return period


async def _parent(session: AsyncSession, authority: Authority) -> Account:
    parent = await session.get(Account, authority.account_id)
    assert parent is not None
    if parent.parent_id is not None:
        raise InvalidRequest("sub_account_depth", "A sub-account cannot have sub-accounts of its own.",
                             field=None)
    return parent


async def get_sub_account(session: AsyncSession, *, authority: Authority, sub_account_id: str,
                          for_update: bool = False) -> Account:
    """The caller's sub-account by id, or 404 (another account's sub-accounts do not exist for the caller)."""
    require(authority, SUB_ACCOUNTS_MANAGE)
    query = select(Account).where(Account.id == sub_account_id, Account.parent_id == authority.account_id)
    if for_update and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    account = await session.scalar(query)
    if account is None:
        raise NotFound("sub_account_not_found", "No such sub-account.", field="sub_account_id")
    return account


async def create_sub_account(
    session: AsyncSession, *, authority: Authority, name: str, spend_limit_micros: int | None = None,
    spend_limit_period: str = "month", ip: str | None = None,
) -> SubAccount:
    require(authority, SUB_ACCOUNTS_MANAGE)
    parent = await _parent(session, authority)
    from hongyan.accounts.service import create_account

    account = await create_account(session, name=_name(name), default_region=parent.default_region,
                                   currency=parent.currency)
    account.parent_id = parent.id
    account.spend_limit_micros = _limit(spend_limit_micros)
    account.spend_limit_period = _period(spend_limit_period)
    await session.flush()
    await record(session, actor=actor_of(authority, ip), action="sub_account.created", account_id=parent.id,
                 target_type="account", target_id=account.id, after=view(account))
    return SubAccount(account, await spend_summary(session, account, now=utcnow()))


async def list_sub_accounts(session: AsyncSession, *, authority: Authority) -> list[SubAccount]:
    require(authority, SUB_ACCOUNTS_MANAGE)
    rows = list(await session.scalars(
        select(Account).where(Account.parent_id == authority.account_id).order_by(Account.created_at, Account.id)
    ))
    now = utcnow()
    return [SubAccount(a, await spend_summary(session, a, now=now)) for a in rows]


async def show_sub_account(session: AsyncSession, *, authority: Authority, sub_account_id: str) -> SubAccount:
    account = await get_sub_account(session, authority=authority, sub_account_id=sub_account_id)
    return SubAccount(account, await spend_summary(session, account, now=utcnow()))


async def update_sub_account(
    session: AsyncSession, *, authority: Authority, sub_account_id: str, name: str | None = None,
    status: str | None = None, spend_limit_micros: int | None = None, clear_spend_limit: bool = False,
    spend_limit_period: str | None = None, ip: str | None = None,
) -> SubAccount:
    """Rename, suspend or resume (a suspended sub-account's keys stop working), change the limit."""
    account = await get_sub_account(session, authority=authority, sub_account_id=sub_account_id, for_update=True)
    before = view(account)
    if name is not None:
        account.name = _name(name)
    if status is not None:
        if status not in STATUSES:
            raise InvalidRequest("invalid_account_status", "A sub-account's status is 'active' or 'suspended'.", field="status")
        account.status = status
    if clear_spend_limit:
        account.spend_limit_micros = None
    elif spend_limit_micros is not None:
        account.spend_limit_micros = _limit(spend_limit_micros)
    if spend_limit_period is not None:
        account.spend_limit_period = _period(spend_limit_period)
    old, new = changes(before, view(account))
    if new:
        await session.flush()
        await record(session, actor=actor_of(authority, ip), action="sub_account.updated",
                     account_id=authority.account_id, target_type="account", target_id=account.id,
                     before=old, after=new)
    return SubAccount(account, await spend_summary(session, account, now=utcnow()))


async def create_sub_account_key(
    session: AsyncSession, *, authority: Authority, sub_account_id: str, name: str,
    scopes: tuple[str, ...] = ("send", "read"), allowed_cidrs: list[str] | None = None,
    expires_at: datetime | None = None, ip: str | None = None,
) -> keys.CreatedKey:
    """An API key of the sub-account, made by the parent's admin (the token is shown once)."""
    require(authority, API_KEYS_MANAGE)
    account = await get_sub_account(session, authority=authority, sub_account_id=sub_account_id)
    return await keys.create_api_key(
        session, account_id=account.id, name=name, scopes=scopes, created_by=authority.user_id,
        allowed_cidrs=allowed_cidrs, expires_at=expires_at, actor=actor_of(authority, ip),
    )
