"""PostgresStore: the Store protocol on PostgreSQL, checked directly and against the SQLite store's behaviour,
plus what only PostgreSQL has (concurrent claimers under caps, concurrent migration, LISTEN/NOTIFY).

Every test gets a fresh database (tests/pgutil.py); all are skipped when no server is reachable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import fast_settings, sim_job
from pgutil import PG_URL, fresh_database, requires_postgres
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.engine.worker import Worker
from reelflow.errors import Conflict, IdempotencyConflict, NotFound, UsageLimitExceeded
from reelflow.providers.registry import Providers
from reelflow.providers.sim import SimProvider
from reelflow.store import open_store
from reelflow.store.base import ApiKey, JobOutcome, NewExecution, NewJob, ProgressReport, Store, UsageLimit
from reelflow.store.common import BadCursor
from reelflow.store.postgres import PostgresStore
from reelflow.store.sqlite import SQLiteStore

pytestmark = requires_postgres

LATEST = max(
    int(f.name.split("_", 1)[0])
    for f in (resources.files("reelflow.store") / "migrations" / "postgres").iterdir()
    if f.name.endswith(".sql")
)
"""The newest schema version on disk."""


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url)
    await store.migrate()
    yield store
    await store.close()


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


async def running_count(url: str, provider: str | None = None) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND (%s::text IS NULL OR provider = %s)",
            (provider, provider),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


# ---------------------------------------------------------------------- schema


async def test_migrate_reports_the_sqlite_schema_version_and_is_idempotent(pg_url: str, tmp_path: Path) -> None:
    sqlite = SQLiteStore(f"sqlite:///{tmp_path}/v.db")
    store = PostgresStore(pg_url)
    try:
        expected = await sqlite.migrate()
        assert await store.migrate() == expected == LATEST
        assert await store.migrate() == LATEST
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
            assert [r[0] for r in await cur.fetchall()] == list(range(1, LATEST + 1))
    finally:
        await store.close()
        await sqlite.close()


async def test_five_stores_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, max_connections=2) for _ in range(5)]
    try:
        versions = await asyncio.gather(*(s.migrate() for s in stores))
        assert versions == [LATEST] * 5
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY 1")
            assert await cur.fetchall() == [(v, 1) for v in range(1, LATEST + 1)]
        # and every store works on the one schema
        await stores[3].create_execution(chain("ex-m"))
        assert (await stores[1].get_execution("ex-m")) is not None
    finally:
        for s in stores:
            await s.close()


async def test_ten_reelflow_migrate_processes_started_together_migrate_once(pg_url: str) -> None:
    env = dict(os.environ, REELFLOW_DATABASE_URL=pg_url)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reelflow.cli", "migrate", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(10)
    ]  # fmt: skip
    outputs = [(await p.communicate())[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, outputs
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY 1")
        assert await cur.fetchall() == [(v, 1) for v in range(1, LATEST + 1)]
        cur = await conn.execute("SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('executions', 'jobs', 'events')")
        assert await cur.fetchone() == (3,)


async def test_open_store_picks_postgres_for_postgresql_urls(pg_url: str) -> None:
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    await store.close()
    with pytest.raises(ValueError, match="min_connections"):
        PostgresStore(pg_url, min_connections=3, max_connections=2)


async def test_methods_migrate_on_first_use(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    try:
        assert await store.live_workers(10) == 0  # no explicit migrate()
        assert await store.create_execution(chain("ex-lazy")) == "ex-lazy"
    finally:
        await store.close()


# ---------------------------------------------------------------------- the same behaviour as SQLite


async def scenario(store: Store) -> list[str]:
    """A run through most of the protocol; returns the execution ids it made."""
    await store.create_execution(chain("ex1", webhook="https://hooks.example/x", webhook_events=["job.*"]))
    await store.create_execution(execution("ex2", [job("solo", max_attempts=1)], tenant="t2", metadata={"m": 1}))
    claimed = {c.key: c for c in await store.claim("w1", 10, 30)}
    assert set(claimed) == {"a", "c", "solo"}
    await store.set_provider_ids([(claimed["a"].id, "w1", "prov-a"), (claimed["c"].id, "w1", "prov-c")])
    await store.report_progress([ProgressReport(claimed["a"].id, "w1", 40.0, 3, "rendering")])
    promoted = await store.finish_jobs(
        [
            JobOutcome(claimed["c"].id, "w1", "retry", error="blip", retry_at=time.time() - 1),
            JobOutcome(claimed["a"].id, "w1", "succeeded", result={"key": "art/a.mp4", "url": "u"}, cost_usd=0.5),
            JobOutcome(claimed["solo"].id, "w1", "failed", error="bad prompt"),
        ]
    )
    assert promoted == ["b"]
    again = {c.key: c for c in await store.claim("w2", 10, 30)}
    assert set(again) == {"b", "c"}
    assert again["b"].dep_results == {"a": {"key": "art/a.mp4", "url": "u"}}
    assert again["c"].attempts == 2
    await store.finish_jobs(
        [
            JobOutcome(again["b"].id, "w2", "failed", error="boom"),
            JobOutcome(again["c"].id, "w2", "succeeded", result={"url": "c"}, cost_usd=0.25),
        ]
    )
    await store.resume_execution("ex1")
    last = await store.claim("w3", 10, 30)
    assert [c.key for c in last] == ["b"]
    await store.finish_jobs([JobOutcome(last[0].id, "w3", "succeeded", result={"url": "b2"})])
    await store.create_execution(chain("ex3"))
    first = await store.claim("w4", 1, 30)
    await store.cancel_execution("ex3")
    assert await store.canceled_for("w4") == [first[0].id]
    return ["ex1", "ex2", "ex3"]


TIMES = {"created_at", "started_at", "finished_at", "queued_at", "timestamp", "at", "next_attempt_at"}


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (v is None if k in TIMES else untimed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


async def test_the_same_calls_give_the_same_states_events_and_webhooks_as_sqlite(
    pg: PostgresStore, tmp_path: Path
) -> None:
    sqlite = SQLiteStore(f"sqlite:///{tmp_path}/parity.db")
    await sqlite.migrate()
    try:
        ids = await scenario(sqlite)
        assert await scenario(pg) == ids
        for eid in ids:
            s_state, p_state = await sqlite.get_execution(eid), await pg.get_execution(eid)
            assert p_state is not None and s_state is not None
            assert untimed(p_state) == untimed(s_state)
            s_events = [(e.type, e.job_id, e.data) for e in await sqlite.events(eid)]
            p_events = [(e.type, e.job_id, e.data) for e in await pg.events(eid)]
            assert p_events == s_events
            s_hooks = [(d["event_type"], d["status"]) for d in await sqlite.list_deliveries(None, eid)]
            p_hooks = [(d["event_type"], d["status"]) for d in await pg.list_deliveries(None, eid)]
            assert sorted(p_hooks) == sorted(s_hooks)
        assert await pg.usage("default") == await sqlite.usage("default")
        assert await pg.usage("t2") == await sqlite.usage("t2")
        assert await pg.queue_stats() == await sqlite.queue_stats()
        # a spot check that the scenario did what it says, so the comparison is not of two empty things
        ex1 = await pg.get_execution("ex1")
        assert ex1 is not None and ex1["status"] == "succeeded"
        assert ex1["result"]["outputs"].keys() == {"b", "c"}
        assert ex1["cost"]["actual"] == 0.75
        ex2 = await pg.get_execution("ex2", tenant="t2")
        assert ex2 is not None and ex2["status"] == "failed" and ex2["error"] == "job 'solo' failed: bad prompt"
        assert [j["status"] for j in (await pg.get_execution("ex3") or {})["jobs"]] == ["canceled"] * 3
        hooks = [d["event_type"] for d in await pg.list_deliveries(None, "ex1")]
        assert "job.retrying" in hooks and "execution.succeeded" in hooks and "execution.failed" in hooks
        assert await pg.owns_artifact("default", "art/a.mp4") and not await pg.owns_artifact("t2", "art/a.mp4")
    finally:
        await sqlite.close()


# ---------------------------------------------------------------------- reading


async def test_list_pages_with_cursors_filters_and_tenants(pg: PostgresStore) -> None:
    for i in range(5):
        await pg.create_execution(chain(f"a{i}", tenant="acme"))
    await pg.create_execution(chain("b0", tenant="bolt"))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await pg.list_executions("acme", limit=2, cursor=cursor)
        seen += [e["id"] for e in page]
        pages += 1
        if cursor is None:
            break
    assert seen == ["a4", "a3", "a2", "a1", "a0"] and pages == 3
    everyone, nxt = await pg.list_executions(None, limit=50)
    assert len(everyone) == 6 and nxt is None
    assert [e["id"] for e in (await pg.list_executions("bolt"))[0]] == ["b0"]
    assert (await pg.list_executions("acme", status="running"))[0] == []
    assert len((await pg.list_executions("acme", status="queued"))[0]) == 5
    with pytest.raises(BadCursor):
        await pg.list_executions("acme", cursor="not-a-cursor")
    assert await pg.get_execution("a1", tenant="bolt") is None
    assert await pg.get_execution("nope") is None
    assert await pg.execution_plan("a1", tenant="acme") == {"jobs": ["a", "b", "c"], "options": {"x": 1}}
    assert await pg.execution_plan("a1", tenant="bolt") is None
    state = await pg.get_execution("a1")
    assert state is not None and state["options"] == {"x": 1}
    assert [j["status"] for j in state["jobs"]] == ["queued", "waiting", "queued"]
    events = await pg.events("a1")
    assert [e.type for e in events] == ["execution.created"] and events[0].data == {"status": "queued", "jobs": 3}
    assert await pg.events("a1", after=events[0].seq) == []


# ---------------------------------------------------------------------- lifecycle


async def test_cancel_and_resume_refuse_what_they_cannot_do(pg: PostgresStore) -> None:
    await pg.create_execution(chain("ex"))
    with pytest.raises(NotFound):
        await pg.cancel_execution("missing")
    with pytest.raises(NotFound):
        await pg.cancel_execution("ex", tenant="other")
    with pytest.raises(Conflict, match="only a finished execution"):
        await pg.resume_execution("ex")
    state = await pg.cancel_execution("ex")
    assert state["status"] == "canceled" and state["error"] == "canceled by request"
    with pytest.raises(Conflict, match="already canceled"):
        await pg.cancel_execution("ex")
    resumed = await pg.resume_execution("ex")
    assert resumed["status"] == "queued"
    assert [j["status"] for j in resumed["jobs"]] == ["queued", "waiting", "queued"]
    claimed = await pg.claim("w", 10, 30)
    assert sorted(c.key for c in claimed) == ["a", "c"]


async def test_resume_of_a_succeeded_execution_is_a_conflict(pg: PostgresStore) -> None:
    await pg.create_execution(execution("ok", [job("x")]))
    [c] = await pg.claim("w", 5, 30)
    await pg.finish_jobs([JobOutcome(c.id, "w", "succeeded", result={"u": 1})])
    with pytest.raises(Conflict, match="nothing to resume"):
        await pg.resume_execution("ok")


async def test_leases_expire_requeue_then_fail_and_release_gives_attempts_back(pg: PostgresStore) -> None:
    await pg.create_execution(
        execution("ex", [job("once", max_attempts=1), job("twice", max_attempts=2)], on_failure="continue")
    )
    await pg.create_execution(execution("gone", [job("remote")]))
    claimed = {c.key: c for c in await pg.claim("w", 10, 0.05)}
    await pg.set_provider_ids([(claimed["remote"].id, "w", "remote-1")])
    await pg.cancel_execution("gone")  # canceled while running: its remote work may still run
    await asyncio.sleep(0.1)
    orphans = await pg.recover_expired()
    assert [(o.job_id, o.provider, o.provider_job_id) for o in orphans] == [(claimed["remote"].id, "sim", "remote-1")]
    state = await pg.get_execution("ex")
    assert state is not None
    by_key = {j["id"]: j for j in state["jobs"]}
    assert by_key["twice"]["status"] == "queued"
    assert by_key["once"]["status"] == "failed" and "lease expired" in by_key["once"]["error"]
    types = [e.type for e in await pg.events("ex")]
    assert "job.requeued" in types and "job.failed" in types
    assert await pg.recover_expired() == []
    [again] = await pg.claim("w2", 10, 30)
    assert again.key == "twice" and again.attempts == 2
    assert await pg.heartbeat("w2", 30) == {again.id}
    assert await pg.heartbeat("w", 30) == set()
    await pg.release_jobs("w2", [again.id])
    assert [e.type for e in await pg.events("ex")][-1] == "job.released"
    [third] = await pg.claim("w3", 10, 30)
    assert third.attempts == 2  # the released attempt was not counted


async def test_workers_register_and_count(pg: PostgresStore) -> None:
    await pg.register_worker("w1", {"pid": 1})
    await pg.register_worker("w1", {"pid": 2})
    await pg.register_worker("w2", {})
    assert await pg.live_workers(10) == 2
    await pg.unregister_worker("w1")
    assert await pg.live_workers(10) == 1


# ---------------------------------------------------------------------- idempotency and usage


async def test_idempotency_key_returns_the_first_execution_or_conflicts(pg: PostgresStore) -> None:
    first = await pg.create_execution(chain("e1", idempotency_key="k", request_hash="h1"))
    assert await pg.create_execution(chain("e2", idempotency_key="k", request_hash="h1")) == first
    with pytest.raises(IdempotencyConflict):
        await pg.create_execution(chain("e3", idempotency_key="k", request_hash="h2"))
    assert await pg.create_execution(chain("e4", tenant="other", idempotency_key="k", request_hash="h2")) == "e4"
    assert len((await pg.list_executions(None))[0]) == 2


async def test_concurrent_submissions_with_one_key_make_one_execution(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(3)]
    try:
        await stores[0].migrate()
        ids = await asyncio.gather(
            *(
                stores[i % 3].create_execution(chain(f"c{i}", idempotency_key="same", request_hash="h"))
                for i in range(6)
            )
        )
        assert len(set(ids)) == 1
        assert len((await stores[0].list_executions(None))[0]) == 1
    finally:
        for s in stores:
            await s.close()


async def test_usage_limits_refuse_with_the_limit_named_even_when_submitted_concurrently(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(3)]
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


async def test_a_paid_job_past_the_monthly_budget_is_handed_out_with_a_refusal(pg: PostgresStore) -> None:
    pg.configure_limits(budgets={"acme": 1.0})
    await pg.create_execution(
        execution("ex", [job("one", cost=0.6), job("two", cost=0.6), job("free")], tenant="acme", cost_estimated=1.2)
    )
    claimed = {c.key: c for c in await pg.claim("w", 10, 30)}
    assert claimed["one"].refusal is None and claimed["free"].refusal is None
    assert claimed["two"].refusal is not None and "monthly_cost_usd budget of $1.00" in claimed["two"].refusal
    usage = await pg.usage("acme")
    assert usage["reserved_usd"] == 1.2 and usage["cost_usd"] == 0


# ---------------------------------------------------------------------- claims: caps and fairness


async def test_two_concurrent_claimers_never_pass_a_provider_or_model_cap(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
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
            peak_sim = max(peak_sim, await running_count(pg_url, "sim"))
            peak_other = max(peak_other, await running_count(pg_url, "other"))
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


async def test_racing_claimers_take_each_job_once_and_hold_the_cap(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(4)]
    try:
        await stores[0].migrate()
        for s in stores:
            s.configure_limits(provider_caps={"sim": 4})
        await stores[0].create_execution(execution("ex", [job(f"j{i}") for i in range(40)]))
        taken = await asyncio.gather(*(s.claim(f"w{i}", 10, 30) for i, s in enumerate(stores)))
        ids = [c.id for cl in taken for c in cl]
        assert len(ids) == len(set(ids)) == 4
        assert await running_count(pg_url) == 4
        uncapped = [PostgresStore(pg_url) for _ in range(4)]
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


async def test_tenants_take_turns_and_priority_orders_within_a_tenant(pg: PostgresStore) -> None:
    await pg.create_execution(execution("big", [job(f"b{i}") for i in range(10)], tenant="acme"))
    await pg.create_execution(execution("small", [job("s0")], tenant="zeta"))
    first = await pg.claim("w", 2, 30)
    assert sorted(c.tenant for c in first) == ["acme", "zeta"]
    await pg.create_execution(execution("low", [job("l0")], tenant="mid", priority=0))
    await pg.create_execution(execution("high", [job("h0")], tenant="mid", priority=5))
    # round robin: the next claim starts after the tenant served first last time
    nxt = await pg.claim("w", 1, 30)
    assert [(c.tenant, c.key) for c in nxt] == [("mid", "h0")]
    nxt = await pg.claim("w", 1, 30)
    assert [c.tenant for c in nxt] == ["acme"]
    assert [c.key for c in await pg.claim("w", 1, 30)] == ["l0"]


async def test_jobs_waiting_for_a_retry_time_are_not_claimed_early(pg: PostgresStore) -> None:
    await pg.create_execution(execution("ex", [job("x")]))
    [c] = await pg.claim("w", 1, 30)
    await pg.finish_jobs([JobOutcome(c.id, "w", "retry", error="later", retry_at=time.time() + 0.3)])
    assert await pg.claim("w", 1, 30) == []
    wake = await pg.next_wakeup()
    assert wake is not None and wake > time.time()
    await asyncio.sleep(0.35)
    [again] = await pg.claim("w", 1, 30)
    assert again.attempts == 2
    retry_events = [e for e in await pg.events("ex") if e.type == "job.retrying"]
    assert retry_events[0].data["error"] == "later" and 0 < retry_events[0].data["retry_in_s"] <= 0.3


# ---------------------------------------------------------------------- tenants, keys, deliveries


async def test_tenants_and_api_keys(pg: PostgresStore) -> None:
    secret = await pg.ensure_tenant("acme")
    assert secret.startswith("whsec_") and await pg.ensure_tenant("acme") == secret
    await pg.add_api_key(ApiKey("k1", "acme", "hash1", 100.0))
    await pg.add_api_key(ApiKey("k2", "newco", "hash2", 200.0))  # creates the tenant
    assert await pg.get_api_key("k1") == ApiKey("k1", "acme", "hash1", 100.0, None)
    assert await pg.get_api_key("nope") is None
    assert [k.id for k in await pg.list_api_keys()] == ["k1", "k2"]
    assert [k.id for k in await pg.list_api_keys("newco")] == ["k2"]
    assert await pg.revoke_api_key("k1") is True
    assert await pg.revoke_api_key("k1") is False
    revoked = await pg.get_api_key("k1")
    assert revoked is not None and revoked.revoked_at is not None
    assert (await pg.ensure_tenant("newco")).startswith("whsec_")


async def test_deliveries_are_leased_once_recorded_and_redelivered(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
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
        [view] = await a.list_deliveries("acme", "ex")
        assert view["status"] == "pending" and view["next_attempt_at"] is not None
        assert [(x["attempt"], x["status_code"], x["error"]) for x in view["attempts"]] == [(1, 500, "HTTP 500")]
        assert await a.claim_deliveries("dc", 10, 30) == []  # not due yet
        with pytest.raises(NotFound):
            await a.redeliver(d.id, "other-tenant")
        again = await a.redeliver(d.id, "acme")
        assert again["status"] == "pending"
        [d2] = await b.claim_deliveries("dd", 10, 30)
        await b.record_delivery_attempt(
            d2.id, "dd", delivered=True, status_code=204, latency_ms=3.0, error=None, next_attempt_at=None
        )
        [final] = await b.list_deliveries(None)
        assert final["status"] == "delivered" and len(final["attempts"]) == 2 and final["delivered_at"]
        assert await a.list_deliveries("other-tenant") == []
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------------- cache, pace, wake marks


async def test_cache_lookup_finds_the_latest_result_of_the_tenant(pg: PostgresStore) -> None:
    await pg.create_execution(execution("e1", [job("x"), job("y")], tenant="acme"))
    claimed = {c.key: c for c in await pg.claim("w", 5, 30)}
    await pg.finish_jobs([JobOutcome(claimed["x"].id, "w", "succeeded", result={"url": "old"}, cache_key="K")])
    await asyncio.sleep(0.01)
    await pg.finish_jobs([JobOutcome(claimed["y"].id, "w", "succeeded", result={"url": "new"}, cache_key="K")])
    hit = await pg.cache_lookup("acme", "K")
    assert hit == {"url": "new", "cached_from": {"execution_id": "e1", "job": "y"}}
    assert await pg.cache_lookup("other", "K") is None
    assert await pg.cache_lookup("acme", "missing") is None
    many = await pg.cache_lookup_many([("acme", "K"), ("acme", "missing"), ("acme", "K")])
    assert list(many) == [("acme", "K")]
    assert await pg.cache_lookup_many([]) == {}


async def test_cache_hits_are_counted_in_usage(pg: PostgresStore) -> None:
    await pg.create_execution(execution("e1", [job("x")]))
    [c] = await pg.claim("w", 5, 30)
    cached = {"url": "u", "cached_from": {"execution_id": "e0", "job": "x"}}
    await pg.finish_jobs([JobOutcome(c.id, "w", "succeeded", result=cached, cache_hit=True)])
    assert [e.type for e in await pg.events("e1")][-3:-1] == ["job.cache_hit", "job.succeeded"]
    usage = await pg.usage("default")
    assert usage["cache_hits"] == 1 and usage["jobs_succeeded"] == 1


async def test_the_shared_token_bucket_paces_and_a_429_holds_everyone(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
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


async def test_callbacks_wake_marks(pg: PostgresStore) -> None:
    await pg.create_execution(execution("ex", [job("x", provider="fal"), job("y", provider="fal")]))
    claimed = {c.key: c for c in await pg.claim("w", 5, 30)}
    await pg.set_provider_ids([(claimed["x"].id, "w", "owner/app/req-1")])
    assert await pg.wake_job("fal", "req-1", "ex", "x") == "woken"
    assert await pg.wake_job("fal", "req-2", "ex", "x") == "mismatch"
    assert await pg.wake_job("fal", "anything", "ex", "y") == "woken"  # no id stored yet: matches
    assert await pg.wake_job("fal", "zzz") == "unknown"
    assert await pg.wake_job("replicate", "req-1", "ex", "x") == "unknown"
    assert await pg.woken_for("w") == sorted([claimed["x"].id, claimed["y"].id])
    assert await pg.woken_for("w") == []
    await pg.set_provider_ids([(claimed["y"].id, "w", "req-9")])
    assert await pg.wake_job("fal", "req-9") == "woken"
    await pg.finish_jobs([JobOutcome(claimed["y"].id, "w", "succeeded", result={})])
    assert await pg.wake_job("fal", "req-9") == "ignored"
    assert await pg.woken_for("w") == []  # no longer leased to w


# ---------------------------------------------------------------------- LISTEN / NOTIFY


async def test_wait_for_work_wakes_within_100ms_of_a_claimable_job_from_another_store(pg_url: str) -> None:
    listener, writer = PostgresStore(pg_url), PostgresStore(pg_url)
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


async def test_the_listen_connection_comes_back_after_pg_terminate_backend(pg_url: str) -> None:
    listener, writer = PostgresStore(pg_url, listen_check_s=0.2), PostgresStore(pg_url)
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


async def test_release_resume_and_recovery_notify(pg_url: str) -> None:
    listener, writer = PostgresStore(pg_url), PostgresStore(pg_url)
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


# ---------------------------------------------------------------------- the engine on PostgreSQL


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str) -> Settings:
    return fast_settings(tmp_path, pg_url)


@contextlib.asynccontextmanager
async def worker_on(store: PostgresStore, settings: Settings) -> AsyncIterator[Worker]:
    w = Worker(store, settings=settings, providers=Providers({"sim": SimProvider()}))
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        w.stop()
        await asyncio.wait_for(task, timeout=30)


async def test_engine_and_worker_run_a_plan_with_a_dependency_to_success(pg_settings: Settings) -> None:
    store = PostgresStore(pg_settings.database_url)
    engine = Engine(store, pg_settings)
    try:
        plan = {
            "jobs": [
                sim_job("a", latency_s=0.05),
                sim_job("b", latency_s=0.05, depends_on=["a"], echo="$a.sim_id"),
                sim_job("c", latency_s=0.05, fail_times=1),
            ]
        }
        eid = await engine.submit(plan)
        async with worker_on(store, pg_settings):
            state = await engine.wait(eid, timeout=20, poll_s=0.05)
        assert state["status"] == "succeeded", state
        jobs = {j["id"]: j for j in state["jobs"]}
        assert jobs["b"]["result"]["echo"] == jobs["a"]["result"]["sim_id"]
        assert jobs["c"]["attempts"] == 2
        assert jobs["b"]["started_at"] >= jobs["a"]["finished_at"]
        types = [e.type for e in await store.events(eid)]
        assert types[0] == "execution.created" and types[-1] == "execution.succeeded"
        assert types.count("job.retrying") == 1
    finally:
        await store.close()


async def test_two_workers_on_two_stores_run_every_job_exactly_once(pg_settings: Settings) -> None:
    s1, s2 = PostgresStore(pg_settings.database_url), PostgresStore(pg_settings.database_url)
    engine = Engine(s1, pg_settings)
    try:
        eid = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=0.02) for i in range(30)]})
        async with worker_on(s1, pg_settings), worker_on(s2, pg_settings):
            state = await engine.wait(eid, timeout=30, poll_s=0.05)
        assert state["status"] == "succeeded"
        running = [e for e in await s1.events(eid) if e.type == "job.running"]
        assert len(running) == 30 and len({e.job_id for e in running}) == 30
        assert all(j["attempts"] == 1 for j in state["jobs"])
    finally:
        await s1.close()
        await s2.close()


async def test_cancel_racing_many_finishes_ends_consistently(pg_url: str) -> None:
    # Finishing locks job rows and then the execution; cancel locks the execution and then its jobs. Crossed
    # like this they can deadlock: PostgreSQL aborts one side, the store retries it, and nothing is lost.
    stores = [PostgresStore(pg_url, max_connections=3) for _ in range(4)]
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
            statuses = Counter(j["status"] for j in state["jobs"])
            assert set(statuses) <= {"succeeded", "canceled"} and sum(statuses.values()) == 60
            events = await stores[0].events(eid)
            ends = [e.type for e in events if e.type in ("execution.succeeded", "execution.canceled")]
            assert len(ends) == 1 and state["status"] == ends[0].split(".")[1]
            per_job = Counter(e.job_id for e in events if e.type in ("job.succeeded", "job.canceled"))
            assert set(per_job.values()) == {1}  # every job ended once, one way or the other
    finally:
        for s in stores:
            await s.close()
