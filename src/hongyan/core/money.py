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


class AmountError(ValueError):
    """Text that is not an exact positive (or signed) amount with at most 6 decimal places."""


def parse_amount(text: object, *, signed: bool = False) -> int:
    """`"0.038"` → 38000 micro-units, exactly (Decimal, never float); raises AmountError."""
    from decimal import InvalidOperation

    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise AmountError("give the amount as a decimal string such as \"100.00\"")
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise AmountError(f"'{text}' is not a number") from exc
    if not value.is_finite():
        raise AmountError(f"'{text}' is not a number")
    micros = value * MICROS
    if micros != micros.to_integral_value():
        raise AmountError("at most 6 decimal places (micro-units)")
    amount = int(micros)
    if not signed and amount <= 0:
        raise AmountError("the amount must be greater than zero")
    if abs(amount) > 10**16:
        raise AmountError("the amount is too large")
    return amount
