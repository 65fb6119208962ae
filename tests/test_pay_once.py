"""Pay once: attempts whose answer was lost are reconciled before paying again, a cancelled attempt's outcome
never counts, and cancel/resume races end consistently and fast. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import pytest

from conftest import WorkerFactory, sim_job
from reelflow.engine.scheduler import Engine
from reelflow.errors import Conflict
from reelflow.models import ExecutionState
from reelflow.providers.base import (
    CannotReconcile,
    PermanentError,
    ProgressReporter,
    ProviderResult,
    Task,
    TransientError,
)
from reelflow.providers.sim import SimProvider
from reelflow.store.sqlite import SQLiteStore

SEEDANCE = "replicate/bytedance/seedance-1-lite"


@pytest.fixture(autouse=True)
def _replicate_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_test")  # submission checks the key is configured


def jobs_by_id(state: dict[str, Any] | ExecutionState) -> dict[str, dict[str, Any]]:
    """The jobs of a state (the engine's model, or the dict a wait returns) as JSON, by id."""
    data = state.model_dump(mode="json") if isinstance(state, ExecutionState) else state
    return {j["id"]: j for j in data["jobs"]}


class PaidFake:
    """A paid provider whose creates can be taken and their answers lost. `works` is what the provider took
    (and billed): id -> the task's params. `lose` answers to lose, each as a TransientError after the work was
    taken; `refuse` creates refused before anything started (not_sent)."""

    paid = True

    def __init__(self, name: str = "replicate", *, lookup: bool = True) -> None:
        self.name = name
        self.works: dict[str, dict[str, Any]] = {}
        self.created_at: dict[str, float] = {}
        self.lose = 0
        self.refuse = 0
        self.lookups = 0
        self.canceled: list[str] = []
        if not lookup:
            self.find_submitted = None  # type: ignore[assignment]

    async def submit(self, task: Task) -> str:
        if self.refuse:
            self.refuse -= 1
            raise TransientError("fake: 429 too many requests", not_sent=True)
        pid = f"p-{uuid.uuid4().hex[:10]}"
        self.works[pid] = dict(task.params)
        self.created_at[pid] = time.time()
        if self.lose:
            self.lose -= 1
            raise TransientError("fake: create timed out (ReadTimeout)")
        return pid

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        self.lookups += 1
        return [
            pid
            for pid, params in sorted(self.works.items(), key=lambda kv: self.created_at[kv[0]])
            if params == task.params and self.created_at[pid] >= since - 1
        ]

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        if provider_id not in self.works:
            raise PermanentError(f"fake: no work {provider_id}")
        return ProviderResult(outputs=[], fields={"work": provider_id}, cost_usd=0.1)

    async def cancel(self, task: Task, provider_id: str) -> None:
        self.canceled.append(provider_id)


class NoLookup(PaidFake):
    """The same provider without any way to look work up (fal without a request id)."""

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        raise CannotReconcile("fake: no lookup of lost creates")


def seedance(job_key: str, prompt: str) -> dict[str, Any]:
    return {"id": job_key, "type": "generate-video", "model": SEEDANCE, "params": {"prompt": prompt, "duration": 5}}


async def events_of(store: SQLiteStore, eid: str, kind: str) -> list[Any]:
    return [e for e in await store.events(eid) if e.type == kind]


async def test_a_lost_create_answer_is_adopted_not_paid_again(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    fake = PaidFake()
    fake.lose = 1
    eid = await engine.submit({"jobs": [seedance("clip", "waves at dusk")]})
    async with running_worker(providers_={"replicate": fake}):
        state = await engine.wait(eid, timeout=20)
    job = jobs_by_id(state)["clip"]
    assert state["status"] == "succeeded", state
    assert len(fake.works) == 1  # paid once
    [pid] = fake.works
    assert job["provider_job_id"] == pid and job["result"]["work"] == pid
    assert job["attempts"] == 1 and fake.lookups == 1  # asked at once, inside the attempt that lost it
    [reconciled] = await events_of(store, eid, "job.reconciled")
    assert reconciled.data["adopted"] == pid
    assert job["possible_duplicates"] == 0 and job["possible_duplicate_charge"] == 0


async def test_a_refused_create_is_retried_without_asking(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    fake = PaidFake()
    fake.refuse = 2
    eid = await engine.submit({"jobs": [seedance("clip", "rain")]})
    async with running_worker(providers_={"replicate": fake}):
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded"
    assert jobs_by_id(state)["clip"]["attempts"] == 3
    assert fake.lookups == 0 and len(fake.works) == 1
    assert await events_of(store, eid, "job.reconciled") == []


async def test_work_of_another_job_is_never_adopted(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    """Two jobs with the same input: one's lost create must not be "found" as the other's recorded work."""
    fake = PaidFake()
    eid1 = await engine.submit({"jobs": [seedance("a", "same prompt")]})
    async with running_worker(providers_={"replicate": fake}):
        first = await engine.wait(eid1, timeout=20)
        fake.lose = 1
        eid2 = await engine.submit({"jobs": [seedance("a", "same prompt")], "options": {"cache": False}})
        second = await engine.wait(eid2, timeout=20)
    assert first["status"] == second["status"] == "succeeded"
    ids = {jobs_by_id(first)["a"]["provider_job_id"], jobs_by_id(second)["a"]["provider_job_id"]}
    assert len(ids) == 2 and ids == set(fake.works)  # the second adopted its own lost work, not the first's


async def test_where_the_provider_cannot_be_asked_a_possible_duplicate_is_recorded(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    fake = NoLookup()
    fake.lose = 1
    eid = await engine.submit({"jobs": [seedance("clip", "snow")]})
    estimate = (await engine.get(eid)).cost.estimated
    assert estimate > 0
    async with running_worker(providers_={"replicate": fake}):
        state = await engine.wait(eid, timeout=20)
    job = jobs_by_id(state)["clip"]
    assert state["status"] == "succeeded"
    assert len(fake.works) == 2  # paid twice, and it says so
    assert job["possible_duplicates"] == 1
    assert abs(job["possible_duplicate_charge"] - estimate) < 1e-9
    assert state["possible_duplicates"] == 1 and abs(state["possible_duplicate_charge"] - estimate) < 1e-9
    [event] = await events_of(store, eid, "job.possible_duplicate_charge")
    assert event.data["estimated_usd"] == estimate and "no lookup" in event.data["reason"]


async def test_a_worker_stopped_mid_create_hands_the_intent_on(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    """The worker shuts down while a create is under way (its answer never arrives): the job is released, and
    the next worker asks the provider before paying again."""
    fake = PaidFake()
    taken = asyncio.Event()

    class Hanging(PaidFake):
        async def submit(self, task: Task) -> str:
            if not taken.is_set():
                pid = f"p-{uuid.uuid4().hex[:10]}"
                fake.works[pid] = dict(task.params)
                fake.created_at[pid] = time.time()
                taken.set()
                await asyncio.sleep(3600)
            return await fake.submit(task)

    eid = await engine.submit({"jobs": [seedance("clip", "fog")]})
    async with running_worker(providers_={"replicate": Hanging()}, drain_timeout_s=0.2):
        await asyncio.wait_for(taken.wait(), 10)
    assert jobs_by_id(await engine.get(eid))["clip"]["status"] == "queued"
    async with running_worker(providers_={"replicate": fake}):
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded"
    assert len(fake.works) == 1 and fake.lookups == 1


async def test_cancel_then_resume_never_ends_with_the_canceled_attempt(
    engine: Engine, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    """The race 100 times at once: each execution's job is cancelled mid-wait and resumed at once. Every job
    must end with the result of the attempt after the resume, and every cancelled attempt's remote work must
    be cancelled at the provider (nothing orphaned, nothing paid for nobody)."""
    n = int(__import__("os").environ.get("RACE_N", "100"))
    eids = [await engine.submit({"jobs": [sim_job("clip", latency_s=3)]}) for _ in range(n)]
    async with running_worker():
        first: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(first) < n and time.monotonic() < deadline:
            for eid in eids:
                if eid not in first and (pid := jobs_by_id(await engine.get(eid))["clip"]["provider_job_id"]):
                    first[eid] = pid
            await asyncio.sleep(0.02)
        assert len(first) == n

        async def race(eid: str) -> float:
            await engine.cancel(eid)
            t = time.monotonic()
            await engine.resume(eid)
            return t

        resumed_at = dict(zip(eids, await asyncio.gather(*(race(e) for e in eids)), strict=True))
        states = await asyncio.gather(*(engine.wait(e, timeout=60) for e in eids))
        deadline = time.monotonic() + 10
        while len(set(sim.canceled) & set(first.values())) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    for eid, state in zip(eids, states, strict=True):
        job = jobs_by_id(state)["clip"]
        assert state["status"] == "succeeded", state
        assert job["provider_job_id"] != first[eid]  # the new attempt's work, not the canceled one's
        assert job["result"]["provider_id"] == job["provider_job_id"]
        assert job["attempts"] == 1
        assert state["finished_at"] is not None
        del resumed_at[eid]
    assert set(first.values()) <= set(sim.canceled)  # every canceled attempt's work was canceled there


async def test_concurrent_cancels_and_resumes_answer_fast_and_consistently(
    engine: Engine, running_worker: WorkerFactory
) -> None:
    eid = await engine.submit({"jobs": [sim_job(f"j{i}", latency_s=5) for i in range(5)]})
    async with running_worker():
        deadline = time.monotonic() + 10
        while (await engine.get(eid)).status != "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

        async def one(op: str) -> tuple[str, float]:
            t = time.monotonic()
            try:
                await (engine.cancel(eid) if op == "cancel" else engine.resume(eid))
                answer = "200"
            except Conflict:
                answer = "409"
            return answer, time.monotonic() - t

        ops = ["cancel", "resume"] * 20
        answers = await asyncio.gather(*(one(op) for op in ops))
        final = await engine.get(eid)
    codes = {a for a, _ in answers}
    durations = sorted(d for _, d in answers)
    print(f"40 concurrent cancel/resume: p50 {statistics.median(durations) * 1000:.0f} ms,"
          f" max {durations[-1] * 1000:.0f} ms, answers {sorted(codes)}")  # fmt: skip
    assert codes <= {"200", "409"} and "200" in codes
    assert durations[-1] < 5.0
    statuses = {j.status for j in final.jobs}
    if final.status == "canceled":
        assert statuses == {"canceled"}
    else:
        assert final.status in ("running", "queued") and statuses <= {"queued", "running"}


async def test_a_claim_whose_answer_was_lost_costs_no_attempt(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    """The claim commits but its answer never arrives (the connection died during COMMIT): the worker finds the
    jobs leased to it at its next heartbeat and hands them back at once, instead of letting the lease run out
    and the job come back as a second attempt."""

    class LosesOneClaimAnswer:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.lost: list[int] = []

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def claim(self, *args: Any, **kwargs: Any) -> Any:
            got = await self.inner.claim(*args, **kwargs)
            if got and not self.lost:
                self.lost = [c.id for c in got]
                raise ConnectionError("server closed the connection unexpectedly (during COMMIT)")
            return got

    flaky = LosesOneClaimAnswer(store)
    eid = await engine.submit({"jobs": [sim_job("a", latency_s=0.2), sim_job("b", latency_s=0.2)]})
    started = time.monotonic()
    async with running_worker(store_=flaky):
        state = await engine.wait(eid, timeout=30)
    assert flaky.lost  # the fault happened
    assert state["status"] == "succeeded"
    assert {j["attempts"] for j in state["jobs"]} == {1}
    assert time.monotonic() - started < 5  # well within the 5 s lease: handed back, not expired


async def test_canceling_a_handed_back_job_cancels_its_remote_work(
    engine: Engine, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    """A job handed back to the queue with its provider id (Ctrl-C on a wait, a shutdown) and then canceled:
    the next worker's lease recovery cancels the remote work, which nobody waits on any more."""
    eid = await engine.submit({"jobs": [sim_job("long", latency_s=30)]})
    async with running_worker(drain_timeout_s=0):
        deadline = time.monotonic() + 10
        while not (pid := jobs_by_id(await engine.get(eid))["long"]["provider_job_id"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    assert jobs_by_id(await engine.get(eid))["long"]["status"] == "queued"
    await engine.cancel(eid)
    assert sim.canceled == []
    async with running_worker():
        deadline = time.monotonic() + 5
        while pid not in sim.canceled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert sim.canceled == [pid]


async def test_a_finished_job_waiting_for_its_write_is_not_handed_back(
    engine: Engine, store: SQLiteStore, sim: SimProvider, running_worker: WorkerFactory
) -> None:
    """The database refuses the writes of outcomes for a few seconds: heartbeats that meanwhile see the finished
    jobs still `running` under this worker must not take them for unknown leases (handing them back would run,
    and pay for, them again)."""

    class RefusesFinishesForAWhile:
        def __init__(self, inner: Any, refuse_s: float) -> None:
            self.inner = inner
            self.until = time.monotonic() + refuse_s
            self.refused = 0

        def __getattr__(self, name: str) -> Any:
            found = getattr(self.inner, name)
            if name not in ("finish_jobs", "finish_and_claim"):
                return found

            async def refusing(*args: Any, **kwargs: Any) -> Any:
                if time.monotonic() < self.until:
                    self.refused += 1
                    raise ConnectionError("the database is away")
                return await found(*args, **kwargs)

            return refusing

    plan = {"jobs": [sim_job(f"j{i}", latency_s=0.1) for i in range(3)], "options": {"cache": False}}
    eid = await engine.submit(plan)
    flaky = RefusesFinishesForAWhile(store, refuse_s=4.0)  # more than two heartbeats (every 1.25 s)
    async with running_worker(store_=flaky):
        state = await engine.wait(eid, timeout=30)
    assert flaky.refused >= 3
    assert state["status"] == "succeeded"
    assert sim.submitted == 3  # each job ran once
    released = [e for e in await store.events(eid) if e.type == "job.released"]
    assert released == []
