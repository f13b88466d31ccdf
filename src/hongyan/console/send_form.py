"""The send form as typed by a person, turned into a `SubmitRequest` (pure: no I/O).

Recipients come in one of two ways (`recipient_mode`):

* `list`: numbers only, separated by comma, semicolon (ASCII or full-width), 、, tab or newline.
* `table`: one recipient per line with its personalization values, CSV with a header line. The first
  column is the number (its header name is free, e.g. 手机号); every other header names a variable that
  the text uses as `{name}`. Comma, full-width comma or tab (pasted from a spreadsheet) separate cells;
  "quoted, cells" may contain commas. Example::

      手机号,客户姓名,订单号
      13800000001,张三,A1001
      13800000002,李四,A1002

Content comes in one of two ways (`content_mode`): `text` (typed, reviewed by the content filter) or
`template` (an approved template: its `${variables}` come from the inputs `param.<template id>.<name>`,
the same for every recipient, or per recipient from table columns named like the variables). The
signature is one of the account's approved signatures (default preselected); the gate places it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from hongyan.messaging.numbers import split_recipients
from hongyan.messaging.submit import MESSAGE_TYPES, Recipient, SubmitRequest

RECIPIENT_MODES = ("list", "table")
CONTENT_MODES = ("text", "template")
PARAM_PREFIX = "param."


class FormProblem(ValueError):
    """A problem with the form itself (not a domain error): a catalog key and its parameters."""

    def __init__(self, field: str, key: str, **params: object) -> None:
        super().__init__(key)
        self.field = field
        self.key = key
        self.params = params


@dataclass(frozen=True, slots=True)
class SendForm:
    recipients: str = ""
    table: str = ""
    recipient_mode: str = "list"
    text: str = ""
    message_type: str = "notification"
    signature: str = ""  # an approved signature's name; "" when the account has none
    content_mode: str = "text"
    template_id: str = ""
    params: tuple[tuple[str, str], ...] = ()  # the chosen template's values typed in the form

    @classmethod
    def from_fields(cls, get: dict[str, str]) -> SendForm:
        mode = get.get("recipient_mode", "list")
        message_type = get.get("message_type", "notification")
        content_mode = get.get("content_mode", "text")
        template_id = get.get("template_id", "").strip()
        own = f"{PARAM_PREFIX}{template_id}."  # inputs of the other templates' (hidden) groups are ignored
        return cls(
            recipients=get.get("recipients", ""),
            table=get.get("table", ""),
            recipient_mode=mode if mode in RECIPIENT_MODES else "list",
            text=get.get("text", "").replace("\r\n", "\n"),
            message_type=message_type if message_type in MESSAGE_TYPES else "notification",
            signature=get.get("signature", "").strip(),
            content_mode=content_mode if content_mode in CONTENT_MODES else "text",
            template_id=template_id,
            params=tuple(
                (k[len(own) :], v.strip())
                for k, v in get.items()
                if template_id and k.startswith(own) and v.strip()
            ),
        )

    @property
    def by_template(self) -> bool:
        return self.content_mode == "template"

    def param(self, name: str) -> str:
        return dict(self.params).get(name, "")

    @property
    def recipients_field(self) -> str:
        """The form field that holds the recipients in the chosen mode."""
        return "table" if self.recipient_mode == "table" else "recipients"


@dataclass(frozen=True, slots=True)
class ParsedRecipients:
    recipients: list[Recipient]
    variables: tuple[str, ...]  # table mode: the variable names of the header
    lines: tuple[int, ...]  # table mode: the 1-based line of each recipient (for messages)


def parse_table(text: str) -> ParsedRecipients:
    """CSV lines with a header: number column first, then one column per variable."""
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        return ParsedRecipients([], (), ())
    header_line = numbered[0][1]
    if "\t" in header_line:
        delimiter = "\t"
    elif "，" in header_line and "," not in header_line:
        delimiter = "，"
    else:
        delimiter = ","
    # one line, one row: an unbalanced quote must not swallow the lines after it
    rows = [next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), []) for _, line in numbered]
    header = [cell.strip() for cell in rows[0]]
    names = header[1:]
    for column, name in enumerate(names, start=2):
        if not name:
            raise FormProblem("table", "send.table.empty_header", column=column)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FormProblem("table", "send.table.duplicate_header", name=name)
        seen.add(name)
    recipients: list[Recipient] = []
    lines: list[int] = []
    for (line_no, _), cells in zip(numbered[1:], rows[1:], strict=True):
        values = [cell.strip() for cell in cells]
        if len(values) > len(header):
            raise FormProblem(
                "table", "send.table.too_many_cells", line=line_no, cells=len(values), columns=len(header)
            )
        number = values[0] if values else ""
        variables = {name: value for name, value in zip(names, values[1:], strict=False) if value != ""}
        recipients.append(Recipient(to=number, vars=variables or None))
        lines.append(line_no)
    return ParsedRecipients(recipients, tuple(names), tuple(lines))


def parse_recipients(form: SendForm) -> ParsedRecipients:
    if form.recipient_mode == "table":
        return parse_table(form.table)
    numbers = split_recipients(form.recipients)
    return ParsedRecipients([Recipient(to=n) for n in numbers], (), ())


def submit_request(form: SendForm, parsed: ParsedRecipients, *, default_region: str) -> SubmitRequest:
    if form.by_template:
        shared = dict(form.params)  # typed once for everyone; a table's columns override per recipient
        recipients = [
            Recipient(to=r.to, client_ref=r.client_ref, params={**shared, **(r.vars or {})} or None)
            for r in parsed.recipients
        ]
        return SubmitRequest(
            text="",
            recipients=recipients,
            message_type=form.message_type,
            default_region=default_region,
            signature=form.signature or None,
            template_id=form.template_id or None,
        )
    return SubmitRequest(
        text=form.text,
        recipients=parsed.recipients,
        message_type=form.message_type,
        default_region=default_region,
        signature=form.signature or None,
    )


def form_field_for(error_field: str | None, form: SendForm) -> str:
    """Which form field a domain error names: `recipients[3].to` → the recipients box of the mode."""
    if not error_field:
        return "form"
    if error_field.startswith("recipients"):
        return form.recipients_field
    if error_field in ("text", "message_type", "signature", "template_id"):
        return error_field
    if error_field.startswith("params"):
        return "params"
    return "form"


def position_label(index: int, parsed: ParsedRecipients) -> tuple[str, int]:
    """Where a recipient is in what the person typed: ("line", n) in a table, ("item", n) in a list."""
    if parsed.lines:
        return "line", parsed.lines[index]
    return "item", index + 1
