"""Builds the connectors for enabled channels. The embedded default has one sandbox channel, created on
first start. Routing (country/prefix, type, price, quality, failover) arrives with the SMPP issue."""

from __future__ import annotations

from sqlalchemy import select

from hongyan.channels.base import Connector
from hongyan.channels.models import Channel
from hongyan.channels.sandbox import SandboxConnector
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


def build_connector(channel: Channel, settings: Settings) -> Connector:
    if channel.kind == "sandbox":
        return SandboxConnector(
            channel.id,
            delay_ms=int(channel.config.get("delay_ms", settings.sandbox_delay_ms)),
            outcomes=str(channel.config.get("outcomes", settings.sandbox_outcomes)),
        )
    raise ValueError(f"channel kind {channel.kind!r} is not available yet")


async def load_connectors(db: Database, settings: Settings) -> tuple[dict[str, Connector], str | None]:
    sandbox_id = await ensure_sandbox_channel(db)
    async with db.read() as session:
        channels = list((await session.scalars(select(Channel).where(Channel.enabled.is_(True)))).all())
    connectors = {c.id: build_connector(c, settings) for c in channels if c.kind == "sandbox"}
    default = sandbox_id if sandbox_id in connectors else next(iter(connectors), None)
    return connectors, default
