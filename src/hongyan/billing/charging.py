"""Charging: hold at submit, settle / release / refund when a message reaches its final status.

Hold (one entry per batch, in the submit transaction): every message is assigned what pays for it —
a package (its segments in units, oldest-expiring eligible package first) or cash (its price) — by the
account's draw order; the sums move from package/cash to the held balances. Not enough → the whole batch
is refused with `insufficient_balance` and the amount missing; nothing is stored.

Final status (in the transition transaction, messaging.transitions): per message
- delivered, or undelivered/expired after the carrier took it → settle (held → revenue / consumed units),
  unless the account refunds undelivered messages → refund (held → cash / package);
- rejected, failed, canceled, expired before sending → release (held → cash / package).
`message.billing_state` records which, so each message is settled exactly once (the status change that
sets it is a conditional UPDATE) and `hongyan billing verify` can compare held balances with messages.

Sub-accounts (billing.spend_limits): the payer of a sub-account's messages is its parent. Every ledger
movement (hold, settle, release, refund) uses the parent's accounts, the parent's draw order, packages,
credit limit and refund policy; the sub-account's own spend limit is checked in the hold, under the
parent's cash lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.billing import ledger
from hongyan.billing.models import BillingProfile, LedgerAccount, Package
from hongyan.billing.rates import get_profile
from hongyan.billing.spend_limits import check_spend_limit, payer_of
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.core.money import format_micros
from hongyan.db.engine import Database

CASH = "cash"
HOLD_ATTEMPTS = 3
HELD, SETTLED, RELEASED, REFUNDED = "held", "settled", "released", "refunded"


def insufficient_balance(*, currency: str, needed: int, available: int) -> HongyanError:
    shortfall = needed - available
    return HongyanError(
        "insufficient_balance",
        f"This send costs {format_micros(needed, currency)} {currency} but only "
        f"{format_micros(max(available, 0), currency)} {currency} is available; recharge at least "
        f"{format_micros(shortfall, currency)} {currency} or send to fewer recipients.",
        status_code=402,
        details={
            "currency": currency, "needed": format_micros(needed, currency), "needed_micros": needed,
            "available": format_micros(max(available, 0), currency), "available_micros": max(available, 0),
            "shortfall": format_micros(shortfall, currency), "shortfall_micros": shortfall,
        },
    )


@dataclass(slots=True)
class EligiblePackage:
    id: str
    remaining: int
    countries: list[str]
    message_types: list[str]

    def covers(self, country: str | None, message_type: str) -> bool:
        return (not self.countries or country in self.countries) and (
            not self.message_types or message_type in self.message_types
        )


@dataclass(slots=True)
class Allocation:
    """What a batch draws: cash micros and units per package; `funding[i]` for message i."""

    cash_micros: int = 0
    units: dict[str, int] = field(default_factory=dict)
    funding: list[str] = field(default_factory=list)


def allocate(
    messages: Sequence[tuple[str | None, str, int, int]],
    packages: Sequence[EligiblePackage],
    *,
    draw_order: str,
    cash_available: int,
) -> Allocation:
    """Pure: assign each (country, message_type, segments, price_micros) to a package or cash.

    packages_first: eligible packages (given oldest-expiring first) pay while they have units; cash_first:
    cash pays while it lasts, packages take the rest. A message is never split between sources."""
    if not packages:  # the common case: everything in cash, no per-message decisions
        return Allocation(cash_micros=sum(m[3] for m in messages), funding=[CASH] * len(messages))
    remaining = {p.id: p.remaining for p in packages}
    out = Allocation()
    cash_left = cash_available
    for country, message_type, segments, price in messages:
        source = CASH
        if draw_order != "cash_first" or price > cash_left:
            for p in packages:
                if remaining[p.id] >= segments and p.covers(country, message_type):
                    source = p.id
                    break
        if source == CASH:
            out.cash_micros += price
            cash_left -= price
        else:
            remaining[source] -= segments
            out.units[source] = out.units.get(source, 0) + segments
        out.funding.append(source)
    return out


_PKG_LA = LedgerAccount.__table__
_ELIGIBLE_PACKAGES = (  # built once with bound parameters (every send asks)
    select(Package.id, _PKG_LA.c.balance, Package.countries, Package.message_types)
    .join(_PKG_LA, _PKG_LA.c.id == Package.id.concat(":package:" + ledger.UNITS))
    .where(Package.account_id == bindparam("p_account"), Package.status == "active",
           Package.starts_at <= bindparam("p_at", type_=Package.starts_at.type),
           Package.expires_at > bindparam("p_at", type_=Package.starts_at.type), _PKG_LA.c.balance > 0)
    .order_by(Package.expires_at, Package.id)
)


async def eligible_packages(session: AsyncSession, account_id: str, *, at: datetime) -> list[EligiblePackage]:
    rows = await session.execute(_ELIGIBLE_PACKAGES, {"p_account": account_id, "p_at": at})
    return [EligiblePackage(r.id, int(r.balance), list(r.countries or []), list(r.message_types or [])) for r in rows]


@dataclass(frozen=True, slots=True)
class Hold:
    entry_id: str | None
    cash_micros: int
    units: dict[str, int]
    cash_balance_after: int | None


@dataclass(frozen=True, slots=True)
class Plan:
    allocation: Allocation
    available_micros: int  # cash the account may still spend (balance + credit limit)
    profile: BillingProfile


async def plan_funding(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, account_id: str, currency: str, lock: bool, at: datetime
) -> Plan:
    """Decide what pays for each message row (no writes). `lock`: serialize with other holds of the account.

    A sub-account's rows are paid by its parent: the parent's profile, cash and packages are planned."""
    account_id = await payer_of(session, account_id)
    profile = await get_profile(session, account_id)
    cash_id = ledger.cash(account_id, currency)
    if lock:  # PostgreSQL row lock; SQLite writers are serialized already
        locked = await ledger.lock_for_update(session, cash_id)
        if locked is None:  # an account that never had cash (packages only): create the row to lock it
            await ledger.ensure_account(session, cash_id)
            locked = await ledger.lock_for_update(session, cash_id)
    else:
        account = await session.get(LedgerAccount, cash_id)
        locked = None if account is None else (account.balance, account.min_balance or 0)
    balance, floor = locked if locked is not None else (0, 0)
    packages = await eligible_packages(session, account_id, at=at)
    allocation = allocate(
        [(r["to_country"], r["message_type"], r["segment_count"], r["price_micros"]) for r in rows] if packages
        else [(None, "", 0, r["price_micros"]) for r in rows],
        packages,
        draw_order=profile.draw_order,
        cash_available=balance - floor,
    )
    return Plan(allocation, balance - floor, profile)


async def hold_batch(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    *,
    account_id: str,
    currency: str,
    batch_id: str,
    actor: str = "system",
) -> Hold:
    """Hold funds for `rows` (message rows about to be inserted; sets their funding and billing_state).

    A package can run out or expire between planning and posting (only cash is locked while planning): the
    hold then plans again, so the messages fall back to other packages or cash instead of being refused.

    A sub-account's batch holds on its parent's ledger, and is refused whole (`spend_limit_exceeded`) when it
    would take the sub-account past its spend limit; that check runs after plan_funding locked the parent's
    cash row, so concurrent batches are counted one after the other."""
    now = utcnow()
    sender_id, account_id = account_id, await payer_of(session, account_id)
    cash_id = ledger.cash(account_id, currency)
    for attempt in range(HOLD_ATTEMPTS):
        plan = await plan_funding(session, rows, account_id=sender_id, currency=currency, lock=True, at=now)
        allocation, profile = plan.allocation, plan.profile
        if sender_id != account_id and attempt == 0:
            await check_spend_limit(session, sender_id, currency=currency, now=now,
                                    needed=sum(int(r["price_micros"]) for r in rows))
        if allocation.cash_micros > plan.available_micros:
            raise insufficient_balance(currency=currency, needed=allocation.cash_micros,
                                       available=plan.available_micros)
        postings = _hold_postings(account_id, currency, allocation)
        if not postings:
            _mark_held(rows, allocation)
            return Hold(None, 0, {}, None)
        try:
            async with session.begin_nested():  # a refused posting leaves nothing behind
                posted = await ledger.post(
                    session, account_id=account_id, kind="hold", postings=postings, reference=batch_id, actor=actor,
                    detail={"messages": len(rows), "cash_micros": allocation.cash_micros, "units": allocation.units,
                            **({"sub_account": sender_id} if sender_id != account_id else {})},
                    at=now,
                )
            break
        except ledger.InsufficientFunds as exc:
            if exc.ledger_account_id == cash_id:  # the floor moved under us (credit limit lowered)
                raise insufficient_balance(currency=currency, needed=exc.needed, available=exc.available) from exc
            if attempt == HOLD_ATTEMPTS - 1:
                raise insufficient_balance(currency=currency, needed=allocation.cash_micros,
                                           available=plan.available_micros) from exc
    _mark_held(rows, allocation)
    cash_after = posted.balances.get(cash_id)
    if cash_after is not None:
        await _low_balance_alert(session, profile, account_id=account_id, currency=currency,
                                 before=cash_after + allocation.cash_micros, after=cash_after, at=now)
    return Hold(posted.entry_id, allocation.cash_micros, allocation.units, cash_after)


@dataclass(frozen=True, slots=True)
class PendingHold:
    """A cash-only hold decided before the batch's rows are inserted and posted after them (`post`), as the
    last statements of the transaction: the payer's cash row is then locked (by its conditional UPDATE) only
    from there to the commit, so concurrent submits of one account queue for milliseconds, not for the
    whole submit. The floor is enforced by that UPDATE; a refusal rolls the transaction back."""

    payer_id: str
    currency: str
    batch_id: str
    actor: str
    messages: int
    cash_micros: int
    profile: BillingProfile | None
    at: datetime

    async def post(self, session: AsyncSession) -> Hold:
        allocation = Allocation(cash_micros=self.cash_micros)
        postings = _hold_postings(self.payer_id, self.currency, allocation)
        if not postings:
            return Hold(None, 0, {}, None)
        if (ledger.can_post_at_commit(session) and self.profile is not None
                and self.profile.low_balance_threshold_micros is None):
            # posted by the COMMIT (the payer's rows locked only then); a refusal fails the COMMIT, which the
            # submit turns into insufficient_balance. Not when a low-balance alert is set: it needs the
            # balance after this very hold, known only from an immediate posting.
            entry_id = await ledger.post_at_commit(
                session, account_id=self.payer_id, kind="hold", postings=postings, reference=self.batch_id,
                actor=self.actor, detail={"messages": self.messages, "cash_micros": self.cash_micros, "units": {}},
                at=self.at,
            )
            return Hold(entry_id, self.cash_micros, {}, None)
        try:
            posted = await ledger.post(
                session, account_id=self.payer_id, kind="hold", postings=postings, reference=self.batch_id,
                actor=self.actor, detail={"messages": self.messages, "cash_micros": self.cash_micros, "units": {}},
                at=self.at,
            )
        except ledger.InsufficientFunds as exc:  # nothing stays: the caller's transaction is rolled back
            raise insufficient_balance(currency=self.currency, needed=exc.needed, available=exc.available) from exc
        cash_id = ledger.cash(self.payer_id, self.currency)
        cash_after = posted.balances.get(cash_id)
        if cash_after is not None:
            profile = self.profile or await get_profile(session, self.payer_id)
            await _low_balance_alert(session, profile, account_id=self.payer_id, currency=self.currency,
                                     before=cash_after + self.cash_micros, after=cash_after, at=self.at)
        return Hold(posted.entry_id, self.cash_micros, {}, cash_after)


async def begin_hold(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    *,
    account_id: str,
    currency: str,
    batch_id: str,
    actor: str = "system",
    payer_id: str | None = None,
    profile: BillingProfile | None = None,
) -> Hold | PendingHold:
    """`hold_batch`, split for the submit path: when everything is paid in cash (the payer has no eligible
    package and is not a sub-account's parent paying under a spend limit) the rows are marked now and the
    posting is returned as a PendingHold to `post()` at the end of the transaction. Otherwise (packages: the
    allocation depends on balances read under the cash lock; spend limits: checked under that lock) this is
    `hold_batch` itself, done now. `payer_id`/`profile`: already known by the caller (else read)."""
    payer = payer_id or await payer_of(session, account_id)
    now = utcnow()
    if payer != account_id or await eligible_packages(session, payer, at=now):
        return await hold_batch(session, rows, account_id=account_id, currency=currency, batch_id=batch_id,
                                actor=actor)
    allocation = allocate([(None, "", 0, r["price_micros"]) for r in rows], [], draw_order="", cash_available=0)
    _mark_held(rows, allocation)
    return PendingHold(payer, currency, batch_id, actor, len(rows), allocation.cash_micros, profile, now)


def _hold_postings(account_id: str, currency: str, allocation: Allocation) -> dict[str, int]:
    postings: dict[str, int] = {}
    if allocation.cash_micros:
        postings[ledger.cash(account_id, currency)] = -allocation.cash_micros
        postings[ledger.held(account_id, currency)] = allocation.cash_micros
    for package_id, units in allocation.units.items():
        postings[ledger.package_account(package_id)] = -units
    if allocation.units:
        postings[ledger.held(account_id, ledger.UNITS)] = sum(allocation.units.values())
    return postings


def _mark_held(rows: list[dict[str, Any]], allocation: Allocation) -> None:
    for row, source in zip(rows, allocation.funding, strict=True):
        row["funding"] = source
        row["billing_state"] = HELD


async def _low_balance_alert(
    session: AsyncSession, profile: BillingProfile, *, account_id: str, currency: str, before: int, after: int,
    at: datetime,
) -> None:
    """`balance.low` once when the available cash crosses below the account's threshold."""
    threshold = profile.low_balance_threshold_micros
    if threshold is None or not (after < threshold <= before):
        return
    from hongyan.webhooks import service as webhooks  # webhooks imports messaging; keep billing import-light

    await webhooks.enqueue_account_event(
        session, account_id=account_id, event_type="balance.low", occurred_at=at,
        data={"balance": format_micros(after, currency), "balance_micros": after, "currency": currency,
              "threshold": format_micros(threshold, currency), "threshold_micros": threshold},
    )


def final_billing_state(status: str, *, sent: bool) -> str:
    """Pure: what a final status does to the held funds (before the account's refund policy)."""
    if status in ("delivered", "undelivered"):  # a receipt came for it: the carrier had it
        return SETTLED
    if status == "expired" and sent:  # the carrier took it and reported (or we timed out) expiry
        return SETTLED
    return RELEASED  # rejected, failed, canceled, expired before sending: it never reached a carrier


async def settle_final(session: AsyncSession, rows: Sequence[dict[str, Any]], *, at: datetime) -> None:
    """Post settle/release/refund entries for messages that just reached a final status.

    `rows` carry id, account_id, status, funding, billing_state (already updated by the transition),
    price_micros, segment_count, currency. A sub-account's messages move money on its parent's ledger."""
    held_rows = [r for r in rows if r.get("funding") and r.get("billing_state") in (SETTLED, RELEASED)]
    if not held_rows:
        return
    payers = await _payers(session, {r["account_id"] for r in held_rows})
    await _apply_refund_policy(session, held_rows, payers)
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in held_rows:
        by_account[payers.get(r["account_id"], r["account_id"])].append(r)
    entries: list[tuple[str, str, dict[str, int], int]] = []  # (payer, kind, postings, messages)
    for account_id in sorted(by_account):
        per_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        counts: dict[str, int] = defaultdict(int)
        for r in by_account[account_id]:
            state = r["billing_state"]
            kind = {SETTLED: "settle", RELEASED: "release", REFUNDED: "refund"}[state]
            counts[kind] += 1
            postings = per_kind[kind]
            if r["funding"] == CASH:
                amount, unit = int(r["price_micros"]), r["currency"]
                source = ledger.cash(account_id, unit)
                sink = ledger.ledger_id(account_id, "revenue", unit)
            else:
                amount, unit = int(r["segment_count"]), ledger.UNITS
                source = ledger.package_account(r["funding"])
                sink = ledger.ledger_id(account_id, "consumed", unit)
            if amount == 0:
                continue
            postings[ledger.held(account_id, unit)] -= amount
            postings[sink if state == SETTLED else source] += amount
        for kind in ("settle", "release", "refund"):
            if kind in per_kind and any(per_kind[kind].values()):
                entries.append((account_id, kind, dict(per_kind[kind]), counts[kind]))
    # One lock order for every ledger row this transaction touches (all entries, all payers): sorted ids, the
    # order ledger.post and a submit's hold use. Posting entry by entry would lock `held` (settle) before
    # `cash` (release) and deadlock with a concurrent hold, which locks cash, then held (tests/verify/
    # test_verify_races.py).
    # Not posted at commit (ledger.post_at_commit) as a code's hold is: a receipt round also writes rows
    # other transactions wait on (messages, batches), and locking the ledger rows only at COMMIT, after those,
    # inverts the lock order of a transaction that holds ledger rows first (a deadlock, seen with two workers).
    if len(entries) > 1:  # one entry: ledger.post locks in sorted order itself
        await _lock_in_order(session, {la for _p, _k, postings, _n in entries for la, v in postings.items() if v})
    for account_id, kind, postings, messages in entries:
        await ledger.post(session, account_id=account_id, kind=kind, postings=postings,
                          detail={"messages": messages}, at=at)


async def _lock_in_order(session: AsyncSession, ledger_account_ids: set[str]) -> None:
    """Row-lock existing ledger accounts in id order (PostgreSQL; SQLite writers are serialized already)."""
    if len(ledger_account_ids) < 2 or session.bind.dialect.name != "postgresql":
        return
    await session.execute(
        select(LedgerAccount.id).where(LedgerAccount.id.in_(sorted(ledger_account_ids)))
        .order_by(LedgerAccount.id).with_for_update()
    )


# account → its parent (None: it pays for itself). A parent is set in the transaction that creates the account
# and never changes, so a process keeps what it read: a receipt flush then settles without this query.
_PARENTS: dict[str, str | None] = {}
_PARENTS_MAX = 100_000


async def _payers(session: AsyncSession, account_ids: set[str]) -> dict[str, str]:
    """Sub-account → parent for those of `account_ids` that are sub-accounts (one query for those not known
    to this process yet)."""
    from hongyan.accounts.models import Account

    unknown = [a for a in account_ids if a not in _PARENTS]
    if unknown:
        rows = (await session.execute(select(Account.id, Account.parent_id).where(Account.id.in_(unknown)))).all()
        if len(_PARENTS) + len(rows) > _PARENTS_MAX:
            _PARENTS.clear()
        _PARENTS.update((r.id, r.parent_id) for r in rows)  # an id not found is asked again next time
        found = {r.id: r.parent_id for r in rows}
    else:
        found = {}
    out: dict[str, str] = {}
    for a in account_ids:
        parent = _PARENTS.get(a, found.get(a))
        if parent:
            out[a] = parent
    return out


async def _apply_refund_policy(session: AsyncSession, rows: list[dict[str, Any]], payers: dict[str, str]) -> None:
    """Accounts that refund undelivered messages: turn their settled undelivered/expired rows into refunds
    (a sub-account's messages follow its parent's policy: the parent pays)."""
    candidates = [r for r in rows if r["billing_state"] == SETTLED and r["status"] != "delivered"]
    if not candidates:
        return
    accounts = {payers.get(r["account_id"], r["account_id"]) for r in candidates}
    refunding = set(await session.scalars(
        select(BillingProfile.account_id).where(BillingProfile.account_id.in_(accounts),
                                                BillingProfile.refund_undelivered.is_(True))
    ))
    if not refunding:
        return
    from hongyan.messaging.models import Message  # the message row records the outcome (billing_state)

    refund_ids = [r["id"] for r in candidates if payers.get(r["account_id"], r["account_id"]) in refunding]
    for r in candidates:
        if payers.get(r["account_id"], r["account_id"]) in refunding:
            r["billing_state"] = REFUNDED
    await session.execute(
        update(Message).where(and_(Message.id.in_(refund_ids), Message.billing_state == SETTLED))
        .values(billing_state=REFUNDED)
    )


async def held_mismatches(session: AsyncSession) -> list[ledger.Problem]:
    """Held balances must equal what the not-yet-final messages hold (cash: price, package: segments).

    A sub-account's messages hold on its parent's ledger, so messages are summed per payer."""
    from hongyan.accounts.models import Account
    from hongyan.messaging.models import Message

    problems: list[ledger.Problem] = []
    payer = func.coalesce(Account.parent_id, Account.id)
    cash_expected: dict[tuple[str, str], int] = defaultdict(int)
    for acc, cur, total in (await session.execute(
        select(payer, Message.currency, func.sum(Message.price_micros))
        .join(Account, Account.id == Message.account_id)
        .where(Message.billing_state == HELD, Message.funding == CASH)
        .group_by(payer, Message.currency)
    )).all():
        cash_expected[(acc, cur)] += int(total)
    unit_expected: dict[str, int] = defaultdict(int)
    for acc, total in (await session.execute(
        select(payer, func.sum(Message.segment_count))
        .join(Account, Account.id == Message.account_id)
        .where(Message.billing_state == HELD, Message.funding != CASH)
        .group_by(payer)
    )).all():
        unit_expected[acc] += int(total)
    held_accounts = (await session.execute(
        select(LedgerAccount.account_id, LedgerAccount.currency, LedgerAccount.balance).where(LedgerAccount.kind == "held")
    )).all()
    seen: set[tuple[str, str]] = set()
    for acc, cur, balance in held_accounts:
        seen.add((acc, cur))
        expected = unit_expected.get(acc, 0) if cur == ledger.UNITS else cash_expected.get((acc, cur), 0)
        if balance != expected:
            problems.append(ledger.Problem("held_matches_messages", ledger.held(acc, cur),
                                           f"held balance {balance}, messages awaiting a final status hold {expected}"))
    for (acc, cur), expected in cash_expected.items():
        if (acc, cur) not in seen and expected:
            problems.append(ledger.Problem("held_matches_messages", ledger.held(acc, cur), f"no held balance, messages hold {expected}"))
    for acc, expected in unit_expected.items():
        if (acc, ledger.UNITS) not in seen and expected:
            problems.append(ledger.Problem("held_matches_messages", ledger.held(acc, ledger.UNITS),
                                           f"no held balance, messages hold {expected} units"))
    return problems


async def verify_all(db: Database) -> list[ledger.Problem]:
    """Every ledger check plus held balances against unfinished messages, in one snapshot."""
    async with db.read() as session:  # one snapshot (REPEATABLE READ on PostgreSQL, a WAL read on SQLite)
        await ledger.begin_snapshot(session)
        problems = await ledger.verify(session)
        problems += await held_mismatches(session)
    return problems
