"""SMS packages and subscriptions: the product catalog, purchases, the account's packages."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["billing"])
