"""Role checks for console pages: one table from path to permission, run on every signed-in page.

`install` (console.routes) adds `page_permission` to each signed-in router, so existing pages (send, keys,
webhooks, billing, …) refuse a role without the permission before their handler runs, and the services
check again. A member asking for a page of their own account they may not use gets a 403 page naming the
permission (not a 404: there is nothing of another account to hide).
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from hongyan.accounts import permissions as p
from hongyan.console.context import FETCH_HEADER, Console, SignedIn

# (path prefix, permission for GET, permission for POST); the first matching prefix wins
PAGE_PERMISSIONS: tuple[tuple[str, str | None, str | None], ...] = (
    ("/console/send", p.MESSAGES_SEND, p.MESSAGES_SEND),
    ("/console/api/preview", p.MESSAGES_SEND, p.MESSAGES_SEND),
    ("/console/messages", p.MESSAGES_READ, p.MESSAGES_READ),
    ("/console/contacts", p.MESSAGES_READ, p.MESSAGES_SEND),  # the address book: senders change it
    ("/console/campaigns", p.MESSAGES_READ, p.MESSAGES_SEND),  # like contacts: viewers see, senders act
    ("/console/batches", p.MESSAGES_READ, p.MESSAGES_READ),
    ("/console/keys", p.API_KEYS_MANAGE, p.API_KEYS_MANAGE),
    ("/console/webhooks", p.WEBHOOKS_MANAGE, p.WEBHOOKS_MANAGE),
    ("/console/billing/operator", None, None),  # staff top-ups: the staff check of that page applies
    ("/console/billing", p.BILLING_READ, p.BILLING_MANAGE),
    ("/console/security/require-mfa", None, p.ACCOUNT_SETTINGS),
    ("/console/team", p.MEMBERS_READ, p.MEMBERS_MANAGE),
    ("/console/sub-accounts", p.SUB_ACCOUNTS_MANAGE, p.SUB_ACCOUNTS_MANAGE),
    ("/console/audit", p.AUDIT_READ, p.AUDIT_READ),  # owners and admins (who changed what, from where)
    ("/console/privacy", p.ACCOUNT_SETTINGS, p.ACCOUNT_SETTINGS),  # personal data: export, erase, retention
    ("/console/sending-rules", p.ACCOUNT_SETTINGS, p.ACCOUNT_SETTINGS),  # compliance choices
)


def page_permission_for(path: str, method: str) -> str | None:
    """Pure: the permission a console request needs (None: any member)."""
    for prefix, read, write in PAGE_PERMISSIONS:
        if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "."):
            return read if method in ("GET", "HEAD") else write
    return None


class NoPermission(Exception):
    """A member's role lacks the permission a page needs."""

    def __init__(self, console: Console, permission: str) -> None:
        super().__init__(permission)
        self.console = console
        self.permission = permission


async def page_permission(console: SignedIn) -> Console:
    """Refuse the page when the signed-in member's role lacks its permission."""
    user = console.user
    assert user is not None
    needed = page_permission_for(console.request.url.path, console.request.method)
    if needed is not None and not p.Authority.of_member(account_id=user.account_id, user_id=user.user_id,
                                                        role=user.role or "").can(needed):
        raise NoPermission(console, needed)
    return console


def member_authority(console: Console) -> p.Authority:
    """The signed-in member as the one acting, for the services' own permission checks."""
    user = console.user
    assert user is not None
    return p.Authority.of_member(account_id=user.account_id, user_id=user.user_id, role=user.role or "",
                                 label=user.email)


def can(console: Console, permission: str) -> bool:
    user = console.user
    return user is not None and permission in p.permissions_of_role(user.role)


async def no_permission(request: Request, exc: Exception) -> Response:
    """403: a page saying which permission is missing (JSON for console.js background requests)."""
    assert isinstance(exc, NoPermission)
    console = exc.console
    error = p.permission_denied(exc.permission)
    if request.headers.get(FETCH_HEADER) == "1":
        return console.json({"error": {"code": error.code, "message": error.message, "field": None}}, status=403)
    return console.render("no_permission.html", status=403, permission=exc.permission, message=error.message)
