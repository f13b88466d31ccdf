"""The one submit path: every way in (API, console, CLI, campaigns, compat APIs, SMPP server) calls
`submit_batch`. It validates numbers and content, prices, and stores messages + outbox in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from hongyan.billing import charging
from hongyan.billing.rates import PriceList, load_price_list, settings_price_list
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import Unprocessable
from hongyan.db.engine import Database
from hongyan.dispatch.models import OutboxItem
from hongyan.messaging.encoding import Segmentation, segment
from hongyan.messaging.models import Batch, Message
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.messaging.personalize import MissingVariable, parse_template, render
from hongyan.messaging.states import Status
from hongyan.messaging.transitions import record_history

MESSAGE_TYPES = ("verification", "notification", "marketing")
LANES = {"verification": 0, "notification": 1, "marketing": 2}


@dataclass(frozen=True, slots=True)
class Recipient:
    to: str
    vars: dict[str, str] | None = None
    client_ref: str | None = None
    params: dict[str, str] | None = None  # values of a template's ${variables} (sending by template_id)


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    text: str
    recipients: list[Recipient]
    message_type: str = "notification"
    sender: str | None = None
    scheduled_at: datetime | None = None
    validity: timedelta | None = None
    client_ref: str | None = None
    default_region: str | None = None
    field_prefix: str = "recipients"  # how recipient fields are named in errors ("to" for single sends)
    signature: str | None = None  # an approved signature's name (without 【】); None: in the text or the default
    template_id: str | None = None  # send an approved template (tpl_…) with each recipient's params; text unused


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    id: str
    to: str
    encoding: str
    segments: int
    price_micros: int
    text: str | None  # set only when personalized (the rendered text differs per recipient)
    index: int


@dataclass(frozen=True, slots=True)
class RejectedRecipient:
    index: int
    to: str
    code: str
    message: str
    field: str


@dataclass(slots=True)
class SubmitResult:
    batch_id: str
    status: str
    message_type: str
    currency: str
    price_per_segment_micros: int
    accepted: list[AcceptedMessage] = field(default_factory=list)
    rejected: list[RejectedRecipient] = field(default_factory=list)
    scheduled_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def segments_total(self) -> int:
        return sum(m.segments for m in self.accepted)

    @property
    def price_micros_total(self) -> int:
        return sum(m.price_micros for m in self.accepted)


def _check_text(text: str, settings: Settings, field_name: str) -> None:
    if not text or not text.strip():
        raise Unprocessable("text_empty", "The message text is empty.", field=field_name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates from "\ud83d" escapes in JSON
        raise Unprocessable(
            "invalid_text_encoding",
            f"The text contains an invalid character at position {exc.start} (a lone UTF-16 surrogate).",
            field=field_name,
        ) from exc
    if len(text) > settings.max_text_chars:
        raise Unprocessable(
            "text_too_long",
            f"The text has {len(text)} characters; the limit is {settings.max_text_chars}.",
            field=field_name,
        )


def prepare(
    request: SubmitRequest, settings: Settings, *, account_id: str, prices: PriceList | None = None
) -> tuple[list[dict[str, Any]], SubmitResult]:
    """Validate, render and price every recipient (pure, no I/O). Returns message rows and the result to report.

    `prices` is the account's resolved price list (billing.rates.load_price_list); without it the platform
    price from settings applies."""
    prices = prices or settings_price_list(settings)
    if request.message_type not in MESSAGE_TYPES:
        raise Unprocessable(
            "invalid_message_type", f"message_type must be one of {', '.join(MESSAGE_TYPES)}.", field="message_type"
        )
    if not request.recipients:
        raise Unprocessable("recipients_empty", "Give at least one recipient.", field=request.field_prefix)
    if len(request.recipients) > settings.max_batch_recipients:
        raise Unprocessable(
            "too_many_recipients",
            f"{len(request.recipients)} recipients; at most {settings.max_batch_recipients} per request "
            "(use a campaign for larger audiences).",
            field=request.field_prefix,
        )
    _check_text(request.text, settings, "text")
    template = parse_template(request.text)
    if template.variables:
        supplied: set[str] = set()
        for r in request.recipients:
            if r.vars:
                supplied.update(k for k, v in r.vars.items() if v is not None)
        unknown = [
            name
            for name in template.variables
            if name not in supplied and not any(isinstance(p, tuple) and p[0] == name and p[1] is not None for p in template.parts)
        ]
        if unknown:
            raise Unprocessable(
                "unknown_template_variable",
                f"The text uses {{{unknown[0]}}} but no recipient gives a value for it.",
                field="text",
                details={"variables": unknown},
            )

    region = request.default_region or settings.default_region
    now = utcnow()
    scheduled = request.scheduled_at if request.scheduled_at and request.scheduled_at > now else None
    validity = request.validity or timedelta(hours=settings.default_validity_hours)
    expires_at = (scheduled or now) + validity
    status = Status.SCHEDULED if scheduled else Status.ACCEPTED
    batch_id = ids.new_id("bat")
    seg_cache: dict[str, Segmentation] = {}
    price_cache: dict[str | None, int] = {}
    currency = prices.currency
    seen: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    result = SubmitResult(
        batch_id=batch_id,
        status=status.value,
        message_type=request.message_type,
        currency=currency,
        price_per_segment_micros=0,
        scheduled_at=scheduled,
        created_at=now,
    )
    message_ids = ids.new_ids("msg", len(request.recipients))
    prefix = request.field_prefix
    single = prefix == "to"
    for index, recipient in enumerate(request.recipients):
        to_field = "to" if single else f"{prefix}[{index}].to"
        raw_to = recipient.to if isinstance(recipient.to, str) else str(recipient.to)
        try:
            number = normalize(raw_to, region)
        except NumberProblem as problem:
            result.rejected.append(RejectedRecipient(index, raw_to, problem.code, problem.message, to_field))
            continue
        if number.e164 in seen:
            result.rejected.append(
                RejectedRecipient(
                    index,
                    raw_to,
                    "duplicate_phone_number",
                    f"{number.e164} is already recipient {seen[number.e164]} of this request; sent once.",
                    to_field,
                )
            )
            continue
        if template.is_plain:
            text = request.text
        else:
            try:
                text = render(template, recipient.vars or {})
            except MissingVariable as missing:
                var_field = "vars" if single else f"{prefix}[{index}].vars"
                result.rejected.append(
                    RejectedRecipient(
                        index,
                        raw_to,
                        "template_variable_missing",
                        f"No value for {{{missing.name}}}.",
                        f"{var_field}.{missing.name}",
                    )
                )
                continue
            if len(text) > settings.max_text_chars:
                result.rejected.append(
                    RejectedRecipient(
                        index,
                        raw_to,
                        "text_too_long",
                        f"The personalized text has {len(text)} characters; the limit is {settings.max_text_chars}.",
                        "vars" if single else f"{prefix}[{index}].vars",
                    )
                )
                continue
        seen[number.e164] = index
        seg = seg_cache.get(text)
        if seg is None:
            seg = segment(text)
            if len(seg_cache) < 4096:
                seg_cache[text] = seg
        per_segment = price_cache.get(number.region)
        if per_segment is None:
            price = prices.price(number.region, request.message_type)
            per_segment = price_cache[number.region] = price.per_segment_micros
            currency = price.currency
        message_id = message_ids[index]
        price_micros = per_segment * seg.segment_count
        rows.append(
            message_row(
                message_id, account_id=account_id, batch_id=batch_id, message_type=request.message_type,
                to=number.e164, country=number.region, sender=request.sender, text=text, seg=seg,
                price_micros=price_micros, currency=currency, status=status, client_ref=recipient.client_ref,
                scheduled_at=scheduled, expires_at=expires_at, now=now,
            )
        )
        result.accepted.append(
            AcceptedMessage(
                id=message_id,
                to=number.e164,
                encoding=seg.encoding,
                segments=seg.segment_count,
                price_micros=price_micros,
                text=None if template.is_plain else text,
                index=index,
            )
        )
        result.price_per_segment_micros = per_segment
    result.currency = currency
    return rows, result


def message_row(
    message_id: str, *, account_id: str, batch_id: str, message_type: str, to: str, country: str | None,
    sender: str | None, text: str, seg: Segmentation, price_micros: int, currency: str, status: Status,
    scheduled_at: datetime | None, expires_at: datetime, now: datetime, client_ref: str | None = None,
    campaign_id: str | None = None, time_zone: str | None = None,
) -> dict[str, Any]:
    """A new message row for a bulk insert (the batch submit path and campaign runs)."""
    return {
        "id": message_id, "account_id": account_id, "batch_id": batch_id, "campaign_id": campaign_id,
        "message_type": message_type, "priority": LANES[message_type], "to_number": to, "to_bidx": blind_index(to),
        "to_country": country, "time_zone": time_zone, "sender": sender, "body": text, "encoding": seg.encoding,
        "segment_count": seg.segment_count, "price_micros": price_micros, "currency": currency, "funding": None,
        "billing_state": None, "status": status.value, "error_code": None, "carrier_error_code": None,
        "channel_id": None, "carrier_message_id": None, "client_ref": client_ref, "attempts": 0,
        "scheduled_at": scheduled_at, "expires_at": expires_at, "created_at": now, "updated_at": now,
        "sent_at": None, "done_at": None,
    }


async def submit_batch(
    db: Database,
    settings: Settings,
    request: SubmitRequest,
    *,
    account_id: str,
    source: str,
    currency: str | None = None,
    actor: str = "system",
    after_insert: Any = None,
) -> SubmitResult:
    """Validate, price, hold funds and store a batch with its outbox rows in one transaction; returns ids at once.

    `after_insert(session, result)` runs inside the same transaction (the API stores its idempotency
    record there, so a retried request can never send twice). Not enough balance refuses the whole batch
    (`insufficient_balance`, HTTP 402): nothing is stored.
    """
    currency = currency or settings.currency
    async with db.read() as session:
        prices = await load_price_list(session, settings, account_id=account_id, currency=currency)
    rows, result = prepare(request, settings, account_id=account_id, prices=prices)
    if not rows:
        first = result.rejected[0]
        raise Unprocessable(
            first.code if len(result.rejected) == 1 else "no_valid_recipients",
            first.message if len(result.rejected) == 1 else "None of the recipients can be sent to.",
            field=first.field,
            details={"rejected": [_rejected_dict(r) for r in result.rejected]},
        )
    lane = LANES[request.message_type]
    available_at = result.scheduled_at or result.created_at
    assert available_at is not None
    chunk = settings.dispatch_chunk
    outbox = [
        {
            "topic": "dispatch",
            "lane": lane,
            "payload": {"ids": [r["id"] for r in rows[i : i + chunk]]},
            "available_at": available_at,
            "created_at": result.created_at,
        }
        for i in range(0, len(rows), chunk)
    ]
    async with db.write() as session:
        await charging.hold_batch(session, rows, account_id=account_id, currency=result.currency,
                                  batch_id=result.batch_id, actor=actor)
        session.add(
            Batch(
                id=result.batch_id,
                account_id=account_id,
                source=source,
                campaign_id=None,
                message_type=request.message_type,
                sender=request.sender,
                body_template=request.text,
                recipients_total=len(request.recipients),
                accepted_count=len(rows),
                rejected_count=len(result.rejected),
                segments_total=result.segments_total,
                price_micros_total=result.price_micros_total,
                currency=result.currency,
                rejected=[_rejected_dict(r) for r in result.rejected],
                client_ref=request.client_ref,
                scheduled_at=result.scheduled_at,
                created_at=result.created_at,
            )
        )
        await session.flush()
        conn = await session.connection()
        await conn.execute(insert(Message.__table__), rows)
        if result.scheduled_at is not None:
            await record_history(session, rows, result.created_at, db.dialect == "postgresql")
        await conn.execute(insert(OutboxItem.__table__), outbox)
        if after_insert is not None:
            await after_insert(session, result)
    return result


def _rejected_dict(r: RejectedRecipient) -> dict[str, Any]:
    return {"index": r.index, "to": r.to, "code": r.code, "message": r.message, "field": r.field}
