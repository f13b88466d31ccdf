"""Turning the send form as a person typed it into recipients (pure; table tests)."""

from __future__ import annotations

import pytest

from hongyan.console.send_form import (
    FormProblem,
    SendForm,
    form_field_for,
    parse_recipients,
    parse_table,
    position_label,
)
from hongyan.messaging.submit import Recipient


def test_list_mode_splits_on_every_separator_people_type() -> None:
    form = SendForm(
        recipients="13800000001; 13800000002\n+8613800000002，13800000003、13800000004\t13800000005"
    )
    assert [r.to for r in parse_recipients(form).recipients] == [
        "13800000001",
        "13800000002",
        "+8613800000002",
        "13800000003",
        "13800000004",
        "13800000005",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "手机号,客户姓名,订单号\n13800000001,张三,A1001\n13800000002,李四,A1002",
            [
                Recipient("13800000001", {"客户姓名": "张三", "订单号": "A1001"}),
                Recipient("13800000002", {"客户姓名": "李四", "订单号": "A1002"}),
            ],
        ),
        # pasted from a spreadsheet: tabs
        ("number\tname\n13800000001\tZhang San", [Recipient("13800000001", {"name": "Zhang San"})]),
        # typed with a Chinese keyboard: full-width commas
        ("手机号，姓名\n13800000001，张三", [Recipient("13800000001", {"姓名": "张三"})]),
        # quoted cell with a comma; spaces after separators; blank lines skipped
        ('number, name\n\n13800000001, "Zhang, San"\n', [Recipient("13800000001", {"name": "Zhang, San"})]),
        # fewer cells than columns, or empty cells: the variable is absent (prepare reports it, or uses a default)
        (
            "number,a,b\n13800000001,x\n13800000002,,y",
            [Recipient("13800000001", {"a": "x"}), Recipient("13800000002", {"b": "y"})],
        ),
        # numbers only, with a header
        ("手机号\n13800000001", [Recipient("13800000001", None)]),
        ("", []),
        ("手机号,姓名", []),
    ],
)
def test_table_rows_become_recipients_with_variables(text: str, expected: list[Recipient]) -> None:
    assert parse_table(text).recipients == expected


def test_table_remembers_the_line_of_each_recipient() -> None:
    parsed = parse_table("手机号,姓名\n\n13800000001,张三\n13800000002,李四")
    assert parsed.variables == ("姓名",)
    assert parsed.lines == (3, 4)
    assert position_label(1, parsed) == ("line", 4)
    assert position_label(1, parse_recipients(SendForm(recipients="1,2"))) == ("item", 2)


@pytest.mark.parametrize(
    ("text", "key", "params"),
    [
        ("number,,b\n1,2,3", "send.table.empty_header", {"column": 2}),
        ("number,a,a\n1,2,3", "send.table.duplicate_header", {"name": "a"}),
        ("number,a\n\n13800000001,x,y", "send.table.too_many_cells", {"line": 3, "cells": 3, "columns": 2}),
    ],
)
def test_table_problems_name_the_line_or_column(text: str, key: str, params: dict[str, object]) -> None:
    with pytest.raises(FormProblem) as problem:
        parse_table(text)
    assert (problem.value.field, problem.value.key, problem.value.params) == ("table", key, params)


def test_an_unbalanced_quote_does_not_swallow_the_next_lines() -> None:
    parsed = parse_table('number,name\n13800000001,"Zhang\n13800000002,Li')
    assert [r.to for r in parsed.recipients] == ["13800000001", "13800000002"]


@pytest.mark.parametrize(
    ("mode", "error_field", "form_field"),
    [
        ("list", "recipients[3].to", "recipients"),
        ("table", "recipients[3].to", "table"),
        ("table", "recipients[0].vars.姓名", "table"),
        ("list", "recipients", "recipients"),
        ("list", "text", "text"),
        ("list", "message_type", "message_type"),
        ("list", None, "form"),
        ("list", "scheduled_at", "form"),
    ],
)
def test_domain_error_fields_map_to_form_fields(mode: str, error_field: str | None, form_field: str) -> None:
    assert form_field_for(error_field, SendForm(recipient_mode=mode)) == form_field


def test_unknown_choices_fall_back_to_defaults() -> None:
    form = SendForm.from_fields({"recipient_mode": "csv", "message_type": "spam", "text": "a\r\nb"})
    assert (form.recipient_mode, form.message_type, form.text) == ("list", "notification", "a\nb")
