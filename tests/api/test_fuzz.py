"""Random and mutated bodies never produce a 5xx: every answer is JSON with an error code or a success."""

from __future__ import annotations

import random
from typing import Any

import httpx
import orjson
import pytest

VALID = {
    "/v1/messages": {"to": "13800000001", "text": "尊敬的{name},您好", "vars": {"name": "张三"}},
    "/v1/batches": {"text": "hi {name|客户}", "recipients": ["13800000001", {"to": "13900000001", "vars": {"name": "x"}}]},
    "/v1/messages/quote": {"text": "hello", "to": "13800000001"},
}
WEIRD: list[Any] = [None, True, 0, -1, 2**62, 1.5, "", " ", "\u0000", "😀" * 3, "{", "{{}}", [], {}, [None], {"a": 1},
                    "x" * 2000, "+", "00", "1" * 40, "2030-13-45T99:00:00Z", float("1e308")]


def _mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    if isinstance(value, dict):
        out = dict(value)
        for key in list(out):
            roll = rng.random()
            if roll < 0.2:
                del out[key]
            elif roll < 0.6:
                out[key] = _mutate(out[key], rng, depth + 1)
        if rng.random() < 0.2:
            out[rng.choice(["extra", "to", "text", "vars", "scheduled_at", "validity_minutes"])] = rng.choice(WEIRD)
        return out
    if isinstance(value, list):
        return [_mutate(v, rng, depth + 1) for v in value] + ([rng.choice(WEIRD)] if rng.random() < 0.3 else [])
    return rng.choice(WEIRD) if rng.random() < 0.7 else value


@pytest.mark.parametrize("path", sorted(VALID))
async def test_mutated_bodies_never_500(client: httpx.AsyncClient, path: str) -> None:
    rng = random.Random(path)
    for _ in range(150):
        body = _mutate(VALID[path], rng)
        raw = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if rng.random() < 0.9 else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        r = await client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            err = r.json()["error"]
            assert err["code"] and err["message"], r.text
