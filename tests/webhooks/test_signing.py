from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from hongyan.webhooks.sender import retry_delay
from hongyan.webhooks.signing import sign, verify


def test_signature_matches_documented_recipe() -> None:
    body = b'{"id":"evt_1"}'
    header = sign("whsec_abc", body, timestamp=1_700_000_000)
    expected = hmac.new(b"whsec_abc", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verify_accepts_fresh_and_rejects_tampered_old_or_malformed() -> None:
    body = b'{"a":1}'
    header = sign("s", body, timestamp=1000)
    assert verify("s", body, header, now=1100)
    assert not verify("s", body + b" ", header, now=1100)
    assert not verify("other", body, header, now=1100)
    assert not verify("s", body, header, now=1000 + 301)
    assert not verify("s", body, "garbage", now=1000)
    assert not verify("s", body, "t=x,v1=y", now=1000)


@given(st.binary(max_size=500), st.text(min_size=1, max_size=40))
def test_roundtrip(body: bytes, secret: str) -> None:
    assert verify(secret, body, sign(secret, body))


def test_backoff_doubles_and_caps() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay(30) == timedelta(hours=1)
