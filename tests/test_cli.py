"""The `hongyan` command line, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HONGYAN_DATA_DIR=str(data_dir))
    env.pop("HONGYAN_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "hongyan.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_commands(tmp_path: Path) -> None:
    out = _run("--help", data_dir=tmp_path)
    assert out.returncode == 0
    for command in ("serve", "worker", "migrate", "admin", "send"):
        assert command in out.stdout


def test_migrate_then_send(tmp_path: Path) -> None:
    assert _run("migrate", data_dir=tmp_path).returncode == 0
    assert (tmp_path / "hongyan.db").exists()
    no_account = _run("send", "--to", "13800000001", "--text", "hi", data_dir=tmp_path)
    assert no_account.returncode == 2 and "no account" in no_account.stderr
    user = _run("admin", "create-user", "ops@example.com", "--password", "correct horse battery", data_dir=tmp_path)
    assert user.returncode == 0, user.stderr
    account_id = next(w for w in user.stdout.split() if w.startswith("acc_")).strip(",.()")
    broke = _run("send", "--to", "13800000001", "--text", "你好", data_dir=tmp_path)
    assert broke.returncode == 1 and "insufficient_balance" in broke.stderr  # a new account has no money
    topped = _run("billing", "top-up", account_id, "10", "--note", "bank transfer 42", data_dir=tmp_path)
    assert topped.returncode == 0, topped.stderr
    assert "credited 10.00 CNY" in topped.stdout
    sent = _run("send", "--to", "13800000001; 12; 13800000001", "--text", "你好", data_dir=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert "1 accepted, 2 rejected" in sent.stdout
    assert "invalid_phone_number" in sent.stdout and "duplicate_phone_number" in sent.stdout
    balance = _run("billing", "balance", account_id, data_dir=tmp_path)
    assert "balance 9.96 CNY" in balance.stdout and "held 0.04" in balance.stdout, balance.stdout
    verified = _run("billing", "verify", data_dir=tmp_path)
    assert verified.returncode == 0 and "ledger OK" in verified.stdout, verified.stdout
    weak = _run("admin", "create-user", "x@example.com", "--password", "short", data_dir=tmp_path)
    assert weak.returncode == 1 and "password_too_short" in weak.stderr


def test_billing_commands_name_a_missing_account(tmp_path: Path) -> None:
    assert _run("migrate", data_dir=tmp_path).returncode == 0
    for args in (("balance", "acc_nope"), ("top-up", "acc_nope", "5", "--note", "x"), ("credit-limit", "acc_nope", "5")):
        out = _run("billing", *args, data_dir=tmp_path)
        assert out.returncode == 2 and "no account acc_nope" in out.stderr, (args, out.stderr)
