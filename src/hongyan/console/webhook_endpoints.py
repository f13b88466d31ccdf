"""Webhooks page: list, add (the signing secret is shown once) and disable endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hongyan.audit.service import actor_for_console
from hongyan.console.access import member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError
from hongyan.webhooks import service

router = APIRouter(prefix="/console", include_in_schema=False)


async def _render(console: Console, *, status: int = 200, **values: Any) -> Any:
    async with console.db.read() as session:
        endpoints = await service.list_endpoints(session, account_id=console.account_id)
    values.setdefault("url", "")
    values.setdefault("description", "")
    values.setdefault("created", None)
    return console.render("webhooks.html", status=status, active="webhooks", endpoints=endpoints, **values)


@router.get("/webhooks")
async def webhooks_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/webhooks")
async def add_endpoint(console: SignedIn, form: CheckedForm) -> Any:
    url = form_text(form, "url")
    description = form_text(form, "description").strip()[:200]
    try:
        async with console.db.write() as session:
            endpoint, secret = await service.create_endpoint(
                session, account_id=console.account_id, url=url, description=description,
                actor=actor_for_console(console), authority=member_authority(console),
            )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, "url", exc)
        return await _render(console, status=422, errors=errors, url=url, description=description)
    # rendered, not redirected: the secret is shown in this response only
    return await _render(console, created={"id": endpoint.id, "url": endpoint.url, "secret": secret})


@router.post("/webhooks/{endpoint_id}/disable")
async def disable_endpoint(console: SignedIn, form: CheckedForm, endpoint_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await service.delete_endpoint(session, account_id=console.account_id, endpoint_id=endpoint_id,
                                          actor=actor_for_console(console), authority=member_authority(console))
    except HongyanError as exc:
        return console.redirect_error("/console/webhooks", exc)
    return console.redirect(
        "/console/webhooks",
        flash=Flash(kind="success", key="flash.webhook_disabled", params={"endpoint": endpoint_id}),
    )
