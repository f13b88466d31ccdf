"""API shapes for messages and batches (separate from the ORM models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hongyan.api.body import UtcDatetime

MessageType = Literal["verification", "notification", "marketing"]
Vars = dict[StrictStr, StrictStr | int | float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageCreate(_Strict):
    """One message to one recipient."""

    to: StrictStr = Field(description="Recipient; E.164 (`+8613800138000`) or national with the default region.")
    text: StrictStr = Field(description="Message text; may contain `{variables}` filled from `vars`.")
    vars: Vars | None = Field(None, description="Values for `{variables}` in the text.")
    message_type: MessageType = "notification"
    sender: Annotated[str, Field(max_length=32)] | None = Field(None, description="Sender ID, if the route allows one.")
    scheduled_at: UtcDatetime | None = Field(None, description="Send at this time (with time zone); omit for now.")
    validity_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None
    client_ref: Annotated[str, Field(max_length=128)] | None = Field(None, description="Your own reference.")


class RecipientIn(_Strict):
    to: StrictStr
    vars: Vars | None = None
    client_ref: Annotated[str, Field(max_length=128)] | None = None


class BatchCreate(_Strict):
    """Up to 10,000 recipients: one text for all, or per-recipient `vars`."""

    text: StrictStr
    recipients: list[StrictStr | RecipientIn] = Field(
        description="Numbers as strings, or objects `{to, vars, client_ref}`; at most 10,000."
    )
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
