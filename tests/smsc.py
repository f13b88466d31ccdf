"""The independent SMSC simulator (tests/peers/smsc-sim, Node + node-smpp) as a test peer.

`SmscSim(**env).start()` runs one instance on free ports; `kill()` (SIGKILL) and `start()` again on the
same port simulate a carrier crash and restart. Locally a missing Node skips the SMPP tests; under CI=true
it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support import free_port

SIM_DIR = Path(__file__).parent / "peers" / "smsc-sim"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_sim() -> None:
    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed"
    elif not (SIM_DIR / "node_modules" / "smpp").is_dir():
        problem = "the simulator's npm packages are not installed (scripts/test runs npm ci in tests/peers/smsc-sim)"
    if problem:
        if IN_CI:
            pytest.fail(f"SMSC simulator required under CI=true: {problem}")
        pytest.skip(problem)


class SmscSim:
    def __init__(self, **env: Any) -> None:
        require_sim()
        self.port = free_port()
        self.stats_port = free_port()
        self.env = {"QUIET": "1", "DLR_DELAY_MS": "0", **{k: str(v) for k, v in env.items()}}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def channel_config(self, **extra: Any) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "system_id": "test", "password": "test",
                "reconnect_min_s": 0.1, "reconnect_max_s": 1.0, "response_timeout_s": 5.0, **extra}

    def start(self) -> SmscSim:
        env = dict(os.environ, PORT=str(self.port), STATS_PORT=str(self.stats_port), **self.env)
        self.proc = subprocess.Popen(["node", str(SIM_DIR / "smsc-sim.js")], env=env, cwd=SIM_DIR,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                socket.create_connection((self.host, self.stats_port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    self.kill()
                    raise RuntimeError(f"smsc-sim did not start: {err}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the carrier vanishes mid-window, no unbind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def api(self, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            f"http://{self.host}:{self.stats_port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stats(self) -> dict[str, Any]:
        return self.api("/stats?messages=0")  # type: ignore[no-any-return]

    def messages(self, limit: int = 100, **filters: str) -> list[dict[str, Any]]:
        query = "&".join([f"limit={limit}", *(f"{k}={v}" for k, v in filters.items())])
        return self.api(f"/messages?{query}")["messages"]  # type: ignore[no-any-return]

    def __enter__(self) -> SmscSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
