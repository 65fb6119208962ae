"""SQLite schema v12 rebuilds `executions` and `jobs` (CHECK constraints in place of the status triggers): a database
made by v11 with rows in every column comes through unchanged, with the same indexes (but `jobs_claim`, which no
statement used), foreign keys that still cascade, and the same refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from reelflow.store.common import migration_scripts
from reelflow.store.sqlite import SQLiteStore, _split_sql

REBUILT = 12
ADDED_SINCE = {"jobs_lease_held"}
"""Indexes later migrations add (13: the held leases of jobs no longer running)."""


def at_version(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)")
    conn.execute("BEGIN")
    for v, name, sql in migration_scripts("sqlite"):
        if v <= version:
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (v, name))
    conn.execute("COMMIT")
    return conn


def filled(conn: sqlite3.Connection, table: str, fixed: dict[str, Any], n: int) -> dict[str, Any]:
    """A row whose every column holds a value of its own (not its default): text, numbers, by declared type."""
    row: dict[str, Any] = {}
    for _, name, typ, _, _, _ in conn.execute(f"PRAGMA table_info({table})"):
        if name in fixed:
            row[name] = fixed[name]
        elif typ == "INTEGER":
            row[name] = 1000 * n + len(row)
        elif typ == "REAL":
            row[name] = n + len(row) / 7
        else:
            row[name] = f"{table}.{name}.{n}"
    cols = ", ".join(row)
    conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
    return row


def rows(conn: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY 1")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def schema_of(conn: sqlite3.Connection, kind: str) -> dict[str, str]:
    found = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = ? AND sql IS NOT NULL", (kind,))
    return {name: " ".join(sql.split()) for name, sql in found}


async def test_a_v11_database_comes_through_the_rebuild_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "v11.db"
    conn = at_version(path, REBUILT - 1)
    executions = [filled(conn, "executions", {"status": s}, n) for n, s in enumerate(["running", "succeeded"])]
    jobs = [
        filled(conn, "jobs", {"execution_id": ex["id"], "status": s, "id": 10 + n}, n)
        for n, (ex, s) in enumerate(zip(executions, ["running", "succeeded"], strict=True))
    ]
    jobs.append(filled(conn, "jobs", {"execution_id": executions[0]["id"], "status": "waiting", "id": 99}, 7))
    logs = [filled(conn, "job_logs", {"job_id": j["id"]}, n) for n, j in enumerate(jobs)]
    indexes_before = schema_of(conn, "index")
    columns_before = {t: [r[1:] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("executions", "jobs")}
    conn.close()

    store = SQLiteStore(f"sqlite:///{path}")
    try:
        assert await store.migrate() >= REBUILT
    finally:
        await store.close()

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    assert rows(conn, "executions") == sorted(executions, key=lambda r: r["id"])
    assert rows(conn, "jobs") == jobs
    assert rows(conn, "job_logs") == logs
    assert {t: [r[1:] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("executions", "jobs")} == (
        columns_before
    )
    # the same indexes, same names, same definitions, but for the one no statement used (and those added since)
    assert "jobs_claim" in indexes_before
    after = {k: v for k, v in schema_of(conn, "index").items() if k not in ADDED_SINCE}
    assert after == {k: v for k, v in indexes_before.items() if k != "jobs_claim"}
    assert not [t for t in schema_of(conn, "trigger") if t.startswith(("jobs_", "executions_"))]
    assert not [t for t in schema_of(conn, "table") if t.endswith(("_v11", "_v12"))]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    # the constraints refuse what the triggers refused, by the same names
    with pytest.raises(sqlite3.IntegrityError, match="jobs_status_check"):
        conn.execute("UPDATE jobs SET status = 'done' WHERE id = 10")
    with pytest.raises(sqlite3.IntegrityError, match="executions_status_check"):
        conn.execute("UPDATE executions SET status = 'paused'")
    # and the foreign keys still cascade: an execution takes its jobs and their logs with it
    conn.execute("DELETE FROM executions WHERE id = ?", (executions[0]["id"],))
    assert [j["id"] for j in rows(conn, "jobs")] == [11]
    assert [g["job_id"] for g in rows(conn, "job_logs")] == [11]
    conn.close()
