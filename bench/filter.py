"""Benchmark: the content filter (hongyan.compliance.content_filter). Prints one JSON object.

  .venv/bin/python bench/filter.py [--keywords 10000] [--messages 200000] [--match-share 0.1]

A platform list of generated keywords (Chinese three- to five-character words and Latin words and phrases,
some review, some allow phrases), 20 regexes and 200 denied + 50 allowed link domains, plus an account
list of 200 keywords, compiled once (timed, normalization tables included). Then `check()` over N
realistic messages in one process: verification codes, notifications and marketing texts in Chinese and
English, with links, of which a share carries a keyword disguised (spaces, symbols, full-width letters,
traditional characters, zero-width characters). Reports checks per second, the share of verdicts, and
the cost of the empty filter. The floor: checking must not cap a 10,000 msg/s ingest.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hongyan.compliance import normalize  # noqa: E402
from hongyan.compliance.content_filter import ContentFilter, Rule  # noqa: E402

# common characters for generated Chinese keywords (frequent ones, so matches are not trivially rare)
HANZI = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天"
    "而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身"
    "些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第"
    "门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目"
    "华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台"
    "象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资"
    "队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语"
)
LATIN_WORDS = (
    "casino poker bet loan cash credit bonus free prize winner lottery crypto bitcoin invest profit escort adult "
    "pills pharmacy viagra cialis replica luxury discount cheap unsecured payday jackpot slots roulette betting "
    "forex signals trading mining wallet airdrop giveaway claim reward urgent verify suspend account refund tax "
    "invoice agent hack spy gamble drugs weed vape tobacco firearm ammo gun knife fake diploma visa passport"
).split()
TRADITIONAL = {
    "发": "發",
    "开": "開",
    "票": "票",
    "贷": "貸",
    "款": "款",
    "网": "網",
    "场": "場",
    "赌": "賭",
    "务": "務",
    "电": "電",
    "话": "話",
    "门": "門",
    "长": "長",
    "东": "東",
    "车": "車",
    "书": "書",
}
REGEXES = [
    r"银行卡.{0,6}(冻结|异常|升级)",
    r"(加|\+)\s*(v|微|薇|威)\s*[:：]?\s*[a-z0-9_-]{5,}",
    r"\d{3,4}-?\d{7,8}转\d+",
    r"(日|月)赚\d+",
    r"(稳赚|包赢|必中)",
    r"qq[:：]?\s*\d{6,11}",
    r"tg\s*[:：@]\s*\w{4,}",
    r"(点击|戳)\s*领取",
    r"[a-z0-9]{20,}",
    r"\b(?:usdt|btc|eth)\b.{0,10}\d+",
    r"退款.{0,4}(链接|网址)",
    r"刷单|兼职.{0,3}日结",
    r"(免费|0元)领.{0,4}(手机|iphone)",
    r"(裸聊|约炮)",
    r"(套现|提额)",
    r"(代办|办理).{0,3}(证件|驾照|文凭)",
    r"(彩票|六合彩).{0,5}(内幕|计划)",
    r"(中奖|获奖).{0,8}(领取|手续费)",
    r"(公安|法院).{0,6}(通缉|传票)",
    r"(快递|包裹).{0,6}(理赔|赔偿)",
]
TEMPLATES_ZH = [
    "【{brand}】您的验证码是{code}，5分钟内有效，请勿泄露给他人。如非本人操作请忽略。",
    "【{brand}】您的订单{order}已发货，快递单号SF{num}，请注意查收。",
    "【{brand}】尊敬的会员，双十二全场五折起，详情见 https://m.{site}.com/sale?id={num} 拒收请回复R",
    "【{brand}】您尾号{last4}的信用卡本期账单金额¥{amount}，还款日12月5日。",
    "【{brand}】您预约的门诊时间为明天上午9:30，请携带身份证和医保卡。",
    "【{brand}】亲爱的用户，您有一张{amount}元优惠券即将到期，戳 t.cn/{short} 查看，回T退订",
    "【{brand}】本周六上午停水，请提前储水，给您带来不便敬请谅解。",
    "【{brand}】您的账号于今日在新设备登录，如非本人操作请及时修改密码。",
]
TEMPLATES_EN = [
    "[{brand}] Your verification code is {code}. It expires in 5 minutes. Do not share it.",
    "[{brand}] Your order #{order} has shipped and will arrive on Friday. Track: https://{site}.com/t/{num}",
    "[{brand}] Flash sale: 30% off all shoes this weekend at www.{site}.com. Reply STOP to opt out.",
    "[{brand}] Reminder: your appointment is tomorrow at 10:30 AM. Reply C to confirm.",
]


def _hanzi_word(rng: random.Random) -> str:
    return "".join(rng.choice(HANZI) for _ in range(rng.randint(3, 5)))


def build_rules(rng: random.Random, keywords: int) -> tuple[list[Rule], list[Rule], list[str]]:
    """(platform rules, account rules, the keywords to disguise in matching messages)."""
    platform: list[Rule] = []
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < keywords:
        if rng.random() < 0.8:
            word = _hanzi_word(rng)
        elif rng.random() < 0.5:
            word = rng.choice(LATIN_WORDS) + str(rng.randint(1, 999))
        else:
            word = " ".join(rng.sample(LATIN_WORDS, 2))
        key = normalize.compact(word)
        if key in seen:
            continue
        seen.add(key)
        words.append(word)
    for i, word in enumerate(words):
        action = "review" if i % 5 == 0 else "allow" if i % 97 == 0 else "block"
        platform.append(Rule(f"flt_p{i}", "keyword", word, action, "generated"))
    platform += [
        Rule(f"flt_r{i}", "regex", p, "block" if i % 2 else "review", "fraud") for i, p in enumerate(REGEXES)
    ]
    platform += [
        Rule(f"flt_d{i}", "url_deny", f"bad{i}.{rng.choice(['cn', 'top', 'xyz', 'com'])}", "block")
        for i in range(200)
    ]
    account = [Rule(f"flt_a{i}", "keyword", _hanzi_word(rng), "review") for i in range(200)]
    account += [Rule(f"flt_u{i}", "url_allow", f"shop{i}.com", "allow") for i in range(50)]
    hot = [w for i, w in enumerate(words) if i % 97 != 0]
    return platform, account, hot


def disguise(rng: random.Random, word: str) -> str:
    """A keyword as a spammer writes it."""
    out = []
    for char in word:
        r = rng.random()
        if char in TRADITIONAL and r < 0.4:
            char = TRADITIONAL[char]
        elif char.isascii() and char.isalpha() and r < 0.3:
            char = chr(ord(char.upper()) + 0xFEE0)  # full-width capital
        out.append(char)
        out.append(rng.choice(["", "", " ", "*", ".", "\u200b", "★", "-"]))
    return "".join(out)


def build_messages(rng: random.Random, n: int, hot: list[str], match_share: float) -> list[str]:
    messages = []
    for _ in range(n):
        english = rng.random() < 0.25
        template = rng.choice(TEMPLATES_EN if english else TEMPLATES_ZH)
        text = template.format(
            brand="鸿雁" if not english else "Hongyan",
            code=rng.randint(100000, 999999),
            order=f"JD{rng.randint(10**9, 10**10)}",
            num=rng.randint(10**6, 10**7),
            site=f"shop{rng.randint(0, 80)}",
            last4=rng.randint(1000, 9999),
            amount=rng.randint(1, 9999),
            short=f"{rng.randint(10**5, 10**6):x}",
        )
        if rng.random() < match_share:
            cut = rng.randint(0, len(text))
            text = text[:cut] + disguise(rng, rng.choice(hot)) + text[cut:]
        messages.append(text)
    return messages


def timed_checks(content_filter: ContentFilter, messages: list[str]) -> tuple[float, dict[str, int]]:
    verdicts: dict[str, int] = {"none": 0, "block": 0, "review": 0}
    check = content_filter.check
    started = time.process_time()  # CPU time of this process: other load on the machine does not count
    for text in messages:
        verdict = check(text)
        verdicts[verdict.action if verdict else "none"] += 1
    return time.process_time() - started, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keywords", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--match-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    started = time.perf_counter()
    normalize.warm_up()
    tables_s = time.perf_counter() - started
    platform_rules, account_rules, hot = build_rules(rng, args.keywords)
    started = time.perf_counter()
    content_filter = ContentFilter.compile(platform_rules, account_rules)
    compile_s = time.perf_counter() - started
    messages = build_messages(rng, args.messages, hot, args.match_share)
    timed_checks(content_filter, messages[:2000])  # warm caches

    wall = time.perf_counter()
    elapsed, verdicts = timed_checks(content_filter, messages)
    wall = time.perf_counter() - wall
    clean = [m for m in messages[:20_000] if content_filter.check(m) is None]
    clean_s, _ = timed_checks(content_filter, clean)
    empty_s, _ = timed_checks(ContentFilter.compile([], []), messages)
    out: dict[str, Any] = {
        "bench": "content_filter",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "keywords": args.keywords,
        "platform_rules": len(platform_rules),
        "account_rules": len(account_rules),
        "regexes": len(REGEXES),
        "url_rules": 250,
        "messages": len(messages),
        "avg_chars": round(sum(map(len, messages)) / len(messages), 1),
        "match_share": args.match_share,
        "tables_s": round(tables_s, 3),
        "compile_s": round(compile_s, 3),
        "check_cpu_s": round(elapsed, 3),
        "check_wall_s": round(wall, 3),
        "msgs_per_s": round(len(messages) / elapsed),
        "us_per_msg": round(elapsed / len(messages) * 1e6, 2),
        "clean_us_per_msg": round(clean_s / max(1, len(clean)) * 1e6, 2),
        "empty_filter_us_per_msg": round(empty_s / len(messages) * 1e6, 3),
        "verdicts": verdicts,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
