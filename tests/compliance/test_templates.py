"""Message templates, pure part: `${var}` syntax, variable declarations, parameter checks per type, rendering."""

from __future__ import annotations

import pytest

from hongyan.compliance.templates import (
    VARIABLE_TYPES,
    check_variables,
    parse_template,
    render,
    validate_params,
)
from hongyan.core.errors import HongyanError


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("您的验证码是${code}，5分钟内有效。", ["code"]),
        ("${name}您好，订单${order_no}已发货，${name}请查收", ["name", "order_no"]),
        ("价格 $5，{name} 不是模板变量", []),
        ("$${code}$", ["code"]),
        ("", []),
    ],
)
def test_parse_template(body: str, names: list[str]) -> None:
    assert parse_template(body) == names


@pytest.mark.parametrize(
    ("body", "position", "words"),
    [
        ("验证码${code", 3, "not closed"),
        ("a ${} b", 2, "no variable name"),
        ("${1abc}", 0, "not a variable name"),
        ("x${ code }", 1, "not a variable name"),
        ("${验证码}", 0, "not a variable name"),
        ("${a${b}}", 0, "not closed"),
        ("${" + "a" * 33 + "}", 0, "not a variable name"),
    ],
)
def test_parse_template_errors_name_the_position(body: str, position: int, words: str) -> None:
    with pytest.raises(HongyanError) as caught:
        parse_template(body)
    assert caught.value.code == "template_syntax_invalid" and caught.value.field == "body"
    assert caught.value.details == {"position": position}
    assert words in caught.value.message and f"position {position}" in caught.value.message


def test_undeclared_variables_take_their_name_or_text() -> None:
    spec = check_variables("${code} ${name} ${date} ${shop}", [{"name": "shop", "type": "text", "max": 10}])
    assert spec == [
        {"name": "code", "type": "code", "min": 4, "max": 8},
        {"name": "name", "type": "name", "min": 1, "max": 20},
        {"name": "date", "type": "date", "min": 4, "max": 11},
        {"name": "shop", "type": "text", "min": 1, "max": 10},
    ]


@pytest.mark.parametrize(
    ("declared", "field"),
    [
        ([{"name": "other", "type": "text"}], "variables[0].name"),
        ([{"name": "code", "type": "colour"}], "variables[0].type"),
        ([{"name": "code", "type": "code", "min": 9, "max": 6}], "variables[0].min"),
        ([{"name": "code", "type": "code", "max": 11}], "variables[0].max"),  # a code has at most 10 digits
        ([{"name": "code", "type": "code", "min": True}], "variables[0].min"),
        ([{"name": "code"}, {"name": "code"}], "variables[1].name"),
        ([{"name": "code", "kind": "x"}], "variables[0]"),
    ],
)
def test_bad_declarations(declared: list[dict[str, object]], field: str) -> None:
    with pytest.raises(HongyanError) as caught:
        check_variables("验证码${code}", declared)
    assert caught.value.code == "template_variables_invalid" and caught.value.field == field


BAD, MISSING, UNKNOWN = "template_param_invalid", "template_param_missing", "template_param_unknown"
CODE = [{"name": "code", "type": "code", "min": 4, "max": 8}]
TEXT = [{"name": "t", "type": "text", "min": 1, "max": 20}]
NAME = [{"name": "name", "type": "name", "min": 1, "max": 20}]
AMOUNT = [{"name": "a", "type": "amount", "min": 1, "max": 20}]
NUMBER = [{"name": "n", "type": "number", "min": 1, "max": 20}]
DATE = [{"name": "d", "type": "date", "min": 4, "max": 11}]
TIME = [{"name": "h", "type": "time", "min": 2, "max": 8}]
PHONE = [{"name": "p", "type": "phone", "min": 3, "max": 20}]
PLATE = [{"name": "c", "type": "plate", "min": 7, "max": 8}]
REF = [{"name": "r", "type": "ref", "min": 1, "max": 32}]


@pytest.mark.parametrize(
    ("variables", "params", "expected"),
    [
        (CODE, {"code": "0123"}, []),  # leading zero kept: codes are text
        (CODE, {"code": "12345678"}, []),
        (CODE, {"code": 4821}, []),  # a JSON number is read as its digits
        (CODE, {"code": "12a4"}, [("code", BAD)]),
        (CODE, {"code": "123456789"}, [("code", BAD)]),  # 9 digits
        (CODE, {"code": "123"}, [("code", BAD)]),
        (CODE, {"code": "１２３４"}, [("code", BAD)]),  # full-width digits are not 0–9
        (CODE, {}, [("code", MISSING)]),
        (CODE, {"code": ""}, [("code", MISSING)]),
        (CODE, {"code": "1234", "extra": "x"}, [("extra", UNKNOWN)]),
        (CODE, {"code": True}, [("code", BAD)]),
        (TEXT, {"t": "字" * 20}, []),
        (TEXT, {"t": "字" * 21}, [("t", BAD)]),
        (TEXT, {"t": "点 http://x.cn"}, [("t", BAD)]),
        (TEXT, {"t": "访问 t.cn/abc"}, [("t", BAD)]),
        (TEXT, {"t": "www.abc.net"}, [("t", BAD)]),
        (TEXT, {"t": "{name}"}, [("t", BAD)]),
        (TEXT, {"t": "第一行\n第二行"}, [("t", BAD)]),
        (NAME, {"name": "欧阳 娜娜"}, []),
        (NAME, {"name": "Mary-Jane O'Neil"}, []),
        (NAME, {"name": "123456"}, [("name", BAD)]),
        (NAME, {"name": "abc.com"}, [("name", BAD)]),
        (AMOUNT, {"a": "12.50"}, []),
        (AMOUNT, {"a": "1,280.00"}, []),
        (AMOUNT, {"a": "12.345"}, [("a", BAD)]),
        (NUMBER, {"n": "-3.5"}, []),
        (NUMBER, {"n": "3e5"}, [("n", BAD)]),
        (DATE, {"d": "2026-01-02"}, []),
        (DATE, {"d": "2026年1月2日"}, []),
        (DATE, {"d": "2月29日"}, []),
        (DATE, {"d": "2026-02-30"}, [("d", BAD)]),
        (TIME, {"h": "14:30"}, []),
        (TIME, {"h": "8点30分"}, []),
        (TIME, {"h": "25:00"}, [("h", BAD)]),
        (PHONE, {"p": "400-820-8820"}, []),
        (PHONE, {"p": "+86 138 0013 8000"}, []),
        (PHONE, {"p": "call me"}, [("p", BAD)]),
        (PLATE, {"c": "粤B12345"}, []),
        (PLATE, {"c": "B12345"}, [("c", BAD)]),
        (REF, {"r": "SF1234567890"}, []),
        (REF, {"r": "SF 123"}, [("r", BAD)]),
    ],
)
def test_validate_params(
    variables: list[dict[str, object]], params: dict[str, object], expected: list[tuple[str, str]]
) -> None:
    problems = validate_params(variables, params)
    assert [(p.name, p.code) for p in problems] == expected
    assert all(p.message for p in problems)


def test_problem_messages_say_what_is_wrong() -> None:
    (problem,) = validate_params(CODE, {"code": "123456789"})
    assert problem.message == "${code} (code) must have 4–8 digits; it has 9."
    (problem,) = validate_params(TEXT, {"t": "见 https://a.b/c"})
    assert "links are not allowed" in problem.message


def test_every_type_accepts_its_own_example() -> None:
    for kind in VARIABLE_TYPES.values():
        spec = [{"name": "v", "type": kind.name, "min": kind.min_length, "max": kind.max_length}]
        assert validate_params(spec, {"v": kind.example}) == [], kind.name


def test_render() -> None:
    assert (
        render("您的验证码是${code}，${code}请勿告诉他人", {"code": "0123"})
        == "您的验证码是0123，0123请勿告诉他人"
    )
    assert render("价格 $5 ${x}", {"x": "a"}) == "价格 $5 a"
    with pytest.raises(HongyanError) as caught:
        render("${code}", {})
    assert caught.value.code == MISSING
