"""The connector interface every carrier channel implements (sandbox, SMPP, HTTP carriers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hongyan.messaging.states import Status


@dataclass(frozen=True, slots=True)
class OutboundSms:
    message_id: str
    to: str
    sender: str | None
    body: str
    encoding: str
    segment_count: int
    message_type: str
    priority: int


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """The carrier's answer to one submit. `retry` = not taken, try again later (throttled, link down)."""

    message_id: str
    accepted: bool
    carrier_message_id: str | None = None
    error_code: str | None = None
    carrier_error_code: str | None = None
    retry: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """A final (or intermediate) status from the carrier. Either message_id or carrier_message_id is set."""

    status: Status
    channel_id: str
    message_id: str | None = None
    carrier_message_id: str | None = None
    carrier_error_code: str | None = None


ReceiptSink = Callable[[list[DeliveryReceipt]], Awaitable[None]]


class Connector(Protocol):
    channel_id: str
    kind: str

    async def start(self, on_receipts: ReceiptSink) -> None: ...

    async def submit(self, messages: list[OutboundSms]) -> list[SubmitOutcome]: ...

    async def resume(self, messages: list[tuple[str, str]]) -> None:
        """After a restart: messages this channel had accepted (status `sent`) still owed a receipt: (message_id, to)."""
        ...

    async def stop(self) -> None: ...
