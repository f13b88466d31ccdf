"""Property tests: any sequence of recharge / hold / settle / release / refund / expiry / adjustment keeps
the journal balanced, every balance equal to its lines, and no customer balance below its floor — on the
real databases, through the same ledger calls production uses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hongyan.billing import ledger
from hongyan.billing.charging import Allocation, EligiblePackage, allocate
from hongyan.billing.models import LedgerAccount, Package
from hongyan.billing.recharge import adjust, top_up
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database

OPS = st.lists(
    st.tuples(
        st.sampled_from(["recharge", "hold", "settle", "release", "refund", "package", "expire", "adjust"]),
        st.integers(min_value=-5_000_000, max_value=5_000_000),
    ),
    min_size=1,
    max_size=25,
)


async def _run_ops(db_url: str, ops: list[tuple[str, int]]) -> None:
    from hongyan.accounts.service import create_account

    db = Database(db_url, pool_size=2)
    async with db.write() as session:
        account_id = (await create_account(session, name="property")).id
    cash, held = ledger.cash(account_id, "CNY"), ledger.held(account_id, "CNY")
    revenue = ledger.ledger_id(account_id, "revenue", "CNY")
    units_held = ledger.held(account_id, ledger.UNITS)
    packages: list[str] = []
    try:
        for op, amount in ops:
            size = abs(amount) or 1
            try:
                async with db.write() as session:
                    if op == "recharge":
                        await top_up(session, account_id=account_id, amount_micros=size, currency="CNY", actor="t",
                                     note="n")
                    elif op == "hold":
                        await ledger.post(session, account_id=account_id, kind="hold", postings={cash: -size, held: size})
                    elif op in ("settle", "release", "refund"):
                        sink = revenue if op == "settle" else cash
                        await ledger.post(session, account_id=account_id, kind=op, postings={held: -size, sink: size})
                    elif op == "package":
                        package_id = ids.new_id("pkg")
                        now = utcnow()
                        session.add(Package(id=package_id, account_id=account_id, product_id=None, subscription_id=None,
                                            name="p", units_total=size, price_micros=size, currency="CNY", countries=[],
                                            message_types=[], status="active", units_expired=0, starts_at=now,
                                            expires_at=now + timedelta(days=1), created_at=now))
                        await ledger.post(session, account_id=account_id, kind="package_purchase", postings={
                            cash: -size, ledger.ledger_id(account_id, "sales", "CNY"): size,
                            ledger.ledger_id(account_id, "issued", ledger.UNITS): -size,
                            ledger.package_account(package_id): size})
                        packages.append(package_id)
                        # and hold some of its units for a message
                        await ledger.post(session, account_id=account_id, kind="hold", postings={
                            ledger.package_account(package_id): -(size // 2), units_held: size // 2})
                    elif op == "expire" and packages:
                        package_id = packages.pop(0)
                        row = await session.get(LedgerAccount, ledger.package_account(package_id))
                        remaining = row.balance if row else 0
                        await ledger.post(session, account_id=account_id, kind="expiry", postings={
                            ledger.package_account(package_id): -remaining,
                            ledger.ledger_id(account_id, "expired", ledger.UNITS): remaining})
                    elif op == "adjust":
                        await adjust(session, account_id=account_id, amount_micros=amount or 1, currency="CNY", actor="t",
                                     note="n")
            except (ledger.InsufficientFunds, HongyanError):
                pass  # refused as a whole: the transaction rolled back
            async with db.read() as session:
                problems = await ledger.verify(session)
                balances = await ledger.balances_of(session, account_id)
            assert problems == [], (op, amount, problems)
            for la in balances.values():
                if la.min_balance is not None:
                    assert la.balance >= la.min_balance, (la.id, la.balance)
    finally:
        await db.dispose()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_sequences_keep_ledger_balanced(db_url: str, ops: list[tuple[str, int]]) -> None:
    asyncio.run(_run_ops(db_url, ops))


MESSAGES = st.lists(
    st.tuples(st.sampled_from(["CN", "US", None]), st.sampled_from(["verification", "notification", "marketing"]),
              st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=400_000)),
    max_size=40,
)
PACKAGES = st.lists(
    st.tuples(st.integers(min_value=0, max_value=60), st.sampled_from([[], ["CN"], ["US"]]),
              st.sampled_from([[], ["marketing"], ["verification", "notification"]])),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(messages=MESSAGES, packages=PACKAGES, order=st.sampled_from(["packages_first", "cash_first"]),
       cash=st.integers(min_value=0, max_value=3_000_000))
def test_allocation_never_overdraws_a_package_and_accounts_for_every_message(
    messages: list[tuple[str | None, str, int, int]], packages: list[tuple[int, list[str], list[str]]], order: str,
    cash: int,
) -> None:
    eligible = [EligiblePackage(f"pkg_{i}", units, countries, types) for i, (units, countries, types) in enumerate(packages)]
    result: Allocation = allocate(messages, eligible, draw_order=order, cash_available=cash)
    assert len(result.funding) == len(messages)
    used: dict[str, int] = {}
    cash_total = 0
    for (country, message_type, segments, price), source in zip(messages, result.funding, strict=True):
        if source == "cash":
            cash_total += price
        else:
            package = next(p for p in eligible if p.id == source)
            assert package.covers(country, message_type)
            used[source] = used.get(source, 0) + segments
    assert cash_total == result.cash_micros
    assert used == {k: v for k, v in result.units.items() if v}
    for p in eligible:
        assert used.get(p.id, 0) <= p.remaining
    if order == "packages_first":  # a message paid in cash had no eligible package with room at its turn
        remaining = {p.id: p.remaining for p in eligible}
        for (country, message_type, segments, _price), source in zip(messages, result.funding, strict=True):
            if source == "cash":
                assert not any(remaining[p.id] >= segments and p.covers(country, message_type) for p in eligible)
            else:
                remaining[source] -= segments
