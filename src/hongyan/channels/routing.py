"""Route selection: which channels may carry a message, in the order to try them (failover).

Pure and in memory: the runtime loads the `route` table into a `Router` and reloads it when operators
change routes. Order of candidates for one message:
  1. routes of the message's account before platform-wide routes (per-account route plans);
  2. lower `priority` first;
  3. the longest matching number prefix first (a route for +86138 beats one for +86);
  4. among routes tied on all of the above, a weighted random order (weights 3:1 → 75 % / 25 % first).
Each channel appears once (its best position). Disabled routes are not loaded.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouteRule:
    id: str
    channel_id: str
    priority: int = 100
    weight: int = 1
    countries: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    message_types: frozenset[str] = frozenset()
    account_id: str | None = None

    def match(self, digits: str, country: str | None, message_type: str, account_id: str) -> int | None:
        """None if the rule does not apply, else the length of the matching prefix (0 without prefixes)."""
        if self.account_id is not None and self.account_id != account_id:
            return None
        if self.countries and country not in self.countries:
            return None
        if self.message_types and message_type not in self.message_types:
            return None
        if not self.prefixes:
            return 0
        best = -1
        for p in self.prefixes:
            if digits.startswith(p) and len(p) > best:
                best = len(p)
        return best if best >= 0 else None


def normalize_prefix(prefix: str) -> str:
    """`+86 138` → `86138`; raises ValueError for anything but digits."""
    digits = prefix.replace(" ", "").removeprefix("+")
    if not digits.isdigit():
        raise ValueError(f"prefix {prefix!r} must be digits (E.164 without +)")
    return digits


class Router:
    def __init__(self, rules: Iterable[RouteRule], default_channel: str | None = None,
                 rng: random.Random | None = None) -> None:
        self.rules = list(rules)
        self.default_channel = default_channel
        self.rng = rng or random.Random()

    def candidates(self, to: str, country: str | None, message_type: str, account_id: str) -> list[str]:
        """Channel ids to try in order; empty when no route matches (the message fails with no_route)."""
        if not self.rules:
            return [self.default_channel] if self.default_channel else []
        digits = to.removeprefix("+")
        scored: list[tuple[tuple[int, int, int], RouteRule]] = []
        for rule in self.rules:
            prefix_len = rule.match(digits, country, message_type, account_id)
            if prefix_len is not None:
                scored.append(((0 if rule.account_id else 1, rule.priority, -prefix_len), rule))
        if not scored:
            return []
        scored.sort(key=lambda item: item[0])
        out: list[str] = []
        seen: set[str] = set()
        i = 0
        while i < len(scored):
            j = i
            while j < len(scored) and scored[j][0] == scored[i][0]:
                j += 1
            for rule in self._weighted_order([r for _, r in scored[i:j]]):
                if rule.channel_id not in seen:
                    seen.add(rule.channel_id)
                    out.append(rule.channel_id)
            i = j
        return out

    def _weighted_order(self, rules: list[RouteRule]) -> list[RouteRule]:
        if len(rules) == 1:
            return rules
        # weighted sampling without replacement (Efraimidis–Spirakis): key = u ** (1 / w)
        keyed = [(self.rng.random() ** (1.0 / max(1, r.weight)), r) for r in rules]
        keyed.sort(key=lambda item: item[0], reverse=True)
        return [r for _, r in keyed]
