"""API shapes for messages and batches (separate from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.api.body import UtcDatetime

MessageType = Literal["verification", "notification", "marketing"]
Vars = dict[StrictStr, StrictStr | int | float]
Params = dict[StrictStr, StrictStr | int | float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageCreate(_Strict):
    """One message to one recipient."""

    to: StrictStr = Field(description="Recipient; E.164 (`+8613800138000`) or national with the default region.")
    text: StrictStr | None = Field(
        None, description="Message text; may contain `{variables}` filled from `vars`. Required unless `template_id`."
    )
    vars: Vars | None = Field(None, description="Values for `{variables}` in the text.")
    template_id: StrictStr | None = Field(
        None, description="Send an approved template (`tpl_…`) instead of `text`; its type becomes the message type."
    )
    params: Params | None = Field(None, description="Values for the template's `${variables}`, checked by type.")
    signature: Annotated[str, Field(max_length=42)] | None = Field(
        None, description="An approved signature's name (`公司名` or `【公司名】`); default: the account's default."
    )
    message_type: MessageType = "notification"
    sender: Annotated[str, Field(max_length=32)] | None = Field(None, description="Sender ID, if the route allows one.")
    scheduled_at: UtcDatetime | None = Field(None, description="Send at this time (with time zone); omit for now.")
    validity_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None
    client_ref: Annotated[str, Field(max_length=128)] | None = Field(None, description="Your own reference.")


class RecipientIn(_Strict):
    to: StrictStr
    vars: Vars | None = None
    params: Params | None = None
    client_ref: Annotated[str, Field(max_length=128)] | None = None


class BatchCreate(_Strict):
    """Up to 10,000 recipients: one text for all, or per-recipient `vars`; or an approved template with
    per-recipient `params`."""

    text: StrictStr | None = Field(None, description="Required unless `template_id`.")
    recipients: list[StrictStr | RecipientIn] = Field(
        description="Numbers as strings, or objects `{to, vars, params, client_ref}`; at most 10,000."
    )
    template_id: StrictStr | None = None
    params: Params | None = Field(None, description="Template parameters shared by all recipients.")
    signature: Annotated[str, Field(max_length=42)] | None = None
    message_type: MessageType = "notification"
    sender: Annotated[str, Field(max_length=32)] | None = None
    scheduled_at: UtcDatetime | None = None
    validity_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None
    client_ref: Annotated[str, Field(max_length=128)] | None = None


class QuoteRequest(_Strict):
    """Count characters, encoding, segments and price without sending (dry run).

    With `recipients` (the batch body's shape) the quote prices every recipient, says what would pay
    (packages, cash) and whether the balance covers it — the same code path as the send, without the hold."""

    text: StrictStr
    to: StrictStr | None = None
    vars: Vars | None = None
    recipients: list[StrictStr | RecipientIn] | None = Field(None, description="As in POST /v1/batches.")
    message_type: MessageType = "notification"


class EventPublic(BaseModel):
    status: str
    at: datetime
    error_code: str | None = None
    carrier_error_code: str | None = None


# -- responses (documented in OpenAPI; schemathesis checks every answer against them) ------------------
class _Out(BaseModel):
    """Response shapes: every listed field is always present (null when empty); new fields may be added."""

    model_config = ConfigDict(extra="allow")


Money = Annotated[str, Field(description="Decimal amount in the currency, e.g. \"0.04\".")]
Time = Annotated[str | None, Field(description="ISO 8601, UTC, e.g. 2026-11-25T08:00:00.123456Z.")]


class MessageAccepted(_Out):
    id: str
    batch_id: str
    to: str
    status: str
    text: str = Field(description="The text as it will be sent (signature and opt-out wording included).")
    message_type: MessageType
    encoding: str
    segments: int
    price: Money
    price_micros: int
    currency: str
    scheduled_at: Time
    created_at: Time


class AcceptedRecipient(_Out):
    index: int
    id: str
    to: str
    status: str = Field(description="accepted, scheduled (a time or quiet hours), or held for content review.")
    encoding: str
    segments: int
    price: Money
    text: str | None = Field(
        None, description="The final text when it differs from the request's (variables, signature, opt-out text)."
    )


class RejectedRecipientOut(_Out):
    index: int
    to: str | None
    code: str
    message: str
    field: str | None


class BatchAccepted(_Out):
    id: str
    status: str
    message_type: MessageType
    accepted: int
    rejected_count: int
    segments: int
    price_per_segment: Money
    price_total: Money
    price_total_micros: int
    currency: str
    scheduled_at: Time
    created_at: Time
    messages: list[AcceptedRecipient]
    rejected: list[RejectedRecipientOut]


class StatusEvent(_Out):
    status: str
    at: Time
    error_code: str | None
    carrier_error_code: str | None


class MessagePublic(_Out):
    id: str
    batch_id: str | None
    to: str
    country: str | None
    sender: str | None
    text: str
    message_type: MessageType
    status: str
    encoding: str
    segments: int
    price: Money
    price_micros: int
    currency: str
    error_code: str | None
    carrier_error_code: str | None
    client_ref: str | None
    created_at: Time
    scheduled_at: Time
    sent_at: Time
    done_at: Time
    expires_at: Time
    events: list[StatusEvent] | None = Field(None, description="Status history (single-message answers only).")


class MessagesPublic(_Out):
    data: list[MessagePublic]
    next_cursor: str | None
    has_more: bool


class BatchPublic(_Out):
    id: str
    source: str
    message_type: MessageType
    text: str
    sender: str | None
    recipients_total: int
    accepted: int
    rejected_count: int
    rejected: list[RejectedRecipientOut]
    segments: int
    price_total: Money
    price_total_micros: int
    currency: str
    counts: dict[str, int]
    completed: bool
    client_ref: str | None
    scheduled_at: Time
    created_at: Time


class BatchCanceled(_Out):
    canceled: int
    batch: BatchPublic
