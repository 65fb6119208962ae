"""API keys: created by the CLI, stored only as hashes, revocable."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from reelflow.keys import authenticate, create_key
from reelflow.store.sqlite import SQLiteStore

CLI = [sys.executable, "-m", "reelflow.cli"]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_keys_create_list_revoke(worker_env: dict[str, str], tmp_path: Path) -> None:
    made = run(worker_env, "keys", "create", "--tenant", "acme", "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["api_key"].startswith("rf_") and key["webhook_secret"].startswith("whsec_")
    again = json.loads(run(worker_env, "keys", "create", "--tenant", "acme", "--json").stdout)
    assert again["api_key"] != key["api_key"]
    assert again["webhook_secret"] == key["webhook_secret"], "one webhook secret per tenant"
    with sqlite3.connect(tmp_path / "reelflow.db") as conn:
        dump = "\n".join(conn.iterdump())
    secret = key["api_key"].split("_", 2)[2]  # rf_<id>_<secret>; the secret itself may hold "_"
    assert len(secret) >= 40 and key["api_key"] not in dump and secret not in dump
    listed = json.loads(run(worker_env, "keys", "list", "--json").stdout)
    assert [k["tenant"] for k in listed] == ["acme", "acme"]
    assert all(k["revoked_at"] is None for k in listed)
    assert run(worker_env, "keys", "revoke", key["key_id"]).returncode == 0
    assert run(worker_env, "keys", "revoke", key["key_id"]).returncode == 1
    listed = {k["key_id"]: k for k in json.loads(run(worker_env, "keys", "list", "--json").stdout)}
    assert listed[key["key_id"]]["revoked_at"] is not None
    bad = run(worker_env, "keys", "create", "--tenant", "bad name!")
    assert bad.returncode == 1 and "invalid tenant name" in bad.stderr


async def test_authenticate_accepts_only_the_exact_live_key(store: SQLiteStore) -> None:
    new = await create_key(store, "acme")
    assert await authenticate(store, new.api_key) == "acme"
    key_id = new.key_id
    forged = f"rf_{key_id}_" + "A" * 43
    assert await authenticate(store, forged) is None
    assert await authenticate(store, new.api_key + "x") is None
    assert await authenticate(store, "") is None
    assert await authenticate(store, "rf_' OR 1=1 --") is None
    await store.revoke_api_key(key_id)
    assert await authenticate(store, new.api_key) is None
