"""Request rate limits per API key and per client IP (token buckets), and the HMAC nonce memory.

A bucket holds `burst` tokens (2 s worth of the rate) and refills continuously; a request takes one.
An empty bucket answers 429 `rate_limited` with Retry-After (whole seconds until a token is back).

Two backends, chosen by HONGYAN_REDIS_URL: in this process's memory (the embedded default: with N API
processes a client gets up to N× the rate), or Redis, shared by every API process (an atomic Lua script
per request, using the Redis server's clock). If Redis stops answering, the process falls back to its own
memory and logs it: limits stay on, per process, rather than refusing all traffic.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from hongyan.core.errors import HongyanError

BURST_SECONDS = 2.0
NONCE_TTL_S = 600  # twice the signature window: a nonce is remembered as long as its signature is valid
log = logging.getLogger("hongyan.api.rate_limit")


class RateLimited(HongyanError):
    status_code = 429


def rate_limited(rate: float, wait: float, what: str) -> RateLimited:
    retry = max(1, math.ceil(wait))
    return RateLimited(
        "rate_limited",
        f"Too many requests for this {what} (limit {rate:g} per second); retry after {retry} s.",
        field=None,
        headers={"Retry-After": str(retry)},
        details={"limit_per_s": rate, "retry_after_s": retry, "scope": what},
    )


class Limiter(Protocol):
    async def check(self, key: str, rate: float, *, what: str) -> None: ...

    async def add_nonce(self, key_id: str, nonce: str) -> bool: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Buckets and nonces in this process's memory (bounded: the oldest are dropped first)."""

    def __init__(self, max_buckets: int = 100_000, max_nonces: int = 200_000) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max = max_buckets
        self._nonces: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max_nonces = max_nonces

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

    async def check(self, key: str, rate: float, *, what: str) -> None:
        """Raise RateLimited (with Retry-After) if `key` is over `rate` requests per second; 0 = unlimited."""
        if rate <= 0:
            return
        wait = self.take(key, rate)
        if wait > 0:
            raise rate_limited(rate, wait, what)

    def remember_nonce(self, key_id: str, nonce: str, *, now: float | None = None) -> bool:
        """False if this key already used this nonce within NONCE_TTL_S."""
        now = time.monotonic() if now is None else now
        while self._nonces and (next(iter(self._nonces.values())) < now - NONCE_TTL_S
                                or len(self._nonces) > self._max_nonces):
            self._nonces.popitem(last=False)
        if (key_id, nonce) in self._nonces:
            return False
        self._nonces[(key_id, nonce)] = now
        return True

    async def add_nonce(self, key_id: str, nonce: str) -> bool:
        return self.remember_nonce(key_id, nonce)

    async def close(self) -> None:
        return None


# KEYS[1] bucket; ARGV rate, burst, ttl ms. The server's clock, so API machines need not agree on time.
_TOKEN_BUCKET = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""


class RedisRateLimiter:
    """Buckets and nonces in Redis, shared by every API process; memory if Redis fails."""

    def __init__(self, url: str, *, prefix: str = "hongyan:") -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script: Any = self._redis.register_script(_TOKEN_BUCKET)
        self._prefix = prefix
        self.fallback = RateLimiter()
        self._last_warning = 0.0

    def _degraded(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning("Redis rate limiter unavailable (%s); limiting per process until it answers", exc)

    async def check(self, key: str, rate: float, *, what: str) -> None:
        if rate <= 0:
            return
        burst = max(1.0, rate * BURST_SECONDS)
        ttl_ms = int(max(burst / rate, 1.0) * 2000) + 1000  # gone once the bucket would be full again
        try:
            wait = float(await self._script(keys=[f"{self._prefix}rl:{key}"], args=[rate, burst, ttl_ms]))
        except Exception as exc:  # connection refused, timeout, script error: keep limiting, locally
            self._degraded(exc)
            await self.fallback.check(key, rate, what=what)
            return
        if wait > 0:
            raise rate_limited(rate, wait, what)

    async def add_nonce(self, key_id: str, nonce: str) -> bool:
        try:
            return bool(await self._redis.set(f"{self._prefix}nonce:{key_id}:{nonce}", b"1", nx=True, ex=NONCE_TTL_S))
        except Exception as exc:
            self._degraded(exc)
            return self.fallback.remember_nonce(key_id, nonce)

    async def close(self) -> None:
        await self._redis.aclose()


def limiter_for(settings: Any) -> Limiter:
    return RedisRateLimiter(settings.redis_url) if settings.redis_url else RateLimiter()
