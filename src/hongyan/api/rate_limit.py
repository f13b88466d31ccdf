"""Request rate limits per API key and per client IP: token buckets in this process's memory.

A bucket holds `burst` tokens (2 s worth of the rate) and refills continuously; a request takes one.
An empty bucket answers 429 `rate_limited` with Retry-After (whole seconds until a token is back).
The buckets are per API process: with N processes behind a balancer a client gets up to N× the rate
(documented in docs/security.md; a shared limiter in Redis would remove that, the embedded default has none).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from hongyan.core.errors import HongyanError

BURST_SECONDS = 2.0


class RateLimited(HongyanError):
    status_code = 429


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, max_buckets: int = 100_000) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max = max_buckets

    def take(self, key: str, rate: float, *, now: float | None = None) -> float:
        """Take a token; returns 0 when allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        burst = max(1.0, rate * BURST_SECONDS)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def check(self, key: str, rate: float, *, what: str) -> None:
        """Raise RateLimited (with Retry-After) if `key` is over `rate` requests per second; 0 = unlimited."""
        if rate <= 0:
            return
        wait = self.take(key, rate)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            raise RateLimited(
                "rate_limited",
                f"Too many requests for this {what} (limit {rate:g} per second); retry after {retry} s.",
                field=None,
                headers={"Retry-After": str(retry)},
                details={"limit_per_s": rate, "retry_after_s": retry, "scope": what},
            )
