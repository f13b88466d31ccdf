"""API shapes for /v1/verify (separate from the ORM model)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

Status = Literal["pending", "approved", "expired", "canceled", "failed"]


class VerificationCreate(BaseModel):
    """Send a code to a number."""

    model_config = ConfigDict(extra="forbid")
    to: Annotated[StrictStr, Field(max_length=40)] = Field(
        description="E.164 (`+8613800138000`) or national with the account's default region."
    )
    template: Annotated[StrictStr, Field(max_length=40)] | None = Field(
        None,
        description="An approved verification template (`tpl_…`) with `${code}` (and optionally `${ttl}`, "
        "minutes); default: the account's choice, else the built-in text of `locale`.",
    )
    code_length: Annotated[int, Field(ge=4, le=10)] | None = Field(None, description="Digits (default 6).")
    ttl: Annotated[int, Field(ge=30, le=3600)] | None = Field(
        None, description="Seconds the code is valid (default 300)."
    )
    channel: Annotated[StrictStr, Field(max_length=16)] = Field("sms", description='Only "sms" for now.')
    locale: Literal["zh-CN", "en"] | None = Field(
        None,
        description="Language of the built-in text; default by the account's region (CN, HK, MO, TW: zh-CN).",
    )
    device_ip: Annotated[StrictStr, Field(max_length=45)] | None = Field(
        None,
        description="The end user's IP address as your server saw it: the per-IP limit counts it (without it, "
        "the IP of the caller).",
    )


class VerificationCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Annotated[StrictStr, Field(max_length=16)] = Field(description="The code the user typed (digits).")


class VerificationPublic(BaseModel):
    """A verification; never its code (except `sandbox_code` for test keys)."""

    id: str
    status: Status
    reason: str | None = Field(
        description="Why it ended: code_correct, max_attempts_reached, code_expired, canceled."
    )
    to: str
    country: str | None
    channel: str
    locale: str
    template_id: str | None
    code_length: int
    ttl: int
    attempts: int = Field(description="Wrong codes so far.")
    max_attempts: int
    attempts_left: int
    sends: int = Field(description="Codes sent: the first and each resend.")
    message_id: str | None = Field(description="The message that carried the latest code.")
    sandbox: bool
    created_at: str
    last_sent_at: str
    expires_at: str
    approved_at: str | None
    updated_at: str
    sandbox_code: str | None = Field(
        None, description="TEST API KEYS ONLY: the code, for integration tests. Never present for live keys."
    )
    valid: bool | None = Field(None, description="Check only: whether the code given was right.")


class VerificationsPublic(BaseModel):
    data: list[VerificationPublic]
    has_more: bool
    next_cursor: str | None
