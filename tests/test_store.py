"""The Store protocol, one suite run on both stores: every test with `db_kind` runs on SQLite and on PostgreSQL
(River's way), each on a fresh database. Only what PostgreSQL alone has (LISTEN/NOTIFY, its connection pool) is
`postgres_only`; the parity scenario runs the same calls on both stores and compares what they recorded."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from conftest import WorkerFactory, sim_job
from pgutil import PG_URL, fresh_database, requires_postgres
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.errors import Conflict, IdempotencyConflict, NotFound, UsageLimitExceeded
from reelflow.store import open_store
from reelflow.store.base import ApiKey, JobOutcome, NewExecution, NewJob, ProgressReport, Store, UsageLimit
from reelflow.store.common import CALLBACK_OUTCOME_MAX_BYTES, BadCursor, migration_scripts
from reelflow.store.postgres import PostgresStore
from reelflow.store.sqlite import SQLiteStore, sqlite_path


def latest(kind: str) -> int:
    """The newest schema version on disk for `kind` ("sqlite" or "postgres")."""
    return max(
        int(f.name.split("_", 1)[0])
        for f in (resources.files("reelflow.store") / "migrations" / kind).iterdir()
        if f.name.endswith(".sql")
    )


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql` (`?` placeholders) read on a connection of its own, SQLite file or PostgreSQL."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(sqlite_path(url), timeout=30)
        try:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        return [tuple(r) for r in pg.execute(sql.replace("?", "%s"), args).fetchall()]  # type: ignore[arg-type]


def tables(url: str) -> set[str]:
    """The names of the tables in the database."""
    if url.startswith("sqlite:"):
        return {r[0] for r in query(url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def stores_on(url: str, n: int, **pg_options: Any) -> list[Store]:
    """`n` more stores on the test's database (as if in other processes); `pg_options` for PostgreSQL only."""
    if url.startswith("sqlite:"):
        return [SQLiteStore(url) for _ in range(n)]
    return [PostgresStore(url, **pg_options) for _ in range(n)]


async def close_all(stores: list[Store]) -> None:
    for s in stores:
        await s.close()


def job(
    key: str,
    *,
    deps: list[str] | None = None,
    dependents: list[str] | None = None,
    provider: str = "sim",
    model: str = "sim/video",
    cost: float = 0.0,
    max_attempts: int = 3,
    position: int = 0,
) -> NewJob:
    return NewJob(
        key=key,
        position=position,
        type="generate-video",
        provider=provider,
        model=model,
        params={"prompt": key},
        depends_on=deps or [],
        dependents=dependents or [],
        max_attempts=max_attempts,
        cost_estimated=cost,
    )


def execution(eid: str, jobs: list[NewJob], **kw: Any) -> NewExecution:
    for i, j in enumerate(jobs):
        j.position = i
    return NewExecution(id=eid, plan={"jobs": [j.key for j in jobs], "options": {"x": 1}}, jobs=jobs, **kw)


def chain(eid: str, **kw: Any) -> NewExecution:
    """a -> b, and c on its own."""
    return execution(eid, [job("a", dependents=["b"]), job("b", deps=["a"]), job("c")], **kw)


def running_count(url: str, provider: str | None = None) -> int:
    if provider is None:
        return int(query(url, "SELECT COUNT(*) FROM jobs WHERE status = 'running'")[0][0])
    return int(query(url, "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND provider = ?", provider)[0][0])


# ---------------------------------------------------------------------- schema


def shipped(dialect: str) -> list[tuple[int, int]]:
    """Every migration shipped for `dialect`, each applied once (numbers may skip: one taken by another branch)."""
    return [(v, 1) for v, _, _ in migration_scripts(dialect)]


def versions(url: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY 1")


async def test_migrate_reports_the_newest_schema_version_and_is_idempotent(db_kind: str, database_url: str) -> None:
    assert latest("sqlite") == latest("postgres")  # the two dialects' migrations keep step
    store = open_store(database_url)
    try:
        assert await store.migrate() == latest(db_kind)
        assert await store.migrate() == latest(db_kind)
        assert versions(database_url) == shipped(db_kind)
    finally:
        await store.close()


async def test_the_unused_claim_index_is_gone(db_kind: str, database_url: str) -> None:
    """Migration 12 drops `jobs_claim` (no statement used it; every job entering or leaving 'queued' wrote it)."""
    store = open_store(database_url)
    try:
        await store.migrate()
    finally:
        await store.close()
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
        if db_kind == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'"
    )
    indexes = {r[0] for r in query(database_url, sql)}
    assert "jobs_tenant_queue" in indexes and "jobs_claim" not in indexes


async def test_the_look_for_expired_leases_probes_indexes_and_walks_no_held_lease(
    db_kind: str, database_url: str
) -> None:
    """Migration 13 indexes the leases held on jobs no longer running, so `any_expired` (once a second in every
    worker) is index probes; it walked every held lease (10,000 in one worker: ~1.5 ms a second on SQLite)."""
    store = open_store(database_url)
    try:
        await store.migrate()
    finally:
        await store.close()
    if db_kind == "postgres":
        indexes = {r[0] for r in query(database_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")}
        assert "jobs_lease_held" in indexes
        return
    sql = SQLiteStore.sql.any_expired.replace("%s", "?")
    plan = [r[3] for r in query(database_url, "EXPLAIN QUERY PLAN " + sql, 1.0, 1.0, 1.0)]
    jobs = [step for step in plan if " jobs " in f" {step} "]
    assert jobs == [
        "SEARCH jobs USING INDEX jobs_lease (lease_expires_at<?)",
        "SEARCH jobs USING INDEX jobs_lease_held (lease_expires_at<?)",
    ]


async def test_five_stores_migrating_at_once_apply_each_migration_once(db_kind: str, database_url: str) -> None:
    stores = stores_on(database_url, 5, max_connections=2)
    try:
        assert await asyncio.gather(*(s.migrate() for s in stores)) == [latest(db_kind)] * 5
        assert versions(database_url) == shipped(db_kind)
        # and every store works on the one schema
        await stores[3].create_execution(chain("ex-m"))
        assert (await stores[1].get_execution("ex-m")) is not None
    finally:
        await close_all(stores)


async def test_a_sqlite_file_locked_by_another_process_is_waited_for_not_refused(tmp_path: Path) -> None:
    # A new file still in rollback mode, written by another connection: switching it to WAL needs the file to
    # itself, and SQLite refuses the switch at once instead of waiting (what made several stores migrating one
    # new file together fail now and then with "database is locked"). The store waits for the lock instead.
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE someone_elses (x)")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "COMMIT")
    store = SQLiteStore(f"sqlite:///{path}")
    started = time.monotonic()
    try:
        assert await store.migrate() == latest("sqlite")
        assert time.monotonic() - started >= 0.25  # it did wait for the other connection's commit
        assert query(f"sqlite:///{path}", "PRAGMA journal_mode") == [("wal",)]
    finally:
        await store.close()
        other.close()


async def test_ten_reelflow_migrate_processes_started_together_migrate_once(db_kind: str, database_url: str) -> None:
    env = dict(os.environ, REELFLOW_DATABASE_URL=database_url)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reelflow.cli", "migrate", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(10)
    ]  # fmt: skip
    outputs = [(await p.communicate())[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, outputs
    assert versions(database_url) == shipped(db_kind)
    assert {"executions", "jobs", "events"} <= tables(database_url)


async def test_open_store_picks_the_store_of_the_url(db_kind: str, database_url: str) -> None:
    store = open_store(database_url)
    assert isinstance(store, {"sqlite": SQLiteStore, "postgres": PostgresStore}[db_kind])
    await store.close()
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_store("mysql://db.example/reelflow")


def test_a_postgres_pool_smaller_than_its_minimum_is_refused() -> None:
    # the pool is PostgreSQL's alone; refused before any connection is made
    with pytest.raises(ValueError, match="min_connections"):
        PostgresStore("postgresql://db.example/reelflow", min_connections=3, max_connections=2)


async def test_methods_migrate_on_first_use(database_url: str) -> None:
    store = open_store(database_url)
    try:
        assert await store.live_workers(10) == 0  # no explicit migrate()
        assert await store.create_execution(chain("ex-lazy")) == "ex-lazy"
    finally:
        await store.close()


async def test_a_job_finished_when_its_attempt_ended_not_when_its_outcome_was_written(database_url: str) -> None:
    from datetime import datetime

    store = open_store(database_url)
    try:
        await store.create_execution(execution("ex-end", [job("ok"), job("bad"), job("stop"), job("ahead"), job("x")]))
        held = {c.key: c for c in await store.claim("w", 10, 30)}
        ended = time.time() - 5  # the outcomes waited 5 s for their write (a flush behind a slow database)
        before = time.time()
        await store.finish_jobs([
            JobOutcome(held["ok"].id, "w", "succeeded", result={"url": "u"}, ended_at=ended),
            JobOutcome(held["bad"].id, "w", "failed", error="no", ended_at=ended - 1),
            JobOutcome(held["stop"].id, "w", "canceled", error="stopped", ended_at=ended - 2),
            JobOutcome(held["ahead"].id, "w", "succeeded", result={"url": "v"}, ended_at=time.time() + 60),
            JobOutcome(held["x"].id, "w", "succeeded", result={"url": "x"}),  # no end given: the write's time
        ])  # fmt: skip
        after = time.time()
        state = await store.get_execution("ex-end")
        assert state is not None
        fin = {j.id: datetime.fromisoformat(str(j.finished_at).replace("Z", "+00:00")).timestamp() for j in state.jobs}
        assert abs(fin["ok"] - ended) < 0.002 and abs(fin["bad"] - (ended - 1)) < 0.002
        assert abs(fin["stop"] - (ended - 2)) < 0.002
        for key in ("ahead", "x"):  # never later than the write: a clock ahead does not make a job end later
            assert before - 0.002 <= fin[key] <= after + 0.002, key
    finally:
        await store.close()


# ---------------------------------------------------------------------- parity: the same calls on both stores


async def scenario(store: Store) -> list[str]:
    """The same calls, made on one store: a fan-in, a retry, failures that skip (a dependent; the rest under
    `on_failure: stop`), resume, cancel. Checks what each step answers; returns the execution ids it made."""
    await store.create_execution(
        execution(
            "ex1",
            [
                job("a", dependents=["c"]),
                job("b", dependents=["c"]),
                job("c", deps=["a", "b"]),  # the fan-in
                job("d", dependents=["e"], max_attempts=1),
                job("e", deps=["d"]),
            ],
            on_failure="continue",
            webhook="https://hooks.example/x",
            webhook_events=["job.*"],
            cost_estimated=1.0,
        )
    )
    await store.create_execution(
        execution("ex2", [job("x", max_attempts=1), job("y", dependents=["z"]), job("z", deps=["y"])],
                  tenant="t2", metadata={"m": 1})
    )  # fmt: skip
    claimed = {c.key: c for c in await store.claim("w1", 10, 30)}
    assert set(claimed) == {"a", "b", "d", "x", "y"}
    # batches name their jobs out of row order: both stores must record the same sequence anyway
    await store.set_provider_ids([(claimed["b"].id, "w1", "prov-b"), (claimed["a"].id, "w1", "prov-a")])
    await store.report_progress(
        [
            ProgressReport(claimed["b"].id, "w1", 10.0, 1, "queued at the provider"),
            ProgressReport(claimed["a"].id, "w1", 40.0, 3, "rendering"),
        ]
    )
    promoted = await store.finish_jobs(
        [
            JobOutcome(claimed["x"].id, "w1", "failed", error="no"),
            JobOutcome(claimed["d"].id, "w1", "failed", error="bad prompt"),
            JobOutcome(claimed["b"].id, "w1", "retry", error="blip", retry_at=time.time() - 1),
            JobOutcome(claimed["a"].id, "w1", "succeeded", result={"key": "art/a.mp4", "url": "u"}, cost_usd=0.5),
        ]
    )
    assert promoted == []  # c waits for b too; e and z are skipped
    again = await store.claim("w2", 10, 30)
    assert [(c.key, c.attempts) for c in again] == [("b", 2)]
    promoted = await store.finish_jobs(
        [
            JobOutcome(claimed["y"].id, "w1", "succeeded", result={"url": "y"}),
            JobOutcome(again[0].id, "w2", "succeeded", result={"url": "b"}, cost_usd=0.25),
        ]
    )
    assert promoted == ["c"]
    [fan_in] = await store.claim("w3", 10, 30)
    assert fan_in.key == "c" and fan_in.dep_results == {"a": {"key": "art/a.mp4", "url": "u"}, "b": {"url": "b"}}
    await store.finish_jobs([JobOutcome(fan_in.id, "w3", "succeeded", result={"url": "c"}, cost_usd=0.1)])
    failed = await store.get_execution("ex1")
    assert failed is not None and failed.status == "failed"
    resumed = await store.resume_execution("ex1")
    assert [j.status for j in resumed.jobs] == ["succeeded"] * 3 + ["queued", "waiting"]
    [d] = await store.claim("w4", 10, 30)
    assert await store.finish_jobs([JobOutcome(d.id, "w4", "succeeded", result={"url": "d"})]) == ["e"]
    [e] = await store.claim("w4", 10, 30)
    await store.finish_jobs([JobOutcome(e.id, "w4", "succeeded", result={"url": "e"})])
    await store.create_execution(chain("ex3"))
    first = await store.claim("w5", 1, 30)
    await store.cancel_execution("ex3")
    assert await store.canceled_for("w5") == [first[0].id]
    return ["ex1", "ex2", "ex3", await limits_and_leases(store), await callbacks_and_orphans(store)]


async def limits_and_leases(store: Store) -> str:
    """The scenario's second part, for tenant acme: a budget refusal in one claim batch, the result cache, a lease
    released, one that expires, a noted attempt, and webhook deliveries leased, failed and redelivered."""
    store.configure_limits(budgets={"acme": 1.0})
    await store.create_execution(
        execution(
            "ex4",
            [job("p1", cost=0.6), job("p2", cost=0.6), job("hit"), job("r", max_attempts=2)],
            tenant="acme",
            on_failure="continue",
            cost_estimated=1.2,
            webhook="https://hooks.example/acme",
        )
    )
    claimed = {c.key: c for c in await store.claim("w6", 10, 30)}
    assert claimed["p1"].refusal is None and claimed["p2"].refusal is not None
    await store.release_jobs("w6", [claimed["r"].id])
    assert await store.note_attempt(claimed["p1"].id, "w6", claimed["p1"].seq, "job.reconciled", {"adopted": None})
    cached = {"url": "k", "cached_from": {"execution_id": "ex1", "job": "a"}}
    await store.finish_jobs(
        [
            JobOutcome(claimed["p2"].id, "w6", "failed", error=claimed["p2"].refusal),
            JobOutcome(claimed["hit"].id, "w6", "succeeded", result=cached, cache_hit=True),
            JobOutcome(claimed["p1"].id, "w6", "succeeded", result={"url": "p1"}, cost_usd=0.6, cache_key="K"),
        ]
    )
    assert await store.cache_lookup("acme", "K") == {"url": "p1", "cached_from": {"execution_id": "ex4", "job": "p1"}}
    [r] = await store.claim("w7", 10, 0.05)
    assert r.key == "r" and r.attempts == 1  # the released attempt was not counted
    await asyncio.sleep(0.1)
    assert await store.recover_expired() == []
    [r] = await store.claim("w8", 10, 30)
    assert r.attempts == 2 and await store.heartbeat("w8", 30) == {r.id}
    await store.finish_jobs([JobOutcome(r.id, "w8", "failed", error="out of attempts")])
    [delivery] = await store.claim_deliveries("d1", 10, 30, executions=["ex4"])
    assert delivery.event_type == "execution.failed"
    await store.record_delivery_attempt(
        delivery.id, "d1", delivered=False, status_code=500, latency_ms=5.0, error="HTTP 500", next_attempt_at=None
    )
    assert (await store.redeliver(delivery.id, "acme")).status == "pending"
    [again] = await store.claim_deliveries("d2", 10, 30, executions=["ex4"])
    await store.record_delivery_attempt(
        again.id, "d2", delivered=True, status_code=204, latency_ms=5.0, error=None, next_attempt_at=None
    )
    return "ex4"


async def callbacks_and_orphans(store: Store) -> str:
    """The scenario's third part: a provider callback wakes a job, a cancel leaves remote work running, its lease
    expires and the orphan is reported once; the execution is resumed and finished."""
    await store.create_execution(execution("ex5", [job("m", provider="fal"), job("n", provider="fal")]))
    claimed = {c.key: c for c in await store.claim("w9", 10, 0.05)}
    await store.set_provider_ids([(claimed["m"].id, "w9", "app/req-1")])
    assert await store.wake_job("fal", "req-1", "ex5", "m") == "woken"
    assert await store.wake_job("fal", "req-2", "ex5", "m") == "mismatch"
    assert await store.woken_for("w9") == [claimed["m"].id]
    assert await store.adopted("fal", ["app/req-1", "app/req-9"]) == {"app/req-1"}
    canceled = await store.cancel_execution("ex5")
    assert canceled.status == "canceled"
    await asyncio.sleep(0.1)
    orphans = await store.recover_expired()
    assert [(o.job_row, o.provider, o.provider_job_id) for o in orphans] == [(claimed["m"].id, "fal", "app/req-1")]
    assert await store.recover_expired() == []
    resumed = await store.resume_execution("ex5")
    assert [j.status for j in resumed.jobs] == ["queued", "queued"]
    again = await store.claim("w10", 10, 30)
    await store.finish_jobs([JobOutcome(c.id, "w10", "succeeded", result={"url": c.key}) for c in again])
    return "ex5"


TIMES = {
    "created_at", "started_at", "finished_at", "queued_at", "updated_at", "timestamp", "at", "next_attempt_at",
    "delivered_at", "retry_in_s", "p50_s", "p95_s", "provider_submitted_at", "provider_started_at",
    "provider_queued_s",
}  # fmt: skip
"""Fields that hold a time (or a time to wait): compared as present or not."""


def untimed(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return untimed(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {k: (v is None if k in TIMES else untimed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


async def recorded(store: Store, ids: list[str]) -> dict[str, Any]:
    """What `store` holds after the scenario, without row ids, sequence numbers and times."""
    out: dict[str, Any] = {}
    for eid in ids:
        tenant = {"ex2": "t2", "ex4": "acme"}.get(eid)
        out[eid] = {
            "state": untimed(await store.get_execution(eid, tenant=tenant)),
            "events": [(e.type, e.job_key, untimed(e.data)) for e in await store.events(eid)],
            "webhooks": sorted(
                (d.event_type, d.status, [(a.attempt, a.status_code, a.error) for a in d.attempts])
                for d in (await store.list_deliveries(None, eid)).data
            ),
        }
    out["usage"] = {t: untimed(await store.usage(t)) for t in ("default", "t2", "acme")}
    out["queue"] = untimed(await store.queue_stats())
    out["list"] = [(e.id, e.status) for e in (await store.list_executions(None, limit=50)).data]
    out["stats"] = untimed(await store.stats(None, 0))
    out["gauges"] = untimed(await store.metric_gauges())
    for eid in ids:  # last: leasing the pending deliveries to read their payloads changes them
        leased = await store.claim_deliveries("reader", 1000, 30, executions=[eid])
        out[eid]["payloads"] = sorted(json.dumps(untimed(json.loads(d.payload)), sort_keys=True) for d in leased)
    return out


@requires_postgres
async def test_the_same_calls_give_the_same_states_events_webhooks_and_usage_on_both_stores(tmp_path: Path) -> None:
    sqlite = SQLiteStore(f"sqlite:///{tmp_path}/parity.db")
    async with fresh_database() as url:
        pg = PostgresStore(url)
        try:
            ids = await scenario(sqlite)
            assert await scenario(pg) == ids
            on_sqlite, on_pg = await recorded(sqlite, ids), await recorded(pg, ids)
            for part in on_sqlite:
                assert on_pg[part] == on_sqlite[part], part
            # a spot check that the scenario did what it says, so the comparison is not of two empty things
            ex1 = on_pg["ex1"]["state"]
            assert ex1["status"] == "succeeded" and ex1["result"]["outputs"].keys() == {"c", "e"}
            assert ex1["cost"]["actual"] == pytest.approx(0.85)
            types = [t for t, _, _ in on_pg["ex1"]["events"]]
            assert types.count("job.skipped") == 1 and types.count("job.retrying") == 1
            assert "execution.failed" in types and types[-1] == "execution.succeeded"
            ex2 = on_pg["ex2"]["state"]
            assert ex2["status"] == "failed" and ex2["error"] == "job 'x' failed: no"
            assert [j["status"] for j in ex2["jobs"]] == ["failed", "succeeded", "skipped"]
            assert [j["status"] for j in on_pg["ex3"]["state"]["jobs"]] == ["canceled"] * 3
            hooks = [event for event, _, _ in on_pg["ex1"]["webhooks"]]
            assert "job.retrying" in hooks and "execution.succeeded" in hooks and "execution.failed" in hooks
            assert on_pg["usage"]["t2"]["executions"] == 1
            assert len(on_pg["ex1"]["payloads"]) == len(on_pg["ex1"]["webhooks"]) > 20
            ex4 = on_pg["ex4"]
            assert [j["status"] for j in ex4["state"]["jobs"]] == ["succeeded", "failed", "succeeded", "failed"]
            types = [t for t, _, _ in ex4["events"]]
            assert {"job.released", "job.requeued", "job.cache_hit", "job.reconciled"} <= set(types)
            assert ex4["webhooks"] == [("execution.failed", "delivered", [(1, 500, "HTTP 500"), (2, 204, None)])]
            assert on_pg["usage"]["acme"]["cache_hits"] == 1
            assert on_pg["ex5"]["state"]["status"] == "succeeded"
            assert [e for e, _ in on_pg["list"]] == ["ex5", "ex4", "ex3", "ex2", "ex1"]
            assert await pg.owns_artifact("default", "art/a.mp4") and not await pg.owns_artifact("t2", "art/a.mp4")
        finally:
            await pg.close()
            await sqlite.close()


# ---------------------------------------------------------------------- reading


async def test_list_pages_with_cursors_filters_and_tenants(store: Store) -> None:
    for i in range(5):
        await store.create_execution(chain(f"a{i}", tenant="acme"))
    await store.create_execution(chain("b0", tenant="bolt"))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list_executions("acme", limit=2, cursor=cursor)
        seen += [e.id for e in page.data]
        cursor = page.next_cursor
        pages += 1
        if cursor is None:
            break
    assert seen == ["a4", "a3", "a2", "a1", "a0"] and pages == 3
    everyone = await store.list_executions(None, limit=50)
    assert len(everyone.data) == 6 and everyone.next_cursor is None
    assert [e.id for e in (await store.list_executions("bolt")).data] == ["b0"]
    assert (await store.list_executions("acme", status="running")).data == []
    assert len((await store.list_executions("acme", status="queued")).data) == 5
    with pytest.raises(BadCursor):
        await store.list_executions("acme", cursor="not-a-cursor")
    assert await store.get_execution("a1", tenant="bolt") is None
    assert await store.get_execution("nope") is None
    assert await store.execution_plan("a1", tenant="acme") == {"jobs": ["a", "b", "c"], "options": {"x": 1}}
    assert await store.execution_plan("a1", tenant="bolt") is None
    state = await store.get_execution("a1")
    assert state is not None and state.options == {"x": 1}
    assert [j.status for j in state.jobs] == ["queued", "waiting", "queued"]
    events = await store.events("a1")
    assert [e.type for e in events] == ["execution.created"] and events[0].data == {"status": "queued", "jobs": 3}
    assert await store.events("a1", after=events[0].seq) == []


# ---------------------------------------------------------------------- lifecycle


async def test_cancel_and_resume_refuse_what_they_cannot_do(store: Store) -> None:
    await store.create_execution(chain("ex"))
    with pytest.raises(NotFound):
        await store.cancel_execution("missing")
    with pytest.raises(NotFound):
        await store.cancel_execution("ex", tenant="other")
    with pytest.raises(Conflict, match="only a finished execution"):
        await store.resume_execution("ex")
    state = await store.cancel_execution("ex")
    assert state.status == "canceled" and state.error == "canceled by request"
    with pytest.raises(Conflict, match="already canceled"):
        await store.cancel_execution("ex")
    resumed = await store.resume_execution("ex")
    assert resumed.status == "queued"
    assert [j.status for j in resumed.jobs] == ["queued", "waiting", "queued"]
    claimed = await store.claim("w", 10, 30)
    assert sorted(c.key for c in claimed) == ["a", "c"]


async def test_resume_of_a_succeeded_execution_is_a_conflict(store: Store) -> None:
    await store.create_execution(execution("ok", [job("x")]))
    [c] = await store.claim("w", 5, 30)
    await store.finish_jobs([JobOutcome(c.id, "w", "succeeded", result={"u": 1})])
    with pytest.raises(Conflict, match="nothing to resume"):
        await store.resume_execution("ok")


async def test_one_batch_of_successes_releases_a_fan_in_once_and_ignores_a_stale_attempt(store: Store) -> None:
    """Successes written together (SQLite: one statement): a dependent of two of them is queued once, released by
    the later one in the outcomes' order; an outcome of an attempt that no longer holds its job changes nothing,
    ahead of the current attempt's or after it. On SQLite a job finished twice by one attempt keeps the first
    outcome, as when outcomes were written one by one (PostgreSQL's batch UPDATE picks either)."""
    await store.create_execution(
        execution("fan", [job("a", dependents=["c"]), job("b", dependents=["c"]), job("c", deps=["a", "b"]),
                          job("d"), job("e")])
    )  # fmt: skip
    claimed = {c.key: c for c in await store.claim("w1", 10, 30)}
    assert set(claimed) == {"a", "b", "d", "e"}
    a, b, d, e = claimed["a"], claimed["b"], claimed["d"], claimed["e"]
    twice = isinstance(store, SQLiteStore)
    promoted = await store.finish_jobs(
        [
            JobOutcome(a.id, "w1", "succeeded", result={"url": "stale"}, seq=a.seq + 7),
            JobOutcome(b.id, "w1", "succeeded", result={"url": "b"}, seq=b.seq),
            JobOutcome(a.id, "w1", "succeeded", result={"url": "a"}, cost_usd=0.5, seq=a.seq),
            JobOutcome(d.id, "w1", "succeeded", result={"url": "d"}, seq=d.seq),
            JobOutcome(d.id, "w1", "succeeded", result={"url": "stale"}, seq=d.seq + 7),
            JobOutcome(e.id, "w1", "succeeded", result={"url": "e1"}),
            *([JobOutcome(e.id, "w1", "succeeded", result={"url": "e2"})] if twice else []),
            JobOutcome(e.id, "w2", "succeeded", result={"url": "not the owner"}),
        ]
    )
    assert promoted == ["c"]
    state = await store.get_execution("fan")
    assert state is not None
    jobs = {j.id: j for j in state.jobs}
    assert {k: (jobs[k].status, jobs[k].result) for k in "abde"} == {
        "a": ("succeeded", {"url": "a"}), "b": ("succeeded", {"url": "b"}),
        "d": ("succeeded", {"url": "d"}), "e": ("succeeded", {"url": "e1"}),
    }  # fmt: skip
    assert jobs["a"].cost.actual == 0.5 and jobs["c"].status == "queued"
    queued = [(ev.job_key, ev.data) for ev in await store.events("fan") if ev.type == "job.queued"]
    assert queued == [("c", {"after": "a"})]
    # each job's one job.succeeded event tells the outcome its row holds (not a stale attempt's, listed before it)
    succeeded = [(ev.job_key, ev.data["result"]) for ev in await store.events("fan") if ev.type == "job.succeeded"]
    assert sorted(succeeded, key=lambda kv: kv[0]) == [
        ("a", {"url": "a"}), ("b", {"url": "b"}), ("d", {"url": "d"}), ("e", {"url": "e1"})
    ]  # fmt: skip
    [fan_in] = await store.claim("w1", 10, 30)
    assert fan_in.key == "c" and fan_in.dep_results == {"a": {"url": "a"}, "b": {"url": "b"}}


async def test_a_hand_off_in_a_subscribed_execution_gives_each_webhook_the_state_of_its_event(
    store: Store, settings: Settings
) -> None:
    """The finish's events are delivered with the state they were made in (the dependent queued), the lease's
    with the dependent running; the one the finish leases is leased once, with its dependency's result."""
    await store.create_execution(chain("ex-w", webhook="https://hooks.example/x", webhook_events=["job.*"]))
    held = {c.key: c for c in await store.claim("w", 5, 30)}
    assert sorted(held) == ["a", "c"]
    promoted, claimed = await store.finish_and_claim(
        [JobOutcome(held["a"].id, "w", "succeeded", result={"u": 1})], None, "w", 5, 30
    )
    assert promoted == ["b"] and [(j.key, j.attempts, j.dep_results) for j in claimed] == [("b", 1, {"a": {"u": 1}})]
    statuses = {}
    for etype, payload in query(
        settings.database_url, "SELECT event_type, payload FROM webhook_deliveries WHERE execution_id = ?", "ex-w"
    ):
        data = json.loads(payload)["data"]
        statuses[(etype, data["event"]["job"])] = {j["id"]: j["status"] for j in data["jobs"]}
    assert statuses[("job.succeeded", "a")] == {"a": "succeeded", "b": "queued", "c": "running"}
    assert statuses[("job.queued", "b")] == {"a": "succeeded", "b": "queued", "c": "running"}
    assert statuses[("job.running", "b")] == {"a": "succeeded", "b": "running", "c": "running"}
    state = await store.get_execution("ex-w")
    assert state is not None and [j.status for j in state.jobs] == ["succeeded", "running", "running"]


async def test_a_provider_id_that_comes_with_its_jobs_success_is_written_with_it(store: Store) -> None:
    """A quick job's work id reaches the store in the same flush as its end: it is kept (and its job.submitted
    event comes before its job.succeeded one); an id of a job that does not end here is written on its own."""
    await store.create_execution(execution("quick", [job("a"), job("b")]))
    claimed = {c.key: c for c in await store.claim("w", 10, 30)}
    a, b = claimed["a"], claimed["b"]
    await store.finish_jobs(
        [JobOutcome(a.id, "w", "succeeded", result={"url": "a"}, seq=a.seq)],
        [(a.id, "w", "pid-a"), (b.id, "w", "pid-b")],
    )
    state = await store.get_execution("quick")
    assert state is not None
    jobs = {j.id: j for j in state.jobs}
    assert (jobs["a"].status, jobs["a"].provider_job_id) == ("succeeded", "pid-a")
    assert (jobs["b"].status, jobs["b"].provider_job_id) == ("running", "pid-b")
    kinds = [(e.job_key, e.type, e.data.get("provider_job_id")) for e in await store.events("quick")
             if e.type in ("job.submitted", "job.succeeded")]  # fmt: skip
    assert sorted(kinds, key=lambda k: k[0]) == [
        ("a", "job.submitted", "pid-a"), ("a", "job.succeeded", None), ("b", "job.submitted", "pid-b")
    ]  # fmt: skip


async def test_a_stale_attempts_success_beside_the_current_one_counts_down_its_dependents_once(store: Store) -> None:
    """A dependent of two jobs stays waiting when one of them succeeds in a batch that also holds an outcome of its
    earlier attempt (counted twice, it was released before its other dependency ran)."""
    await store.create_execution(
        execution("pair", [job("a", dependents=["c"]), job("b", dependents=["c"]), job("c", deps=["a", "b"])])
    )
    claimed = {c.key: c for c in await store.claim("w1", 10, 30)}
    a = claimed["a"]
    promoted = await store.finish_jobs(
        [
            JobOutcome(a.id, "w1", "succeeded", result={"url": "stale"}, seq=a.seq + 3),
            JobOutcome(a.id, "w1", "succeeded", result={"url": "a"}, seq=a.seq),
        ]
    )
    assert promoted == []
    state = await store.get_execution("pair")
    assert state is not None
    assert {j.id: j.status for j in state.jobs} == {"a": "succeeded", "b": "running", "c": "waiting"}
    assert [e.data["result"] for e in await store.events("pair") if e.type == "job.succeeded"] == [{"url": "a"}]


async def test_provider_ids_of_a_batch_are_written_for_the_jobs_their_owner_still_holds(store: Store) -> None:
    await store.create_execution(execution("ex", [job(k) for k in "abcde"]))
    mine = {c.key: c.id for c in await store.claim("w", 4, 30)}
    assert set(mine) == {"a", "b", "c", "d"}
    others = {c.key: c.id for c in await store.claim("v", 4, 30)}
    await store.finish_jobs([JobOutcome(mine["c"], "w", "succeeded", result={})])
    before = time.time()
    await store.set_provider_ids([
        (mine["d"], "w", "pid-d-1"), (mine["a"], "w", "pid-a"), (others["e"], "w", "not-mine"),
        (mine["c"], "w", "pid-c"), (mine["d"], "w", "pid-d-2"), (mine["b"], "v", "wrong-owner"),
    ])  # fmt: skip
    state = await store.get_execution("ex")
    assert state is not None
    assert {j.id: j.provider_job_id for j in state.jobs} == {
        "a": "pid-a", "b": None, "c": None, "d": "pid-d-2", "e": None,
    }  # fmt: skip
    submitted = [(e.job_key, e.data) for e in await store.events("ex") if e.type == "job.submitted"]
    assert submitted == [("a", {"provider_job_id": "pid-a"}), ("d", {"provider_job_id": "pid-d-2"})]
    url = store.url  # type: ignore[attr-defined]
    rows = query(url, "SELECT key, provider_submitted_at FROM jobs WHERE provider_job_id IS NOT NULL ORDER BY key")
    assert [r[0] for r in rows] == ["a", "d"] and all(r[1] >= before for r in rows)


async def test_leases_expire_requeue_then_fail_and_release_gives_attempts_back(store: Store) -> None:
    await store.create_execution(
        execution("ex", [job("once", max_attempts=1), job("twice", max_attempts=2)], on_failure="continue")
    )
    await store.create_execution(execution("gone", [job("remote")]))
    claimed = {c.key: c for c in await store.claim("w", 10, 0.05)}
    await store.set_provider_ids([(claimed["remote"].id, "w", "remote-1")])
    await store.cancel_execution("gone")  # canceled while running: its remote work may still run
    await asyncio.sleep(0.1)
    orphans = await store.recover_expired()
    assert [(o.job_row, o.provider, o.provider_job_id) for o in orphans] == [(claimed["remote"].id, "sim", "remote-1")]
    state = await store.get_execution("ex")
    assert state is not None
    by_key = {j.id: j for j in state.jobs}
    assert by_key["twice"].status == "queued"
    assert by_key["once"].status == "failed" and "lease expired" in str(by_key["once"].error)
    types = [e.type for e in await store.events("ex")]
    assert "job.requeued" in types and "job.failed" in types
    assert await store.recover_expired() == []
    [again] = await store.claim("w2", 10, 30)
    assert again.key == "twice" and again.attempts == 2
    assert await store.heartbeat("w2", 30) == {again.id}
    assert await store.heartbeat("w", 30) == set()
    await store.release_jobs("w2", [again.id])
    assert [e.type for e in await store.events("ex")][-1] == "job.released"
    [third] = await store.claim("w3", 10, 30)
    assert third.attempts == 2  # the released attempt was not counted


async def test_workers_register_and_count(store: Store) -> None:
    await store.register_worker("w1", {"pid": 1})
    await store.register_worker("w1", {"pid": 2})
    await store.register_worker("w2", {})
    assert await store.live_workers(10) == 2
    await store.unregister_worker("w1")
    assert await store.live_workers(10) == 1


# ---------------------------------------------------------------------- idempotency and usage


async def test_idempotency_key_returns_the_first_execution_or_conflicts(store: Store) -> None:
    first = await store.create_execution(chain("e1", idempotency_key="k", request_hash="h1"))
    assert await store.create_execution(chain("e2", idempotency_key="k", request_hash="h1")) == first
    with pytest.raises(IdempotencyConflict):
        await store.create_execution(chain("e3", idempotency_key="k", request_hash="h2"))
    assert await store.create_execution(chain("e4", tenant="other", idempotency_key="k", request_hash="h2")) == "e4"
    assert len((await store.list_executions(None)).data) == 2


async def test_concurrent_submissions_with_one_key_make_one_execution(database_url: str) -> None:
    stores = stores_on(database_url, 3)
    try:
        await stores[0].migrate()
        ids = await asyncio.gather(
            *(
                stores[i % 3].create_execution(chain(f"c{i}", idempotency_key="same", request_hash="h"))
                for i in range(6)
            )
        )
        assert len(set(ids)) == 1
        assert len((await stores[0].list_executions(None)).data) == 1
    finally:
        for s in stores:
            await s.close()


async def test_usage_limits_refuse_with_the_limit_named_even_when_submitted_concurrently(database_url: str) -> None:
    stores = stores_on(database_url, 3)
    try:
        await stores[0].migrate()
        limit = UsageLimit(monthly_executions=2)
        results = await asyncio.gather(
            *(stores[i % 3].create_execution(chain(f"u{i}", tenant="acme", usage_limit=limit)) for i in range(6)),
            return_exceptions=True,
        )
        made = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, UsageLimitExceeded)]
        assert len(made) == 2 and len(refused) == 4
        assert refused[0].status == 429 and refused[0].limit == "monthly_executions"
        with pytest.raises(UsageLimitExceeded) as err:
            await stores[0].create_execution(
                chain("money", tenant="bolt", cost_estimated=3.0, usage_limit=UsageLimit(monthly_cost_usd=2.0))
            )
        assert err.value.status == 402 and err.value.limit == "monthly_cost_usd"
        usage = await stores[1].usage("acme")
        assert usage["executions"] == 2 and usage["executions_unfinished"] == 2
    finally:
        for s in stores:
            await s.close()


async def test_a_paid_job_past_the_monthly_budget_is_handed_out_with_a_refusal(store: Store) -> None:
    store.configure_limits(budgets={"acme": 1.0})
    await store.create_execution(
        execution("ex", [job("one", cost=0.6), job("two", cost=0.6), job("free")], tenant="acme", cost_estimated=1.2)
    )
    claimed = {c.key: c for c in await store.claim("w", 10, 30)}
    assert claimed["one"].refusal is None and claimed["free"].refusal is None
    assert claimed["two"].refusal is not None and "monthly_cost_usd budget of $1.00" in claimed["two"].refusal
    usage = await store.usage("acme")
    assert usage["reserved_usd"] == 1.2 and usage["cost_usd"] == 0


# ---------------------------------------------------------------------- claims: caps and fairness


async def test_two_concurrent_claimers_never_pass_a_provider_or_model_cap(database_url: str) -> None:
    a, b = stores_on(database_url, 2)
    try:
        await a.migrate()
        for s in (a, b):
            s.configure_limits(provider_caps={"sim": 3}, model_caps={"other/m": 1})
        jobs = [job(f"s{i}") for i in range(30)] + [
            job(f"o{i}", provider="other", model=f"other/m:v{i}") for i in range(6)
        ]
        await a.create_execution(execution("ex", jobs))
        peak_sim = peak_other = 0
        done = 0
        for _ in range(200):
            got = await asyncio.gather(a.claim("wa", 5, 30), b.claim("wb", 5, 30), a.claim("wa", 5, 30))
            peak_sim = max(peak_sim, running_count(database_url, "sim"))
            peak_other = max(peak_other, running_count(database_url, "other"))
            held = [(c, o) for cl, o in zip(got, ("wa", "wb", "wa"), strict=True) for c in cl]
            await a.finish_jobs([JobOutcome(c.id, o, "succeeded", result={}) for c, o in held])
            done += len(held)
            if done == len(jobs):
                break
        assert done == len(jobs)
        assert peak_sim == 3 and peak_other == 1
    finally:
        await a.close()
        await b.close()


async def test_racing_claimers_take_each_job_once_and_hold_the_cap(database_url: str) -> None:
    stores = stores_on(database_url, 4)
    try:
        await stores[0].migrate()
        for s in stores:
            s.configure_limits(provider_caps={"sim": 4})
        await stores[0].create_execution(execution("ex", [job(f"j{i}") for i in range(40)]))
        taken = await asyncio.gather(*(s.claim(f"w{i}", 10, 30) for i, s in enumerate(stores)))
        ids = [c.id for cl in taken for c in cl]
        assert len(ids) == len(set(ids)) == 4
        assert running_count(database_url) == 4
        uncapped = stores_on(database_url, 4)
        try:
            more = await asyncio.gather(*(s.claim(f"u{i}", 10, 30) for i, s in enumerate(uncapped)))
            more_ids = [c.id for cl in more for c in cl]
            assert len(more_ids) == len(set(more_ids)) == 36 and not set(more_ids) & set(ids)
        finally:
            for s in uncapped:
                await s.close()
    finally:
        for s in stores:
            await s.close()


async def test_execution_status_reads_the_status_alone_for_its_tenant(store: Store) -> None:
    """What the event stream reads while idle: the status, as the full state has it, and only for its tenant."""
    await store.create_execution(chain("s1", tenant="acme"))
    assert await store.execution_status("s1", "acme") == "queued" == (await store.get_execution("s1")).status
    assert await store.execution_status("s1") == "queued"
    assert await store.execution_status("s1", "bolt") is None
    assert await store.execution_status("nope") is None
    await store.cancel_execution("s1", "acme")
    assert await store.execution_status("s1", "acme") == "canceled" == (await store.get_execution("s1")).status


async def test_tenants_take_turns_and_priority_orders_within_a_tenant(store: Store) -> None:
    await store.create_execution(execution("big", [job(f"b{i}") for i in range(10)], tenant="acme"))
    await store.create_execution(execution("small", [job("s0")], tenant="zeta"))
    first = await store.claim("w", 2, 30)
    assert sorted(c.tenant for c in first) == ["acme", "zeta"]
    await store.create_execution(execution("low", [job("l0")], tenant="mid", priority=0))
    await store.create_execution(execution("high", [job("h0")], tenant="mid", priority=5))
    # round robin: the next claim starts after the tenant served first last time
    nxt = await store.claim("w", 1, 30)
    assert [(c.tenant, c.key) for c in nxt] == [("mid", "h0")]
    nxt = await store.claim("w", 1, 30)
    assert [c.tenant for c in nxt] == ["acme"]
    assert [c.key for c in await store.claim("w", 1, 30)] == ["l0"]


async def test_jobs_waiting_for_a_retry_time_are_not_claimed_early(store: Store) -> None:
    await store.create_execution(execution("ex", [job("x")]))
    [c] = await store.claim("w", 1, 30)
    await store.finish_jobs([JobOutcome(c.id, "w", "retry", error="later", retry_at=time.time() + 0.3)])
    assert await store.claim("w", 1, 30) == []
    wake = await store.next_wakeup()
    assert wake is not None and wake > time.time()
    await asyncio.sleep(0.35)
    [again] = await store.claim("w", 1, 30)
    assert again.attempts == 2
    retry_events = [e for e in await store.events("ex") if e.type == "job.retrying"]
    assert retry_events[0].data["error"] == "later" and 0 < retry_events[0].data["retry_in_s"] <= 0.3


# ---------------------------------------------------------------------- tenants, keys, deliveries


async def test_tenants_and_api_keys(store: Store) -> None:
    secret = await store.ensure_tenant("acme")
    assert secret.startswith("whsec_") and await store.ensure_tenant("acme") == secret
    await store.add_api_key(ApiKey("k1", "acme", "hash1", 100.0))
    await store.add_api_key(ApiKey("k2", "newco", "hash2", 200.0))  # creates the tenant
    assert await store.get_api_key("k1") == ApiKey("k1", "acme", "hash1", 100.0, None)
    assert await store.get_api_key("nope") is None
    assert [k.id for k in await store.list_api_keys()] == ["k1", "k2"]
    assert [k.id for k in await store.list_api_keys("newco")] == ["k2"]
    assert await store.revoke_api_key("k1") is True
    assert await store.revoke_api_key("k1") is False
    revoked = await store.get_api_key("k1")
    assert revoked is not None and revoked.revoked_at is not None
    assert (await store.ensure_tenant("newco")).startswith("whsec_")


async def test_deliveries_are_leased_once_recorded_and_redelivered(database_url: str) -> None:
    a, b = stores_on(database_url, 2)
    try:
        await a.migrate()
        secret = await a.ensure_tenant("acme")
        await a.create_execution(execution("ex", [job("x")], tenant="acme", webhook="https://h.example/"))
        [c] = await a.claim("w", 1, 30)
        await a.finish_jobs([JobOutcome(c.id, "w", "succeeded", result={"url": "done"})])
        got_a, got_b = await asyncio.gather(a.claim_deliveries("da", 10, 30), b.claim_deliveries("db", 10, 30))
        leased = got_a + got_b
        assert [d.event_type for d in leased] == ["execution.succeeded"]
        d = leased[0]
        owner = "da" if got_a else "db"
        assert d.secret == secret and d.url == "https://h.example/" and d.attempts == 0
        assert '"type":"execution.succeeded"' in d.payload
        assert await a.claim_deliveries("dc", 10, 30) == []
        await a.record_delivery_attempt(
            d.id, "someone-else", delivered=True, status_code=200, latency_ms=1.0, error=None, next_attempt_at=None
        )
        await a.record_delivery_attempt(
            d.id, owner, delivered=False, status_code=500, latency_ms=12.5, error="HTTP 500",
            next_attempt_at=time.time() + 60,
        )  # fmt: skip
        [view] = (await a.list_deliveries("acme", "ex")).data
        assert view.status == "pending" and view.next_attempt_at is not None
        assert [(x.attempt, x.status_code, x.error) for x in view.attempts] == [(1, 500, "HTTP 500")]
        assert await a.claim_deliveries("dc", 10, 30) == []  # not due yet
        with pytest.raises(NotFound):
            await a.redeliver(d.id, "other-tenant")
        again = await a.redeliver(d.id, "acme")
        assert again.status == "pending"
        [d2] = await b.claim_deliveries("dd", 10, 30)
        await b.record_delivery_attempt(
            d2.id, "dd", delivered=True, status_code=204, latency_ms=3.0, error=None, next_attempt_at=None
        )
        [final] = (await b.list_deliveries(None)).data
        assert final.status == "delivered" and len(final.attempts) == 2 and final.delivered_at
        assert (await a.list_deliveries("other-tenant")).data == []
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------------- cache, pace, wake marks


async def test_cache_lookup_finds_the_latest_result_of_the_tenant(store: Store) -> None:
    await store.create_execution(execution("e1", [job("x"), job("y")], tenant="acme"))
    claimed = {c.key: c for c in await store.claim("w", 5, 30)}
    await store.finish_jobs([JobOutcome(claimed["x"].id, "w", "succeeded", result={"url": "old"}, cache_key="K")])
    await asyncio.sleep(0.01)
    await store.finish_jobs([JobOutcome(claimed["y"].id, "w", "succeeded", result={"url": "new"}, cache_key="K")])
    hit = await store.cache_lookup("acme", "K")
    assert hit == {"url": "new", "cached_from": {"execution_id": "e1", "job": "y"}}
    assert await store.cache_lookup("other", "K") is None
    assert await store.cache_lookup("acme", "missing") is None
    many = await store.cache_lookup_many([("acme", "K"), ("acme", "missing"), ("acme", "K")])
    assert list(many) == [("acme", "K")]
    assert await store.cache_lookup_many([]) == {}


async def test_cache_lookup_many_answers_each_tenant_and_key_of_a_batch(store: Store) -> None:
    await store.create_execution(execution("e1", [job("x"), job("y")], tenant="acme"))
    await store.create_execution(execution("e2", [job("z")], tenant="beta"))
    claimed = {c.key: c for c in await store.claim("w", 5, 30)}
    await store.finish_jobs([
        JobOutcome(claimed["x"].id, "w", "succeeded", result={"url": "x"}, cache_key="K1"),
        JobOutcome(claimed["y"].id, "w", "succeeded", result={"url": "y"}, cache_key="K2"),
        JobOutcome(claimed["z"].id, "w", "succeeded", result={"url": "z"}, cache_key="K1"),
    ])  # fmt: skip
    wanted = [("beta", "K1"), ("acme", "K2"), ("beta", "K2"), ("acme", "K1"), ("nobody", "K1")]
    assert await store.cache_lookup_many(wanted) == {
        ("beta", "K1"): {"url": "z", "cached_from": {"execution_id": "e2", "job": "z"}},
        ("acme", "K2"): {"url": "y", "cached_from": {"execution_id": "e1", "job": "y"}},
        ("acme", "K1"): {"url": "x", "cached_from": {"execution_id": "e1", "job": "x"}},
    }


async def test_cache_hits_are_counted_in_usage(store: Store) -> None:
    await store.create_execution(execution("e1", [job("x")]))
    [c] = await store.claim("w", 5, 30)
    cached = {"url": "u", "cached_from": {"execution_id": "e0", "job": "x"}}
    await store.finish_jobs([JobOutcome(c.id, "w", "succeeded", result=cached, cache_hit=True)])
    assert [e.type for e in await store.events("e1")][-3:-1] == ["job.cache_hit", "job.succeeded"]
    usage = await store.usage("default")
    assert usage["cache_hits"] == 1 and usage["jobs_succeeded"] == 1


async def test_the_shared_token_bucket_paces_and_a_429_holds_everyone(database_url: str) -> None:
    a, b = stores_on(database_url, 2)
    try:
        await a.migrate()
        assert await a.take_tokens("free", 7, None) == (7, 0.0)
        granted, wait = await a.take_tokens("p", 10, 6100.0)  # 100 a second, a bucket of 100
        t_first = time.monotonic()
        assert granted == 0 and 0 < wait <= 0.011
        await asyncio.sleep(0.2)
        totals = await asyncio.gather(*(s.take_tokens("p", 100, 6100.0) for s in (a, b, a, b)))
        got = sum(g for g, _ in totals)
        # shared between the stores: never more than was refilled since the first take
        assert 15 <= got <= (time.monotonic() - t_first) * 100 + 1, totals
        await b.report_throttle("p", 0.3)
        t_hold = time.monotonic()
        granted, wait = await a.take_tokens("p", 5, 6100.0)
        assert granted == 0 and 0.2 < wait <= 0.3
        paces = await a.provider_paces()
        assert set(paces) == {"p"} and paces["p"][0] > time.time()
        await asyncio.sleep(0.35)
        granted, wait = await a.take_tokens("p", 100, 6100.0)
        elapsed = time.monotonic() - t_hold
        # the 429 halved the pace: about 50 a second refilled since the hold, not 100
        assert 0.8 * 50 * 0.35 - 2 <= granted <= 0.6 * 100 * elapsed + 2, (granted, elapsed)
    finally:
        await a.close()
        await b.close()


async def test_callbacks_wake_marks(store: Store) -> None:
    await store.create_execution(execution("ex", [job("x", provider="fal"), job("y", provider="fal")]))
    claimed = {c.key: c for c in await store.claim("w", 5, 30)}
    await store.set_provider_ids([(claimed["x"].id, "w", "owner/app/req-1")])
    assert await store.wake_job("fal", "req-1", "ex", "x") == "woken"
    assert await store.wake_job("fal", "req-2", "ex", "x") == "mismatch"
    assert await store.wake_job("fal", "anything", "ex", "y") == "woken"  # no id stored yet: matches
    assert await store.wake_job("fal", "zzz") == "unknown"
    assert await store.wake_job("replicate", "req-1", "ex", "x") == "unknown"
    assert await store.woken_for("w") == sorted([claimed["x"].id, claimed["y"].id])
    assert await store.woken_for("w") == []
    await store.set_provider_ids([(claimed["y"].id, "w", "req-9")])
    assert await store.wake_job("fal", "req-9") == "woken"
    await store.finish_jobs([JobOutcome(claimed["y"].id, "w", "succeeded", result={})])
    assert await store.wake_job("fal", "req-9") == "ignored"
    assert await store.woken_for("w") == []  # no longer leased to w


async def test_a_callbacks_outcome_travels_with_its_wake_mark(store: Store) -> None:
    await store.create_execution(execution("ex", [job("x", provider="fal"), job("y", provider="fal")]))
    claimed = {c.key: c for c in await store.claim("w", 5, 30)}
    x, y = claimed["x"].id, claimed["y"].id
    await store.set_provider_ids([(x, "w", "owner/app/req-1"), (y, "w", "owner/app/req-2")])
    told = json.dumps({"request_id": "req-1", "status": "OK", "payload": {"images": [{"url": "https://x/1.png"}]}})
    assert await store.wake_job("fal", "req-1", "ex", "x", told) == "woken"
    assert await store.wake_job("fal", "req-1", "ex", "x") == "woken"  # a wake without an outcome keeps it
    # about other work than the job waits on (an earlier attempt's replay): nothing is kept, not even the mark
    assert await store.wake_job("fal", "req-1", "ex", "y", told) == "mismatch"
    assert await store.woken_outcomes("w") == [(x, told)]
    assert await store.woken_outcomes("w") == []  # read once: the mark and the outcome are cleared
    # too big to keep: the mark alone (the worker then asks the provider)
    big = json.dumps({"request_id": "req-2", "status": "OK", "payload": {"text": "x" * CALLBACK_OUTCOME_MAX_BYTES}})
    assert await store.wake_job("fal", "req-2", "ex", "y", big) == "woken"
    assert await store.woken_outcomes("w") == [(y, None)]
    # a finished job keeps nothing
    await store.finish_jobs([JobOutcome(x, "w", "succeeded", result={})])
    assert await store.wake_job("fal", "req-1", "ex", "x", told) == "ignored"
    assert await store.woken_outcomes("w") == []
    assert await store.wake_job("fal", "req-2", "ex", "y", told) == "woken"
    assert await store.woken_for("w") == [y]  # the ids alone, as before
    assert await store.woken_outcomes("w") == []


# ---------------------------------------------------------------------- LISTEN / NOTIFY


@pytest.mark.postgres_only  # LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll
async def test_wait_for_work_wakes_within_100ms_of_a_claimable_job_from_another_store(database_url: str) -> None:
    listener, writer = PostgresStore(database_url), PostgresStore(database_url)
    try:
        await listener.migrate()
        assert await listener.wait_for_work(0.2) is False  # nothing happened
        t0 = time.monotonic()
        assert await listener.wait_for_work(0.1) is False
        assert time.monotonic() - t0 >= 0.09

        async def submit_later() -> float:
            await asyncio.sleep(0.2)
            await writer.create_execution(execution("ex", [job("x", dependents=["y"]), job("y", deps=["x"])]))
            return time.monotonic()

        submitted = asyncio.create_task(submit_later())
        assert await listener.wait_for_work(5) is True
        woke = time.monotonic()
        assert woke - await submitted < 0.1
        # a finish that promotes a dependent notifies; one that promotes nothing does not
        [c] = await writer.claim("w", 5, 30)
        assert await listener.wait_for_work(0.05) is False
        await writer.finish_jobs([JobOutcome(c.id, "w", "succeeded", result={})])
        assert await listener.wait_for_work(1) is True
        [c2] = await writer.claim("w", 5, 30)
        await writer.finish_jobs([JobOutcome(c2.id, "w", "succeeded", result={})])
        assert await listener.wait_for_work(0.2) is False
    finally:
        await listener.close()
        await writer.close()


@pytest.mark.postgres_only  # LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll
async def test_the_listen_connection_comes_back_after_pg_terminate_backend(database_url: str) -> None:
    listener, writer = PostgresStore(database_url, listen_check_s=0.2), PostgresStore(database_url)
    try:
        await listener.migrate()
        assert await listener.wait_for_work(0.05) is False
        pid = listener.listen_pid
        assert pid is not None and listener.listen_connects == 1
        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as admin:
            cur = await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert (await cur.fetchone()) == (True,)
        # it reconnects, and says "look" once (a notification may have been missed meanwhile)
        assert await listener.wait_for_work(5) is True
        assert listener.listen_connects == 2 and listener.listen_pid not in (None, pid)
        assert await listener.wait_for_work(0.05) is False
        t0 = time.monotonic()
        waiter = asyncio.create_task(listener.wait_for_work(5))
        await asyncio.sleep(0.05)
        await writer.create_execution(execution("ex", [job("x")]))
        assert await waiter is True
        assert time.monotonic() - t0 < 0.05 + 0.2
    finally:
        await listener.close()
        await writer.close()


@pytest.mark.postgres_only  # LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll
async def test_release_resume_and_recovery_notify(database_url: str) -> None:
    listener, writer = PostgresStore(database_url), PostgresStore(database_url)
    try:
        await listener.migrate()
        assert await listener.wait_for_work(0.05) is False  # listening from here on
        await writer.create_execution(execution("ex", [job("x", max_attempts=5)]))
        assert await listener.wait_for_work(1) is True
        [c] = await writer.claim("w", 1, 30)
        await writer.release_jobs("w", [c.id])
        assert await listener.wait_for_work(1) is True
        [c] = await writer.claim("w", 1, 0.01)
        await asyncio.sleep(0.05)
        await writer.recover_expired()
        assert await listener.wait_for_work(1) is True
        [c] = await writer.claim("w", 1, 30)
        await writer.cancel_execution("ex")
        assert await listener.wait_for_work(0.1) is False  # a cancel makes nothing claimable
        await writer.resume_execution("ex")
        assert await listener.wait_for_work(1) is True
    finally:
        await listener.close()
        await writer.close()


# ---------------------------------------------------------------------- the engine on the store


async def test_engine_and_worker_run_a_plan_with_a_dependency_to_success(
    engine: Engine, store: Store, running_worker: WorkerFactory
) -> None:
    plan = {
        "jobs": [
            sim_job("a", latency_s=0.05),
            sim_job("b", latency_s=0.05, depends_on=["a"], echo="$a.sim_id"),
            sim_job("c", latency_s=0.05, fail_times=1),
        ]
    }
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=20, poll_s=0.05)
    assert state["status"] == "succeeded", state
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["b"]["result"]["echo"] == jobs["a"]["result"]["sim_id"]
    assert jobs["c"]["attempts"] == 2
    assert jobs["b"]["started_at"] >= jobs["a"]["finished_at"]
    types = [e.type for e in await store.events(eid)]
    assert types[0] == "execution.created" and types[-1] == "execution.succeeded"
    assert types.count("job.retrying") == 1


async def test_two_workers_on_two_stores_run_every_job_exactly_once(
    engine: Engine, store: Store, database_url: str, running_worker: WorkerFactory
) -> None:
    [other] = stores_on(database_url, 1)
    try:
        eid = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=0.02) for i in range(30)]})
        async with running_worker(), running_worker(store_=other):
            state = await engine.wait(eid, timeout=30, poll_s=0.05)
        assert state["status"] == "succeeded"
        running = [e for e in await store.events(eid) if e.type == "job.running"]
        assert len(running) == 30 and len({e.job_key for e in running}) == 30
        assert all(j["attempts"] == 1 for j in state["jobs"])
    finally:
        await other.close()


async def test_cancel_racing_many_finishes_ends_consistently(database_url: str) -> None:
    # On PostgreSQL, finishing locks job rows and then the execution; cancel locks the execution and then its
    # jobs. Crossed like this they can deadlock: PostgreSQL aborts one side, the store retries it, nothing is lost.
    stores = stores_on(database_url, 4, max_connections=3)
    await stores[0].migrate()
    try:
        for round_ in range(5):
            eid = f"ex-race-{round_}"
            await stores[0].create_execution(execution(eid, [job(f"j{i}") for i in range(60)]))
            held = await stores[0].claim("w", 60, 60)
            assert len(held) == 60
            batches = [held[i::3] for i in range(3)]
            results = await asyncio.gather(
                *(
                    s.finish_jobs([JobOutcome(c.id, "w", "succeeded", result={"url": f"u{c.id}"}) for c in batch])
                    for s, batch in zip(stores[1:], batches, strict=True)
                ),
                stores[0].cancel_execution(eid),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, Conflict)]
            assert errors == []  # deadlocks retried away; a Conflict only if every job had ended first
            state = await stores[0].get_execution(eid)
            assert state is not None
            statuses = Counter(j.status for j in state.jobs)
            assert set(statuses) <= {"succeeded", "canceled"} and sum(statuses.values()) == 60
            events = await stores[0].events(eid)
            ends = [e.type for e in events if e.type in ("execution.succeeded", "execution.canceled")]
            assert len(ends) == 1 and state.status == ends[0].split(".")[1]
            per_job = Counter(e.job_key for e in events if e.type in ("job.succeeded", "job.canceled"))
            assert set(per_job.values()) == {1}  # every job ended once, one way or the other
    finally:
        for s in stores:
            await s.close()


def test_dumps_writes_what_json_dumps_writes() -> None:
    """`common.dumps` (the C encoder made once) gives json.dumps' compact, non-ASCII text, whatever the value."""
    from reelflow.store.common import dumps

    values: list[Any] = [
        None, True, 0, -3, 0.1, 1e300, float("nan"), float("inf"), "é\n\"x\"\u2028", [], {},
        {"b": [1, 2.5, None, {"c": "ü"}], "a": (1, "t")}, [[1, "w", '{"r":1}', 0.0, None, 1, None]],
    ]  # fmt: skip
    for value in values:
        assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(TypeError):
        dumps({"x": object()})


async def test_a_heartbeat_renews_only_the_leases_near_their_end_and_names_every_job_held(
    store: Store, engine: Engine
) -> None:
    """Rewriting every lease a worker holds at every beat cost ~50 ms of SQLite CPU per 10,000 jobs: a beat
    renews the leases with less than 3/4 of `lease_s` left, and still answers with every job held."""
    job = {"type": "generate-video", "model": "sim/video", "params": {}}
    await engine.submit({"jobs": [{"id": "far", **job}, {"id": "near", **job}]})
    [far] = await store.claim("w", 1, 100)
    [near] = await store.claim("w", 1, 10)
    assert (far.key, near.key) == ("far", "near")

    async def leases() -> dict[int, float]:
        rows = await store._in_read(  # type: ignore[attr-defined]
            lambda tx: tx.all("SELECT id, lease_expires_at FROM jobs WHERE lease_owner = %s", ("w",))
        )
        return {int(r["id"]): float(r["lease_expires_at"]) for r in rows}

    before = await leases()
    started = time.time()
    assert await store.heartbeat("w", 40) == {far.id, near.id}
    after = await leases()
    assert after[far.id] == before[far.id]  # 100 s left: more than 3/4 of 40, left alone
    assert started + 40 <= after[near.id] <= time.time() + 40  # 10 s left: renewed to 40 s from now
    assert await store.heartbeat("w", 200) == {far.id, near.id}
    assert min((await leases()).values()) >= started + 200  # both had less than 150 s left
    assert await store.heartbeat("other", 40) == set()
