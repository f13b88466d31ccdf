"""Sub-accounts page: list with this period's spend, create, change name and limit, suspend or resume, and
create an API key of a sub-account (shown once). Same service calls as /v1/sub-accounts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hongyan.accounts import keys, subaccounts
from hongyan.api.client import client_ip
from hongyan.console.access import member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = "/console/sub-accounts"


def _limit(text: str) -> int | None:
    from hongyan.billing.routes import amount_param

    return None if not text.strip() else amount_param(text.strip(), "spend_limit")


async def _render(console: Console, *, status: int = 200, **values: Any) -> Any:
    async with console.db.read() as session:
        rows = await subaccounts.list_sub_accounts(session, authority=member_authority(console))
    values.setdefault("form", {"name": "", "spend_limit": "", "spend_limit_period": "month"})
    values.setdefault("created_key", None)
    return console.render("sub_accounts.html", status=status, active="sub_accounts", sub_accounts=rows,
                          periods=("day", "month"), all_scopes=keys.ALL_SCOPES, **values)


@router.get("/sub-accounts")
async def sub_accounts_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/sub-accounts")
async def create(console: SignedIn, form: CheckedForm) -> Any:
    values = {"name": form_text(form, "name"), "spend_limit": form_text(form, "spend_limit"),
              "spend_limit_period": form_text(form, "spend_limit_period", "month")}
    try:
        async with console.db.write() as session:
            await subaccounts.create_sub_account(
                session, authority=member_authority(console), name=values["name"], spend_limit_micros=_limit(values["spend_limit"]),
                spend_limit_period=values["spend_limit_period"], ip=client_ip(console.request),
            )
    except HongyanError as exc:
        errors = FieldErrors()
        field = exc.field if exc.field in ("name", "spend_limit", "spend_limit_period") else "name"
        console.field_error(errors, field, exc)
        return await _render(console, status=422, errors=errors, form=values)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.sub_account_created",
                                              params={"name": values["name"].strip()}))


@router.post("/sub-accounts/{sub_account_id}")
async def update(console: SignedIn, form: CheckedForm, sub_account_id: str) -> Any:
    limit_text = form_text(form, "spend_limit")
    try:
        async with console.db.write() as session:
            await subaccounts.update_sub_account(
                session, authority=member_authority(console), sub_account_id=sub_account_id,
                name=form_text(form, "name") or None, spend_limit_micros=_limit(limit_text),
                clear_spend_limit=not limit_text.strip(),
                spend_limit_period=form_text(form, "spend_limit_period") or None, ip=client_ip(console.request),
            )
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.sub_account_updated"))


@router.post("/sub-accounts/{sub_account_id}/status")
async def set_status(console: SignedIn, form: CheckedForm, sub_account_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await subaccounts.update_sub_account(
                session, authority=member_authority(console), sub_account_id=sub_account_id,
                status=form_text(form, "status"), ip=client_ip(console.request),
            )
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.sub_account_updated"))


@router.post("/sub-accounts/{sub_account_id}/keys")
async def create_key(console: SignedIn, form: CheckedForm, sub_account_id: str) -> Any:
    scopes = tuple(s for s in form.getlist("scopes") if isinstance(s, str)) or ("send", "read")
    try:
        async with console.db.write() as session:
            created = await subaccounts.create_sub_account_key(
                session, authority=member_authority(console), sub_account_id=sub_account_id,
                name=form_text(form, "name") or "default", scopes=scopes, ip=client_ip(console.request),
            )
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    # rendered, not redirected: the token exists only in this response
    return await _render(console, created_key=created)
