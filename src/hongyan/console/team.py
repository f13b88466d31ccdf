"""Team page (members, roles, invitations) and the invitation link page (/console/invite?token=…).

The same service functions as /v1/members (accounts.members), so the same rules and error messages. The
invitation page is public: a new person sets a name and password there; someone who already has a user
signs in first (the login form comes back here) and accepts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.accounts import members
from hongyan.accounts.models import User
from hongyan.accounts.permissions import CUSTOMER_ROLES, MEMBERS_MANAGE, OWNER
from hongyan.api.client import client_ip
from hongyan.console.access import can, member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, Visitor, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError

router = APIRouter(prefix="/console", include_in_schema=False)
public = APIRouter(prefix="/console", include_in_schema=False)

PAGE = "/console/team"


async def _render(console: Console, *, status: int = 200, **values: Any) -> Any:
    who = member_authority(console)
    async with console.db.read() as session:
        rows = await members.list_members(session, authority=who)
        invitations = await members.list_invitations(session, authority=who) if can(console, MEMBERS_MANAGE) else []
    values.setdefault("form", {"email": "", "role": "developer"})
    grantable = [r for r in CUSTOMER_ROLES if r != OWNER or who.role == OWNER]
    return console.render("team.html", status=status, active="team", members=rows, invitations=invitations,
                          roles=CUSTOMER_ROLES, grantable=grantable, manage=can(console, MEMBERS_MANAGE),
                          is_owner=who.role == OWNER, **values)


@router.get("/team")
async def team_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/team/invite")
async def invite(console: SignedIn, form: CheckedForm) -> Any:
    values = {"email": form_text(form, "email"), "role": form_text(form, "role")}
    try:
        async with console.db.write() as session:
            await members.invite(session, console.request.app.state.settings, authority=member_authority(console),
                                 email=values["email"], role=values["role"], locale=console.lang,
                                 ip=client_ip(console.request))
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, exc.field if exc.field in ("email", "role") else "email", exc)
        return await _render(console, status=422 if exc.status_code != 403 else 403, errors=errors, form=values)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.member_invited",
                                              params={"email": values["email"].strip().lower()}))


@router.post("/team/invitations/{invitation_id}/revoke")
async def revoke_invitation(console: SignedIn, form: CheckedForm, invitation_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await members.revoke_invitation(session, authority=member_authority(console), invitation_id=invitation_id,
                                            ip=client_ip(console.request))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.invitation_revoked"))


@router.post("/team/{user_id}/role")
async def change_role(console: SignedIn, form: CheckedForm, user_id: str) -> Any:
    try:
        async with console.db.write() as session:
            member = await members.change_role(session, authority=member_authority(console), user_id=user_id,
                                               role=form_text(form, "role"), ip=client_ip(console.request))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.member_role_changed",
                                              params={"email": member.email}))


@router.post("/team/{user_id}/remove")
async def remove(console: SignedIn, form: CheckedForm, user_id: str) -> Any:
    assert console.user is not None
    leaving = user_id == console.user.user_id
    try:
        async with console.db.write() as session:
            await members.remove_member(session, authority=member_authority(console), user_id=user_id,
                                        ip=client_ip(console.request))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    if leaving:  # no longer a member of this account: the session ends
        console.sign_out()
        return console.redirect("/console/login")
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.member_removed"))


# -- the invitation link -------------------------------------------------------------------------------
async def _invite_page(console: Visitor, token: str, *, status: int = 200, **values: Any) -> Any:
    try:
        async with console.db.read() as session:
            row, account, exists = await members.pending_invitation(session, token)
            signed_in_email = None
            if console.session.logged_in:
                signed_in_email = await session.scalar(select(User.email).where(User.id == console.session.user_id))
    except HongyanError as exc:
        title, detail = console.t.error(exc.code, exc.message)
        return console.render("invite.html", status=400, invalid=(title, detail), token="")
    values.setdefault("form", {"display_name": ""})
    login = "/console/login?next=" + quote(f"/console/invite?token={token}", safe="")
    return console.render("invite.html", status=status, invalid=None, token=token, email=row.email, role=row.role,
                          account_name=account.name, exists=exists, signed_in_email=signed_in_email,
                          login_url=login, **values)


@public.get("/invite")
async def invite_page(console: Visitor, token: str = "") -> Any:
    return await _invite_page(console, token)


@public.post("/invite")
async def accept(console: Visitor, form: CheckedForm) -> Any:
    token = form_text(form, "token")
    settings = console.request.app.state.settings
    try:
        async with console.db.write() as session:
            row, account, _exists = await members.pending_invitation(session, token)
            user = await members.accept_invitation(
                session, settings, token=token,
                user_id=console.session.user_id if console.session.logged_in else None,
                password=form_text(form, "password"), display_name=form_text(form, "display_name"),
                locale=console.lang, ip=client_ip(console.request),
            )
            account_id, account_name, password_hash = account.id, account.name, user.password_hash
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "password" if exc.field == "password" else "form", exc)
        return await _invite_page(console, token, status=422, errors=errors,
                                  form={"display_name": form_text(form, "display_name")})
    # signed in to the account just joined (a signed-in user switches to it)
    console.sign_in(user_id=user.id, account_id=account_id, password_hash=password_hash)
    return console.redirect("/console", flash=Flash(kind="success", key="flash.invite_accepted",
                                                    params={"account": account_name}))
