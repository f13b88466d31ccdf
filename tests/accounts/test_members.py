"""Team members: invite → email in the outbox → accept; the owner/admin rules, each refused with its code;
every change in the audit log. Through the API (admin key) and the service (members with roles)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from hongyan.accounts import members
from hongyan.accounts import service as accounts
from hongyan.accounts.models import AuthToken, EmailMessage, Membership
from hongyan.accounts.permissions import Authority
from hongyan.audit.models import AuditEntry
from hongyan.audit.service import verify_chain
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from support import AccountFixture, make_account

PASSWORD = "Correct horse 42"


async def _user(db: Database, account_id: str, email: str, role: str) -> Authority:
    async with db.write() as session:
        user = await accounts.create_user(session, email=email, password=PASSWORD, account_id=account_id, role=role)
    return Authority.of_member(account_id=account_id, user_id=user.id, role=role, label=email)


async def _token_from_outbox(db: Database, email: str) -> str:
    async with db.read() as session:
        row = await session.scalar(select(EmailMessage).where(EmailMessage.to_address == email, EmailMessage.kind == "invite")
                                   .order_by(EmailMessage.created_at.desc()).limit(1))
    assert row is not None, "no invitation email"
    match = re.search(r"/console/invite\?token=([A-Za-z0-9_\-%]+)", row.body_text)
    assert match, row.body_text
    return match.group(1)


async def _refused(db: Database, code: str, call: Any) -> HongyanError:
    with pytest.raises(HongyanError) as exc:
        async with db.write() as session:
            await call(session)
    assert exc.value.code == code, exc.value.message
    return exc.value


async def _actions(db: Database, account_id: str) -> list[AuditEntry]:
    async with db.read() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.account_id == account_id,
                                                                  AuditEntry.action.like("member.%"))
                                          .order_by(AuditEntry.seq)))


async def test_api_invite_email_accept_new_user(app: Any, db: Database, settings: Settings,
                                                client: httpx.AsyncClient, account: AccountFixture) -> None:
    r = await client.post("/v1/members", json={"email": "Dev@Example.com", "role": "developer", "locale": "en"})
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "dev@example.com" and r.json()["role"] == "developer"
    listed = (await client.get("/v1/members")).json()
    assert [i["email"] for i in listed["invitations"]] == ["dev@example.com"]
    token = await _token_from_outbox(db, "dev@example.com")
    async with db.read() as session:
        email = await session.scalar(select(EmailMessage).where(EmailMessage.kind == "invite"))
    assert email is not None and settings.effective_public_url + "/console/invite?token=" in email.body_text
    # a weak password is refused by the policy, nothing joins
    await _refused(db, "password_too_short", lambda s: members.accept_invitation(
        s, settings, token=token, password="short"))
    async with db.write() as session:
        user = await members.accept_invitation(session, settings, token=token, password=PASSWORD, display_name="Dev")
    async with db.read() as session:
        role = await members.role_of(session, account_id=account.account_id, user_id=user.id)
    assert role == "developer"
    listed = (await client.get("/v1/members")).json()
    assert {m["email"]: m["role"] for m in listed["data"]} == {"dev@example.com": "developer"}
    assert listed["invitations"] == []
    # the link works once
    await _refused(db, "token_invalid", lambda s: members.accept_invitation(s, settings, token=token, password=PASSWORD))
    entries = await _actions(db, account.account_id)
    assert [e.action for e in entries] == ["member.invited", "member.joined"]
    assert entries[0].after == {"email": "dev@example.com", "role": "developer"}
    assert entries[1].actor_id == user.id and entries[1].after["role"] == "developer"
    async with db.read() as session:
        assert (await verify_chain(session)).ok


async def test_existing_user_must_sign_in_as_the_invited_email(db: Database, settings: Settings) -> None:
    a = await make_account(db, name="A")
    other = await make_account(db, name="Other")
    owner = await _user(db, a.account_id, "owner@a.example", "owner")
    existing = await _user(db, other.account_id, "ann@example.com", "owner")
    stranger = await _user(db, other.account_id, "bob@example.com", "admin")
    async with db.write() as session:
        _inv, token = await members.invite(session, settings, authority=owner, email="ann@example.com", role="finance")
    await _refused(db, "invite_sign_in_required", lambda s: members.accept_invitation(s, settings, token=token))
    await _refused(db, "invite_email_mismatch", lambda s: members.accept_invitation(
        s, settings, token=token, user_id=stranger.user_id))
    async with db.write() as session:
        await members.accept_invitation(session, settings, token=token, user_id=existing.user_id)
    async with db.read() as session:
        assert await members.role_of(session, account_id=a.account_id, user_id=existing.user_id) == "finance"
        assert await members.role_of(session, account_id=other.account_id, user_id=existing.user_id) == "owner"


async def test_expired_invitation_is_refused(db: Database, settings: Settings) -> None:
    a = await make_account(db, name="A")
    owner = await _user(db, a.account_id, "owner@a.example", "owner")
    async with db.write() as session:
        inv, token = await members.invite(session, settings, authority=owner, email="late@example.com", role="viewer")
        assert inv.expires_at - inv.created_at == timedelta(days=7)
    async with db.write() as session:
        await session.execute(update(AuthToken).where(AuthToken.id == inv.id).values(expires_at=utcnow() - timedelta(seconds=1)))
    await _refused(db, "token_invalid", lambda s: members.accept_invitation(s, settings, token=token, password=PASSWORD))


async def test_rules_each_refused_with_its_code(db: Database, settings: Settings) -> None:
    a = await make_account(db, name="A")
    owner = await _user(db, a.account_id, "owner@a.example", "owner")
    admin = await _user(db, a.account_id, "admin@a.example", "admin")
    dev = await _user(db, a.account_id, "dev@a.example", "developer")
    viewer = await _user(db, a.account_id, "viewer@a.example", "viewer")
    key = Authority.of_key(account_id=a.account_id, key_id=a.key_id, scopes=("admin",), label="test")

    # only owners and admins manage members
    await _refused(db, "permission_denied", lambda s: members.invite(s, settings, authority=dev, email="x@example.com",
                                                                      role="viewer"))
    await _refused(db, "permission_denied", lambda s: members.change_role(s, authority=viewer, user_id=dev.user_id,
                                                                           role="admin"))
    await _refused(db, "permission_denied", lambda s: members.remove_member(s, authority=dev, user_id=viewer.user_id))
    # an admin (person or admin key) cannot make, change or remove owners
    for who in (admin, key):
        await _refused(db, "owner_required", lambda s, w=who: members.invite(s, settings, authority=w,
                                                                              email="boss@example.com", role="owner"))
        await _refused(db, "owner_required", lambda s, w=who: members.change_role(s, authority=w, user_id=dev.user_id,
                                                                                   role="owner"))
        await _refused(db, "owner_required", lambda s, w=who: members.change_role(s, authority=w, user_id=owner.user_id,
                                                                                   role="viewer"))
        await _refused(db, "owner_required", lambda s, w=who: members.remove_member(s, authority=w,
                                                                                     user_id=owner.user_id))
    # nobody changes their own role
    await _refused(db, "own_role", lambda s: members.change_role(s, authority=owner, user_id=owner.user_id, role="admin"))
    await _refused(db, "own_role", lambda s: members.change_role(s, authority=admin, user_id=admin.user_id, role="viewer"))
    # the last owner cannot leave
    await _refused(db, "last_owner", lambda s: members.remove_member(s, authority=owner, user_id=owner.user_id))
    # unknown role, member of nobody here
    await _refused(db, "invalid_role", lambda s: members.change_role(s, authority=owner, user_id=dev.user_id, role="god"))
    await _refused(db, "member_not_found", lambda s: members.change_role(s, authority=owner, user_id="usr_nobody",
                                                                          role="viewer"))
    await _refused(db, "already_member", lambda s: members.invite(s, settings, authority=owner, email="dev@a.example",
                                                                   role="viewer"))

    # what is allowed: admin changes a developer, owner makes a second owner who then may be demoted
    async with db.write() as session:
        await members.change_role(session, authority=admin, user_id=dev.user_id, role="finance")
        await members.change_role(session, authority=owner, user_id=admin.user_id, role="owner")
    second_owner = Authority.of_member(account_id=a.account_id, user_id=admin.user_id, role="owner")
    async with db.write() as session:
        await members.change_role(session, authority=second_owner, user_id=owner.user_id, role="admin")
    # now admin.user_id is the only owner: the demoted one cannot demote them back
    demoted = Authority.of_member(account_id=a.account_id, user_id=owner.user_id, role="admin")
    await _refused(db, "owner_required", lambda s: members.change_role(s, authority=demoted, user_id=admin.user_id,
                                                                        role="viewer"))
    async with db.write() as session:
        await members.remove_member(session, authority=second_owner, user_id=viewer.user_id)
        await members.remove_member(session, authority=dev, user_id=dev.user_id)  # anyone may leave
    async with db.read() as session:
        roles = {m.email: m.role for m in await members.list_members(session, authority=second_owner)}
    assert roles == {"owner@a.example": "admin", "admin@a.example": "owner"}
    entries = await _actions(db, a.account_id)
    changed = [(e.target_id, e.before, e.after) for e in entries if e.action == "member.role_changed"]
    assert changed == [(dev.user_id, {"role": "developer"}, {"role": "finance"}),
                       (admin.user_id, {"role": "admin"}, {"role": "owner"}),
                       (owner.user_id, {"role": "owner"}, {"role": "admin"})]
    removed = [(e.target_id, e.before, e.actor_id) for e in entries if e.action == "member.removed"]
    assert removed == [(viewer.user_id, {"role": "viewer"}, admin.user_id), (dev.user_id, {"role": "finance"}, dev.user_id)]


async def test_api_refuses_other_accounts_members_with_404(app: Any, db: Database, client: httpx.AsyncClient,
                                                            account: AccountFixture) -> None:
    b = await make_account(db, name="B")
    b_owner = await _user(db, b.account_id, "owner@b.example", "owner")
    for method, body in (("PATCH", {"role": "viewer"}), ("DELETE", None)):
        r = await client.request(method, f"/v1/members/{b_owner.user_id}", json=body)
        assert r.status_code == 404 and r.json()["error"]["code"] == "member_not_found", r.text
    async with db.read() as session:
        row = await session.scalar(select(Membership).where(Membership.user_id == b_owner.user_id))
    assert row is not None and row.role == "owner"
    # a key without the admin scope never reaches the service
    limited = await make_account(db, name="C", scopes=("send", "read"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 headers=limited.headers) as c:
        assert (await c.get("/v1/members")).status_code == 403
