"""`hongyan serve` as a real process on a free port with a fresh data directory (importable as
`live_server`): for browser tests, schemathesis and other clients that need a real HTTP server.

The first-start banner gives the administrator's login, password and API key.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support import free_port

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Server:
    url: str
    email: str
    password: str
    api_key: str
    data_dir: Path


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Read the server's stdout to the end (so it never blocks on a full pipe), line by line."""
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode("utf-8", "replace"))
    lines.put(None)


def _read_banner(process: subprocess.Popen[bytes], deadline: float) -> dict[str, str]:
    """login / password / API key from the first-start banner."""
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    found: dict[str, str] = {}
    seen: list[str] = []
    while len(found) < 3:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("server banner incomplete before the deadline:\n" + "".join(seen))
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"server exited ({process.wait()}) before its banner:\n" + "".join(seen))
        seen.append(line)
        match = re.match(r"\s*(login|password|API key):\s+(\S+)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _wait_healthy(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before answering /health")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"server not healthy before the deadline; last error: {last!r}")


@contextmanager
def live_server(data_dir: Path, **env_extra: str) -> Iterator[Server]:
    """Start the server, wait for its banner and /health, yield it, stop it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(
        HONGYAN_DATA_DIR=str(data_dir),
        HONGYAN_HOST="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hongyan.cli", "serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        banner = _read_banner(process, deadline)
        _wait_healthy(url, process, deadline)
        yield Server(
            url=url,
            email=banner["login"],
            password=banner["password"],
            api_key=banner["API key"],
            data_dir=data_dir,
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- server log ---\n{log_path.read_text(errors='replace')[-4000:]}"
        ) from exc
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
