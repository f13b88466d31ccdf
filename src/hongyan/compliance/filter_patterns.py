"""Content-filter patterns (pure): what a valid rule is, how regexes are kept from running away, and how
URLs and their domains are found in a message.

A rule is checked here once, when it is added, so that the compiled filter on the submit path never meets
a pattern that cannot compile, matches every text, or can backtrack for seconds.
"""

from __future__ import annotations

import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from hongyan.compliance import normalize
from hongyan.core.errors import Unprocessable

KINDS = ("keyword", "regex", "url_allow", "url_deny")
ACTIONS = ("block", "review", "allow")
# which actions each kind takes (the first is the default)
KIND_ACTIONS: dict[str, tuple[str, ...]] = {
    "keyword": ("block", "review", "allow"),
    "regex": ("block", "review"),
    "url_deny": ("block", "review"),
    "url_allow": ("allow",),
}
MAX_PATTERN = 500  # filter_rule.pattern is String(500)
MAX_CATEGORY = 32
MAX_NOTE = 200
REGEX_FLAGS = re.IGNORECASE

# top-level domains recognized in bare domains (`abc.cn/x`, no scheme, no www.): the ones SMS links use,
# without those that are common English words (`in`, `me`, `so`, `to`, `it`…) so prose is not read as links
TLDS = tuple(
    """cn com net org gov edu top xyz vip cc co io info biz shop club site online app link ly tk ml ga cf gq tw hk
    mo jp kr uk de fr ru sg tv ws pw icu fun store tech live life work pro asia ink ren wang ltd group cloud bid
    win loan men click mobi name la im ai dev page gg fm one run email video xin kim red cyou buzz today world
    space website cash bet games ee su lol zone net.cn com.cn""".split()
)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD_ALTERNATION = "|".join(sorted((re.escape(t) for t in TLDS), key=len, reverse=True))
URL_PATTERN = re.compile(
    r"https?://(?P<netloc>[^\s/?#\\]+)"  # with a scheme: anything up to the path is the host part
    rf"|(?<![a-z0-9.@_-])(?P<www>www\.(?:{_LABEL}\.)+[a-z][a-z0-9-]{{1,23}})(?![a-z0-9-])"
    rf"|(?<![a-z0-9.@_-])(?P<bare>(?:{_LABEL}\.)+(?:{_TLD_ALTERNATION}))(?![a-z0-9-])"
)
_TLD_HIT = re.compile(rf"\.(?:{_TLD_ALTERNATION})(?![a-z0-9-])")
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+[a-z0-9-]{{2,63}}")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}")


def invalid(message: str, field: str = "pattern", **details: Any) -> Unprocessable:
    return Unprocessable("filter_pattern_invalid", message, field=field, details=details or None)


# -- rules -----------------------------------------------------------------------------------------
def check_kind_action(kind: str, action: str | None) -> str:
    """The rule's action (the kind's default when None); `invalid_value` for an unknown kind or a pair
    that means nothing (an allow regex, a blocking allow-list entry)."""
    if kind not in KINDS:
        raise Unprocessable("invalid_value", f"kind must be one of {', '.join(KINDS)}.", field="kind")
    allowed = KIND_ACTIONS[kind]
    if action is None:
        return allowed[0]
    if action not in allowed:
        raise Unprocessable(
            "invalid_value", f"A {kind} rule's action must be one of {', '.join(allowed)}.", field="action"
        )
    return action


def clean_pattern(kind: str, pattern: str) -> str:
    """The pattern as stored: stripped; URL rules reduced to their domain. Raises `filter_pattern_invalid`
    for an empty or too long pattern, a keyword with nothing left to match, an unsafe or broken regex."""
    text = pattern.strip()
    if not text:
        raise invalid("The pattern is empty.")
    if len(text) > MAX_PATTERN:
        raise invalid(f"The pattern is longer than {MAX_PATTERN} characters.")
    if "\n" in text or "\r" in text:
        raise invalid("A pattern is one line.")
    if any(char < " " or char == "\x7f" for char in text):
        raise invalid("The pattern contains control characters (such as NUL or tab).")
    if kind == "keyword":
        if not normalize.compact(text):
            raise invalid(
                "The keyword has no letters, digits or characters left once spaces and symbols are "
                "removed, so it could never match."
            )
        return text
    if kind == "regex":
        compile_regex(text)
        return text
    return domain_of_rule(text)


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a regex rule, refusing what would hurt the submit path: syntax errors, patterns that match
    the empty text (they would match every message), and nested repetition such as `(a+)+` whose
    backtracking grows exponentially with the text."""
    try:
        compiled = re.compile(simplified_regex(pattern), REGEX_FLAGS)
    except (re.error, OverflowError, RecursionError) as exc:
        raise invalid(f"The regular expression does not compile: {exc}.") from None
    if compiled.search("") is not None:
        raise invalid("The regular expression matches an empty text, so it would match every message.")
    if nested_repetition(pattern):
        raise invalid(
            "The regular expression repeats a group that itself repeats (like (a+)+); such patterns "
            "can take seconds on one message. Write it without the nesting."
        )
    return compiled


def required_literals(pattern: str) -> frozenset[str] | None:
    """Pure: strings of which every match of the regex contains at least one (`银行卡.{0,6}(冻结|异常)` →
    {"银行卡"}; `(稳赚|包赢)` → {"稳赚", "包赢"}), lowercase; None when no such set is known (`[a-z0-9]{20,}`).
    The filter looks for these with one Aho-Corasick scan and runs a regex only when one is present:
    Python's `re` has no multi-pattern search, and an alternation of many regexes is slower than each alone."""
    try:
        parsed = sre_parse.parse(pattern, REGEX_FLAGS)
    except Exception:  # compile_regex reports syntax errors
        return None
    found = _required(list(parsed))
    if not found or any(not s or s.lower() != s.casefold() for s in found):
        return None
    return frozenset(s.lower() for s in found)


def _required(items: list[Any]) -> set[str] | None:
    """The most selective required set of a sequence: a literal run, or a group / alternation / repeated
    item (at least once) whose own required set is known; the longest shortest string wins."""
    candidates: list[set[str]] = []
    run: list[str] = []
    for op, av in items:
        if op == sre_constants.LITERAL:
            run.append(chr(av))
            continue
        if run:
            candidates.append({"".join(run)})
            run = []
        sub: set[str] | None = None
        if op == sre_constants.SUBPATTERN:
            sub = _required(list(av[-1]))
        elif op == sre_constants.BRANCH:
            branches = [_required(list(branch)) for branch in av[1]]
            if all(branches):
                sub = set().union(*branches)  # type: ignore[arg-type]
        elif op == sre_constants.IN:
            chars = [chr(value) for kind, value in av if kind == sre_constants.LITERAL]
            sub = set(chars) if chars and len(chars) == len(av) else None
        elif op in _REPEATS and av[0] >= 1:
            sub = _required(list(av[2]))
        if sub:
            candidates.append(sub)
    if run:
        candidates.append({"".join(run)})
    if not candidates:
        return None
    return max(candidates, key=lambda c: (min(len(x) for x in c), -len(c)))


def simplified_regex(pattern: str) -> str:
    """Traditional characters in a regex → simplified, like the text it runs on. Only CJK characters
    change, so no metacharacter can appear or disappear."""
    return pattern.translate(normalize.traditional_to_simplified())


_REPEATS = {
    sre_constants.MAX_REPEAT,
    sre_constants.MIN_REPEAT,
    getattr(sre_constants, "POSSESSIVE_REPEAT", None),
}


def nested_repetition(pattern: str) -> bool:
    """Pure: whether a repetition that may run many times contains an unbounded one (`(a+)+`, `(\\d*x?)*`,
    `(a{1,}b)+`): the classic catastrophic-backtracking shape."""
    try:
        parsed = sre_parse.parse(pattern, REGEX_FLAGS)
    except Exception:  # compile_regex reports syntax errors
        return False

    def walk(items: Any, inside_repeat: bool) -> bool:
        for op, av in items:
            if op in _REPEATS:
                low, high, sub = av
                many = high == sre_constants.MAXREPEAT or high > 1
                if inside_repeat and high == sre_constants.MAXREPEAT:
                    return True
                if walk(sub, inside_repeat or many):
                    return True
            elif op == sre_constants.SUBPATTERN:
                if walk(av[-1], inside_repeat):
                    return True
            elif op == sre_constants.BRANCH:
                if any(walk(branch, inside_repeat) for branch in av[1]):
                    return True
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                if walk(av[1], inside_repeat):
                    return True
            elif op == getattr(sre_constants, "ATOMIC_GROUP", None):
                if walk(av, inside_repeat):
                    return True
        return False

    return walk(parsed, False)


# -- URLs ------------------------------------------------------------------------------------------
def host_of(netloc: str) -> str:
    """`user:pw@Sub.Example.com:8080` → `sub.example.com` (the part after the last @ decides where a link
    goes: `http://bank.com@evil.cn` opens evil.cn); a leading `www.` and trailing dots are dropped."""
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):  # IPv6 literal
        return host.split("]", 1)[0] + "]"
    host = host.split(":", 1)[0].strip(".").lower()
    return host.removeprefix("www.")


def domain_of_rule(text: str) -> str:
    """A URL rule's domain: `https://www.Example.com/promo` → `example.com`; IDN → punycode. Raises
    `filter_pattern_invalid` for anything that is not a domain name or an IPv4 address."""
    value = normalize.fold(text).strip()
    value = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value)
    value = re.split(r"[/?#\\]", value, maxsplit=1)[0]
    host = host_of(value).removeprefix("*.")
    if host and not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise invalid(f"'{text}' is not a domain name.") from None
    if _IPV4.fullmatch(host) or (_DOMAIN.fullmatch(host) and not host.replace(".", "").isdigit()):
        return host
    raise invalid(f"'{text}' is not a domain name (like example.com) or an IPv4 address.")


def url_hosts(folded: str) -> list[str]:
    """The hosts of the links in a `normalize.fold()`ed text: `https://…`, `www.…` and bare domains with a
    known TLD (`t.cn/abc`). `。` counts as a dot, since `abc。cn` is a common dodge."""
    text = folded.replace("。", ".") if "。" in folded else folded
    # most texts have no link: a scan for a literal dot before a known TLD (fast) rules them out
    if "://" not in text and "www." not in text and _TLD_HIT.search(text) is None:
        return []
    hosts: list[str] = []
    for match in URL_PATTERN.finditer(text):
        netloc = match.group("netloc")
        host = host_of(netloc) if netloc is not None else host_of(match.group("www") or match.group("bare"))
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def domain_candidates(host: str) -> list[str]:
    """`a.b.example.com` → itself, `b.example.com`, `example.com`, `com`: a rule for any of them covers it."""
    parts = host.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]
