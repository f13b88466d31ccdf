"""The sandbox carrier: the embedded default. Simulates a carrier with a configurable delay and outcome
mix, deterministic per message id, plus magic test numbers that always end the same way.

Magic numbers (any country; only the last five digits count; see docs/sandbox.md):
  …00001 delivered · …00002 undelivered · …00003 rejected at submit · …00004 rejected in receipt
  …00005 expired in receipt · …00006 no receipt ever (expires at the validity period's end)
  …00007 submit fails (carrier system error → failed) · …00008 throttled once, then delivered
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterable
from typing import Any

from hongyan.channels.base import (
    DeliveryReceipt,
    InboundSink,
    InboundSms,
    OutboundSms,
    ReceiptSink,
    ReceiptsNotStored,
    SubmitOutcome,
)
from hongyan.messaging.states import Status

_MAGIC: dict[str, str] = {
    "00001": "delivered",
    "00002": "undelivered",
    "00003": "reject_submit",
    "00004": "rejected",
    "00005": "expired",
    "00006": "silent",
    "00007": "fail_submit",
    "00008": "throttle_once",
}
_RECEIPT_STATUS = {
    "delivered": (Status.DELIVERED, "000"),
    "undelivered": (Status.UNDELIVERED, "001"),
    "rejected": (Status.REJECTED, "002"),
    "expired": (Status.EXPIRED, "003"),
}
MAGIC_SUFFIXES = dict(_MAGIC)


def parse_outcomes(spec: str) -> list[tuple[str, int]]:
    """`delivered:95,undelivered:3,rejected:2` → weighted buckets."""
    out: list[tuple[str, int]] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in _RECEIPT_STATUS and name != "silent":
            raise ValueError(f"unknown sandbox outcome {name!r}")
        out.append((name, int(weight or 1)))
    if not out or sum(w for _, w in out) <= 0:
        raise ValueError("sandbox outcome mix is empty")
    return out


class SandboxConnector:
    kind = "sandbox"

    def __init__(self, channel_id: str, *, delay_ms: int = 200, outcomes: str = "delivered:100") -> None:
        self.channel_id = channel_id
        self.delay = delay_ms / 1000
        self.mix = parse_outcomes(outcomes)
        self._total = sum(w for _, w in self.mix)
        self._sink: ReceiptSink | None = None
        self._pending: list[DeliveryReceipt] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._throttled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbound: InboundSink | None = None
        self.counters = {"submitted": 0, "acked": 0, "rejected": 0, "receipts": 0}

    def outcome_for(self, message_id: str, to: str) -> str:
        magic = _MAGIC.get(to[-5:])
        if magic is not None:
            return magic
        bucket = zlib.crc32(message_id.encode()) % self._total  # stable across restarts, unlike hash()
        for name, weight in self.mix:
            if bucket < weight:
                return name
            bucket -= weight
        return self.mix[-1][0]

    up = True  # always reachable

    async def start(self, on_receipts: ReceiptSink, on_inbound: InboundSink | None = None) -> None:
        self._sink = on_receipts
        self._inbound = on_inbound

    def status(self) -> dict[str, Any]:
        return {"up": True, "binds_up": 0, "binds": [], "counters": dict(self.counters)}

    async def inject_inbound(self, sms: InboundSms) -> None:
        """A simulated reply from a handset (sandbox only; tests and the console's sandbox tools)."""
        if self._inbound is not None:
            await self._inbound([sms])

    async def submit(self, messages: list[OutboundSms]) -> list[SubmitOutcome]:
        results: list[SubmitOutcome] = []
        due: list[DeliveryReceipt] = []
        self.counters["submitted"] += len(messages)
        for m in messages:
            outcome = self.outcome_for(m.message_id, m.to)
            if outcome == "reject_submit":
                results.append(
                    SubmitOutcome(m.message_id, False, error_code="carrier_rejected", carrier_error_code="0x0000000B")
                )
                continue
            if outcome == "fail_submit":
                results.append(
                    SubmitOutcome(m.message_id, False, error_code="carrier_system_error", carrier_error_code="0x00000008")
                )
                continue
            if outcome == "throttle_once" and m.message_id not in self._throttled:
                self._throttled.add(m.message_id)
                results.append(SubmitOutcome(m.message_id, False, carrier_error_code="0x00000058", retry=True))
                continue
            self.counters["acked"] += 1
            results.append(SubmitOutcome(m.message_id, True, carrier_message_id="sbx-" + m.message_id[4:]))
            receipt = self._receipt(m.message_id, outcome)
            if receipt is not None:
                due.append(receipt)
        if due:
            self._schedule(due)
        return results

    def _receipt(self, message_id: str, outcome: str) -> DeliveryReceipt | None:
        if outcome in ("silent",):
            return None
        status, err = _RECEIPT_STATUS.get(outcome, _RECEIPT_STATUS["delivered"])
        return DeliveryReceipt(status=status, channel_id=self.channel_id, message_id=message_id, carrier_error_code=err)

    def _schedule(self, receipts: Iterable[DeliveryReceipt]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver_later(list(receipts)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_later(self, receipts: list[DeliveryReceipt]) -> None:
        await asyncio.sleep(self.delay)  # the simulated network/carrier delay, not a test wait
        if self._sink is not None:
            self.counters["receipts"] += len(receipts)
            try:
                await self._sink(receipts)
            except ReceiptsNotStored:  # stopping: owed receipts are sent again at the next start (resume)
                self.counters["receipts"] -= len(receipts)

    async def resume(self, messages: list[tuple[str, str]]) -> None:
        """Like a real SMSC that keeps receipts for a reconnecting client: owed receipts are sent again."""
        receipts = []
        for mid, to in messages:
            r = self._receipt(mid, self.outcome_for(mid, to))
            if r is not None:
                receipts.append(r)
        if receipts:
            self._schedule(receipts)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
