"""FastAPI application factory: API /v1, console, docs, health; embedded workers in the default mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from hongyan import __version__
from hongyan.accounts.member_routes import members_router, sub_accounts_router
from hongyan.accounts.routes import router as keys_router
from hongyan.api import errors
from hongyan.api.body import SCHEMAS
from hongyan.api.openapi import build_openapi
from hongyan.api.rate_limit import limiter_for
from hongyan.api.responses import JsonResponse
from hongyan.audit.routes import router as audit_router
from hongyan.billing.operator_routes import router as billing_operator_router
from hongyan.billing.package_routes import router as billing_packages_router
from hongyan.billing.payment_routes import router as billing_payments_router
from hongyan.billing.routes import router as billing_router
from hongyan.campaigns.campaign_routes import router as campaigns_router
from hongyan.campaigns.import_routes import UploadAwareLimits
from hongyan.campaigns.import_routes import router as imports_router
from hongyan.campaigns.routes import router as contacts_router
from hongyan.channels.routes import router as channels_router
from hongyan.compliance.filter_routes import operator_router as filter_operator_router
from hongyan.compliance.filter_routes import router as filter_router
from hongyan.compliance.hold_routes import router as held_messages_router
from hongyan.compliance.kyc_routes import router as verification_router
from hongyan.compliance.normalize import warm_up as warm_up_content_filter
from hongyan.compliance.rules_routes import router as compliance_rules_router
from hongyan.compliance.signature_routes import router as signatures_router
from hongyan.compliance.suppression_routes import router as suppressions_router
from hongyan.compliance.template_routes import router as templates_router
from hongyan.config import Settings, get_settings
from hongyan.core import crypto
from hongyan.db.engine import Database
from hongyan.dispatch.queue import queue_for
from hongyan.dispatch.runtime import Runtime
from hongyan.messaging.routes import router as messages_router
from hongyan.ops.gc_tuning import freeze_startup_objects
from hongyan.ops.health import router as health_router
from hongyan.ops.metrics import HttpMetrics
from hongyan.privacy.routes import router as privacy_router
from hongyan.verify.pumping_routes import router as verify_pumping_router
from hongyan.verify.routes import router as verify_router
from hongyan.webhooks.routes import router as webhooks_router

STATIC = Path(__file__).parent / "console" / "static"

API_DESCRIPTION = """
Send SMS through Hongyan (鸿雁). Authenticate with `Authorization: Bearer <key id>.<secret>`.

Every error is JSON: `{"error": {"code": "invalid_phone_number", "message": "…", "field": "recipients[3].to"}}`
with a 4xx status; the codes are listed in `docs/errors.md`. Send `Idempotency-Key` on POSTs to make
retries safe. Status changes are pushed to your webhooks, signed with HMAC-SHA256.
"""


def create_app(settings: Settings | None = None, *, run_workers: bool | None = None, db: Database | None = None,
               freeze_gc: bool = False) -> FastAPI:
    """The application. `freeze_gc`: `hongyan serve` (one app per process) freezes what startup made once
    the app has started (ops/gc_tuning.py); not in tests, which build many apps in one process."""
    settings = settings or get_settings()
    crypto.configure(crypto.keyring_from_settings(settings))
    workers = settings.embedded_workers if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = db or Database(settings.effective_database_url, pool_size=settings.db_pool_size,
                                  name="hongyan-serve" if workers else "hongyan-api")
        app.state.db = database
        from hongyan.ops.metrics import DatabaseCounts  # message counts and webhook backlog for /metrics

        app.state.metrics_counts = DatabaseCounts(database, settings.metrics_refresh_s).start()
        app.state.runtime = None
        app.state.rate_limiter = limiter_for(settings)
        # the content filter's normalization tables (0.35 s once per process): built now, not on a first send
        await asyncio.to_thread(warm_up_content_filter)
        if workers:
            runtime = Runtime(database, settings, queue_for(settings))
            await runtime.start()
            app.state.runtime = runtime
        elif not settings.queue_url.startswith("memory:"):
            # API only, on RabbitMQ: this process publishes what it accepts (the outbox relay) at once;
            # `hongyan worker` processes dispatch it
            runtime = Runtime(database, settings, queue_for(settings), relay_only=True)
            await runtime.start()
            app.state.runtime = runtime
        if freeze_gc:
            freeze_startup_objects()  # no collector pause walks what startup made (ops/gc_tuning.py)
        try:
            yield
        finally:
            if app.state.runtime is not None:
                await app.state.runtime.stop()
            await app.state.metrics_counts.stop()
            await app.state.rate_limiter.close()
            if db is None:
                await database.dispose()

    app = FastAPI(
        title="Hongyan SMS API",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=JsonResponse,
    )
    app.state.settings = settings
    errors.install(app)
    # the hottest paths first: routes are matched in order (FastAPI tries each router until one matches)
    app.include_router(messages_router)
    app.include_router(verify_pumping_router)  # before verify_router: /v1/verify/blocked
    app.include_router(verify_router)
    app.include_router(webhooks_router)
    app.include_router(keys_router)
    app.include_router(members_router)
    app.include_router(sub_accounts_router)
    app.include_router(channels_router)
    app.include_router(billing_router)
    app.include_router(contacts_router)
    app.include_router(campaigns_router)
    app.include_router(filter_router)
    app.include_router(filter_operator_router)
    app.include_router(imports_router)
    app.include_router(billing_operator_router)
    app.include_router(billing_payments_router)
    app.include_router(billing_packages_router)
    app.include_router(audit_router)
    app.include_router(privacy_router)
    app.include_router(suppressions_router)
    app.include_router(verification_router)
    app.include_router(compliance_rules_router)
    app.include_router(held_messages_router)
    app.include_router(signatures_router)
    app.include_router(templates_router)
    app.include_router(health_router)
    try:
        from hongyan.console.routes import install as install_console
    except ImportError:  # console not built into this install
        install_console = None
    if install_console is not None:
        install_console(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, SCHEMAS)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if not (STATIC / "vendor" / "swagger-ui" / "swagger-ui-bundle.js").exists():
            return HTMLResponse(
                "<p>API explorer assets are not built (run scripts/build-assets). "
                "The OpenAPI document is at <a href='/openapi.json'>/openapi.json</a>.</p>"
            )
        return HTMLResponse(_SWAGGER_PAGE)

    app.add_middleware(HttpMetrics)  # request counts and latency by route for /metrics
    app.add_middleware(UploadAwareLimits, max_header_bytes=settings.max_header_bytes, max_body_bytes=settings.max_body_bytes,
                       import_max_bytes=settings.import_max_bytes)  # RequestLimits, uploads: their own limit
    return app


_SWAGGER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Hongyan API</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
<link rel="icon" href="/static/vendor/swagger-ui/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>"""
