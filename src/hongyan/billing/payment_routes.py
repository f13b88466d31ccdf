"""Customer recharges through a payment provider: orders, the provider's callback, invoices (PDF)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["billing"])
