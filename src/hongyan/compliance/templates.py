"""Message templates: a reviewed text with typed variables (`您的验证码是${code}，5分钟内有效。`), sent by
template id + parameters, each parameter checked against its variable's type.

Pure part (no I/O): `parse_template`, `check_variables`, `validate_params`, `render`. Syntax: `${name}`
where name is an ASCII identifier (letter or _, then letters, digits, _; at most 32); a `$` not followed by
`{` is plain text. Variables are declared as {"name", "type", "min"?, "max"?} (types and bounds in
compliance.template_variables); a body variable left undeclared takes the type of its own name when that
is a type (`${code}`, `${name}`, `${date}` …) and `text` (≤ 20 characters) otherwise. The stored template
always carries the complete list, so the gate validates against exactly what the reviewer saw.

Service part: apply / list / get / withdraw / review like signatures (compliance.reviews); a rejected
template is not edited back: the account applies again (a new id), the rejected one stays as history.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.permissions import ACCOUNT_SETTINGS, MESSAGES_READ, OPERATOR_REVIEW, Authority, require
from hongyan.audit.service import Actor, record
from hongyan.compliance import reviews
from hongyan.compliance.documents import DocumentInfo
from hongyan.compliance.models import MessageTemplate, Signature
from hongyan.compliance.template_variables import VARIABLE_TYPES, default_type_for, value_problem
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.core.errors import NotFound, Unprocessable

__all__ = [
    "VARIABLE_TYPES",
    "ParamProblem",
    "TemplateRef",
    "approved_template",
    "check_variables",
    "parse_template",
    "render",
    "validate_params",
]

KIND = "template"
MESSAGE_TYPES = ("verification", "notification", "marketing")
MAX_BODY, MAX_NAME, MAX_REMARK, MAX_VARIABLES = 500, 100, 500, 20
_VARIABLE = re.compile(r"\$\{([^}]*)\}?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


# -- pure ----------------------------------------------------------------------------------------------
def _syntax_error(message: str, position: int) -> Unprocessable:
    return Unprocessable(
        "template_syntax_invalid",
        f"{message} at position {position}.",
        field="body",
        details={"position": position},
    )


def parse_template(body: str) -> list[str]:
    """The variable names of `body` in order of first use; `template_syntax_invalid` (with the 0-based
    position of the `${`) for an unclosed `${`, an empty name or a name that is not an identifier."""
    names: list[str] = []
    for match in _VARIABLE.finditer(body):
        inner, position = match.group(1), match.start()
        if not match.group(0).endswith("}") or "${" in inner:
            raise _syntax_error("“${” is not closed with “}”", position)
        name = inner.strip()
        if not name:
            raise _syntax_error("“${}” has no variable name", position)
        if not _NAME.fullmatch(name) or name != inner:
            raise _syntax_error(
                f"“{inner}” is not a variable name (letters, digits and _, starting with a "
                "letter, at most 32)",
                position,
            )
        if name not in names:
            names.append(name)
    return names


def _bound(value: Any, field: str, ceiling: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise Unprocessable(
            "template_variables_invalid", f"{field} must be a whole number from 1 to {ceiling}.", field=field
        )
    return value


def check_variables(body: str, declared: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The complete, normalized variable list of a template: every body variable once, in body order, as
    {"name", "type", "min", "max"} — declared ones as declared, the others by their default type."""
    names = parse_template(body)
    given: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(declared or ()):
        where = f"variables[{i}]"
        if not isinstance(item, Mapping):
            raise Unprocessable("template_variables_invalid", f"{where} must be an object.", field=where)
        name, type_name = item.get("name"), item.get("type", "text")
        if not isinstance(name, str) or name not in names:
            raise Unprocessable(
                "template_variables_invalid",
                f"{where}.name {name!r} is not a variable of the text "
                f"(it has: {', '.join(names) or 'none'}).",
                field=f"{where}.name",
            )
        if name in given:
            raise Unprocessable(
                "template_variables_invalid", f"{name} is declared twice.", field=f"{where}.name"
            )
        if type_name not in VARIABLE_TYPES:
            raise Unprocessable(
                "template_variables_invalid",
                f"{where}.type must be one of {', '.join(VARIABLE_TYPES)}.",
                field=f"{where}.type",
            )
        kind = VARIABLE_TYPES[type_name]
        low = _bound(item.get("min", kind.min_length), f"{where}.min", kind.ceiling)
        high = _bound(item.get("max", kind.max_length), f"{where}.max", kind.ceiling)
        if low > high:
            raise Unprocessable(
                "template_variables_invalid", f"{where}.min is larger than max.", field=f"{where}.min"
            )
        unknown = set(item) - {"name", "type", "min", "max"}
        if unknown:
            raise Unprocessable(
                "template_variables_invalid",
                f"{where} has unknown keys: {', '.join(sorted(unknown))}.",
                field=where,
            )
        given[name] = {"name": name, "type": type_name, "min": low, "max": high}
    out = []
    for name in names:
        if name in given:
            out.append(given[name])
        else:
            kind = VARIABLE_TYPES[default_type_for(name)]
            out.append({"name": name, "type": kind.name, "min": kind.min_length, "max": kind.max_length})
    return out


@dataclass(frozen=True, slots=True)
class ParamProblem:
    name: str
    code: str  # template_param_missing | template_param_invalid | template_param_unknown
    message: str


def validate_params(
    variables: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None
) -> list[ParamProblem]:
    """Every problem of `params` against a template's variables (empty: fine). Values are strings (a whole
    number is accepted and read as its digits); an empty value counts as missing."""
    params = params or {}
    problems: list[ParamProblem] = []
    for var in variables:
        name = str(var["name"])
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is None or value == "":
            problems.append(ParamProblem(name, "template_param_missing", f"Give a value for ${{{name}}}."))
            continue
        type_name = str(var.get("type") or default_type_for(name))
        if not isinstance(value, str) or type_name not in VARIABLE_TYPES:
            problems.append(ParamProblem(name, "template_param_invalid", f"${{{name}}} must be text."))
            continue
        kind = VARIABLE_TYPES[type_name]
        why = value_problem(
            value, type_name, int(var.get("min") or kind.min_length), int(var.get("max") or kind.max_length)
        )
        if why:
            problems.append(ParamProblem(name, "template_param_invalid", f"${{{name}}} ({type_name}) {why}."))
    known = {str(v["name"]) for v in variables}
    for name in params:
        if name not in known:
            problems.append(
                ParamProblem(
                    str(name), "template_param_unknown", f"The template has no variable ${{{name}}}."
                )
            )
    return problems


def render(body: str, params: Mapping[str, Any]) -> str:
    """The body with each `${name}` replaced by its parameter (validate first; a missing one raises
    `template_param_missing`)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        value = params.get(name)
        if value is None or value == "":
            raise Unprocessable(
                "template_param_missing", f"Give a value for ${{{name}}}.", field=f"params.{name}"
            )
        return str(value)

    parse_template(body)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", fill, body)


def check_body(body: str | None, message_type: str) -> str:
    text = (body or "").strip()
    if not text:
        raise Unprocessable("template_body_required", "Write the template's text.", field="body")
    if len(text) > MAX_BODY:
        raise Unprocessable(
            "template_body_too_long",
            f"The text has {len(text)} characters; at most {MAX_BODY}.",
            field="body",
        )
    if "【" in text or "】" in text:
        raise Unprocessable(
            "template_body_signed",
            "Leave the signature 【…】 out of the text: choose it as the "
            "template's signature (the gate places it).",
            field="body",
        )
    names = parse_template(text)
    if len(names) > MAX_VARIABLES:
        raise Unprocessable("template_variables_invalid", f"At most {MAX_VARIABLES} variables.", field="body")
    return text


# -- service -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TemplateRef:
    """What the submit gate needs of an approved template."""

    id: str
    name: str
    message_type: str
    body: str
    variables: list[dict[str, Any]]
    signature_id: str | None


def view(t: MessageTemplate) -> dict[str, Any]:
    return {
        "name": t.name,
        "message_type": t.message_type,
        "template": t.body,
        "variables": t.variables,
        "signature_id": t.signature_id,
        "status": t.status,
    }


async def apply(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    name: str | None,
    message_type: str,
    body: str | None,
    variables: Sequence[Mapping[str, Any]] | None = None,
    signature_id: str | None = None,
    remark: str | None = None,
) -> MessageTemplate:
    """A new template application (pending)."""
    require(authority, ACCOUNT_SETTINGS)
    title = (name or "").strip()
    if not title or len(title) > MAX_NAME:
        raise Unprocessable(
            "template_name_required", f"Name the template (1–{MAX_NAME} characters).", field="name"
        )
    if message_type not in MESSAGE_TYPES:
        raise Unprocessable(
            "invalid_message_type",
            f"message_type must be one of {', '.join(MESSAGE_TYPES)}.",
            field="message_type",
        )
    text = check_body(body, message_type)
    spec = check_variables(text, variables)
    if message_type == "verification" and not any(v["type"] in ("code", "digits") for v in spec):
        raise Unprocessable(
            "template_code_variable_missing",
            "A verification template needs a code variable, e.g. ${code}.",
            field="body",
        )
    if signature_id:
        owner = await session.scalar(select(Signature.account_id).where(Signature.id == signature_id))
        if owner != authority.account_id:
            raise NotFound("signature_not_found", "No such signature in this account.", field="signature_id")
    note = (remark or "").strip() or None
    if note and len(note) > MAX_REMARK:
        raise Unprocessable(
            "template_remark_too_long",
            f"The remark has {len(note)} characters; at most {MAX_REMARK}.",
            field="remark",
        )
    now = utcnow()
    row = MessageTemplate(
        id=ids.new_id("tpl"),
        account_id=authority.account_id,
        name=title,
        message_type=message_type,
        body=text,
        variables=spec,
        signature_id=signature_id or None,
        remark=note,
        status="pending",
        reason=None,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await record(
        session,
        actor=actor,
        action="template.applied",
        account_id=row.account_id,
        target_type=KIND,
        target_id=row.id,
        after=view(row),
    )
    return row


async def list_templates(
    session: AsyncSession, *, authority: Authority, status: str | None = None
) -> list[MessageTemplate]:
    require(authority, MESSAGES_READ)
    return await reviews.account_rows(session, MessageTemplate, account_id=authority.account_id, status=status)


async def get(
    session: AsyncSession, *, authority: Authority, template_id: str, permission: str = MESSAGES_READ
) -> MessageTemplate:
    require(authority, permission)
    row = await session.get(MessageTemplate, template_id)
    if row is None or row.account_id != authority.account_id:
        raise NotFound("template_not_found", "No such template in this account.", field="template_id")
    return row


async def withdraw(
    session: AsyncSession, *, authority: Authority, actor: Actor, template_id: str
) -> MessageTemplate:
    row = await get(session, authority=authority, template_id=template_id, permission=ACCOUNT_SETTINGS)
    await reviews.withdraw(session, row, kind=KIND, actor=actor)
    return row


async def add_document(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    template_id: str,
    filename: str | None,
    data: bytes,
    max_bytes: int,
    field: str = "file",
) -> DocumentInfo:
    row = await get(session, authority=authority, template_id=template_id, permission=ACCOUNT_SETTINGS)
    return await reviews.add_document(
        session, row, kind=KIND, actor=actor, filename=filename, data=data, max_bytes=max_bytes, field=field
    )


async def review_queue(
    session: AsyncSession, *, authority: Authority, status: str | None = "pending", limit: int = 100
) -> list[MessageTemplate]:
    require(authority, OPERATOR_REVIEW)
    query = select(MessageTemplate)
    if status:
        query = query.where(MessageTemplate.status == status)
    return list(await session.scalars(query.order_by(*reviews.queue_order(MessageTemplate)).limit(limit)))


async def get_for_review(session: AsyncSession, *, authority: Authority, template_id: str) -> MessageTemplate:
    require(authority, OPERATOR_REVIEW)
    row = await session.get(MessageTemplate, template_id)
    if row is None:
        raise NotFound("template_not_found", "No such template.", field="template_id")
    return row


async def review(
    session: AsyncSession,
    *,
    authority: Authority,
    actor: Actor,
    template_id: str,
    decision: str,
    reason: str | None = None,
) -> MessageTemplate:
    row = await get_for_review(session, authority=authority, template_id=template_id)
    await reviews.decide(session, row, kind=KIND, decision=decision, reason=reason, actor=actor)
    return row


async def approved_template(session: AsyncSession, account_id: str, template_id: str) -> TemplateRef | None:
    """The account's approved template with this id, or None (another account's, pending, rejected …)."""
    row = await session.get(MessageTemplate, template_id)
    if row is None or row.account_id != account_id or row.status != "approved":
        return None
    return TemplateRef(
        row.id, row.name, row.message_type, row.body, list(row.variables or []), row.signature_id
    )
