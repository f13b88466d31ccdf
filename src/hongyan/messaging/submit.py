"""The one submit path: every way in (API, console, CLI, campaigns, compat APIs, SMPP server) calls
`submit_batch`. It validates numbers and content, prices, and stores messages + outbox in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.billing import charging, ledger
from hongyan.billing.rates import PriceList, load_price_list, settings_price_list
from hongyan.compliance import holds
from hongyan.compliance import templates as template_params
from hongyan.compliance.gate import Gate, TextRefused, load_gate, screen
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import HongyanError, Unprocessable
from hongyan.db.engine import Database, is_transient
from hongyan.db.gathered import Gathered
from hongyan.dispatch import outbox
from hongyan.dispatch.models import OutboxItem, outbox_rows
from hongyan.messaging.encoding import Segmentation, segment
from hongyan.messaging.models import Batch, Message
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.messaging.personalize import MissingVariable, parse_template, render
from hongyan.messaging.states import Status
from hongyan.messaging.transitions import announce_queued, record_history

MESSAGE_TYPES = ("verification", "notification", "marketing")
OPT_OUT_CONFIRMATION = "opt_out_reply"  # the batch source of opt-out confirmations (compliance.replies)
LANES = {"verification": 0, "notification": 1, "marketing": 2}
WRITE_ATTEMPTS = 3  # tries of the submit's write transaction on a deadlock or serialization failure
log = logging.getLogger(__name__)


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
class Preloaded:
    """What the caller already read about the sending account (the verify service's short-lived cache,
    verify.context), so a submit does not read it again: the gate (text rules), the price list, who pays
    and the payer's billing profile."""

    gate: Gate
    prices: PriceList
    payer_id: str
    profile: Any  # billing.models.BillingProfile


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    id: str
    to: str
    encoding: str
    segments: int
    price_micros: int
    text: str | None  # set when the final text differs from the request's (personalized, signed, opt-out text)
    index: int
    status: str = "accepted"  # accepted | scheduled (a time, or marketing deferred by quiet hours) | held


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
    held: dict[str, Any] = field(default_factory=dict)  # message id → content-filter verdict (status held)
    text_template: str | None = None  # the template body when sending by template_id
    text: str = ""  # the request's text (AcceptedMessage.text is set where a message's final text differs)
    signature_ids: set[str] = field(default_factory=set)  # approved signatures the messages carry

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
    request: SubmitRequest, settings: Settings, *, account_id: str, prices: PriceList | None = None,
    gate: Gate | None = None,
) -> tuple[list[dict[str, Any]], SubmitResult]:
    """Validate, render and price every recipient (pure, no I/O). Returns message rows and the result to report.

    `prices` is the account's resolved price list (billing.rates.load_price_list); without it the platform
    price from settings applies. `gate` (compliance.gate.load_gate) applies the text rules: template,
    signature, opt-out text, content filter, quiet hours; the per-recipient rules run after (`screen`)."""
    prices = prices or settings_price_list(settings)
    template_ref = gate.template if gate is not None else None
    if template_ref is not None:
        request = replace(request, text=template_ref.body, message_type=template_ref.message_type)
    elif request.template_id:
        raise Unprocessable("template_not_approved", f"{request.template_id} is not an approved template.",
                            field="template_id")
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
    signature = request.signature
    if gate is not None:
        gate.check_request(request.message_type, has_template=template_ref is not None)
        if template_ref is not None and not signature and template_ref.signature_id:
            signature = next((s.name for s in gate.signatures.values() if s.id == template_ref.signature_id), None)
        # the text as written (placeholders included) must pass: signature, opt-out wording, content rules
        gate.compose(request.text, request.message_type, signature)
    template = parse_template(request.text) if template_ref is None else parse_template("")
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
        text=request.text,
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
        if template_ref is not None:
            params = recipient.params or {}
            problems = template_params.validate_params(template_ref.variables, params)
            if problems:
                p = problems[0]
                base = "params" if single else f"{prefix}[{index}].params"
                result.rejected.append(RejectedRecipient(index, raw_to, p.code, p.message, f"{base}.{p.name}"))
                continue
            text = template_params.render(template_ref.body, params)
        elif template.is_plain:
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
        composed = None
        if gate is not None:
            try:
                composed = gate.compose(text, request.message_type, signature)
            except TextRefused as refused:
                var_field = to_field if template.is_plain and template_ref is None else (
                    ("params" if template_ref is not None else "vars") if single
                    else f"{prefix}[{index}].{'params' if template_ref is not None else 'vars'}")
                result.rejected.append(RejectedRecipient(index, raw_to, refused.code, refused.message, var_field))
                continue
            text = composed.text
            if composed.signature_id:
                result.signature_ids.add(composed.signature_id)
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
        row_status, row_scheduled, row_expires, zones = status, scheduled, expires_at, None
        if gate is not None:
            release, zones = gate.release_at(number.e164, request.message_type, scheduled or now)
            if release > (scheduled or now):  # marketing inside the recipient's quiet window: deferred
                row_status, row_scheduled, row_expires = Status.SCHEDULED, release, release + validity
            if composed is not None and composed.verdict is not None:
                row_status = Status.HELD
                result.held[message_id] = composed.verdict
        rows.append(
            message_row(
                message_id, account_id=account_id, batch_id=batch_id, message_type=request.message_type,
                to=number.e164, country=number.region, sender=request.sender, text=text, seg=seg,
                price_micros=price_micros, currency=currency, status=row_status, client_ref=recipient.client_ref,
                scheduled_at=row_scheduled, expires_at=row_expires, now=now, time_zone=zones,
            )
        )
        result.accepted.append(
            AcceptedMessage(
                id=message_id,
                to=number.e164,
                encoding=seg.encoding,
                segments=seg.segment_count,
                price_micros=price_micros,
                text=None if text == request.text else text,
                index=index,
                status=row_status.value,
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
    before_hold: Any = None,
    preloaded: Preloaded | None = None,
    publisher: Any = None,
) -> SubmitResult:
    """Validate, price, hold funds and store a batch with its outbox rows in one transaction; returns ids at once.

    `after_insert(session, result)` runs inside the same transaction (the API stores its idempotency
    record there, so a retried request can never send twice). Not enough balance refuses the whole batch
    (`insufficient_balance`, HTTP 402): nothing is stored. `before_hold(session, result)` runs first in that
    transaction, before the payer's balance row is locked (checks that need the transaction: the verify
    service's per-number limits). The write transaction is retried whole on a deadlock or serialization
    failure (`database_busy`, 503, when that keeps happening). `preloaded`: what the caller already knows
    about the account (gate, prices, payer); read here otherwise. The payer's balance is posted last (see
    charging.begin_hold), so its row lock is held from there to the commit only.

    `publisher`: this process's outbox relay (dispatch.outbox.Relay), when the caller has one (the API).
    Messages that may leave now are then stored `queued`, their outbox rows already claimed, and published
    right after the commit, as the campaign pump does: no relay round between the API call and the queue
    (the lane-0 latency: docs/lanes.md). A publish that fails un-claims the rows for the relay.
    """
    currency = currency or settings.currency
    async with db.read() as session:  # no connection is taken when nothing needs reading (PostgreSQL)
        if preloaded is not None and preloaded.prices.currency == currency:
            prices, gate = preloaded.prices, preloaded.gate
        else:
            prices = await load_price_list(session, settings, account_id=account_id, currency=currency)
            gate = None
        rows, result = await prepare_checked(session, settings, request, account_id=account_id, prices=prices,
                                             source=source, gate=gate)
    if not rows:
        first = result.rejected[0]
        raise Unprocessable(
            first.code if len(result.rejected) == 1 else "no_valid_recipients",
            first.message if len(result.rejected) == 1 else "None of the recipients can be sent to.",
            field=first.field,
            details={"rejected": [_rejected_dict(r) for r in result.rejected]},
        )
    assert result.created_at is not None
    lane = LANES[result.message_type]
    due = _queue_due(rows, result.created_at) if publisher is not None else []
    outbox_items = _outbox_items(rows, settings.dispatch_chunk, lane, result.created_at, account_id)
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            plan = await _store(db, request, rows, result, outbox_items, account_id=account_id, source=source,
                                actor=actor, before_hold=before_hold, after_insert=after_insert, preloaded=preloaded,
                                claim=(lane, due, settings.dispatch_chunk))
            if plan:
                try:
                    await publisher.publish(plan)
                except Exception:  # committed: the relay publishes the un-claimed rows on its next round
                    log.warning("publishing batch %s after its commit failed; left to the outbox relay",
                                result.batch_id, exc_info=True)
            return result
        except DBAPIError as exc:
            refused = ledger.refused_at_commit(exc)  # the hold posted by the COMMIT met the floor
            if refused is not None:
                raise charging.insufficient_balance(currency=result.currency, needed=refused.needed,
                                                    available=refused.available) from exc
            if not is_transient(exc):
                raise
            if attempt == WRITE_ATTEMPTS:
                log.warning("submit of %s gave up after %d transient database errors", result.batch_id, attempt,
                            exc_info=True)
                raise database_busy() from exc
            log.info("submit of %s: transient database error (%s), attempt %d", result.batch_id,
                     getattr(exc.orig, "sqlstate", "?"), attempt)
            await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)  # let the winner commit first
    raise AssertionError("unreachable")


def database_busy() -> HongyanError:
    return HongyanError("database_busy", "The database is too busy to take this request right now; nothing was "
                        "stored or charged. Retry shortly.", status_code=503, headers={"Retry-After": "1"})


def _queue_due(rows: list[dict[str, Any]], now: datetime) -> list[str]:
    """Publish-after-commit (`submit_batch(publisher=…)`): rows that may leave now become `queued` (their
    history says so, as if the relay had moved them); their outbox rows are stored claimed
    (`outbox.add_claimed`, as the campaign pump does), so only a crash between the commit and the publish
    leaves them to the relay. Returns their ids."""
    due = [r for r in rows
           if r["status"] == Status.ACCEPTED.value and (r["scheduled_at"] is None or r["scheduled_at"] <= now)]
    for r in due:
        r["status"] = Status.QUEUED.value
    return [r["id"] for r in due]


async def _store(
    db: Database, request: SubmitRequest, rows: list[dict[str, Any]], result: SubmitResult,
    outbox_items: list[dict[str, Any]], *, account_id: str, source: str, actor: str, before_hold: Any,
    after_insert: Any, preloaded: Preloaded | None, claim: tuple[int, list[str], int],
) -> list[tuple[int, int, dict[str, Any]]]:
    """The write transaction of a submit (re-run whole on a transient error: nothing of a failed try stays).
    Order: the caller's checks, funding decided (rows marked), rows inserted, then the cash posting. The
    inserts (batch, messages, history, outbox, the caller's `after_insert` rows, a deferred posting) are
    gathered and sent last, on PostgreSQL as one statement for a few messages (db.gathered): `after_insert`
    must not read the new rows (or calls `Gathered.of(session).flush(session)` first).
    `claim`: (lane, ids, chunk) of the messages stored `queued` (`_queue_due`); returns their claimed
    outbox items to publish after the commit: (outbox id, lane, payload)."""
    assert result.created_at is not None
    async with db.write() as session:
        gathered = Gathered.begin(session)  # the rows below go in one statement at the end (db.gathered)
        if before_hold is not None:
            await before_hold(session, result)
        hold = await charging.begin_hold(
            session, rows, account_id=account_id, currency=result.currency, batch_id=result.batch_id, actor=actor,
            payer_id=preloaded.payer_id if preloaded is not None else None,
            profile=preloaded.profile if preloaded is not None else None,
        )
        gathered.add(Batch.__table__, [
            dict(
                id=result.batch_id,
                account_id=account_id,
                source=source,
                campaign_id=None,
                message_type=result.message_type,
                sender=request.sender,
                body_template=result.text_template or request.text,
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
        ])
        gathered.add(Message.__table__, rows)
        waiting = [r for r in rows if r["status"] != Status.ACCEPTED.value]  # scheduled or held: on record
        if waiting:
            await record_history(session, waiting, result.created_at, db.dialect == "postgresql")
            await announce_queued(session, [r for r in waiting if r["status"] == Status.QUEUED.value],
                                  result.created_at)
        if result.held:
            await holds.record_holds(session, [r for r in rows if r["id"] in result.held], result.held,
                                     now=result.created_at)
        gathered.add(OutboxItem.__table__, outbox_items)
        lane, due, chunk = claim
        claimed = outbox.claimed_rows(lane, due, chunk=chunk, now=result.created_at, account_id=account_id)
        gathered.add(OutboxItem.__table__, claimed, returning="id")
        if after_insert is not None:
            await after_insert(session, result)
        if isinstance(hold, charging.PendingHold):
            await hold.post(session)
        outbox_ids = await gathered.flush(session)
    return outbox.claimed_plan(lane, outbox_ids, claimed)


async def prepare_checked(
    session: AsyncSession, settings: Settings, request: SubmitRequest, *, account_id: str, prices: PriceList,
    source: str | None = None, gate: Gate | None = None,
) -> tuple[list[dict[str, Any]], SubmitResult]:
    """`prepare` with every compliance rule: the text rules inside, then the per-recipient refusals
    (suppression, consent, frequency cap, unverified limits) moved from the rows to `result.rejected`.
    The send path, the API preview and the console preview all call this. `gate`: already loaded for this
    request (its template included), else loaded here."""
    if gate is None:
        gate = await load_gate(session, settings, account_id=account_id, template_id=request.template_id)
    rows, result = prepare(request, settings, account_id=account_id, prices=prices, gate=gate)
    assert result.created_at is not None
    refusals = await screen(session, gate, rows, message_type=result.message_type, now=result.created_at,
                            signature_ids=result.signature_ids, confirmation=source == OPT_OUT_CONFIRMATION)
    if refusals:
        single = request.field_prefix == "to"
        by_id = {m.id: m for m in result.accepted}
        for message_id, refusal in refusals.items():
            m = by_id[message_id]
            raw = request.recipients[m.index].to
            result.rejected.append(RejectedRecipient(m.index, raw if isinstance(raw, str) else str(raw), refusal.code,
                                                     refusal.message,
                                                     "to" if single else f"{request.field_prefix}[{m.index}].to"))
            result.held.pop(message_id, None)
        result.rejected.sort(key=lambda r: r.index)
        rows = [r for r in rows if r["id"] not in refusals]
        result.accepted = [m for m in result.accepted if m.id not in refusals]
    if template_ref := gate.template:
        result.text_template = template_ref.body
    return rows, result


def _outbox_items(rows: list[dict[str, Any]], chunk: int, lane: int, now: datetime,
                  account_id: str) -> list[dict[str, Any]]:
    """Dispatch items in chunks of ids, one group per time the messages may leave: now, the batch's
    scheduled time, or each quiet-hours release time; held messages get none until a reviewer decides, and
    those already `queued` (publish after commit) get theirs claimed (`outbox.add_claimed`)."""
    by_time: dict[datetime, list[str]] = {}
    for r in rows:
        if r["status"] in (Status.HELD.value, Status.QUEUED.value):
            continue
        by_time.setdefault(r["scheduled_at"] or now, []).append(r["id"])
    return [row for at, ids_ in sorted(by_time.items())
            for row in outbox_rows(lane, ids_, chunk=chunk, available_at=at, now=now, account_id=account_id)]


def _rejected_dict(r: RejectedRecipient) -> dict[str, Any]:
    return {"index": r.index, "to": r.to, "code": r.code, "message": r.message, "field": r.field}
