"""A customer's own billing settings (low-balance alert, package/cash draw order): one service for the
API and the console, checked against the caller's permission and audited with before/after."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import BILLING_MANAGE, Authority, require
from hongyan.audit.service import Actor, changes, record
from hongyan.billing.models import BillingProfile
from hongyan.billing.rates import profile_for_update
from hongyan.core.clock import utcnow
from hongyan.core.money import format_micros

UNCHANGED: Any = object()


def profile_view(profile: Any, currency: str) -> dict[str, Any]:
    """An account's billing rules as the audit log shows them (before/after of an edit)."""
    threshold = profile.low_balance_threshold_micros
    return {"low_balance_threshold": None if threshold is None else format_micros(threshold, currency),
            "draw_order": profile.draw_order, "refund_undelivered": profile.refund_undelivered, "tier": profile.tier,
            "rate_card_id": profile.rate_card_id}


async def update_settings(
    session: AsyncSession, *, account_id: str, currency: str, actor: Actor | None, authority: Authority | None,
    low_balance_threshold_micros: int | None = UNCHANGED, draw_order: str | None = None,
) -> BillingProfile:
    """Change what a customer may change of its billing rules (threshold None = alert off)."""
    if authority is not None:
        require(authority, BILLING_MANAGE)
    profile = await profile_for_update(session, account_id)
    before = profile_view(profile, currency)
    if low_balance_threshold_micros is not UNCHANGED:
        profile.low_balance_threshold_micros = low_balance_threshold_micros
    if draw_order is not None:
        profile.draw_order = draw_order
    profile.updated_at = utcnow()
    old, new = changes(before, profile_view(profile, currency))
    if new and actor is not None:
        await record(session, actor=actor, action="billing.settings_updated", account_id=account_id,
                     target_type="account", target_id=account_id, before=old, after=new)
    return profile
