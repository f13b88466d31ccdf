"""Builds the connectors for enabled channels and the route rules. The embedded default has one sandbox
channel, created on first start, which carries all traffic as long as no route is configured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from hongyan.channels.base import Connector
from hongyan.channels.models import Channel, Route
from hongyan.channels.routing import RouteRule
from hongyan.channels.sandbox import SandboxConnector
from hongyan.channels.smpp.connector import SmppConnector
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database

SANDBOX_NAME = "sandbox"


async def ensure_sandbox_channel(db: Database) -> str:
    async with db.write() as session:
        existing = await session.scalar(select(Channel.id).where(Channel.name == SANDBOX_NAME))
        if existing:
            return existing
        now = utcnow()
        channel = Channel(
            id=ids.new_id("chn"), name=SANDBOX_NAME, kind="sandbox", config={}, enabled=True, created_at=now, updated_at=now
        )
        session.add(channel)
        return channel.id


def build_connector(channel: Channel, settings: Settings, *, gate: Any = None) -> Connector:
    """`gate`: the process's codes-first gate (dispatch.codes_first.BulkGate), given to carrier binds."""
    if channel.kind == "sandbox":
        return SandboxConnector(
            channel.id,
            delay_ms=int(channel.config.get("delay_ms", settings.sandbox_delay_ms)),
            outcomes=str(channel.config.get("outcomes", settings.sandbox_outcomes)),
        )
    if channel.kind == "smpp":
        return SmppConnector(channel.id, dict(channel.config), name=channel.name, gate=gate)
    raise ValueError(f"channel kind {channel.kind!r} is not available yet")


def fingerprint(channel: Channel) -> str:
    """Changes when a running connector must be rebuilt (kind or settings changed)."""
    return channel.kind + ":" + json.dumps(channel.config, sort_keys=True, default=str)


@dataclass(slots=True)
class ChannelSetup:
    channels: list[Channel]  # enabled ones
    rules: list[RouteRule]
    default_channel: str | None  # carries everything while the route table is empty
    signature: tuple[Any, ...]  # changes whenever a channel or route changes


async def load_setup(db: Database) -> ChannelSetup:
    sandbox_id = await ensure_sandbox_channel(db)
    async with db.read() as session:
        channels = list((await session.scalars(select(Channel).order_by(Channel.id))).all())
        routes = list((await session.scalars(select(Route).order_by(Route.id))).all())
    enabled = [c for c in channels if c.enabled]
    enabled_ids = {c.id for c in enabled}
    rules = [
        RouteRule(r.id, r.channel_id, r.priority, r.weight, frozenset(r.countries or ()), tuple(r.prefixes or ()),
                  frozenset(r.message_types or ()), r.account_id)
        for r in routes
        if r.enabled and r.channel_id in enabled_ids
    ]
    # routes that exist but point only at disabled channels still mean "routing is configured"
    configured = any(r.enabled for r in routes)
    default = sandbox_id if sandbox_id in enabled_ids and not configured else None
    signature = tuple((c.id, c.updated_at, c.enabled) for c in channels) + tuple(
        (r.id, r.updated_at, r.enabled) for r in routes
    )
    return ChannelSetup(enabled, rules, default, signature)
