"""`hongyan privacy …` run as a real process on a fresh SQLite data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, data_dir: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HONGYAN_DATA_DIR=str(data_dir))
    env.pop("HONGYAN_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "hongyan.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, input=stdin)


def test_export_erase_and_purge(tmp_path: Path) -> None:
    assert _run("migrate", data_dir=tmp_path).returncode == 0
    user = _run("admin", "create-user", "ops@example.com", "--password", "correct horse battery", data_dir=tmp_path)
    account = next(w for w in user.stdout.split() if w.startswith("acc_")).strip(",.()")
    assert _run("billing", "top-up", account, "10", "--note", "x", data_dir=tmp_path).returncode == 0
    sent = _run("send", "--to", "13800000001", "--text", "secret words", data_dir=tmp_path)
    assert sent.returncode == 0, sent.stderr

    out = _run("privacy", "export", "--account", account, "--number", "13800000001", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["phone_number"] == "+8613800000001"
    assert [m["text"] for m in document["messages"]] == ["secret words"]

    bad = _run("privacy", "export", "--account", account, "--number", "12", data_dir=tmp_path)
    assert bad.returncode == 1 and "invalid_phone_number" in bad.stderr
    missing = _run("privacy", "export", "--account", "acc_nope", "--number", "13800000001", data_dir=tmp_path)
    assert missing.returncode == 2 and "no account acc_nope" in missing.stderr

    declined = _run("privacy", "erase", "--account", account, "--number", "+8613800000001", data_dir=tmp_path,
                    stdin="n\n")
    assert declined.returncode == 1 and "nothing erased" in declined.stderr
    erased = _run("privacy", "erase", "--account", account, "--number", "+8613800000001", "--yes", data_dir=tmp_path)
    assert erased.returncode == 0, erased.stderr
    assert "messages 1" in erased.stdout and "messages_canceled 1" in erased.stdout  # never sent: no workers ran

    target = tmp_path / "export.json"
    again = _run("privacy", "export", "--account", account, "--number", "13800000001", "-o", str(target),
                 data_dir=tmp_path)
    assert again.returncode == 0 and json.loads(target.read_text())["messages"] == []
    assert target.stat().st_mode & 0o077 == 0

    purged = _run("privacy", "purge", data_dir=tmp_path)
    assert purged.returncode == 0 and "purged: accounts 0" in purged.stdout
    verified = _run("billing", "verify", data_dir=tmp_path)
    assert verified.returncode == 0 and "ledger OK" in verified.stdout
