"""Schemathesis against the OpenAPI document of a real server: generated requests (examples, coverage,
fuzzing, stateful phases; bounded) to every operation, as a customer and as platform staff. Fails on any
5xx, an undocumented status code or content type, or a body that does not match its documented schema."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from live_server import live_server

MAX_EXAMPLES = os.environ.get("HONGYAN_TEST_SCHEMATHESIS_EXAMPLES", "8")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def operations_tested(output: str) -> int:
    """How many operations schemathesis exercised (its summary line `Tested: N`)."""
    match = re.search(r"Tested:\s+(\d+)", output)
    assert match, output[-3000:]
    return int(match.group(1))


def run_schemathesis(url: str, token: str, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--max-examples", MAX_EXAMPLES,
         "--checks", CHECKS, "--header", f"Authorization: Bearer {token}", "--generation-deterministic",
         "--continue-on-failure", "--request-timeout", "30", "--report", "junit", "--report-dir", str(report),
         *extra],
        capture_output=True, text=True, timeout=900, cwd=report.parent,  # its .schemathesis cache stays in tmp
    )


def test_openapi_conformance(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    with live_server(data_dir, HONGYAN_SANDBOX_DELAY_MS="0") as server:
        customer = run_schemathesis(server.url, server.api_key, tmp_path / "customer", "--exclude-path-regex",
                                    "^/v1/operator/")
        assert customer.returncode == 0, customer.stdout[-8000:] + customer.stderr[-2000:]
        assert "Server error" not in customer.stdout
        assert operations_tested(customer.stdout) >= 35
        with sqlite3.connect(data_dir / "hongyan.db") as conn:
            account_id = conn.execute("SELECT id FROM account ORDER BY created_at LIMIT 1").fetchone()[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
        env["HONGYAN_DATA_DIR"] = str(data_dir)
        key = subprocess.run([sys.executable, "-m", "hongyan.cli", "admin", "create-key", "--account", account_id,
                              "--scopes", "operator", "--name", "schemathesis"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert key.returncode == 0, key.stderr
        staff = run_schemathesis(server.url, key.stdout.strip(), tmp_path / "staff", "--include-path-regex",
                                 "^/v1/operator/")
        assert staff.returncode == 0, staff.stdout[-8000:] + staff.stderr[-2000:]
        assert "Server error" not in staff.stdout
        assert operations_tested(staff.stdout) >= 15
