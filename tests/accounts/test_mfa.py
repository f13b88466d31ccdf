"""TOTP enrolment and verification with codes from pyotp (as an authenticator app makes them), replay
refusal, single-use recovery codes, disabling, and "require MFA" (both databases)."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from sqlalchemy import select

from hongyan.accounts import mfa
from hongyan.accounts.models import Account, User
from hongyan.accounts.service import create_account, create_user
from hongyan.audit.models import AuditEntry
from hongyan.core.errors import HongyanError, InvalidRequest
from hongyan.db.engine import Database

PASSWORD = "Blue-river 2024"
NOW = 1_800_000_015.0  # a fixed instant, middle of a 30 s step


async def _user(db: Database, email: str = "mei@example.cn", role: str = "owner") -> tuple[str, str]:
    async with db.write() as session:
        account = await create_account(session, name="Mei Co")
        user = await create_user(session, email=email, password=PASSWORD, account_id=account.id, role=role)
    return user.id, account.id


async def _enrolled(db: Database) -> tuple[str, str, str, list[str]]:
    user_id, account_id = await _user(db)
    secret = pyotp.random_base32()
    async with db.write() as session:
        codes = await mfa.confirm_enrolment(session, user_id, secret, pyotp.TOTP(secret).at(NOW), account_id=account_id,
                                            now=NOW)
    return user_id, account_id, secret, codes


async def _actions(db: Database) -> list[str]:
    async with db.read() as session:
        return list((await session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq))).all())


def test_start_enrolment_gives_uri_and_inline_qr() -> None:
    user = User(email="mei@example.cn")
    enrolment = mfa.start_enrolment(user)
    url = urlsplit(enrolment.uri)
    query = parse_qs(url.query)
    assert url.scheme == "otpauth" and url.netloc == "totp"
    assert unquote(url.path) == "/Hongyan:mei@example.cn"
    assert query["secret"] == [enrolment.secret] and query["issuer"] == ["Hongyan"]
    assert len(base64.b32decode(enrolment.secret)) >= 20  # 160 bits (RFC 4226 §4 R6 recommends it)
    assert enrolment.qr_data_uri.startswith("data:image/svg+xml")
    assert "http" not in enrolment.qr_data_uri.split(",", 1)[1].replace("http%3A%2F%2Fwww.w3.org", "")
    assert mfa.start_enrolment(user).secret != enrolment.secret


@pytest.mark.parametrize(("offset", "accepted"), [(-60, False), (-30, True), (0, True), (30, True), (60, False)])
def test_matching_step_allows_one_step_of_drift(offset: int, accepted: bool) -> None:
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(NOW + offset)
    step = mfa.matching_step(secret, code, now=NOW)
    assert (step is not None) == accepted
    if accepted:
        assert step == int((NOW + offset) // 30)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5"])
def test_matching_step_rejects_malformed(code: str) -> None:
    assert mfa.matching_step(pyotp.random_base32(), code, now=NOW) is None


async def test_confirm_enrolment_needs_a_right_code(db: Database) -> None:
    user_id, _account = await _user(db)
    secret = pyotp.random_base32()
    wrong = f"{(int(pyotp.TOTP(secret).at(NOW)) + 1) % 1_000_000:06d}"
    with pytest.raises(InvalidRequest) as caught:
        async with db.write() as session:
            await mfa.confirm_enrolment(session, user_id, secret, wrong, now=NOW)
    assert (caught.value.code, caught.value.field) == ("mfa_code_invalid", "code")
    async with db.read() as session:
        user = await session.get(User, user_id)
    assert user is not None and user.mfa_enabled_at is None and user.mfa_secret is None


async def test_enrol_then_verify_once_and_replay_refused(db: Database) -> None:
    user_id, _account, secret, codes = await _enrolled(db)
    assert len(codes) == 10 and len(set(codes)) == 10
    async with db.read() as session:
        user = await session.get(User, user_id)
    assert user is not None and user.mfa_secret == secret and user.mfa_enabled_at is not None
    assert all(len(h) == 64 for h in user.mfa_recovery_hashes) and not set(codes) & set(user.mfa_recovery_hashes)
    # the code used to confirm cannot be used again to sign in (same step)
    with pytest.raises(InvalidRequest):
        async with db.write() as session:
            await mfa.verify(session, user_id, pyotp.TOTP(secret).at(NOW), now=NOW)
    later = NOW + 30
    async with db.write() as session:
        assert await mfa.verify(session, user_id, pyotp.TOTP(secret).at(later), now=later) == "totp"
    with pytest.raises(InvalidRequest) as caught:  # replay of the same code, same step
        async with db.write() as session:
            await mfa.verify(session, user_id, pyotp.TOTP(secret).at(later), now=later + 5)
    assert caught.value.code == "mfa_code_invalid"
    with pytest.raises(InvalidRequest):  # an older (still in the window) step after a newer one
        async with db.write() as session:
            await mfa.verify(session, user_id, pyotp.TOTP(secret).at(NOW), now=later + 5)
    assert "mfa.enabled" in await _actions(db)


async def test_verify_with_real_clock(db: Database) -> None:
    user_id, _account = await _user(db)
    secret = pyotp.random_base32()
    async with db.write() as session:
        await mfa.confirm_enrolment(session, user_id, secret, pyotp.TOTP(secret).now())
    # the confirming code's step is spent: the next step's code passes (drift window)
    next_code = pyotp.TOTP(secret).at(time.time() + 30)
    async with db.write() as session:
        assert await mfa.verify(session, user_id, next_code) == "totp"


async def test_recovery_codes_work_once(db: Database) -> None:
    user_id, _account, _secret, codes = await _enrolled(db)
    async with db.write() as session:
        assert await mfa.verify(session, user_id, codes[3].upper().replace("-", " "), now=NOW) == "recovery"
    with pytest.raises(InvalidRequest):
        async with db.write() as session:
            await mfa.verify(session, user_id, codes[3], now=NOW)
    async with db.write() as session:
        assert await mfa.verify(session, user_id, codes[4], now=NOW) == "recovery"
    async with db.read() as session:
        user = await session.get(User, user_id)
    assert user is not None and len(user.mfa_recovery_hashes) == 8
    assert (await _actions(db)).count("mfa.recovery_code_used") == 2


async def test_double_enrolment_refused_and_disable_needs_password(db: Database) -> None:
    user_id, _account, secret, _codes = await _enrolled(db)
    with pytest.raises(HongyanError) as caught:
        async with db.write() as session:
            await mfa.confirm_enrolment(session, user_id, secret, pyotp.TOTP(secret).at(NOW + 60), now=NOW + 60)
    assert (caught.value.code, caught.value.status_code) == ("mfa_already_enabled", 409)
    with pytest.raises(InvalidRequest) as wrong:
        async with db.write() as session:
            await mfa.disable(session, user_id, "not my password")
    assert (wrong.value.code, wrong.value.field) == ("password_incorrect", "password")
    async with db.write() as session:
        await mfa.disable(session, user_id, PASSWORD)
    async with db.read() as session:
        user = await session.get(User, user_id)
    assert user is not None and user.mfa_enabled_at is None and user.mfa_secret is None
    assert user.mfa_recovery_hashes == []
    with pytest.raises(InvalidRequest):  # no MFA: nothing verifies
        async with db.write() as session:
            await mfa.verify(session, user_id, pyotp.TOTP(secret).at(NOW + 90), now=NOW + 90)
    assert (await _actions(db))[-1] == "mfa.disabled"


async def test_require_mfa_rules(db: Database) -> None:
    owner_id, account_id, _secret, _codes = await _enrolled(db)
    async with db.write() as session:
        dev = await create_user(session, email="dev@example.cn", password=PASSWORD, account_id=account_id,
                                role="developer")
    with pytest.raises(HongyanError) as caught:
        async with db.write() as session:
            await mfa.set_require_mfa(session, account_id=account_id, user_id=dev.id, enabled=True)
    assert (caught.value.code, caught.value.status_code) == ("forbidden", 403)
    async with db.write() as session:
        await mfa.set_require_mfa(session, account_id=account_id, user_id=owner_id, enabled=True)
    async with db.read() as session:
        account = await session.get(Account, account_id)
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "account.require_mfa_changed"))
    assert account is not None and account.require_mfa is True
    assert entry is not None and entry.before == {"require_mfa": False} and entry.after == {"require_mfa": True}

    other_id, other_account = await _user(db, email="boss@example.cn")  # owner without MFA of their own
    with pytest.raises(InvalidRequest) as first:
        async with db.write() as session:
            await mfa.set_require_mfa(session, account_id=other_account, user_id=other_id, enabled=True)
    assert (first.value.code, first.value.field) == ("mfa_not_enabled", "require_mfa")
