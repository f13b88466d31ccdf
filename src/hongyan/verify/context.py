"""What a verification send needs to know about the sending account, kept in the process for a few seconds.

A code is the most frequent, most latency-sensitive send an account makes, and almost everything a send reads
about the account changes rarely: its region and verify settings (limits, allow-list), the compliance gate
(approved signatures, compliance settings, content filter, quiet window, KYC standing), its price list, who
pays (a sub-account's parent) and the payer's billing profile. Reading them costs about a dozen statements
per code; cached per (account, currency) for CONTEXT_TTL_S they cost nothing on a hit.

Staleness (docs/verify.md, "Cost and caching"): a change to any of the above reaches verification sends of
the *same process* at once when it is made through `update_settings` here (it calls `forget`), and otherwise
within CONTEXT_TTL_S — e.g. a revoked signature may still sign codes for up to that long, a new price applies
that much later. What moves money or decides a refusal is read live in the send transaction: the balance and
packages, per-number/IP/key counts, throttles. Whether an API key is a test key never changes after it is
created, so that is kept for the life of the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from hongyan.accounts.models import Account, ApiKey
from hongyan.billing.rates import get_profile, load_price_list
from hongyan.compliance.gate import load_gate
from hongyan.config import Settings
from hongyan.core.errors import NotFound
from hongyan.db.engine import Database
from hongyan.messaging.submit import Preloaded
from hongyan.verify import limits
from hongyan.verify.pumping_rules import account_countries

CONTEXT_TTL_S = 5.0  # how long a change to the cached account data may take to reach verification sends
CONTEXT_MAX = 10_000  # accounts per process (cleared when full: entries are cheap to rebuild)
TEST_KEYS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class SenderContext:
    account_id: str
    default_region: str | None
    limits: limits.EffectiveLimits
    countries: frozenset[str]  # the account's verify allow-list (empty: all the platform allows)
    preloaded: Preloaded  # for the submit: gate (without a template), prices, payer, profile


_contexts: dict[tuple[str, str], tuple[float, Settings, SenderContext]] = {}
_test_keys: dict[str, bool] = {}


def forget(account_id: str | None = None) -> None:
    """Drop the cached context of one account (its settings just changed here), or of every account."""
    if account_id is None:
        _contexts.clear()
        return
    for key in [k for k in _contexts if k[0] == account_id]:
        del _contexts[key]


async def sender_context(db: Database, settings: Settings, account_id: str) -> SenderContext:
    """The account's context, from the cache when fresh (and built with these same settings)."""
    key = (account_id, settings.currency)
    hit = _contexts.get(key)
    if hit is not None and hit[0] > time.monotonic() and hit[1] is settings:
        return hit[2]
    async with db.read() as session:
        account = await session.get(Account, account_id)
        if account is None:
            raise NotFound("account_not_found", "No such account.", field="account_id")
        gate = await load_gate(session, settings, account_id=account_id)
        prices = await load_price_list(session, settings, account_id=account_id, currency=settings.currency)
        payer = account.parent_id or account_id
        profile = await get_profile(session, payer)
    context = SenderContext(
        account_id=account_id,
        default_region=account.default_region,
        limits=limits.effective(settings, limits.VerifySettings.from_account(account)),
        countries=account_countries(account),
        preloaded=Preloaded(gate=gate, prices=prices, payer_id=payer, profile=profile),
    )
    if len(_contexts) >= CONTEXT_MAX:
        _contexts.clear()
    _contexts[key] = (time.monotonic() + CONTEXT_TTL_S, settings, context)
    return context


async def is_test_key(db: Database, key_id: str | None) -> bool:
    """Whether the API key is a test key (sandbox codes); fixed when the key is created, so kept."""
    if key_id is None:
        return False
    known = _test_keys.get(key_id)
    if known is not None:
        return known
    async with db.read() as session:
        value = bool(await session.scalar(select(ApiKey.is_test).where(ApiKey.id == key_id)))
    if len(_test_keys) >= TEST_KEYS_MAX:
        _test_keys.clear()
    _test_keys[key_id] = value
    return value
