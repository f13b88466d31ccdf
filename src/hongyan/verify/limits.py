"""Verification limits: an account's choices (`account.settings["verify"]`) and the sliding-window checks.

Rule: an account may only be *stricter* than the platform. The platform values (HONGYAN_VERIFY_*) are the
operator's anti-abuse ceiling — a customer whose sign-up form is being abused must not be able to lift it by
mistake, and an operator who wants more headroom for everyone raises the setting. So every count limit is
min(account, platform), the resend cool-down max(account, platform), max attempts min(account, platform).
Code length and lifetime are plain defaults within their ranges (4–10 digits, 30–3600 s).

Counts (read together in one statement by verify.windows; each an indexed range of at most `limit` rows):
- per number (this account's verification messages to it, resends included): cool-down, hour, day;
- per client IP (verifications started, hour) — the `device_ip` the caller passes, else the caller's own;
- per API key (verifications started, minute).
A refusal carries Retry-After: the moment the oldest counted send leaves the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.config import Settings
from hongyan.core.errors import HongyanError, Unprocessable
from hongyan.verify.codes import MAX_LENGTH, MIN_LENGTH

SETTINGS_KEY = "verify"
TTL_RANGE = (30, 3600)
RATE_LIMIT_CODES = ("verify_rate_limited_number", "verify_rate_limited_ip", "verify_rate_limited_key")
# name → (lowest accepted value, how the platform value combines: "min" stricter is lower, "max" higher)
_LIMIT_FIELDS: dict[str, tuple[int, str]] = {
    "per_number_hour": (1, "min"),
    "per_number_day": (1, "min"),
    "per_ip_hour": (1, "min"),
    "per_key_minute": (1, "min"),
    "max_attempts": (1, "min"),
    "resend_cooldown_s": (0, "max"),
}


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """An account's verify choices; None everywhere means "the platform's". Unknown keys of the stored
    object (e.g. the pumping protection's `countries`) are left alone when saving."""

    code_length: int | None = None
    ttl_s: int | None = None
    template_id: str | None = None
    keep_previous_code: bool = False
    per_number_hour: int | None = None
    per_number_day: int | None = None
    per_ip_hour: int | None = None
    per_key_minute: int | None = None
    max_attempts: int | None = None
    resend_cooldown_s: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> VerifySettings:
        """From the stored JSON object; a malformed value falls back to its default (never breaks a send)."""
        if not isinstance(data, dict):
            return cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name == "keep_previous_code":
                if isinstance(value, bool):
                    values[f.name] = value
            elif f.name == "template_id":
                if isinstance(value, str) and value.strip():
                    values[f.name] = value.strip()
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                values[f.name] = value
        return cls(**values)

    @classmethod
    def from_account(cls, account: Any) -> VerifySettings:
        stored = getattr(account, "settings", None) or {}
        return cls.from_dict(stored.get(SETTINGS_KEY) if isinstance(stored, dict) else None)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """What applies to one account: its choices combined with the platform's (see the module docstring)."""

    code_length: int
    ttl_s: int
    template_id: str | None
    keep_previous_code: bool
    per_number_hour: int
    per_number_day: int
    per_ip_hour: int
    per_key_minute: int
    max_attempts: int
    resend_cooldown_s: int


def effective(settings: Settings, own: VerifySettings) -> EffectiveLimits:
    def combine(name: str) -> int:
        platform = int(getattr(settings, f"verify_{name}"))
        value = getattr(own, name)
        if value is None:
            return platform
        return min(value, platform) if _LIMIT_FIELDS[name][1] == "min" else max(value, platform)

    length = own.code_length if own.code_length and MIN_LENGTH <= own.code_length <= MAX_LENGTH else None
    ttl = own.ttl_s if own.ttl_s and TTL_RANGE[0] <= own.ttl_s <= TTL_RANGE[1] else None
    return EffectiveLimits(
        code_length=length or settings.verify_code_length,
        ttl_s=ttl or settings.verify_ttl_s,
        template_id=own.template_id,
        keep_previous_code=own.keep_previous_code,
        **{name: combine(name) for name in _LIMIT_FIELDS},
    )


def checked_settings(current: VerifySettings, changes: dict[str, Any]) -> VerifySettings:
    """`current` with `changes` applied, each value checked (Unprocessable naming the field at fault).
    A limit looser than the platform's is accepted but has no effect beyond it (shown as such)."""
    for name, value in changes.items():
        if name == "code_length" and value is not None and not MIN_LENGTH <= value <= MAX_LENGTH:
            raise Unprocessable(
                "verify_settings_invalid",
                f"The code length is {MIN_LENGTH} to {MAX_LENGTH} digits.",
                field=name,
            )
        if name == "ttl_s" and value is not None and not TTL_RANGE[0] <= value <= TTL_RANGE[1]:
            raise Unprocessable(
                "verify_settings_invalid",
                f"A code lives {TTL_RANGE[0]} to {TTL_RANGE[1]} seconds.",
                field=name,
            )
        if name in _LIMIT_FIELDS and value is not None and value < _LIMIT_FIELDS[name][0]:
            raise Unprocessable(
                "verify_settings_invalid", f"{name} must be at least {_LIMIT_FIELDS[name][0]}.", field=name
            )
    return replace(current, **changes)


# -- sliding windows ------------------------------------------------------------------------------------
def rate_limited(
    code: str, message: str, retry_after_s: float, *, field: str | None, limit: int, window: str
) -> HongyanError:
    retry = max(1, math.ceil(retry_after_s))
    return HongyanError(
        code,
        message,
        field=field,
        status_code=429,
        headers={"Retry-After": str(retry)},
        details={"retry_after_s": retry, "limit": limit, "window": window},
    )


def check_number_sends(limits: EffectiveLimits, day: list[datetime], now: datetime) -> None:
    """Pure: the per-number limits over `day` (the number's sends in the last day, newest first)."""
    if day and limits.resend_cooldown_s and now - day[0] < timedelta(seconds=limits.resend_cooldown_s):
        wait = (day[0] + timedelta(seconds=limits.resend_cooldown_s) - now).total_seconds()
        raise rate_limited(
            "verify_rate_limited_number",
            f"A code was sent to this number less than "
            f"{limits.resend_cooldown_s} seconds ago; wait before sending another.",
            wait,
            field="to",
            limit=1,
            window=f"{limits.resend_cooldown_s}s",
        )
    hour = [t for t in day if t >= now - timedelta(hours=1)]
    for sent, limit, window, label in (
        (hour, limits.per_number_hour, timedelta(hours=1), "hour"),
        (day, limits.per_number_day, timedelta(days=1), "day"),
    ):
        if len(sent) >= limit:
            wait = (sent[limit - 1] + window - now).total_seconds()
            raise rate_limited(
                "verify_rate_limited_number",
                f"{limit} codes were sent to this number in the last {label}, the most allowed.",
                wait,
                field="to",
                limit=limit,
                window=label,
            )


def check_caller_starts(
    limits: EffectiveLimits,
    client_ip: str | None,
    ip_starts: tuple[int, datetime | None],
    api_key_id: str | None,
    key_starts: tuple[int, datetime | None],
    now: datetime,
) -> None:
    """Pure: the per-IP (hour) and per-API-key (minute) limits on starting verifications, over (how many
    started in the window, counted up to the limit; the oldest of those) — verify.windows reads both."""
    if client_ip:
        count, oldest = ip_starts
        if count >= limits.per_ip_hour and oldest is not None:
            raise rate_limited(
                "verify_rate_limited_ip",
                f"{limits.per_ip_hour} verifications were started from "
                f"{client_ip} in the last hour, the most allowed.",
                (oldest + timedelta(hours=1) - now).total_seconds(),
                field="device_ip",
                limit=limits.per_ip_hour,
                window="hour",
            )
    if api_key_id:
        count, oldest = key_starts
        if count >= limits.per_key_minute and oldest is not None:
            raise rate_limited(
                "verify_rate_limited_key",
                f"{limits.per_key_minute} verifications were started "
                "with this API key in the last minute, the most allowed.",
                (oldest + timedelta(minutes=1) - now).total_seconds(),
                field="Authorization",
                limit=limits.per_key_minute,
                window="minute",
            )


# -- saving (console) -----------------------------------------------------------------------------------
async def update_settings(
    session: AsyncSession, settings: Settings, *, account_id: str, actor: Any, changes: dict[str, Any]
) -> VerifySettings:
    """Check and merge `changes` into account.settings["verify"] (other keys, e.g. `countries`, kept);
    a chosen template must be an approved verification template; audited as `verify.settings`."""
    from hongyan.accounts.models import Account
    from hongyan.audit.service import changes as diff
    from hongyan.audit.service import record
    from hongyan.core.errors import NotFound
    from hongyan.verify.texts import verify_template

    account = await session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    stored = dict(account.settings or {})
    before_raw = dict(stored.get(SETTINGS_KEY) or {})
    before = VerifySettings.from_dict(before_raw)
    after = checked_settings(before, changes)
    if after.template_id:
        await verify_template(
            session,
            account_id=account_id,
            template_id=after.template_id,
            code_length=effective(settings, after).code_length,
            field="template_id",
        )
    stored[SETTINGS_KEY] = {**before_raw, **after.to_dict()}
    account.settings = stored  # a new dict: the JSON column sees the change
    from hongyan.verify import context

    context.forget(account_id)  # this process's verification sends see the change at once (others: TTL)
    old, new = diff(before.to_dict(), after.to_dict())
    if new:
        await record(
            session,
            actor=actor,
            action="verify.settings",
            account_id=account_id,
            target_type="account",
            target_id=account_id,
            before=old,
            after=new,
        )
    return after
