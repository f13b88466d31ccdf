"""Money as integer micro-units (1/1,000,000 of the currency unit) with a currency code; never floats."""

from __future__ import annotations

from decimal import Decimal

MICROS = 1_000_000


def format_micros(amount: int, currency: str) -> str:
    """`40000, 'CNY'` → `'0.04'`: the shortest exact decimal (sub-cent prices keep their digits)."""
    value = Decimal(amount) / MICROS
    text = format(value.normalize(), "f")
    if "." not in text:
        text += ".00"
    elif len(text.split(".")[1]) == 1:
        text += "0"
    return text
