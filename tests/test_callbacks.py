"""Provider callbacks end to end: a real API server takes Replicate's signed webhooks and wakes the worker
waiting on the prediction, which confirms with one read and finishes. Bad signatures change nothing; a lost
callback is covered by (slow) polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiserver import ApiServer
from conftest import WorkerFactory
from fakes.replicate import FakeReplicate
from reelflow.api.app import create_app
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers.registry import Providers
from reelflow.providers.replicate import ReplicateProvider
from reelflow.store.sqlite import SQLiteStore

SEEDANCE = "replicate/bytedance/seedance-1-lite"


def video_job(job_id: str = "clip") -> dict[str, Any]:
    return {"id": job_id, "type": "generate-video", "model": SEEDANCE, "params": {"prompt": "waves", "duration": 5}}


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


async def test_a_job_completes_from_the_callback_with_three_provider_requests(
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
    assert fake.webhooks_sent == 1
    # submit, one confirming read, the download -- and no polling (the first poll would be at 30 s)
    assert (fake.creates, fake.gets, len(fake.requests_to("/files/"))) == (1, 1, 1)
    assert fake.secret_reads == 1
    assert took < 5.0, f"the callback should finish the job at once (took {took:.1f} s)"
    job = state["jobs"][0]
    assert job["result"]["provider_id"] in fake.predictions


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
            job = (await engine.get(eid))["jobs"][0]
            if fake.creates and job["status"] == "running":
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
        job = (await engine.get(eid))["jobs"][0]
        assert job["status"] == "running" and job["result"] is None
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
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    body = '{"id": "abcdef123", "status": "succeeded"}'
    sig = Webhook(fake.webhook_secret).sign("msg_1", datetime.now(UTC), body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(time.time())), "webhook-signature": sig}
    async with httpx.AsyncClient(base_url=api.url) as http:
        answer = await http.post(
            "/v1/providers/replicate/callback?execution=ex_nope&job=clip", content=body, headers=headers
        )
    assert answer.status_code == 200
    assert answer.json() == {"received": True, "job": "unknown"}


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
