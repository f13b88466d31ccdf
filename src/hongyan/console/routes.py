"""The web console under /console: sign in and out, language, and the page routers of each area.

`install(app, settings)` is called by `hongyan.app.create_app`. Pages are server-rendered (Jinja2) and
work without JavaScript; console.js adds the live send preview, auto-refreshing history and copy buttons.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import RedirectResponse, Response

from hongyan.api.responses import JsonResponse
from hongyan.config import Settings
from hongyan.console import (
    access,
    api_keys,
    audit,
    auth_pages,
    billing,
    campaigns,
    channels,
    contacts,
    content_filter,
    dashboard,
    history,
    imports,
    message_templates,
    pricing,
    privacy,
    review,
    review_kyc,
    review_messages,
    send,
    sending_rules,
    signatures,
    sub_accounts,
    suppressions,
    team,
    verification,
    verify,
    verify_blocked,
    webhook_endpoints,
)
from hongyan.console.context import (
    FETCH_HEADER,
    CheckedForm,
    Console,
    ConsoleSetup,
    CsrfRejected,
    LoginRequired,
    MfaEnrolmentRequired,
    SignedIn,
    Visitor,
    login_url,
    safe_next,
)
from hongyan.console.i18n import LANGUAGE_COOKIE, LANGUAGES
from hongyan.console.session import COOKIE_PATH, SESSION_COOKIE, SessionCodec
from hongyan.console.templating import build_environment

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/login")
async def login_page(console: Visitor, next: str = "") -> Any:
    if console.session.logged_in:
        return console.redirect(safe_next(next))
    return auth_pages.render_login(console, next=safe_next(next))


@router.post("/login")
async def login(console: Visitor, form: CheckedForm) -> Any:
    """Password step, throttled per email and IP; then the MFA step if the user has it (auth_pages)."""
    return await auth_pages.password_login(console, form)


@router.post("/logout")
async def logout(console: SignedIn, form: CheckedForm) -> Any:
    console.sign_out()
    return console.redirect("/console/login")


@router.get("/lang/{lang}")
async def switch_language(console: Visitor, lang: str, next: str = "") -> Any:
    """Only a display preference is set, so a GET link is enough (works without JS, no CSRF at stake)."""
    response = console.redirect(safe_next(next))
    if lang in LANGUAGES:
        response.set_cookie(
            LANGUAGE_COOKIE,
            lang,
            max_age=365 * 24 * 3600,
            path=COOKIE_PATH,
            samesite="lax",
            secure=console.setup.secure_cookies,
        )
    return response


fallback = APIRouter(prefix="/console", include_in_schema=False)


@fallback.get("/{rest:path}")
async def not_found(console: SignedIn, rest: str) -> Any:
    """Any other console URL: a console page saying so (after the routers above had their chance)."""
    return console.render("not_found.html", status=404, what="page")


def _is_fetch(request: Request) -> bool:
    return request.headers.get(FETCH_HEADER) == "1"


async def _login_required(request: Request, _exc: Exception) -> Response:
    # the cookie is dropped: a session that no longer counts (user disabled, password reset) must not
    # keep sending the login page back to /console and round again
    response: Response
    if _is_fetch(request):
        response = JsonResponse(
            {"error": {"code": "login_required", "message": "Sign in again.", "field": None}}, status_code=401
        )
    else:
        response = RedirectResponse(login_url(request), status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


async def _csrf_rejected(request: Request, _exc: Exception) -> Response:
    console = Console(request, request.app.state.console)
    if _is_fetch(request):
        return console.json(
            {"error": {"code": "csrf_failed", "message": console.t("csrf.message"), "field": None}},
            status=403,
        )
    return console.render("csrf.html", status=403)


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the console on the app: routes, the `/` redirect, sign-in and CSRF handling."""
    app.state.console = ConsoleSetup(
        codec=SessionCodec(settings.effective_secret_key()),
        templates=build_environment(),
        secure_cookies=settings.effective_public_url.startswith("https://"),
    )
    for area in (
        router,
        dashboard.router,
        send.router,
        history.router,
        api_keys.router,
        audit.router,
        privacy.router,
        sending_rules.router,
        suppressions.router,
        webhook_endpoints.router,
        contacts.router,
        imports.router,
        campaigns.router,
        content_filter.router,
        signatures.router,
        message_templates.router,
        review.router,
        review_kyc.router,
        review_messages.router,
        verify_blocked.router,
        verify.router,
        verification.router,
        billing.router,
        channels.router,
        pricing.router,
        auth_pages.public,
        auth_pages.router,
        team.router,
        team.public,
        sub_accounts.router,
        fallback,
    ):
        # signed-in pages learn the user's platform role: the layout shows staff pages to staff only
        staff_aware = [] if area in (router, auth_pages.public) else [Depends(channels.with_platform_role)]
        if area is team.public:  # the invitation link: no session needed
            staff_aware = []
        elif staff_aware:  # the member's role must grant the page's permission (console.access)
            staff_aware.append(Depends(access.page_permission))
        app.include_router(area, dependencies=staff_aware)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(channels.StaffOnly, channels.staff_only)
    app.add_exception_handler(access.NoPermission, access.no_permission)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.add_exception_handler(MfaEnrolmentRequired, auth_pages.mfa_enrolment_required)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)
