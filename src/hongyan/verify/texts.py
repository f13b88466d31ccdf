"""What a verification SMS says: the default texts (zh-CN, en) or the account's approved verification template.

The default text goes to the submit path with `{code}` still a personalization placeholder and the code as
the recipient's variable, so the batch keeps the text without the code (`batch.body_template`); only the
message itself carries it. A template is sent by id with `${code}` (and optionally `${ttl}`, minutes) as
parameters; the gate adds the signature either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.compliance.templates import TemplateRef, approved_template
from hongyan.core.errors import Unprocessable
from hongyan.messaging.submit import Recipient, SubmitRequest

LOCALES = ("zh-CN", "en")
DEFAULT_TEXTS = {
    "zh-CN": "您的验证码是{code}，{ttl}分钟内有效。请勿泄露给他人。",
    "en": "Your verification code is {code}. It expires in {ttl} minutes.",
}
TEMPLATE_VARIABLES = frozenset({"code", "ttl"})
_CHINESE_REGIONS = frozenset({"CN", "HK", "MO", "TW"})


def default_locale(region: str | None) -> str:
    """zh-CN for accounts in Greater China, English elsewhere (the request's `locale` wins)."""
    return "zh-CN" if (region or "").upper() in _CHINESE_REGIONS else "en"


def ttl_minutes(ttl_s: int) -> int:
    """The lifetime as people read it: whole minutes, rounded up (90 s → 2)."""
    return max(1, math.ceil(ttl_s / 60))


@dataclass(frozen=True, slots=True)
class VerifyText:
    """How to send a code: the default text of a locale, or an approved template."""

    locale: str
    template: TemplateRef | None = None

    def request(self, e164: str, code: str, ttl_s: int, verification_id: str | None = None) -> SubmitRequest:
        """The submit request; the message's client_ref is the verification id, which also tells the
        messages API and console to mask the code (messaging.queries.visible_text)."""
        minutes = str(ttl_minutes(ttl_s))
        if self.template is not None:
            names = {str(v["name"]) for v in self.template.variables}
            params = {"code": code, **({"ttl": minutes} if "ttl" in names else {})}
            return SubmitRequest(
                text="",
                template_id=self.template.id,
                message_type="verification",
                recipients=[Recipient(to=e164, params=params, client_ref=verification_id)],
                field_prefix="to",
            )
        text = DEFAULT_TEXTS[self.locale].replace("{ttl}", minutes)
        return SubmitRequest(
            text=text,
            message_type="verification",
            field_prefix="to",
            recipients=[Recipient(to=e164, vars={"code": code}, client_ref=verification_id)],
        )


async def verify_template(
    session: AsyncSession, *, account_id: str, template_id: str, code_length: int, field: str = "template"
) -> TemplateRef:
    """The account's approved verification template with a `${code}` taking `code_length` digits, or
    `verify_template_invalid` saying what is wrong with it."""
    ref = await approved_template(session, account_id, template_id)

    def invalid(why: str, at: str = field) -> Unprocessable:
        return Unprocessable("verify_template_invalid", f"{template_id} {why}", field=at)

    if ref is None:
        raise invalid("is not an approved template of this account.")
    if ref.message_type != "verification":
        raise invalid(f"is a {ref.message_type} template; verification codes need a verification template.")
    variables = {str(v["name"]): v for v in ref.variables}
    if "code" not in variables:
        raise invalid("has no ${code} variable for the code.")
    extra = sorted(set(variables) - TEMPLATE_VARIABLES)
    if extra:
        raise invalid(f"has ${{{extra[0]}}}; a verification template may only use ${{code}} and ${{ttl}}.")
    low, high = int(variables["code"].get("min") or 4), int(variables["code"].get("max") or 10)
    if not low <= code_length <= high:
        raise invalid(
            f"takes codes of {low}–{high} digits; ask for a code_length in that range.", "code_length"
        )
    return ref
