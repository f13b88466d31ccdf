"""Operator management of channels and routes (API, CLI, console all call these).

Channel settings are validated here, field by field, so a typo in a carrier's configuration is an error
naming the field instead of a channel that silently never binds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.audit.service import Actor, changes, record
from hongyan.channels.models import Channel, Route
from hongyan.channels.routing import normalize_prefix
from hongyan.channels.smpp.connector import LONG_MODES
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import Conflict, InvalidRequest, NotFound

KINDS = ("smpp", "sandbox")
MESSAGE_TYPES = ("verification", "notification", "marketing")
SECRET_KEYS = frozenset({"password"})

# smpp channel settings: name → (type, check, help). Checks return an error text or None.
_SMPP_FIELDS: dict[str, tuple[type, Any]] = {
    "host": (str, lambda v: None if v.strip() else "host is required"),
    "port": (int, lambda v: None if 1 <= v <= 65535 else "port must be 1–65535"),
    "system_id": (str, lambda v: None if 0 < len(v) <= 15 else "system_id must be 1–15 characters"),
    "password": (str, lambda v: None if len(v) <= 8 else "password must be at most 8 characters (SMPP 3.4)"),
    "system_type": (str, lambda v: None if len(v) <= 12 else "system_type must be at most 12 characters"),
    "bind": (str, lambda v: None if v in ("transceiver", "transmitter", "receiver") else
             "bind must be transceiver, transmitter or receiver"),
    "binds": (int, lambda v: None if 1 <= v <= 32 else "binds must be 1–32"),
    "window": (int, lambda v: None if 1 <= v <= 1000 else "window must be 1–1000"),
    "tps": (float, lambda v: None if v >= 0 else "tps must be 0 (unlimited) or more"),
    "enquire_link_s": (float, lambda v: None if 1 <= v <= 3600 else "enquire_link_s must be 1–3600"),
    "response_timeout_s": (float, lambda v: None if 0.5 <= v <= 300 else "response_timeout_s must be 0.5–300"),
    "connect_timeout_s": (float, lambda v: None if 0.5 <= v <= 300 else "connect_timeout_s must be 0.5–300"),
    "reconnect_min_s": (float, lambda v: None if 0.05 <= v <= 600 else "reconnect_min_s must be 0.05–600"),
    "reconnect_max_s": (float, lambda v: None if 0.05 <= v <= 3600 else "reconnect_max_s must be 0.05–3600"),
    "throttle_pause_s": (float, lambda v: None if 0.01 <= v <= 60 else "throttle_pause_s must be 0.01–60"),
    "tls": (bool, lambda v: None),
    "tls_verify": (bool, lambda v: None),
    "tls_ca_file": (str, lambda v: None),
    "long_mode": (str, lambda v: None if v in LONG_MODES else f"long_mode must be one of {', '.join(LONG_MODES)}"),
    "gsm_packed": (bool, lambda v: None),
    "gsm_data_coding": (int, lambda v: None if v in (0, 1) else "gsm_data_coding must be 0 or 1"),
    "latin1": (bool, lambda v: None),
    "registered_delivery": (int, lambda v: None if 0 <= v <= 255 else "registered_delivery must be 0–255"),
    "source_addr": (str, lambda v: None if len(v) <= 20 else "source_addr must be at most 20 characters"),
    "source_ton": (int, lambda v: None if 0 <= v <= 6 else "source_ton must be 0–6"),
    "source_npi": (int, lambda v: None if 0 <= v <= 18 else "source_npi must be 0–18"),
    "dest_ton": (int, lambda v: None if 0 <= v <= 6 else "dest_ton must be 0–6"),
    "dest_npi": (int, lambda v: None if 0 <= v <= 18 else "dest_npi must be 0–18"),
    "dest_plus": (bool, lambda v: None),
    "service_type": (str, lambda v: None if len(v) <= 5 else "service_type must be at most 5 characters"),
    "receipt_id_format": (str, lambda v: None if v in ("same", "hex_to_dec", "dec_to_hex") else
                          "receipt_id_format must be same, hex_to_dec or dec_to_hex"),
    "submit_deadline_s": (float, lambda v: None if 1 <= v <= 600 else "submit_deadline_s must be 1–600"),
    "addr_ton": (int, lambda v: None if 0 <= v <= 6 else "addr_ton must be 0–6"),
    "addr_npi": (int, lambda v: None if 0 <= v <= 18 else "addr_npi must be 0–18"),
    "address_range": (str, lambda v: None if len(v) <= 40 else "address_range must be at most 40 characters"),
}
_SANDBOX_FIELDS: dict[str, tuple[type, Any]] = {
    "delay_ms": (int, lambda v: None if 0 <= v <= 600_000 else "delay_ms must be 0–600000"),
    "outcomes": (str, lambda v: None),
}
_REQUIRED = {"smpp": ("host", "port", "system_id"), "sandbox": ()}


def validate_config(kind: str, config: dict[str, Any], *, field: str = "config") -> dict[str, Any]:
    if kind not in KINDS:
        raise InvalidRequest("invalid_channel_kind", f"Channel kind must be one of {', '.join(KINDS)}.", field="kind")
    spec = _SMPP_FIELDS if kind == "smpp" else _SANDBOX_FIELDS
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in spec:
            raise InvalidRequest("unknown_channel_setting", f"'{key}' is not a setting of {kind} channels.",
                                 field=f"{field}.{key}")
        typ, check = spec[key]
        if value is None:
            continue
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise InvalidRequest("invalid_channel_setting", f"'{key}' must be a {typ.__name__}.", field=f"{field}.{key}")
        problem = check(value)
        if problem:
            raise InvalidRequest("invalid_channel_setting", problem[0].upper() + problem[1:] + ".", field=f"{field}.{key}")
        out[key] = value
    for key in _REQUIRED[kind]:
        if key not in out:
            raise InvalidRequest("channel_setting_required", f"'{key}' is required for {kind} channels.",
                                 field=f"{field}.{key}")
    if kind == "sandbox" and "outcomes" in out:
        from hongyan.channels.sandbox import parse_outcomes

        try:
            parse_outcomes(out["outcomes"])
        except ValueError as exc:
            raise InvalidRequest("invalid_channel_setting", str(exc) + ".", field=f"{field}.outcomes") from None
    return out


def redact(config: dict[str, Any]) -> dict[str, Any]:
    return {k: ("********" if k in SECRET_KEYS and v else v) for k, v in config.items()}


def channel_view(c: Channel) -> dict[str, Any]:
    """What the audit log keeps of a channel: one key per setting, so an edit shows only what changed (the
    audit log redacts `config.password`)."""
    return {"name": c.name, "kind": c.kind, "enabled": c.enabled, **{f"config.{k}": v for k, v in c.config.items()}}


def route_view(r: Route) -> dict[str, Any]:
    return {"name": r.name, "channel_id": r.channel_id, "account_id": r.account_id, "priority": r.priority,
            "weight": r.weight, "countries": list(r.countries), "prefixes": list(r.prefixes),
            "message_types": list(r.message_types), "enabled": r.enabled}


async def create_channel(session: AsyncSession, *, name: str, kind: str, config: dict[str, Any],
                         enabled: bool = True, actor: Actor | None = None) -> Channel:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("invalid_name", "Give the channel a name of 1–100 characters.", field="name")
    config = validate_config(kind, config)
    if await session.scalar(select(func.count()).select_from(Channel).where(Channel.name == name)):
        raise Conflict("channel_name_taken", f"A channel named '{name}' exists already.", field="name")
    now = utcnow()
    channel = Channel(id=ids.new_id("chn"), name=name, kind=kind, config=config, enabled=enabled, created_at=now,
                      updated_at=now)
    session.add(channel)
    await session.flush()
    if actor is not None:  # channels are the platform's: no account
        await record(session, actor=actor, action="channel.created", account_id=None, target_type="channel",
                     target_id=channel.id, after=channel_view(channel))
    return channel


async def get_channel(session: AsyncSession, ref: str) -> Channel:
    """By id (chn_…) or by name."""
    channel = await session.scalar(select(Channel).where((Channel.id == ref) | (Channel.name == ref)))
    if channel is None:
        raise NotFound("channel_not_found", f"No channel '{ref}'.", field="channel")
    return channel


async def list_channels(session: AsyncSession) -> list[Channel]:
    return list((await session.scalars(select(Channel).order_by(Channel.created_at, Channel.id))).all())


async def update_channel(session: AsyncSession, ref: str, *, config: dict[str, Any] | None = None,
                         enabled: bool | None = None, replace: bool = False, actor: Actor | None = None) -> Channel:
    """Change settings (merged into the current ones unless `replace`) or enable/disable."""
    channel = await get_channel(session, ref)
    before = channel_view(channel)
    if config is not None:
        merged = dict(config) if replace else {**channel.config, **config}
        channel.config = validate_config(channel.kind, {k: v for k, v in merged.items() if v is not None})
    if enabled is not None:
        channel.enabled = enabled
    channel.updated_at = utcnow()
    await session.flush()
    after = channel_view(channel)
    old, new = changes(before, {**dict.fromkeys(before), **after})  # a removed setting shows as → None
    if actor is not None and new:
        action = ("channel.enabled" if channel.enabled else "channel.disabled") if set(new) == {"enabled"} \
            else "channel.updated"
        await record(session, actor=actor, action=action, account_id=None, target_type="channel",
                     target_id=channel.id, before=old, after=new)
    return channel


async def delete_channel(session: AsyncSession, ref: str, *, actor: Actor | None = None) -> None:
    channel = await get_channel(session, ref)
    used = await session.scalar(select(func.count()).select_from(Route).where(Route.channel_id == channel.id))
    if used:
        raise Conflict("channel_in_use", f"Channel '{channel.name}' has {used} route(s); delete them first.",
                       field="channel")
    if actor is not None:
        await record(session, actor=actor, action="channel.deleted", account_id=None, target_type="channel",
                     target_id=channel.id, before=channel_view(channel))
    await session.delete(channel)


async def create_route(session: AsyncSession, *, channel: str, name: str = "", priority: int = 100, weight: int = 1,
                       countries: list[str] | None = None, prefixes: list[str] | None = None,
                       message_types: list[str] | None = None, account_id: str | None = None,
                       enabled: bool = True, actor: Actor | None = None) -> Route:
    target = await get_channel(session, channel)
    if not 0 <= priority <= 1_000_000:
        raise InvalidRequest("invalid_priority", "priority must be 0–1000000 (lower is tried first).", field="priority")
    if not 1 <= weight <= 10_000:
        raise InvalidRequest("invalid_weight", "weight must be 1–10000.", field="weight")
    norm_countries = []
    for i, c in enumerate(countries or []):
        c = c.strip().upper()
        if len(c) != 2 or not c.isalpha():
            raise InvalidRequest("invalid_country", f"'{c}' is not an ISO 3166 alpha-2 code.", field=f"countries[{i}]")
        norm_countries.append(c)
    norm_prefixes = []
    for i, p in enumerate(prefixes or []):
        try:
            norm_prefixes.append(normalize_prefix(p))
        except ValueError:
            raise InvalidRequest("invalid_prefix", f"'{p}' is not a number prefix (digits, optional +).",
                                 field=f"prefixes[{i}]") from None
    for i, t in enumerate(message_types or []):
        if t not in MESSAGE_TYPES:
            raise InvalidRequest("invalid_message_type", f"Message type must be one of {', '.join(MESSAGE_TYPES)}.",
                                 field=f"message_types[{i}]")
    now = utcnow()
    route = Route(id=ids.new_id("rte"), name=(name or target.name)[:100], channel_id=target.id, account_id=account_id,
                  priority=priority, weight=weight, countries=norm_countries, prefixes=norm_prefixes,
                  message_types=list(message_types or []), enabled=enabled, created_at=now, updated_at=now)
    session.add(route)
    await session.flush()
    if actor is not None:
        await record(session, actor=actor, action="route.created", account_id=None, target_type="route",
                     target_id=route.id, after=route_view(route))
    return route


async def list_routes(session: AsyncSession) -> list[Route]:
    return list((await session.scalars(select(Route).order_by(Route.priority, Route.id))).all())


async def delete_route(session: AsyncSession, route_id: str, *, actor: Actor | None = None) -> None:
    route = await session.get(Route, route_id)
    if route is None:
        raise NotFound("route_not_found", f"No route '{route_id}'.", field="route")
    if actor is not None:
        await record(session, actor=actor, action="route.deleted", account_id=None, target_type="route",
                     target_id=route.id, before=route_view(route))
    await session.delete(route)


def channel_json(c: Channel, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "kind": c.kind, "enabled": c.enabled, "config": redact(c.config),
            "created_at": isoformat(c.created_at), "updated_at": isoformat(c.updated_at), "status": status}


def route_json(r: Route) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "channel_id": r.channel_id, "account_id": r.account_id,
            "priority": r.priority, "weight": r.weight, "countries": r.countries, "prefixes": r.prefixes,
            "message_types": r.message_types, "enabled": r.enabled, "created_at": isoformat(r.created_at)}
