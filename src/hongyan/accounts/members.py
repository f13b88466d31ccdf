"""Team members of an account: list, invite by email, accept, change role, remove.

Rules (besides the `members.manage` permission, which owners and admins have):
- only an owner makes owners: an admin (or an admin-scoped API key) cannot invite or promote to owner,
  nor change or remove an owner;
- nobody changes their own role; anyone may leave (remove themselves);
- the last owner can never be demoted or removed (the owners' rows are locked while counting).
Every change is written to the audit log in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.email import queue_email
from hongyan.accounts.models import Account, AuthToken, Membership, User
from hongyan.accounts.passwords import check_password_policy
from hongyan.accounts.permissions import (
    CUSTOMER_ROLES,
    MEMBERS_MANAGE,
    MEMBERS_READ,
    OWNER,
    Authority,
    require,
)
from hongyan.audit.service import Actor, record
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import Conflict, Forbidden, InvalidRequest, NotFound

INVITE_TTL = timedelta(days=7)
INVITE = "invite"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    email: str
    display_name: str
    role: str
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class Invitation:
    id: str
    email: str
    role: str
    created_at: datetime
    expires_at: datetime


def actor_of(authority: Authority, ip: str | None = None) -> Actor:
    """The author of a change for the audit log."""
    if authority.role is None:
        return Actor("api_key", authority.key_id, authority.label, ip)
    return Actor("user", authority.user_id, authority.label, ip)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_role(role: str, field: str = "role") -> str:
    if role not in CUSTOMER_ROLES:
        raise InvalidRequest("invalid_role", f"Unknown role '{role[:30]}'; use one of {', '.join(CUSTOMER_ROLES)}.",
                             field=field)
    return role


def _owner_only(what: str) -> Forbidden:
    return Forbidden("owner_required", f"Only an owner can {what}.", field="role")


def _acts_as_owner(authority: Authority) -> bool:
    return authority.role == OWNER  # an API key (admin scope) counts as an admin, never as an owner


# -- reading ---------------------------------------------------------------------------------------
async def list_members(session: AsyncSession, *, authority: Authority) -> list[Member]:
    require(authority, MEMBERS_READ)
    rows = await session.execute(
        select(User.id, User.email, User.display_name, Membership.role, Membership.created_at)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.account_id == authority.account_id)
        .order_by(Membership.created_at, User.id)
    )
    return [Member(r.id, r.email, r.display_name, r.role, r.created_at) for r in rows]


async def list_invitations(session: AsyncSession, *, authority: Authority) -> list[Invitation]:
    """Invitations not yet accepted and not expired."""
    require(authority, MEMBERS_READ)
    rows = await session.scalars(
        select(AuthToken).where(AuthToken.account_id == authority.account_id, AuthToken.purpose == INVITE,
                                AuthToken.used_at.is_(None), AuthToken.expires_at > utcnow())
        .order_by(AuthToken.created_at)
    )
    return [Invitation(r.id, r.email, r.role or "", r.created_at, r.expires_at) for r in rows]


async def _membership(session: AsyncSession, account_id: str, user_id: str) -> Membership:
    row = await session.scalar(
        select(Membership).where(Membership.account_id == account_id, Membership.user_id == user_id)
    )
    if row is None:
        raise NotFound("member_not_found", "No such member in this account.", field="user_id")
    return row


async def _owner_count(session: AsyncSession, account_id: str) -> int:
    """Owners of the account, their rows locked (PostgreSQL) so two removals cannot both pass."""
    query = select(Membership.user_id).where(Membership.account_id == account_id, Membership.role == OWNER)
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    return len(list(await session.scalars(query)))


# -- invitations -----------------------------------------------------------------------------------
def _invite_email(locale: str, *, account_name: str, role: str, link: str) -> tuple[str, str]:
    if locale == "en":
        return f"You are invited to {account_name} · Hongyan", (
            f"You are invited to join {account_name} on Hongyan as {role}.\n\n"
            f"Open this link within 7 days to accept:\n\n{link}\n\nIf you did not expect this, ignore this email."
        )
    return f"邀请您加入 {account_name} · 鸿雁", (
        f"您被邀请以 {role} 角色加入鸿雁短信平台上的 {account_name}。\n\n"
        f"请在 7 天内打开下面的链接接受邀请：\n\n{link}\n\n如果您没有预料到这封邮件，请忽略。"
    )


async def invite(
    session: AsyncSession, settings: Settings, *, authority: Authority, email: str, role: str,
    locale: str = "zh-CN", ip: str | None = None,
) -> tuple[Invitation, str]:
    """An invitation (valid 7 days) and its email in the outbox; returns it and the one-time token."""
    require(authority, MEMBERS_MANAGE)
    email = email.strip().lower()
    if "@" not in email.strip("@") or len(email) > 254:
        raise InvalidRequest("invalid_email", "Give a valid email address.", field="email")
    _check_role(role)
    if role == OWNER and not _acts_as_owner(authority):
        raise _owner_only("invite an owner")
    already = await session.scalar(
        select(Membership.user_id).join(User, User.id == Membership.user_id)
        .where(Membership.account_id == authority.account_id, User.email == email)
    )
    if already:
        raise Conflict("already_member", "This person is already a member of the account.", field="email")
    account = await session.get(Account, authority.account_id)
    assert account is not None
    # a new invitation replaces an earlier one to the same address (its link stops working)
    now = utcnow()
    await session.execute(
        update(AuthToken).where(AuthToken.account_id == authority.account_id, AuthToken.purpose == INVITE,
                                AuthToken.email == email, AuthToken.used_at.is_(None))
        .values(used_at=now).execution_options(synchronize_session=False)
    )
    token = secrets.token_urlsafe(32)
    row = AuthToken(
        id=ids.new_id("tok"), purpose=INVITE, token_hash=_token_hash(token), user_id=None,
        account_id=authority.account_id, email=email, role=role, created_by=authority.user_id or authority.key_id,
        created_at=now, expires_at=now + INVITE_TTL, used_at=None,
    )
    session.add(row)
    await session.flush()
    link = f"{settings.effective_public_url}/console/invite?token={quote(token)}"
    subject, body = _invite_email(locale, account_name=account.name, role=role, link=link)
    await queue_email(session, backend=settings.email_backend, to=email, subject=subject, body=body, kind=INVITE)
    await record(session, actor=actor_of(authority, ip), action="member.invited", account_id=authority.account_id,
                 target_type="invitation", target_id=row.id, after={"email": email, "role": role})
    return Invitation(row.id, email, role, row.created_at, row.expires_at), token


async def revoke_invitation(session: AsyncSession, *, authority: Authority, invitation_id: str,
                            ip: str | None = None) -> None:
    require(authority, MEMBERS_MANAGE)
    row = await session.scalar(
        select(AuthToken).where(AuthToken.id == invitation_id, AuthToken.account_id == authority.account_id,
                                AuthToken.purpose == INVITE, AuthToken.used_at.is_(None))
    )
    if row is None:
        raise NotFound("invitation_not_found", "No such pending invitation.", field="invitation_id")
    row.used_at = utcnow()
    await record(session, actor=actor_of(authority, ip), action="member.invitation_revoked",
                 account_id=authority.account_id, target_type="invitation", target_id=row.id,
                 before={"email": row.email, "role": row.role})


def _invalid_invitation() -> InvalidRequest:
    return InvalidRequest(
        "token_invalid", "This link is not valid: it was already used, has expired or is incomplete.", field="token"
    )


async def pending_invitation(session: AsyncSession, token: str) -> tuple[AuthToken, Account, bool]:
    """The invitation behind a link, its account, and whether a user with its email already exists."""
    row = await session.scalar(
        select(AuthToken).where(AuthToken.token_hash == _token_hash(token), AuthToken.purpose == INVITE)
    ) if token else None
    if row is None or row.used_at is not None or row.expires_at <= utcnow() or row.account_id is None:
        raise _invalid_invitation()
    account = await session.get(Account, row.account_id)
    if account is None or account.status == "closed":
        raise _invalid_invitation()
    existing = await session.scalar(select(User.id).where(User.email == row.email))
    return row, account, existing is not None


async def accept_invitation(
    session: AsyncSession, settings: Settings, *, token: str, user_id: str | None = None,
    password: str | None = None, display_name: str = "", locale: str = "zh-CN", ip: str | None = None,
) -> User:
    """Join the account. An existing user must be signed in as the invited email (`user_id`); a new user
    is created with `password` (the password policy applies)."""
    from hongyan.accounts.service import create_user

    row, account, exists = await pending_invitation(session, token)
    if exists:
        user = await session.scalar(select(User).where(User.email == row.email))
        assert user is not None
        if user_id is None:
            raise InvalidRequest("invite_sign_in_required", "Sign in with this email address to accept the invitation.",
                                 field="email")
        if user.id != user_id:
            raise Forbidden("invite_email_mismatch",
                            f"This invitation is for {row.email}; sign in with that address to accept it.",
                            field="email")
    else:
        check_password_policy(password or "", email=row.email, min_length=settings.password_min_length)
        user = await create_user(session, email=row.email, password=password or "", account_id=None,
                                 display_name=display_name.strip()[:200], locale="en" if locale == "en" else "zh-CN",
                                 min_length=settings.password_min_length, email_verified=True)
    consumed = await session.execute(
        update(AuthToken).where(AuthToken.id == row.id, AuthToken.used_at.is_(None)).values(used_at=utcnow(),
                                                                                             user_id=user.id)
        .execution_options(synchronize_session=False)
    )
    if consumed.rowcount != 1:  # type: ignore[attr-defined]  # the same link used twice at once
        raise _invalid_invitation()
    if await session.scalar(select(Membership.user_id).where(Membership.account_id == account.id,
                                                               Membership.user_id == user.id)):
        raise Conflict("already_member", "You are already a member of this account.", field="email")
    role = row.role or "viewer"
    session.add(Membership(account_id=account.id, user_id=user.id, role=role, created_at=utcnow()))
    await session.flush()
    await record(session, actor=Actor("user", user.id, user.email, ip), action="member.joined",
                 account_id=account.id, target_type="user", target_id=user.id,
                 after={"email": user.email, "role": role, "invitation": row.id})
    return user


# -- changes ---------------------------------------------------------------------------------------
async def change_role(session: AsyncSession, *, authority: Authority, user_id: str, role: str,
                      ip: str | None = None) -> Member:
    require(authority, MEMBERS_MANAGE)
    membership = await _membership(session, authority.account_id, user_id)
    _check_role(role)
    if user_id == authority.user_id:
        raise Forbidden("own_role", "You cannot change your own role; ask another owner or admin.", field="role")
    if (role == OWNER or membership.role == OWNER) and not _acts_as_owner(authority):
        raise _owner_only("make or change an owner")
    before = membership.role
    if before == OWNER and role != OWNER and await _owner_count(session, authority.account_id) <= 1:
        raise Conflict("last_owner", "The account needs at least one owner; make someone else owner first.",
                       field="role")
    if before != role:
        membership.role = role
        await record(session, actor=actor_of(authority, ip), action="member.role_changed",
                     account_id=authority.account_id, target_type="user", target_id=user_id,
                     before={"role": before}, after={"role": role})
    user = await session.get(User, user_id)
    assert user is not None
    return Member(user.id, user.email, user.display_name, role, membership.created_at)


async def remove_member(session: AsyncSession, *, authority: Authority, user_id: str, ip: str | None = None) -> None:
    """Remove someone from the account (or leave it, when `user_id` is the caller)."""
    if user_id != authority.user_id:
        require(authority, MEMBERS_MANAGE)
    membership = await _membership(session, authority.account_id, user_id)
    if membership.role == OWNER:
        if user_id != authority.user_id and not _acts_as_owner(authority):
            raise _owner_only("remove an owner")
        if await _owner_count(session, authority.account_id) <= 1:
            raise Conflict("last_owner", "The account needs at least one owner; make someone else owner first.",
                           field="user_id")
    before = membership.role
    await session.execute(delete(Membership).where(Membership.account_id == authority.account_id,
                                                   Membership.user_id == user_id))
    await record(session, actor=actor_of(authority, ip), action="member.removed", account_id=authority.account_id,
                 target_type="user", target_id=user_id, before={"role": before}, after=None)


async def role_of(session: AsyncSession, *, account_id: str, user_id: str) -> str | None:
    """A user's role in an account (None: not a member)."""
    return await session.scalar(
        select(Membership.role).where(Membership.account_id == account_id, Membership.user_id == user_id)
    )


async def member_count(session: AsyncSession, account_id: str) -> int:
    return int(await session.scalar(select(func.count()).select_from(Membership)
                                    .where(Membership.account_id == account_id)) or 0)
