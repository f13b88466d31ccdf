"""Sending rules page: the account's compliance choices (signature position, opt-out wording, strict consent,
marketing cap per number and day, quiet window), its verification status and the platform's limits.

Owners and admins only (`account.settings`); the same services as /v1/account/compliance and
/v1/account/quiet-hours, so the console shows the API's message next to the field.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hongyan.audit.service import actor_for_console
from hongyan.campaigns import service as campaigns
from hongyan.compliance import sending_rules
from hongyan.console.access import member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, Unprocessable

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/sending-rules"


async def _render(console: Console, *, status: int = 200, errors: FieldErrors | None = None,
                  form: dict[str, str] | None = None) -> Any:
    settings = console.request.app.state.settings
    async with console.db.read() as session:
        view = await sending_rules.view(session, console.account_id)
    c = view.choices
    values = form or {
        "signature_position": c.signature_position, "opt_out_text_mode": c.opt_out_text_mode,
        "opt_out_text": c.opt_out_text or "", "strict_consent": "1" if c.strict_consent else "",
        "marketing_daily_cap": "" if c.marketing_daily_cap is None else str(c.marketing_daily_cap),
        "quiet_hours": view.quiet_hours or "",
    }
    return console.render("sending_rules.html", status=status, active="sending_rules", errors=errors or FieldErrors(),
                          view=view, values=values, platform=settings,
                          effective_quiet=campaigns.effective_quiet_hours(settings, view.quiet_hours))


@router.get("/sending-rules")
async def sending_rules_page(console: SignedIn) -> Any:
    return await _render(console)


@router.post("/sending-rules")
async def save(console: SignedIn, form: CheckedForm) -> Any:
    settings = console.request.app.state.settings
    values = {name: form_text(form, name).strip() for name in (
        "signature_position", "opt_out_text_mode", "opt_out_text", "strict_consent", "marketing_daily_cap",
        "quiet_hours")}
    errors = FieldErrors()
    cap_text = values["marketing_daily_cap"]
    try:
        if cap_text and not cap_text.isdigit():
            raise Unprocessable("invalid_daily_cap", f"marketing_daily_cap is 1 to {sending_rules.MAX_DAILY_CAP}, or "
                                "empty for none.", field="marketing_daily_cap")
        data = {"signature_position": values["signature_position"], "opt_out_text_mode": values["opt_out_text_mode"],
                "opt_out_text": values["opt_out_text"] or None, "strict_consent": values["strict_consent"] == "1",
                "marketing_daily_cap": int(cap_text) if cap_text else None}
        async with console.db.write() as session:
            await sending_rules.change(session, account_id=console.account_id, actor=actor_for_console(console),
                                       data=data)
            await campaigns.set_quiet_hours(session, settings, authority=member_authority(console),
                                            actor=actor_for_console(console), value=values["quiet_hours"] or None)
    except HongyanError as exc:
        console.field_error(errors, exc.field or "opt_out_text", exc)
        return await _render(console, status=422, errors=errors, form=values)
    return console.redirect(PAGE, flash=Flash(kind="success", key="sending_rules.saved", params={}))
