"""Codes first: bulk lanes slow down while verification codes are slow to leave.

Lanes order what waits (docs/lanes.md), but a campaign running at full speed still takes the CPU, the
database and the carrier link that a code needs: on a small machine a 555 msg/s campaign took the codes'
p99 from about 17 ms to 80–93 ms. So every process that moves codes measures how long they take, and every
process that sends bulk traffic (lanes 1 and 2) holds it back while codes are slower than a target:

- `CodeSignal` (one per process, `Queue.signal`) keeps the latency of each stage a code passes in this
  process over the last second — `api`: the HTTP request's start → its dispatch item published; `dispatch`:
  the item handed to this process → submitted to the carrier and recorded — and what other processes
  announced. In one process (`memory://`) that is all there is; on RabbitMQ each process announces its
  stages' p90 four times a second on the fanout exchange `<prefix>.codes`, and processes that send bulk
  traffic listen to it (dispatch/rabbit.py).
- `BulkGate` (one per process that sends lanes 1–2) turns that into a submit rate for the bulk lanes of all
  its SMPP binds, adjusted twice a second: while the codes' latency (the slowest report of each stage, summed
  over the stages) is above the target, the cap falls to 70 % (starting from the rate
  the bulk lanes had), never below `HONGYAN_CODES_FIRST_MIN_TPS`; below 90 % of the target it grows by 15 %;
  once no code has moved for HOLD_S, or the cap is far above what bulk traffic uses, it is lifted. The target
  is `HONGYAN_CODES_FIRST_TARGET_MS`, or 1.5× the codes' latency while the process sent no bulk traffic when
  that is more: where codes alone already take longer, starving bulk traffic would not bring them under it. A bulk
  PDU waits for the gate after it has its window slot and its bind's TPS token, next to the wire, so a new cap
  takes effect at the next PDU and not after the chunks already handed to the connector; a code never waits
  for it, nor for the slot of a PDU that does (a window keeps a slot for lane 0: pacing.PriorityWindow).

What it costs: campaigns run slower while codes flow and are slow — on a machine with spare capacity the
latency stays under the target and nothing is capped. Codes that turn slow for another reason while bulk
traffic runs (a slow carrier, a slow database) slow bulk traffic down too, to the floor rate at worst;
`HONGYAN_CODES_FIRST_TARGET_MS=0` turns it off.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from contextvars import ContextVar
from typing import Any

from hongyan.channels.smpp.pacing import TokenBucket

STAGES = ("api", "dispatch")
WINDOW_S = 1.0  # a stage's latency: p90 of the samples of the last second
ANNOUNCE_S = 0.25  # RabbitMQ: how often a process announces its stages while codes move through it
HOLD_S = 3.0  # no code seen for this long: codes have stopped, the cap is lifted
STEP_S = 0.5  # the gate adjusts its cap this often
DECREASE = 0.7
INCREASE = 1.15
RAISE_BELOW = 0.9  # the cap grows while the latency is below this share of the target
BASELINE_FACTOR = 1.5  # codes may take this many times what they take with no bulk traffic before it is slowed
BASELINE_BELOW_TPS = 1.0  # bulk traffic below this rate counts as none (the codes' own latency is measured)
BASELINE_WEIGHT = 0.1  # how much one step's latency moves the baseline (an average over about 5 s)
BUILD_AHEAD_S = 10.0  # while codes are slow, campaign runs are built only this many seconds of sending ahead
LIFT_FACTOR = 4.0  # a cap this many times above the bulk rate it lets through binds nothing: lifted
UNCAPPED = 1e9

# time.perf_counter() when the HTTP request being handled started (set by ops.metrics.HttpMetrics): the relay
# that publishes a code's dispatch item right after the commit measures the `api` stage from it
REQUEST_STARTED: ContextVar[float | None] = ContextVar("hongyan_request_started", default=None)


def source_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def p90(values: list[float]) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(0.9 * len(v)))]


class CodeSignal:
    """How fast verification codes move: this process's stages, measured, and other processes', heard."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source or source_name()
        self._samples: dict[str, deque[tuple[float, float]]] = {stage: deque() for stage in STAGES}
        self._heard: dict[tuple[str, str], tuple[float, float]] = {}  # (source, stage) → (heard at, p90 ms)
        self.last_code = float("-inf")  # monotonic time a code was last seen moving (here or elsewhere)

    def observe(self, stage: str, seconds: float, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        samples = self._samples[stage]
        samples.append((now, seconds * 1000.0))
        while samples and samples[0][0] < now - WINDOW_S:
            samples.popleft()
        self.last_code = now

    def local(self, *, now: float | None = None) -> dict[str, float]:
        """p90 (ms) per stage over the last second, for the stages a code passed here in that time."""
        now = time.monotonic() if now is None else now
        out: dict[str, float] = {}
        for stage, samples in self._samples.items():
            while samples and samples[0][0] < now - WINDOW_S:
                samples.popleft()
            if samples:
                out[stage] = round(p90([ms for _t, ms in samples]), 2)
        return out

    def heard(self, source: str, stages: dict[str, Any], *, now: float | None = None) -> None:
        """Another process's announcement (its own come back on the exchange too: ignored)."""
        if source == self.source:
            return
        now = time.monotonic() if now is None else now
        for stage, ms in stages.items():
            if stage in STAGES and isinstance(ms, int | float):
                self._heard[(source, stage)] = (now, float(ms))
                self.last_code = now

    def latency_ms(self, *, now: float | None = None) -> float | None:
        """The codes' latency now: per stage the slowest fresh report (this process's or another's), summed
        over the stages a code passes; None when no code moved in the last second."""
        now = time.monotonic() if now is None else now
        per_stage = dict(self.local(now=now))
        for (source, stage), (at, ms) in list(self._heard.items()):
            if now - at > WINDOW_S:
                if now - at > HOLD_S:
                    del self._heard[(source, stage)]
                continue
            per_stage[stage] = max(per_stage.get(stage, 0.0), ms)
        return round(sum(per_stage.values()), 2) if per_stage else None

    def flowing(self, *, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last_code <= HOLD_S


class BulkGate:
    """The submit rate of this process's bulk lanes (1–2) while codes are slow; None = not capped."""

    def __init__(self, signal: CodeSignal, *, target_ms: float, min_tps: float) -> None:
        self.signal = signal
        self.target_ms = target_ms
        self.min_tps = max(1.0, min_tps)
        self.cap: float | None = None
        self._bucket = TokenBucket(UNCAPPED)
        self._passed = 0  # bulk PDUs let through since the last step
        self._built = 0  # campaign messages built (stored) since the last step
        self._step_at = time.monotonic()
        self.rate = 0.0  # bulk PDUs per second over the last step
        self.latency: float | None = None  # the codes' latency at the last step
        self.baseline: float | None = None  # the codes' latency while this process sent no bulk traffic
        self.stats = {"capped_steps": 0, "lowered": 0, "raised": 0, "lifted": 0}

    async def admit(self, lane: int) -> None:
        """A bulk PDU (lane ≥ 1) that holds its window slot and TPS token: wait for the gate's token."""
        self._passed += 1
        if self.cap is None and not self._bucket.has_waiters:
            return
        await self._bucket.acquire(lane)

    def note_built(self, n: int) -> None:
        """The campaign builder stored `n` messages: bulk work, though nothing was sent."""
        self._built += n

    def _set(self, cap: float | None) -> None:
        self.cap = cap
        self._bucket.set_rate(UNCAPPED if cap is None else cap)

    def step(self, *, now: float | None = None) -> float | None:
        """Adjust the cap (every STEP_S, from the runtime); returns it."""
        now = time.monotonic() if now is None else now
        elapsed = max(1e-3, now - self._step_at)
        self.rate = self._passed / elapsed
        idle = self._passed / elapsed < BASELINE_BELOW_TPS and not self._built
        self._passed, self._built, self._step_at = 0, 0, now
        self.latency = latency = self.signal.latency_ms(now=now)
        if not self.signal.flowing(now=now):
            if self.cap is not None:
                self.stats["lifted"] += 1
                self._set(None)
            return None
        if latency is not None and self.cap is None and idle:
            self.baseline = latency if self.baseline is None else (
                (1 - BASELINE_WEIGHT) * self.baseline + BASELINE_WEIGHT * latency)
        target = self.target()
        if latency is not None and latency > target:
            # from what bulk traffic actually uses (a cap far above it would take many steps to bind)
            base = self.rate if self.cap is None else min(self.cap, max(self.rate, self.min_tps))
            if self.cap is not None or self.rate > self.min_tps:  # bulk traffic that could be slowed
                self.stats["lowered"] += 1
                self._set(max(self.min_tps, base * DECREASE))
        elif self.cap is not None and (latency is None or latency < target * RAISE_BELOW):
            raised = self.cap * INCREASE
            if raised > LIFT_FACTOR * max(self.rate, self.min_tps):
                self.stats["lifted"] += 1
                self._set(None)
            else:
                self.stats["raised"] += 1
                self._set(raised)
        if self.cap is not None:
            self.stats["capped_steps"] += 1
        return self.cap

    def build_ahead(self, configured: int) -> int:
        """How far ahead of its release a campaign run may be built (HONGYAN_CAMPAIGN_BUILD_AHEAD): while codes
        are slower than the target, only BUILD_AHEAD_S of sending at the cap (or at the floor), because the
        builder's 2,000-row inserts compete with codes as much as the sends do — also before the first
        send, when the cap has nothing to measure yet."""
        slow = self.cap is not None or (self.latency is not None and self.latency > self.target())
        if not slow:
            return configured
        return max(1, min(configured, int((self.cap or self.min_tps) * BUILD_AHEAD_S)))

    def target(self) -> float:
        """The latency the cap aims at: HONGYAN_CODES_FIRST_TARGET_MS, or 1.5× what codes take with no bulk
        traffic when that is more (a machine where codes alone take longer gains nothing from starving bulk)."""
        if self.baseline is None:
            return self.target_ms
        return max(self.target_ms, BASELINE_FACTOR * self.baseline)

    def status(self) -> dict[str, Any]:
        return {"target_ms": round(self.target(), 1), "configured_target_ms": self.target_ms,
                "idle_latency_ms": round(self.baseline, 1) if self.baseline is not None else None,
                "min_tps": self.min_tps,
                "cap_tps": round(self.cap, 1) if self.cap is not None else None,
                "bulk_rate_tps": round(self.rate, 1), "codes_latency_ms": self.latency, **self.stats}

    def close(self) -> None:
        self._bucket.close()
