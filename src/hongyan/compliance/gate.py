"""The compliance gate: every sending rule, applied in the one submit path for every way in (API, console,
campaigns, compatibility APIs, later the SMPP server).

Three stages, so that the hot path stays batch-shaped:
1. `load_gate` (one read session per request): the account's choices and verification, its approved
   signatures, the template asked for, the compiled content filter, the quiet window.
2. `Gate.compose` (pure, cached per distinct text): signature resolved and placed, opt-out text for
   marketing appended or required, content filter verdict (block → refused, review → the message is held).
3. `screen` (one query per rule per chunk): per-recipient refusals — suppression list (opt-out), consent
   in strict mode, the marketing frequency cap, the limits of unverified accounts.
Quiet hours (shared with campaigns) defer marketing messages: `release_at`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.campaigns import quiet_hours
from hongyan.compliance.settings import ComplianceSettings
from hongyan.config import Settings
from hongyan.core.errors import Forbidden, NotFound, Unprocessable

SIGNATURE_OPEN, SIGNATURE_CLOSE = "【", "】"
_LEADING_SIGNATURE = re.compile(r"^\s*【([^【】]{1,40})】")
_TRAILING_SIGNATURE = re.compile(r"【([^【】]{1,40})】\s*$")
# opt-out wording carriers and regulators accept: 回T退订, 退订回T, 拒收请回复R, 回复TD退订, Reply STOP to opt out
OPT_OUT_TEXT = re.compile(
    r"(回复?\s*[A-Za-z]{1,2}\s*退订|退订\s*回复?\s*[A-Za-z]{1,2}|拒收请回复\s*[A-Za-z]{1,2}|退订回复|"
    r"\b(reply|text|txt|send)\s+(stop|stopall|unsubscribe|end|quit|cancel|optout)\b|\bopt[\s-]?out\b)",
    re.IGNORECASE,
)
DEFAULT_OPT_OUT_ZH = "回T退订"
DEFAULT_OPT_OUT_EN = "Reply STOP to opt out"
_CJK = re.compile(r"[\u3400-\u9fff]")
_ENDS_WITH_PUNCTUATION = re.compile(r"[。！？!?.，,；;…~]\s*$")


@dataclass(frozen=True, slots=True)
class Composed:
    text: str  # final text: signature placed, opt-out text appended
    signature_id: str | None
    verdict: Any = None  # content_filter.Verdict with action "review" → the message is held


class TextRefused(Unprocessable):
    """The text breaks a rule (blocked content, missing opt-out text, unapproved signature)."""


@dataclass(slots=True)
class Gate:
    account_id: str
    choices: ComplianceSettings
    verified: bool
    kyc_required: bool
    signatures: dict[str, Any]  # approved: name → SignatureRef (id, name, is_default)
    signature_required: bool
    content: Any  # content_filter.ContentFilter
    window: quiet_hours.QuietWindow | None
    template: Any = None  # templates.TemplateRef of the request, when sending by template
    marketing_cap: int = 0
    unverified_daily_limit: int = 0
    unverified_max_numbers: int = 0
    _composed: dict[tuple[str, str, str | None], Composed | TextRefused] = field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return self.kyc_required and not self.verified

    @property
    def default_signature(self) -> Any:
        return next((s for s in self.signatures.values() if s.is_default), None)

    # -- request-level rules ---------------------------------------------------------------------
    def check_request(self, message_type: str, *, has_template: bool) -> None:
        if not has_template and not self.choices.free_text_allowed:
            raise Unprocessable("template_required",
                                "This account may only send approved templates: give template_id and params.",
                                field="template_id")
        if self.limited and message_type == "marketing":
            raise Forbidden("kyc_required", "Marketing messages need an approved enterprise verification "
                            "(console → Verification).", field="message_type")

    # -- text rules (pure, cached per distinct text) ------------------------------------------------
    def compose(self, text: str, message_type: str, signature: str | None = None, *, field_name: str = "text") -> Composed:
        """The final text for `text`, or TextRefused. Cached: a batch with one text composes once."""
        key = (text, message_type, signature)
        hit = self._composed.get(key)
        if hit is None:
            try:
                hit = self._compose(text, message_type, signature, field_name)
            except TextRefused as refused:
                hit = refused
            if len(self._composed) < 4096:
                self._composed[key] = hit
        if isinstance(hit, TextRefused):
            raise hit
        return hit

    def _compose(self, text: str, message_type: str, signature: str | None, field_name: str) -> Composed:
        body, inline = split_signature(text)
        ref = self._resolve_signature(inline, signature, field_name)
        if message_type == "marketing" and not OPT_OUT_TEXT.search(body):
            mode = self.choices.opt_out_text_mode
            if mode == "reject":
                raise TextRefused("opt_out_text_missing", "Marketing messages must tell how to opt out, e.g. "
                                  f"“{DEFAULT_OPT_OUT_ZH}” or “{DEFAULT_OPT_OUT_EN}”.", field=field_name)
            if mode == "append":
                body = append_opt_out(body, self.choices.opt_out_text)
        verdict = self.content.check(body) if self.content is not None else None
        if verdict is not None and verdict.action == "block":
            category = f" ({verdict.category})" if getattr(verdict, "category", None) else ""
            raise TextRefused("content_blocked", f"The text contains “{verdict.pattern}”{category}, which the "
                              "content rules do not allow.", field=field_name,
                              details={"rule_id": verdict.rule_id, "pattern": verdict.pattern,
                                       "scope": getattr(verdict, "scope", None)})
        if ref is None:
            final = body
        elif self.choices.signature_position == "suffix":
            final = f"{body}{SIGNATURE_OPEN}{ref.name}{SIGNATURE_CLOSE}"
        else:
            final = f"{SIGNATURE_OPEN}{ref.name}{SIGNATURE_CLOSE}{body}"
        return Composed(final, ref.id if ref is not None else None,
                        verdict if verdict is not None and verdict.action == "review" else None)

    def _resolve_signature(self, inline: str | None, asked: str | None, field_name: str) -> Any:
        asked = asked.strip().strip(SIGNATURE_OPEN + SIGNATURE_CLOSE).strip() if asked else None
        if inline and asked and inline != asked:
            raise TextRefused("signature_conflict", f"The text is signed 【{inline}】 but signature is “{asked}”.",
                              field="signature")
        name = inline or asked
        if name:
            ref = self.signatures.get(name)
            if ref is None:
                raise TextRefused("signature_not_approved", f"The signature 【{name}】 is not an approved "
                                  "signature of this account (apply for it under Signatures).",
                                  field=field_name if inline else "signature")
            return ref
        ref = self.default_signature
        if ref is None and self.signature_required:
            raise TextRefused("signature_required", "Every message needs an approved signature 【…】; apply for "
                              "one under Signatures.", field="signature")
        return ref

    # -- quiet hours (marketing) ----------------------------------------------------------------------
    def release_at(self, e164: str, message_type: str, planned: datetime) -> tuple[datetime, str | None]:
        """When a message may leave (planned, or the end of the recipient's quiet window) and the packed zones."""
        if message_type != "marketing" or self.window is None:
            return planned, None
        zones = quiet_hours.zones_for_number(e164, None)
        return quiet_hours.next_allowed(self.window, zones, planned), quiet_hours.pack_zones(zones)


def split_signature(text: str) -> tuple[str, str | None]:
    """(text without its signature, the signature name) — a leading 【…】 or, failing that, a trailing one."""
    m = _LEADING_SIGNATURE.match(text)
    if m:
        return text[m.end():], m.group(1).strip()
    m = _TRAILING_SIGNATURE.search(text)
    if m:
        return text[: m.start()], m.group(1).strip()
    return text, None


def append_opt_out(body: str, custom: str | None) -> str:
    """The body with opt-out wording appended: the account's own text, else Chinese or English by the body."""
    wording = custom or (DEFAULT_OPT_OUT_ZH if _CJK.search(body) else DEFAULT_OPT_OUT_EN)
    if _CJK.search(wording):
        return body.rstrip() + ("" if _ENDS_WITH_PUNCTUATION.search(body) else "，") + wording
    return body.rstrip() + ("" if _ENDS_WITH_PUNCTUATION.search(body) else ".") + " " + wording


async def load_gate(session: AsyncSession, settings: Settings, *, account_id: str,
                    template_id: str | None = None) -> Gate:
    """Everything the rules need for one request of one account (a handful of indexed reads)."""
    from hongyan.compliance.filter_rules import load_filter
    from hongyan.compliance.signatures import approved_signatures
    from hongyan.compliance.templates import approved_template

    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("account_not_found", "No such account.", field="account_id")
    verified = account.kyc_status == "verified"
    if not verified and account.parent_id is not None:  # a sub-account belongs to its verified enterprise
        verified = await session.scalar(select(Account.kyc_status).where(Account.id == account.parent_id)) == "verified"
    template = None
    if template_id:
        template = await approved_template(session, account_id, template_id)
        if template is None:
            raise Unprocessable("template_not_approved", f"{template_id} is not an approved template of this "
                                "account.", field="template_id")
    choices = ComplianceSettings.from_account(account)
    caps = [c for c in (choices.marketing_daily_cap, settings.marketing_daily_cap) if c]
    return Gate(
        account_id=account_id, choices=choices, verified=verified, kyc_required=settings.kyc_required,
        signatures=await approved_signatures(session, account_id),
        signature_required=settings.signature_required, content=await load_filter(session, account_id),
        window=quiet_hours.parse_window(account.quiet_hours if account.quiet_hours is not None else settings.quiet_hours),
        template=template, marketing_cap=min(caps) if caps else 0,
        unverified_daily_limit=settings.unverified_daily_limit,
        unverified_max_numbers=settings.unverified_max_numbers,
    )


# -- per-recipient rules (I/O: one query per rule per chunk) ---------------------------------------------
@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    message: str


_IN_CHUNK = 1000


def _chunks(values: Sequence[str]) -> list[Sequence[str]]:
    return [values[i : i + _IN_CHUNK] for i in range(0, len(values), _IN_CHUNK)]


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)


async def screen(session: AsyncSession, gate: Gate, rows: list[dict[str, Any]], *, message_type: str,
                 now: datetime, signature_ids: set[str] | None = None,
                 confirmation: bool = False) -> dict[str, Refusal]:
    """Per-recipient refusals for rows about to be stored: message id → Refusal. Rows are new messages
    (message_row dicts); `signature_ids`: the signatures they carry (per-signature opt-outs apply);
    `confirmation`: the reply confirming an opt-out, which goes to a number that just opted out."""
    from hongyan.campaigns.models import Contact
    from hongyan.compliance.suppression import suppressed
    from hongyan.messaging.models import Message

    out: dict[str, Refusal] = {}
    if not rows:
        return out
    marketing = message_type == "marketing"
    if (marketing or gate.choices.suppress_all_types) and not confirmation:
        scopes = sorted({"", *(signature_ids or ())})
        bidxs = [r["to_bidx"] for r in rows]
        stopped = await suppressed(session, gate.account_id, bidxs, scopes)
        for r in rows:
            if r["to_bidx"] in stopped:
                out[r["id"]] = Refusal("recipient_opted_out", f"{r['to_number']} opted out (suppression list); "
                                       f"{'marketing is' if not gate.choices.suppress_all_types else 'messages are'} "
                                       "not sent to it.")
    left = [r for r in rows if r["id"] not in out]
    if marketing and gate.choices.strict_consent and left:
        consented: set[str] = set()
        for part in _chunks([r["to_bidx"] for r in left]):
            consented.update((await session.scalars(select(Contact.phone_bidx).where(
                Contact.account_id == gate.account_id, Contact.phone_bidx.in_(part),
                Contact.consent_at.is_not(None)))).all())
        for r in left:
            if r["to_bidx"] not in consented:
                out[r["id"]] = Refusal("consent_missing", f"{r['to_number']} has no consent record; strict "
                                       "consent mode sends marketing only to contacts who agreed.")
        left = [r for r in left if r["id"] not in out]
    if marketing and gate.marketing_cap and left:
        counts: dict[str, int] = {}
        for part in _chunks([r["to_bidx"] for r in left]):
            counts.update({b: n for b, n in (await session.execute(
                select(Message.to_bidx, func.count()).where(
                    Message.account_id == gate.account_id, Message.to_bidx.in_(part),
                    Message.message_type == "marketing", Message.created_at >= day_start(now))
                .group_by(Message.to_bidx))).all()})
        for r in left:
            if counts.get(r["to_bidx"], 0) >= gate.marketing_cap:
                out[r["id"]] = Refusal("frequency_cap_exceeded", f"{r['to_number']} already had "
                                       f"{gate.marketing_cap} marketing message(s) today (the daily cap).")
        left = [r for r in left if r["id"] not in out]
    if gate.limited and left:
        out.update(await _unverified_limits(session, gate, left, now))
    return out


async def _unverified_limits(session: AsyncSession, gate: Gate, rows: list[dict[str, Any]],
                             now: datetime) -> dict[str, Refusal]:
    from hongyan.messaging.models import Message

    since = day_start(now)
    mine = (Message.account_id == gate.account_id, Message.created_at >= since)
    sent_today = int(await session.scalar(select(func.count()).select_from(Message).where(*mine)) or 0)
    known = set((await session.scalars(select(Message.to_bidx).where(*mine).distinct())).all())
    out: dict[str, Refusal] = {}
    budget = max(0, gate.unverified_daily_limit - sent_today)
    for r in rows:
        if budget <= 0:
            out[r["id"]] = Refusal("kyc_daily_limit", f"Accounts without enterprise verification may send "
                                   f"{gate.unverified_daily_limit} messages a day; the limit is reached.")
            continue
        if r["to_bidx"] not in known:
            if len(known) >= gate.unverified_max_numbers:
                out[r["id"]] = Refusal("kyc_recipient_limit", f"Accounts without enterprise verification may "
                                       f"send to {gate.unverified_max_numbers} different numbers a day.")
                continue
            known.add(r["to_bidx"])
        budget -= 1
    return out
