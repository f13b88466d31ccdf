"""Account emails (verification, password reset, invitations, alerts) through one outbox table.

`queue_email()` stores the email in the caller's transaction. With HONGYAN_EMAIL_BACKEND=outbox (the
embedded default) that is all: platform staff read it in the console. With smtp a sender loop delivers
pending rows (see `deliver_pending`).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage as StdlibEmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import EmailMessage
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database

log = logging.getLogger(__name__)


async def queue_email(session: AsyncSession, *, backend: str, to: str, subject: str, body: str, kind: str) -> EmailMessage:
    email = EmailMessage(
        id=ids.new_id("eml"), to_address=to, subject=subject[:300], body_text=body, kind=kind,
        status="stored" if backend == "outbox" else "pending", attempts=0, last_error=None,
        created_at=utcnow(), sent_at=None,
    )
    session.add(email)
    await session.flush()
    return email


# -- SMTP delivery (HONGYAN_EMAIL_BACKEND=smtp) -------------------------------------------------------
MAX_ATTEMPTS = 5  # then the row is `failed` (staff still read it in the outbox)
DELIVERY_BATCH = 20
SMTP_TIMEOUT_S = 30.0


def smtp_message(settings: Settings, row: EmailMessage) -> StdlibEmailMessage:
    message = StdlibEmailMessage()
    message["From"] = settings.email_from
    message["To"] = row.to_address
    message["Subject"] = row.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(idstring=row.id, domain=parseaddr(settings.email_from)[1].split("@")[-1] or None)
    message.set_content(row.body_text)  # UTF-8, quoted-printable or base64 as needed
    return message


def send_smtp(smtp_url: str, message: StdlibEmailMessage) -> None:
    """Blocking: one SMTP session. smtp://host:587 must offer STARTTLS (checked certificate) unless the URL
    says ?tls=none (a relay on the same host); smtps://host:465 is TLS from the start."""
    url = urlsplit(smtp_url)
    options = parse_qs(url.query)
    context = ssl.create_default_context()
    host = url.hostname or "localhost"
    client: smtplib.SMTP
    if url.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, url.port or 465, timeout=SMTP_TIMEOUT_S, context=context)
    elif url.scheme == "smtp":
        client = smtplib.SMTP(host, url.port or 587, timeout=SMTP_TIMEOUT_S)
    else:
        raise ValueError(f"HONGYAN_SMTP_URL must start with smtp:// or smtps://, not {url.scheme}://")
    with client:
        client.ehlo()
        if url.scheme == "smtp" and options.get("tls", [""])[0] != "none":
            client.starttls(context=context)  # SMTPNotSupportedError when the server cannot: never send in clear
            client.ehlo()
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
        client.send_message(message)


async def deliver_pending(db: Database, settings: Settings, *, limit: int = DELIVERY_BATCH) -> int:
    """Send pending emails over SMTP; each row is claimed by bumping `attempts` conditionally, so two workers
    never send the same email. Failures stay pending (retried next round) until MAX_ATTEMPTS. Returns how
    many were sent."""
    if settings.email_backend != "smtp":
        return 0
    async with db.read() as session:
        rows = (await session.scalars(
            select(EmailMessage).where(EmailMessage.status == "pending", EmailMessage.attempts < MAX_ATTEMPTS)
            .order_by(EmailMessage.created_at).limit(limit)
        )).all()
    sent = 0
    for row in rows:
        async with db.write() as session:
            claimed = await session.execute(
                update(EmailMessage)
                .where(EmailMessage.id == row.id, EmailMessage.status == "pending", EmailMessage.attempts == row.attempts)
                .values(attempts=row.attempts + 1)
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue
        try:
            await asyncio.to_thread(send_smtp, settings.smtp_url, smtp_message(settings, row))
        except Exception as exc:  # any SMTP, TLS or network error: recorded, retried next round
            attempts = row.attempts + 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("email %s not sent (attempt %d): %s", row.id, attempts, error)
            async with db.write() as session:
                await session.execute(
                    update(EmailMessage).where(EmailMessage.id == row.id)
                    .values(status="failed" if attempts >= MAX_ATTEMPTS else "pending", last_error=error)
                )
            continue
        async with db.write() as session:
            await session.execute(
                update(EmailMessage).where(EmailMessage.id == row.id)
                .values(status="sent", sent_at=utcnow(), last_error=None)
            )
        sent += 1
    return sent
