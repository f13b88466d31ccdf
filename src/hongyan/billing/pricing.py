"""Prices per segment. Until rate cards (billing issue) exist: one platform-wide price from settings.

The rate-card service will replace `price_per_segment` keeping its signature: country, type, account.
"""

from __future__ import annotations

from dataclasses import dataclass

from hongyan.config import Settings


@dataclass(frozen=True, slots=True)
class Price:
    per_segment_micros: int
    currency: str


def price_per_segment(settings: Settings, *, account_id: str, country: str | None, message_type: str) -> Price:
    return Price(per_segment_micros=settings.default_price_micros, currency=settings.currency)
