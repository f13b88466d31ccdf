"""Personalization: `尊敬的{客户姓名},您的订单{订单号}已发货。` filled per recipient.

Syntax: `{name}` or `{name|default}`; `{{` and `}}` are literal braces. A brace that does not open a
well-formed placeholder is literal text, so plain texts with braces (GSM extension chars) still send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}|\s][^{}|]{0,63})(?:\|([^{}]{0,200}))?\}")


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | tuple[str, str | None], ...]  # literal text or (variable, default)
    variables: tuple[str, ...]  # in order of first use

    @property
    def is_plain(self) -> bool:
        return not self.variables


class MissingVariable(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_template(text: str) -> Template:
    parts: list[str | tuple[str, str | None]] = []
    names: list[str] = []
    pos = 0
    literal: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        literal.append(text[pos : match.start()])
        token = match.group(0)
        if token == "{{":
            literal.append("{")
        elif token == "}}":
            literal.append("}")
        else:
            if literal:
                parts.append("".join(literal))
                literal = []
            name = match.group(1).strip()
            parts.append((name, match.group(2)))
            if name not in names:
                names.append(name)
        pos = match.end()
    literal.append(text[pos:])
    if any(literal):
        parts.append("".join(literal))
    return Template(parts=tuple(parts), variables=tuple(names))


def render(template: Template, values: dict[str, str]) -> str:
    """Fill the placeholders; a variable with neither a value nor a default raises MissingVariable."""
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, default = part
        value = values.get(name)
        if value is None or value == "":
            if default is None:
                raise MissingVariable(name)
            value = default
        out.append(str(value))
    return "".join(out)
