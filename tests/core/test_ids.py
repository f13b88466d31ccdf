from __future__ import annotations

import time

from hongyan.core import ids


def test_prefix_and_shape() -> None:
    i = ids.new_id("msg")
    assert ids.looks_like(i, "msg") and len(i) == 30
    assert not ids.looks_like(i, "bat")
    assert not ids.looks_like("msg_short", "msg")


def test_ids_sort_by_time_and_batch_is_increasing() -> None:
    batch = ids.new_ids("msg", 1000)
    assert batch == sorted(batch) and len(set(batch)) == 1000
    earlier = ids.new_id("msg", at_ms=int(time.time() * 1000) - 5000)
    assert earlier < batch[0]


def test_time_roundtrip() -> None:
    at = 1_780_000_000_123
    assert ids.id_time_ms(ids.new_id("evt", at_ms=at)) == at


def test_money_format() -> None:
    from hongyan.core.money import format_micros

    assert format_micros(40_000, "CNY") == "0.04"
    assert format_micros(38_000, "CNY") == "0.038"
    assert format_micros(7_900, "USD") == "0.0079"
    assert format_micros(1_000_000, "CNY") == "1.00"
    assert format_micros(0, "CNY") == "0.00"
