"""Several processes on one SQLite file: crashes, clean shutdown, exclusive claims, quick wake-up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import WorkerFactory, sim_job
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.store import open_store
from reelflow.store.sqlite import SQLiteStore

CLI = [sys.executable, "-m", "reelflow.cli"]


def start_worker(env: dict[str, str], tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.log").open("wb")
    return subprocess.Popen([*CLI, "worker", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_for(predicate, timeout: float = 15.0, every: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError("condition not met in time")


async def test_sigkilled_worker_jobs_are_finished_by_another_after_the_lease(
    engine: Engine, store: SQLiteStore, settings: Settings, worker_env: dict[str, str], tmp_path: Path,
    running_worker: WorkerFactory,
) -> None:
    env = worker_env | {"REELFLOW_LEASE_SECONDS": "1.5"}
    settings.lease_seconds = 1.5
    plan = {
        "jobs": [sim_job(f"long{i}", latency_s=3.0, max_attempts=3) for i in range(4)]
        + [sim_job("fragile", latency_s=3.0, max_attempts=1)],
        "options": {"on_failure": "continue"},
    }
    eid = await engine.submit(plan)
    victim = start_worker(env, tmp_path, "victim")
    try:
        async def all_submitted() -> bool:
            state = await engine.get(eid)
            return all(j.provider_job_id for j in state.jobs)

        await wait_for(all_submitted)
        first_ids = {j.id: j.provider_job_id for j in (await engine.get(eid)).jobs}
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    killed_at = time.time()
    async with running_worker():
        state = await engine.wait(eid, timeout=20)
    jobs = {j["id"]: j for j in state["jobs"]}
    for i in range(4):
        job = jobs[f"long{i}"]
        assert job["status"] == "succeeded"
        assert job["attempts"] == 2
        # the second worker resumed waiting on the remote work the first one had started: paid once
        assert job["result"]["provider_id"] == first_ids[f"long{i}"]
    assert jobs["fragile"]["status"] == "failed"
    assert jobs["fragile"]["attempts"] == 1
    assert "lease expired" in jobs["fragile"]["error"]
    started = [e for e in await store.events(eid) if e.type == "job.requeued"]
    assert {e.job_key for e in started} == {f"long{i}" for i in range(4)}
    assert all(e.created_at >= killed_at - 0.1 for e in started)


async def test_sigterm_drains_running_jobs_and_exits_cleanly(
    engine: Engine, store: SQLiteStore, worker_env: dict[str, str], tmp_path: Path
) -> None:
    eid = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=1.0) for i in range(3)] + [
        sim_job("later", latency_s=0.1, depends_on=["j0", "j1", "j2"])
    ]})
    proc = start_worker(worker_env, tmp_path, "drain")

    async def running() -> bool:
        state = await engine.get(eid)
        return sum(j.status == "running" for j in state.jobs) == 3

    await wait_for(running)
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0
    state = await engine.get(eid)
    statuses = {j.id: j.status for j in state.jobs}
    # held jobs finished; the dependent promoted meanwhile was not started by the stopping worker
    assert statuses == {"j0": "succeeded", "j1": "succeeded", "j2": "succeeded", "later": "queued"}
    assert await store.live_workers(within_s=60) == 0
    assert "stopped after 3 jobs" in (tmp_path / "drain.log").read_text()


async def test_two_worker_processes_never_run_a_job_twice(
    engine: Engine, store: SQLiteStore, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # small concurrency and a little latency: neither worker can take every job alone
    procs = [start_worker(worker_env, tmp_path, f"w{i}", "--concurrency", "20") for i in range(2)]
    try:
        ids = []
        for batch in range(6):
            plan = {
                "jobs": [sim_job(f"j{i}", latency_s=0.02 + 0.01 * (i % 3)) for i in range(100)],
                "options": {"cache": False},  # equal jobs would be cache hits, done in no time by one worker
            }
            ids.append(await engine.submit(plan))
            await asyncio.sleep(0.05 * batch)
        for eid in ids:
            state = await engine.wait(eid, timeout=60)
            assert state["status"] == "succeeded"
            assert {j["attempts"] for j in state["jobs"]} == {1}
            runs = Counter(e.job_key for e in await store.events(eid) if e.type == "job.running")
            assert set(runs.values()) == {1}
        owners = Counter()
        for eid in ids:
            for e in await store.events(eid):
                if e.type == "job.running":
                    owners[e.data["worker"]] += 1
        assert len(owners) == 2, f"both workers should have claimed work: {owners}"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(20)


async def test_idle_worker_notices_work_from_another_process_quickly(
    settings: Settings, worker_env: dict[str, str], tmp_path: Path, store: SQLiteStore
) -> None:
    env = worker_env | {"REELFLOW_POLL_INTERVAL_S": "0.1"}  # the shipped default
    proc = start_worker(env, tmp_path, "idle")
    try:
        await wait_for(lambda: store.live_workers(within_s=30))  # type: ignore[arg-type,return-value]
        await asyncio.sleep(0.5)
        delays = []
        for _ in range(5):
            other = open_store(settings.database_url)  # a separate connection, as another process has
            eid = await Engine(other).submit({"jobs": [sim_job("x")]})
            await other.close()

            async def started(eid: str = eid) -> bool:
                return any(e.type == "job.running" for e in await store.events(eid))

            await wait_for(started, every=0.01)
            events = await store.events(eid)
            created = next(e for e in events if e.type == "execution.created").created_at
            running = next(e for e in events if e.type == "job.running").created_at
            delays.append(running - created)
            await asyncio.sleep(0.3)
        assert max(delays) < 0.25, delays
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_cli_worker_rejects_bad_concurrency(worker_env: dict[str, str]) -> None:
    proc = subprocess.run([*CLI, "worker", "--concurrency", "0"], env=worker_env, capture_output=True)
    assert proc.returncode == 2
