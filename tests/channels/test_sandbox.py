"""The sandbox carrier's outcome rules (pure parts; the end-to-end statuses are in tests/api)."""

from __future__ import annotations

from collections import Counter

import pytest

from hongyan.channels.sandbox import SandboxConnector, parse_outcomes
from hongyan.core import ids


def test_outcome_mix_is_deterministic_and_close_to_weights() -> None:
    sandbox = SandboxConnector("chn_x", outcomes="delivered:95,undelivered:3,rejected:2")
    message_ids = [ids.new_id("msg") for _ in range(20_000)]
    first = [sandbox.outcome_for(m, "+8613900012345") for m in message_ids]
    again = [SandboxConnector("chn_x", outcomes="delivered:95,undelivered:3,rejected:2").outcome_for(m, "+8613900012345")
             for m in message_ids]
    assert first == again  # a restart or a retry decides the same
    share = Counter(first)
    assert 0.93 < share["delivered"] / 20_000 < 0.97
    assert 0.02 < share["undelivered"] / 20_000 < 0.04
    assert 0.01 < share["rejected"] / 20_000 < 0.03


@pytest.mark.parametrize(
    ("to", "outcome"),
    [("+8613800000001", "delivered"), ("+8613800000002", "undelivered"), ("+447911100003", "reject_submit"),
     ("+14155500004", "rejected"), ("+8613800000005", "expired"), ("+8613800000006", "silent"),
     ("+8613800000007", "fail_submit"), ("+8613800000008", "throttle_once")],
)
def test_magic_numbers_override_the_mix(to: str, outcome: str) -> None:
    assert SandboxConnector("chn_x", outcomes="undelivered:1").outcome_for(ids.new_id("msg"), to) == outcome


def test_bad_outcome_spec() -> None:
    with pytest.raises(ValueError, match="unknown sandbox outcome"):
        parse_outcomes("delivered:90,lost:10")
    with pytest.raises(ValueError, match="empty"):
        parse_outcomes("delivered:0")
