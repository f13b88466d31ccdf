"""`hongyan security …` as a real process: key generation, status, rotation by re-encryption."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def run(*args: str, data_dir: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HONGYAN_")}
    env.update(HONGYAN_DATA_DIR=str(data_dir), **env_extra)
    return subprocess.run([sys.executable, "-m", "hongyan.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_generated_keys_rotation_and_status(tmp_path: Path) -> None:
    assert run("migrate", data_dir=tmp_path).returncode == 0
    # the embedded default generates its keys once, private to the owner
    keys_file = tmp_path / "encryption_keys"
    assert keys_file.exists() and oct(keys_file.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "blind_index_key").exists()
    user = run("admin", "create-user", "ops@example.com", "--password", "correct horse battery", data_dir=tmp_path)
    account_id = next(w for w in user.stdout.split() if w.startswith("acc_")).strip(",.()")
    assert run("billing", "top-up", account_id, "10", "--note", "test", data_dir=tmp_path).returncode == 0
    sent = run("send", "--to", "13800000001", "--text", "cli-secret-text", data_dir=tmp_path)
    assert sent.returncode == 0, sent.stderr
    with sqlite3.connect(tmp_path / "hongyan.db") as conn:
        body = conn.execute("SELECT body FROM message").fetchone()[0]
    assert body.startswith("enc1:k1:")

    new_key = run("security", "new-key", "k2", data_dir=tmp_path).stdout.strip()
    assert new_key.startswith("k2:") and len(new_key) == 3 + 43
    rotated_keys = f"{new_key},{keys_file.read_text().strip()}"
    before = run("security", "status", data_dir=tmp_path, HONGYAN_ENCRYPTION_KEYS=rotated_keys)
    assert "active key k2" in before.stdout and "message.body: k1 1" in before.stdout
    done = run("security", "re-encrypt", data_dir=tmp_path, HONGYAN_ENCRYPTION_KEYS=rotated_keys)
    assert done.returncode == 0, done.stderr
    assert "message.body: k2 1" in done.stdout and "k1" not in done.stdout.split("blind index values", 1)[1]
    with sqlite3.connect(tmp_path / "hongyan.db") as conn:
        assert conn.execute("SELECT body FROM message").fetchone()[0].startswith("enc1:k2:")
    # k1 can go: only k2 is needed now
    after = run("security", "status", data_dir=tmp_path, HONGYAN_ENCRYPTION_KEYS=new_key)
    assert after.returncode == 0 and "message.to_number: k2 1" in after.stdout
    # a wrong key list fails loudly, never silently
    broken = run("security", "re-encrypt", data_dir=tmp_path, HONGYAN_ENCRYPTION_KEYS="k3:" + "A" * 43)
    assert broken.returncode != 0 and "'k2', which is not in HONGYAN_ENCRYPTION_KEYS" in broken.stderr + broken.stdout
