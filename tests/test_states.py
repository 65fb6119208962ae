"""The state machine's table (states.py) against the code and the databases: every status string the SQL of
`src/` names is in it, the guards come from it, and both databases refuse a status it does not list."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import sim_job
from reelflow.engine.scheduler import Engine
from reelflow.states import (
    DELIVERY_STATUSES,
    EXECUTION_INITIAL,
    EXECUTION_STATUSES,
    EXECUTION_TRANSITIONS,
    JOB_INITIAL,
    JOB_STATUSES,
    JOB_TRANSITIONS,
    RESUMABLE_JOB,
    TERMINAL_EXECUTION,
    TERMINAL_JOB,
    check_constraint,
    execution_status,
    guard,
)
from reelflow.store.sqlite import sqlite_path

SRC = Path(__file__).resolve().parent.parent / "src" / "reelflow"
_EQUAL = re.compile(r"status\s*(?:=|<>|!=)\s*'(\w+)'", re.IGNORECASE)
_IN = re.compile(r"status\s+(?:NOT\s+)?IN\s*\(\s*('[^)]*)\)", re.IGNORECASE)


def _sql_statuses() -> dict[str, set[str]]:
    """status -> the files whose SQL names it (`status = 'x'`, `status IN ('x', …)`, `SET status = 'x'`)."""
    found: dict[str, set[str]] = {}
    for path in [*SRC.rglob("*.py"), *SRC.rglob("*.sql")]:
        text = path.read_text(encoding="utf-8")
        names = set(_EQUAL.findall(text))
        for group in _IN.findall(text):
            names.update(re.findall(r"'(\w+)'", group))
        for name in names:
            found.setdefault(name, set()).add(str(path.relative_to(SRC)))
    return found


def test_the_table_covers_every_status_the_sql_of_src_names() -> None:
    found = _sql_statuses()
    assert {"waiting", "queued", "running", "succeeded", "pending"} <= set(found)  # the scan sees the stores
    known = set(JOB_STATUSES) | set(EXECUTION_STATUSES) | set(DELIVERY_STATUSES)
    unknown = {name: files for name, files in found.items() if name not in known}
    assert not unknown, f"statuses outside states.py: {unknown}"


def test_the_tables_are_closed_and_consistent() -> None:
    for table, statuses, initial, terminal in (
        (JOB_TRANSITIONS, JOB_STATUSES, JOB_INITIAL, TERMINAL_JOB),
        (EXECUTION_TRANSITIONS, EXECUTION_STATUSES, EXECUTION_INITIAL, TERMINAL_EXECUTION),
    ):
        assert set(table) == set(statuses)
        assert all(to <= set(statuses) and frm not in to for frm, to in table.items())
        assert initial <= set(statuses) and terminal <= set(statuses)
        assert not table["succeeded"]  # nothing leaves success
        # every status is reachable from a first one
        seen, stack = set(initial), list(initial)
        while stack:
            for nxt in table[stack.pop()] - seen:
                seen.add(nxt)
                stack.append(nxt)
        assert seen == set(statuses)
    assert RESUMABLE_JOB == {"failed", "canceled", "skipped"}
    # execution_status only ever names a listed execution status
    for counts in ({"running": 1}, {"failed": 1}, {"canceled": 1}, {"succeeded": 2}, {"skipped": 1}):
        for started in (False, True):
            for cancel in (False, True):
                assert execution_status(counts, started=started, cancel_requested=cancel) in EXECUTION_STATUSES


def test_guards_come_from_the_table() -> None:
    assert guard("running") == "status = 'queued'"
    assert guard("canceled") == "status IN ('waiting', 'queued', 'running')"
    assert guard("skipped", "j.status") == "j.status IN ('waiting', 'queued')"
    assert guard("queued", frm="running") == "status = 'running'"
    assert guard("running", execution=True, frm="queued") == "status = 'queued'"
    with pytest.raises(ValueError):
        guard("running", frm="waiting")  # a waiting job is promoted first, never claimed
    with pytest.raises(ValueError):
        guard("queued", frm="succeeded")


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_the_migrations_check_the_same_lists(dialect: str) -> None:
    sql = (SRC / "store" / "migrations" / dialect / "0007_status_checks.sql").read_text()
    for statuses in (JOB_STATUSES, EXECUTION_STATUSES, DELIVERY_STATUSES):
        assert check_constraint(statuses) in sql
    if dialect == "sqlite":  # v12 rebuilt jobs and executions with the constraints in place of the triggers
        rebuilt = (SRC / "store" / "migrations" / dialect / "0012_status_constraints.sql").read_text()
        for statuses in (JOB_STATUSES, EXECUTION_STATUSES):
            assert check_constraint(statuses) in " ".join(rebuilt.split())


def _raw_write(database_url: str, sql: str, args: tuple[Any, ...]) -> None:
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(database_url))
        try:
            conn.execute(sql.replace("%s", "?"), args)
            conn.commit()
        finally:
            conn.close()
    else:
        with psycopg.connect(database_url, autocommit=True) as pg:
            pg.execute(sql, args)


_REFUSED = (sqlite3.IntegrityError, psycopg.errors.CheckViolation)


async def test_a_status_outside_the_table_is_refused(engine: Engine, database_url: str) -> None:
    eid = await engine.submit({"jobs": [sim_job("a"), sim_job("b", depends_on=["a"])]})
    for sql, args in (
        ("UPDATE jobs SET status = %s WHERE execution_id = %s", ("done", eid)),
        ("UPDATE executions SET status = %s WHERE id = %s", ("paused", eid)),
        (
            "INSERT INTO executions (id, tenant, status, plan, created_at, updated_at)"
            " VALUES (%s, 'default', %s, '{}', 0, 0)",
            ("ex_other", "Queued"),
        ),
        (
            "INSERT INTO jobs (execution_id, key, position, type, params, status, created_at)"
            " VALUES (%s, 'c', 9, 'generate-video', '{}', %s, 0)",
            (eid, "retry"),
        ),
    ):
        with pytest.raises(_REFUSED, match="status_check"):
            _raw_write(database_url, sql, args)
    state = await engine.get(eid)
    assert state is not None
    assert state.status == "queued" and [j.status for j in state.jobs] == ["queued", "waiting"]
    # a listed status still goes through (and the store reads it back)
    _raw_write(database_url, "UPDATE jobs SET status = %s WHERE execution_id = %s AND key = 'b'", ("skipped", eid))
    state = await engine.get(eid)
    assert state is not None and state.jobs[1].status == "skipped"
