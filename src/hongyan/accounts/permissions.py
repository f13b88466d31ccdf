"""Who may do what: customer roles, API-key scopes and platform staff roles, as permissions.

Services take an `Authority` (the account, who acts, and their role or scopes) and call `require()` before
they change anything, so the API (keys → scopes) and the console (members → role) pass the same check.
Platform staff roles grant `operator.*` permissions only: they never imply a customer permission, and a
customer role never implies an operator one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hongyan.core.errors import Forbidden

# -- permissions -----------------------------------------------------------------------------------
MESSAGES_SEND = "messages.send"
MESSAGES_READ = "messages.read"
API_KEYS_MANAGE = "api_keys.manage"
WEBHOOKS_MANAGE = "webhooks.manage"
BILLING_READ = "billing.read"
BILLING_MANAGE = "billing.manage"
MEMBERS_READ = "members.read"
MEMBERS_MANAGE = "members.manage"
SUB_ACCOUNTS_MANAGE = "sub_accounts.manage"
ACCOUNT_SETTINGS = "account.settings"
AUDIT_READ = "audit.read"

CUSTOMER_PERMISSIONS = (
    MESSAGES_SEND, MESSAGES_READ, API_KEYS_MANAGE, WEBHOOKS_MANAGE, BILLING_READ, BILLING_MANAGE,
    MEMBERS_READ, MEMBERS_MANAGE, SUB_ACCOUNTS_MANAGE, ACCOUNT_SETTINGS, AUDIT_READ,
)

OPERATOR_REVIEW = "operator.review"  # sender names, templates, campaigns awaiting approval
OPERATOR_ACCOUNTS_READ = "operator.accounts.read"
OPERATOR_MESSAGES_READ = "operator.messages.read"
OPERATOR_OUTBOX_READ = "operator.outbox.read"
OPERATOR_BILLING_MANAGE = "operator.billing.manage"  # top-ups, credit limits, rate cards
OPERATOR_CHANNELS_MANAGE = "operator.channels.manage"
OPERATOR_ACCOUNTS_MANAGE = "operator.accounts.manage"

OPERATOR_PERMISSIONS = (
    OPERATOR_REVIEW, OPERATOR_ACCOUNTS_READ, OPERATOR_MESSAGES_READ, OPERATOR_OUTBOX_READ,
    OPERATOR_BILLING_MANAGE, OPERATOR_CHANNELS_MANAGE, OPERATOR_ACCOUNTS_MANAGE,
)

# plain words for the refusal message ("You do not have permission to manage API keys.")
PERMISSION_WORDS = {
    MESSAGES_SEND: "send messages",
    MESSAGES_READ: "read messages",
    API_KEYS_MANAGE: "manage API keys",
    WEBHOOKS_MANAGE: "manage webhooks",
    BILLING_READ: "see billing",
    BILLING_MANAGE: "manage billing",
    MEMBERS_READ: "see the team",
    MEMBERS_MANAGE: "manage team members",
    SUB_ACCOUNTS_MANAGE: "manage sub-accounts",
    ACCOUNT_SETTINGS: "change account settings",
    AUDIT_READ: "read the audit log",
    OPERATOR_REVIEW: "review submissions",
    OPERATOR_ACCOUNTS_READ: "see customer accounts",
    OPERATOR_MESSAGES_READ: "see customer messages",
    OPERATOR_OUTBOX_READ: "read the email outbox",
    OPERATOR_BILLING_MANAGE: "manage customer billing",
    OPERATOR_CHANNELS_MANAGE: "manage channels and routes",
    OPERATOR_ACCOUNTS_MANAGE: "manage customer accounts",
}

# -- roles -----------------------------------------------------------------------------------------
OWNER, ADMIN, DEVELOPER, FINANCE, VIEWER = "owner", "admin", "developer", "finance", "viewer"
CUSTOMER_ROLES = (OWNER, ADMIN, DEVELOPER, FINANCE, VIEWER)
REVIEWER, SUPPORT, PLATFORM_ADMIN = "reviewer", "support", "platform_admin"
PLATFORM_ROLES = (REVIEWER, SUPPORT, PLATFORM_ADMIN)

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    OWNER: frozenset(CUSTOMER_PERMISSIONS),
    ADMIN: frozenset(CUSTOMER_PERMISSIONS),  # the owner-only rules live in accounts.members
    DEVELOPER: frozenset({MESSAGES_SEND, MESSAGES_READ, API_KEYS_MANAGE, WEBHOOKS_MANAGE, BILLING_READ,
                          MEMBERS_READ}),
    FINANCE: frozenset({MESSAGES_READ, BILLING_READ, BILLING_MANAGE, MEMBERS_READ}),
    VIEWER: frozenset({MESSAGES_READ, BILLING_READ, MEMBERS_READ}),
    REVIEWER: frozenset({OPERATOR_REVIEW, OPERATOR_ACCOUNTS_READ}),
    SUPPORT: frozenset({OPERATOR_ACCOUNTS_READ, OPERATOR_MESSAGES_READ, OPERATOR_OUTBOX_READ}),
    PLATFORM_ADMIN: frozenset(OPERATOR_PERMISSIONS),
}

# API-key scopes (accounts.keys.ALL_SCOPES) → permissions; a key has no role, its scopes are its role
SCOPE_PERMISSIONS: dict[str, frozenset[str]] = {
    "send": frozenset({MESSAGES_SEND}),
    "read": frozenset({MESSAGES_READ, BILLING_READ}),
    "billing": frozenset({BILLING_READ, BILLING_MANAGE}),
    "admin": frozenset(CUSTOMER_PERMISSIONS),
    "operator": frozenset(OPERATOR_PERMISSIONS),
}


def permissions_of_role(role: str | None) -> frozenset[str]:
    """Pure: the permissions one role grants (an unknown or missing role grants none)."""
    return ROLE_PERMISSIONS.get(role or "", frozenset())


def permissions_of_scopes(scopes: tuple[str, ...] | list[str]) -> frozenset[str]:
    """Pure: the union of what each scope of an API key grants."""
    out: set[str] = set()
    for scope in scopes:
        out |= SCOPE_PERMISSIONS.get(scope, frozenset())
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Authority:
    """Who acts for which account, and with what: a member's role (console) or a key's scopes (API)."""

    account_id: str
    user_id: str | None = None
    key_id: str | None = None
    role: str | None = None
    scopes: tuple[str, ...] = ()
    label: str | None = None  # email or key name, for the audit log

    @property
    def permissions(self) -> frozenset[str]:
        if self.role is None:  # an API key: its scopes decide
            return permissions_of_scopes(self.scopes)
        return permissions_of_role(self.role)

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @classmethod
    def of_member(cls, *, account_id: str, user_id: str, role: str, label: str | None = None) -> Authority:
        return cls(account_id=account_id, user_id=user_id, role=role, label=label)

    @classmethod
    def of_key(cls, *, account_id: str, key_id: str | None, scopes: tuple[str, ...] | list[str],
               label: str | None = None) -> Authority:
        return cls(account_id=account_id, key_id=key_id, scopes=tuple(scopes), label=label)

    @classmethod
    def of_api(cls, ctx: Any) -> Authority:
        """The calling API key (an accounts.keys.AccountContext): admin scope grants every customer
        permission, but never acts as an owner."""
        return cls.of_key(account_id=ctx.account_id, key_id=ctx.key_id, scopes=ctx.scopes, label=ctx.key_name)


def permission_denied(permission: str) -> Forbidden:
    words = PERMISSION_WORDS.get(permission, permission)
    return Forbidden("permission_denied", f"You do not have permission to {words} ({permission}).", field=None,
                     details={"permission": permission})


def require(who: Authority | str | None, permission: str) -> None:
    """Raise `permission_denied` (403) unless `who` (an Authority, or a bare role) has `permission`."""
    granted = who.permissions if isinstance(who, Authority) else permissions_of_role(who)
    if permission not in granted:
        raise permission_denied(permission)
