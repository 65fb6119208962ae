"""The parts of the Store interface the worker calls without asking whether they exist: `finish_and_claim`
(the hand-off from a job to the dependents it releases) and `wait_for_work`, the same on both stores."""

from __future__ import annotations

import asyncio
import time

from conftest import sim_job
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.store import open_store
from reelflow.store.base import JobOutcome
from reelflow.store.sqlite import SQLiteStore


async def test_finish_and_claim_hands_off_only_the_dependents_it_released(engine: Engine, store: SQLiteStore) -> None:
    store.configure_limits(provider_caps={"capped": 5})
    plan = {"jobs": [sim_job("root"), *(sim_job(f"d{i}", depends_on=["root"]) for i in range(4))]}
    eid = await engine.submit(plan)
    other = await engine.submit({"jobs": [sim_job("x")]})
    [root] = await store.claim("w", 1, 30)
    assert root.key == "root" and root.execution_id == eid

    promoted, claimed = await store.finish_and_claim(
        [JobOutcome(root.id, "w", "succeeded", result={"url": "r"})], None, "w", 3, 30
    )
    assert sorted(promoted) == ["d0", "d1", "d2", "d3"]
    assert len(claimed) == 3 and all(c.execution_id == eid and c.key.startswith("d") for c in claimed)
    assert all(c.dep_results == {"root": {"url": "r"}} and c.attempts == 1 for c in claimed)
    state = await engine.get(eid)
    assert sorted(j.status for j in state.jobs) == ["queued", "running", "running", "running", "succeeded"]
    assert [j.status for j in (await engine.get(other)).jobs] == ["queued"]  # not the hand-off's to take

    # nothing to finish: nothing written, nothing claimed
    assert await store.finish_and_claim([], None, "w", 5, 30) == ([], [])
    # an outcome for a lease this worker no longer holds changes nothing
    stale = JobOutcome(root.id, "w", "failed", error="late")
    assert await store.finish_and_claim([stale], None, "w", 5, 30) == ([], [])


async def test_finish_and_claim_counts_down_a_fan_in_and_leases_what_it_released(
    engine: Engine, store: SQLiteStore
) -> None:
    """A finish counts every dependent down, leases the ones it released (on PostgreSQL in the count-down's own
    row version), and says so in the events: job.queued, then job.running."""
    plan = {"jobs": [sim_job("a"), sim_job("b"), sim_job("c", depends_on=["a", "b"]), sim_job("d", depends_on=["a"]),
                     sim_job("e", depends_on=["a"])]}  # fmt: skip
    eid = await engine.submit(plan)
    held = {c.key: c for c in await store.claim("w", 5, 30)}
    assert sorted(held) == ["a", "b"]
    promoted, claimed = await store.finish_and_claim(
        [JobOutcome(held["a"].id, "w", "succeeded", result={"url": "a"})], None, "w", 1, 30
    )
    assert sorted(promoted) == ["d", "e"] and len(claimed) == 1  # room for one: the other is left queued
    [mine] = claimed
    assert mine.dep_results == {"a": {"url": "a"}} and mine.attempts == 1 and mine.seq == 1
    jobs = {j.id: j for j in (await engine.get(eid)).jobs}
    other = "e" if mine.key == "d" else "d"
    assert (jobs["c"].status, jobs[mine.key].status, jobs[other].status) == ("waiting", "running", "queued")
    assert jobs[mine.key].started_at is not None and jobs[other].started_at is None
    assert [e.type for e in await store.events(eid) if e.job_key == mine.key] == ["job.queued", "job.running"]
    # the fan-in's last dependency, finished without a hand-off: c is queued for the claims
    assert await store.finish_jobs([JobOutcome(held["b"].id, "w", "succeeded", result={"url": "b"})]) == ["c"]
    rest = {c.key: c for c in await store.claim("w", 5, 30)}
    assert sorted(rest) == sorted(["c", other])
    assert rest["c"].dep_results == {"a": {"url": "a"}, "b": {"url": "b"}}


async def test_claimed_jobs_carry_their_own_execution_s_deadline(engine: Engine, store: SQLiteStore) -> None:
    """Each job of a claim, and of a hand-off, gets the deadline of its own execution (None without one)."""
    t0 = time.time()
    timed = await engine.submit({"jobs": [sim_job("a"), sim_job("b", depends_on=["a"])], "options": {"timeout_s": 600}})
    endless = await engine.submit({"jobs": [sim_job("x"), sim_job("y", depends_on=["x"])]})
    held = {c.execution_id: c for c in await store.claim("w", 5, 30)}
    assert sorted(c.key for c in held.values()) == ["a", "x"]
    deadline = held[timed].execution_deadline
    assert deadline is not None and t0 + 600 <= deadline <= time.time() + 600
    assert held[endless].execution_deadline is None
    outcomes = [JobOutcome(c.id, "w", "succeeded", result={"url": c.key}) for c in held.values()]
    _, claimed = await store.finish_and_claim(outcomes, None, "w", 5, 30)
    assert {c.key: c.execution_deadline for c in claimed} == {"b": deadline, "y": None}


async def test_finish_and_claim_stays_within_the_tenant_cap(engine: Engine, store: SQLiteStore) -> None:
    store.configure_limits(tenant_caps={"t": 2})
    plan = {"jobs": [sim_job("root"), *(sim_job(f"d{i}", depends_on=["root"]) for i in range(4))]}
    eid = await engine.submit(plan, tenant="t")
    await engine.submit({"jobs": [sim_job("x")]}, tenant="t")
    held = {c.key: c for c in await store.claim("w", 5, 30)}
    assert sorted(held) == ["root", "x"]  # 2 of 2
    promoted, claimed = await store.finish_and_claim(
        [JobOutcome(held["root"].id, "w", "succeeded", result={})], None, "w", 5, 30
    )
    assert len(promoted) == 4 and len(claimed) == 1  # the root's place only: x still runs
    assert (await store.usage("t"))["jobs_running"] == 2
    assert sum(j.status == "queued" for j in (await engine.get(eid)).jobs) == 3


async def test_wait_for_work_answers_a_submission_of_this_process_at_once(engine: Engine, store: SQLiteStore) -> None:
    await store.wait_for_work(0.05)  # whatever earlier writes announced
    assert await store.wait_for_work(0.1) is False  # nothing happened
    waiter = asyncio.create_task(store.wait_for_work(5))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await engine.submit({"jobs": [sim_job("a")]})
    assert await asyncio.wait_for(waiter, 5) is True
    assert time.monotonic() - started < 1.0


async def test_the_shared_token_bucket_paces_and_a_429_holds_everyone(settings: Settings) -> None:
    """Two stores on one database share each provider's bucket (the pacing rules are written once)."""
    a, b = open_store(settings.database_url), open_store(settings.database_url)
    try:
        await a.migrate()
        assert await a.take_tokens("free", 7, None) == (7, 0.0)
        granted, wait = await a.take_tokens("p", 10, 6100.0)  # 100 a second, a bucket of 100
        t_first = time.monotonic()
        assert granted == 0 and 0 < wait <= 0.011
        await asyncio.sleep(0.2)
        totals = await asyncio.gather(*(s.take_tokens("p", 100, 6100.0) for s in (a, b, a, b)))
        got = sum(g for g, _ in totals)
        assert 15 <= got <= (time.monotonic() - t_first) * 100 + 1, totals  # never more than was refilled
        await b.report_throttle("p", 0.3)
        await b.report_throttle("p", 0.1)  # a shorter hold never shortens a longer one
        granted, wait = await a.take_tokens("p", 5, 6100.0)
        assert granted == 0 and 0.2 < wait <= 0.3
        paces = await a.provider_paces()
        assert set(paces) == {"p"} and paces["p"][0] > time.time()
    finally:
        await a.close()
        await b.close()
