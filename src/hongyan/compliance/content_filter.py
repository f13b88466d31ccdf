"""The content filter (pure): keyword, regex and URL rules of the platform and of one account, compiled
once and checked against every distinct message text at submit.

Matching (docs/content-filter.md):
- keywords: every keyword of a list is normalized (`normalize.compact`) and put in one Aho-Corasick
  automaton (ahocorasick_rs), so a text is scanned once whatever the number of keywords. Keywords whose edge
  is a Latin (or other space-separated script) letter must sit on word boundaries (`sex` ≠ `Essex`), where
  any separator in the original text (space, dot, emoji…) starts a word, so `s.e.x` is still caught.
- regexes run case-insensitively on `normalize.fold(text)`; each regex with literals that every match
  must contain (`filter_patterns.required_literals`) runs only when one of them is in the text, found by a
  second Aho-Corasick scan, so most regexes never run on a clean message.
- URLs are read from the folded text; a deny-list domain (or a parent domain) blocks, and a non-empty
  allow list sends every link outside it to review.

Precedence: block beats review; among equals the platform's rule is reported before the account's, then the
earliest in the text. An `allow` keyword whitelists a phrase: a keyword match lying wholly inside an
allowed phrase is ignored. A platform allow phrase covers any match; an account's covers the account's own
matches and the platform's review matches, never a platform block.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

from hongyan.compliance import filter_patterns as fp
from hongyan.compliance import normalize
from hongyan.core.errors import HongyanError

log = logging.getLogger(__name__)
PLATFORM, ACCOUNT = "platform", "account"
# every match, overlapping ones included (a block word inside a review phrase, one literal inside another)
STANDARD = ahocorasick_rs.MatchKind.Standard
_SEVERITY = {"block": 0, "review": 1}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as the matcher sees it (a `FilterRule` row without its bookkeeping)."""

    id: str
    kind: str  # keyword | regex | url_allow | url_deny
    pattern: str
    action: str  # block | review | allow
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a text is stopped: `block` (refused) or `review` (held). `rule_id` is None when no single rule
    matched: a link outside a non-empty allow list (`kind` url_allow, `pattern` the link's domain)."""

    action: str  # block | review
    rule_id: str | None
    pattern: str
    category: str | None
    scope: str  # platform | account
    kind: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "rule_id": self.rule_id,
            "pattern": self.pattern,
            "category": self.category,
            "scope": self.scope,
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True)
class _Keyword:
    rule: Rule
    length: int  # of the compact form
    start_letter: str  # "" when the first character needs no boundary, else that character
    end_letter: str


def _edge(char: str) -> str:
    return char if normalize.is_spaced_letter(char) or char.isdigit() else ""


def _same_kind(a: str, b: str) -> bool:
    """Whether keyword edge `a` and its neighbour `b` in the text would be one word: a letter next to a
    letter (`sex` in `essex`); a digit next to a digit or a letter (`110` in `13811012345` or `110b`). A
    letter next to a digit is a boundary, so `vx` still matches in `加vx12345`."""
    if a.isdigit():
        return b.isdigit() or normalize.is_spaced_letter(b)
    return normalize.is_spaced_letter(b)


class RuleList:
    """One compiled list (the platform's or an account's)."""

    def __init__(self, scope: str, rules: Iterable[Rule]) -> None:
        self.scope = scope
        self.rules: tuple[Rule, ...] = ()
        self.automaton: Any = None  # ahocorasick_rs.AhoCorasick over the compact keywords
        self.keyword_entries: list[tuple[_Keyword, ...]] = []  # by the automaton's pattern index
        self.regexes: list[tuple[re.Pattern[str], Rule]] = []
        self.regexes_always: list[int] = []  # indexes of regexes without required literals: always run
        self.literal_automaton: Any = None  # required literals of the other regexes
        self.literal_regexes: list[tuple[int, ...]] = []  # by the literal automaton's pattern index
        self.url_deny: dict[str, Rule] = {}
        self.url_allow: dict[str, Rule] = {}
        keywords: dict[str, list[_Keyword]] = {}
        kept: list[Rule] = []
        for rule in rules:
            try:
                self._add(rule, keywords)
            except HongyanError as exc:  # a stored rule this version refuses: skip it, never fail a send
                log.warning("content filter: skipping %s rule %s: %s", scope, rule.id, exc.message)
                continue
            kept.append(rule)
        self.rules = tuple(kept)
        if keywords:
            self.automaton = ahocorasick_rs.AhoCorasick(list(keywords), matchkind=STANDARD)
            self.keyword_entries = [tuple(entries) for entries in keywords.values()]
        literals: dict[str, list[int]] = {}
        for index, (compiled, _rule) in enumerate(self.regexes):
            required = fp.required_literals(compiled.pattern)
            if required is None:
                self.regexes_always.append(index)
            for literal in required or ():
                literals.setdefault(literal, []).append(index)
        if literals:
            self.literal_automaton = ahocorasick_rs.AhoCorasick(list(literals), matchkind=STANDARD)
            self.literal_regexes = [tuple(indexes) for indexes in literals.values()]
        self.empty = not self.rules
        self.needs_fold = bool(self.regexes or self.url_deny or self.url_allow)

    def _add(self, rule: Rule, keywords: dict[str, list[_Keyword]]) -> None:
        if rule.kind == "keyword":
            key = normalize.compact(rule.pattern)
            if not key:
                raise fp.invalid("empty keyword")
            entry = _Keyword(rule, len(key), _edge(key[0]), _edge(key[-1]))
            keywords.setdefault(key, []).append(entry)
        elif rule.kind == "regex":
            self.regexes.append((fp.compile_regex(rule.pattern), rule))
        elif rule.kind == "url_deny":
            self.url_deny.setdefault(fp.domain_of_rule(rule.pattern), rule)
        elif rule.kind == "url_allow":
            self.url_allow.setdefault(fp.domain_of_rule(rule.pattern), rule)
        else:
            raise fp.invalid(f"unknown kind {rule.kind}", field="kind")

    # -- matching ----------------------------------------------------------------------------------
    def keyword_matches(
        self, compact: str, text: str, starts: list[frozenset[int]]
    ) -> list[tuple[int, int, Rule]]:
        """(start, end, rule) of every keyword match on word boundaries, allow phrases included."""
        out: list[tuple[int, int, Rule]] = []
        for index, start, end in self.automaton.find_matches_as_indexes(compact, overlapping=True):
            for entry in self.keyword_entries[index]:
                if entry.start_letter and start > 0 and _same_kind(entry.start_letter, compact[start - 1]):
                    if not starts:
                        starts.append(normalize.word_starts(text))
                    if start not in starts[0]:
                        continue
                if entry.end_letter and end < len(compact) and _same_kind(entry.end_letter, compact[end]):
                    if not starts:
                        starts.append(normalize.word_starts(text))
                    if end not in starts[0]:
                        continue
                out.append((start, end, entry.rule))
        return out

    def regex_verdict(self, folded: str) -> Verdict | None:
        """The strongest regex verdict; a regex runs only if its required literals are in the text."""
        if not self.regexes:
            return None
        run = set(self.regexes_always)
        if self.literal_automaton is not None:
            for index, _start, _end in self.literal_automaton.find_matches_as_indexes(
                folded, overlapping=True
            ):
                run.update(self.literal_regexes[index])
        if not run:
            return None
        candidates = [self.regexes[i] for i in sorted(run)]
        best: Verdict | None = None
        for compiled, rule in candidates:
            if compiled.search(folded) is not None:
                verdict = self.verdict(rule)
                if verdict.action == "block":
                    return verdict
                best = best or verdict
        return best

    def url_verdicts(self, hosts: list[str]) -> list[Verdict]:
        if not self.url_deny and not self.url_allow:
            return []
        out: list[Verdict] = []
        for host in hosts:
            candidates = fp.domain_candidates(host)
            denied = next((self.url_deny[c] for c in candidates if c in self.url_deny), None)
            if denied is not None:
                out.append(self.verdict(denied))
            elif self.url_allow and not any(c in self.url_allow for c in candidates):
                out.append(Verdict("review", None, host, "url_not_allowed", self.scope, "url_allow"))
        return out

    def verdict(self, rule: Rule) -> Verdict:
        return Verdict(rule.action, rule.id, rule.pattern, rule.category, self.scope, rule.kind)


def _covered(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= start and end <= b for a, b in spans)


class ContentFilter:
    """The platform's list and one account's, checked together: `check(text)` → the strongest `Verdict`,
    or None when the text may go. Immutable once built; share one between requests."""

    def __init__(self, platform: RuleList, account: RuleList) -> None:
        self.platform = platform
        self.account = account
        self.empty = platform.empty and account.empty
        self._lists = [part for part in (platform, account) if not part.empty]
        self._keywords = [part for part in self._lists if part.automaton is not None]
        self._fold_parts = [(rank, part) for rank, part in enumerate((platform, account)) if part.needs_fold]
        self._needs_urls = any(part.url_deny or part.url_allow for part in self._lists)

    @classmethod
    def compile(cls, platform_rules: Iterable[Rule], account_rules: Iterable[Rule] = ()) -> ContentFilter:
        return cls(RuleList(PLATFORM, platform_rules), RuleList(ACCOUNT, account_rules))

    def check(self, text: str) -> Verdict | None:
        """The verdict on one message text (None: clean). Block beats review; see the module docstring."""
        if self.empty:
            return None
        verdicts: list[tuple[int, int, int, Verdict]] = []  # (severity, scope rank, position, verdict)
        if self._keywords:
            self._keyword_verdicts(text, verdicts)
            if verdicts and verdicts[0][0] == 0 and verdicts[0][1] == 0:  # a platform block: nothing beats it
                return min(verdicts, key=lambda v: v[:3])[3]
        if self._fold_parts:
            folded = normalize.fold(text)
            hosts = fp.url_hosts(folded) if self._needs_urls else []
            for rank, part in self._fold_parts:
                regex = part.regex_verdict(folded)
                if regex is not None:
                    verdicts.append((_SEVERITY[regex.action], rank, 1 << 30, regex))
                if hosts:
                    for verdict in part.url_verdicts(hosts):
                        verdicts.append((_SEVERITY[verdict.action], rank, 1 << 30, verdict))
        if not verdicts:
            return None
        return min(verdicts, key=lambda v: v[:3])[3]

    def _keyword_verdicts(self, text: str, verdicts: list[tuple[int, int, int, Verdict]]) -> None:
        compact = normalize.compact(text)
        starts: list[frozenset[int]] = []  # word starts, computed only when a Latin keyword needs them
        found: list[tuple[int, int, int, Rule]] = []  # (scope rank, start, end, rule)
        for part in self._keywords:
            rank = 0 if part is self.platform else 1
            found.extend((rank, s, e, r) for s, e, r in part.keyword_matches(compact, text, starts))
        if not found:
            return
        platform_allow = [(s, e) for rank, s, e, r in found if rank == 0 and r.action == "allow"]
        account_allow = [(s, e) for rank, s, e, r in found if rank == 1 and r.action == "allow"]
        for rank, start, end, rule in found:
            if rule.action == "allow" or _covered(start, end, platform_allow):
                continue
            # an account's allow phrase never lifts a platform block
            if (
                account_allow
                and not (rank == 0 and rule.action == "block")
                and _covered(start, end, account_allow)
            ):
                continue
            part = self.platform if rank == 0 else self.account
            verdicts.append((_SEVERITY[rule.action], rank, start, part.verdict(rule)))
        verdicts.sort(key=lambda v: v[:3])


EMPTY = ContentFilter.compile(())
