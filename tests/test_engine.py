"""The engine end to end on SQLite with the simulated provider: order, parallelism, retries, failures."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory, sim_job
from reelflow.engine.scheduler import Engine
from reelflow.errors import Conflict, NotFound, PlanError
from reelflow.models import ExecutionState
from reelflow.providers.base import PermanentError, ProgressReporter, ProviderResult, Task
from reelflow.providers.sim import SimProvider
from reelflow.store.sqlite import SQLiteStore


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def jobs_by_id(state: dict[str, Any] | ExecutionState) -> dict[str, dict[str, Any]]:
    """The jobs of a state (the engine's model, or the dict a wait returns) as JSON, by id."""
    data = state.model_dump(mode="json") if isinstance(state, ExecutionState) else state
    return {j["id"]: j for j in data["jobs"]}


async def event_types(store: SQLiteStore, execution_id: str, job: str | None = None) -> list[str]:
    return [e.type for e in await store.events(execution_id) if job is None or e.job_key == job]


async def test_chain_runs_in_dependency_order(engine: Engine, running_worker: WorkerFactory) -> None:
    plan = {
        "jobs": [
            sim_job("a", latency_s=0.1),
            sim_job("b", latency_s=0.1, depends_on=["a"]),
            sim_job("c", latency_s=0.1, echo="$b"),
        ]
    }
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    assert state["status"] == "succeeded"
    assert state["progress"] == 100
    jobs = jobs_by_id(state)
    assert ts(jobs["b"]["started_at"]) >= ts(jobs["a"]["finished_at"])
    assert ts(jobs["c"]["started_at"]) >= ts(jobs["b"]["finished_at"])
    assert jobs["c"]["depends_on"] == ["b"]
    assert state["result"]["outputs"].keys() == {"c"}


async def test_a_job_finished_when_its_attempt_ended_though_its_outcome_was_written_later(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish, real_claim = store.finish_jobs, store.finish_and_claim

    async def slow_finish(*args: Any, **kwargs: Any) -> Any:  # the write waits behind a slow database
        await asyncio.sleep(0.4)
        return await real_finish(*args, **kwargs)

    async def slow_claim(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.4)
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "finish_jobs", slow_finish)
    monkeypatch.setattr(store, "finish_and_claim", slow_claim)
    eid = await engine.submit({"jobs": [sim_job("a", latency_s=0.1)]})
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    [a] = state["jobs"]
    assert state["status"] == "succeeded"
    # the job's end is its attempt's; the execution ended when that was written, 0.4 s later
    assert ts(state["finished_at"]) - ts(a["finished_at"]) >= 0.35
    assert 0.09 <= ts(a["finished_at"]) - ts(a["started_at"]) < 0.3


async def test_independent_branches_overlap_in_time(engine: Engine, running_worker: WorkerFactory) -> None:
    plan = {"jobs": [sim_job("left", latency_s=0.6), sim_job("right", latency_s=0.6)]}
    eid = await engine.submit(plan)
    t0 = time.monotonic()
    async with running_worker():
        state = await engine.wait(eid, timeout=10, poll_s=0.05)
    makespan = time.monotonic() - t0
    left, right = jobs_by_id(state)["left"], jobs_by_id(state)["right"]
    assert ts(right["started_at"]) < ts(left["finished_at"])
    assert ts(left["started_at"]) < ts(right["finished_at"])
    assert makespan < 1.1, f"two 0.6 s branches took {makespan:.2f} s together"


async def test_references_resolve_anywhere_in_nested_params(engine: Engine, running_worker: WorkerFactory) -> None:
    plan = {
        "jobs": [
            sim_job("src", latency_s=0),
            sim_job("use", echo={"list": ["$src", {"deep": "$src.sim_id"}], "plain": "not $src"}),
        ]
    }
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    jobs = jobs_by_id(state)
    src = jobs["src"]["result"]
    echo = jobs["use"]["result"]["echo"]
    assert echo["list"][0] == src["url"]
    assert echo["list"][1]["deep"] == src["sim_id"]
    assert echo["plain"] == "not $src"
    assert jobs["use"]["depends_on"] == ["src"]


async def test_transient_failures_are_retried_with_backoff_then_succeed(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    eid = await engine.submit({"jobs": [sim_job("flaky", fail_times=2, max_attempts=3)]})
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    job = jobs_by_id(state)["flaky"]
    assert state["status"] == "succeeded"
    assert job["attempts"] == 3
    events = await store.events(eid)
    retries = [e for e in events if e.type == "job.retrying"]
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert all("transient failure" in e.data["error"] for e in retries)
    # full jitter under a doubling ceiling: attempt n waits at most base * 2^(n-1) (base 0.05 s here)
    assert retries[0].data["retry_in_s"] <= 0.05 + 1e-6
    assert retries[1].data["retry_in_s"] <= 0.10 + 1e-6
    # and the next attempt never starts before its backoff ran out
    runs = [e for e in events if e.type == "job.running"]
    for retry, rerun in zip(retries, runs[1:], strict=True):
        assert rerun.created_at >= retry.created_at + retry.data["retry_in_s"] - 0.01


async def test_retry_after_from_the_provider_is_honoured(engine: Engine, running_worker: WorkerFactory) -> None:
    eid = await engine.submit({"jobs": [sim_job("slowdown", fail_times=1, retry_after_s=0.4)]})
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    job = jobs_by_id(state)["slowdown"]
    assert job["status"] == "succeeded"
    assert ts(job["finished_at"]) - ts(job["started_at"]) >= 0.4


async def test_transient_failures_give_up_after_max_attempts(engine: Engine, running_worker: WorkerFactory) -> None:
    eid = await engine.submit({"jobs": [sim_job("hopeless", fail_times=10, max_attempts=2)]})
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    job = jobs_by_id(state)["hopeless"]
    assert state["status"] == "failed"
    assert job["attempts"] == 2
    assert "gave up after 2 attempts" in job["error"]
    assert "job 'hopeless' failed" in state["error"]


async def test_permanent_failure_fails_at_once_and_skips_dependents(
    engine: Engine, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    plan = {
        "jobs": [
            sim_job("bad", fail="permanent", max_attempts=5),
            sim_job("after", echo="$bad"),
            sim_job("later", depends_on=["after"]),
        ]
    }
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    jobs = jobs_by_id(state)
    assert state["status"] == "failed"
    assert jobs["bad"]["status"] == "failed" and jobs["bad"]["attempts"] == 1
    assert "fail: permanent" in jobs["bad"]["error"]
    assert jobs["after"]["status"] == "skipped" and jobs["later"]["status"] == "skipped"
    assert "'bad'" in jobs["after"]["error"]
    assert jobs["after"]["attempts"] == 0
    assert sim.submitted == 0


async def test_on_failure_stop_starts_nothing_new_but_lets_running_jobs_finish(
    engine: Engine, running_worker: WorkerFactory
) -> None:
    plan = {
        "jobs": [
            sim_job("long", latency_s=0.8),
            sim_job("bad", latency_s=0.1, fail="permanent"),
            sim_job("child_of_bad", depends_on=["bad"]),
            sim_job("child_of_long", depends_on=["long"]),
        ],
        "options": {"on_failure": "stop"},
    }
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    jobs = jobs_by_id(state)
    assert jobs["long"]["status"] == "succeeded"
    assert jobs["bad"]["status"] == "failed"
    assert jobs["child_of_bad"]["status"] == "skipped"
    assert jobs["child_of_long"]["status"] == "skipped"
    assert "on_failure is stop" in jobs["child_of_long"]["error"]
    assert state["status"] == "failed"


async def test_on_failure_continue_runs_independent_branches(engine: Engine, running_worker: WorkerFactory) -> None:
    plan = {
        "jobs": [
            sim_job("long", latency_s=0.3),
            sim_job("bad", fail="permanent"),
            sim_job("child_of_bad", depends_on=["bad"]),
            sim_job("child_of_long", depends_on=["long"]),
        ],
        "options": {"on_failure": "continue"},
    }
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    jobs = jobs_by_id(state)
    assert jobs["child_of_long"]["status"] == "succeeded"
    assert jobs["child_of_bad"]["status"] == "skipped"
    assert state["status"] == "failed"
    assert state["progress"] == 100


class SwitchableProvider(SimProvider):
    """The sim provider, except that jobs named in `broken` fail permanently; counts submits per job."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()
        self.runs: dict[str, int] = {}

    async def submit(self, task: Task) -> str:
        self.runs[task.job_id] = self.runs.get(task.job_id, 0) + 1
        if task.job_id in self.broken:
            raise PermanentError(f"{task.job_id} is broken")
        return await super().submit(task)


async def test_resume_reruns_only_failed_and_skipped_jobs(engine: Engine, running_worker: WorkerFactory) -> None:
    provider = SwitchableProvider()
    provider.broken = {"b"}
    plan = {
        "jobs": [
            sim_job("a"),
            sim_job("b", echo="$a"),
            sim_job("c", echo="$b"),
            sim_job("side", latency_s=0.05),
        ],
        "options": {"on_failure": "continue"},
    }
    eid = await engine.submit(plan)
    async with running_worker(providers_={"sim": provider}):
        first = await engine.wait(eid, timeout=10)
        assert first["status"] == "failed"
        assert {j["id"]: j["status"] for j in first["jobs"]} == {
            "a": "succeeded",
            "b": "failed",
            "c": "skipped",
            "side": "succeeded",
        }
        a_result = jobs_by_id(first)["a"]["result"]
        provider.broken.clear()
        resumed = await engine.resume(eid)
        assert resumed.status in ("queued", "running")
        final = await engine.wait(eid, timeout=10)
    assert final["status"] == "succeeded"
    assert provider.runs == {"a": 1, "b": 2, "c": 1, "side": 1}
    assert jobs_by_id(final)["a"]["result"] == a_result
    assert jobs_by_id(final)["b"]["result"]["echo"] == a_result["url"]
    with pytest.raises(Conflict, match="nothing to resume"):
        await engine.resume(eid)


async def test_resume_of_a_running_execution_is_a_conflict(engine: Engine, running_worker: WorkerFactory) -> None:
    eid = await engine.submit({"jobs": [sim_job("slow", latency_s=5)]})
    with pytest.raises(Conflict, match="only a finished execution"):
        await engine.resume(eid)
    with pytest.raises(NotFound):
        await engine.resume("ex_missing")


async def test_retry_makes_a_new_execution_of_the_same_plan(engine: Engine, running_worker: WorkerFactory) -> None:
    eid = await engine.submit({"jobs": [sim_job("x", fail="permanent")], "metadata": {"order": 7}})
    async with running_worker():
        await engine.wait(eid, timeout=10)
        again = await engine.retry(eid)
        state = await engine.wait(again, timeout=10)
    assert again != eid
    assert state["retry_of"] == eid
    assert state["metadata"] == {"order": 7}
    assert [j["id"] for j in state["jobs"]] == ["x"]


async def test_cancel_stops_queued_and_running_jobs(
    engine: Engine, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    plan = {"jobs": [sim_job("long", latency_s=30), sim_job("next", echo="$long")]}
    eid = await engine.submit(plan)
    async with running_worker():
        for _ in range(100):
            state = await engine.get(eid)
            if jobs_by_id(state)["long"]["provider_job_id"]:
                break
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        canceled = await engine.cancel(eid)
        assert canceled.status == "canceled"
        assert {j.status for j in canceled.jobs} == {"canceled"}
        while not sim.canceled and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.05)
    assert sim.canceled == [jobs_by_id(canceled)["long"]["provider_job_id"]]
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(Conflict):
        await engine.cancel(eid)


async def test_job_timeout_fails_the_job_and_cancels_the_remote_work(
    engine: Engine, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    eid = await engine.submit({"jobs": [sim_job("slow", latency_s=30, timeout_s=0.5)]})
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    job = jobs_by_id(state)["slow"]
    assert job["status"] == "failed"
    assert "timeout_s" in job["error"]
    assert sim.canceled == [job["provider_job_id"]]
    assert ts(job["finished_at"]) - ts(job["started_at"]) < 2


async def test_start_timeout_fails_a_job_stuck_in_the_provider_queue(
    engine: Engine, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    plan = {
        "jobs": [sim_job("stuck", queue_s=30, start_timeout_s=0.5), sim_job("quick", queue_s=0.2, start_timeout_s=5)]
    }
    eid = await engine.submit(plan | {"options": {"on_failure": "continue"}})
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    jobs = jobs_by_id(state)
    assert jobs["stuck"]["status"] == "failed"
    assert "start_timeout_s" in jobs["stuck"]["error"]
    assert jobs["quick"]["status"] == "succeeded"
    assert sim.canceled == [jobs["stuck"]["provider_job_id"]]


async def test_execution_timeout(engine: Engine, running_worker: WorkerFactory) -> None:
    plan = {"jobs": [sim_job("slow", latency_s=30)], "options": {"timeout_s": 0.5}}
    eid = await engine.submit(plan)
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    assert state["status"] == "failed"
    assert "options.timeout_s" in jobs_by_id(state)["slow"]["error"]


async def test_progress_counts_finished_and_running_jobs(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    plan = {"jobs": [sim_job("a"), sim_job("b", queue_s=30)]}
    eid = await engine.submit(plan)
    async with running_worker():
        for _ in range(100):
            state = await engine.get(eid)
            if jobs_by_id(state)["a"]["status"] == "succeeded" and jobs_by_id(state)["b"]["queue_position"]:
                break
            await asyncio.sleep(0.05)
        assert state.progress == 50.0
        assert jobs_by_id(state)["b"]["queue_position"] == 1
        await engine.cancel(eid)
    assert "execution.progress" in await event_types(store, eid)


async def test_every_state_change_appends_an_event(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    eid = await engine.submit({"jobs": [sim_job("a"), sim_job("b", echo="$a")]})
    async with running_worker():
        await engine.wait(eid, timeout=10)
    types = await event_types(store, eid)
    assert types[0] == "execution.created"
    assert types[-1] == "execution.succeeded"
    assert await event_types(store, eid, "a") == ["job.running", "job.submitted", "job.succeeded"]
    assert await event_types(store, eid, "b") == ["job.queued", "job.running", "job.submitted", "job.succeeded"]
    seqs = [e.seq for e in await store.events(eid)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_invalid_plan_is_refused_and_stores_nothing(engine: Engine, store: SQLiteStore) -> None:
    with pytest.raises(PlanError, match="clp"):
        await engine.submit({"jobs": [sim_job("clip"), sim_job("merge", echo="$clp")]})
    assert (await store.list_executions()).data == []


async def test_listing_is_newest_first_with_cursor_pagination(engine: Engine, store: SQLiteStore) -> None:
    ids = [await engine.submit({"jobs": [sim_job("a")]}) for _ in range(5)]
    page1 = await store.list_executions(limit=2)
    page2 = await store.list_executions(limit=2, cursor=page1.next_cursor)
    page3 = await store.list_executions(limit=2, cursor=page2.next_cursor)
    assert [r.id for r in page1.data + page2.data + page3.data] == ids[::-1]
    assert page1.next_cursor and page2.next_cursor and page3.next_cursor is None


async def test_released_jobs_resume_waiting_on_the_same_provider_id(
    engine: Engine, store: SQLiteStore, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    """A worker shutting down gives its jobs back; the next one waits on the same remote work."""
    eid = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=1.0) for i in range(3)]})
    async with running_worker(drain_timeout_s=0.1):
        for _ in range(100):
            state = await engine.get(eid)
            if all(j.provider_job_id for j in state.jobs):
                break
            await asyncio.sleep(0.05)
    released = await engine.get(eid)
    assert {j.status for j in released.jobs} == {"queued"}
    assert {j.attempts for j in released.jobs} == {0}
    pids = {j.id: j.provider_job_id for j in released.jobs}
    assert sim.submitted == 3
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    assert state["status"] == "succeeded"
    assert sim.submitted == 3, "resuming must not pay for new remote work"
    assert {j["id"]: j["result"]["provider_id"] for j in state["jobs"]} == pids


class CountingProvider(SimProvider):
    """Records how many jobs wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.peak = 0

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await super().wait(task, provider_id, report)
        finally:
            self.now -= 1


async def test_concurrency_limits_how_many_jobs_one_worker_holds(engine: Engine, running_worker: WorkerFactory) -> None:
    provider = CountingProvider()
    eid = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=0.1) for i in range(12)]})
    async with running_worker(providers_={"sim": provider}, concurrency=4):
        state = await engine.wait(eid, timeout=10)
    assert state["status"] == "succeeded"
    assert provider.peak == 4


async def test_a_missing_provider_key_is_refused_at_submission(
    engine: Engine, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    plan = {
        "jobs": [
            {
                "id": "still",
                "type": "generate-image",
                "model": "replicate/black-forest-labs/flux-schnell",
                "params": {"prompt": "A sunset"},
            },
            sim_job("other"),
        ]
    }
    with pytest.raises(
        PlanError,
        match="job 'still': replicate/black-forest-labs/flux-schnell needs REPLICATE_API_TOKEN, which is not set",
    ) as info:
        await engine.submit(plan)
    assert info.value.errors[0].loc == ["jobs", 0, "model"]
    assert (await store.list_executions()).data == []
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test")
    assert (await engine.submit(plan)).startswith("ex_")


async def test_prune_deletes_finished_executions_older_than_the_cutoff(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory, worker_env: dict[str, str], tmp_path: Path
) -> None:
    old = await engine.submit({"jobs": [sim_job("a", latency_s=0.01), sim_job("b", latency_s=0.01)]})
    new = await engine.submit({"jobs": [sim_job("a", latency_s=0.01, prompt="other")]})
    async with running_worker():
        await engine.wait(old, timeout=10)
        await engine.wait(new, timeout=10)
    waiting = await engine.submit({"jobs": [sim_job("c")]})  # not finished: never pruned
    assert await store.prune(time.time() - 3600) == {"executions": 0, "jobs": 0, "events": 0, "webhook_deliveries": 0}
    mid = time.time()
    await asyncio.sleep(0.05)
    # `old` and `new` both ended before `mid`: the CLI prunes them, leaving the unfinished one
    events_before = len(await store.events(old))
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reelflow.cli", "prune", "--older-than", f"{time.time() - mid + 0.01:.3f}s", "--json"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    removed = json.loads(proc.stdout)
    assert removed["executions"] == 2 and removed["jobs"] == 3 and removed["events"] >= events_before
    with pytest.raises(NotFound):
        await engine.get(old)
    assert (await engine.get(waiting)).status == "queued"
    bad = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reelflow.cli", "prune", "--older-than", "soon"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not an age like 30d" in bad.stderr


async def test_a_job_shows_its_params_as_submitted_and_resolved_and_the_execution_lists_every_leaf_output(
    engine: Engine, running_worker: WorkerFactory
) -> None:
    plan = {
        "jobs": [
            sim_job("still", model="sim/image", latency_s=0),
            sim_job("clip", latency_s=0.3, echo={"from": "$still", "id": "$still.sim_id", "esc": "$$5"}),
            sim_job("voice", model="sim/audio", latency_s=0, text="hello"),
        ]
    }
    eid = await engine.submit(plan)
    queued = jobs_by_id(await engine.get(eid))
    assert queued["clip"]["params"]["echo"] == {"from": "$still", "id": "$still.sim_id", "esc": "$$5"}
    assert queued["clip"]["resolved_params"] is None  # 'still' has no result yet
    assert queued["voice"]["params"]["text"] == "hello"
    async with running_worker():
        state = await engine.wait(eid, timeout=10)
    jobs = jobs_by_id(state)
    still = jobs["still"]["result"]
    assert jobs["clip"]["params"]["echo"]["from"] == "$still"  # as submitted, still
    assert jobs["clip"]["resolved_params"]["echo"] == {"from": still["url"], "id": still["sim_id"], "esc": "$5"}
    assert jobs["voice"]["resolved_params"]["text"] == "hello"
    # the leaves are 'clip' and 'voice' ('still' feeds 'clip'), in plan order, each with its own link
    leaves = [(o["job_id"], o["type"]) for o in state["outputs"]]
    assert leaves == [("clip", "generate-video"), ("voice", "generate-audio")]
    assert [o["url"] for o in state["outputs"]] == [jobs["clip"]["result"]["url"], jobs["voice"]["result"]["url"]]
    assert all(o["url"].startswith("http") for o in state["outputs"])


async def test_claims_grow_while_the_queue_is_deep_and_shrink_when_it_empties(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each claim that comes back full doubles the next one, up to 4 x batch_size; a short one resets it."""
    asked: list[int] = []
    claim = store.claim

    async def counting_claim(owner: str, limit: int, lease_s: float, **kw: Any) -> Any:
        asked.append(limit)
        return await claim(owner, limit, lease_s, **kw)

    monkeypatch.setattr(store, "claim", counting_claim)
    execution_id = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=0.5) for i in range(30)]})
    async with running_worker(batch_size=2, concurrency=100):
        state = await engine.wait(execution_id, poll_s=0.05)
    assert state["status"] == "succeeded"
    assert asked[:6] == [2, 4, 8, 8, 8, 8]  # 2 + 4 + 8 + 8 + 8 = 30 jobs, then a claim that finds none
    assert asked[6:] and max(asked[6:]) == 2, asked  # back to batch_size once the queue ran dry (or less: slots)


async def test_a_worker_with_every_slot_taken_does_not_ask_the_store_for_work(
    engine: Engine, running_worker: WorkerFactory, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    claim, wait_for_work = store.claim, store.wait_for_work

    async def counting_claim(owner: str, limit: int, lease_s: float, **kw: Any) -> Any:
        asked.append("claim")
        return await claim(owner, limit, lease_s, **kw)

    async def counting_wait(timeout: float) -> bool:
        asked.append("wait")
        return await wait_for_work(timeout)

    monkeypatch.setattr(store, "claim", counting_claim)
    monkeypatch.setattr(store, "wait_for_work", counting_wait)
    first = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=1.0) for i in range(2)]})
    async with running_worker(concurrency=2) as w:
        for _ in range(100):
            if w.started == 2:
                break
            await asyncio.sleep(0.01)
        asked.clear()
        await asyncio.sleep(0.6)  # both slots held: no claim, no wait for the store's word
        assert asked == []
        later = await engine.submit({"jobs": [sim_job("later", latency_s=0.0)]})
        done = await engine.wait(first, poll_s=0.02)
        state = await engine.wait(later, poll_s=0.02)
    assert done["status"] == state["status"] == "succeeded"
    ended = max(ts(j["finished_at"]) for j in done["jobs"])
    assert ts(state["jobs"][0]["started_at"]) - ended < 0.3  # a freed slot is taken at once


async def test_a_job_without_deadlines_waits_in_its_own_task(engine: Engine, running_worker: WorkerFactory) -> None:
    """No second task (and no asyncio.wait) per job when there is no deadline to watch; with a timeout_s the
    wait is still watched, and the job still times out."""
    execution_id = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=1.0) for i in range(20)]})
    timed = await engine.submit({"jobs": [sim_job("slow", latency_s=30.0, timeout_s=2.0)]})
    async with running_worker() as w:
        seen = []
        for _ in range(40):  # 0.8 s of the jobs' 1 s wait: how many waits run in tasks of their own
            await asyncio.sleep(0.02)
            qualnames = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
            seen.append(sum("SimProvider.wait" in q for q in qualnames))
        assert w.started == 21 and max(seen) == 1, seen  # the timed job's alone (before: one per job, 21)
        state = await engine.wait(execution_id, poll_s=0.05)
        slow = await engine.wait(timed, poll_s=0.05)
    assert state["status"] == "succeeded"
    assert slow["status"] == "failed" and "timed out after 2 s" in slow["jobs"][0]["error"]


def test_cache_key_is_the_sha256_of_the_canonical_json() -> None:
    """The key stays what earlier versions wrote (sorted keys, default separators, ASCII escapes, `str` of
    anything else): results cached by them keep being found."""
    import hashlib
    from decimal import Decimal

    from reelflow.engine.worker import cache_key
    from reelflow.store.base import ClaimedJob

    c = ClaimedJob(1, "e", "k", "generate-video", "sim", "sim/video", {}, 1, 3, None, None, None, 0.0, None)
    for params in (
        {},
        {"prompt": "un café — 猫 \u2028", "b": 1.5, "a": [1, None, True, {"z": 2, "y": [0.1, -3]}]},
        {"seed": 2**70, "nan": float("inf"), "odd": Decimal("1.10")},
    ):
        canonical = {"type": c.type, "provider": c.provider, "model": c.model, "params": params}
        expected = hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()
        assert cache_key(c, params) == expected
