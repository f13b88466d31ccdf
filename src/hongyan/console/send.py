"""Send page: the form, its live preview (counter, first personalized messages, bad recipients), the
confirm step and the submit. Everything is computed by `messaging.encoding.segment` and
`messaging.submit.prepare`/`submit_batch`, the same code as the API, so the console can never promise
what the API would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from hongyan.api.deps import publisher
from hongyan.billing.charging import Plan, plan_funding
from hongyan.billing.rates import PriceList, load_price_list
from hongyan.compliance.models import MessageTemplate
from hongyan.compliance.signatures import SignatureRef, approved_signatures
from hongyan.compliance.template_variables import VARIABLE_TYPES
from hongyan.config import Settings
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.send_form import (
    FormProblem,
    ParsedRecipients,
    SendForm,
    form_field_for,
    parse_recipients,
    position_label,
    submit_request,
)
from hongyan.console.session import Flash
from hongyan.console.templating import encoding_name, money
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.messaging.encoding import segment
from hongyan.messaging.numbers import normalize
from hongyan.messaging.personalize import parse_template
from hongyan.messaging.submit import MESSAGE_TYPES, SubmitResult, prepare_checked, submit_batch

router = APIRouter(prefix="/console", include_in_schema=False)

PREVIEW_SAMPLES = 5  # personalized messages shown before sending
PREVIEW_REJECTED = 100  # bad recipients listed (the rest are counted)


@dataclass(frozen=True, slots=True)
class SendChoices:
    """What the form offers: the account's approved signatures (default first) and approved templates."""

    signatures: list[SignatureRef] = field(default_factory=list)
    templates: list[MessageTemplate] = field(default_factory=list)

    @property
    def default_signature(self) -> str:
        """The account's default signature ("" without one: then a send carries none unless one is chosen)."""
        return next((s.name for s in self.signatures if s.is_default), "")

    def template(self, template_id: str) -> MessageTemplate | None:
        return next((t for t in self.templates if t.id == template_id), None)


async def send_choices(console: Console) -> SendChoices:
    async with console.db.read() as session:
        refs = await approved_signatures(session, console.account_id)
        rows = list(await session.scalars(select(MessageTemplate).where(
            MessageTemplate.account_id == console.account_id, MessageTemplate.status == "approved")
            .order_by(MessageTemplate.name)))
    return SendChoices(sorted(refs.values(), key=lambda r: (not r.is_default, r.name)), rows)


def counted_text(form: SendForm, choices: SendChoices) -> str:
    """The text the counter measures: the template filled with what is typed so far, and the signature
    【…】 the gate will add (it is part of the message and of its segments)."""
    text = form.text
    if form.by_template:
        chosen = choices.template(form.template_id)
        text = chosen.body if chosen else ""
        for name, value in form.params:
            text = text.replace("${" + name + "}", value)
    signature = form.signature or choices.default_signature
    stripped = text.strip()
    if text and signature and not (stripped.startswith("【") or stripped.endswith("】")):
        text = f"【{signature}】{text}"
    return text


@dataclass(slots=True)
class SendPreview:
    form: SendForm
    counter: dict[str, Any]
    variables: tuple[str, ...]
    errors: FieldErrors = field(default_factory=FieldErrors)
    parsed: ParsedRecipients | None = None
    result: SubmitResult | None = None
    funding: Plan | None = None  # what would pay (packages, cash) and the balance available, as at submit
    samples: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Nothing stands in the way of the confirm step."""
        return not self.errors and self.result is not None and bool(self.result.accepted)

    def totals(self) -> dict[str, Any]:
        if self.result is None:
            return {}
        return {
            "messages": len(self.result.accepted),
            "rejected": len(self.result.rejected),
            "segments": self.result.segments_total,
            "price": money(self.result.price_micros_total, self.result.currency),
            "recipients": len(self.parsed.recipients) if self.parsed else 0,
            "package_units": 0,  # nothing to fund when every recipient is refused
            **self._funding_totals(),
        }

    def _funding_totals(self) -> dict[str, Any]:
        if self.funding is None or self.result is None:
            return {}
        cash = self.funding.allocation.cash_micros
        available = self.funding.available_micros
        return {
            "cash": money(cash, self.result.currency),
            "package_units": sum(self.funding.allocation.units.values()),
            "available": money(max(available, 0), self.result.currency),
            "sufficient": cash <= available,
            "shortfall": money(max(cash - available, 0), self.result.currency),
        }


def _settings(console: Console) -> Settings:
    settings: Settings = console.request.app.state.settings
    return settings


def _form(form: Any) -> SendForm:
    names = ("recipients", "table", "recipient_mode", "text", "message_type", "signature", "content_mode",
             "template_id")
    fields = {name: form_text(form, name) for name in names}
    fields.update({k: form_text(form, k) for k in form if k.startswith("param.")})
    return SendForm.from_fields(fields)


async def _price_list(console: Console) -> PriceList:
    assert console.user is not None
    async with console.db.read() as session:
        return await load_price_list(session, _settings(console), account_id=console.account_id,
                                     currency=console.user.currency)


def _counter(console: Console, form: SendForm, prices: PriceList, choices: SendChoices) -> dict[str, Any]:
    """Characters, encoding, segments and price per recipient of the text as typed (placeholders included),
    with the signature; by template: the template with the values typed so far."""
    assert console.user is not None
    text = counted_text(form, choices)
    if not text:
        return {
            "characters": 0,
            "encoding": "GSM-7",
            "segments": 0,
            "units": 0,
            "unit_limit": 160,
            "units_remaining": 160,
            "price": money(0, console.user.currency),
        }
    seg = segment(text)
    price = prices.price(console.user.default_region, form.message_type)
    return {
        "characters": seg.characters,
        "encoding": encoding_name(seg.encoding),
        "segments": seg.segment_count,
        "units": seg.units,
        "unit_limit": seg.unit_limit,
        "units_remaining": seg.units_remaining,
        "price": money(price.per_segment_micros * seg.segment_count, price.currency),
    }


async def build_preview(console: Console, form: SendForm, *, live: bool,
                        choices: SendChoices | None = None) -> SendPreview:
    """What would be sent. `live` (while typing): say nothing about fields not filled in yet."""
    assert console.user is not None
    t = console.t
    prices = await _price_list(console)
    choices = choices or await send_choices(console)
    preview = SendPreview(
        form=form, counter=_counter(console, form, prices, choices),
        variables=() if form.by_template else parse_template(form.text).variables,
    )
    try:
        preview.parsed = parse_recipients(form)
    except FormProblem as problem:
        preview.errors[problem.field] = (t(problem.key, **problem.params), None)
        return preview
    has_content = bool(form.template_id) if form.by_template else bool(form.text.strip())
    if live and (not preview.parsed.recipients or not has_content):
        return preview
    if form.by_template and not form.template_id:
        preview.errors["template_id"] = (t("send.template.choose"), None)
        return preview
    request = submit_request(form, preview.parsed, default_region=console.user.default_region)
    try:
        async with console.db.read() as session:  # the same checks as the send: gate, suppression, limits
            _rows, result = await prepare_checked(session, _settings(console), request,
                                                  account_id=console.account_id, prices=prices)
    except HongyanError as exc:
        console.field_error(preview.errors, form_field_for(exc.field, form), exc)
        return preview
    preview.result = result
    if _rows:
        async with console.db.read() as session:
            preview.funding = await plan_funding(session, _rows, account_id=console.account_id,
                                                 currency=console.user.currency, lock=False, at=utcnow())
    for message in result.accepted[:PREVIEW_SAMPLES]:
        preview.samples.append(
            {
                "to": message.to,
                "text": message.text if message.text is not None else form.text,
                "encoding": encoding_name(message.encoding),
                "segments": message.segments,
                "price": money(message.price_micros, result.currency),
            }
        )
    first_index = {message.to: message.index for message in result.accepted}
    for rejected in result.rejected[:PREVIEW_REJECTED]:
        kind, position = position_label(rejected.index, preview.parsed)
        title, detail = t.rejection(rejected.code, rejected.message, rejected.field)
        if rejected.code == "duplicate_phone_number":
            original = first_index.get(normalize(rejected.to, request.default_region or "").e164)
            if original is not None:
                first_kind, first_position = position_label(original, preview.parsed)
                detail = t(
                    "errors.duplicate_of", position=t(f"send.preview.position_{first_kind}", n=first_position)
                )
        preview.rejected.append(
            {
                "kind": kind,
                "position": position,
                "to": rejected.to,
                "code": rejected.code,
                "title": title,
                "detail": detail,
            }
        )
    if not result.accepted:
        preview.errors[form.recipients_field] = (t("errors.no_valid_recipients"), None)
    return preview


def _render_form(console: Console, preview: SendPreview, choices: SendChoices, *, status: int = 200) -> Any:
    return console.render(
        "send.html",
        status=status,
        active="send",
        form=preview.form,
        preview=preview,
        errors=preview.errors,
        message_types=MESSAGE_TYPES,
        choices=choices,
        variable_types=VARIABLE_TYPES,
    )


@router.get("/send")
async def send_page(console: SignedIn) -> Any:
    choices = await send_choices(console)
    form = SendForm(signature=choices.default_signature)
    preview = SendPreview(form=form, counter=_counter(console, form, await _price_list(console), choices),
                          variables=())
    return _render_form(console, preview, choices)


@router.post("/api/preview")
async def send_preview(console: SignedIn, form: CheckedForm) -> Any:
    """The live counter and preview, as JSON with an HTML fragment (console.js calls it while typing)."""
    preview = await build_preview(console, _form(form), live=True)
    preview_html = console.setup.templates.get_template("_send_preview.html").render(
        console.page_context(preview=preview)
    )
    return console.json(
        {
            "counter": preview.counter,
            "variables": list(preview.variables),
            "errors": {
                name: {"title": title, "detail": detail} for name, (title, detail) in preview.errors.items()
            },
            "totals": preview.totals(),
            "preview_html": preview_html,
        }
    )


@router.post("/send")
async def send_submit(console: SignedIn, form: CheckedForm) -> Any:
    """review → the confirm page; confirm → submit and go to the history; edit → back to the form."""
    send_form = _form(form)
    action = form_text(form, "action", "review")
    choices = await send_choices(console)
    preview = await build_preview(console, send_form, live=False, choices=choices)
    if action == "edit" or not preview.ready:
        return _render_form(console, preview, choices, status=200 if action == "edit" else 422)
    if action != "confirm":
        return console.render("send_confirm.html", active="send", form=send_form, preview=preview)
    assert preview.parsed is not None and console.user is not None
    request = submit_request(send_form, preview.parsed, default_region=console.user.default_region)
    try:
        result = await submit_batch(
            console.db, _settings(console), request, account_id=console.account_id, source="console",
            currency=console.user.currency, actor=f"user:{console.user.user_id}",
            publisher=publisher(console.request.app),
        )
    except HongyanError as exc:
        console.field_error(preview.errors, form_field_for(exc.field, send_form), exc)
        return _render_form(console, preview, choices, status=422)
    flash = Flash(
        kind="success",
        key="flash.batch_submitted_skipped" if result.rejected else "flash.batch_submitted",
        params={
            "batch": result.batch_id,
            "messages": len(result.accepted),
            "rejected": len(result.rejected),
            "segments": result.segments_total,
            "price": money(result.price_micros_total, result.currency),
        },
        link=f"/console/batches/{result.batch_id}",
    )
    return console.redirect(f"/console/messages?batch={result.batch_id}", flash=flash)
