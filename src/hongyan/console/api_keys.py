"""API keys page: list, create (the token is shown once, in the response to the create), revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hongyan.accounts import service
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError

router = APIRouter(prefix="/console", include_in_schema=False)

DEFAULT_SCOPES = ("send", "read")


async def _render(console: Console, *, status: int = 200, **values: Any) -> Any:
    async with console.db.read() as session:
        keys = await service.list_api_keys(session, account_id=console.account_id)
    values.setdefault("name", "")
    values.setdefault("scopes", DEFAULT_SCOPES)
    values.setdefault("created", None)
    return console.render(
        "keys.html", status=status, active="keys", keys=keys, all_scopes=service.ALL_SCOPES, **values
    )


@router.get("/keys")
async def keys_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/keys")
async def create_key(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    name = form_text(form, "name")
    scopes = tuple(s for s in form.getlist("scopes") if isinstance(s, str))
    errors = FieldErrors()
    if not scopes:
        errors["scopes"] = (console.t("keys.scopes_required"), None)
        return await _render(console, status=422, errors=errors, name=name, scopes=scopes)
    try:
        async with console.db.write() as session:
            created = await service.create_api_key(
                session,
                account_id=console.account_id,
                name=name,
                scopes=scopes,
                created_by=console.user.user_id,
            )
    except HongyanError as exc:
        console.field_error(errors, exc.field if exc.field in ("name", "scopes") else "name", exc)
        return await _render(console, status=422, errors=errors, name=name, scopes=scopes)
    # rendered, not redirected: the token exists only in this response and is never stored
    return await _render(console, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(console: SignedIn, form: CheckedForm, key_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await service.revoke_api_key(session, account_id=console.account_id, key_id=key_id)
    except HongyanError as exc:
        return console.redirect_error("/console/keys", exc)
    return console.redirect(
        "/console/keys", flash=Flash(kind="success", key="flash.key_revoked", params={"key": key_id})
    )
