"""Checking a code: approved at most once, wrong codes counted atomically, locked after max_attempts.

Both outcomes are conditional UPDATEs on `status = 'pending'`, so the database decides races:
- right code: `… SET status='approved' WHERE status='pending' AND attempts < max_attempts AND expires_at > now`
  — of two concurrent right answers exactly one changes the row; the other reads the row again and gets
  `verification_already_approved`;
- wrong code: `attempts = attempts + 1` (and `status = 'failed'` when it reaches max_attempts) in the same
  statement, so parallel guesses cannot slip past the limit, and once failed even the right code is refused.
The comparison itself is constant time (verify.codes.code_matches).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import case, select, update

from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError, Unprocessable
from hongyan.db.engine import Database
from hongyan.verify import codes
from hongyan.verify.events import APPROVED, FAILED, announce
from hongyan.verify.models import Verification
from hongyan.verify.records import load, mark_expired, state_error

_CODE = re.compile(r"[0-9]{4,10}")


@dataclass(frozen=True, slots=True)
class Checked:
    verification: Verification
    valid: bool


async def check(
    db: Database, settings: Settings, *, account_id: str, verification_id: str, code: str
) -> Checked:
    """Compare `code`; 200-style outcomes (approved, or wrong with attempts left / now failed) return a
    `Checked`; a verification that cannot be checked any more raises its state error (409)."""
    code = code.strip()
    if not _CODE.fullmatch(code):
        raise Unprocessable("verify_code_invalid", "The code is 4 to 10 digits.", field="code")
    now = utcnow()
    async with db.read() as session:
        v = await load(session, account_id=account_id, verification_id=verification_id)
    refusal = state_error(v, now)
    if refusal is None:
        valid = codes.code_matches(settings.effective_secret_key(), v.id, code, v.code_hash)
        async with db.write() as session:
            pending = (
                Verification.id == v.id,
                Verification.status == "pending",
                Verification.expires_at > now,
            )
            if valid:
                changed = await session.execute(
                    update(Verification)
                    .where(
                        *pending,
                        Verification.attempts < Verification.max_attempts,
                    )
                    .values(status="approved", approved_at=now, updated_at=now)
                )
                won = changed.rowcount == 1  # type: ignore[attr-defined]
            else:
                attempts = Verification.attempts + 1
                changed = await session.execute(
                    update(Verification)
                    .where(*pending)
                    .values(
                        attempts=attempts,
                        updated_at=now,
                        status=case(
                            (attempts >= Verification.max_attempts, "failed"), else_=Verification.status
                        ),
                    )
                )
                won = changed.rowcount == 1  # type: ignore[attr-defined]
            fresh = await session.scalar(
                select(Verification).where(Verification.id == v.id).execution_options(populate_existing=True)
            )
            assert fresh is not None
            if won and fresh.status in ("approved", "failed"):
                await announce(
                    session, fresh, APPROVED if fresh.status == "approved" else FAILED, occurred_at=now
                )
            if not won:
                await mark_expired(session, v.id, now)
        if won:
            return Checked(fresh, valid)
        refusal = state_error(fresh, now)
    else:
        async with db.write() as session:
            await mark_expired(session, v.id, now)
    raise refusal or _lost(v)


def _lost(
    v: Verification,
) -> HongyanError:  # pragma: no cover - a pending row that changed no row: expired between
    return HongyanError(
        "verification_expired", f"The code of {v.id} has expired.", field="id", status_code=409
    )
