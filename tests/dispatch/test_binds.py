"""SMPP binds spread over worker processes by leases (dispatch.binds): fair shares, no bind held twice,
a dead worker's binds taken over once its leases expire, everything freed on shutdown."""

from __future__ import annotations

from typing import Any

from hongyan.db.engine import Database
from hongyan.dispatch.binds import BindLeases
from support import wait_until


class FakeConnector:
    """What BindLeases needs of an SMPP connector: bind_count, active_binds, set_active."""

    def __init__(self, binds: int) -> None:
        self.bind_count = binds
        self.active_binds: set[int] = set()

    async def set_active(self, indices: set[int]) -> None:
        self.active_binds = set(indices)


class Sandbox:
    """A connector without binds (sandbox, HTTP): left alone."""


async def test_binds_are_shared_fairly_and_never_held_twice(db: Database) -> None:
    a, b = BindLeases(db, "worker-a", ttl_s=30), BindLeases(db, "worker-b", ttl_s=30)
    ca, cb = {"chn_x": FakeConnector(4), "chn_sb": Sandbox()}, {"chn_x": FakeConnector(4), "chn_sb": Sandbox()}
    await a.tick(ca)
    assert ca["chn_x"].active_binds == {0, 1, 2, 3}, "alone: every bind"
    await b.tick(cb)  # b announces itself; a still holds everything
    assert cb["chn_x"].active_binds == set()
    await a.tick(ca)  # a sees two workers: keeps its share of 2, frees the rest
    assert len(ca["chn_x"].active_binds) == 2
    await b.tick(cb)
    assert cb["chn_x"].active_binds == {0, 1, 2, 3} - ca["chn_x"].active_binds
    for _ in range(3):  # stable: renewing changes nothing
        await a.tick(ca)
        await b.tick(cb)
        assert ca["chn_x"].active_binds.isdisjoint(cb["chn_x"].active_binds)
        assert len(ca["chn_x"].active_binds) == len(cb["chn_x"].active_binds) == 2


async def test_odd_binds_and_more_workers_than_binds(db: Database) -> None:
    workers = [BindLeases(db, f"w{i}", ttl_s=30) for i in range(3)]
    conns = [{"chn_y": FakeConnector(2)} for _ in workers]
    for _ in range(3):
        for w, c in zip(workers, conns, strict=True):
            await w.tick(c)
    held = [c["chn_y"].active_binds for c in conns]
    assert sorted(len(h) for h in held) == [0, 1, 1], held
    assert set().union(*held) == {0, 1}


async def test_a_dead_workers_binds_are_taken_over_after_the_lease(db: Database) -> None:
    a, b = BindLeases(db, "worker-a", ttl_s=0.5), BindLeases(db, "worker-b", ttl_s=0.5)
    ca, cb = {"chn_z": FakeConnector(2)}, {"chn_z": FakeConnector(2)}
    await a.tick(ca)
    await b.tick(cb)
    await a.tick(ca)
    await b.tick(cb)
    assert len(ca["chn_z"].active_binds) == len(cb["chn_z"].active_binds) == 1
    # a stops renewing (kill -9): once its presence and bind leases expire, b runs both binds

    async def took_over() -> Any:
        await b.tick(cb)
        return cb["chn_z"].active_binds == {0, 1}

    await wait_until(took_over, timeout=10, interval=0.1, message="b takes a's bind")


async def test_release_all_frees_binds_at_once(db: Database) -> None:
    a, b = BindLeases(db, "worker-a", ttl_s=60), BindLeases(db, "worker-b", ttl_s=60)
    ca, cb = {"chn_w": FakeConnector(2)}, {"chn_w": FakeConnector(2)}
    await a.tick(ca)
    await b.tick(cb)
    assert cb["chn_w"].active_binds == set()
    await a.release_all()  # graceful shutdown: no need to wait 60 s
    await b.tick(cb)
    assert cb["chn_w"].active_binds == {0, 1}
    assert await b.live_workers() == 1
