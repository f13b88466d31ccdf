"""The account's sending rules (what compliance.gate applies), checked before they are stored.

Customers choose: where the signature goes, whether marketing without opt-out wording gets it appended or
is refused, their own opt-out wording, strict consent, a marketing cap per number and day, and their quiet
window. Only platform staff may switch free text off or on for an account (restrict it to templates) or
switch the opt-out wording rule off. One function per audience, shared by the API and the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.compliance.gate import OPT_OUT_TEXT
from hongyan.compliance.settings import ComplianceSettings, update_settings
from hongyan.core.errors import NotFound, Unprocessable

MAX_DAILY_CAP = 100
MAX_OPT_OUT_TEXT = 40
CUSTOMER_FIELDS = ("signature_position", "opt_out_text_mode", "opt_out_text", "strict_consent", "marketing_daily_cap")
STAFF_FIELDS = ("free_text_allowed", "opt_out_text_mode")


@dataclass(frozen=True, slots=True)
class RulesView:
    choices: ComplianceSettings
    kyc_status: str
    quiet_hours: str | None  # the account's own window; None: the platform default


def check_changes(data: dict[str, Any], *, staff: bool = False) -> dict[str, Any]:
    """Validated values to store; raises Unprocessable naming the field. Unknown fields are refused."""
    allowed = STAFF_FIELDS if staff else CUSTOMER_FIELDS
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name not in allowed:
            raise Unprocessable("field_not_allowed", f"{name} cannot be changed here.", field=name)
        if name == "signature_position":
            if value not in ("prefix", "suffix"):
                raise Unprocessable("invalid_signature_position", "signature_position is prefix or suffix.", field=name)
        elif name == "opt_out_text_mode":
            modes = ("append", "reject", "off") if staff else ("append", "reject")
            if value not in modes:
                raise Unprocessable("invalid_opt_out_text_mode", f"opt_out_text_mode is {' or '.join(modes)}"
                                    + ("" if staff else " (only the platform can switch the rule off)") + ".",
                                    field=name)
        elif name == "opt_out_text":
            if value is not None:
                if not isinstance(value, str) or len(value.strip()) > MAX_OPT_OUT_TEXT:
                    raise Unprocessable("invalid_opt_out_text", f"Up to {MAX_OPT_OUT_TEXT} characters.", field=name)
                value = value.strip() or None
                if value is not None and not OPT_OUT_TEXT.search(value):
                    raise Unprocessable("invalid_opt_out_text", "The wording must tell how to opt out with a keyword "
                                        "that works, e.g. 回T退订, 拒收请回复R, Reply STOP to opt out.", field=name)
        elif name in ("strict_consent", "free_text_allowed"):
            if not isinstance(value, bool):
                raise Unprocessable("invalid_boolean", f"{name} is true or false.", field=name)
        elif name == "marketing_daily_cap":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= MAX_DAILY_CAP):
                raise Unprocessable("invalid_daily_cap", f"marketing_daily_cap is 1 to {MAX_DAILY_CAP}, or null "
                                    "for none.", field=name)
        out[name] = value
    return out


async def view(session: AsyncSession, account_id: str) -> RulesView:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    return RulesView(ComplianceSettings.from_account(account), account.kyc_status, account.quiet_hours)


async def change(session: AsyncSession, *, account_id: str, actor: Any, data: dict[str, Any],
                 staff: bool = False) -> ComplianceSettings:
    """Check and store; audited (compliance.settings) with what changed."""
    return await update_settings(session, account_id=account_id, actor=actor, changes=check_changes(data, staff=staff))


def rules_json(v: RulesView, settings: Any) -> dict[str, Any]:
    c = v.choices
    return {
        "signature_position": c.signature_position, "opt_out_text_mode": c.opt_out_text_mode,
        "opt_out_text": c.opt_out_text, "strict_consent": c.strict_consent,
        "marketing_daily_cap": c.marketing_daily_cap, "free_text_allowed": c.free_text_allowed,
        "suppress_all_types": c.suppress_all_types, "opt_out_per_signature": c.opt_out_per_signature,
        "kyc_status": v.kyc_status, "quiet_hours": v.quiet_hours,
        "platform": {"signature_required": settings.signature_required, "kyc_required": settings.kyc_required,
                     "unverified_daily_limit": settings.unverified_daily_limit,
                     "unverified_max_numbers": settings.unverified_max_numbers,
                     "marketing_daily_cap": settings.marketing_daily_cap or None,
                     "quiet_hours": settings.quiet_hours},
    }
