"""Conversion statistics of an account's verifications: started, approved and their ratio, per day (UTC) over
the last days and per destination country. One aggregate query each (conditional sums), whatever the volume.

Conversion is what pumping shows up in first: codes requested for numbers nobody types back. Sandbox (test
key) verifications are left out, like the pumping protection leaves them out of its baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.verify.models import Verification

MAX_COUNTRIES = 20


@dataclass(frozen=True, slots=True)
class Conversion:
    label: str  # a day (YYYY-MM-DD) or a country code ("" for unknown)
    started: int
    approved: int

    @property
    def rate_permille(self) -> int | None:
        return None if not self.started else round(self.approved * 1000 / self.started)


@dataclass(frozen=True, slots=True)
class ConversionReport:
    total: Conversion
    by_day: list[Conversion]  # oldest first
    by_country: list[Conversion]  # most started first


def _sum(*conditions: object) -> object:
    return func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0)  # type: ignore[arg-type]


async def conversion(
    session: AsyncSession, *, account_id: str, now: datetime, days: int = 7
) -> ConversionReport:
    today = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
    starts = [today - timedelta(days=days - 1 - i) for i in range(days)]
    since = starts[0]
    scope = (
        Verification.account_id == account_id,
        Verification.created_at >= since,
        Verification.sandbox.is_(False),
    )
    approved = Verification.status == "approved"
    columns = []
    for i, day in enumerate(starts):
        end = starts[i + 1] if i + 1 < days else now + timedelta(days=1)
        in_day = and_(Verification.created_at >= day, Verification.created_at < end)
        columns += [_sum(in_day), _sum(in_day, approved)]
    row = (await session.execute(select(*columns).where(*scope))).one()  # type: ignore[call-overload]
    by_day = [
        Conversion(day.date().isoformat(), int(row[2 * i]), int(row[2 * i + 1]))
        for i, day in enumerate(starts)
    ]
    countries = (
        await session.execute(
            select(Verification.to_country, func.count(), _sum(approved))
            .where(*scope)  # type: ignore[call-overload]
            .group_by(Verification.to_country)
            .order_by(func.count().desc())
            .limit(MAX_COUNTRIES)
        )
    ).all()
    by_country = [Conversion(c or "", int(n), int(a)) for c, n, a in countries]
    total = Conversion("", sum(d.started for d in by_day), sum(d.approved for d in by_day))
    return ConversionReport(total, by_day, by_country)
