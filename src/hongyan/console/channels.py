"""Channels & routes page (platform staff only): carrier channels with their live state, SMPP channel
creation, enable/disable/delete, and the routes that choose a channel.

Mirrors /v1/operator/channels and /v1/operator/routes (hongyan.channels.routes): the same service calls,
the same error messages (shown next to the field at fault), and a reload of the running dispatcher after
every change so it applies at once.

Who may use it: users whose `platform_role` is "platform_admin". The signed-in user (`SignedIn`) does not
carry the role, so `with_platform_role` adds it; `install` runs it on every signed-in console page, so the
base layout can show the nav link to staff only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.responses import Response

from hongyan.accounts.models import User
from hongyan.audit.service import actor_for_console
from hongyan.channels import service
from hongyan.channels.smpp.connector import LONG_MODES
from hongyan.console.context import (
    FETCH_HEADER,
    CheckedForm,
    Console,
    ConsoleUser,
    FieldErrors,
    SignedIn,
    form_text,
)
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError
from hongyan.dispatch.fleet import snapshot
from hongyan.dispatch.queue import DISPATCH

router = APIRouter(prefix="/console", include_in_schema=False)

PLATFORM_ADMIN = "platform_admin"
PAGE = "/console/channels"
BIND_TYPES = ("transceiver", "transmitter", "receiver")
# SMPP settings with an input of their own, and how their text is read (anything else goes to "advanced")
FORM_SETTINGS: dict[str, type] = {
    "host": str,
    "port": int,
    "system_id": str,
    "password": str,
    "bind": str,
    "binds": int,
    "window": int,
    "tps": float,
    "long_mode": str,
}
CHANNEL_FIELDS = ("name", *FORM_SETTINGS, "advanced")
ROUTE_FIELDS = ("channel", "priority", "weight", "countries", "prefixes", "message_types")


# -- who may use the page --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RoleAwareUser(ConsoleUser):
    """The signed-in user plus their platform role (None for customers)."""

    platform_role: str | None = None

    @property
    def is_platform_admin(self) -> bool:
        return self.platform_role == PLATFORM_ADMIN


async def with_platform_role(console: SignedIn) -> Console:
    """The signed-in console, its user carrying `platform_role` (one small read per page)."""
    user = console.user
    assert user is not None
    if not isinstance(user, RoleAwareUser):
        async with console.db.read() as session:
            role = await session.scalar(select(User.platform_role).where(User.id == user.user_id))
        console.user = RoleAwareUser(**asdict(user), platform_role=role)
    return console


class StaffOnly(Exception):
    """A signed-in user without the platform_admin role asked for a staff page."""

    def __init__(self, console: Console) -> None:
        super().__init__("platform staff only")
        self.console = console


async def platform_admin(console: Annotated[Console, Depends(with_platform_role)]) -> Console:
    if not (isinstance(console.user, RoleAwareUser) and console.user.is_platform_admin):
        raise StaffOnly(console)
    return console


PlatformAdmin = Annotated[Console, Depends(platform_admin)]


async def staff_only(request: Request, exc: Exception) -> Response:
    """403: a console page saying so (JSON for console.js background requests)."""
    assert isinstance(exc, StaffOnly)
    console = exc.console
    if request.headers.get(FETCH_HEADER) == "1":
        message = console.t("channels.forbidden")
        return console.json({"error": {"code": "forbidden", "message": message, "field": None}}, status=403)
    return console.render("channels.html", status=403, forbidden=True)


# -- reading the forms -----------------------------------------------------------------------------
class FormProblem(Exception):
    """A form value the console itself refuses (before the service sees it)."""

    def __init__(self, field: str, title: str) -> None:
        super().__init__(title)
        self.field = field
        self.title = title


def _number(text: str, typ: type) -> Any:
    """'2775' → 2775; text that is no number is passed on as is, so the service names the setting."""
    try:
        value = typ(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text  # "inf" and "nan" are no settings


def _setting_value(text: str) -> Any:
    """An advanced `key=value`: JSON numbers and booleans become numbers and booleans, anything else
    (including a JSON "quoted string") is text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):  # json reads NaN and Infinity
        return text
    if isinstance(value, bool | int | float | str):
        return value
    return text


def channel_config(console: Console, values: dict[str, str]) -> dict[str, Any]:
    """The SMPP settings of the add form: empty inputs are left out (the service's defaults apply)."""
    config: dict[str, Any] = {}
    for key, typ in FORM_SETTINGS.items():
        text = values[key] if key == "password" else values[key].strip()
        if text:
            config[key] = _number(text, typ) if typ is not str else text
    for number, line in enumerate(values["advanced"].splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, text = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FormProblem("advanced", console.t("channels.advanced_syntax", line=number))
        if key in FORM_SETTINGS:
            raise FormProblem("advanced", console.t("channels.advanced_has_field", key=key))
        config[key] = _setting_value(text.strip())
    return config


def _channel_error_field(exc: HongyanError) -> str:
    """The input an error belongs next to: `config.port` → port; other settings → advanced."""
    field = exc.field or ""
    if field == "name":
        return "name"
    if field.startswith("config."):
        key = field.removeprefix("config.")
        return key if key in FORM_SETTINGS else "advanced"
    return "channel_form"


def _route_error_field(exc: HongyanError) -> str:
    """`countries[2]` → countries, and so on; anything else is shown above the form's button."""
    base = (exc.field or "").split("[", 1)[0]
    return base if base in ROUTE_FIELDS else "route_form"


def _split_list(text: str) -> list[str]:
    """'CN, HK，MO' → ['CN', 'HK', 'MO']: comma-separated (ASCII or full-width; spaces inside an item, as
    in '+86 138', are the service's to normalize)."""
    return [item.strip() for item in re.split(r"[,，;；\n]", text) if item.strip()]


# -- page ------------------------------------------------------------------------------------------
def _runtime(request: Request) -> Any:
    return getattr(request.app.state, "runtime", None)


async def _reload(request: Request) -> None:
    runtime = _runtime(request)
    if runtime is not None:
        await runtime.reload_channels()


def _status(request: Request, channel_id: str) -> dict[str, Any] | None:
    runtime = _runtime(request)
    if runtime is None or channel_id not in runtime.connectors:
        return None
    status: dict[str, Any] = runtime.connectors[channel_id].status()
    return status


def _state(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the table shows of a connector's status (None: not running here, shown as —)."""
    if status is None:
        return None
    binds = status.get("binds") or []
    counters = status.get("counters") or {}
    errors = []
    for bind in binds:
        problem = bind.get("bind_error") or (None if bind.get("bound") else bind.get("last_error"))
        if problem and problem not in errors:
            errors.append(problem)
    latency = counters.get("receipt_latency_avg_s")
    return {
        "up": bool(status.get("up")),
        "binds_up": status.get("binds_up", 0),
        "binds_total": len(binds),
        "errors": errors,
        "counters": {
            name: counters.get(name) for name in ("submitted", "acked", "rejected", "throttled", "receipts")
        },
        "latency": f"{latency:.2f} s" if isinstance(latency, int | float) else None,
    }


def _empty_channel_form() -> dict[str, str]:
    values = dict.fromkeys(CHANNEL_FIELDS, "")
    values.update(bind="transceiver", long_mode="udh8")
    return values


def _empty_route_form() -> dict[str, Any]:
    return {"channel": "", "priority": "100", "weight": "1", "countries": "", "prefixes": "", "message_types": []}


async def _render(console: Console, *, status: int = 200, **values: Any) -> Any:
    async with console.db.read() as session:
        channels = await service.list_channels(session)
        routes = await service.list_routes(session)
    fleet = await snapshot(console.db)  # production mode: the workers' leases say who runs which bind
    names = {c.id: c.name for c in channels}
    rows = [
        {
            "id": c.id,
            "name": c.name,
            "kind": c.kind,
            "enabled": c.enabled,
            "config": service.redact(c.config),
            "state": _state(_status(console.request, c.id)),
            "leased": len(fleet.binds[c.id]) if c.id in fleet.binds else None,
            "binds": int(c.config.get("binds", 1) or 1) if c.kind == "smpp" else None,
        }
        for c in channels
    ]
    worker_binds: dict[str, list[str]] = {}
    for channel_id, held in fleet.binds.items():
        for index, holder in sorted(held.items()):
            worker_binds.setdefault(holder, []).append(f"{names.get(channel_id, channel_id)}#{index + 1}")
    runtime = _runtime(console.request)
    values.setdefault("queue_depth", runtime.queue.depth(DISPATCH) if runtime is not None else None)
    gate = getattr(runtime, "gate", None)  # embedded workers: this process's codes-first cap on bulk sends
    values.setdefault("codes_first", gate.status() if gate is not None else None)
    route_rows = [{"route": r, "channel_name": names.get(r.channel_id, r.channel_id)} for r in routes]
    values.setdefault("channel_form", _empty_channel_form())
    values.setdefault("route_form", _empty_route_form())
    return console.render(
        "channels.html",
        status=status,
        active="channels",
        forbidden=False,
        channels=rows,
        routes=route_rows,
        fleet=fleet,
        worker_binds=worker_binds,
        bind_types=BIND_TYPES,
        long_modes=LONG_MODES,
        message_types=service.MESSAGE_TYPES,
        **values,
    )


@router.get("/channels")
async def channels_page(console: PlatformAdmin) -> Any:
    return await _render(console)


@router.post("/channels")
async def add_channel(console: PlatformAdmin, form: CheckedForm) -> Any:
    values = {name: form_text(form, name) for name in CHANNEL_FIELDS}
    errors = FieldErrors()
    try:
        config = channel_config(console, values)
        async with console.db.write() as session:
            channel = await service.create_channel(session, name=values["name"], kind="smpp", config=config,
                                                       actor=actor_for_console(console))
    except FormProblem as problem:
        errors[problem.field] = (problem.title, None)
    except HongyanError as exc:
        console.field_error(errors, _channel_error_field(exc), exc)
    if errors:
        values["password"] = ""  # never sent back to the browser; typed again like on the login page
        return await _render(console, status=422, errors=errors, channel_form=values)
    await _reload(console.request)
    return console.redirect(
        PAGE, flash=Flash(kind="success", key="flash.channel_added", params={"name": channel.name})
    )


async def _set_enabled(console: Console, channel_id: str, enabled: bool) -> Any:
    try:
        async with console.db.write() as session:
            channel = await service.update_channel(session, channel_id, enabled=enabled,
                                                   actor=actor_for_console(console))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    await _reload(console.request)
    key = "flash.channel_enabled" if enabled else "flash.channel_disabled"
    return console.redirect(PAGE, flash=Flash(kind="success", key=key, params={"name": channel.name}))


@router.post("/channels/{channel_id}/enable")
async def enable_channel(console: PlatformAdmin, form: CheckedForm, channel_id: str) -> Any:
    return await _set_enabled(console, channel_id, True)


@router.post("/channels/{channel_id}/disable")
async def disable_channel(console: PlatformAdmin, form: CheckedForm, channel_id: str) -> Any:
    return await _set_enabled(console, channel_id, False)


@router.post("/channels/{channel_id}/delete")
async def delete_channel(console: PlatformAdmin, form: CheckedForm, channel_id: str) -> Any:
    try:
        async with console.db.write() as session:
            name = (await service.get_channel(session, channel_id)).name
            await service.delete_channel(session, channel_id, actor=actor_for_console(console))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    await _reload(console.request)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.channel_deleted", params={"name": name}))


def _route_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {name: form_text(form, name) for name in ROUTE_FIELDS[:-1]}
    values["message_types"] = [t for t in form.getlist("message_types") if isinstance(t, str)]
    return values


def _whole_number(console: Console, values: dict[str, Any], name: str) -> int:
    text = values[name].strip()
    try:
        return int(text)
    except ValueError:
        raise FormProblem(name, console.t("channels.whole_number_required")) from None


@router.post("/channels/routes")
async def add_route(console: PlatformAdmin, form: CheckedForm) -> Any:
    values = _route_values(form)
    errors = FieldErrors()
    try:
        if not values["channel"]:
            raise FormProblem("channel", console.t("channels.route_channel_required"))
        priority = _whole_number(console, values, "priority")
        weight = _whole_number(console, values, "weight")
        async with console.db.write() as session:
            await service.create_route(
                session,
                channel=values["channel"],
                priority=priority,
                weight=weight,
                countries=_split_list(values["countries"]),
                prefixes=_split_list(values["prefixes"]),
                message_types=values["message_types"],
                actor=actor_for_console(console),
            )
    except FormProblem as problem:
        errors[problem.field] = (problem.title, None)
    except HongyanError as exc:
        console.field_error(errors, _route_error_field(exc), exc)
    if errors:
        routed = {f"route.{name}": problem for name, problem in errors.items()}
        return await _render(console, status=422, errors=FieldErrors(routed), route_form=values)
    await _reload(console.request)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.route_added"))


@router.post("/channels/routes/{route_id}/delete")
async def delete_route(console: PlatformAdmin, form: CheckedForm, route_id: str) -> Any:
    try:
        async with console.db.write() as session:
            await service.delete_route(session, route_id, actor=actor_for_console(console))
    except HongyanError as exc:
        return console.redirect_error(PAGE, exc)
    await _reload(console.request)
    return console.redirect(PAGE, flash=Flash(kind="success", key="flash.route_deleted"))
