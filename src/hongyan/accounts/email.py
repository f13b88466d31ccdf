"""Account emails (verification, password reset, invitations, alerts) through one outbox table.

`queue_email()` stores the email in the caller's transaction. With HONGYAN_EMAIL_BACKEND=outbox (the
embedded default) that is all: platform staff read it in the console. With smtp a sender loop delivers
pending rows (see `deliver_pending`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import EmailMessage
from hongyan.core import ids
from hongyan.core.clock import utcnow


async def queue_email(session: AsyncSession, *, backend: str, to: str, subject: str, body: str, kind: str) -> EmailMessage:
    email = EmailMessage(
        id=ids.new_id("eml"), to_address=to, subject=subject[:300], body_text=body, kind=kind,
        status="stored" if backend == "outbox" else "pending", attempts=0, last_error=None,
        created_at=utcnow(), sent_at=None,
    )
    session.add(email)
    await session.flush()
    return email
