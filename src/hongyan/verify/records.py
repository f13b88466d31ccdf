"""Reading and ending verifications: load one of the account's, the state errors (409) of one that cannot be
checked, resent or canceled any more, cancel, list (filters as shown: an overdue pending one is expired).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import Conflict, HongyanError, NotFound, Unprocessable
from hongyan.db.engine import Database
from hongyan.messaging.numbers import NumberProblem, normalize
from hongyan.verify.events import effective_status
from hongyan.verify.models import VERIFICATION_STATUSES, Verification


def state_error(v: Verification, now: datetime) -> HongyanError | None:
    """Why nothing more can be done with `v` (checked, resent, canceled), or None while it is pending."""
    status = effective_status(v, now)
    if status == "approved":
        return Conflict(
            "verification_already_approved",
            f"{v.id} was already approved; a verification is approved once.",
            field="id",
        )
    if status == "failed":
        return Conflict(
            "verification_failed",
            f"{v.id} failed after {v.attempts} wrong codes; start a new verification.",
            field="id",
        )
    if status == "canceled":
        return Conflict("verification_canceled", f"{v.id} was canceled.", field="id")
    if status == "expired":
        return Conflict(
            "verification_expired",
            f"The code of {v.id} has expired; resend it or start a new verification.",
            field="id",
        )
    return None


async def load(session: AsyncSession, *, account_id: str, verification_id: str) -> Verification:
    row = await session.scalar(
        select(Verification).where(Verification.id == verification_id, Verification.account_id == account_id)
    )
    if row is None:
        raise NotFound("verification_not_found", "No such verification in this account.", field="id")
    return row


async def mark_expired(session: AsyncSession, verification_id: str, now: datetime) -> None:
    await session.execute(
        update(Verification)
        .where(
            Verification.id == verification_id,
            Verification.status == "pending",
            Verification.expires_at <= now,
        )
        .values(status="expired", updated_at=now)
    )


async def cancel(db: Database, *, account_id: str, verification_id: str) -> Verification:
    now = utcnow()
    async with db.write() as session:
        changed = await session.execute(
            update(Verification)
            .where(
                Verification.id == verification_id,
                Verification.account_id == account_id,
                Verification.status == "pending",
                Verification.expires_at > now,
            )
            .values(status="canceled", updated_at=now)
        )
        await mark_expired(session, verification_id, now)
    async with db.read() as session:
        v = await load(session, account_id=account_id, verification_id=verification_id)
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        why = state_error(v, now)
        if why is not None:
            raise why
    return v


async def get(db: Database, *, account_id: str, verification_id: str) -> Verification:
    async with db.read() as session:
        return await load(session, account_id=account_id, verification_id=verification_id)


async def list_verifications(
    session: AsyncSession,
    settings: Settings,
    *,
    account_id: str,
    limit: int,
    before: str | None = None,
    status: str | None = None,
    to: str | None = None,
    region: str | None = None,
) -> list[Verification]:
    """Newest first, `limit` rows before the cursor id; `status` as shown (an overdue pending one is expired),
    `to` an exact number in any common format."""
    now = utcnow()
    query = select(Verification).where(Verification.account_id == account_id)
    if status is not None:
        if status not in VERIFICATION_STATUSES:
            raise Unprocessable(
                "invalid_value", f"status is one of {', '.join(VERIFICATION_STATUSES)}.", field="status"
            )
        if status == "pending":
            query = query.where(Verification.status == "pending", Verification.expires_at > now)
        elif status == "expired":
            query = query.where(
                or_(
                    Verification.status == "expired",
                    (Verification.status == "pending") & (Verification.expires_at <= now),
                )
            )
        else:
            query = query.where(Verification.status == status)
    if to:
        try:
            e164 = normalize(to, region or settings.default_region).e164
        except NumberProblem as problem:
            raise Unprocessable(problem.code, problem.message, field="to") from None
        query = query.where(Verification.to_bidx == blind_index(e164))
    if before:
        query = query.where(Verification.id < before)
    return list((await session.scalars(query.order_by(Verification.id.desc()).limit(limit))).all())
