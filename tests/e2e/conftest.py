"""Browser tests: the real server (`hongyan serve` in a subprocess, fresh data directory) and Debian's
chromium driven by Playwright.

The server's first-start banner gives the administrator's login, password and API key. Chromium is
/usr/bin/chromium (Playwright's own browser downloads are not used: no internet). Without it the tests
skip locally and FAIL under CI=true, so a CI machine without a browser can never pass silently.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
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


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("hongyan-e2e")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(
        HONGYAN_DATA_DIR=str(data_dir),
        HONGYAN_SANDBOX_DELAY_MS="300",
        HONGYAN_HOST="127.0.0.1",
        PYTHONUNBUFFERED="1",
    )
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"browser tests need Debian chromium under CI=true: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser context (no cookies) in Chinese, 1440×900, failing fast on JS errors."""
    context = browser.new_context(
        base_url=server.url,
        locale="zh-CN",
        viewport={"width": 1440, "height": 900},
        extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"},
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # 4xx answers to form posts (a wrong password is 401, a refused send 422) are logged by chromium as
    # "Failed to load resource"; they are expected. Any other console error is a bug in console.js.
    tab.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
