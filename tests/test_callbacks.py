"""Provider callbacks end to end: a real API server takes Replicate's (and fal's) signed webhooks and wakes the
worker waiting on the work; a body that tells how the work ended travels with the wake-up, through the database,
and the worker finishes from it without asking the provider again. Bad signatures change nothing, a body about
other work (a replay of an earlier attempt's) finishes nothing, a body that does not tell the end leads to one
confirming read; a lost callback is covered by (slow) polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from apiserver import ApiServer
from conftest import WorkerFactory
from fakes.fal import FakeFal
from fakes.replicate import FakeReplicate
from reelflow.api.app import create_app, kept_outcome
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers.fal import FalProvider
from reelflow.providers.registry import Providers
from reelflow.providers.replicate import ReplicateProvider
from reelflow.store.common import CALLBACK_OUTCOME_MAX_BYTES
from reelflow.store.sqlite import SQLiteStore

SEEDANCE = "replicate/bytedance/seedance-1-lite"


def video_job(job_key: str = "clip") -> dict[str, Any]:
    return {"id": job_key, "type": "generate-video", "model": SEEDANCE, "params": {"prompt": "waves", "duration": 5}}


@pytest.fixture
async def wired(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FakeReplicate, ReplicateProvider, ApiServer]]:
    """A Replicate fake, an adapter that would poll only every 30 s, and an API server taking callbacks."""
    with FakeReplicate(latency_s=0.6, queue_s=0.1) as fake:
        monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
        provider = ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, callback_poll_s=30.0)
        # the API server runs its own event loop: it gets its own adapter (and pooled client)
        receiver = ReplicateProvider(fake.token, fake.base_url)
        app = create_app(settings, providers=Providers({"replicate": receiver}), deliver_webhooks=False)
        api = ApiServer(settings, app=app).start()
        settings.public_url = api.url
        settings.callbacks = True
        try:
            yield fake, provider, api
        finally:
            api.stop()
            await provider.aclose()


async def test_a_job_completes_from_the_callback_with_two_provider_requests(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, provider, _ = wired
    eid = await engine.submit({"jobs": [video_job()]})
    started = time.monotonic()
    async with running_worker(providers_={"replicate": provider}):
        state = await engine.wait(eid, timeout=20)
    took = time.monotonic() - started
    assert state["status"] == "succeeded", state
    create = fake.requests_to("/v1/models/")[0]
    assert (
        create["raw_body"]
        and b'"webhook"' in create["raw_body"]
        and b"/v1/providers/replicate/callback" in (create["raw_body"])
    )
    assert fake.webhooks_sent == 1 and fake.webhook_answers == {200: 1}
    # the create and the download, nothing else: the webhook's body was the outcome (no confirming read), and no
    # polling (the first poll would be at 30 s); the API read the account's signing secret once, for every job
    per_job = [r["path"] for r in fake.requests if r["path"] != "/v1/webhooks/default/secret"]
    assert len(per_job) == 2 and per_job[0].startswith("/v1/models/") and per_job[1].startswith("/files/"), per_job
    assert (fake.creates, fake.gets, fake.lists, fake.secret_reads) == (1, 0, 0, 1)
    assert took < 5.0, f"the callback should finish the job at once (took {took:.1f} s)"
    job = state["jobs"][0]
    pid = job["result"]["provider_id"]
    assert pid in fake.predictions and per_job[1] == f"/files/{pid}.mp4"
    assert job["result"]["predict_time"] == fake.latency_s  # read from the webhook's body
    logs = await engine.store.job_logs(eid, "clip")
    assert logs is not None and "Generating" in logs.text  # the prediction's logs, from the webhook's body


async def test_a_callback_with_a_bad_signature_is_refused_and_changes_nothing(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    wired: tuple[FakeReplicate, ReplicateProvider, ApiServer],
) -> None:
    fake, provider, api = wired
    fake.latency_s = 30.0
    eid = await engine.submit({"jobs": [video_job()]})
    async with running_worker(providers_={"replicate": provider}):
        for _ in range(200):
            job = (await engine.get(eid)).jobs[0]
            if fake.creates and job.status == "running":
                break
            await asyncio.sleep(0.02)
        pid = next(iter(fake.predictions))
        body = f'{{"id": "{pid}", "status": "succeeded", "output": "https://evil.example/x.mp4"}}'.encode()
        headers = {
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,bm90IGEgcmVhbCBzaWduYXR1cmU=",
            "content-type": "application/json",
        }
        async with httpx.AsyncClient(base_url=api.url) as http:
            answer = await http.post(
                f"/v1/providers/replicate/callback?execution={eid}&job=clip", content=body, headers=headers
            )
            unsigned = await http.post("/v1/providers/replicate/callback", content=body)
            unknown = await http.post("/v1/providers/nobody/callback", content=body, headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert unsigned.status_code == 401
        assert unknown.status_code == 404
        await asyncio.sleep(1.0)  # a woken worker would have read the prediction by now
        assert fake.gets == 0
        job = (await engine.get(eid)).jobs[0]
        assert job.status == "running" and job.result is None
        await engine.cancel(eid)
        await engine.wait(eid, timeout=10)
    assert fake.cancels == 1


async def test_a_tampered_webhook_is_refused_and_polling_finishes_the_job(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, provider, _ = wired
    fake.tamper_webhooks = True
    provider.callback_poll_s = 1.5
    eid = await engine.submit({"jobs": [video_job()]})
    async with running_worker(providers_={"replicate": provider}):
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded", state  # the tampered body said "failed": it was not believed
    assert fake.webhooks_sent == 1
    assert fake.gets >= 1


async def test_a_lost_callback_is_covered_by_polling(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, provider, _ = wired
    fake.drop_webhooks = True
    provider.callback_poll_s = 1.0
    eid = await engine.submit({"jobs": [video_job("a"), video_job("b")]})
    started = time.monotonic()
    async with running_worker(providers_={"replicate": provider}):
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded", state
    assert fake.webhooks_sent == 0
    assert 1.0 <= time.monotonic() - started < 8.0
    assert fake.gets <= 2 * 3  # slow polling: a few reads per job, not one every 50 ms


async def test_a_callback_for_a_finished_or_unknown_job_is_acknowledged(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, _, api = wired
    body = '{"id": "abcdef123", "status": "succeeded"}'
    sig = Webhook(fake.webhook_secret).sign("msg_1", datetime.now(UTC), body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())), "webhook-signature": sig}
    async with httpx.AsyncClient(base_url=api.url) as http:
        answer = await http.post(
            "/v1/providers/replicate/callback?execution=ex_nope&job=clip", content=body, headers=headers
        )
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "job": "unknown"}


def signed(fake: FakeReplicate, body: dict[str, Any] | bytes) -> tuple[dict[str, str], bytes]:
    """Headers and bytes of a webhook signed with the fake account's secret, as Replicate signs (so it verifies)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id, now = f"msg_{time.time_ns()}", datetime.now(UTC)
    signature = Webhook(fake.webhook_secret).sign(msg_id, now, raw.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}, raw


async def call_back(api: ApiServer, fake: FakeReplicate, body: dict[str, Any] | bytes, query: str = "") -> str:
    """POST a signed webhook to our callback route; what the route did with the job."""
    headers, raw = signed(fake, body)
    async with httpx.AsyncClient(base_url=api.url) as http:
        answer = await http.post(f"/v1/providers/replicate/callback{query}", content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["job"])


async def running_job(engine: Engine, eid: str, creates: int, fake: FakeReplicate) -> dict[str, Any]:
    """The job of `eid` once it runs on the provider with its provider id recorded (after `creates` creates)."""
    for _ in range(500):
        job = (await engine.get(eid)).jobs[0]
        if fake.creates >= creates and job.status == "running" and job.provider_job_id:
            return job.model_dump(mode="json")
        await asyncio.sleep(0.02)
    raise AssertionError(f"the job never ran with a recorded provider id: {job}")


async def settle(until: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_verified_callback_about_another_prediction_changes_nothing(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, provider, api = wired
    fake.latency_s = 30.0
    eid = await engine.submit({"jobs": [video_job()]})
    async with running_worker(providers_={"replicate": provider}):
        job = await running_job(engine, eid, 1, fake)
        other = {"id": "someoneelses1", "status": "succeeded", "output": "https://evil.example/x.mp4"}
        assert await call_back(api, fake, other, f"?execution={eid}&job=clip") == "mismatch"
        assert await call_back(api, fake, other) == "unknown"
        await asyncio.sleep(1.0)  # a woken worker would have read the prediction (or finished) by now
        assert fake.gets == 0
        after = (await engine.get(eid)).jobs[0]
        assert after.status == "running" and after.result is None
        assert after.provider_job_id == job["provider_job_id"]
        await engine.cancel(eid)
        await engine.wait(eid, timeout=10)
    assert fake.cancels == 1


def test_an_outcome_is_kept_as_ascii_json_and_only_up_to_its_bound() -> None:
    odd = {"id": "p1", "status": "failed", "error": "a NUL \u0000 and a lone \ud800 surrogate", "output": None}
    kept = kept_outcome(odd)
    assert kept is not None and kept.isascii() and "\\u0000" in kept and json.loads(kept) == odd
    assert kept_outcome(None) is None
    edge = {"id": "p1", "status": "succeeded", "output": "https://x.example/a.mp4", "logs": ""}
    edge["logs"] = "x" * (CALLBACK_OUTCOME_MAX_BYTES - len(json.dumps(edge, separators=(",", ":"))))
    assert kept_outcome(edge) is not None and len(kept_outcome(edge) or "") == CALLBACK_OUTCOME_MAX_BYTES
    assert kept_outcome({**edge, "logs": edge["logs"] + "x"}) is None


async def test_callbacks_that_do_not_tell_the_end_lead_to_a_confirming_read(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, provider, api = wired
    fake.latency_s = 3.0
    eid = await engine.submit({"jobs": [video_job()]})
    where = f"?execution={eid}&job=clip"
    async with running_worker(providers_={"replicate": provider}):
        pid = (await running_job(engine, eid, 1, fake))["provider_job_id"]
        # still running (an `output` or `logs` event), then "succeeded" without its output: each wakes the worker,
        # which reads the prediction once and waits on (it is still processing)
        assert await call_back(api, fake, {"id": pid, "status": "processing", "output": None}, where) == "woken"
        await settle(lambda: fake.gets == 1)
        assert await call_back(api, fake, {"id": pid, "status": "succeeded"}, where) == "woken"
        await settle(lambda: fake.gets == 2)
        # a finished prediction whose body is too big to keep with the wake-up: read as well, never believed
        big = {"id": pid, "status": "succeeded", "output": "https://evil.example/x.mp4", "logs": "x" * 70_000}
        assert await call_back(api, fake, big, where) == "woken"
        await settle(lambda: fake.gets == 3)
        assert (await engine.get(eid)).jobs[0].status == "running"
        state = await engine.wait(eid, timeout=20)  # then the real webhook ends it, with no read
    assert state["status"] == "succeeded", state
    assert state["jobs"][0]["result"]["provider_id"] == pid
    assert (fake.creates, fake.gets, fake.webhooks_sent) == (1, 3, 1)


async def test_a_replayed_callback_finishes_no_later_attempt_and_nothing_twice(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    fake, provider, api = wired
    fake.latency_s = 0.3
    fake.prediction_fails("the GPU caught fire")
    eid = await engine.submit({"jobs": [video_job()]})
    where = f"?execution={eid}&job=clip"
    async with running_worker(providers_={"replicate": provider}):
        first = await engine.wait(eid, timeout=20)
        assert first["status"] == "failed" and "caught fire" in first["jobs"][0]["error"], first
        assert (fake.creates, fake.gets) == (1, 0)  # failed from the webhook's body
        [x] = fake.predictions
        replay = json.dumps(fake._view(fake.predictions[x])).encode()  # the failed prediction's webhook, again
        fake.prediction_fails(None)
        fake.latency_s = 2.0
        await engine.resume(eid)
        await running_job(engine, eid, 2, fake)
        # the earlier attempt's webhook, replayed with a fresh signature: it is about prediction x, not the one
        # this attempt waits on, so it fails nothing
        assert await call_back(api, fake, replay, where) == "mismatch"
        await asyncio.sleep(0.8)
        assert (await engine.get(eid)).jobs[0].status == "running"
        second = await engine.wait(eid, timeout=20)
        assert second["status"] == "succeeded", second
        y = second["jobs"][0]["result"]["provider_id"]
        assert y != x and fake.creates == 2 and fake.gets == 0
        # the same (verified) webhook of the finished attempt, sent again: nothing changes
        again = json.dumps(fake._view(fake.predictions[y])).encode()
        assert await call_back(api, fake, again, where) == "ignored"
        assert await call_back(api, fake, replay, where) == "mismatch"
        await asyncio.sleep(0.8)
    final = await engine.get(eid)
    assert final.status == "succeeded" and final.jobs[0].result == second["jobs"][0]["result"]
    events = [e.type for e in await engine.store.events(eid)]
    assert events.count("job.succeeded") == 1 and events.count("job.failed") == 1, events
    assert fake.gets == 0 and len(fake.requests_to("/files/")) == 1


async def test_an_earlier_attempts_outcome_that_arrives_first_is_not_believed(
    engine: Engine, running_worker: WorkerFactory, wired: tuple[FakeReplicate, ReplicateProvider, ApiServer]
) -> None:
    """The job's provider id is not recorded yet when a replay of another prediction's webhook arrives (it then
    matches, and wakes the job with that outcome): the adapter compares the ids and reads its own prediction."""
    fake, provider, api = wired
    fake.latency_s = 1.0
    fake.accept_then_delay(1, 1.0)  # the create's answer (the provider id) comes a second late
    eid = await engine.submit({"jobs": [video_job()]})
    stale = {"id": "earlier0attempt", "status": "failed", "error": "an earlier attempt's failure"}
    async with running_worker(providers_={"replicate": provider}):
        await settle(lambda: fake.creates == 1)
        job = (await engine.get(eid)).jobs[0]
        assert job.status == "running" and job.provider_job_id is None
        assert await call_back(api, fake, stale, f"?execution={eid}&job=clip") == "woken"
        state = await engine.wait(eid, timeout=20)
    assert state["status"] == "succeeded", state
    assert state["jobs"][0]["result"]["provider_id"] in fake.predictions
    assert (fake.creates, fake.gets) == (1, 1)  # the stale outcome led to one read of its own prediction


async def test_an_embedded_worker_is_handed_the_outcome_and_the_database_keeps_none(
    engine: Engine, store: SQLiteStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --workers N`: the callback route hands the outcome to the embedded worker holding the job; the job's
    row keeps no copy (the worker would read it after the job had finished, and leave it there)."""
    with FakeReplicate(latency_s=0.6, queue_s=0.1) as fake:
        monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
        provider = ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, callback_poll_s=30.0)
        settings.callbacks = True
        app = create_app(settings, workers=1, providers=Providers({"replicate": provider}), deliver_webhooks=False)
        api = ApiServer(settings, app=app).start()
        settings.public_url = api.url
        try:
            eid = await engine.submit({"jobs": [video_job("a"), video_job("b")]})
            state = await engine.wait(eid, timeout=20)
        finally:
            api.stop()
    assert state["status"] == "succeeded", state
    assert (fake.creates, fake.gets, len(fake.requests_to("/files/")), fake.webhooks_sent) == (2, 0, 2, 2)
    rows = await store._in_read(  # type: ignore[attr-defined]
        lambda tx: tx.all("SELECT woken_outcome FROM jobs WHERE execution_id = %s", (eid,))
    )
    assert [r["woken_outcome"] for r in rows] == [None, None]


async def test_an_embedded_worker_is_woken_in_process_without_a_database_write(
    engine: Engine, store: SQLiteStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --workers N`: a verified callback about a job the embedded worker holds and waits on wakes it in
    the process; the job's row is not written (no wake mark to set and clear again). One about work the job does
    not wait on still goes to the database, which answers as before."""
    writes: list[tuple[str, str]] = []
    real = store.wake_job

    async def counting(provider: str, remote_id: str, *args: object) -> str:
        writes.append((provider, remote_id))
        return await real(provider, remote_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "wake_job", counting)
    with FakeReplicate(latency_s=1.5, queue_s=0.1) as fake:
        monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
        provider = ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, callback_poll_s=30.0)
        settings.callbacks = True
        app = create_app(
            settings, store=store, workers=1, providers=Providers({"replicate": provider}), deliver_webhooks=False
        )
        api = ApiServer(settings, app=app).start()
        settings.public_url = api.url
        try:
            eid = await engine.submit({"jobs": [video_job("a"), video_job("b")]})
            for _ in range(250):  # until both jobs' provider ids are recorded
                if all(j.provider_job_id for j in (await engine.get(eid)).jobs):
                    break
                await asyncio.sleep(0.02)
            other = {"id": "someone0else", "status": "failed", "error": "not this job's"}
            assert await call_back(api, fake, other, f"?execution={eid}&job=a") == "mismatch"
            assert writes == [("replicate", "someone0else")]
            state = await engine.wait(eid, timeout=20)
        finally:
            api.stop()
    assert state["status"] == "succeeded", state
    assert (fake.creates, fake.gets, fake.webhooks_sent) == (2, 0, 2)  # both ended from their webhooks' bodies
    assert writes == [("replicate", "someone0else")]  # the two real webhooks wrote nothing


async def test_a_fal_job_with_callbacks_costs_the_submit_and_the_download(
    engine: Engine, running_worker: WorkerFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFal(queue_s=0.1, latency_s=0.4) as fal:
        monkeypatch.setenv("FAL_KEY", fal.key)
        worker_side = FalProvider(fal.key, fal.base_url, poll_initial_s=0.05, callback_poll_s=30.0)
        receiver = FalProvider(fal.key, fal.base_url, jwks_url=fal.jwks_url)
        app = create_app(settings, providers=Providers({"fal": receiver}), deliver_webhooks=False)
        api = ApiServer(settings, app=app).start()
        settings.public_url, settings.callbacks = api.url, True
        try:
            model = "fal/fal-ai/flux/schnell"
            still = {"id": "still", "type": "generate-image", "model": model, "params": {"prompt": "x"}}
            eid = await engine.submit({"jobs": [still]})
            async with running_worker(providers_={"fal": worker_side}):
                state = await engine.wait(eid, timeout=20)
        finally:
            api.stop()
            await worker_side.aclose()
        image = fal.media["image.png"]
    assert state["status"] == "succeeded", state
    assert fal.webhooks_sent == 1
    # the submit and the download: no status look, no result read (the webhook's payload was the result)
    assert {r: fal.count(r) for r in ("submit", "status", "result", "file")} == {
        "submit": 1, "status": 0, "result": 0, "file": 1
    }  # fmt: skip
    result = state["jobs"][0]["result"]
    assert Path(result["path"]).read_bytes() == image and result["provider_id"].endswith(fal.webhooks[0].request_id)


async def _storm(
    engine: Engine, running_worker: WorkerFactory, *, gate: bool, store: SQLiteStore | None = None
) -> tuple[FakeReplicate, float]:
    """40 jobs polling every 0.05-0.1 s (about 400 requests a second wanted) against a Replicate that allows
    20 a second. Returns the fake and the rate of requests it saw from the first 429 on."""
    with FakeReplicate(latency_s=1.5, queue_s=0.0, rate_limit_per_s=20) as fake:
        provider = ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, poll_max_s=0.1)
        if not gate:
            provider.gate.on_throttled = lambda retry_after_s: None  # type: ignore[method-assign]
            provider.gate.slow_down = lambda: None  # type: ignore[method-assign]  # nor other workers' 429s
        plan = {"jobs": [video_job(f"c{i}") for i in range(40)], "options": {"cache": False}}
        eid = await engine.submit(plan)
        async with running_worker(providers_={"replicate": provider}, store_=store):
            state = await engine.wait(eid, timeout=90)
        await provider.aclose()
    if gate:  # without it jobs may run out of attempts: that is the point of the gate
        assert state["status"] == "succeeded", state["error"]
    api = [r["t"] for r in fake.requests if r["path"].startswith("/v1/")]
    first_429 = min(r["t"] for r in fake.requests if r.get("status") == 429)
    after = [t for t in api if t >= first_429]
    return fake, len(after) / max(max(after) - first_429, 0.5)


async def test_a_429_storm_slows_the_whole_provider_down_and_every_job_finishes(
    engine: Engine,
    running_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    settings: Settings,
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_any")  # the submission checks a key is configured
    calm, calm_rate = await _storm(engine, running_worker, gate=True)
    # the control runs on a database of its own: the first run's 429s slowed the provider's shared pace there
    other = SQLiteStore(f"sqlite:///{tmp_path}/control.db")
    await other.migrate()
    wild, wild_rate = await _storm(Engine(other, settings), running_worker, gate=False, store=other)
    await other.close()
    # with the gate, after the first 429 every job waits its turn: the rate falls to about the limit
    assert calm_rate < 30, calm_rate
    assert calm_rate < wild_rate / 2, (calm_rate, wild_rate)
    assert calm.throttled * 3 < wild.throttled, (calm.throttled, wild.throttled)


@pytest.mark.parametrize("callbacks", [True, False])
async def test_a_callback_finds_the_job_a_worker_holds_by_execution_and_key(
    store: SQLiteStore, settings: Settings, callbacks: bool
) -> None:
    """`Worker.holding`/`callback_target`: found by execution and key (one look-up while callbacks are on, a walk
    otherwise), by provider id without them; a job that ended is no longer found."""
    from reelflow.engine.worker import Worker, _Held
    from reelflow.providers.base import Task
    from reelflow.store.base import ClaimedJob

    settings.callbacks = callbacks
    worker = Worker(store, settings=settings, providers=Providers({}))

    async def waits() -> None:
        await asyncio.sleep(60)

    claims = [
        ClaimedJob(row, "ex1", f"clip{row}", "generate-video", "replicate", "m", {}, 1, 3, None, None, None, 0.0, None)
        for row in range(1, 4)
    ]
    started = []
    for c in claims:  # held by hand: no attempt runs
        task = asyncio.ensure_future(waits())
        started.append(task)
        worker.held[c.id] = held = _Held(claim=c, task=task, worker=worker)
        if callbacks:
            worker._rows[(c.execution_id, c.key)] = c.id
        held.work = Task(c.execution_id, c.key, c.type, c.model, {}, 1, Path("/nonexistent"))
    worker.held[2].provider_job_id = "pred2"
    try:
        assert worker.holding("x", "ex1", "clip2") == 2
        assert worker.holding("x", "ex1", "clip9") is None
        assert worker.holding("x", "ex2", "clip2") is None
        assert worker.holding("pred2") == 2 and worker.holding("pred9") is None
        assert worker.callback_target("replicate", "pred2", "ex1", "clip2") == (2, True)
        assert worker.callback_target("replicate", "other", "ex1", "clip2") == (2, False)  # not its work
        assert worker.callback_target("fal", "pred2", "ex1", "clip2") == (2, False)  # not its provider
        assert worker.callback_target("replicate", "pred3", "ex1", "clip3") == (3, True)  # no id yet: it may be
        worker.wake(2, {"id": "pred2"})
        assert worker.held[2].work is not None and worker.held[2].work.wake.is_set()
        del worker.held[3]
        worker._rows.pop(("ex1", "clip3"), None)
        assert worker.holding("x", "ex1", "clip3") is None
    finally:
        for t in started:
            t.cancel()
        await asyncio.gather(*started, return_exceptions=True)
