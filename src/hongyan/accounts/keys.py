"""API keys: create, change, rotate with overlap, revoke; authenticate bearer secrets and HMAC signatures.

A bearer key is `<key id>.<secret>`; only a SHA-256 of the 256-bit secret is stored (a fast hash is
enough: there is no dictionary to attack, unlike passwords). A signing key instead holds a signing secret
that the server must know to check signatures, so it is sealed with AES-GCM (core.crypto), and such a key
refuses bearer use: its secret never travels. See docs/security.md for the signature format.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account, ApiKey
from hongyan.accounts.permissions import API_KEYS_MANAGE, Authority, require
from hongyan.audit.service import Actor, changes, record
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from hongyan.db.engine import Database

ALL_SCOPES = ("send", "read", "billing", "admin")
# platform staff: channels, routes (never part of a customer key by default; `hongyan admin create-key`)
OPERATOR_SCOPE = "operator"
MAX_CIDRS = 100
MAX_OVERLAP_HOURS = 30 * 24
SIGNATURE_SCHEME = "HONGYAN-HMAC-SHA256"
SIGNATURE_WINDOW_S = 300  # a signed request is accepted within ±5 min of its timestamp


@dataclass(frozen=True, slots=True)
class AccountContext:
    """Who is calling: the account, and the key or user acting for it."""

    account_id: str
    default_region: str
    currency: str
    key_id: str | None = None
    user_id: str | None = None
    scopes: tuple[str, ...] = ALL_SCOPES
    key_name: str | None = None
    rate_limit_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    token: str  # "<key id>.<secret>", shown once


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- validation ---------------------------------------------------------------------------------
def parse_cidrs(values: list[str], *, field: str = "allowed_cidrs") -> list[str]:
    """IPv4/IPv6 networks or single addresses → normalized CIDR strings (`10.0.0.0/8`, `2001:db8::/32`)."""
    if len(values) > MAX_CIDRS:
        raise InvalidRequest("too_many_cidrs", f"At most {MAX_CIDRS} networks per key.", field=field)
    out: list[str] = []
    for i, raw in enumerate(values):
        text = str(raw).strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidRequest(
                "invalid_cidr", f"'{text[:60]}' is not an IP address or network (e.g. 203.0.113.0/24, 2001:db8::/32).",
                field=f"{field}[{i}]",
            ) from None
        if str(network) not in out:
            out.append(str(network))
    return out


def _check_scopes(scopes: tuple[str, ...] | list[str], *, allow_operator: bool) -> list[str]:
    if not scopes:
        raise InvalidRequest("scopes_required", "Give the key at least one scope.", field="scopes")
    for i, scope in enumerate(scopes):
        if scope not in ALL_SCOPES and not (allow_operator and scope == OPERATOR_SCOPE):
            raise InvalidRequest("invalid_scope", f"Unknown scope '{scope}'.", field=f"scopes[{i}]")
    return list(dict.fromkeys(scopes))


def _check_expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("expiry_in_past", "The expiry must be in the future.", field="expires_at")
    return expires_at


def _check_rate(rate: float | None) -> float | None:
    if rate is not None and not (0 < rate <= 100_000):
        raise InvalidRequest("invalid_rate_limit", "The rate limit is requests per second, above 0.", field="rate_limit_per_s")
    return rate


def key_view(k: ApiKey) -> dict[str, Any]:
    """What the audit log and the API show of a key (never the secret or its hash)."""
    return {"name": k.name, "scopes": list(k.scopes), "allowed_cidrs": list(k.allowed_cidrs),
            "expires_at": isoformat(k.expires_at), "auth": "hmac" if k.signing_secret else "bearer",
            "rate_limit_per_s": k.rate_limit_per_s}


# -- changes ------------------------------------------------------------------------------------
async def create_api_key(
    session: AsyncSession, *, account_id: str, name: str, scopes: tuple[str, ...] = ALL_SCOPES,
    created_by: str | None = None, expires_at: datetime | None = None, allow_operator: bool = False,
    allowed_cidrs: list[str] | None = None, signing: bool = False, rate_limit_per_s: float | None = None,
    actor: Actor | None = None, authority: Authority | None = None,
) -> CreatedKey:
    """A new key. `authority` (a member or key acting) must be allowed to manage keys; None is the platform
    itself (first start, CLI)."""
    if authority is not None:
        require(authority, API_KEYS_MANAGE)
    if not name.strip():
        raise InvalidRequest("name_required", "Give the key a name.", field="name")
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=ids.new_id("key"), account_id=account_id, name=name.strip()[:200], secret_hash=secret_hash(secret),
        secret_hint=secret[-4:], scopes=_check_scopes(scopes, allow_operator=allow_operator),
        allowed_cidrs=parse_cidrs(allowed_cidrs or []), created_by=created_by, created_at=utcnow(),
        expires_at=_check_expiry(expires_at), revoked_at=None, last_used_at=None, is_test=False,
        signing_secret=secret if signing else None, rate_limit_per_s=_check_rate(rate_limit_per_s),
    )
    session.add(key)
    await session.flush()
    if actor is not None:
        await record(session, actor=actor, action="api_key.created", account_id=account_id, target_type="api_key",
                     target_id=key.id, after=key_view(key))
    return CreatedKey(key=key, token=f"{key.id}.{secret}")


async def list_api_keys(session: AsyncSession, *, account_id: str) -> list[ApiKey]:
    rows = await session.scalars(select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at.desc()))
    return list(rows)


async def get_api_key(session: AsyncSession, *, account_id: str, key_id: str, active: bool = False) -> ApiKey:
    """The caller's key, or 404 (another account's key id answers exactly like a made-up one)."""
    key = await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id).with_for_update()
    )
    if key is None or (active and key.revoked_at is not None):
        raise NotFound("api_key_not_found", "No such active API key." if active else "No such API key.", field="key_id")
    return key


async def update_api_key(
    session: AsyncSession, *, account_id: str, key_id: str, actor: Actor | None, name: str | None = None,
    scopes: list[str] | None = None, allowed_cidrs: list[str] | None = None,
    expires_at: datetime | None = None, clear_expiry: bool = False, rate_limit_per_s: float | None = None,
    clear_rate_limit: bool = False, authority: Authority | None = None,
) -> ApiKey:
    if authority is not None:
        require(authority, API_KEYS_MANAGE)
    key = await get_api_key(session, account_id=account_id, key_id=key_id, active=True)
    before = key_view(key)
    if name is not None:
        if not name.strip():
            raise InvalidRequest("name_required", "Give the key a name.", field="name")
        key.name = name.strip()[:200]
    if scopes is not None:
        key.scopes = _check_scopes(scopes, allow_operator=OPERATOR_SCOPE in key.scopes)
    if allowed_cidrs is not None:
        key.allowed_cidrs = parse_cidrs(allowed_cidrs)
    if clear_expiry:
        key.expires_at = None
    elif expires_at is not None:
        key.expires_at = _check_expiry(expires_at)
    if clear_rate_limit:
        key.rate_limit_per_s = None
    elif rate_limit_per_s is not None:
        key.rate_limit_per_s = _check_rate(rate_limit_per_s)
    await session.flush()
    old, new = changes(before, key_view(key))
    if actor is not None and new:
        await record(session, actor=actor, action="api_key.updated", account_id=account_id, target_type="api_key",
                     target_id=key.id, before=old, after=new)
    return key


async def rotate_api_key(
    session: AsyncSession, *, account_id: str, key_id: str, overlap_hours: float = 24, actor: Actor | None = None,
    created_by: str | None = None, authority: Authority | None = None,
) -> CreatedKey:
    """A new key with the same settings; the old one keeps working for `overlap_hours`, then expires."""
    if authority is not None:
        require(authority, API_KEYS_MANAGE)
    if not (0 <= overlap_hours <= MAX_OVERLAP_HOURS):
        raise InvalidRequest("invalid_overlap", f"The overlap is 0 to {MAX_OVERLAP_HOURS} hours.", field="overlap_hours")
    old = await get_api_key(session, account_id=account_id, key_id=key_id, active=True)
    if old.rotated_to is not None:
        raise InvalidRequest("api_key_already_rotated", f"This key was already replaced by {old.rotated_to}.",
                             field="key_id")
    created = await create_api_key(
        session, account_id=account_id, name=old.name, scopes=tuple(old.scopes), created_by=created_by,
        expires_at=old.expires_at if old.expires_at and old.expires_at > utcnow() else None,
        allow_operator=OPERATOR_SCOPE in old.scopes, allowed_cidrs=list(old.allowed_cidrs),
        signing=old.signing_secret is not None, rate_limit_per_s=old.rate_limit_per_s,
    )
    ends = utcnow() + timedelta(hours=overlap_hours)
    if old.expires_at is None or old.expires_at > ends:
        old.expires_at = ends
    old.rotated_to = created.key.id
    await session.flush()
    if actor is not None:
        await record(session, actor=actor, action="api_key.rotated", account_id=account_id, target_type="api_key",
                     target_id=old.id, after={"replaced_by": created.key.id, "old_key_expires_at": isoformat(old.expires_at)})
    return created


async def revoke_api_key(session: AsyncSession, *, account_id: str, key_id: str, actor: Actor | None = None,
                         authority: Authority | None = None) -> None:
    if authority is not None:
        require(authority, API_KEYS_MANAGE)
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound("api_key_not_found", "No such active API key.", field="key_id")
    if actor is not None:
        await record(session, actor=actor, action="api_key.revoked", account_id=account_id, target_type="api_key",
                     target_id=key_id)


# -- authentication -----------------------------------------------------------------------------
_INVALID = Unauthorized(
    "invalid_api_key", "The API key is not valid. Send `Authorization: Bearer <key id>.<secret>`.", field="Authorization"
)


class NonceMemory(Protocol):
    async def add_nonce(self, key_id: str, nonce: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The parts of an HMAC-signed request (`Authorization: HONGYAN-HMAC-SHA256 key=…,ts=…,nonce=…,sig=…`)."""

    key_id: str
    timestamp: str
    nonce: str
    signature: str


def parse_signature_header(value: str) -> SignedRequest:
    fields: dict[str, str] = {}
    for part in value.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip().lower()] = val.strip()
    missing = [f for f in ("key", "ts", "nonce", "sig") if not fields.get(f)]
    if missing:
        raise Unauthorized("invalid_signature", f"The signature header lacks {', '.join(missing)}; send "
                           f"`Authorization: {SIGNATURE_SCHEME} key=<key id>,ts=<unix seconds>,nonce=<random>,sig=<hex>`.",
                           field="Authorization")
    return SignedRequest(fields["key"], fields["ts"], fields["nonce"], fields["sig"])


def string_to_sign(*, timestamp: str, nonce: str, method: str, path_qs: str, body: bytes) -> bytes:
    """What the signature covers: time, nonce, method, path with query, and the body's SHA-256."""
    return "\n".join((timestamp, nonce, method.upper(), path_qs, hashlib.sha256(body).hexdigest())).encode()


def sign(secret: str, *, timestamp: str, nonce: str, method: str, path_qs: str, body: bytes) -> str:
    """The client side (also used by the SDK examples and tests)."""
    data = string_to_sign(timestamp=timestamp, nonce=nonce, method=method, path_qs=path_qs, body=body)
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


# every API request reads its key: the statement is built once, and run without a transaction around it
_KEY_QUERY = (select(ApiKey, Account.default_region, Account.currency, Account.status)
              .join(Account, Account.id == ApiKey.account_id).where(ApiKey.id == bindparam("key_id")))


async def _load_key(db: Database, key_id: str) -> Any:
    async with db.autocommit() as session:
        return (await session.execute(_KEY_QUERY, {"key_id": key_id})).first()


def _context_for(row: Any, ip: str | None) -> AccountContext:
    key: ApiKey = row.ApiKey
    now = utcnow()
    if key.revoked_at is not None:
        raise Unauthorized("api_key_revoked", "This API key was revoked.", field="Authorization")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("api_key_expired", "This API key has expired.", field="Authorization")
    if row.status != "active":
        raise Unauthorized("account_suspended", "The account of this API key is not active.", field="Authorization")
    if key.allowed_cidrs and not ip_allowed(ip, key.allowed_cidrs):
        raise Forbidden("ip_not_allowed", f"Requests from {ip or 'this address'} are not in this key's IP allow-list.",
                        field="Authorization")
    return AccountContext(
        account_id=key.account_id, default_region=row.default_region, currency=row.currency, key_id=key.id,
        scopes=tuple(key.scopes), key_name=key.name, rate_limit_per_s=key.rate_limit_per_s,
    )


def ip_allowed(ip: str | None, cidrs: list[str]) -> bool:
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:203.0.113.5 is 203.0.113.5
    return any(address in ipaddress.ip_network(c) for c in cidrs)


async def authenticate_api_key(db: Database, token: str, *, ip: str | None = None) -> AccountContext:
    """Check a bearer token `<key id>.<secret>`; raises Unauthorized/Forbidden with a precise code."""
    key_id, _, secret = token.strip().partition(".")
    if not secret or not ids.looks_like(key_id, "key"):
        raise _INVALID
    row = await _load_key(db, key_id)
    if row is None or not hmac.compare_digest(row.ApiKey.secret_hash, secret_hash(secret)):
        raise _INVALID
    if row.ApiKey.signing_secret is not None:
        raise Unauthorized("signature_required", "This key signs requests (HMAC); it cannot be used as a bearer "
                           "secret.", field="Authorization")
    return _context_for(row, ip)


async def authenticate_signature(
    db: Database, header_value: str, *, method: str, path_qs: str, body: bytes, ip: str | None,
    nonces: NonceMemory, now: float | None = None,
) -> AccountContext:
    """Check a signed request; `nonces` remembers used nonces (per process, or shared through Redis)."""
    signed = parse_signature_header(header_value)
    if not ids.looks_like(signed.key_id, "key"):
        raise _INVALID
    now = time.time() if now is None else now
    try:
        ts = int(signed.timestamp)
    except ValueError:
        raise Unauthorized("invalid_signature", "ts must be the Unix time in seconds.", field="Authorization") from None
    if abs(now - ts) > SIGNATURE_WINDOW_S:
        raise Unauthorized("signature_expired", f"The signature's time is {int(now - ts)} s away from the server's; "
                           f"it must be within {SIGNATURE_WINDOW_S} s (check the client's clock).", field="Authorization")
    row = await _load_key(db, signed.key_id)
    if row is None or row.ApiKey.signing_secret is None:
        raise _INVALID
    expected = sign(row.ApiKey.signing_secret, timestamp=signed.timestamp, nonce=signed.nonce, method=method,
                    path_qs=path_qs, body=body)
    if not hmac.compare_digest(expected, signed.signature.lower()):
        raise Unauthorized("invalid_signature", "The signature does not match the request (method, path, query, "
                           "body, ts and nonce are signed).", field="Authorization")
    ctx = _context_for(row, ip)
    if not await nonces.add_nonce(signed.key_id, signed.nonce):
        raise Unauthorized("signature_replayed", "This nonce was already used; sign each request with a new nonce.",
                           field="Authorization")
    return ctx


async def touch_api_key(db: Database, key_id: str, ip: str | None = None) -> None:
    """Record last use (time and IP) at most once a minute per key (keeps the hot path free of writes)."""
    now = utcnow()
    async with db.write() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id).where(
                (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now.replace(second=0, microsecond=0))
            ).values(last_used_at=now, last_used_ip=ip)
        )
