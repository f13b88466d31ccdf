"""The connector interface every carrier channel implements (sandbox, SMPP, HTTP carriers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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
    account_id: str = ""
    country: str | None = None
    attempts: int = 1  # this is the n-th time the message goes out (1 = first)


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """The carrier's answer to one submit. `retry` = not taken, try again later (throttled, link down)."""

    message_id: str
    accepted: bool
    carrier_message_id: str | None = None
    error_code: str | None = None
    carrier_error_code: str | None = None
    retry: bool = False
    parts: tuple[str, ...] = ()  # carrier ids of every part, when receipts come per part (SMPP)


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """A final (or intermediate) status from the carrier. Either message_id or carrier_message_id is set."""

    status: Status
    channel_id: str
    message_id: str | None = None
    carrier_message_id: str | None = None
    carrier_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A mobile-originated message (a reply, an opt-out keyword, …) received on a channel."""

    channel_id: str
    from_number: str
    to_number: str
    body: str
    received_at: datetime
    carrier_message_id: str | None = None


ReceiptSink = Callable[[list[DeliveryReceipt]], Awaitable[None]]


class ReceiptsNotStored(Exception):
    """Raised by a receipt sink for receipts it could not store (shutting down, database unreachable): the
    connector answers the carrier with a temporary error so that they are sent again."""
InboundSink = Callable[[list[InboundSms]], Awaitable[None]]


class Connector(Protocol):
    channel_id: str
    kind: str

    @property
    def up(self) -> bool:
        """Can take messages now (an SMPP channel with no bound transmitter is down)."""
        ...

    async def start(self, on_receipts: ReceiptSink, on_inbound: InboundSink | None = None) -> None:
        """`on_receipts` / `on_inbound` return once what they were given is stored (or safely parked)."""
        ...

    def status(self) -> dict[str, Any]: ...

    async def submit(self, messages: list[OutboundSms]) -> list[SubmitOutcome]: ...

    async def resume(self, messages: list[tuple[str, str]]) -> None:
        """After a restart: messages this channel had accepted (status `sent`) still owed a receipt: (message_id, to)."""
        ...

    async def stop(self) -> None: ...
