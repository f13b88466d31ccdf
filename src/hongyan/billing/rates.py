"""Rate cards: price per segment by destination country, message type and channel tier.

An account is priced by up to two layers, checked in order: its own override card (rate_card.account_id),
then its assigned card (billing_profile.rate_card_id) or the platform default card of its currency. In each
layer the newest version whose `effective_from` has passed applies, and within a version the most specific
row wins (country > message type > tier; `*` matches anything). With no card at all the platform price
from settings applies (HONGYAN_DEFAULT_PRICE_MICROS), so a fresh install can send at once.

`PriceList` is loaded once per request and is pure afterwards (messaging.submit.prepare calls it per
recipient without I/O).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.service import Actor, record
from hongyan.billing.models import BillingProfile, Rate, RateCard, RateCardVersion
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import InvalidRequest, NotFound

ANY = "*"
RATE_MESSAGE_TYPES = ("verification", "notification", "marketing", "mms")
TIERS = ("standard", "premium", "economy")


@dataclass(frozen=True, slots=True)
class Price:
    per_segment_micros: int
    currency: str
    source: str = "default"  # rate version id that priced it, or "default" (settings)


@dataclass(slots=True)
class PriceList:
    """Resolved prices for one account at one moment; `price()` is pure and cached per (country, type)."""

    currency: str
    tier: str
    default_micros: int
    layers: list[tuple[str, dict[tuple[str, str, str], int]]] = field(default_factory=list)  # (version id, rates)
    _cache: dict[tuple[str | None, str], Price] = field(default_factory=dict)

    def price(self, country: str | None, message_type: str) -> Price:
        key = (country, message_type)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = Price(self.default_micros, self.currency)
        c = country or ANY
        for version_id, rates in self.layers:
            for candidate in (
                (c, message_type, self.tier), (c, message_type, ANY), (c, ANY, self.tier), (c, ANY, ANY),
                (ANY, message_type, self.tier), (ANY, message_type, ANY), (ANY, ANY, self.tier), (ANY, ANY, ANY),
            ):
                micros = rates.get(candidate)
                if micros is not None:
                    found = Price(micros, self.currency, version_id)
                    break
            else:
                continue
            break
        self._cache[key] = found
        return found


def settings_price_list(settings: Settings, currency: str | None = None) -> PriceList:
    """The platform price only (no rate cards): for pure callers and tests."""
    return PriceList(currency=currency or settings.currency, tier="standard", default_micros=settings.default_price_micros)


async def get_profile(session: AsyncSession, account_id: str) -> BillingProfile:
    profile = await session.get(BillingProfile, account_id)
    if profile is None:
        profile = BillingProfile(
            account_id=account_id, rate_card_id=None, tier="standard", draw_order="packages_first",
            refund_undelivered=False, low_balance_threshold_micros=None,
            updated_at=utcnow(),
        )
    return profile


async def profile_for_update(session: AsyncSession, account_id: str) -> BillingProfile:
    """The account's billing profile as a row in the session (created with the defaults if missing)."""
    profile = await session.get(BillingProfile, account_id)
    if profile is None:
        profile = await get_profile(session, account_id)
        session.add(profile)
        await session.flush()
    return profile


async def load_price_list(
    session: AsyncSession, settings: Settings, *, account_id: str, currency: str, at: datetime | None = None
) -> PriceList:
    at = at or utcnow()
    from hongyan.billing.spend_limits import payer_of  # a sub-account is priced like the parent that pays

    payer = await payer_of(session, account_id)
    profile = await get_profile(session, payer)
    cards: list[str] = []
    for owner in dict.fromkeys((account_id, payer)):  # the sub-account's own override first, then the parent's
        override = await session.scalar(
            select(RateCard.id).where(RateCard.account_id == owner, RateCard.currency == currency).limit(1)
        )
        if override:
            cards.append(override)
    if profile.rate_card_id:
        cards.append(profile.rate_card_id)
    else:
        default = await session.scalar(
            select(RateCard.id).where(RateCard.is_default.is_(True), RateCard.currency == currency,
                                      RateCard.account_id.is_(None)).limit(1)
        )
        if default:
            cards.append(default)
    price_list = PriceList(currency=currency, tier=profile.tier, default_micros=settings.default_price_micros)
    for card_id in cards:
        version_id = await session.scalar(
            select(RateCardVersion.id)
            .where(RateCardVersion.rate_card_id == card_id, RateCardVersion.effective_from <= at)
            .order_by(RateCardVersion.effective_from.desc(), RateCardVersion.id.desc())
            .limit(1)
        )
        if version_id is None:
            continue
        rows = (await session.execute(
            select(Rate.country, Rate.message_type, Rate.tier, Rate.price_micros).where(Rate.version_id == version_id)
        )).all()
        price_list.layers.append((version_id, {(r.country, r.message_type, r.tier): r.price_micros for r in rows}))
    return price_list


@dataclass(frozen=True, slots=True)
class RateInput:
    country: str
    message_type: str
    tier: str
    price_micros: int


def validate_rates(raw: list[dict[str, object]], *, field_name: str = "rates") -> list[RateInput]:
    """Check every rate row; errors name the row (`rates[3].country`)."""
    if not raw:
        raise InvalidRequest("rates_empty", "Give at least one rate.", field=field_name)
    out: list[RateInput] = []
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(raw):
        where = f"{field_name}[{i}]"
        if not isinstance(row, dict):
            raise InvalidRequest("invalid_rate", "Each rate is an object.", field=where)
        country = str(row.get("country") or ANY).upper()
        if country != ANY and (len(country) != 2 or not country.isalpha()):
            raise InvalidRequest("invalid_country", f"'{country}' is not an ISO 3166 two-letter code or '*'.",
                                 field=f"{where}.country")
        message_type = str(row.get("message_type") or ANY)
        if message_type != ANY and message_type not in RATE_MESSAGE_TYPES:
            raise InvalidRequest("invalid_message_type", f"message_type must be '*' or one of {', '.join(RATE_MESSAGE_TYPES)}.",
                                 field=f"{where}.message_type")
        tier = str(row.get("tier") or ANY)
        if tier != ANY and tier not in TIERS:
            raise InvalidRequest("invalid_tier", f"tier must be '*' or one of {', '.join(TIERS)}.", field=f"{where}.tier")
        price = row.get("price_micros")
        if isinstance(price, bool) or not isinstance(price, int) or price < 0 or price > 10**12:
            raise InvalidRequest("invalid_price", "price_micros is a whole number of micro-units (0 … 10^12).",
                                 field=f"{where}.price_micros")
        key = (country, message_type, tier)
        if key in seen:
            raise InvalidRequest("duplicate_rate", f"The rate for {country}/{message_type}/{tier} is given twice.", field=where)
        seen.add(key)
        out.append(RateInput(country, message_type, tier, price))
    return out


async def create_rate_card(
    session: AsyncSession, *, name: str, currency: str, account_id: str | None = None, is_default: bool = False,
    audit_actor: Actor | None = None,
) -> RateCard:
    currency = currency.upper()
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidRequest("invalid_currency", "currency is an ISO 4217 code such as CNY or USD.", field="currency")
    if not name.strip():
        raise InvalidRequest("name_required", "Give the rate card a name.", field="name")
    if is_default and account_id:
        raise InvalidRequest("invalid_rate_card", "An account's override card cannot be the platform default.",
                             field="is_default")
    if is_default:
        for other in await session.scalars(select(RateCard).where(RateCard.is_default.is_(True), RateCard.currency == currency)):
            other.is_default = False
    card = RateCard(id=ids.new_id("rc"), name=name.strip()[:200], currency=currency, account_id=account_id,
                    is_default=is_default, created_at=utcnow())
    session.add(card)
    await session.flush()
    if audit_actor is not None:  # prices are the platform's: no account, staff see it
        await record(session, actor=audit_actor, action="rate_card.created", account_id=None, target_type="rate_card",
                     target_id=card.id, after={"name": card.name, "currency": card.currency,
                                               "account_id": card.account_id, "is_default": card.is_default})
    return card


async def add_version(
    session: AsyncSession, *, rate_card_id: str, rates: list[RateInput], effective_from: datetime | None,
    note: str | None, actor: str, audit_actor: Actor | None = None,
) -> RateCardVersion:
    """A new immutable version; past versions stay (prices of sent messages remain explainable)."""
    card = await session.get(RateCard, rate_card_id)
    if card is None:
        raise NotFound("rate_card_not_found", "No such rate card.", field="rate_card_id")
    now = utcnow()
    version = RateCardVersion(id=ids.new_id("rcv"), rate_card_id=card.id, effective_from=effective_from or now,
                              note=note, created_by=actor, created_at=now)
    session.add(version)
    await session.flush()
    session.add_all(Rate(version_id=version.id, country=r.country, message_type=r.message_type, tier=r.tier,
                         price_micros=r.price_micros) for r in rates)
    await session.flush()
    if audit_actor is not None:
        await record(session, actor=audit_actor, action="rate_card.version_added", account_id=None,
                     target_type="rate_card", target_id=card.id,
                     after={"version_id": version.id, "effective_from": version.effective_from, "note": note,
                            "rates": [f"{r.country}/{r.message_type}/{r.tier}={r.price_micros}" for r in rates]})
    return version


async def list_rate_cards(session: AsyncSession) -> list[RateCard]:
    return list(await session.scalars(select(RateCard).order_by(RateCard.created_at)))


async def card_versions(session: AsyncSession, rate_card_id: str) -> list[tuple[RateCardVersion, list[Rate]]]:
    versions = list(await session.scalars(
        select(RateCardVersion).where(RateCardVersion.rate_card_id == rate_card_id)
        .order_by(RateCardVersion.effective_from.desc())
    ))
    out = []
    for v in versions:
        rates = list(await session.scalars(select(Rate).where(Rate.version_id == v.id)
                                           .order_by(Rate.country, Rate.message_type, Rate.tier)))
        out.append((v, rates))
    return out
