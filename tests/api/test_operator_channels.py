"""/v1/operator: channels and routes need the operator scope; bad settings name the field."""

from __future__ import annotations

from typing import Any

import httpx

from hongyan.accounts import keys
from hongyan.db.engine import Database
from support import AccountFixture, wait_until


async def operator_client(app: Any, db: Database, account: AccountFixture) -> httpx.AsyncClient:
    async with db.write() as session:
        created = await keys.create_api_key(session, account_id=account.account_id, name="ops",
                                                scopes=("operator",), allow_operator=True)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                             headers={"Authorization": f"Bearer {created.token}"})


SMPP = {"host": "127.0.0.1", "port": 1, "system_id": "hongyan", "password": "secret", "binds": 2, "window": 50,
        "reconnect_min_s": 5}


async def test_customer_keys_cannot_manage_channels(client: httpx.AsyncClient, db: Database,
                                                    account: AccountFixture) -> None:
    r = await client.get("/v1/operator/channels")
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = await client.post("/v1/api-keys", json={"name": "sneaky", "scopes": ["operator"]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "scopes[0]"


async def test_channel_and_route_lifecycle(app: Any, db: Database, account: AccountFixture) -> None:
    async with await operator_client(app, db, account) as ops:
        r = await ops.post("/v1/operator/channels", json={"name": "carrier-a", "kind": "smpp", "config": SMPP})
        assert r.status_code == 201, r.text
        channel = r.json()
        assert channel["config"]["password"] == "********" and channel["enabled"] is True
        assert channel["status"]["up"] is False and len(channel["status"]["binds"]) == 2  # nothing listens on port 1

        r = await ops.post("/v1/operator/channels", json={"name": "carrier-a", "config": SMPP})
        assert r.status_code == 409 and r.json()["error"]["field"] == "name"

        r = await ops.post("/v1/operator/routes", json={"channel": "carrier-a", "priority": 5, "countries": ["cn"],
                                                        "prefixes": ["+86 138"], "message_types": ["verification"]})
        assert r.status_code == 201, r.text
        route = r.json()
        assert route["countries"] == ["CN"] and route["prefixes"] == ["86138"]
        assert [x["id"] for x in (await ops.get("/v1/operator/routes")).json()["data"]] == [route["id"]]
        runtime = app.state.runtime
        assert runtime.router.candidates("+8613800138000", "CN", "verification", "acc_x") == [channel["id"]]
        assert runtime.router.candidates("+8613800138000", "CN", "marketing", "acc_x") == []  # routing is configured

        r = await ops.delete(f"/v1/operator/channels/{channel['id']}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "channel_in_use"
        r = await ops.patch("/v1/operator/channels/carrier-a", json={"enabled": False, "config": {"tps": 100}})
        assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["config"]["tps"] == 100
        assert channel["id"] not in runtime.connectors
        assert (await ops.delete(f"/v1/operator/routes/{route['id']}")).status_code == 200
        assert (await ops.delete("/v1/operator/channels/carrier-a")).status_code == 200
        assert runtime.router.candidates("+8613800138000", "CN", "marketing", "acc_x") == [runtime.router.default_channel]


async def test_bad_settings_name_the_field(app: Any, db: Database, account: AccountFixture) -> None:
    async with await operator_client(app, db, account) as ops:
        cases = [
            ({**SMPP, "port": 70000}, "config.port", "invalid_channel_setting"),
            ({**SMPP, "port": "2775"}, "config.port", "invalid_channel_setting"),
            ({**SMPP, "password": "much-too-long"}, "config.password", "invalid_channel_setting"),
            ({**SMPP, "windw": 10}, "config.windw", "unknown_channel_setting"),
            ({k: v for k, v in SMPP.items() if k != "host"}, "config.host", "channel_setting_required"),
            ({**SMPP, "long_mode": "pigeon"}, "config.long_mode", "invalid_channel_setting"),
        ]
        for config, field, code in cases:
            r = await ops.post("/v1/operator/channels", json={"name": "x", "kind": "smpp", "config": config})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert (error["field"], error["code"]) == (field, code) and error["message"]
        r = await ops.post("/v1/operator/routes", json={"channel": "nope"})
        assert r.status_code == 404 and r.json()["error"]["field"] == "channel"
        await ops.post("/v1/operator/channels", json={"name": "ok", "config": SMPP})
        r = await ops.post("/v1/operator/routes", json={"channel": "ok", "prefixes": ["86-1"]})
        assert r.status_code == 400 and r.json()["error"]["field"] == "prefixes[0]"


async def test_system_view_shows_workers_binds_and_the_scheduler_from_leases(
    app: Any, client: httpx.AsyncClient, db: Database, account: AccountFixture
) -> None:
    from hongyan.dispatch import lease
    from hongyan.dispatch.binds import BindLeases

    class Smpp:  # what BindLeases needs of a connector
        bind_count = 3
        active_binds: set[int] = set()

        async def set_active(self, indices: set[int]) -> None:
            self.active_binds = set(indices)

    a, b = BindLeases(db, "host-a:101:aa", ttl_s=60), BindLeases(db, "host-b:202:bb", ttl_s=60)
    ca, cb = {"chn_x": Smpp()}, {"chn_x": Smpp()}
    for _ in range(2):
        await a.tick(ca)
        await b.tick(cb)
    runtime = app.state.runtime  # embedded workers: its campaign engine leads the scheduler

    async def leading() -> bool:
        return runtime.campaigns is not None and await lease.held_by_other(db, "campaign-scheduler", "nobody")

    await wait_until(leading, message="the embedded scheduler holds its lease")
    assert (await client.get("/v1/operator/system")).status_code == 403, "staff only"
    async with await operator_client(app, db, account) as ops:
        r = await ops.get("/v1/operator/system")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [w["holder"] for w in body["workers"]] == ["host-a:101:aa", "host-b:202:bb"]
    assert body["campaign_scheduler"] == runtime.campaigns.holder
    holders = {x["index"]: x["holder"] for x in body["binds"]["chn_x"]}
    assert sorted(holders) == [0, 1, 2]
    assert sorted(holders.values()).count("host-a:101:aa") == len(ca["chn_x"].active_binds)
    assert body["queue"]["backend"] == "memory" and set(body["queue"]["depth"]) == {
        "verification", "notification", "marketing"}
    assert body["embedded_workers"] is True
