"""Account emails over SMTP: a tiny SMTP server on 127.0.0.1 (started by the test) receives what
`deliver_pending` sends; refusals are retried and end as failed; no STARTTLS means nothing is sent."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from hongyan.accounts.email import MAX_ATTEMPTS, deliver_pending, queue_email
from hongyan.accounts.models import EmailMessage
from hongyan.config import Settings
from hongyan.db.engine import Database


@dataclass
class SmtpSink:
    """Just enough ESMTP (RFC 5321) for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT."""

    refuse_rcpt: bool = False
    logins: list[tuple[str, str]] = field(default_factory=list)
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        sender, recipients = "", []
        reply("220 sink ESMTP")
        while line := await reader.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                reply("250-sink")
                reply("250 AUTH PLAIN")
            elif verb == "AUTH":
                _zid, user, password = base64.b64decode(command.split()[2]).decode().split("\0")
                self.logins.append((user, password))
                reply("235 2.7.0 accepted")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip().split()[0].strip("<>"), []
                reply("250 ok")
            elif verb == "RCPT":
                if self.refuse_rcpt:
                    reply("550 5.1.1 no such mailbox")
                else:
                    recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                    reply("250 ok")
            elif verb == "DATA":
                reply("354 go on")
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    data += chunk
                self.messages.append((sender, recipients, data))
                reply("250 queued")
            elif verb == "QUIT":
                reply("221 bye")
                await writer.drain()
                break
            else:
                reply("250 ok")
            await writer.drain()
        writer.close()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    server_state = SmtpSink()
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        await server.wait_closed()


async def _queue(db: Database, backend: str = "smtp") -> str:
    async with db.write() as session:
        row = await queue_email(session, backend=backend, to="zhao@example.cn", subject="请确认您的邮箱地址 · 鸿雁",
                                body="链接：http://x/console/verify-email?token=abc", kind="verify_email")
    return row.id


async def _row(db: Database, email_id: str) -> EmailMessage:
    async with db.read() as session:
        row = await session.scalar(select(EmailMessage).where(EmailMessage.id == email_id))
    assert row is not None
    return row


def _smtp(settings: Settings, sink: SmtpSink, query: str = "?tls=none") -> Settings:
    return settings.model_copy(update={
        "email_backend": "smtp", "smtp_url": f"smtp://mailer%40hy:p%3Ass@127.0.0.1:{sink.port}{query}",
        "email_from": "Hongyan <no-reply@hongyan.example>",
    })


async def test_pending_emails_are_sent_once(db: Database, settings: Settings, sink: SmtpSink) -> None:
    email_id = await _queue(db)
    assert (await _row(db, email_id)).status == "pending"
    assert await deliver_pending(db, _smtp(settings, sink)) == 1
    assert sink.logins == [("mailer@hy", "p:ss")]  # user:pass from the URL, percent-decoded
    (sender, recipients, data), = sink.messages
    assert sender == "no-reply@hongyan.example" and recipients == ["zhao@example.cn"]
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert str(parsed["Subject"]) == "请确认您的邮箱地址 · 鸿雁"
    assert "verify-email?token=abc" in parsed.get_content()
    row = await _row(db, email_id)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None) and row.sent_at is not None
    assert await deliver_pending(db, _smtp(settings, sink)) == 0 and len(sink.messages) == 1


async def test_refusals_are_retried_then_fail(db: Database, settings: Settings, sink: SmtpSink) -> None:
    sink.refuse_rcpt = True
    email_id = await _queue(db)
    assert await deliver_pending(db, _smtp(settings, sink)) == 0
    row = await _row(db, email_id)
    assert (row.status, row.attempts) == ("pending", 1) and "no such mailbox" in (row.last_error or "")
    for _ in range(MAX_ATTEMPTS - 1):
        await deliver_pending(db, _smtp(settings, sink))
    row = await _row(db, email_id)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    await deliver_pending(db, _smtp(settings, sink))
    assert (await _row(db, email_id)).attempts == MAX_ATTEMPTS  # failed rows are left alone


async def test_smtp_without_starttls_sends_nothing(db: Database, settings: Settings, sink: SmtpSink) -> None:
    email_id = await _queue(db)
    assert await deliver_pending(db, _smtp(settings, sink, query="")) == 0
    assert sink.messages == [] and sink.logins == []  # the password never went over a plain connection
    assert "STARTTLS" in ((await _row(db, email_id)).last_error or "")


async def test_outbox_backend_sends_nothing(db: Database, settings: Settings, sink: SmtpSink) -> None:
    email_id = await _queue(db, backend="outbox")
    assert await deliver_pending(db, settings) == 0
    assert await deliver_pending(db, _smtp(settings, sink)) == 0  # "stored" rows are never sent
    assert (await _row(db, email_id)).status == "stored" and sink.messages == []
