"""Real `hongyan` processes for production-mode tests: API (`serve --no-workers`) and workers on PostgreSQL and
RabbitMQ, killed with SIGKILL or stopped with SIGTERM; and a webhook receiver that records what it gets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from support import free_port, wait_for  # noqa: F401  (re-exported for the production tests)

CLI = [sys.executable, "-m", "hongyan.cli"]
BANNER_KEY = re.compile(r"API key:\s+(\S+)")


def production_env(tmp: Path, db_url: str, amqp_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        HONGYAN_DATA_DIR=str(tmp),
        HONGYAN_DATABASE_URL=db_url,
        HONGYAN_QUEUE_URL=amqp_url,
        HONGYAN_QUEUE_PREFIX=prefix,
        HONGYAN_SECRET_KEY="production-test-secret",
        HONGYAN_LOG_LEVEL="WARNING",
        HONGYAN_QUIET_HOURS="off",
        HONGYAN_BOOTSTRAP_CREDIT_MICROS=str(10**12),  # ¥1,000,000
        HONGYAN_BIND_LEASE_S="6",
        HONGYAN_CAMPAIGN_LEASE_S="4",
        HONGYAN_WEBHOOK_RETRY_BASE_S="1",
    )
    env.update(extra)
    return env


def api_key(banner: str) -> str:
    """The API key `hongyan serve` prints on its first start ('' on later starts)."""
    match = BANNER_KEY.search(banner)
    return match.group(1) if match else ""


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"hongyan {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Proc:
    """One `hongyan` process with its output in a log file (kept across restarts)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._start_at = 0

    @property
    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace") if self.log.exists() else ""

    def start(self, ready: str, timeout: float = 90) -> str:
        """Start and wait until `ready` appears in this run's output (or /health answers, for ready="http:URL")."""
        self._start_at = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*CLI, *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.output[self._start_at:]
            if ready.startswith("http:"):
                try:
                    if httpx.get(ready[5:] + "/health", timeout=0.5).status_code == 200:
                        return self.output[self._start_at:]
                except httpx.HTTPError:
                    pass
            elif ready in run:
                return run
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{run}")
            time.sleep(0.05)  # polling interval while the process starts
        raise AssertionError(f"{self.name} did not become ready:\n{self.output[self._start_at:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after `timeout`)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9


class WebhookSink:
    """An HTTP endpoint on 127.0.0.1 that answers 200 and records every event it receives (with repeats)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.events.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events)
