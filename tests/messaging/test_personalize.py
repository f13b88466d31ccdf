from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.messaging.personalize import MissingVariable, parse_template, render

TEMPLATE = "尊敬的{客户姓名},您的订单{订单号}已发货。"


def test_fill_chinese_variables() -> None:
    t = parse_template(TEMPLATE)
    assert t.variables == ("客户姓名", "订单号")
    assert render(t, {"客户姓名": "张三", "订单号": "A1001"}) == "尊敬的张三,您的订单A1001已发货。"


def test_missing_variable_is_an_error_not_a_blank() -> None:
    with pytest.raises(MissingVariable) as err:
        render(parse_template(TEMPLATE), {"客户姓名": "张三"})
    assert err.value.name == "订单号"


def test_empty_value_counts_as_missing() -> None:
    with pytest.raises(MissingVariable):
        render(parse_template("{a}"), {"a": ""})


def test_default_value() -> None:
    t = parse_template("您好{name|客户}")
    assert render(t, {}) == "您好客户"
    assert render(t, {"name": "王五"}) == "您好王五"


def test_literal_braces() -> None:
    t = parse_template("code {{x}} and { not a var } and {}")
    assert t.is_plain
    assert render(t, {}) == "code {x} and { not a var } and {}"


def test_repeated_variable_listed_once() -> None:
    assert parse_template("{a}{b}{a}").variables == ("a", "b")


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=200))
def test_text_without_braces_is_unchanged(text: str) -> None:
    t = parse_template(text)
    assert t.is_plain and render(t, {}) == text
