"""The console's per-request context: who is signed in, the language, CSRF, and how responses are made.

Routes take `SignedIn` (any page but login) or `Visitor` (login), and `CheckedForm` for POST bodies:
the form after its CSRF token was checked. Responses go through `Console.render/redirect/fragment/json`
so cookies (session renewal, flash) and security headers are set in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from jinja2 import Environment
from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hongyan.accounts.models import Account, Membership, User
from hongyan.api.responses import JsonResponse
from hongyan.console.i18n import LANGUAGE_COOKIE, Translator, negotiate
from hongyan.console.session import (
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    FLASH_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    Flash,
    SessionCodec,
    SessionData,
    password_mark,
)
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database

FETCH_HEADER = "X-Console-Fetch"  # set by console.js on background requests (answer 401, not a redirect)
SECURITY_HEADERS = {
    # no CDN, no inline script: everything comes from /static on this host
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show tokens once and per-account data
}


@dataclass(frozen=True, slots=True)
class ConsoleSetup:
    """Built once by `install`: the cookie signer and the template environment."""

    codec: SessionCodec
    templates: Environment
    secure_cookies: bool


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    user_id: str
    email: str
    display_name: str
    account_id: str
    account_name: str
    default_region: str
    currency: str
    email_verified: bool = True  # False: the layout offers to resend the verification email
    mfa_enabled: bool = False
    role: str | None = None  # the membership role in this account (accounts.permissions)

    def can(self, permission: str) -> bool:
        """Whether the member's role grants `permission` (the layout hides links to pages it cannot use)."""
        from hongyan.accounts.permissions import permissions_of_role

        return permission in permissions_of_role(self.role)


MFA_ENROLMENT_PAGE = "/console/security/mfa"
# what a member of an account that requires MFA may still open before enrolling
MFA_ENROLMENT_PATHS = (MFA_ENROLMENT_PAGE, "/console/logout", "/console/lang/")


class LoginRequired(Exception):
    """No valid session: pages redirect to the login form, background fetches get 401."""


class MfaEnrolmentRequired(Exception):
    """The account requires MFA and this member has none yet: every page leads to the enrolment page."""


class CsrfRejected(Exception):
    """A POST without the token of the current session (expired page, or a forged cross-site form)."""


class FieldErrors(dict[str, tuple[str, str | None]]):
    """form field → (title, detail) shown next to that field."""


class Console:
    def __init__(self, request: Request, setup: ConsoleSetup) -> None:
        self.request = request
        self.setup = setup
        self.session = setup.codec.loads(request.cookies.get(SESSION_COOKIE), now=time.time())
        self.lang = negotiate(request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language"))
        self.t = Translator(self.lang)
        self.user: ConsoleUser | None = None
        self._flash_in = setup.codec.load_flash(request.cookies.get(FLASH_COOKIE))
        self._flash_out: Flash | None = None

    @property
    def db(self) -> Database:
        db: Database = self.request.app.state.db
        return db

    @property
    def csrf_token(self) -> str:
        return self.setup.codec.csrf_token(self.session)

    @property
    def account_id(self) -> str:
        assert self.user is not None, "route must depend on SignedIn"
        return self.user.account_id

    # -- session changes ------------------------------------------------------------------------
    def sign_in(self, *, user_id: str, account_id: str, password_hash: str) -> None:
        self.session = SessionData.anonymous()  # new sid: tokens of the anonymous session stop working
        self.session.user_id, self.session.account_id = user_id, account_id
        self.session.password_mark = password_mark(password_hash)

    def sign_out(self) -> None:
        self.session = SessionData.anonymous()
        self.user = None

    # -- errors ---------------------------------------------------------------------------------
    def field_error(self, errors: FieldErrors, form_field: str, exc: HongyanError) -> None:
        errors[form_field] = self.t.error(exc.code, exc.message)

    # -- responses ------------------------------------------------------------------------------
    def page_context(self, **values: Any) -> dict[str, Any]:
        flash = self._flash_in
        context: dict[str, Any] = {
            "t": self.t,
            "lang": self.lang,
            "user": self.user,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.csrf_token,
            "flash": flash,
            "path": self.request.url.path,
            "full_path": self.request.url.path
            + (f"?{self.request.url.query}" if self.request.url.query else ""),
            "active": None,
            "errors": FieldErrors(),
        }
        context.update(values)
        return context

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.setup.templates.get_template(template).render(self.page_context(**values))
        response = HTMLResponse(html, status_code=status)
        if self._flash_in is not None:
            response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
        return self.finish(response)

    def fragment(
        self, template: str, *, headers: dict[str, str] | None = None, **values: Any
    ) -> HTMLResponse:
        """A piece of a page for console.js to swap in (no layout; the flash is left for the next page)."""
        self._flash_in = None
        html = self.setup.templates.get_template(template).render(self.page_context(**values))
        return self.finish(HTMLResponse(html, headers=headers))

    def json(self, data: Any, *, status: int = 200) -> JsonResponse:
        return self.finish(JsonResponse(data, status_code=status))  # type: ignore[return-value]

    def redirect(self, url: str, *, flash: Flash | None = None) -> RedirectResponse:
        self._flash_out = flash
        return self.finish(RedirectResponse(url, status_code=303))  # type: ignore[return-value]

    def redirect_error(self, url: str, exc: HongyanError) -> RedirectResponse:
        """Back to `url` with the error's translated title as a flash (same message as the API's)."""
        title, _detail = self.t.error(exc.code, exc.message)
        return self.redirect(url, flash=Flash(kind="error", key="flash.plain", params={"text": title}))

    def finish(self, response: Response) -> Response:
        secure = self.setup.secure_cookies
        if self.session.needs_cookie:
            response.set_cookie(
                SESSION_COOKIE,
                self.setup.codec.dumps(self.session),
                max_age=SESSION_MAX_AGE,
                path=COOKIE_PATH,
                httponly=True,
                samesite="lax",
                secure=secure,
            )
        if self._flash_out is not None:
            response.set_cookie(
                FLASH_COOKIE,
                self.setup.codec.dump_flash(self._flash_out),
                max_age=300,
                path=COOKIE_PATH,
                httponly=True,
                samesite="lax",
                secure=secure,
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def console_setup(request: Request) -> ConsoleSetup:
    setup: ConsoleSetup = request.app.state.console
    return setup


async def visitor(request: Request) -> Console:
    """The console context for any visitor (signed in or not)."""
    return Console(request, console_setup(request))


Visitor = Annotated[Console, Depends(visitor)]


async def signed_in(console: Visitor) -> Console:
    """The console context of a signed-in member whose user and account are still active."""
    session = console.session
    if not session.logged_in:
        raise LoginRequired
    async with console.db.read() as db_session:
        row = (
            await db_session.execute(
                select(
                    User.email,
                    User.display_name,
                    User.status.label("user_status"),
                    User.password_hash,
                    User.email_verified_at,
                    User.mfa_enabled_at,
                    Account.require_mfa,
                    Account.id,
                    Account.name,
                    Account.status.label("account_status"),
                    Account.default_region,
                    Account.currency,
                    Membership.role,
                )
                .join(Membership, Membership.user_id == User.id)
                .join(Account, Account.id == Membership.account_id)
                .where(User.id == session.user_id, Account.id == session.account_id)
            )
        ).first()
    if (
        row is None
        or row.user_status != "active"
        or row.account_status != "active"
        or password_mark(row.password_hash) != session.password_mark
    ):
        raise LoginRequired
    console.user = ConsoleUser(
        user_id=str(session.user_id),
        email=row.email,
        display_name=row.display_name,
        account_id=row.id,
        account_name=row.name,
        default_region=row.default_region,
        currency=row.currency,
        email_verified=row.email_verified_at is not None,
        mfa_enabled=row.mfa_enabled_at is not None,
        role=row.role,
    )
    if row.require_mfa and row.mfa_enabled_at is None and not console.request.url.path.startswith(MFA_ENROLMENT_PATHS):
        raise MfaEnrolmentRequired
    return console


SignedIn = Annotated[Console, Depends(signed_in)]


async def checked_form(request: Request, console: Visitor) -> FormData:
    """The POSTed form, once its CSRF token (field or header) matches the session's."""
    form = await request.form()
    token = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not console.setup.codec.csrf_valid(console.session, token if isinstance(token, str) else None):
        raise CsrfRejected
    return form


CheckedForm = Annotated[FormData, Depends(checked_form)]


def form_text(form: FormData, name: str, default: str = "") -> str:
    """A text field of a form ('' for a missing field or a file upload)."""
    value = form.get(name, default)
    return value if isinstance(value, str) else default


def login_url(request: Request) -> str:
    """The login form, returning to the page asked for (a console path only: no open redirect)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or not target.startswith("/console") or target.startswith("/console/login"):
        return "/console/login"
    return f"/console/login?next={quote(target, safe='')}"


def safe_next(value: str | None) -> str:
    """Where to go after login or a language switch: a console path, never another site."""
    if value and value.startswith("/console") and not value.startswith("//") and "\\" not in value:
        return value
    return "/console"
