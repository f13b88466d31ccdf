"""The channels & routes console page on SQLite and PostgreSQL: platform staff only, SMPP channel and route
forms (errors next to the field at fault, as the API words them), enable/disable/delete, live state."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hongyan.accounts import service as accounts
from hongyan.channels import service
from hongyan.db.engine import Database
from support import AccountFixture

ADMIN = "ops@example.com"
MEMBER = "member@example.com"
PASSWORD = "correct horse battery"
# nothing listens on port 1; a slow reconnect keeps the test quiet
SMPP_FORM = {
    "name": "carrier-a",
    "host": "127.0.0.1",
    "port": "1",
    "system_id": "hongyan",
    "password": "secret",
    "bind": "transmitter",
    "binds": "2",
    "window": "50",
    "tps": "200",
    "long_mode": "udh16",
    "advanced": "reconnect_min_s=5\nreconnect_max_s=10\ntls=false\nsource_addr=\"10690\"",
}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF field"
    return match.group(1)


def field_error(page: str, name: str) -> str:
    """The text of the error shown next to one input ('' if none)."""
    match = re.search(rf'<p class="field-error" data-error-for="{re.escape(name)}"[^>]*>(.*?)</p>', page, re.S)
    assert match, f"no error slot for {name}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def input_value(page: str, input_id: str) -> str:
    match = re.search(rf'<input id="{re.escape(input_id)}"[^>]*\bvalue="([^"]*)"', page)
    assert match, f"no input #{input_id}"
    return html.unescape(match.group(1))


async def make_user(db: Database, account: AccountFixture, email: str, platform_role: str | None) -> None:
    async with db.write() as session:
        await accounts.create_user(
            session, email=email, password=PASSWORD, account_id=account.account_id, platform_role=platform_role
        )


async def signed_in_client(app: Any, email: str, lang: str = "zh-CN") -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers={"Accept-Language": lang}
    )
    login = await client.get("/console/login")
    response = await client.post(
        "/console/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(login.text)}
    )
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
async def admin(app: Any, db: Database, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    await make_user(db, account, ADMIN, "platform_admin")
    client = await signed_in_client(app, ADMIN)
    yield client
    await client.aclose()


@pytest.fixture
async def member(app: Any, db: Database, account: AccountFixture) -> AsyncIterator[httpx.AsyncClient]:
    await make_user(db, account, MEMBER, None)
    client = await signed_in_client(app, MEMBER)
    yield client
    await client.aclose()


async def post_form(client: httpx.AsyncClient, url: str, data: dict[str, Any]) -> httpx.Response:
    page = await client.get("/console/channels")
    return await client.post(url, data={**data, "csrf_token": csrf_of(page.text)})


async def channels_in_db(db: Database) -> dict[str, Any]:
    async with db.read() as session:
        return {c.name: c for c in await service.list_channels(session)}


async def test_the_page_renders_for_platform_staff_with_the_nav_link(admin: httpx.AsyncClient) -> None:
    page = await admin.get("/console/channels")
    assert page.status_code == 200
    assert "<h1>通道与路由</h1>" in page.text
    assert 'href="/console/channels" aria-current="page"' in page.text
    assert "添加 SMPP 通道" in page.text and "还没有路由。" in page.text
    sandbox = re.search(r'<tr data-channel="sandbox".*?</tr>', page.text, re.S)  # the embedded default
    assert sandbox and "沙箱" in sandbox.group(0) and "在线" in sandbox.group(0)
    dashboard = await admin.get("/console")
    assert 'href="/console/channels"' in dashboard.text  # the link is on every page for staff

    # codes first: embedded workers send bulk traffic, so the page says whether it is held back for codes
    assert "验证码优先：最近一秒没有验证码，通知和营销短信未限速（目标 30 毫秒）。" in page.text

    admin.cookies.set("hongyan_lang", "en", path="/console")
    english = await admin.get("/console/channels")
    assert "<h1>Channels &amp; routes</h1>" in english.text and "Add an SMPP channel" in english.text


async def test_the_page_shows_the_codes_first_cap_while_bulk_sends_are_held(
    app: Any, admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = app.state.runtime.gate
    status = {**gate.status(), "cap_tps": 120.4, "codes_latency_ms": 47.6}  # as a step leaves it while codes are slow
    monkeypatch.setattr(gate, "status", lambda: status)
    page = await admin.get("/console/channels")
    line = re.search(r"<p [^>]*data-codes-first>(.*?)</p>", page.text, re.S)
    assert line and line.group(1) == "验证码优先：验证码当前耗时 48 毫秒（目标 30 毫秒），通知和营销短信限速为每秒 120 条。"


async def test_add_an_smpp_channel(app: Any, admin: httpx.AsyncClient, db: Database) -> None:
    response = await post_form(admin, "/console/channels", SMPP_FORM)
    assert response.status_code == 303 and response.headers["location"] == "/console/channels"

    channel = (await channels_in_db(db))["carrier-a"]
    assert channel.kind == "smpp" and channel.enabled
    assert channel.config == {
        "host": "127.0.0.1", "port": 1, "system_id": "hongyan", "password": "secret", "bind": "transmitter",
        "binds": 2, "window": 50, "tps": 200.0, "long_mode": "udh16",
        "reconnect_min_s": 5.0, "reconnect_max_s": 10.0, "tls": False, "source_addr": "10690",
    }
    assert channel.id in app.state.runtime.connectors  # reloaded at once

    page = await admin.get("/console/channels")
    assert "通道“carrier-a”已添加。" in page.text
    row = re.search(r'<tr data-channel="carrier-a".*?</tr>', page.text, re.S)
    assert row
    assert "离线" in row.group(0) and "0/2 个连接在线" in row.group(0)  # nothing listens on port 1
    assert "secret" not in page.text  # the password is never shown


async def test_an_invalid_port_is_shown_next_to_the_port_and_the_other_values_stay(
    admin: httpx.AsyncClient, db: Database
) -> None:
    response = await post_form(admin, "/console/channels", {**SMPP_FORM, "port": "70000"})
    assert response.status_code == 422
    page = response.text
    assert field_error(page, "port") == "设置无效 Port must be 1–65535."  # the API's message as detail
    assert 'id="channel-port" name="port" type="text" value="70000"' in page
    assert re.search(r'id="channel-port"[^>]*aria-invalid="true"', page)
    assert field_error(page, "name") == "" and field_error(page, "host") == ""
    assert input_value(page, "channel-name") == "carrier-a"
    assert input_value(page, "channel-host") == "127.0.0.1"
    assert input_value(page, "channel-window") == "50"
    assert input_value(page, "channel-password") == ""  # typed again, never sent back
    assert '<option value="transmitter" selected>' in page and '<option value="udh16" selected>' in page
    assert 'reconnect_min_s=5\nreconnect_max_s=10' in page
    assert "carrier-a" not in await channels_in_db(db)

    admin.cookies.set("hongyan_lang", "en", path="/console")
    english = await post_form(admin, "/console/channels", {**SMPP_FORM, "port": "smtp"})
    assert field_error(english.text, "port") == "'port' must be a int."  # word for word the API's message


async def test_other_errors_land_next_to_their_input(admin: httpx.AsyncClient) -> None:
    cases = [
        ({"name": " "}, "name", "名称无效"),
        ({"host": ""}, "host", "此项必填"),
        ({"advanced": "windw=10"}, "advanced", "没有这个设置项"),
        ({"advanced": "port=2775"}, "advanced", "“port”请在上面对应的输入框中填写。"),
        ({"advanced": "just text"}, "advanced", "第 1 行不是 key=value 格式。"),
    ]
    for change, field, title in cases:
        response = await post_form(admin, "/console/channels", {**SMPP_FORM, **change})
        assert response.status_code == 422, change
        assert field_error(response.text, field).startswith(title), (change, field_error(response.text, field))
    assert (await post_form(admin, "/console/channels", SMPP_FORM)).status_code == 303
    again = await post_form(admin, "/console/channels", SMPP_FORM)
    assert field_error(again.text, "name").startswith("名称已被使用")


async def test_routes_are_added_and_deleted(app: Any, admin: httpx.AsyncClient, db: Database) -> None:
    assert (await post_form(admin, "/console/channels", SMPP_FORM)).status_code == 303
    channel = (await channels_in_db(db))["carrier-a"]

    bad = await post_form(admin, "/console/channels/routes",
                          {"channel": channel.id, "priority": "5", "weight": "1", "countries": "CN, CHN"})
    assert bad.status_code == 422
    assert field_error(bad.text, "route.countries") == "国家代码无效 'CHN' is not an ISO 3166 alpha-2 code."
    assert input_value(bad.text, "route-priority") == "5"
    bad = await post_form(admin, "/console/channels/routes", {"channel": channel.id, "priority": "first"})
    assert field_error(bad.text, "route.priority") == "请输入整数。"

    response = await post_form(admin, "/console/channels/routes", {
        "channel": channel.id, "priority": "10", "weight": "3", "countries": "cn，hk", "prefixes": "+86 138, 86139",
        "message_types": ["verification", "notification"],
    })
    assert response.status_code == 303, response.text
    async with db.read() as session:
        (route,) = await service.list_routes(session)
    assert (route.channel_id, route.priority, route.weight) == (channel.id, 10, 3)
    assert route.countries == ["CN", "HK"] and route.prefixes == ["86138", "86139"]
    assert route.message_types == ["verification", "notification"]
    runtime = app.state.runtime
    assert runtime.router.candidates("+8613800138000", "CN", "verification", "acc_x") == [channel.id]

    page = await admin.get("/console/channels")
    row = re.search(rf'<tr data-route="{route.id}".*?</tr>', page.text, re.S)
    assert row and "carrier-a" in row.group(0) and "+86138" in row.group(0) and "所有账户" in row.group(0)

    # a channel with routes cannot be deleted: the API's reason comes back as a flash
    refused = await post_form(admin, f"/console/channels/{channel.id}/delete", {})
    assert refused.status_code == 303
    assert "通道仍被路由使用，请先删除这些路由。" in (await admin.get("/console/channels")).text
    assert "carrier-a" in await channels_in_db(db)

    deleted = await post_form(admin, f"/console/channels/routes/{route.id}/delete", {})
    assert deleted.status_code == 303
    async with db.read() as session:
        assert await service.list_routes(session) == []
    assert "路由已删除。" in (await admin.get("/console/channels")).text
    assert runtime.router.candidates("+8613800138000", "CN", "marketing", "acc_x") == [runtime.router.default_channel]

    assert (await post_form(admin, f"/console/channels/{channel.id}/delete", {})).status_code == 303
    assert "carrier-a" not in await channels_in_db(db)
    assert channel.id not in runtime.connectors


async def test_disable_and_enable_a_channel(app: Any, admin: httpx.AsyncClient, db: Database) -> None:
    assert (await post_form(admin, "/console/channels", SMPP_FORM)).status_code == 303
    channel = (await channels_in_db(db))["carrier-a"]

    response = await post_form(admin, f"/console/channels/{channel.id}/disable", {})
    assert response.status_code == 303
    assert not (await channels_in_db(db))["carrier-a"].enabled
    assert channel.id not in app.state.runtime.connectors
    page = (await admin.get("/console/channels")).text
    assert "通道“carrier-a”已停用" in page
    row = re.search(r'<tr data-channel="carrier-a" class="is-muted">.*?</tr>', page, re.S)
    assert row and "已停用" in row.group(0)
    assert re.search(r'data-cell="state">\s*<span class="muted">—</span>', row.group(0))  # no connector
    assert f'action="/console/channels/{channel.id}/enable"' in row.group(0)

    assert (await post_form(admin, f"/console/channels/{channel.id}/enable", {})).status_code == 303
    assert (await channels_in_db(db))["carrier-a"].enabled
    assert channel.id in app.state.runtime.connectors


async def test_customers_get_403_and_no_nav_link(member: httpx.AsyncClient, db: Database) -> None:
    page = await member.get("/console/channels")
    assert page.status_code == 403
    assert "只有平台管理员可以管理通道与路由。" in page.text
    assert 'href="/console/channels"' not in page.text
    assert 'href="/console/channels"' not in (await member.get("/console")).text

    token = csrf_of((await member.get("/console")).text)
    for url in ("/console/channels", "/console/channels/routes", "/console/channels/chn_x/disable"):
        response = await member.post(url, data={**SMPP_FORM, "csrf_token": token})
        assert response.status_code == 403, url
    assert "carrier-a" not in await channels_in_db(db)
    background = await member.get("/console/channels", headers={"X-Console-Fetch": "1"})
    assert background.status_code == 403 and background.json()["error"]["code"] == "forbidden"


async def test_signed_out_visitors_go_to_the_login_form(app: Any) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        response = await c.get("/console/channels")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fchannels"


async def test_worker_processes_and_their_binds_in_production_mode(admin: httpx.AsyncClient, db: Database) -> None:
    """The API process of production mode runs no carriers: the page shows what the workers' leases say."""
    from hongyan.dispatch.binds import BindLeases

    page = await admin.get("/console/channels")
    assert 'id="workers"' not in page.text, "no worker leases: no section"
    response = await post_form(admin, "/console/channels", SMPP_FORM)
    assert response.status_code == 303
    channel = (await channels_in_db(db))["carrier-a"]

    class Smpp:
        bind_count = 2
        active_binds: set[int] = set()

        async def set_active(self, indices: set[int]) -> None:
            self.active_binds = set(indices)

    workers = [BindLeases(db, f"worker-host-{i}:{100 + i}:ab", ttl_s=60) for i in range(2)]
    for _ in range(2):
        for w in workers:
            await w.tick({channel.id: Smpp()})
    page = await admin.get("/console/channels")
    section = re.search(r'<section class="card card-flush" id="workers">.*?</section>', page.text, re.S)
    assert section, "the worker section is shown"
    rows = re.findall(r'<tr data-worker="([^"]+)">(.*?)</tr>', section.group(0), re.S)
    assert [holder for holder, _ in rows] == ["worker-host-0:100:ab", "worker-host-1:101:ab"]
    assert sum(cells.count("carrier-a#") for _, cells in rows) == 2, "each bind shown once, at its holder"
    assert "工作进程" in section.group(0)
