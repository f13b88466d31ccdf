"""The state machine: every pair of statuses, allowed or not, in one table."""

from __future__ import annotations

import itertools

import pytest

from hongyan.messaging.states import FINAL, Status, allowed_from, can_transition, is_final

S = Status
ALLOWED = {
    (S.ACCEPTED, S.SCHEDULED), (S.ACCEPTED, S.QUEUED), (S.ACCEPTED, S.REJECTED), (S.ACCEPTED, S.FAILED),
    (S.ACCEPTED, S.CANCELED),
    (S.SCHEDULED, S.QUEUED), (S.SCHEDULED, S.EXPIRED), (S.SCHEDULED, S.FAILED), (S.SCHEDULED, S.CANCELED),
    (S.QUEUED, S.SENDING), (S.QUEUED, S.EXPIRED), (S.QUEUED, S.FAILED), (S.QUEUED, S.CANCELED),
    (S.QUEUED, S.SCHEDULED),
    (S.SENDING, S.SENT), (S.SENDING, S.QUEUED), (S.SENDING, S.REJECTED), (S.SENDING, S.FAILED),
    (S.SENT, S.DELIVERED), (S.SENT, S.UNDELIVERED), (S.SENT, S.EXPIRED), (S.SENT, S.REJECTED),
    # held for content review: released (scheduled or queued), refused, canceled, or expired while waiting
    (S.ACCEPTED, S.HELD), (S.HELD, S.SCHEDULED), (S.HELD, S.QUEUED), (S.HELD, S.REJECTED), (S.HELD, S.CANCELED),
    (S.HELD, S.EXPIRED),
}


@pytest.mark.parametrize(("current", "to"), list(itertools.product(Status, Status)), ids=lambda s: s.value)
def test_transition_table(current: Status, to: Status) -> None:
    assert can_transition(current, to) == ((current, to) in ALLOWED)


def test_final_states_have_no_way_out() -> None:
    for final in FINAL:
        assert not any(can_transition(final, to) for to in Status)
        assert is_final(final)


def test_accepted_is_only_initial() -> None:
    assert allowed_from(Status.ACCEPTED) == frozenset()


def test_every_status_is_reachable_from_accepted() -> None:
    reached = {Status.ACCEPTED}
    frontier = [Status.ACCEPTED]
    while frontier:
        cur = frontier.pop()
        for to in Status:
            if can_transition(cur, to) and to not in reached:
                reached.add(to)
                frontier.append(to)
    assert reached == set(Status)
