"""Sign-up, verification, password policy and reset, sign-in throttling (service layer, both databases)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from hongyan.accounts import auth
from hongyan.accounts.models import AuthToken, EmailMessage, LoginThrottle, User
from hongyan.accounts.passwords import character_classes, check_password_policy
from hongyan.accounts.service import authenticate_user, check_password
from hongyan.audit.models import AuditEntry
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError, InvalidRequest
from hongyan.db.engine import Database

EMAIL = "li.lei@example.cn"
GOOD = "Blue-river 2024"


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short1A", "password_too_short"),
        ("abcdefghi", "password_too_short"),  # 9 < 10
        ("password123", "password_too_common"),
        ("PASSWORD123", "password_too_common"),  # compared lowercase
        ("woaini1314", "password_too_common"),
        ("qwertyuiop!", "password_too_common"),  # a trailing ! does not make it new
        ("li.lei@example.cn", "password_too_common"),  # the address itself
        ("my li.lei pass 9", "password_too_common"),  # contains the local part
        ("abcdefghijkl", "password_too_simple"),
        ("ABCDEFGHIJKL", "password_too_simple"),
        ("738295012345", "password_too_simple"),
        ("!!!!@@@@####", "password_too_simple"),
        ("abcdefghijk1", None),
        ("correct horse battery", None),  # lowercase + spaces
        ("鸿雁短信平台abcdefgh", None),  # CJK counts as "other"
        (GOOD, None),
    ],
)
def test_password_policy(password: str, code: str | None) -> None:
    if code is None:
        check_password_policy(password, email=EMAIL, min_length=10)
        return
    with pytest.raises(InvalidRequest) as caught:
        check_password_policy(password, email=EMAIL, min_length=10)
    assert (caught.value.code, caught.value.field) == (code, "password")


def test_password_min_length_comes_from_settings() -> None:
    check_password_policy("abcdef12", email=EMAIL, min_length=8)
    with pytest.raises(InvalidRequest, match="at least 13 characters"):
        check_password_policy("abcdefghi123", email=EMAIL, min_length=13)


@pytest.mark.parametrize(("password", "classes"), [("abc", 1), ("aB", 2), ("a1", 2), ("aB1!", 4), ("a b", 2), ("", 0)])
def test_character_classes(password: str, classes: int) -> None:
    assert character_classes(password) == classes


# -- registration and verification ----------------------------------------------------------------
def _token_in(body: str, path: str) -> str:
    match = re.search(rf"{re.escape(path)}\?token=([A-Za-z0-9_-]+)", body)
    assert match, body
    return match.group(1)


async def _register(db: Database, settings: Settings, email: str = EMAIL, locale: str = "zh-CN") -> User:
    async with db.write() as session:
        return await auth.register(session, settings, email=email, password=GOOD, company_name="雷氏贸易",
                                   locale=locale, ip="203.0.113.9")


async def _latest_email(db: Database, kind: str) -> EmailMessage:
    async with db.read() as session:
        email = await session.scalar(
            select(EmailMessage).where(EmailMessage.kind == kind).order_by(EmailMessage.created_at.desc()).limit(1)
        )
    assert email is not None, f"no {kind} email"
    return email


async def test_register_queues_verification_then_verify(db: Database, settings: Settings) -> None:
    user = await _register(db, settings, email="  Li.Lei@Example.CN ")
    assert user.email == EMAIL and user.email_verified_at is None
    email = await _latest_email(db, "verify_email")
    assert email.to_address == EMAIL and email.status == "stored"  # outbox backend: kept, not sent
    assert "确认" in email.subject and "24 小时" in email.body_text
    token = _token_in(email.body_text, f"{settings.effective_public_url}/console/verify-email")
    async with db.read() as session:
        stored = await session.scalar(select(AuthToken).where(AuthToken.user_id == user.id))
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "user.registered"))
    assert stored is not None and stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.expires_at - stored.created_at == timedelta(hours=24)
    assert audit is not None and audit.target_id == user.id and audit.ip == "203.0.113.9"

    async with db.write() as session:
        verified = await auth.verify_email(session, token)
    assert verified.email_verified_at is not None
    with pytest.raises(InvalidRequest) as caught:  # single use
        async with db.write() as session:
            await auth.verify_email(session, token)
    assert caught.value.code == "token_invalid"


async def test_register_english_and_duplicate_and_closed(db: Database, settings: Settings) -> None:
    await _register(db, settings, locale="en")
    email = await _latest_email(db, "verify_email")
    assert email.subject.startswith("Confirm your email") and "within 24 hours" in email.body_text
    with pytest.raises(InvalidRequest) as caught:
        await _register(db, settings)
    assert (caught.value.code, caught.value.field) == ("email_taken", "email")
    closed = settings.model_copy(update={"registration": "invite"})
    with pytest.raises(HongyanError) as refused:
        await _register(db, closed, email="other@example.cn")
    assert (refused.value.code, refused.value.status_code) == ("registration_closed", 403)


async def test_register_applies_the_policy_and_company_name(db: Database, settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as caught:
        async with db.write() as session:
            await auth.register(session, settings, email="a@b.cn", password="password123", company_name="X",
                                locale="zh-CN")
    assert caught.value.code == "password_too_common"
    with pytest.raises(InvalidRequest) as caught:
        async with db.write() as session:
            await auth.register(session, settings, email="a@b.cn", password=GOOD, company_name="  ", locale="zh-CN")
    assert (caught.value.code, caught.value.field) == ("company_name_required", "company_name")
    async with db.read() as session:
        assert await session.scalar(select(User).where(User.email == "a@b.cn")) is None


async def test_tokens_unknown_and_expired_are_the_same_error(db: Database, settings: Settings) -> None:
    await _register(db, settings)
    token = _token_in((await _latest_email(db, "verify_email")).body_text, "/console/verify-email")
    async with db.write() as session:
        await session.execute(update(AuthToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    messages = set()
    for candidate in (token, "no-such-token", ""):
        with pytest.raises(InvalidRequest) as caught:
            async with db.write() as session:
                await auth.verify_email(session, candidate)
        messages.add((caught.value.code, caught.value.message))
    assert len(messages) == 1 and next(iter(messages))[0] == "token_invalid"


# -- password reset and change -------------------------------------------------------------------
async def test_reset_flow_single_use(db: Database, settings: Settings) -> None:
    user = await _register(db, settings)
    async with db.write() as session:
        await auth.request_password_reset(session, settings, "nobody@example.cn")  # silent
        await auth.request_password_reset(session, settings, EMAIL.upper())
    async with db.read() as session:
        kinds = (await session.scalars(select(EmailMessage.to_address).where(EmailMessage.kind == "reset_password"))).all()
    assert kinds == [EMAIL]  # nothing queued for the unknown address
    token = _token_in((await _latest_email(db, "reset_password")).body_text, "/console/reset-password")

    with pytest.raises(InvalidRequest) as caught:  # a weak password does not burn the link
        async with db.write() as session:
            await auth.reset_password(session, settings, token, "12345678901")
    assert caught.value.code == "password_too_common"

    async with db.write() as session:
        changed = await auth.reset_password(session, settings, token, "New-password 77")
    assert changed.password_changed_at is not None and changed.password_hash != user.password_hash
    assert changed.email_verified_at is not None  # the link proved the mailbox
    async with db.read() as session:
        stored = await session.get(User, user.id)
    assert stored is not None and check_password(stored.password_hash, "New-password 77")
    with pytest.raises(InvalidRequest) as caught:
        async with db.write() as session:
            await auth.reset_password(session, settings, token, "Another-pass 88")
    assert caught.value.code == "token_invalid"


async def test_reset_token_expires_after_an_hour(db: Database, settings: Settings) -> None:
    await _register(db, settings)
    async with db.write() as session:
        await auth.request_password_reset(session, settings, EMAIL)
    token = _token_in((await _latest_email(db, "reset_password")).body_text, "/console/reset-password")
    async with db.read() as session:
        row = await session.scalar(select(AuthToken).where(AuthToken.purpose == "reset_password"))
    assert row is not None and row.expires_at - row.created_at == timedelta(hours=1)
    async with db.write() as session:
        await session.execute(update(AuthToken).where(AuthToken.id == row.id).values(expires_at=utcnow()))
    with pytest.raises(InvalidRequest, match="not valid"):
        async with db.write() as session:
            await auth.reset_password(session, settings, token, "New-password 77")


async def test_change_password(db: Database, settings: Settings) -> None:
    user = await _register(db, settings)
    with pytest.raises(InvalidRequest) as caught:
        async with db.write() as session:
            await auth.change_password(session, settings, user.id, "wrong password", "New-password 77")
    assert (caught.value.code, caught.value.field) == ("password_incorrect", "current_password")
    with pytest.raises(InvalidRequest) as caught:
        async with db.write() as session:
            await auth.change_password(session, settings, user.id, GOOD, "short")
    assert caught.value.code == "password_too_short"
    async with db.write() as session:
        await auth.change_password(session, settings, user.id, GOOD, "New-password 77")
        assert await authenticate_user(session, email=EMAIL, password="New-password 77") is not None


# -- throttling ------------------------------------------------------------------------------------
async def _fail(db: Database, settings: Settings, *, email: str = EMAIL, ip: str = "198.51.100.7") -> auth.Lockout | None:
    async with db.write() as session:
        await auth.check_login_allowed(session, settings, email=email, ip=ip)
        return await auth.record_login_failure(session, settings, email=email, ip=ip)


async def _allowed(db: Database, settings: Settings, *, email: str = EMAIL, ip: str = "198.51.100.7") -> HongyanError | None:
    try:
        async with db.read() as session:
            await auth.check_login_allowed(session, settings, email=email, ip=ip)
    except HongyanError as exc:
        return exc
    return None


async def test_email_lockout_after_max_failures_then_doubling(db: Database, settings: Settings) -> None:
    settings = settings.model_copy(update={"login_max_failures": 3, "login_lockout_s": 600})
    assert await _fail(db, settings) is None
    assert await _fail(db, settings) is None
    lockout = await _fail(db, settings)
    assert lockout is not None and lockout.retry_after_s == 600
    refused = await _allowed(db, settings)  # even with the right password the check comes first
    assert refused is not None and (refused.code, refused.status_code) == ("login_locked", 429)
    assert refused.headers is not None and 595 <= int(refused.headers["Retry-After"]) <= 600
    assert "Try again in 10 minutes" in refused.message
    assert await _allowed(db, settings, ip="192.0.2.1") is not None  # the email is locked from any address
    assert await _allowed(db, settings, email="other@example.cn") is None  # other emails from this IP are not

    # the lockout ends; three more failures lock again for twice as long
    async with db.write() as session:
        await session.execute(update(LoginThrottle).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert await _allowed(db, settings) is None
    await _fail(db, settings)
    await _fail(db, settings)
    second = await _fail(db, settings)
    assert second is not None and second.retry_after_s == 1200
    async with db.read() as session:
        key = await session.scalar(select(LoginThrottle.key).where(LoginThrottle.key.like("email:%")))
    assert key == auth.email_key(EMAIL) and EMAIL not in key and len(key) == len("email:") + 32


async def test_lockout_is_capped_at_a_day(db: Database, settings: Settings) -> None:
    settings = settings.model_copy(update={"login_max_failures": 1, "login_lockout_s": 50_000})
    first = await _fail(db, settings)
    assert first is not None and first.retry_after_s == 50_000
    async with db.write() as session:
        await session.execute(update(LoginThrottle).values(locked_until=None))
    second = await _fail(db, settings)
    assert second is not None and second.retry_after_s == 24 * 3600


async def test_success_resets_the_email_counter(db: Database, settings: Settings) -> None:
    settings = settings.model_copy(update={"login_max_failures": 3})
    await _fail(db, settings)
    await _fail(db, settings)
    async with db.write() as session:
        await auth.record_login_success(session, email=EMAIL)
    assert await _fail(db, settings) is None  # counting starts again: 1 of 3
    assert await _fail(db, settings) is None


async def test_ip_lockout_at_four_times_the_limit(db: Database, settings: Settings) -> None:
    settings = settings.model_copy(update={"login_max_failures": 2})
    ip = "2001:db8::42"
    for n in range(7):  # 7 different emails, one failure each: no email reaches 2
        assert await _fail(db, settings, email=f"user{n}@example.cn", ip=ip) is None
    lockout = await _fail(db, settings, email="user7@example.cn", ip=ip)  # the 8th from the IP
    assert lockout is not None
    refused = await _allowed(db, settings, email="fresh@example.cn", ip=ip)
    assert refused is not None and refused.code == "login_locked"
    assert await _allowed(db, settings, email="fresh@example.cn", ip="2001:db8::43") is None


async def test_concurrent_failures_are_all_counted(db: Database, settings: Settings) -> None:
    """First failures for a new key race on the insert (ON CONFLICT DO NOTHING) and then on the row lock."""
    settings = settings.model_copy(update={"login_max_failures": 100})

    async def fail_once() -> None:
        async with db.write() as session:
            await auth.record_login_failure(session, settings, email=EMAIL, ip="198.51.100.8")

    await asyncio.gather(*(fail_once() for _ in range(8)))
    async with db.read() as session:
        rows = {r.key: r.failures for r in (await session.scalars(select(LoginThrottle))).all()}
    assert rows == {auth.email_key(EMAIL): 8, auth.ip_key("198.51.100.8"): 8}
