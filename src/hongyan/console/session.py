"""Console sessions in a signed cookie (itsdangerous), CSRF tokens tied to them, and one-shot flashes.

Every visitor gets a session with a random `sid`, logged in or not, so the login form carries a CSRF
token too. Logging in and out issue a new `sid` (no session fixation; old tokens die). The cookie also
carries a fingerprint of the password hash: resetting a password ends the sessions opened before it.
Nothing is stored server-side; a stolen cookie stays valid until it expires (SESSION_MAX_AGE idle).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "hongyan_session"
FLASH_COOKIE = "hongyan_flash"
COOKIE_PATH = "/console"
SESSION_MAX_AGE = 8 * 3600  # seconds without a request before one must log in again
RENEW_AFTER = 10 * 60  # re-sign the cookie (sliding expiry) at most this often
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(slots=True)
class SessionData:
    sid: str
    user_id: str | None = None
    account_id: str | None = None
    password_mark: str | None = None
    # password accepted, TOTP code still due (not logged in until it passes); set at this Unix time
    mfa_pending_user_id: str | None = None
    mfa_pending_since: float | None = None
    needs_cookie: bool = False  # new or renewed: the response must (re)set the cookie

    @classmethod
    def anonymous(cls) -> SessionData:
        return cls(sid=secrets.token_urlsafe(18), needs_cookie=True)

    @property
    def logged_in(self) -> bool:
        return self.user_id is not None and self.account_id is not None


@dataclass(frozen=True, slots=True)
class Flash:
    """A message shown once on the next page: kind is success | error | info; text is a catalog key."""

    kind: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    link: str | None = None


def password_mark(password_hash: str) -> str:
    """A short fingerprint of the stored password hash (changes when the password does)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class SessionCodec:
    """Signs and checks the session and flash cookies, and derives CSRF tokens, with the console secret."""

    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key.encode()
        self._sessions = URLSafeTimedSerializer(secret_key, salt="hongyan.console.session")
        self._flashes = URLSafeTimedSerializer(secret_key, salt="hongyan.console.flash")

    def dumps(self, session: SessionData) -> str:
        return self._sessions.dumps(
            {
                "sid": session.sid,
                "uid": session.user_id,
                "aid": session.account_id,
                "pwm": session.password_mark,
                "mfa": [session.mfa_pending_user_id, session.mfa_pending_since]
                if session.mfa_pending_user_id
                else None,
            }
        )

    def loads(self, cookie: str | None, *, now: float) -> SessionData:
        """The session in the cookie, or a fresh anonymous one if it is missing, forged or expired."""
        if not cookie:
            return SessionData.anonymous()
        try:
            data, signed_at = self._sessions.loads(cookie, max_age=SESSION_MAX_AGE, return_timestamp=True)
        except BadSignature:  # includes SignatureExpired
            return SessionData.anonymous()
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return SessionData.anonymous()
        mfa = data.get("mfa")
        pending = mfa if isinstance(mfa, list) and len(mfa) == 2 else [None, None]
        return SessionData(
            sid=data["sid"],
            mfa_pending_user_id=pending[0],
            mfa_pending_since=pending[1],
            user_id=data.get("uid"),
            account_id=data.get("aid"),
            password_mark=data.get("pwm"),
            needs_cookie=now - signed_at.timestamp() > RENEW_AFTER,
        )

    def csrf_token(self, session: SessionData) -> str:
        return hmac.new(self._secret, b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, session: SessionData, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), str(token))

    def dump_flash(self, flash: Flash) -> str:
        return self._flashes.dumps(
            {"kind": flash.kind, "key": flash.key, "params": flash.params, "link": flash.link}
        )

    def load_flash(self, cookie: str | None) -> Flash | None:
        if not cookie:
            return None
        try:
            data = self._flashes.loads(cookie, max_age=300)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        return Flash(
            kind=str(data.get("kind", "info")),
            key=str(data.get("key", "")),
            params=dict(data.get("params") or {}),
            link=data.get("link"),
        )
