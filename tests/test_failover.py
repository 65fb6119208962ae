"""Failover between models: a job given `model: [primary, alternative, ...]` moves on when its model is down."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from apiserver import ApiServer, server_settings
from conftest import WorkerFactory
from fakes.replicate import FakeReplicate
from providerfakes import replicate_adapter, replicate_fixture
from reelflow import sdk
from reelflow.api.app import create_app
from reelflow.circuits import Admission, Admit, CircuitConfig, CircuitOp, Outcome, circuit_keys
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.errors import PlanError
from reelflow.estimate import estimate_plan
from reelflow.limits import reset_limits
from reelflow.plan import parse_plan
from reelflow.providers.registry import Providers
from reelflow.providers.replicate import ReplicateProvider
from reelflow.store import open_store
from reelflow.store.sqlite import SQLiteStore
from test_worker_processes import start_worker, wait_for

PRO = "replicate/bytedance/seedance-1-pro"
LITE = "replicate/bytedance/seedance-1-lite"
KLING = "replicate/kwaivgi/kling-v2.1"


fake = replicate_fixture(latency_s=0.1, queue_s=0.02)


def adapter(fake: FakeReplicate) -> ReplicateProvider:
    return replicate_adapter(fake, poll_initial_s=0.02)


def clip(job_key: str, model: str | list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": job_key,
        "type": "generate-video",
        "model": model,
        "params": {"prompt": f"slow waves at dusk ({job_key})", "duration": 5},
        "max_attempts": 2,
        **extra,
    }


def test_an_alternative_that_cannot_take_a_param_is_refused_naming_model_and_param() -> None:
    job = clip("v", [PRO, KLING])
    job["params"]["camera_fixed"] = True
    with pytest.raises(PlanError) as err:
        parse_plan({"jobs": [job]})
    items = [i for i in err.value.errors if i.loc == ["jobs", 0, "params", "camera_fixed"]]
    assert len(items) == 1  # the primary takes it: only the alternative is named
    assert KLING in items[0].msg and "camera_fixed" in items[0].msg
    assert all(KLING in i.msg for i in err.value.errors)


def test_alternatives_must_be_catalogued_models_of_the_type_and_distinct() -> None:
    with pytest.raises(PlanError) as err:
        parse_plan({"jobs": [clip("v", [PRO, PRO, "sim/image", "replicate/nobody/nothing"])]})
    locs = [i.loc for i in err.value.errors]
    assert ["jobs", 0, "model", 1] in locs and ["jobs", 0, "model", 2] in locs and ["jobs", 0, "model", 3] in locs


def test_the_estimate_is_the_most_expensive_alternative() -> None:
    lite_only = estimate_plan({"jobs": [clip("v", LITE)]})["cost_usd"]
    pro_only = estimate_plan({"jobs": [clip("v", PRO)]})["cost_usd"]
    assert lite_only < pro_only
    assert estimate_plan({"jobs": [clip("v", [LITE, PRO])]})["cost_usd"] == pro_only


async def test_a_down_model_fails_over_and_the_cost_is_the_model_that_ran(
    engine: Engine, store: SQLiteStore, fake: FakeReplicate, running_worker: WorkerFactory
) -> None:
    fake.down_models.add(PRO.removeprefix("replicate/"))
    eid = await engine.submit({"jobs": [clip(f"v{i}", [PRO, LITE]) for i in range(3)]})
    submitted = await engine.get(eid)
    pro_estimate = estimate_plan({"jobs": [clip("v", PRO)]})["cost_usd"]
    assert all(j.cost.estimated == pro_estimate for j in submitted.jobs)
    async with running_worker(providers_={"replicate": adapter(fake)}):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state
    lite_estimate = estimate_plan({"jobs": [clip("v", LITE)]})["cost_usd"]
    for job in state["jobs"]:
        assert job["model"] == LITE
        assert job["models"] == [PRO, LITE]
        assert [f["model"] for f in job["failover"]] == [PRO]
        reason = job["failover"][0]["reason"]
        assert "after 2 attempts" in reason or reason == "circuit open"
        assert job["cost"]["actual"] == pytest.approx(lite_estimate)
    assert fake.create_calls[PRO.removeprefix("replicate/")] <= 2 * 3
    moves = [e for e in await store.events(eid) if e.type == "job.failover"]
    assert len(moves) == 3
    assert all(e.data["from"] == PRO and e.data["to"] == LITE for e in moves)


async def test_a_permanent_error_does_not_fail_over_unless_failover_on_any(
    engine: Engine, fake: FakeReplicate, running_worker: WorkerFactory
) -> None:
    fake.failing_models[PRO.removeprefix("replicate/")] = "The input or output was flagged as sensitive (E005)"
    plan = {
        "jobs": [clip("strict", [PRO, LITE]), clip("lenient", [PRO, LITE], failover_on="any")],
        "options": {"on_failure": "continue"},
    }
    eid = await engine.submit(plan)
    async with running_worker(providers_={"replicate": adapter(fake)}):
        state = await engine.wait(eid, timeout=30)
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["strict"]["status"] == "failed"
    assert jobs["strict"]["model"] == PRO and jobs["strict"]["failover"] == []
    assert "E005" in jobs["strict"]["error"]
    assert jobs["lenient"]["status"] == "succeeded"
    assert jobs["lenient"]["model"] == LITE
    assert "E005" in jobs["lenient"]["failover"][0]["reason"]


# ---------------------------------------------------------------------------------------- circuits
def limits_file(tmp_path: Path, failures: int, cooldown_s: float) -> str:
    path = tmp_path / "limits.yml"
    path.write_text(f"providers:\n  replicate: {{circuit: {{failures: {failures}, cooldown_s: {cooldown_s}}}}}\n")
    return str(path)


async def test_a_down_model_gets_at_most_n_creates_across_three_worker_processes(
    engine: Engine, store: SQLiteStore, fake: FakeReplicate, worker_env: dict[str, str], tmp_path: Path
) -> None:
    n = 3
    down = PRO.removeprefix("replicate/")
    fake.down_models.add(down)
    env = worker_env | {
        "REPLICATE_API_TOKEN": fake.token,
        "REELFLOW_REPLICATE_BASE_URL": fake.base_url,
        "REELFLOW_LIMITS_FILE": limits_file(tmp_path, n, 60),
    }
    eid = await engine.submit({"jobs": [clip(f"v{i}", [PRO, LITE], max_attempts=3) for i in range(9)]})
    workers = [start_worker(env, tmp_path, f"w{i}", "--concurrency", "1") for i in range(3)]
    try:
        state = await engine.wait(eid, timeout=90)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    assert state["status"] == "succeeded", [(j["id"], j["status"], j["error"]) for j in state["jobs"]]
    assert all(j["model"] == LITE for j in state["jobs"])
    assert fake.create_calls[down] <= n
    reasons = [j["failover"][0]["reason"] for j in state["jobs"]]
    assert any(r == "circuit open" for r in reasons)  # the jobs after the opening moved on without trying
    circuits = {c.key: c for c in await store.circuits()}
    assert circuits[PRO].state == "open"
    assert circuits["replicate"].state == "closed"  # one model down does not take its provider down


async def test_without_an_alternative_jobs_wait_queued_and_a_probe_closes_the_circuit(
    engine: Engine, store: SQLiteStore, settings: Settings, fake: FakeReplicate, running_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    reset_limits()
    settings.limits_file = limits_file(tmp_path, 2, 1.0)
    down = LITE.removeprefix("replicate/")
    fake.down_models.add(down)
    eid = await engine.submit({"jobs": [clip(f"v{i}", LITE, max_attempts=5) for i in range(4)]})
    try:
        async with running_worker(providers_={"replicate": adapter(fake)}, concurrency=1):

            async def opened() -> bool:
                return any(c.key == LITE and c.state == "open" for c in await store.circuits())

            await wait_for(opened, timeout=20)
            opened_at = time.monotonic()
            await asyncio.sleep(2.5)  # past a cool-down: a probe fails and opens it again
            state = (await engine.get(eid)).model_dump(mode="json")
            probes = int((time.monotonic() - opened_at) / 1.0) + 1  # one per cool-down at most
            assert all(j["status"] in ("queued", "running") for j in state["jobs"]), state["jobs"]
            # waiting on the circuit, probing: none spent (a running job may be a probe, its attempt not yet given back)
            assert all(j["attempts"] - (j["status"] == "running") <= 2 for j in state["jobs"]), state["jobs"]
            sent = fake.create_calls[down]
            assert 2 <= sent <= 2 + probes, (sent, probes)  # the failures that opened it, then the probes
            fake.down_models.clear()
            state = await engine.wait(eid, timeout=30)
    finally:
        reset_limits()
    assert state["status"] == "succeeded"
    assert all(j["model"] == LITE and j["failover"] == [] for j in state["jobs"])
    circuits = {c.key: c for c in await store.circuits()}
    assert circuits[LITE].state == "closed"
    assert circuits[LITE].success_rate() is not None


@pytest.mark.sqlite_only
def test_get_providers_and_the_metric_show_an_open_circuit(tmp_path: Path, fake: FakeReplicate) -> None:
    down = PRO.removeprefix("replicate/")
    fake.down_models.add(down)
    reset_limits()
    settings = server_settings(
        tmp_path, allow_private_urls=True, callbacks=False, limits_file=limits_file(tmp_path, 2, 60)
    )
    providers = Providers({"replicate": adapter(fake)})
    try:
        with ApiServer(settings, app=create_app(settings, workers=1, providers=providers)) as api:
            key = api.new_key("acme")
            with api.client(key.api_key) as http:
                plan = {"jobs": [clip(f"v{i}", [PRO, LITE], max_attempts=3) for i in range(3)]}
                eid = http.post("/v1/executions", json=plan).json()["id"]
                deadline = time.monotonic() + 30
                while http.get(f"/v1/executions/{eid}").json()["status"] not in ("succeeded", "failed"):
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                answer = http.get("/v1/providers")
                assert answer.status_code == 200
                replicate = next(p for p in answer.json()["data"] if p["provider"] == "replicate")
                assert replicate["circuit"]["state"] == "closed"
                models = {m["model"]: m for m in replicate["models"]}
                assert models[PRO]["circuit"]["state"] == "open"
                assert models[PRO]["circuit"]["open_until"] is not None
                assert models[PRO]["circuit"]["success_rate"] == 0.0
                assert models[PRO]["circuit"]["failures_to_open"] == 2
                assert models[LITE]["circuit"]["state"] == "closed"
                assert models[LITE]["circuit"]["success_rate"] == 1.0
                text = http.get("/metrics").text
                assert f'reelflow_provider_circuit_state{{model="{PRO}",provider="replicate"}} 2.0' in text
                assert f'reelflow_provider_circuit_state{{model="{LITE}",provider="replicate"}} 0.0' in text
    finally:
        reset_limits()


def test_the_sdk_takes_a_list_of_models() -> None:
    step = sdk.generate_video(model=[PRO, LITE], prompt="waves", duration=5, id="v")
    assert step.plan()["jobs"][0]["model"] == [PRO, LITE]
    assert parse_plan(step.plan()).jobs[0].models == [PRO, LITE]


def test_stats_lists_the_circuits_not_closed(capsys: pytest.CaptureFixture[str]) -> None:
    from reelflow.cli.usage import _show_circuits

    closed = {"state": "closed", "consecutive_failures": 0, "open_until": None}
    opened = {"state": "open", "consecutive_failures": 5, "open_until": "2026-12-06T18:00:00.000Z"}
    _show_circuits([{"provider": "replicate", "circuit": closed, "models": [{"model": PRO, "circuit": opened}]}])
    assert f"{PRO} open until 2026-12-06T18:00:00.000Z (5 failures in a row)" in capsys.readouterr().out


async def test_resume_starts_a_failed_over_job_from_its_first_model_again(
    engine: Engine, fake: FakeReplicate, running_worker: WorkerFactory
) -> None:
    for model in (PRO, LITE):
        fake.down_models.add(model.removeprefix("replicate/"))
    eid = await engine.submit({"jobs": [clip("v", [PRO, LITE], max_attempts=1)]})
    async with running_worker(providers_={"replicate": adapter(fake)}):
        failed = await engine.wait(eid, timeout=30)
        assert failed["status"] == "failed"
        assert failed["jobs"][0]["model"] == LITE and [f["model"] for f in failed["jobs"][0]["failover"]] == [PRO]
        fake.down_models.clear()
        await engine.resume(eid)
        state = await engine.wait(eid, timeout=30)
    job = state["jobs"][0]
    assert state["status"] == "succeeded"
    assert job["model"] == PRO and job["failover"] == []


async def test_a_model_failing_every_other_create_opens_on_its_success_rate(store: SQLiteStore) -> None:
    """Never two failures in a row, so `failures` alone would never open it; under 60% of successes over 20
    creates does, on the failure that takes the window there, not before."""
    cfg = CircuitConfig(failures=5, cooldown_s=30, min_success_rate=0.6, min_calls=20)
    keys = [(k, p, m, cfg) for k, p, m in circuit_keys("replicate", PRO)]
    states = []
    for n in range(24):
        answer = await store.circuit_admit(keys, f"w:{n}", now=1000.0 + n)
        if not answer.allowed:
            break
        circuits = await store.circuit_record(keys, n % 2 == 0, answer.reserved, now=1000.0 + n)
        states.append(circuits[1].state)
    assert states[:19] == ["closed"] * 19  # 19 creates: the window is still too small to judge
    assert states[19] == "open" and len(states) == 20  # the 20th (a failure): 10 of 20, under 60%
    by_key = {c.key: c for c in await store.circuits()}
    assert by_key[PRO].success_rate() == 0.5 and by_key[PRO].failures == 1
    assert by_key["replicate"].state == "closed"  # one model's poor rate does not open its provider


async def test_the_success_rate_rule_can_be_turned_off(store: SQLiteStore) -> None:
    cfg = CircuitConfig(failures=5, cooldown_s=30, min_success_rate=0.0, min_calls=1)
    keys = [(k, p, m, cfg) for k, p, m in circuit_keys("replicate", PRO)]
    for n in range(30):
        answer = await store.circuit_admit(keys, f"w:{n}", now=1000.0 + n)
        assert answer.allowed
        await store.circuit_record(keys, n % 3 == 0, answer.reserved, now=1000.0 + n)
    assert {c.key: c for c in await store.circuits()}[PRO].state == "closed"


async def test_circuit_steps_written_together_end_as_the_same_steps_written_one_by_one(
    store: SQLiteStore, settings: Settings, tmp_path: Path
) -> None:
    """A worker's admissions and outcomes go many to a transaction: the answers and the circuits must be
    those of the same steps made one at a time, a circuit opening on its 3rd failure in a row mid-batch."""
    cfg = CircuitConfig(failures=3, cooldown_s=30, min_success_rate=0.0, min_calls=1)
    keys = [(k, p, m, cfg) for k, p, m in circuit_keys("replicate", PRO)]
    steps: list[CircuitOp] = []
    for n in range(6):
        steps.append(Admit(keys, f"w:{n}"))
        steps.append(Outcome(keys, n == 0, [k for k, *_ in keys]))
    steps.append(Admit(keys, "w:late"))  # the circuit is open by now: refused
    one_by_one = [await store.circuit_steps([step], now=1000.0) for step in steps]
    apart = {c.key: c for c in await store.circuits()}
    together_store = open_store(f"sqlite:///{tmp_path}/together.db")
    await together_store.migrate()
    try:
        together = await together_store.circuit_steps(steps, now=1000.0)
        joined = {c.key: c for c in await together_store.circuits()}
    finally:
        await together_store.close()
    assert together == [answer for (answer,) in one_by_one]
    assert joined == apart
    late = together[-1]
    assert isinstance(late, Admission) and not late.allowed and late.why == "open"
    assert joined[PRO].state == "open" and joined[PRO].ok_count == 1 and joined[PRO].fail_count == 5


async def test_a_burst_of_creates_asks_the_circuits_in_a_few_transactions_and_counts_every_create(
    engine: Engine, store: SQLiteStore, fake: FakeReplicate, running_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    trips: list[int] = []
    steps = store.circuit_steps

    async def counted(batch: Any, now: float | None = None) -> Any:
        trips.append(len(batch))
        return await steps(batch, now)

    monkeypatch.setattr(store, "circuit_steps", counted)
    eid = await engine.submit({"jobs": [clip(f"v{i}", LITE) for i in range(30)]})
    async with running_worker(providers_={"replicate": adapter(fake)}):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state["error"]
    assert sum(trips) == 60  # an admission and an outcome for each of the 30 creates
    assert trips[0] >= 10 and len(trips) < 45, trips  # the claimed burst asks together (one transaction each: 60)
    circuits = {c.key: c for c in await store.circuits()}
    assert circuits[LITE].ok_count == 30 and circuits[LITE].pending == 0
    assert circuits["replicate"].ok_count == 30 and circuits["replicate"].pending == 0
