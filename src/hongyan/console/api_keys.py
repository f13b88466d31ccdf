"""API keys page: list, create (the token is shown once, in the response to the create), change the IP
allow-list, rotate with overlap, revoke. The same service functions as /v1/api-keys, so the same checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from fastapi import APIRouter

from hongyan.accounts import keys
from hongyan.audit.service import actor_for_console
from hongyan.console.access import member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, InvalidRequest

router = APIRouter(prefix="/console", include_in_schema=False)

DEFAULT_SCOPES = ("send", "read")
OVERLAP_CHOICES = (0, 1, 24, 168)
FORM_FIELDS = ("name", "scopes", "allowed_cidrs", "expires_at")


def networks(text: str) -> list[str]:
    """One network per line (or comma-separated), as typed in the allow-list box."""
    return [p.strip() for p in text.replace(",", "\n").splitlines() if p.strip()]


def expiry(text: str) -> datetime | None:
    """A date from the form: the key works until the end of that day (UTC)."""
    if not text.strip():
        return None
    try:
        return datetime.combine(date.fromisoformat(text.strip()), time(23, 59, 59), tzinfo=UTC)
    except ValueError:
        raise InvalidRequest("invalid_datetime", "Give the date as YYYY-MM-DD.", field="expires_at") from None


async def _render(console: Console, *, status: int = 200, **values: Any) -> Any:
    async with console.db.read() as session:
        rows = await keys.list_api_keys(session, account_id=console.account_id)
    values.setdefault("form", {"name": "", "scopes": DEFAULT_SCOPES, "allowed_cidrs": "", "expires_at": "", "auth": "bearer"})
    values.setdefault("created", None)
    values.setdefault("rotated_from", None)
    return console.render(
        "keys.html", status=status, active="keys", keys=rows, all_scopes=keys.ALL_SCOPES,
        overlap_choices=OVERLAP_CHOICES, now=datetime.now(UTC), **values
    )


@router.get("/keys")
async def keys_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/keys")
async def create_key(console: SignedIn, form: CheckedForm) -> Any:
    assert console.user is not None
    values = {"name": form_text(form, "name"), "scopes": tuple(s for s in form.getlist("scopes") if isinstance(s, str)),
              "allowed_cidrs": form_text(form, "allowed_cidrs"), "expires_at": form_text(form, "expires_at"),
              "auth": "hmac" if form_text(form, "auth") == "hmac" else "bearer"}
    errors = FieldErrors()
    if not values["scopes"]:
        errors["scopes"] = (console.t("keys.scopes_required"), None)
        return await _render(console, status=422, errors=errors, form=values)
    try:
        async with console.db.write() as session:
            created = await keys.create_api_key(
                session, account_id=console.account_id, name=str(values["name"]), scopes=tuple(values["scopes"]),
                created_by=console.user.user_id, allowed_cidrs=networks(str(values["allowed_cidrs"])),
                expires_at=expiry(str(values["expires_at"])), signing=values["auth"] == "hmac",
                actor=actor_for_console(console), authority=member_authority(console),
            )
    except HongyanError as exc:
        field = (exc.field or "name").split("[")[0]
        console.field_error(errors, field if field in FORM_FIELDS else "name", exc)
        return await _render(console, status=422, errors=errors, form=values)
    # rendered, not redirected: the token exists only in this response and is never stored
    return await _render(console, created=created)


@router.post("/keys/{key_id}/networks")
async def update_networks(console: SignedIn, form: CheckedForm, key_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await keys.update_api_key(session, account_id=console.account_id, key_id=key_id,
                                      actor=actor_for_console(console), authority=member_authority(console),
                                      allowed_cidrs=networks(form_text(form, "allowed_cidrs")))
    except HongyanError as exc:
        return console.redirect_error("/console/keys", exc)
    return console.redirect("/console/keys", flash=Flash(kind="success", key="flash.key_updated", params={"key": key_id}))


@router.post("/keys/{key_id}/rotate")
async def rotate_key(console: SignedIn, form: CheckedForm, key_id: str) -> Any:
    assert console.user is not None
    try:
        overlap = float(form_text(form, "overlap_hours", "24"))
        async with console.db.write() as session:
            created = await keys.rotate_api_key(session, account_id=console.account_id, key_id=key_id,
                                                overlap_hours=overlap, actor=actor_for_console(console), authority=member_authority(console),
                                                created_by=console.user.user_id)
    except ValueError:
        return console.redirect_error("/console/keys", InvalidRequest("invalid_overlap", "Choose an overlap.",
                                                                      field="overlap_hours"))
    except HongyanError as exc:
        return console.redirect_error("/console/keys", exc)
    return await _render(console, created=created, rotated_from=key_id)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(console: SignedIn, form: CheckedForm, key_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await keys.revoke_api_key(session, account_id=console.account_id, key_id=key_id,
                                      actor=actor_for_console(console), authority=member_authority(console))
    except HongyanError as exc:
        return console.redirect_error("/console/keys", exc)
    return console.redirect(
        "/console/keys", flash=Flash(kind="success", key="flash.key_revoked", params={"key": key_id})
    )
