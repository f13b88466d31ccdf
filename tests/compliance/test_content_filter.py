"""The content filter, pure: normalization, evasions caught (spaces, symbols, full-width, traditional
characters, zero-width characters, mixed case), ordinary texts left alone, precedence, URL lists, and the
checks a rule must pass before it is stored."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hongyan.compliance import filter_patterns as fp
from hongyan.compliance import normalize
from hongyan.compliance.content_filter import ContentFilter, Rule, Verdict
from hongyan.core.errors import Unprocessable

PLATFORM = [
    Rule("flt_invoice", "keyword", "代开发票", "block", "invoice"),
    Rule("flt_daikai", "keyword", "daikai", "block", "invoice"),
    Rule("flt_gamble", "keyword", "网上赌场", "block", "gambling"),
    Rule("flt_casino", "keyword", "online casino", "block", "gambling"),
    Rule("flt_sex", "keyword", "sex", "block", "adult"),
    Rule("flt_viagra", "keyword", "viagra", "block", "adult"),
    Rule("flt_loan", "keyword", "贷款", "review", "finance"),
    Rule("flt_loan_ok", "keyword", "贷款已结清", "allow"),
    Rule("flt_wechat", "keyword", "加微信", "review", "contact"),
    Rule("flt_110", "keyword", "110", "review", "police"),
    Rule("flt_card", "regex", r"银行卡.{0,6}(冻结|异常)", "block", "fraud"),
    Rule("flt_phish", "url_deny", "phish.cn", "block", "phishing"),
    Rule("flt_short", "url_deny", "bit.ly", "review", "short_link"),
]


@pytest.fixture(scope="module")
def platform_filter() -> ContentFilter:
    return ContentFilter.compile(PLATFORM)


def _rule(verdict: Verdict | None) -> str | None:
    return verdict.rule_id if verdict else None


# -- normalization ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("代 开 发 票", "代开发票"),
        ("代.开.发.票", "代开发票"),
        ("代*开*发*票", "代开发票"),
        ("代-开_发/票", "代开发票"),
        ("代\u3000开\u3000发\u3000票", "代开发票"),  # ideographic spaces
        ("代😀开★发☆票", "代开发票"),  # emoji and symbols are separators
        ("代\u200b开\u200c发\u200d票\ufeff", "代开发票"),  # zero-width space, non-joiner, joiner, BOM
        ("代\u2060开\u00ad发\U000e0041票", "代开发票"),  # word joiner, soft hyphen, a tag character
        ("代開發票", "代开发票"),  # traditional
        ("代　開，發。票", "代开发票"),  # traditional, full-width punctuation
        ("ｄａｉｋａｉ", "daikai"),  # full-width letters
        ("ＤＡＩＫＡＩ", "daikai"),
        ("DaiKai", "daikai"),
        ("ⓥⓘⓐⓖⓡⓐ", "viagra"),  # circled letters
        ("𝐯𝐢𝐚𝐠𝐫𝐚", "viagra"),  # mathematical bold
        ("V̶i̶a̶g̶r̶a̶", "viagra"),  # combining strike-through
        ("Viágra", "viagra"),  # accents
        ("①②③", "123"),
        ("Straße", "strasse"),
        ("한국어", "한국어"),  # Hangul stays whole
    ],
)
def test_compact_form(text: str, expected: str) -> None:
    assert normalize.compact(text) == expected


def test_spaced_and_compact_agree() -> None:
    for text in (
        "代 開.發＊票",
        "Buy s.e.x now!",
        "ｄａｉ　ｋａｉ",
        "a\u200bb c",
        "𠀀代\U000e0041開 x",
        "½ ﬁ",
    ):
        assert normalize.compact(text) == normalize.spaced(text).replace(" ", "")


def test_fold_keeps_separators_half_width() -> None:
    assert normalize.fold("访问ＷＷＷ．ＡＢＣ．ＣＯＭ，領取") == "访问www.abc.com,领取"
    assert normalize.fold("Hello World") == "hello world"


_SEPARATORS = st.sampled_from(
    [
        " ",
        ".",
        "*",
        "-",
        "_",
        "/",
        "|",
        "\u3000",
        "，",
        "。",
        "★",
        "😀",
        "\u200b",
        "\u200d",
        "\ufeff",
        "~",
        "#",
        "\t",
        "\n",
    ]
)


@settings(max_examples=200, deadline=None)
@given(keyword=st.sampled_from(["代开发票", "网上赌场", "加微信"]), data=st.data())
def test_separators_between_characters_are_caught(
    platform_filter: ContentFilter, keyword: str, data: st.DataObject
) -> None:
    pieces = []
    for char in keyword:
        pieces.append(char)
        pieces.append("".join(data.draw(st.lists(_SEPARATORS, max_size=3))))
    prefix = data.draw(st.text(alphabet="您好请的了0123456789", max_size=10))
    suffix = data.draw(st.text(alphabet="您好请的了0123456789", max_size=10))
    text = prefix + "".join(pieces) + suffix
    assert platform_filter.check(text) is not None, text


_TRADITIONAL = {"开": "開", "发": "發", "网": "網", "场": "場", "赌": "賭"}
_FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in "daikDAIK"}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_traditional_full_width_and_case_mixed_are_caught(
    platform_filter: ContentFilter, data: st.DataObject
) -> None:
    keyword = data.draw(st.sampled_from(["代开发票", "网上赌场", "daikai"]))
    chars = []
    for char in keyword:
        choices = [
            char,
            char.upper(),
            _TRADITIONAL.get(char, char),
            _FULL_WIDTH.get(char, char),
            _FULL_WIDTH.get(char.upper(), char),
        ]
        chars.append(data.draw(st.sampled_from(choices)))
        chars.append(data.draw(st.sampled_from(["", "", " ", "\u200b", "."])))
    text = "您好，" + "".join(chars) + "，详询"
    assert platform_filter.check(text) is not None, text


# -- evasions and false positives ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "rule_id"),
    [
        ("专业代 开 发 票，价格优惠", "flt_invoice"),
        ("代.开.发.票 13800138000", "flt_invoice"),
        ("代*开*发*票", "flt_invoice"),
        ("承接代開發票業務", "flt_invoice"),
        ("ｄａｉｋａｉ fapiao", "flt_daikai"),
        ("d a i k a i", "flt_daikai"),
        ("Dai-Kai 请联系", "flt_daikai"),
        ("Visit our Online Casino tonight", "flt_casino"),
        ("best ONLINE-CASINO bonus", "flt_casino"),
        ("o n l i n e c a s i n o", "flt_casino"),
        ("buy s.e.x toys", "flt_sex"),
        ("SEX", "flt_sex"),
        ("网上sex服务", "flt_sex"),  # a CJK neighbour is a word boundary
        ("cheap V1agra? no: ⓥⓘⓐⓖⓡⓐ", "flt_viagra"),
        ("v\u200bi\u200ba\u200bg\u200br\u200ba", "flt_viagra"),
        ("您的银行卡已被冻结，请点击", "flt_card"),
        ("您尾号1234的銀行卡異常", "flt_card"),  # regexes run on the folded (simplified) text
        ("急用钱？低息贷款", "flt_loan"),
        ("加微信领红包", "flt_wechat"),
        ("有事请拨110", "flt_110"),
    ],
)
def test_evasions_are_caught(platform_filter: ContentFilter, text: str, rule_id: str) -> None:
    assert _rule(platform_filter.check(text)) == rule_id


NORMAL_TEXTS = [
    "【鸿雁科技】您的验证码是482913，5分钟内有效，请勿泄露给他人。",
    "【京东】您的订单JD2026112500123已发货，快递单号SF1234567890，请注意查收。",
    "【招商银行】您尾号8866的信用卡11月账单金额¥3,210.50，还款日12月5日。",
    "【美团】您预订的酒店已确认，入住日期11月28日，如需取消请提前一天操作。",
    "【顺丰速运】您的快件已到达北京朝阳区驿站，取件码6-2-3018，请在18:00前领取。",
    "【12306】订单E123456789，张女士您已购11月30日G101次3车12F号，北京南站8:00开。",
    "【中国移动】尊敬的客户，您本月套餐内流量已使用80%，回复CXLL查询详情。",
    "【滴滴出行】您的行程已结束，车费23.50元，感谢使用。",
    "【支付宝】您的账户于11月25日收到转账100.00元。",
    "【国家电网】您的电费余额不足20元，请及时缴费以免影响用电。",
    "【某某医院】您预约的门诊时间为明天上午9:30，请携带身份证和医保卡。",
    "【鸿雁会员】双十二全场五折起，会员再享9折，拒收请回复R",
    "【鸿雁商城】感谢您的购买，开具发票请在订单页面申请电子发票。",
    "【物业】本周六上午停水，请提前储水，给您带来不便敬请谅解。",
    "【学校】家长您好，本周五下午2点召开家长会，请准时参加。",
    "您的贷款已结清，感谢您的信任。",  # an allowed phrase covers the review keyword inside it
    "【工商银行】您的账户开户成功，欢迎使用。",
    "会议改到下午3点，地点在三楼会议室。",
    "Your verification code is 482913. It expires in 5 minutes. Do not share it with anyone.",
    "Your Amazon order #112-3345566 has shipped and will arrive on Friday.",
    "Reminder: your dentist appointment is tomorrow at 10:30 AM. Reply C to confirm.",
    "Welcome to Essex County Library! Your card number is 2231 0045 1100.",
    "Hi Sam, the class assessment moved to Sussex Hall, room 110B.",  # Essex, class, Sussex: no sex
    "Flash sale: 30% off all shoes this weekend. Reply STOP to opt out.",
    "Your package is out for delivery. Track it in the app.",
    "Your one-time passcode for login is 771204.",
    "Casino Road will be closed for repairs on Monday.",  # a single word of a phrase keyword
    "Thanks for your payment of $45.20. Balance: $0.00.",
    "Your flight CA981 to New York departs at 13:05 from gate 22.",
    "The sextant and sextet exhibits open at the museum today.",
    "Call 13811012345 for your parcel.",  # 110 inside a longer number is no match
    "Meet me at 3:30 for the project review.",
    "【鸿雁】尊敬的用户，您的账号于今日在新设备登录，如非本人操作请修改密码。",
]


@pytest.mark.parametrize("text", NORMAL_TEXTS)
def test_normal_texts_pass(platform_filter: ContentFilter, text: str) -> None:
    assert platform_filter.check(text) is None


# -- precedence ------------------------------------------------------------------------------------
def test_block_beats_review_whatever_the_order() -> None:
    f = ContentFilter.compile([Rule("r", "keyword", "贷款", "review"), Rule("b", "keyword", "赌博", "block")])
    verdict = f.check("贷款之后去赌博")
    assert verdict is not None and verdict.action == "block" and verdict.rule_id == "b"
    assert verdict.scope == "platform" and verdict.kind == "keyword" and verdict.pattern == "赌博"


def test_platform_reported_before_account_at_equal_severity() -> None:
    f = ContentFilter.compile(
        [Rule("p", "keyword", "优惠", "review")], [Rule("a", "keyword", "领取", "review")]
    )
    verdict = f.check("领取优惠")
    assert verdict is not None and (verdict.rule_id, verdict.scope) == ("p", "platform")


def test_account_block_beats_platform_review() -> None:
    f = ContentFilter.compile(
        [Rule("p", "keyword", "优惠", "review")], [Rule("a", "keyword", "竞品", "block")]
    )
    verdict = f.check("优惠胜过竞品")
    assert verdict is not None and (verdict.rule_id, verdict.scope, verdict.action) == (
        "a",
        "account",
        "block",
    )


def test_allow_phrase_covers_only_matches_inside_it() -> None:
    f = ContentFilter.compile(
        [Rule("r", "keyword", "发票", "review"), Rule("ok", "keyword", "电子发票", "allow")]
    )
    assert f.check("请申请电子发票") is None
    assert f.check("请申请电 子 發 票") is None  # the allow phrase is normalized like any keyword
    assert _rule(f.check("电子发票和纸质发票")) == "r"  # the second 发票 is outside the allowed phrase


def test_account_allow_never_lifts_a_platform_block() -> None:
    platform = [Rule("pb", "keyword", "代开发票", "block"), Rule("pr", "keyword", "贷款", "review")]
    account = [
        Rule("a1", "keyword", "代开发票服务", "allow"),
        Rule("a2", "keyword", "贷款已还清", "allow"),
        Rule("a3", "keyword", "会员", "review"),
        Rule("a4", "keyword", "会员日", "allow"),
    ]
    f = ContentFilter.compile(platform, account)
    assert _rule(f.check("代开发票服务")) == "pb"
    assert f.check("您的贷款已还清") is None  # a platform review can be lifted by the account
    assert f.check("会员日快乐") is None


def test_platform_allow_covers_account_rules() -> None:
    f = ContentFilter.compile(
        [Rule("ok", "keyword", "中国银行", "allow")], [Rule("a", "keyword", "银行", "block")]
    )
    assert f.check("中国银行提醒您") is None
    assert _rule(f.check("某银行提醒您")) == "a"


def test_empty_filter_is_empty_and_answers_none() -> None:
    f = ContentFilter.compile([], [])
    assert f.empty and f.check("代开发票") is None


# -- URLs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("点击 https://www.Example.com/a?b=1 领取", ["example.com"]),
        ("详见http://sub.shop.example.com:8080/x", ["sub.shop.example.com"]),
        ("http://bank.com@evil.cn/login", ["evil.cn"]),
        ("访问www.abc.xyz查看", ["abc.xyz"]),
        ("短链t.cn/A6xyz9，速领", ["t.cn"]),
        ("官网abc。cn", ["abc.cn"]),
        ("ＷＷＷ．ＥＸＡＭＰＬＥ．ＣＯＭ", ["example.com"]),
        ("mail us at help@example.com", []),  # an e-mail address is no link
        ("version 1.2.3, e.g. this, i.e. that, Mr.Li", []),
        ("see http://1.2.3.4/x", ["1.2.3.4"]),
    ],
)
def test_url_hosts(text: str, hosts: list[str]) -> None:
    assert fp.url_hosts(normalize.fold(text)) == hosts


def test_url_deny_blocks_the_domain_and_its_subdomains(platform_filter: ContentFilter) -> None:
    assert _rule(platform_filter.check("登录 http://phish.cn/bank")) == "flt_phish"
    assert _rule(platform_filter.check("登录 secure.phish.cn/bank")) == "flt_phish"
    assert platform_filter.check("登录 notphish.cn/bank") is None
    verdict = platform_filter.check("领取 bit.ly/abc")
    assert verdict is not None and (verdict.rule_id, verdict.action) == ("flt_short", "review")


def test_url_allow_list_sends_other_links_to_review() -> None:
    f = ContentFilter.compile([], [Rule("a", "url_allow", "example.com", "allow")])
    assert f.check("详见 https://www.example.com/x 和 shop.example.com") is None
    verdict = f.check("详见 https://other.cn/x")
    assert verdict is not None and verdict.action == "review" and verdict.rule_id is None
    assert (verdict.pattern, verdict.kind, verdict.scope) == ("other.cn", "url_allow", "account")
    assert f.check("no link here") is None


def test_account_allow_list_does_not_override_platform_deny() -> None:
    f = ContentFilter.compile(
        [Rule("d", "url_deny", "evil.cn", "block")], [Rule("a", "url_allow", "evil.cn", "allow")]
    )
    assert _rule(f.check("go to evil.cn")) == "d"


# -- rules before they are stored ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("keyword", ""),
        ("keyword", "   "),
        ("keyword", "！！★"),
        ("keyword", "x" * 501),
        ("keyword", "a\nb"),
        ("keyword", "a\x00b"),
        ("keyword", "a\tb"),
        ("regex", "(unclosed"),
        ("regex", "a*"),
        ("regex", "(a+)+$"),
        ("regex", r"(\w+\s?)*x"),
        ("url_deny", "not a domain"),
        ("url_allow", "http://"),
        ("url_deny", "12345"),
    ],
)
def test_invalid_patterns(kind: str, pattern: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        fp.clean_pattern(kind, pattern)
    assert caught.value.code == "filter_pattern_invalid" and caught.value.field == "pattern"


@pytest.mark.parametrize(
    ("kind", "pattern", "stored"),
    [
        ("keyword", "  代开发票 ", "代开发票"),
        ("regex", r"\d{6}", r"\d{6}"),
        ("url_deny", "https://www.Evil.CN/path?x=1", "evil.cn"),
        ("url_allow", "*.example.com", "example.com"),
        ("url_allow", "例子.cn", "xn--fsqu00a.cn"),
        ("url_deny", "10.0.0.1", "10.0.0.1"),
    ],
)
def test_clean_patterns(kind: str, pattern: str, stored: str) -> None:
    assert fp.clean_pattern(kind, pattern) == stored


@pytest.mark.parametrize(
    ("kind", "action", "expected"),
    [
        ("keyword", None, "block"),
        ("url_allow", None, "allow"),
        ("url_deny", "review", "review"),
    ],
)
def test_kind_actions(kind: str, action: str | None, expected: str) -> None:
    assert fp.check_kind_action(kind, action) == expected


@pytest.mark.parametrize(
    ("kind", "action"), [("regex", "allow"), ("url_allow", "block"), ("phrase", "block")]
)
def test_kind_action_pairs_refused(kind: str, action: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        fp.check_kind_action(kind, action)
    assert caught.value.code == "invalid_value"


def test_a_stored_rule_that_no_longer_compiles_is_skipped() -> None:
    f = ContentFilter.compile(
        [Rule("bad", "regex", "(oops", "block"), Rule("ok", "keyword", "赌场", "block")]
    )
    assert [r.id for r in f.platform.rules] == ["ok"] and _rule(f.check("赌场")) == "ok"


def test_regexes_with_groups_and_flags_still_work() -> None:
    f = ContentFilter.compile(
        [Rule("g", "regex", r"(\d)\1{5}", "review"), Rule("i", "regex", "(?s)a.b", "block")]
    )
    assert _rule(f.check("code 777777")) == "g"
    assert _rule(f.check("A\nB")) == "i"
    assert f.check("code 123456") is None


# -- the regex prefilter ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"银行卡.{0,6}(冻结|异常)", {"银行卡"}),
        (r"(稳赚|包赢)", {"稳赚", "包赢"}),
        (r"\d{3,4}-?\d{7,8}转\d+", {"转"}),
        (r"\b(?:USDT|btc)\b.{0,10}\d+", {"usdt", "btc"}),
        (r"刷单|兼职.{0,3}日结", {"刷单", "兼职"}),
        (r"(ab)?cd+", {"c"}),
        (r"(?:x|y){2,}z", {"z"}),
        (r"[a-z0-9]{20,}", None),
        (r"(foo)?bar|baz*", {"bar", "ba"}),
        (r"\w+@\w+", {"@"}),
    ],
)
def test_required_literals(pattern: str, literals: set[str] | None) -> None:
    assert fp.required_literals(pattern) == literals


_PREFILTER_REGEXES = [
    r"银行卡.{0,3}(冻结|异常)",
    r"(稳赚|包赢)\d",
    r"\d{3}转\d",
    r"[a-c]{4,}",
    r"(ab)?cd+",
    r"(x)\1y",
    r"qq\s*\d{3}",
]


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="银行卡冻结异常稳赚包赢转abcdxyq 0123456789", max_size=30))
def test_regex_prefilter_agrees_with_running_every_regex(text: str) -> None:
    f = ContentFilter.compile([Rule(f"r{i}", "regex", p, "review") for i, p in enumerate(_PREFILTER_REGEXES)])
    folded = normalize.fold(text)
    expected = next((f"r{i}" for i, (c, _) in enumerate(f.platform.regexes) if c.search(folded)), None)
    assert _rule(f.check(text)) == expected
