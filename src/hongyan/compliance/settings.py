"""An account's compliance choices, read from `account.settings["compliance"]` (a JSON object).

One frozen dataclass with a default for every field, so an account that never saved anything behaves like
the platform default, and a new field only needs a line here (and its parsing in `from_dict` if it is not
a plain value). Unknown keys are ignored, and a value of the wrong type falls back to the default: a
broken setting must never stop an MO reply from being processed or a message from being checked.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from hongyan.compliance.opt_out import DEFAULT_OPT_IN_KEYWORDS, DEFAULT_OPT_OUT_KEYWORDS

SETTINGS_KEY = "compliance"
SignaturePosition = Literal["prefix", "suffix"]
OptOutTextMode = Literal["append", "reject", "off"]
_CHOICES: dict[str, tuple[str, ...]] = {
    "signature_position": ("prefix", "suffix"),
    "opt_out_text_mode": ("append", "reject", "off"),
}
MAX_KEYWORDS = 50
MAX_KEYWORD_CHARS = 32  # Suppression.keyword is String(32)
MAX_REPLY_CHARS = 500


@dataclass(frozen=True, slots=True)
class ComplianceSettings:
    """What an account chose; every default is the platform's behaviour for an account that chose nothing."""

    # opt-out replies (compliance.opt_out / compliance.suppression)
    opt_out_keywords: tuple[str, ...] = DEFAULT_OPT_OUT_KEYWORDS
    opt_in_keywords: tuple[str, ...] = DEFAULT_OPT_IN_KEYWORDS
    opt_out_per_signature: bool = False  # a reply applies to the signature of the message replied to
    opt_out_reply: str | None = None  # automatic confirmation text; None: no confirmation
    suppress_all_types: bool = False  # suppressed numbers refused for every type, not only marketing
    # submit gate (compliance.gate)
    free_text_allowed: bool = True
    signature_position: SignaturePosition = "prefix"
    opt_out_text_mode: OptOutTextMode = "append"
    opt_out_text: str | None = None
    strict_consent: bool = False
    marketing_daily_cap: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> ComplianceSettings:
        """From the stored JSON object; missing or malformed values take their defaults."""
        if not isinstance(data, dict):
            return cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                parsed = _parse(f.name, data[f.name])
                if parsed is not _INVALID:
                    values[f.name] = parsed
        return cls(**values)

    @classmethod
    def from_account(cls, account: Any) -> ComplianceSettings:
        """From an `accounts.models.Account` (or anything with a `settings` dict)."""
        stored = getattr(account, "settings", None) or {}
        return cls.from_dict(stored.get(SETTINGS_KEY) if isinstance(stored, dict) else None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object to store under account.settings["compliance"]."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


_INVALID: Any = object()


def _keywords(value: Any) -> tuple[str, ...] | Any:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return _INVALID
    cleaned = tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    return cleaned[:MAX_KEYWORDS]


def _parse(name: str, value: Any) -> Any:
    if name in ("opt_out_keywords", "opt_in_keywords"):
        return _keywords(value)
    if name in ("opt_out_reply", "opt_out_text"):
        if value is None:
            return None
        return (value.strip() or None) if isinstance(value, str) else _INVALID
    if name in _CHOICES:
        return value if value in _CHOICES[name] else _INVALID
    if name == "marketing_daily_cap":
        if value is None:
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else _INVALID
    # the remaining fields are booleans
    return value if isinstance(value, bool) else _INVALID


# -- saving (console and API) ---------------------------------------------------------------------------
def opt_out_changes(
    *,
    opt_out_keywords: list[str],
    opt_in_keywords: list[str],
    per_signature: bool,
    reply: str | None,
    suppress_all_types: bool,
) -> dict[str, Any]:
    """Checked opt-out choices as stored values; raises Unprocessable naming the field at fault."""
    from hongyan.compliance.opt_out import normalize_keyword
    from hongyan.core.errors import Unprocessable

    lists: dict[str, list[str]] = {}
    for name, words in (("opt_out_keywords", opt_out_keywords), ("opt_in_keywords", opt_in_keywords)):
        cleaned = list(dict.fromkeys(w.strip() for w in words if w.strip()))
        if len(cleaned) > MAX_KEYWORDS:
            raise Unprocessable("too_many_keywords", f"At most {MAX_KEYWORDS} keywords per list.", field=name)
        for word in cleaned:
            if len(word) > MAX_KEYWORD_CHARS or not normalize_keyword(word):
                raise Unprocessable(
                    "invalid_keyword",
                    f"“{word[:40]}” is not a usable keyword (letters or "
                    f"characters, up to {MAX_KEYWORD_CHARS}).",
                    field=name,
                )
        lists[name] = cleaned
    if not lists["opt_out_keywords"]:
        raise Unprocessable(
            "opt_out_keywords_required",
            "Keep at least one opt-out keyword: people must be able to stop your messages.",
            field="opt_out_keywords",
        )
    out_words = {normalize_keyword(w) for w in lists["opt_out_keywords"]}
    clash = next((w for w in lists["opt_in_keywords"] if normalize_keyword(w) in out_words), None)
    if clash is not None:
        raise Unprocessable(
            "keyword_in_both_lists",
            f"“{clash}” cannot both stop and restart messages.",
            field="opt_in_keywords",
        )
    text = (reply or "").strip() or None
    if text is not None and len(text) > MAX_REPLY_CHARS:
        raise Unprocessable(
            "opt_out_reply_too_long",
            f"The confirmation is longer than {MAX_REPLY_CHARS} characters.",
            field="opt_out_reply",
        )
    return {
        **lists,
        "opt_out_per_signature": per_signature,
        "opt_out_reply": text,
        "suppress_all_types": suppress_all_types,
    }


async def update_settings(
    session: Any, *, account_id: str, actor: Any, changes: dict[str, Any]
) -> ComplianceSettings:
    """Merge `changes` into account.settings["compliance"] (other keys kept) and audit what changed."""
    from hongyan.accounts.models import Account
    from hongyan.audit.service import changes as diff
    from hongyan.audit.service import record
    from hongyan.core.errors import NotFound

    account = await session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    stored = dict(account.settings or {})
    before = dict(stored.get(SETTINGS_KEY) or {})
    after = {**before, **changes}
    stored[SETTINGS_KEY] = after
    account.settings = stored  # a new dict: the JSON column sees the change
    old, new = diff(
        ComplianceSettings.from_dict(before).to_dict(), ComplianceSettings.from_dict(after).to_dict()
    )
    if new:
        await record(
            session,
            actor=actor,
            action="compliance.settings",
            account_id=account_id,
            target_type="account",
            target_id=account_id,
            before=old,
            after=new,
        )
    return ComplianceSettings.from_dict(after)
