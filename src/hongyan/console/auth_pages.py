"""Sign-up, email verification, forgotten password, the sign-in steps (password with throttling, then
the TOTP code), the Security page (password, MFA, "require MFA") and the staff email outbox.

Routes stay thin: each calls one function of hongyan.accounts.auth / .mfa and shows the service error's
message next to the field at fault (console.field_error). Pages reachable without a session are on
`public`; `router` pages need a signed-in member.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.responses import Response

from hongyan.accounts import auth, mfa
from hongyan.accounts.models import Account, EmailMessage, Membership, User
from hongyan.accounts.service import authenticate_user, primary_account_for
from hongyan.api.client import client_ip
from hongyan.config import Settings
from hongyan.console.context import (
    FETCH_HEADER,
    MFA_ENROLMENT_PAGE,
    CheckedForm,
    Console,
    FieldErrors,
    SignedIn,
    Visitor,
    form_text,
    safe_next,
)
from hongyan.console.session import Flash, SessionData
from hongyan.core.errors import HongyanError

public = APIRouter(prefix="/console", include_in_schema=False)
router = APIRouter(prefix="/console", include_in_schema=False)

MFA_PENDING_S = 300  # the code must follow the password within five minutes
SECURITY_PAGE = "/console/security"
OUTBOX_SHOWN = 200


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


def _ip(console: Console) -> str | None:
    return client_ip(console.request)


def _error_field(exc: HongyanError, allowed: tuple[str, ...], default: str) -> str:
    return exc.field if exc.field in allowed else default


# -- sign-in ---------------------------------------------------------------------------------------
def render_login(console: Console, *, status: int = 200, **values: Any) -> Response:
    values.setdefault("email", "")
    values.setdefault("next", "/console")
    return console.render(
        "login.html", status=status, registration_open=_settings(console).registration != "invite", **values
    )


def _locked_page(console: Console, exc: HongyanError, *, template: str, **values: Any) -> Response:
    """429 with Retry-After, the lockout said next to the first field."""
    retry = int((exc.details or {}).get("retry_after_s", 60))
    errors = FieldErrors()
    errors[values.pop("field", "email")] = (console.t("login.locked", minutes=max(1, -(-retry // 60))), None)
    response = (
        render_login(console, status=429, errors=errors, **values)
        if template == "login.html"
        else console.render(template, status=429, errors=errors, **values)
    )
    response.headers["Retry-After"] = str(retry)
    return response


async def password_login(console: Console, form: FormData) -> Response:
    """The first sign-in step: email and password, refused while the email or the IP is locked out."""
    email = form_text(form, "email").strip()
    password = form_text(form, "password")
    next_url = safe_next(form_text(form, "next"))
    errors = FieldErrors()
    if not email:
        errors["email"] = (console.t("login.email_required"), None)
    if not password:
        errors["password"] = (console.t("login.password_required"), None)
    if errors:
        return render_login(console, status=422, errors=errors, next=next_url, email=email)
    settings, ip = _settings(console), _ip(console)
    lockout: auth.Lockout | None = None
    try:
        async with console.db.write() as session:  # write: failures are counted, last_login_at recorded
            await auth.check_login_allowed(session, settings, email=email, ip=ip)
            user = await authenticate_user(session, email=email, password=password)
            account = await primary_account_for(session, user.id) if user is not None else None
            if user is None:
                lockout = await auth.record_login_failure(session, settings, email=email, ip=ip)
            else:
                done = user.mfa_enabled_at is None and account is not None  # else the TOTP step finishes it
                await auth.record_login_success(session, email=email, signed_in=user if done else None,
                                                account_id=account.id if account else None, ip=ip)
    except HongyanError as exc:  # login_locked
        return _locked_page(console, exc, template="login.html", next=next_url, email=email)
    if lockout is not None:
        return _locked_page(console, auth.login_locked(lockout), template="login.html", next=next_url, email=email)
    if user is None:
        errors["password"] = (console.t("login.invalid"), None)
        return render_login(console, status=401, errors=errors, next=next_url, email=email)
    if account is None:
        errors["email"] = (console.t("login.no_account"), None)
        return render_login(console, status=422, errors=errors, next=next_url, email=email)
    if user.mfa_enabled_at is not None:
        console.session = SessionData.anonymous()
        console.session.mfa_pending_user_id, console.session.mfa_pending_since = user.id, time.time()
        return console.redirect(f"/console/login/mfa?next={quote(next_url, safe='')}")
    console.sign_in(user_id=user.id, account_id=account.id, password_hash=user.password_hash)
    return console.redirect(MFA_ENROLMENT_PAGE if account.require_mfa else next_url)


def _pending_user(console: Console) -> str | None:
    session = console.session
    if session.mfa_pending_user_id and session.mfa_pending_since is not None:
        if time.time() - float(session.mfa_pending_since) <= MFA_PENDING_S:
            return session.mfa_pending_user_id
    return None


@public.get("/login/mfa")
async def mfa_login_page(console: Visitor, next: str = "") -> Any:
    if _pending_user(console) is None:
        return console.redirect("/console/login")
    return console.render("login_mfa.html", next=safe_next(next))


@public.post("/login/mfa")
async def mfa_login(console: Visitor, form: CheckedForm) -> Any:
    """The second sign-in step. Wrong codes count as failed sign-ins (a 6-digit code must not be guessable)."""
    user_id = _pending_user(console)
    if user_id is None:
        return console.redirect("/console/login")
    code = form_text(form, "code").strip()
    next_url = safe_next(form_text(form, "next"))
    settings, ip = _settings(console), _ip(console)
    failure: HongyanError | None = None
    lockout: auth.Lockout | None = None
    try:
        async with console.db.write() as session:
            user = await session.get(User, user_id)
            account = await primary_account_for(session, user_id) if user is not None else None
            if user is None or account is None or user.status != "active":
                return console.redirect("/console/login")
            await auth.check_login_allowed(session, settings, email=user.email, ip=ip)
            try:
                used = await mfa.verify(session, user_id, code, account_id=account.id, ip=ip)
            except HongyanError as exc:
                failure = exc
                lockout = await auth.record_login_failure(session, settings, email=user.email, ip=ip)
            else:
                await auth.record_login_success(session, email=user.email, signed_in=user, account_id=account.id,
                                                ip=ip, method=f"password+{used}")
    except HongyanError as exc:  # login_locked
        return _locked_page(console, exc, template="login_mfa.html", field="code", next=next_url)
    if lockout is not None:
        return _locked_page(console, auth.login_locked(lockout), template="login_mfa.html", field="code",
                            next=next_url)
    if failure is not None:
        errors = FieldErrors()
        console.field_error(errors, "code", failure)
        return console.render("login_mfa.html", status=401, errors=errors, next=next_url)
    console.sign_in(user_id=user.id, account_id=account.id, password_hash=user.password_hash)
    flash = None
    if used == "recovery":
        flash = Flash(kind="info", key="security.recovery_used", params={"n": len(user.mfa_recovery_hashes)})
    return console.redirect(next_url, flash=flash)


async def mfa_enrolment_required(request: Request, _exc: Exception) -> Response:
    """Members of an account that requires MFA see only the enrolment page until they turn it on."""
    console = Console(request, request.app.state.console)
    if request.headers.get(FETCH_HEADER) == "1":
        message = console.t("security.mfa_required")
        return console.json({"error": {"code": "mfa_required", "message": message, "field": None}}, status=403)
    return console.redirect(MFA_ENROLMENT_PAGE, flash=Flash(kind="info", key="security.mfa_required"))


# -- sign-up and verification ------------------------------------------------------------------------
SIGNUP_FIELDS = ("company_name", "email", "password", "confirm")


@public.get("/signup")
async def signup_page(console: Visitor) -> Any:
    closed = _settings(console).registration == "invite"
    return console.render("signup.html", status=403 if closed else 200, closed=closed, values={})


@public.post("/signup")
async def signup(console: Visitor, form: CheckedForm) -> Any:
    values = {name: form_text(form, name).strip() for name in ("company_name", "email")}
    password, confirm = form_text(form, "password"), form_text(form, "confirm")
    errors = FieldErrors()
    if password and confirm != password:
        errors["confirm"] = (console.t("signup.confirm_mismatch"), None)
        return console.render("signup.html", status=422, closed=False, values=values, errors=errors)
    try:
        async with console.db.write() as session:
            user = await auth.register(
                session, _settings(console), email=values["email"], password=password,
                company_name=values["company_name"], locale=console.lang, ip=_ip(console),
            )
    except HongyanError as exc:
        if exc.code == "registration_closed":
            return console.render("signup.html", status=403, closed=True, values={})
        console.field_error(errors, _error_field(exc, SIGNUP_FIELDS, "email"), exc)
        return console.render("signup.html", status=422, closed=False, values=values, errors=errors)
    return console.render("auth_notice.html", title_key="signup.done_title", text_key="signup.done_text",
                          email=user.email)


@public.get("/verify-email")
async def verify_email_page(console: Visitor, token: str = "") -> Any:
    """Opening the emailed link verifies at once (a mail scanner that follows it only confirms the address)."""
    try:
        async with console.db.write() as session:
            await auth.verify_email(session, token)
    except HongyanError as exc:
        title, detail = console.t.error(exc.code, exc.message)
        return console.render("auth_notice.html", status=400, title_key="verify.failed_title", error=(title, detail))
    return console.render("auth_notice.html", title_key="verify.done_title", text_key="verify.done_text",
                          link=("/console", "verify.open_console"))


@router.post("/verify-email/resend")
async def resend_verification(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    async with console.db.write() as session:
        user = await session.get(User, console.user.user_id)
        if user is not None:
            await auth.send_verification_email(session, _settings(console), user)
    back = safe_next(form_text(form, "next"))
    return console.redirect(back, flash=Flash(kind="success", key="verify.resent", params={"email": console.user.email}))


# -- forgotten password ----------------------------------------------------------------------------
@public.get("/forgot-password")
async def forgot_password_page(console: Visitor) -> Any:
    return console.render("forgot_password.html", email="")


@public.post("/forgot-password")
async def forgot_password(console: Visitor, form: CheckedForm) -> Any:
    email = form_text(form, "email").strip()
    if "@" not in email:
        errors = FieldErrors()
        errors["email"] = (console.t("login.email_required"), None)
        return console.render("forgot_password.html", status=422, errors=errors, email=email)
    async with console.db.write() as session:
        await auth.request_password_reset(session, _settings(console), email)
    # the same answer whether or not the address has a user
    return console.render("auth_notice.html", title_key="forgot.sent_title", text_key="forgot.sent_text", email=email)


@public.get("/reset-password")
async def reset_password_page(console: Visitor, token: str = "") -> Any:
    try:
        async with console.db.read() as session:
            await auth.check_reset_token(session, token)
    except HongyanError as exc:
        title, detail = console.t.error(exc.code, exc.message)
        return console.render("auth_notice.html", status=400, title_key="reset.failed_title", error=(title, detail),
                              link=("/console/forgot-password", "reset.ask_again"))
    return console.render("reset_password.html", token=token)


@public.post("/reset-password")
async def reset_password(console: Visitor, form: CheckedForm) -> Any:
    token, password, confirm = form_text(form, "token"), form_text(form, "password"), form_text(form, "confirm")
    errors = FieldErrors()
    if confirm != password:
        errors["confirm"] = (console.t("signup.confirm_mismatch"), None)
        return console.render("reset_password.html", status=422, errors=errors, token=token)
    try:
        async with console.db.write() as session:
            await auth.reset_password(session, _settings(console), token, password, ip=_ip(console))
    except HongyanError as exc:
        if exc.code == "token_invalid":
            title, detail = console.t.error(exc.code, exc.message)
            return console.render("auth_notice.html", status=400, title_key="reset.failed_title",
                                  error=(title, detail), link=("/console/forgot-password", "reset.ask_again"))
        console.field_error(errors, "password", exc)
        return console.render("reset_password.html", status=422, errors=errors, token=token)
    console.sign_out()  # whatever session this browser had belongs to the old password
    return console.redirect("/console/login", flash=Flash(kind="success", key="reset.done"))


# -- security page -----------------------------------------------------------------------------------
async def _render_security(console: Console, *, status: int = 200, **values: Any) -> Response:
    assert console.user is not None
    async with console.db.read() as session:
        user = await session.get(User, console.user.user_id)
        role = await session.scalar(select(Membership.role).where(
            Membership.account_id == console.account_id, Membership.user_id == console.user.user_id))
        require_mfa = await session.scalar(select(Account.require_mfa).where(Account.id == console.account_id))
    assert user is not None
    return console.render(
        "security.html", status=status, active="security", mfa_on=user.mfa_enabled_at is not None,
        mfa_enabled_at=user.mfa_enabled_at, recovery_left=len(user.mfa_recovery_hashes or []),
        password_changed_at=user.password_changed_at, can_require=role in mfa.ACCOUNT_ADMIN_ROLES,
        require_mfa=bool(require_mfa), **values,
    )


@router.get("/security")
async def security_page(console: SignedIn) -> Any:
    return await _render_security(console)


@router.post("/security/password")
async def change_password(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    current, new, confirm = (form_text(form, n) for n in ("current_password", "password", "confirm"))
    errors = FieldErrors()
    if confirm != new:
        errors["confirm"] = (console.t("signup.confirm_mismatch"), None)
        return await _render_security(console, status=422, errors=errors)
    try:
        async with console.db.write() as session:
            user = await auth.change_password(session, _settings(console), console.user.user_id, current, new,
                                              ip=_ip(console))
    except HongyanError as exc:
        console.field_error(errors, _error_field(exc, ("current_password", "password"), "password"), exc)
        return await _render_security(console, status=422, errors=errors)
    # the session carries the old password's fingerprint: renew it so this browser stays signed in
    console.sign_in(user_id=user.id, account_id=console.account_id, password_hash=user.password_hash)
    return console.redirect(SECURITY_PAGE, flash=Flash(kind="success", key="security.password_changed"))


def _enrolment_page(console: Console, enrolment: mfa.Enrolment, *, status: int = 200, **values: Any) -> Response:
    return console.render("security_mfa.html", status=status, active="security", enrolment=enrolment, **values)


@router.get("/security/mfa")
async def mfa_enrol_page(console: SignedIn) -> Any:
    assert console.user is not None
    if console.user.mfa_enabled:
        return console.redirect(SECURITY_PAGE)
    return _enrolment_page(console, mfa.start_enrolment(console.user))


@router.post("/security/mfa")
async def mfa_enrol(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    secret, code = form_text(form, "secret"), form_text(form, "code")
    try:
        async with console.db.write() as session:
            codes = await mfa.confirm_enrolment(session, console.user.user_id, secret, code,
                                                account_id=console.account_id, ip=_ip(console))
    except HongyanError as exc:
        if exc.code == "mfa_already_enabled":
            return console.redirect_error(SECURITY_PAGE, exc)
        errors = FieldErrors()
        console.field_error(errors, "code", exc)
        return _enrolment_page(console, mfa.enrolment_for(secret, console.user.email), status=422, errors=errors)
    # rendered, not redirected: the recovery codes exist only in this response
    return console.render("security_mfa.html", active="security", recovery_codes=codes, enrolment=None)


@router.post("/security/mfa/disable")
async def mfa_disable(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    try:
        async with console.db.write() as session:
            await mfa.disable(session, console.user.user_id, form_text(form, "password"),
                              account_id=console.account_id, ip=_ip(console))
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "disable_password", exc)
        return await _render_security(console, status=422, errors=errors)
    return console.redirect(SECURITY_PAGE, flash=Flash(kind="success", key="security.mfa_disabled"))


@router.post("/security/require-mfa")
async def require_mfa(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    enabled = form_text(form, "require_mfa") == "on"
    try:
        async with console.db.write() as session:
            await mfa.set_require_mfa(session, account_id=console.account_id, user_id=console.user.user_id,
                                      enabled=enabled, ip=_ip(console))
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "require_mfa", exc)
        return await _render_security(console, status=exc.status_code, errors=errors)
    return console.redirect(SECURITY_PAGE, flash=Flash(kind="success", key="security.saved"))


# -- staff outbox ----------------------------------------------------------------------------------
async def _staff(console: Console) -> None:
    """Any platform role may read the outbox (support staff help customers finish sign-up)."""
    from hongyan.console.channels import StaffOnly

    assert console.user is not None
    role = getattr(console.user, "platform_role", None)
    if role is None:
        async with console.db.read() as session:
            role = await session.scalar(select(User.platform_role).where(User.id == console.user.user_id))
    if role is None:
        raise StaffOnly(console)


@router.get("/outbox")
async def outbox_page(console: SignedIn) -> Any:
    await _staff(console)
    async with console.db.read() as session:
        emails = (await session.scalars(
            select(EmailMessage).order_by(EmailMessage.created_at.desc(), EmailMessage.id.desc()).limit(OUTBOX_SHOWN)
        )).all()
    return console.render("outbox.html", active="outbox", emails=emails, shown=None)


@router.get("/outbox/{email_id}")
async def outbox_email(console: SignedIn, email_id: str) -> Any:
    await _staff(console)
    async with console.db.read() as session:
        email = await session.get(EmailMessage, email_id)
    if email is None:
        return console.render("not_found.html", status=404, what="page")
    return console.render("outbox.html", active="outbox", emails=[], shown=email)
