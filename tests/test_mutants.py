"""Tests written to kill one-line mutations that every other test let through (issue 14): a fan-in job
promoted after only one of its dependencies, the monthly budget not summed within one claim batch, the result
cache shared across tenants, and the provider rate gate holding 1 s where the provider asked for 10 s.

They drive the store directly (submit, claim, finish) so the exact moment a job becomes claimable is visible,
and run on both stores. `bench/mutate.py` applies these mutations (and others) and checks each is caught."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from conftest import sim_job
from reelflow.engine.scheduler import Engine
from reelflow.providers import http as http_mod
from reelflow.providers.http import RateGate, retry_after
from reelflow.store.base import ClaimedJob, JobOutcome
from reelflow.store.sqlite import SQLiteStore

OWNER = "mutant-worker"


async def job_columns(store: SQLiteStore, execution_id: str, key: str) -> dict[str, Any]:
    """The job's status and deps_left straight from its row: the public views do not show deps_left."""
    sql = "SELECT status, deps_left FROM jobs WHERE execution_id = {p} AND key = {p}"
    if store.url.startswith("sqlite"):
        conn = store._connect()
        row = conn.execute(sql.format(p="?"), (execution_id, key)).fetchone()
        return {"status": row[0], "deps_left": row[1]}
    import psycopg

    async with await psycopg.AsyncConnection.connect(store.url, autocommit=True) as pg:
        cur = await pg.execute(sql.format(p="%s"), (execution_id, key))
        got = await cur.fetchone()
        assert got is not None
        return {"status": got[0], "deps_left": got[1]}


async def claim_all(store: SQLiteStore) -> dict[str, ClaimedJob]:
    return {c.key: c for c in await store.claim(OWNER, 50, 60.0)}


def succeeded(c: ClaimedJob, **extra: Any) -> JobOutcome:
    return JobOutcome(c.id, OWNER, "succeeded", result={"url": f"file:///{c.key}"}, cost_usd=0.0, seq=c.seq, **extra)


# ---------------------------------------------------------------------------------------------- fan-in


async def test_a_fan_in_job_is_queued_only_after_its_last_dependency_in_another_batch(
    engine: Engine, store: SQLiteStore
) -> None:
    """Dependencies finishing in separate flushes: one down leaves the join waiting (deps_left 1, not
    claimable); the second queues it (deps_left 0) and only then can it be claimed."""
    eid = await engine.submit(
        {"jobs": [sim_job("a"), sim_job("b"), sim_job("c"), sim_job("join", depends_on=["a", "b", "c"])]}
    )
    assert await job_columns(store, eid, "join") == {"status": "waiting", "deps_left": 3}
    first = await claim_all(store)
    assert set(first) == {"a", "b", "c"}
    await store.finish_jobs([succeeded(first["a"])])
    assert await job_columns(store, eid, "join") == {"status": "waiting", "deps_left": 2}
    assert await claim_all(store) == {}
    await store.finish_jobs([succeeded(first["b"])])
    assert await job_columns(store, eid, "join") == {"status": "waiting", "deps_left": 1}
    assert await claim_all(store) == {}  # not started before the last dependency
    await store.finish_jobs([succeeded(first["c"])])
    assert await job_columns(store, eid, "join") == {"status": "queued", "deps_left": 0}
    assert set(await claim_all(store)) == {"join"}


async def test_a_fan_in_job_counts_every_dependency_finishing_in_one_batch(engine: Engine, store: SQLiteStore) -> None:
    """Two of three dependencies finishing in the same flush take deps_left from 3 to 1, not to 0 nor to 2;
    the join is claimable only once the third has succeeded as well."""
    eid = await engine.submit(
        {"jobs": [sim_job("a"), sim_job("b"), sim_job("c"), sim_job("join", depends_on=["a", "b", "c"])]}
    )
    first = await claim_all(store)
    await store.finish_jobs([succeeded(first["a"]), succeeded(first["b"])])
    assert await job_columns(store, eid, "join") == {"status": "waiting", "deps_left": 1}
    assert await claim_all(store) == {}
    await store.finish_jobs([succeeded(first["c"])])
    assert await job_columns(store, eid, "join") == {"status": "queued", "deps_left": 0}
    assert set(await claim_all(store)) == {"join"}


async def test_a_two_way_join_waits_for_its_second_dependency(engine: Engine, store: SQLiteStore) -> None:
    """The plain two-dependency join, first in different flushes, then (another execution) in one flush."""
    apart = await engine.submit({"jobs": [sim_job("a"), sim_job("b"), sim_job("join", depends_on=["a", "b"])]})
    first = await claim_all(store)
    await store.finish_jobs([succeeded(first["a"])])
    assert await job_columns(store, apart, "join") == {"status": "waiting", "deps_left": 1}
    assert await claim_all(store) == {}
    await store.finish_jobs([succeeded(first["b"])])
    assert await job_columns(store, apart, "join") == {"status": "queued", "deps_left": 0}
    assert set(await claim_all(store)) == {"join"}

    together = await engine.submit({"jobs": [sim_job("a"), sim_job("b"), sim_job("join", depends_on=["a", "b"])]})
    second = await claim_all(store)
    assert set(second) == {"a", "b"}
    await store.finish_jobs([succeeded(second["a"]), succeeded(second["b"])])
    assert await job_columns(store, together, "join") == {"status": "queued", "deps_left": 0}
    assert set(await claim_all(store)) == {"join"}


# ---------------------------------------------------------------------------------------------- budget


async def test_a_claim_batch_of_paid_jobs_runs_only_those_that_fit_the_monthly_budget(
    engine: Engine, store: SQLiteStore
) -> None:
    """Five $0.40 jobs claimed at once against a $1.00 budget with $0.10 already spent: two fit (0.90), the
    other three are refused in that same claim, each naming the budget; another tenant is not affected."""
    store.configure_limits(budgets={"acme": 1.0}, default_budget=None)
    earlier = await engine.submit({"jobs": [sim_job("paid", cost_usd=0.1)]}, tenant="acme")
    (c,) = (await claim_all(store)).values()
    await store.finish_jobs([JobOutcome(c.id, OWNER, "succeeded", result={}, cost_usd=0.1, seq=c.seq)])
    assert (state := await store.get_execution(earlier)) is not None and state.status == "succeeded"

    await engine.submit({"jobs": [sim_job(f"j{i}", cost_usd=0.4) for i in range(5)]}, tenant="acme")
    await engine.submit({"jobs": [sim_job(f"o{i}", cost_usd=0.4) for i in range(3)]}, tenant="other")
    claimed = await store.claim(OWNER, 50, 60.0)
    assert len(claimed) == 8  # one batch
    mine = [c for c in claimed if c.tenant == "acme"]
    fits = [c for c in mine if c.refusal is None]
    refused = [c for c in mine if c.refusal is not None]
    assert len(fits) == 2 and len(refused) == 3
    assert sum(c.cost_estimated for c in fits) == pytest.approx(0.8)
    assert all("monthly_cost_usd budget of $1.00" in (c.refusal or "") for c in refused)
    assert all(c.refusal is None for c in claimed if c.tenant == "other")


# ---------------------------------------------------------------------------------------------- cache


async def test_a_cached_result_serves_its_own_tenant_only(engine: Engine, store: SQLiteStore) -> None:
    """Tenant A's finished job is found under A's cache key, never under B's identical key."""
    await engine.submit({"jobs": [sim_job("still", "sim/image", seed=7)]}, tenant="a")
    (c,) = (await claim_all(store)).values()
    await store.finish_jobs([succeeded(c, cache_key="same-canonical-form")])
    found = await store.cache_lookup_many([("a", "same-canonical-form"), ("b", "same-canonical-form")])
    assert set(found) == {("a", "same-canonical-form")}
    assert found[("a", "same-canonical-form")]["url"] == "file:///still"
    assert await store.cache_lookup("b", "same-canonical-form") is None
    assert (await store.cache_lookup("a", "same-canonical-form") or {})["cached_from"]["job"] == "still"


async def test_tenant_b_runs_its_identical_job_while_tenant_a_reuses_its_own(
    engine: Engine, store: SQLiteStore, running_worker: Any
) -> None:
    """End to end through a worker: A's second identical plan is a cache hit at no cost; B's is run and paid."""
    plan = {"jobs": [sim_job("still", "sim/image", seed=7, cost_usd=0.25, latency_s=0.02)]}
    async with running_worker():
        a1 = await engine.wait(await engine.submit(plan, tenant="a"), timeout=20)
        a2 = await engine.wait(await engine.submit(plan, tenant="a"), timeout=20)
        b1 = await engine.wait(await engine.submit(plan, tenant="b"), timeout=20)
    assert [j["cache_hit"] for j in a1["jobs"]] == [False] and a1["cost"]["actual"] == pytest.approx(0.25)
    assert [j["cache_hit"] for j in a2["jobs"]] == [True] and a2["cost"]["actual"] == 0.0
    assert [j["cache_hit"] for j in b1["jobs"]] == [False] and b1["cost"]["actual"] == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------- rate gate


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_reads_ten_seconds_as_ten() -> None:
    answer = httpx.Response(429, headers={"retry-after": "10"})
    assert retry_after(answer) == 10.0
    assert retry_after(httpx.Response(429, headers={"retry-after": "7200"})) == http_mod.MAX_RETRY_AFTER_S
    assert retry_after(httpx.Response(429)) is None


async def test_a_ten_second_retry_after_holds_every_request_for_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a 429 with Retry-After: 10 the next request waits 10 s (not the 1 s used when none is given)."""
    clock = Clock()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    gate = RateGate(clock=clock)
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)  # the gate sleeps through the asyncio module
    await gate.acquire()
    assert slept == []  # unthrottled: no wait
    gate.on_throttled(retry_after(httpx.Response(429, headers={"retry-after": "10"})))
    assert gate.hold_until - clock.now == pytest.approx(10.0)
    clock.now += 3.0  # a request 3 s later still waits the remaining 7 s
    await gate.acquire()
    assert slept == [pytest.approx(7.0)]
    assert clock.now == pytest.approx(1010.0)

    quiet = RateGate(clock=clock)
    quiet.on_throttled(None)  # no Retry-After: 1 s
    assert quiet.hold_until - clock.now == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- leases


async def test_an_outcome_of_an_earlier_attempt_of_the_same_owner_is_ignored(
    engine: Engine, store: SQLiteStore
) -> None:
    """The same worker handed a job back and claimed it again: the first attempt's late success (its lease
    number) must not finish the second attempt, which still runs; the second's own success does."""
    eid = await engine.submit({"jobs": [sim_job("a")]})
    (old,) = (await claim_all(store)).values()
    await store.release_jobs(OWNER, [old.id])
    (new,) = (await claim_all(store)).values()
    assert new.id == old.id and new.seq != old.seq
    await store.finish_jobs([succeeded(old)])
    assert (await job_columns(store, eid, "a"))["status"] == "running"
    await store.finish_jobs([succeeded(new)])
    assert (await job_columns(store, eid, "a"))["status"] == "succeeded"


async def test_an_expired_lease_requeues_a_job_with_attempts_left_and_fails_one_without(
    engine: Engine, store: SQLiteStore
) -> None:
    """A lease that expires on the last allowed attempt fails the job; with an attempt left it is queued again."""
    last = await engine.submit({"jobs": [sim_job("last", max_attempts=1)]})
    spare = await engine.submit({"jobs": [sim_job("spare", max_attempts=2)]})
    claimed = {c.key: c for c in await store.claim(OWNER, 50, 0.01)}
    assert {k: c.attempts for k, c in claimed.items()} == {"last": 1, "spare": 1}
    await asyncio.sleep(0.05)
    await store.recover_expired()
    assert (await job_columns(store, last, "last"))["status"] == "failed"
    assert (await job_columns(store, spare, "spare"))["status"] == "queued"
    again = await claim_all(store)
    assert set(again) == {"spare"} and again["spare"].attempts == 2


# ---------------------------------------------------------------------------------------------- intent


async def test_an_unsettled_retry_keeps_the_attempts_intent_and_a_settled_one_drops_it(
    engine: Engine, store: SQLiteStore
) -> None:
    """A retry that cannot tell whether the provider took paid work keeps the first attempt's intent (so the
    next attempt reconciles before paying); a settled retry clears it and the next attempt records its own."""
    await engine.submit({"jobs": [sim_job("lost"), sim_job("clear")]})
    first = await claim_all(store)
    assert all(c.intent_seq == c.seq for c in first.values())
    await store.finish_jobs(
        [
            JobOutcome(first["lost"].id, OWNER, "retry", error="answer lost", seq=first["lost"].seq, settled=False),
            JobOutcome(first["clear"].id, OWNER, "retry", error="refused", seq=first["clear"].seq, settled=True),
        ]
    )
    second = await claim_all(store)
    assert set(second) == {"lost", "clear"}
    assert second["lost"].intent_seq == first["lost"].seq != second["lost"].seq
    assert second["lost"].intent_at == first["lost"].intent_at
    assert second["clear"].intent_seq == second["clear"].seq != first["clear"].seq
