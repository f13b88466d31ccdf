"""Opt-out keyword matching (pure): every default keyword in every spelling people send, replies that
merely contain a keyword, opt-ins, account lists, and the settings dataclass."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hongyan.compliance.opt_out import (
    DEFAULT_OPT_IN_KEYWORDS,
    DEFAULT_OPT_OUT_KEYWORDS,
    classify_reply,
    match_reply,
    normalize_keyword,
    signature_name,
)
from hongyan.compliance.settings import ComplianceSettings


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _spellings(keyword: str) -> list[str]:
    return [
        keyword,
        keyword.lower(),
        keyword.upper(),
        keyword.capitalize(),
        _full_width(keyword),
        _full_width(keyword.lower()),
        f"  {keyword}  ",
        f"\t{keyword}\n",
        f"\u3000{keyword}\u3000",
        f"{keyword}。",
        f"{keyword}.",
        f"{keyword}!",
        f"{keyword}！",
        f"“{keyword}”",
        f"{keyword}～",
        f"\u200b{keyword}\ufeff",
        f"{keyword} 谢谢",
        f"请{keyword}",
        f"{keyword}，谢谢！",
        f"{keyword} please",
        f"thank you, {keyword}",
    ]


@pytest.mark.parametrize("keyword", DEFAULT_OPT_OUT_KEYWORDS)
def test_every_opt_out_keyword_in_every_spelling(keyword: str) -> None:
    for spelling in _spellings(keyword):
        assert classify_reply(spelling) == "opt_out", spelling


@pytest.mark.parametrize("keyword", DEFAULT_OPT_IN_KEYWORDS)
def test_every_opt_in_keyword_in_every_spelling(keyword: str) -> None:
    for spelling in _spellings(keyword):
        assert classify_reply(spelling) == "opt_in", spelling


@pytest.mark.parametrize(
    "body",
    ["退订。", " td ", "退 订", "T D", "Ｔ Ｄ", "ｓｔｏｐ　", "退订!!!", "【退订】", "退订了", "N 谢谢"],
)
def test_variants_people_send(body: str) -> None:
    assert classify_reply(body) == "opt_out"


@pytest.mark.parametrize(
    "body",
    [
        "N号楼",
        "the end of the day",
        "stop by at 5",
        "不要退订",
        "我想退订一下可以吗，怎么操作",
        "T恤还有吗",
        "Nice",
        "TDD",
        "Stop it",
        "END OF MESSAGE",
        "谢谢",
        "please",
        "",
        "   ",
        "。",
        "好的",
        "123",
        "STOP" * 20,
        "订阅号在哪里",
        "restart",
        "starting",
    ],
)
def test_replies_that_only_contain_a_keyword_are_not_keywords(body: str) -> None:
    assert classify_reply(body) is None


def test_match_reply_keeps_the_normalized_keyword_and_stopall_is_account_wide() -> None:
    found = match_reply(" ＳＴＯＰＡＬＬ！")
    assert found is not None and found.kind == "opt_out" and found.keyword == "stopall" and found.account_wide
    plain = match_reply("Stop")
    assert plain is not None and plain.keyword == "stop" and not plain.account_wide
    assert match_reply("退订，谢谢").keyword == "退订"  # type: ignore[union-attr]


def test_account_lists_replace_the_defaults() -> None:
    custom = {"opt_out_keywords": ("R", "拒收"), "opt_in_keywords": ("恢复",)}
    assert classify_reply("拒收", **custom) == "opt_out"
    assert classify_reply("ｒ", **custom) == "opt_out"
    assert classify_reply("STOP", **custom) is None
    assert classify_reply("恢复。", **custom) == "opt_in"
    assert classify_reply("START", **custom) is None
    # a word in both lists stops (when in doubt, stop sending)
    assert classify_reply("X", opt_out_keywords=("X",), opt_in_keywords=("x",)) == "opt_out"


def test_normalize_keyword() -> None:
    assert normalize_keyword("  Ｕｎｓｕｂｓｃｒｉｂｅ！ ") == "unsubscribe"
    assert normalize_keyword("退　订。") == "退订"
    assert normalize_keyword("!!!") == ""


@given(
    st.sampled_from(DEFAULT_OPT_OUT_KEYWORDS),
    st.text(alphabet=" \t\u3000。.!！,，?？", max_size=4),
    st.text(alphabet=" \t\u3000。.!！,，?？", max_size=4),
)
def test_whitespace_and_punctuation_around_never_matter(keyword: str, before: str, after: str) -> None:
    assert classify_reply(before + keyword + after) == "opt_out"


@given(st.text(max_size=80))
def test_never_raises(body: str) -> None:
    assert classify_reply(body) in ("opt_out", "opt_in", None)


def test_signature_name() -> None:
    assert signature_name("【鸿雁科技】您的验证码是123") == "鸿雁科技"
    assert signature_name("  【 Acme 】hello") == "Acme"
    assert signature_name("hello【Acme】", "suffix") == "Acme"
    assert signature_name("hello【Acme】") is None
    assert signature_name("no signature") is None
    assert signature_name("【】empty") is None


def test_compliance_settings_defaults_and_parsing() -> None:
    default = ComplianceSettings()
    assert default.opt_out_keywords == DEFAULT_OPT_OUT_KEYWORDS and default.opt_out_reply is None
    assert default.signature_position == "prefix" and default.opt_out_text_mode == "append"
    assert default.free_text_allowed and not default.strict_consent and default.marketing_daily_cap is None

    class Holder:
        settings = {
            "compliance": {
                "opt_out_keywords": ["R", " ", "R"],
                "opt_out_per_signature": True,
                "opt_out_reply": "  已退订 ",
                "suppress_all_types": "yes",
                "signature_position": "suffix",
                "opt_out_text_mode": "bogus",
                "marketing_daily_cap": 3,
                "unknown": 1,
            }
        }

    parsed = ComplianceSettings.from_account(Holder())
    assert parsed.opt_out_keywords == ("R",) and parsed.opt_out_per_signature
    assert parsed.opt_out_reply == "已退订"
    assert parsed.suppress_all_types is False  # not a boolean: the default
    assert parsed.signature_position == "suffix" and parsed.opt_out_text_mode == "append"
    assert parsed.marketing_daily_cap == 3
    assert ComplianceSettings.from_dict(parsed.to_dict()) == parsed
    assert ComplianceSettings.from_dict(None) == default and ComplianceSettings.from_dict([1]) == default
