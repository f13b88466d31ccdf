"""How held messages are shown: to reviewers with the number masked (they judge the content, not the
person), to the account with its own number; the part of the text the filter rule matched is marked so a
reviewer sees at once why the message waits. Pure functions plus one read of the rules' kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.models import AuditEntry
from hongyan.compliance.holds import HeldMessage
from hongyan.compliance.models import FilterRule
from hongyan.core.clock import isoformat

MAX_MARKS = 20


def mask_number(number: str) -> str:
    """+8613812345678 → +86138****5678: the country and carrier prefix and the last four digits stay, the
    middle four go (the common Chinese masking); short numbers keep only their last two digits."""
    digits = number.lstrip("+")
    plus = "+" if number.startswith("+") else ""
    if len(digits) >= 11:
        return f"{plus}{digits[:-8]}****{digits[-4:]}"
    if len(digits) > 4:
        return f"{plus}{'*' * (len(digits) - 2)}{digits[-2:]}"
    return "*" * len(number)


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    matched: bool


def highlight(text: str, pattern: str | None, kind: str | None) -> list[TextPart]:
    """The text cut into parts, the ones the rule's pattern matched marked. A keyword matches without
    regard to case; a regex rule is applied as a regex (case-insensitive, like the filter); an invalid
    pattern or no match leaves the text unmarked."""
    if not pattern:
        return [TextPart(text, False)]
    if kind == "regex":
        try:
            spans = [m.span() for m in re.finditer(pattern, text, re.IGNORECASE) if m.end() > m.start()]
        except re.error:
            spans = []
    else:
        spans = [m.span() for m in re.finditer(re.escape(pattern), text, re.IGNORECASE)]
    parts: list[TextPart] = []
    position = 0
    for start, end in spans[:MAX_MARKS]:
        if start > position:
            parts.append(TextPart(text[position:start], False))
        parts.append(TextPart(text[start:end], True))
        position = end
    if position < len(text) or not parts:
        parts.append(TextPart(text[position:], False))
    return parts


async def rule_kinds(session: AsyncSession, holds: list[HeldMessage]) -> dict[str, str]:
    """rule id → kind (keyword, regex, …) for the rules that held these messages (one query)."""
    rule_ids = sorted({h.rule_id for h in holds if h.rule_id})
    if not rule_ids:
        return {}
    rows = (
        await session.execute(select(FilterRule.id, FilterRule.kind).where(FilterRule.id.in_(rule_ids)))
    ).all()
    return {r.id: r.kind for r in rows}


def held_json(h: HeldMessage, *, kinds: dict[str, str], masked: bool) -> dict[str, Any]:
    """The API shape of a held message; `masked` for reviewers."""
    return {
        "message_id": h.message_id,
        "account_id": h.account_id,
        "batch_id": h.batch_id,
        "message_type": h.message_type,
        "to": mask_number(h.to) if masked else h.to,
        "text": h.body,
        "segments": h.segments,
        "matched": {"rule_id": h.rule_id, "pattern": h.matched, "kind": kinds.get(h.rule_id or "")},
        "held_at": isoformat(h.created_at),
        "decision": h.decision,
        "reason": h.reason,
        "decided_by": h.decided_by if masked else None,
        "decided_at": isoformat(h.decided_at),
    }


async def recent_decisions(session: AsyncSession, *, limit: int = 20) -> list[AuditEntry]:
    """The latest decisions on held messages (who, when, how many, why), newest first, from the audit log."""
    actions = ("message_hold.approved", "message_hold.rejected")
    return list(
        (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action.in_(actions))
                .order_by(AuditEntry.seq.desc())
                .limit(limit)
            )
        ).all()
    )
