"""The role → permission table, scopes → permissions, and require()."""

from __future__ import annotations

from typing import Any

import pytest

from hongyan.accounts import permissions as p
from hongyan.core.errors import Forbidden

Y, N = True, False
# permission: owner admin developer finance viewer
TABLE = {
    p.MESSAGES_SEND:       (Y, Y, Y, N, N),
    p.MESSAGES_READ:       (Y, Y, Y, Y, Y),
    p.API_KEYS_MANAGE:     (Y, Y, Y, N, N),
    p.WEBHOOKS_MANAGE:     (Y, Y, Y, N, N),
    p.BILLING_READ:        (Y, Y, Y, Y, Y),
    p.BILLING_MANAGE:      (Y, Y, N, Y, N),
    p.MEMBERS_READ:        (Y, Y, Y, Y, Y),
    p.MEMBERS_MANAGE:      (Y, Y, N, N, N),
    p.SUB_ACCOUNTS_MANAGE: (Y, Y, N, N, N),
    p.ACCOUNT_SETTINGS:    (Y, Y, N, N, N),
    p.AUDIT_READ:          (Y, Y, N, N, N),
}


def test_table_covers_every_customer_permission() -> None:
    assert set(TABLE) == set(p.CUSTOMER_PERMISSIONS)


@pytest.mark.parametrize("permission", sorted(TABLE))
@pytest.mark.parametrize("index,role", list(enumerate(p.CUSTOMER_ROLES)))
def test_role_permission(index: int, role: str, permission: str) -> None:
    expected = TABLE[permission][index]
    assert (permission in p.permissions_of_role(role)) is expected
    if expected:
        p.require(role, permission)
    else:
        with pytest.raises(Forbidden) as exc:
            p.require(role, permission)
        assert exc.value.code == "permission_denied" and exc.value.field is None
        assert p.PERMISSION_WORDS[permission] in exc.value.message


@pytest.mark.parametrize("role", p.PLATFORM_ROLES)
def test_platform_roles_never_grant_customer_permissions(role: str) -> None:
    granted = p.permissions_of_role(role)
    assert granted and all(x.startswith("operator.") for x in granted)
    for role_c in p.CUSTOMER_ROLES:
        assert not any(x.startswith("operator.") for x in p.permissions_of_role(role_c))


def test_platform_role_table() -> None:
    assert p.permissions_of_role("platform_admin") == frozenset(p.OPERATOR_PERMISSIONS)
    assert p.OPERATOR_REVIEW in p.permissions_of_role("reviewer")
    assert p.OPERATOR_CHANNELS_MANAGE not in p.permissions_of_role("support")
    assert p.OPERATOR_OUTBOX_READ in p.permissions_of_role("support")


@pytest.mark.parametrize(
    "scopes,granted,refused",
    [
        (("send",), {p.MESSAGES_SEND}, {p.MESSAGES_READ, p.API_KEYS_MANAGE}),
        (("read",), {p.MESSAGES_READ, p.BILLING_READ}, {p.MESSAGES_SEND, p.BILLING_MANAGE}),
        (("billing",), {p.BILLING_READ, p.BILLING_MANAGE}, {p.MESSAGES_SEND, p.MEMBERS_MANAGE}),
        (("admin",), set(p.CUSTOMER_PERMISSIONS), {p.OPERATOR_CHANNELS_MANAGE}),
        (("send", "read"), {p.MESSAGES_SEND, p.MESSAGES_READ}, {p.WEBHOOKS_MANAGE}),
        (("operator",), set(p.OPERATOR_PERMISSIONS), {p.MESSAGES_SEND}),
    ],
)
def test_key_scopes_pass_the_same_check(scopes: tuple[str, ...], granted: set[str], refused: set[str]) -> None:
    who = p.Authority.of_key(account_id="acc_x", key_id="key_x", scopes=scopes)
    for permission in granted:
        p.require(who, permission)
    for permission in refused:
        assert not who.can(permission)
        with pytest.raises(Forbidden):
            p.require(who, permission)


def test_member_authority_uses_the_role_not_scopes() -> None:
    viewer = p.Authority.of_member(account_id="acc_x", user_id="usr_x", role="viewer")
    assert viewer.can(p.MESSAGES_READ) and not viewer.can(p.MESSAGES_SEND)
    unknown = p.Authority.of_member(account_id="acc_x", user_id="usr_x", role="superuser")
    assert unknown.permissions == frozenset()
    with pytest.raises(Forbidden):
        p.require(None, p.MESSAGES_READ)


async def test_key_management_is_checked_in_the_service(db: Any) -> None:
    """The keys service itself refuses a member whose role may not manage keys (not only the console page)."""
    from hongyan.accounts import keys
    from hongyan.accounts.permissions import Authority
    from hongyan.core.errors import Forbidden
    from support import make_account

    account = await make_account(db)
    finance = Authority.of_member(account_id=account.account_id, user_id="usr_x", role="finance")
    developer = Authority.of_member(account_id=account.account_id, user_id="usr_y", role="developer")
    async with db.write() as session:
        for attempt in (
            keys.create_api_key(session, account_id=account.account_id, name="x", authority=finance),
            keys.revoke_api_key(session, account_id=account.account_id, key_id=account.key_id, authority=finance),
            keys.rotate_api_key(session, account_id=account.account_id, key_id=account.key_id, authority=finance),
        ):
            with pytest.raises(Forbidden) as refused:
                await attempt
            assert refused.value.code == "permission_denied"
        created = await keys.create_api_key(session, account_id=account.account_id, name="dev", authority=developer)
    assert created.key.name == "dev"


async def test_webhook_management_is_checked_in_the_service(db: Any) -> None:
    from hongyan.accounts.permissions import Authority
    from hongyan.core.errors import Forbidden
    from hongyan.webhooks import service as webhooks
    from support import make_account

    account = await make_account(db)
    viewer = Authority.of_member(account_id=account.account_id, user_id="usr_v", role="viewer")
    developer = Authority.of_member(account_id=account.account_id, user_id="usr_d", role="developer")
    async with db.write() as session:
        with pytest.raises(Forbidden, match="webhooks"):
            await webhooks.create_endpoint(session, account_id=account.account_id, url="https://example.com/h",
                                           authority=viewer)
        endpoint, _secret = await webhooks.create_endpoint(session, account_id=account.account_id,
                                                           url="https://example.com/h", authority=developer)
        with pytest.raises(Forbidden):
            await webhooks.delete_endpoint(session, account_id=account.account_id, endpoint_id=endpoint.id,
                                           authority=viewer)
    assert endpoint.enabled


async def test_billing_changes_are_checked_in_the_service(db: Any, settings: Any) -> None:
    """A developer may read billing but not recharge, buy packages or change the alert (billing.manage)."""
    from hongyan.accounts.permissions import Authority
    from hongyan.billing import packages, profile, recharge
    from hongyan.core.errors import Forbidden
    from support import make_account

    account = await make_account(db)
    developer = Authority.of_member(account_id=account.account_id, user_id="usr_d", role="developer")
    finance = Authority.of_member(account_id=account.account_id, user_id="usr_f", role="finance")
    async with db.write() as session:
        plan = await packages.create_product(session, kind="package", name="p", currency="CNY", price_micros=1,
                                             units=10)
        attempts = [
            lambda who: recharge.create_order(session, settings, account_id=account.account_id,
                                              amount_micros=100_000_000, currency="CNY", provider="sandbox",
                                              created_by="t", authority=who),
            lambda who: packages.purchase_package(session, account_id=account.account_id, product_id=plan.id,
                                                  actor="t", authority=who),
            lambda who: profile.update_settings(session, account_id=account.account_id, currency="CNY", actor=None,
                                                authority=who, low_balance_threshold_micros=5),
        ]
        for attempt in attempts:
            with pytest.raises(Forbidden, match="billing.manage"):
                await attempt(developer)
            await attempt(finance)  # finance may
