"""Encryption at rest: AES-256-GCM for phone numbers and message content, and a keyed blind index.

A stored value looks like `enc1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id names which
key of the keyring sealed it, so keys can be rotated: new writes use the active (first) key, older keys
stay in the ring for reading until `hongyan security re-encrypt` has rewritten every row. Values without
the prefix are plaintext (written while encryption was off, or before it existed) and read as they are;
plaintext that happens to start with `enc1:` or `enc0:` is stored as `enc0:` + text, so it is never
mistaken for a sealed value.

Equality search on an encrypted number uses a blind index: HMAC-SHA256 of the E.164 number under a
separate key, truncated to 128 bits. It reveals which rows share a number, never the number.

The column types (`EncryptedText`, `EncryptedJson`, `EncryptedBytes`) seal in the driver's bind step and
open in the result step, so bulk Core inserts and updates are covered like ORM writes. The keyring is
process-wide (`configure`), built from the settings by the app factory, the CLI and the workers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import LargeBinary, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

PREFIX = "enc1:"
_BYTES_PREFIX = PREFIX.encode()
# plaintext that itself begins like a stored value (a user may type "enc1:…") is kept behind this escape
PLAIN_ESCAPE = "enc0:"
_BYTES_ESCAPE = PLAIN_ESCAPE.encode()
NONCE_BYTES = 12  # NIST SP 800-38D §8.2: 96-bit random nonces; 2^32 messages per key stay far below the bound


class DecryptionError(Exception):
    """A value was sealed with a key this process does not have (configuration error, not user input)."""


class KeyringError(ValueError):
    """HONGYAN_ENCRYPTION_KEYS or HONGYAN_BLIND_INDEX_KEY is malformed."""


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key_text(key_id: str) -> str:
    """A fresh `id:base64url(32 random bytes)` entry for HONGYAN_ENCRYPTION_KEYS."""
    return f"{key_id}:{_b64encode(secrets.token_bytes(32))}"


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """`k2:…,k1:…` → [(id, 32-byte key)], active first."""
    keys: list[tuple[str, bytes]] = []
    for n, item in enumerate(p.strip() for p in text.replace("\n", ",").split(",")):
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id.isalnum() or len(key_id) > 16:
            raise KeyringError(f"encryption key #{n + 1}: write it as <id>:<base64url key>, id letters/digits")
        try:
            raw = _b64decode(encoded)
        except ValueError as exc:
            raise KeyringError(f"encryption key '{key_id}': not base64url") from exc
        if len(raw) != 32:
            raise KeyringError(f"encryption key '{key_id}': needs 32 bytes (AES-256), has {len(raw)}")
        if any(k == key_id for k, _ in keys):
            raise KeyringError(f"encryption key id '{key_id}' appears twice")
        keys.append((key_id, raw))
    return keys


@dataclass(slots=True)
class Keyring:
    """The keys to seal (active) and open (all), the blind-index key, and whether new writes are sealed."""

    keys: dict[str, AESGCM]
    active_id: str
    index_key: bytes
    enabled: bool = True

    @classmethod
    def build(cls, keys: list[tuple[str, bytes]], index_key: bytes, *, enabled: bool = True) -> Keyring:
        if not keys:
            raise KeyringError("no encryption key configured")
        return cls({k: AESGCM(v) for k, v in keys}, keys[0][0], index_key, enabled)

    # -- text -----------------------------------------------------------------------------------
    def seal(self, plaintext: str, *, aad: bytes = b"") -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keys[self.active_id].encrypt(nonce, plaintext.encode(), aad or None)
        return f"{PREFIX}{self.active_id}:{_b64encode(nonce + sealed)}"

    def open(self, stored: str, *, aad: bytes = b"") -> str:
        if stored.startswith(PLAIN_ESCAPE):
            return stored[len(PLAIN_ESCAPE):]
        if not stored.startswith(PREFIX):
            return stored  # plaintext row (encryption off when written, or not yet re-encrypted)
        key_id, _, payload = stored[len(PREFIX):].partition(":")
        return self._open_raw(key_id, _b64decode(payload), aad).decode()

    @staticmethod
    def plain(text: str) -> str:
        """How plaintext is stored (encryption off, or --decrypt): as is, unless it looks like a stored value."""
        return PLAIN_ESCAPE + text if text.startswith((PREFIX, PLAIN_ESCAPE)) else text

    @staticmethod
    def plain_bytes(data: bytes) -> bytes:
        return _BYTES_ESCAPE + data if data.startswith((_BYTES_PREFIX, _BYTES_ESCAPE)) else data

    def key_id_of(self, stored: str | bytes | None) -> str | None:
        """Which key sealed a stored value (None for plaintext): what re-encrypt looks for."""
        if isinstance(stored, bytes):
            if not stored.startswith(_BYTES_PREFIX):
                return None
            return stored[len(_BYTES_PREFIX):].split(b":", 1)[0].decode()
        if not stored or not stored.startswith(PREFIX):
            return None
        return stored[len(PREFIX):].split(":", 1)[0]

    # -- bytes ----------------------------------------------------------------------------------
    def seal_bytes(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return _BYTES_PREFIX + self.active_id.encode() + b":" + nonce + self.keys[self.active_id].encrypt(
            nonce, plaintext, None
        )

    def open_bytes(self, stored: bytes) -> bytes:
        if stored.startswith(_BYTES_ESCAPE):
            return stored[len(_BYTES_ESCAPE):]
        if not stored.startswith(_BYTES_PREFIX):
            return stored
        key_id, _, payload = stored[len(_BYTES_PREFIX):].partition(b":")
        return self._open_raw(key_id.decode(), payload, b"")

    def _open_raw(self, key_id: str, payload: bytes, aad: bytes) -> bytes:
        aes = self.keys.get(key_id)
        if aes is None:
            raise DecryptionError(
                f"data sealed with encryption key '{key_id}', which is not in HONGYAN_ENCRYPTION_KEYS "
                "(keep retired keys in the list until `hongyan security re-encrypt` has finished)"
            )
        try:
            return aes.decrypt(payload[:NONCE_BYTES], payload[NONCE_BYTES:], aad or None)
        except InvalidTag as exc:
            raise DecryptionError(f"a value sealed with key '{key_id}' fails authentication (altered or wrong key)") from exc

    # -- blind index ----------------------------------------------------------------------------
    def blind_index(self, value: str) -> str:
        """HMAC-SHA256(index key, value) → 32 hex chars: equal inputs, equal outputs; nothing else leaks."""
        return hmac.new(self.index_key, value.encode(), hashlib.sha256).hexdigest()[:32]


_keyring: Keyring | None = None


def configure(keyring: Keyring) -> None:
    global _keyring
    _keyring = keyring


def keyring() -> Keyring:
    """The process keyring; built from the default settings if nothing configured it yet."""
    if _keyring is None:
        from hongyan.config import get_settings

        configure(keyring_from_settings(get_settings()))
    assert _keyring is not None
    return _keyring


def _key_file(path: Path, make: Any) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    text: str = make()
    path.write_text(text + "\n")
    path.chmod(0o600)
    return text


def keyring_from_settings(settings: Any) -> Keyring:
    """Keys from HONGYAN_ENCRYPTION_KEYS / HONGYAN_BLIND_INDEX_KEY, or generated once into the data directory."""
    keys_text = settings.encryption_keys or _key_file(
        Path(settings.data_dir) / "encryption_keys", lambda: new_key_text("k1")
    )
    index_text = settings.blind_index_key or _key_file(
        Path(settings.data_dir) / "blind_index_key", lambda: _b64encode(secrets.token_bytes(32))
    )
    try:
        index_key = _b64decode(index_text.strip())
    except ValueError as exc:
        raise KeyringError("blind index key: not base64url") from exc
    if len(index_key) < 32:
        raise KeyringError("blind index key: needs at least 32 bytes")
    return Keyring.build(parse_keys(keys_text), index_key, enabled=settings.encryption != "off")


def blind_index(value: str | None) -> str | None:
    return None if value is None else keyring().blind_index(value)


# -- column types -------------------------------------------------------------------------------
class EncryptedText(TypeDecorator[str]):
    """Text sealed with AES-GCM when encryption is on; plaintext rows still read."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        ring = keyring()
        return ring.seal(value) if ring.enabled else ring.plain(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring().open(value)


class EncryptedJson(TypeDecorator[Any]):
    """A JSON document stored as sealed text (JSON operators cannot look inside; nothing here needs them)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        text = orjson.dumps(value).decode()
        ring = keyring()
        return ring.seal(text) if ring.enabled else text

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(keyring().open(value))


class EncryptedBytes(TypeDecorator[bytes]):
    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        ring = keyring()
        return ring.seal_bytes(value) if ring.enabled else ring.plain_bytes(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> bytes | None:
        return None if value is None else keyring().open_bytes(bytes(value))
