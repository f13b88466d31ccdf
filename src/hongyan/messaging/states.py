"""The message state machine: the one place that says which status may follow which.

accepted → scheduled → queued → sending → sent → delivered | undelivered | expired | rejected,
plus failed and canceled; `held` is a message the content filter keeps for a reviewer (compliance.holds):
approved it goes on (scheduled or queued), refused it ends `rejected`. Transitions are applied as conditional UPDATEs (messaging.repository), so a
transition that is not allowed changes no row, whatever the order in which events arrive.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    HELD = "held"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL: frozenset[Status] = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED, Status.CANCELED}
)

# to-status -> the statuses it may be reached from
_ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    # QUEUED: a paused campaign takes back what it had released; quiet hours defer a released message
    Status.SCHEDULED: frozenset({Status.ACCEPTED, Status.QUEUED, Status.HELD}),
    Status.HELD: frozenset({Status.ACCEPTED}),
    # SENDING: requeue on link loss; HELD: a reviewer released it
    Status.QUEUED: frozenset({Status.ACCEPTED, Status.SCHEDULED, Status.SENDING, Status.HELD}),
    Status.SENDING: frozenset({Status.QUEUED}),
    Status.SENT: frozenset({Status.SENDING}),
    Status.DELIVERED: frozenset({Status.SENT}),
    Status.UNDELIVERED: frozenset({Status.SENT}),
    # validity ran out before the carrier took it, or the carrier reported EXPIRED
    Status.EXPIRED: frozenset({Status.SCHEDULED, Status.HELD, Status.QUEUED, Status.SENT}),
    # refused by the carrier at submit (submit_sm_resp error) or in a receipt (REJECTD)
    # … or refused by a reviewer while held
    Status.REJECTED: frozenset({Status.ACCEPTED, Status.HELD, Status.SENDING, Status.SENT}),
    Status.FAILED: frozenset({Status.ACCEPTED, Status.SCHEDULED, Status.QUEUED, Status.SENDING}),
    # "while not yet sent": once a carrier holds it, cancel is a carrier operation (cancel_sm), not ours
    Status.CANCELED: frozenset({Status.ACCEPTED, Status.SCHEDULED, Status.HELD, Status.QUEUED}),
}

CANCELABLE: frozenset[Status] = _ALLOWED_FROM[Status.CANCELED]


def allowed_from(to: Status) -> frozenset[Status]:
    """Statuses from which `to` may be reached (empty for ACCEPTED: it is only the initial status)."""
    return _ALLOWED_FROM.get(to, frozenset())


def can_transition(current: Status | str, to: Status | str) -> bool:
    return Status(current) in allowed_from(Status(to))


def is_final(status: Status | str) -> bool:
    return Status(status) in FINAL
