"""Limits across workers: concurrency caps held by two worker processes together, fair claims between
tenants, priorities within one, monthly budgets (up front, settled, mid-run), and the result cache."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory, sim_job
from fakes.replicate import FakeReplicate
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.errors import UsageLimitExceeded
from reelflow.limits import reset_limits
from reelflow.store.sqlite import SQLiteStore

CLI = [sys.executable, "-m", "reelflow.cli"]
SEEDANCE = "replicate/bytedance/seedance-1-lite"


@pytest.fixture
def limits_file(tmp_path: Path, settings: Settings) -> Iterator[Path]:
    """`settings.limits_file` points at a file the test writes; the limits cache is fresh on both sides."""
    path = tmp_path / "limits.yaml"
    path.write_text("{}\n")
    settings.limits_file = str(path)
    reset_limits()
    yield path
    reset_limits()


def video(job_key: str, prompt: str = "waves") -> dict[str, Any]:
    return {"id": job_key, "type": "generate-video", "model": SEEDANCE, "params": {"prompt": prompt, "duration": 5}}


def workers(env: dict[str, str], tmp_path: Path, n: int, *args: str) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [*CLI, "worker", *args], env=env, stdout=(tmp_path / f"w{i}.log").open("wb"), stderr=subprocess.STDOUT
        )
        for i in range(n)
    ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


# ---------------------------------------------------------------------------------------------- concurrency


def replicate_env(
    worker_env: dict[str, str], limits_file: Path, fake: FakeReplicate, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Worker processes (and this one) pointed at the Replicate fake, under the limits file."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
    return worker_env | {
        "REELFLOW_LIMITS_FILE": str(limits_file),
        "REELFLOW_REPLICATE_BASE_URL": fake.base_url,
        "REPLICATE_API_TOKEN": fake.token,
    }


async def test_two_worker_processes_never_exceed_max_concurrent_together(
    engine: Engine, worker_env: dict[str, str], tmp_path: Path, limits_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits_file.write_text("providers:\n  replicate: {max_concurrent: 3}\n")
    reset_limits()
    with FakeReplicate(latency_s=0.6, queue_s=0.0) as fake:
        env = replicate_env(worker_env, limits_file, fake, monkeypatch)
        eid = await engine.submit({"jobs": [video(f"c{i}", f"waves {i}") for i in range(12)]})
        procs = workers(env, tmp_path, 2, "--concurrency", "2")  # neither can fill the cap of 3 alone
        try:
            state = await engine.wait(eid, timeout=60)
        finally:
            stop(procs)
        assert state["status"] == "succeeded", state["error"]
        assert fake.creates == 12
        assert fake.peak_running() == 3  # reached only by the two workers together, and never passed
        # both processes took part
        owners = {e.data.get("worker") for e in await engine.store.events(eid) if e.type == "job.running"}
        assert len(owners) == 2, owners


async def test_jobs_over_a_model_cap_wait_queued_while_other_models_run(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore, limits_file: Path
) -> None:
    limits_file.write_text("models:\n  sim/video: {max_concurrent: 1}\n")
    reset_limits()
    eid = await engine.submit(
        {"jobs": [sim_job(f"v{i}", latency_s=0.4) for i in range(3)] + [sim_job("img", "sim/image", latency_s=0.1)]}
    )
    async with running_worker():
        await asyncio.sleep(0.25)
        jobs = {j.id: j.status for j in (await engine.get(eid)).jobs}
        assert sorted(jobs.values()).count("running") <= 2
        assert [jobs[f"v{i}"] for i in range(3)].count("running") == 1  # the other two wait, queued
        assert [jobs[f"v{i}"] for i in range(3)].count("queued") == 2
        assert jobs["img"] in ("running", "succeeded")  # another model is not held up by them
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded"
    spans = sorted((j["started_at"], j["finished_at"]) for j in state["jobs"] if j["id"].startswith("v"))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # one at a time


# ---------------------------------------------------------------------------------------------- fairness


async def test_one_tenants_big_batch_does_not_starve_another_tenants_single_job(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore
) -> None:
    big = []
    for b in range(10):
        big.append(
            await engine.submit(
                {"jobs": [sim_job(f"j{i}", latency_s=0.05, prompt=f"{b}-{i}") for i in range(200)]}, tenant="bulk"
            )
        )
    small = await engine.submit({"jobs": [sim_job("one", latency_s=0.05)]}, tenant="solo")
    async with running_worker(concurrency=20, batch_size=10):
        solo = await engine.wait(small, timeout=30)
        bulk_state = await engine.get(big[-1])
    assert solo["status"] == "succeeded"
    # the single job ran while the 2,000-job batch was still mostly waiting (strict FIFO would put it last)
    assert bulk_state.status in ("queued", "running")
    stats = await store.queue_stats()
    assert stats["jobs"].get("queued", 0) > 1000


async def test_priorities_order_claims_within_a_tenant(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore
) -> None:
    low = await engine.submit({"jobs": [sim_job(f"l{i}", latency_s=0.02, prompt=f"l{i}") for i in range(30)]})
    high = await engine.submit(
        {"jobs": [sim_job(f"h{i}", latency_s=0.02, prompt=f"h{i}") for i in range(5)], "options": {"priority": 10}}
    )
    async with running_worker(concurrency=1, batch_size=1):
        high_state = await engine.wait(high, timeout=30)
        low_state = await engine.wait(low, timeout=30)
    # submitted later, the higher-priority jobs all started before the earlier low ones
    last_high = max(j["started_at"] for j in high_state["jobs"])
    first_low = min(j["started_at"] for j in low_state["jobs"])
    assert last_high < first_low
    # and the low ones in their order of age
    order = [j["id"] for j in sorted(low_state["jobs"], key=lambda j: j["started_at"])]
    assert order == [f"l{i}" for i in range(30)]


# ---------------------------------------------------------------------------------------------- tenants at once


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def peak_running(jobs: list[dict[str, Any]], now: float | None = None) -> int:
    """The most of `jobs` that were running at one moment, from their start and finish times (exact, unlike
    sampling); a job still unfinished counts as running until `now`."""
    now = time.time() if now is None else now
    marks: list[tuple[float, int]] = []
    for j in jobs:
        if j["started_at"] is None:
            continue
        marks.append((_ts(j["started_at"]), 1))
        marks.append((_ts(j["finished_at"]) if j["finished_at"] else now, -1))
    peak = level = 0
    for _, step in sorted(marks):  # a finish before a start at the same instant
        level += step
        peak = max(peak, level)
    return peak


async def test_a_flooding_tenant_holds_at_most_its_cap_across_two_worker_processes_and_another_starts_at_once(
    engine: Engine, store: SQLiteStore, worker_env: dict[str, str], tmp_path: Path, limits_file: Path
) -> None:
    """Tenant `flood` queues 40 two-second jobs under `max_concurrent: 3`; two worker processes of 2 slots each
    could run 4 of them. They never run more than 3 together, and the fourth slot is there for tenant `solo`,
    whose job starts at once instead of after a flood job ends."""
    limits_file.write_text("tenants:\n  flood: {max_concurrent: 3}\n")
    reset_limits()
    flood = await engine.submit(
        {"jobs": [sim_job(f"f{i}", latency_s=2.0, prompt=f"f{i}") for i in range(40)]}, tenant="flood"
    )
    env = worker_env | {"REELFLOW_LIMITS_FILE": str(limits_file)}
    procs = workers(env, tmp_path, 2, "--concurrency", "2")  # neither can reach the cap of 3 alone
    samples: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while (await store.usage("flood"))["jobs_running"] < 3:  # the flood has its 3
            if time.monotonic() > deadline:
                logs = "\n".join((tmp_path / f"w{i}.log").read_text(errors="replace")[-2000:] for i in range(2))
                raise AssertionError(f"the flood did not reach 3 running; the workers' logs:\n{logs}")
            await asyncio.sleep(0.02)
        submitted = time.time()
        solo = await engine.submit({"jobs": [sim_job("one", latency_s=0.1)]}, tenant="solo")
        end = time.monotonic() + 3.0  # past the end of the first flood jobs: the next ones take their places
        while time.monotonic() < end:
            samples.append((await store.usage("flood"))["jobs_running"])
            await asyncio.sleep(0.03)
        solo_state = await engine.wait(solo, timeout=10)
        flood_state = (await engine.get(flood)).model_dump(mode="json")
        await engine.cancel(flood)
    finally:
        stop(procs)
    assert solo_state["status"] == "succeeded"
    started = _ts(solo_state["jobs"][0]["started_at"])
    assert started - submitted < 1.0, started - submitted  # a flood job would only free a slot ~2 s later
    assert max(samples) == 3, samples
    assert peak_running(flood_state["jobs"]) == 3  # exact: held by the two processes together, never passed
    done = [j for j in flood_state["jobs"] if j["status"] == "succeeded"]
    assert 3 <= len(done) < 40  # the flood went on under its cap, far from over
    owners = {e.data.get("worker") for e in await store.events(flood) if e.type == "job.running"}
    assert len(owners) == 2, owners  # both processes took flood jobs


async def test_the_default_tenant_entry_caps_tenants_without_their_own_and_an_own_entry_overrides_it(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore, limits_file: Path
) -> None:
    limits_file.write_text(
        "tenants:\n  default: {max_concurrent: 2}\n  vip: {max_concurrent: 4}\n  free: {max_concurrent: null}\n"
    )
    reset_limits()
    ids = {
        t: await engine.submit({"jobs": [sim_job(f"{t}{i}", latency_s=0.4) for i in range(8)]}, tenant=t)
        for t in ("anyone", "vip", "free")
    }
    async with running_worker(concurrency=50):
        deadline = time.monotonic() + 10
        while (during := await engine.usage("anyone")).jobs_running < 2:  # what GET /v1/usage shows
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        states = {t: await engine.wait(eid, timeout=20) for t, eid in ids.items()}
    assert during.jobs_running == 2 and during.limits.max_concurrent == 2
    assert all(s["status"] == "succeeded" for s in states.values())
    assert peak_running(states["anyone"]["jobs"]) == 2  # the default entry
    assert peak_running(states["vip"]["jobs"]) == 4  # its own entry, over the default
    assert peak_running(states["free"]["jobs"]) == 8  # null: no cap
    usage = await engine.usage("anyone")
    assert usage.limits.max_concurrent == 2 and usage.jobs_running == 0
    assert (await engine.usage("vip")).limits.max_concurrent == 4
    assert (await engine.usage("free")).limits.max_concurrent is None


async def test_a_fan_out_made_ready_by_a_finishing_job_starts_within_the_tenant_cap(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore, limits_file: Path
) -> None:
    """The transaction that ends the root also leases the dependents it releases (the hand-off): it must
    count the tenant's running jobs as the claim does."""
    limits_file.write_text("tenants:\n  default: {max_concurrent: 3}\n")
    reset_limits()
    handed: list[int] = []
    hand_off = store.finish_and_claim

    async def spy(*args: Any, **kw: Any) -> Any:
        promoted, claimed = await hand_off(*args, **kw)
        handed.append(len(claimed))
        return promoted, claimed

    store.finish_and_claim = spy  # type: ignore[method-assign]
    leaves = [sim_job(f"d{i}", latency_s=0.3, prompt=f"d{i}", depends_on=["root"]) for i in range(12)]
    eid = await engine.submit({"jobs": [sim_job("root", latency_s=0.05), *leaves]})
    async with running_worker(concurrency=50):
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded"
    assert peak_running(state["jobs"]) == 3
    assert sum(handed) >= 1, handed  # the hand-off took part, within the cap


@pytest.mark.postgres_only
async def test_the_postgres_hand_off_counts_the_tenant_cap_and_waits_for_its_lock_holding_no_row(
    engine: Engine, store: SQLiteStore
) -> None:
    import psycopg

    from reelflow.store.base import JobOutcome
    from reelflow.store.postgres import lock_key

    store.configure_limits(tenant_caps={"fan": 3}, default_tenant_cap=None)
    plan = {"jobs": [sim_job("root"), *(sim_job(f"d{i}", depends_on=["root"]) for i in range(10))]}
    fan = await engine.submit(plan, tenant="fan")
    await engine.submit({"jobs": [sim_job("x0"), sim_job("x1")]}, tenant="fan")
    held = await store.claim("w", 10, 30)
    assert sorted(c.key for c in held) == ["root", "x0", "x1"]  # 3 of 3
    by_key = {c.key: c for c in held}
    assert await store.claim("w", 10, 30) == []  # full

    finish = store.finish_and_claim  # type: ignore[attr-defined]
    promoted, claimed = await finish([JobOutcome(by_key["root"].id, "w", "succeeded", result={})], None, "w", 10, 30)
    assert len(promoted) == 10 and len(claimed) == 1  # the root's place only: x0 and x1 still run
    assert (await store.usage("fan"))["jobs_running"] == 3
    assert await store.claim("w", 10, 30) == []

    # a second fan-out whose root finishes while another transaction holds the tenant's lock (a claim counting
    # it): the finish commits without waiting, and the hand-off waits for the lock holding no row
    await store.finish_jobs([JobOutcome(by_key["x0"].id, "w", "succeeded", result={})])
    second = {
        "jobs": [sim_job("r2"), *(sim_job(f"e{i}", depends_on=["r2"]) for i in range(5))],
        "options": {"priority": 9},  # claimed before the first fan-out's queued leaves
    }
    fan2 = await engine.submit(second, tenant="fan")
    [r2] = await store.claim("w", 1, 30)
    assert r2.key == "r2" and (await store.usage("fan"))["jobs_running"] == 3
    async with await psycopg.AsyncConnection.connect(store.url) as other:
        await other.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("reelflow:cap:t:fan"),))
        hand_off = asyncio.create_task(finish([JobOutcome(r2.id, "w", "succeeded", result={})], None, "w", 10, 30))
        await asyncio.sleep(0.5)
        assert not hand_off.done()  # waiting for the lock ...
        jobs = {j.id: j.status for j in (await engine.get(fan2)).jobs}
        assert jobs["r2"] == "succeeded"  # ... after the finish committed: no row held while it waits
        assert sorted(jobs.values()).count("queued") == 5
        await other.rollback()
    promoted, claimed = await asyncio.wait_for(hand_off, timeout=5)
    assert len(promoted) == 5 and len(claimed) == 1  # r2's place only, counted under the lock
    assert (await store.usage("fan"))["jobs_running"] == 3
    assert await store.claim("w", 10, 30) == []
    queued = [j for j in (await engine.get(fan)).jobs + (await engine.get(fan2)).jobs if j.status == "queued"]
    assert len(queued) == 9 + 4


async def test_racing_claimers_hold_a_tenant_cap_and_serve_the_other_tenants(
    engine: Engine, store: SQLiteStore, settings: Settings
) -> None:
    from reelflow.store import open_store

    others = [open_store(settings.database_url) for _ in range(3)]
    claimers = [store, *others]
    try:
        for s in claimers:
            s.configure_limits(tenant_caps={"big": 5}, default_tenant_cap=None)
        await engine.submit({"jobs": [sim_job(f"b{i}", prompt=f"b{i}") for i in range(60)]}, tenant="big")
        await engine.submit({"jobs": [sim_job(f"s{i}", prompt=f"s{i}") for i in range(6)]}, tenant="small")
        taken = await asyncio.gather(*(s.claim(f"w{i}", 10, 30) for i, s in enumerate(claimers)))
        claimed = [c for batch in taken for c in batch]
        assert len({c.id for c in claimed}) == len(claimed)
        assert sum(c.tenant == "big" for c in claimed) == 5  # together, not 5 each
        assert sum(c.tenant == "small" for c in claimed) == 6  # uncapped: all of them
        assert (await store.usage("big"))["jobs_running"] == 5
        assert [c for s in claimers for c in await s.claim("w", 10, 30)] == []  # the cap is full
    finally:
        for s in others:
            await s.close()


# ---------------------------------------------------------------------------------------------- budgets


async def test_submissions_past_a_monthly_limit_are_refused_with_the_limit_named(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore, limits_file: Path
) -> None:
    limits_file.write_text("tenants:\n  default: {monthly_executions: 2}\n  acme: {monthly_cost_usd: 1.0}\n")
    reset_limits()
    await engine.submit({"jobs": [sim_job("a", cost_usd=0.1)]})
    await engine.submit({"jobs": [sim_job("a", cost_usd=0.1)]})
    with pytest.raises(UsageLimitExceeded) as count:
        await engine.submit({"jobs": [sim_job("a", cost_usd=0.1)]})
    assert count.value.status == 429 and count.value.limit == "monthly_executions"
    assert "monthly_executions limit of 2" in str(count.value) and "number 3" in str(count.value)

    ok = await engine.submit({"jobs": [sim_job("a", cost_usd=0.7)]}, tenant="acme")
    with pytest.raises(UsageLimitExceeded) as cost:
        await engine.submit({"jobs": [sim_job("a", cost_usd=0.4)]}, tenant="acme")
    assert cost.value.status == 402 and cost.value.limit == "monthly_cost_usd"
    assert "$1.00" in str(cost.value) and "$0.7000" in str(cost.value) and "$0.4000" in str(cost.value)
    before = await store.usage("acme")
    assert before["executions"] == 1 and before["reserved_usd"] == pytest.approx(0.7)

    # completion settles the reservation to the actual cost, which frees the rest of the budget
    await engine.submit({"jobs": [sim_job("b", cost_usd=0.05)]}, tenant="acme")  # 0.75 reserved now
    async with running_worker():
        await engine.wait(ok, timeout=20)
    after = await store.usage("acme")
    assert after["cost_usd"] == pytest.approx(0.75) and after["reserved_usd"] == pytest.approx(0.0)


async def test_a_run_that_overruns_its_estimate_stops_before_the_next_paid_job(
    engine: Engine, running_worker: WorkerFactory, limits_file: Path
) -> None:
    limits_file.write_text("tenants:\n  default: {monthly_cost_usd: 1.0}\n")
    reset_limits()
    plan = {
        "jobs": [
            sim_job("first", cost_usd=0.3, billed_usd=0.9, latency_s=0.05),  # the provider billed 3x the estimate
            sim_job("second", cost_usd=0.3, latency_s=0.05, depends_on=["first"]),
            sim_job("after", cost_usd=0.0, latency_s=0.05, depends_on=["second"]),
        ],
        "options": {"on_failure": "stop"},
    }
    eid = await engine.submit(plan)  # 0.6 estimated: within the 1.0 budget
    async with running_worker():
        state = await engine.wait(eid, timeout=20)
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["first"]["status"] == "succeeded" and jobs["first"]["cost"]["actual"] == pytest.approx(0.9)
    assert jobs["second"]["status"] == "failed" and jobs["second"]["provider_job_id"] is None  # never submitted
    assert "monthly_cost_usd budget of $1.00" in jobs["second"]["error"]
    assert jobs["after"]["status"] == "skipped"
    assert state["status"] == "failed" and state["cost"]["actual"] == pytest.approx(0.9)


async def test_usage_counts_the_calendar_month_only(engine: Engine, store: SQLiteStore, limits_file: Path) -> None:
    limits_file.write_text("tenants:\n  default: {monthly_executions: 1}\n")
    reset_limits()
    first = await engine.submit({"jobs": [sim_job("a")]})
    with pytest.raises(UsageLimitExceeded):
        await engine.submit({"jobs": [sim_job("a")]})
    # the first execution moves to last month: this month's count starts again
    last_month = time.time() - 40 * 86400
    if store.url.startswith("sqlite"):
        conn = store._connect()  # type: ignore[attr-defined]
        conn.execute("UPDATE executions SET created_at = ? WHERE id = ?", (last_month, first))
        conn.commit()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(store.url, autocommit=True) as pg:
            await pg.execute("UPDATE executions SET created_at = %s WHERE id = %s", (last_month, first))
    assert (await store.usage("default"))["executions"] == 0
    assert await engine.submit({"jobs": [sim_job("a")]})


# ---------------------------------------------------------------------------------------------- cache


async def test_an_identical_plan_reuses_results_at_no_cost_and_a_changed_seed_or_prompt_misses(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore
) -> None:
    def plan(seed: int = 7, prompt: str = "a sunset") -> dict[str, Any]:
        return {
            "jobs": [
                sim_job("still", "sim/image", latency_s=0.5, cost_usd=0.25, seed=seed, prompt=prompt, media=True),
                sim_job("clip", latency_s=0.5, cost_usd=0.5, prompt="$still", media=True),
            ]
        }

    async with running_worker():
        first = await engine.wait(await engine.submit(plan()), timeout=20)
        started = time.monotonic()
        second_id = await engine.submit(plan())
        second = await engine.wait(second_id, timeout=20)
        took = time.monotonic() - started
        seed = await engine.wait(await engine.submit(plan(seed=8)), timeout=20)
        prompt = await engine.wait(await engine.submit(plan(prompt="a sunrise")), timeout=20)
        off = await engine.wait(await engine.submit(plan() | {"options": {"cache": False}}), timeout=20)
    assert first["cost"]["actual"] == pytest.approx(0.75)
    assert second["status"] == "succeeded" and second["cost"]["actual"] == 0.0
    assert all(j["cache_hit"] for j in second["jobs"]) and took < 0.9  # two 0.5 s jobs, not run again
    assert [j["result"]["url"] for j in second["jobs"]] == [j["result"]["url"] for j in first["jobs"]]
    hits = [e for e in await store.events(second_id) if e.type == "job.cache_hit"]
    assert {e.job_key for e in hits} == {"still", "clip"}
    assert hits[0].data["execution_id"] == first["id"]
    for missed in (seed, prompt):  # the changed job runs again; the clip may hit if the new still is the same file
        still = next(j for j in missed["jobs"] if j["id"] == "still")
        assert not still["cache_hit"] and still["cost"]["actual"] == pytest.approx(0.25)
    assert not any(j["cache_hit"] for j in off["jobs"]) and off["cost"]["actual"] == pytest.approx(0.75)
    assert (await store.usage("default"))["cache_hits"] >= 2


async def test_requests_per_minute_holds_over_a_minute_across_two_workers(
    engine: Engine, worker_env: dict[str, str], tmp_path: Path, limits_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minute-long run: 120 requests a minute allowed, two worker processes with 60 jobs wanting ~2 requests
    each as fast as they can. No 60 s window at the fake sees more than 120 of our API requests (creates
    included: `creates_per_minute: null` lifts Replicate's own create bucket, so they count here)."""
    limits_file.write_text("providers:\n  replicate: {requests_per_minute: 120, creates_per_minute: null}\n")
    reset_limits()
    with FakeReplicate(latency_s=0.2, queue_s=0.0) as fake:
        env = replicate_env(worker_env, limits_file, fake, monkeypatch)
        eid = await engine.submit({"jobs": [video(f"c{i}", f"waves {i}") for i in range(62)]})
        started = time.time()
        procs = workers(env, tmp_path, 2)
        try:
            state = await engine.wait(eid, timeout=150)
        finally:
            stop(procs)
    assert state["status"] == "succeeded", state["error"]
    times = sorted(r["t"] for r in fake.requests if r["path"].startswith("/v1/"))
    assert times[-1] - times[0] >= 60.0, "the run must span a whole minute to show the limit"
    busiest = max(sum(1 for t in times[i:] if t < start + 60.0) for i, start in enumerate(times))
    assert 100 <= busiest <= 120, busiest  # the limit was used, and held
    assert time.time() - started < 120


async def test_creates_spend_their_own_bucket_across_two_workers_and_polls_are_not_held_by_it(
    engine: Engine, worker_env: dict[str, str], tmp_path: Path, limits_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """creates_per_minute 60 (a create about every 1.02 s, all workers together) with requests_per_minute high:
    the creates of two worker processes are spaced by the create bucket, while the polls of the jobs already
    created go out meanwhile, on the requests bucket."""
    limits_file.write_text("providers:\n  replicate: {creates_per_minute: 60, requests_per_minute: 100000}\n")
    reset_limits()
    n = 8
    with FakeReplicate(latency_s=2.0, queue_s=0.0) as fake:
        env = replicate_env(worker_env, limits_file, fake, monkeypatch)
        eid = await engine.submit({"jobs": [video(f"c{i}", f"waves {i}") for i in range(n)]})
        procs = workers(env, tmp_path, 2, "--concurrency", str(n // 2))  # neither can take every job
        try:
            state = await engine.wait(eid, timeout=90)
        finally:
            stop(procs)
    assert state["status"] == "succeeded", state["error"]
    owners = {e.data.get("worker") for e in await engine.store.events(eid) if e.type == "job.running"}
    assert len(owners) == 2, owners
    api = [r for r in fake.requests if r["path"].startswith("/v1/")]
    creates = sorted(r["t"] for r in api if r["method"] == "POST" and r["path"].endswith("/predictions"))
    polls = sorted(r["t"] for r in api if r["method"] == "GET" and r["path"].startswith("/v1/predictions/"))
    assert len(creates) == n
    gaps = [b - a for a, b in itertools.pairwise(creates)]
    assert min(gaps) >= 61 / 60 - 0.25, gaps  # one create per 1.02 s, whichever worker sends it
    assert creates[-1] - creates[0] >= (n - 1) * 61 / 60 - 0.25
    # Polls on the create bucket would have to wait for tokens behind the queued creates; instead they come
    # between them: more requests in the creates' span than the create bucket alone could let through.
    span = [t for t in polls if creates[0] <= t <= creates[-1]]
    assert len(span) >= n // 2, (len(span), len(polls))
    assert len(span) + n > (creates[-1] - creates[0]) * 60 / 61 + 2


async def test_the_shared_bucket_is_taken_in_batches_not_written_per_request(
    store: SQLiteStore, settings: Settings
) -> None:
    """Two workers spending a shared bucket as fast as it refills: the store is asked once per batch or so
    (a spy on take_tokens), never once per request, and the rate still holds."""
    from reelflow.engine.pace import SharedTokens
    from reelflow.store import open_store

    other = open_store(settings.database_url)
    calls: list[int] = []
    for s in (store, other):
        take = s.take_tokens

        async def spy(provider: str, want: int, per_minute: float | None, take: Any = take) -> tuple[int, float]:
            calls.append(want)
            return await take(provider, want, per_minute)

        s.take_tokens = spy  # type: ignore[method-assign]
    try:
        per_minute = 61.0 * 4 * 50  # 200 a second, in batches of 50
        buckets = [SharedTokens(s, "replicate", per_minute) for s in (store, other)]
        assert all(b.batch == 50 for b in buckets)
        requests = 400
        started = time.monotonic()
        await asyncio.gather(*(buckets[i % 2].acquire() for i in range(requests)))
        elapsed = time.monotonic() - started
    finally:
        await other.close()
    assert elapsed >= requests / 200 - 0.3, elapsed  # the bucket starts empty and refills at 200 a second
    # each batch: the trip that gets it, and at most one empty-handed trip per worker while it builds up (the
    # requests a worker has waiting share its one trip); before, every waiting request made a trip of its own
    assert len(calls) <= (len(buckets) + 1) * (requests / 50 + 1), len(calls)


async def test_a_create_spends_the_create_bucket_and_other_requests_the_requests_bucket() -> None:
    from reelflow.providers.http import RateGate

    class Counting:
        def __init__(self) -> None:
            self.taken = 0

        async def acquire(self) -> None:
            self.taken += 1

    gate = RateGate()
    gate.shared = requests = Counting()
    await gate.acquire(create=True)  # no create bucket: a create is a request like any other
    assert requests.taken == 1
    gate.shared_creates = creates = Counting()
    for _ in range(3):
        await gate.acquire(create=True)
    await gate.acquire()
    assert (creates.taken, requests.taken) == (3, 2)


# ---------------------------------------------------------------------------------------------- API and CLI


def test_the_api_refuses_past_a_budget_with_402_and_shows_usage(
    settings: Settings, limits_file: Path, worker_env: dict[str, str], tmp_path: Path
) -> None:
    from apiserver import ApiServer

    limits_file.write_text("tenants:\n  acme: {monthly_cost_usd: 0.5, monthly_executions: 10}\n")
    reset_limits()
    with ApiServer(settings) as api:
        key = api.new_key("acme")
        with api.client(key.api_key) as http:
            ok = http.post("/v1/executions", json={"jobs": [sim_job("a", cost_usd=0.3)]})
            refused = http.post("/v1/executions", json={"jobs": [sim_job("a", cost_usd=0.3)]})
            usage = http.get("/v1/usage").json()
            listed = http.get("/v1/executions").json()["data"]
    assert ok.status_code == 202
    assert refused.status_code == 402
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["title"] == "Monthly cost budget reached"
    assert "monthly_cost_usd budget of $0.50" in problem["detail"] and "$0.3000" in problem["detail"]
    assert len(listed) == 1  # the refused one stored nothing
    assert usage["tenant"] == "acme" and usage["executions"] == 1
    assert usage["reserved_usd"] == pytest.approx(0.3)
    assert usage["limits"] == {"monthly_executions": 10, "monthly_cost_usd": 0.5, "max_concurrent": 200}
    assert usage["jobs_running"] == 0

    env = worker_env | {"REELFLOW_LIMITS_FILE": str(limits_file)}
    proc = subprocess.run([*CLI, "stats", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import json

    stats = json.loads(proc.stdout)
    acme = next(u for u in stats["usage"] if u["tenant"] == "acme")
    assert acme["executions"] == 1 and acme["limits"]["monthly_cost_usd"] == 0.5
    assert acme["jobs_running"] == 0 and acme["limits"]["max_concurrent"] == 200
    assert stats["queue"]["jobs"] == {"queued": 1}
    assert stats["limits"]["providers"]["replicate"]["requests_per_minute"] == 3000
    table = subprocess.run([*CLI, "stats"], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "acme" in table.stdout and "queued 1" in table.stdout
    assert "running" in table.stdout and "0 of 200" in table.stdout
