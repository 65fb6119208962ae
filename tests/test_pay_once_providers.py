"""Pay once against each provider's fake, through the real Engine and Worker (issue 13).

One Seedance video on Replicate, one FLUX still on fal, one ElevenLabs speech and one OpenAI speech: the
fake takes the paid create and then loses its answer (`accept_then_drop`) or sends it after the adapter's
read timeout (`accept_then_delay`). The execution must still succeed with a valid file, and the fake's count
of paid work says what it cost:

- Replicate (its prediction list) and ElevenLabs (its speech history) are asked, and the lost work is adopted:
  exactly one paid create, no possible duplicate.
- fal cannot be asked (no lookup by input): the retry pays again, and the job and execution say so (one
  possible duplicate, charged at the job's estimate).
- OpenAI cannot be asked either (no list of past speeches), but the retry repeats the first attempt's
  Idempotency-Key, which the fake honours: paid once. The worker cannot know the key was honoured, so it
  still records the possible duplicate.

And the crash: a worker process killed after Replicate took its create but before the answer came; a second
worker finds the prediction in the list and finishes the job with exactly one create.

Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import WorkerFactory
from fakes.elevenlabs import FakeElevenLabs
from fakes.fal import FakeFal
from fakes.openai import FakeOpenAI
from fakes.replicate import FakeReplicate
from mediacheck import decoded_duration, gray_band
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.catalog import elevenlabs as catalog_elevenlabs
from reelflow.providers.catalog import fal as catalog_fal
from reelflow.providers.catalog import openai as catalog_openai
from reelflow.providers.catalog import register_model
from reelflow.providers.elevenlabs import ElevenLabsProvider
from reelflow.providers.fal import FalProvider
from reelflow.providers.http import HttpAdapter
from reelflow.providers.openai import OpenAIProvider
from reelflow.providers.replicate import ReplicateProvider
from reelflow.store.sqlite import SQLiteStore

READ_TIMEOUT_S = 0.3
"""The adapters' read timeout in the late-answer runs: well under the fake's delay."""
DELAY_S = 1.5
"""How late the fake answers a taken create in the late-answer runs."""


@dataclass
class Case:
    """One provider under test: its fake, an adapter on it, a one-job plan and how to read what was paid."""

    name: str
    fake: Any
    env: dict[str, str]
    adapter: Callable[[], HttpAdapter]
    job: dict[str, Any]
    paid: Callable[[], int]
    asked: bool
    """The provider can be asked for work whose answer was lost (so the retry adopts it)."""
    deduplicated: bool = False
    """The retry repeats an idempotency key the fake honours (paid once, though nobody could look)."""


@contextmanager
def replicate_case() -> Iterator[Case]:
    with FakeReplicate(latency_s=0.4, queue_s=0.05) as fake:
        yield Case(
            "replicate",
            fake,
            {"REPLICATE_API_TOKEN": fake.token, "REELFLOW_REPLICATE_BASE_URL": fake.base_url},
            lambda: ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, poll_max_s=0.2),
            {
                "id": "clip",
                "type": "generate-video",
                "model": "replicate/bytedance/seedance-1-lite",
                "params": {"prompt": "slow waves at dusk", "duration": 5},
            },
            lambda: fake.creates,
            asked=True,
        )


@contextmanager
def fal_case() -> Iterator[Case]:
    with FakeFal(queue_s=0.05, latency_s=0.3) as fake:
        yield Case(
            "fal",
            fake,
            {"FAL_KEY": fake.key, "REELFLOW_FAL_BASE_URL": fake.base_url},
            lambda: FalProvider(fake.key, fake.base_url, poll_initial_s=0.05, poll_max_s=0.2),
            {
                "id": "still",
                "type": "generate-image",
                "model": "fal/fal-ai/flux/schnell",
                "params": {"prompt": "a fox"},
            },
            lambda: fake.creates,
            asked=False,
        )


@contextmanager
def elevenlabs_case() -> Iterator[Case]:
    with FakeElevenLabs() as fake:

        def adapter() -> HttpAdapter:
            provider = ElevenLabsProvider(fake.key, fake.base_url)
            provider.poll_initial_s = 0.05
            return provider

        yield Case(
            "elevenlabs",
            fake,
            {"ELEVENLABS_API_KEY": fake.key, "REELFLOW_ELEVENLABS_BASE_URL": fake.base_url},
            adapter,
            {
                "id": "voice",
                "type": "generate-audio",
                "model": "elevenlabs/eleven_multilingual_v2",
                "params": {"text": "Every evening the sea keeps its promise.", "voice": "Rachel"},
            },
            lambda: fake.creates,
            asked=True,
        )


@contextmanager
def openai_case() -> Iterator[Case]:
    with FakeOpenAI() as fake:
        yield Case(
            "openai",
            fake,
            {"OPENAI_API_KEY": fake.key, "REELFLOW_OPENAI_BASE_URL": fake.base_url},
            lambda: OpenAIProvider(fake.key, fake.base_url, poll_initial_s=0.05, poll_max_s=0.2),
            {
                "id": "voice",
                "type": "generate-audio",
                "model": "openai/gpt-4o-mini-tts",
                "params": {"text": "Hello from the sea.", "voice": "nova"},
            },
            lambda: fake.creates,
            asked=False,
            deduplicated=True,
        )


CASES = {"replicate": replicate_case, "fal": fal_case, "elevenlabs": elevenlabs_case, "openai": openai_case}


@pytest.fixture(autouse=True)
def _catalogued(monkeypatch: pytest.MonkeyPatch) -> None:
    """fal's, ElevenLabs' and OpenAI's models in the catalog for this test only (Replicate's are built in)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for models in (catalog_fal.MODELS, catalog_elevenlabs.MODELS, catalog_openai.MODELS):
        for model in models:
            register_model(model, replace=True)


async def events_of(store: SQLiteStore, eid: str, kind: str) -> list[Any]:
    return [e for e in await store.events(eid) if e.type == kind]


async def check_output(case: Case, result: dict[str, Any]) -> None:
    """The stored file is the provider's media and decodes: a 1 s video, a 64x64 image, or speech."""
    path = Path(result["path"])
    assert path.is_file() and "/v1/artifacts/" in result["url"]
    if case.job["type"] == "generate-video":
        assert path.read_bytes() == case.fake.media["mp4"]
        assert abs(await decoded_duration(path, "v") - 1.0) < 0.2
    elif case.job["type"] == "generate-image":
        assert path.read_bytes() == case.fake.media["image.png"]
        assert len(await gray_band(path, at=0, top=0, bottom=1)) == 64 * 64
    else:
        assert path.stat().st_size > 0
        assert await decoded_duration(path, "a") > 0.5


async def run_one(
    case: Case, fault: str, engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, float, dict[str, Any]]:
    """The case's one job through a worker, with the fake told to lose (`drop`) or hold back (`delay`) the
    answer of its first paid create: (execution id, the job's estimated cost, the final state)."""
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    adapter = case.adapter()
    if fault == "drop":
        case.fake.accept_then_drop(1)
    else:
        adapter.timeout = httpx.Timeout(connect=2.0, read=READ_TIMEOUT_S, write=2.0, pool=2.0)
        case.fake.accept_then_delay(1, delay_s=DELAY_S)
    eid = await engine.submit({"jobs": [case.job]})
    estimate = float((await engine.get(eid)).jobs[0].cost.estimated)
    assert estimate > 0
    try:
        async with running_worker(providers_={case.name: adapter}):
            state = await engine.wait(eid, timeout=15)
    finally:
        await adapter.aclose()
    assert state["status"] == "succeeded", state
    return eid, estimate, state


def assert_possible_duplicate(case: Case, state: dict[str, Any], estimate: float, events: list[Any]) -> None:
    """One possible duplicate charge, of the job's estimate, on the job, the execution and in the events."""
    [job] = state["jobs"]
    assert job["possible_duplicates"] == state["possible_duplicates"] == 1
    assert abs(job["possible_duplicate_charge"] - estimate) < 1e-6
    assert abs(state["possible_duplicate_charge"] - estimate) < 1e-6
    [event] = events
    assert event.data["provider"] == case.name and abs(event.data["estimated_usd"] - estimate) < 1e-6


@pytest.mark.parametrize("fault", ["drop", "delay"])
@pytest.mark.parametrize("provider", list(CASES))
async def test_a_lost_or_late_create_answer_is_paid_once_or_said(
    provider: str,
    fault: str,
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with CASES[provider]() as case:
        eid, estimate, state = await run_one(case, fault, engine, running_worker, monkeypatch)
        [job] = state["jobs"]
        # Replicate's create is asked about at once, inside the attempt that lost its answer; the synchronous
        # providers lose the answer while waiting, and the next attempt looks (or pays again and says so)
        assert job["attempts"] == (1 if provider == "replicate" else 2)
        await check_output(case, job["result"])
        duplicates = await events_of(store, eid, "job.possible_duplicate_charge")
        if case.asked or case.deduplicated:
            assert case.paid() == 1  # the work the first attempt started is the work delivered
        else:
            assert case.paid() == 2  # paid twice, and it says so
        if not case.asked:  # nobody could look: a possible duplicate, even where the key happened to save it
            assert_possible_duplicate(case, state, estimate, duplicates)
        else:
            assert job["possible_duplicates"] == state["possible_duplicates"] == 0
            assert job["possible_duplicate_charge"] == state["possible_duplicate_charge"] == 0
            assert duplicates == []
        if provider == "replicate":  # adopted by the worker from the prediction list
            [reconciled] = await events_of(store, eid, "job.reconciled")
            [prediction] = case.fake.predictions
            assert reconciled.data["adopted"] == job["provider_job_id"] == prediction
        if provider == "elevenlabs":  # found in the history and downloaded from there
            assert len(case.fake.history) == 1 and case.fake.count("history-audio") == 1
            assert job["result"]["words_source"] in ("history", "estimated")
        if provider == "openai":  # the retry got the first answer again under the same key
            assert case.fake.replays == 1
            keys = [e.idempotency_key for e in case.fake.log if e.route == "speech"]
            assert len(keys) == 2 and keys[0] == keys[1]


async def test_a_worker_killed_while_its_create_answer_is_on_the_way_is_paid_once(
    engine: Engine,
    store: SQLiteStore,
    settings: Settings,
    worker_env: dict[str, str],
    tmp_path: Path,
    running_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL after Replicate took the create and before its answer reached the worker: no provider id was
    saved, so the next worker must find the prediction in the list rather than create a second one."""
    with replicate_case() as case:
        fake: FakeReplicate = case.fake
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)
        settings.lease_seconds = 1.0
        fake.accept_then_delay(1, delay_s=6.0)  # the victim's 60 s read timeout waits for it; it dies first
        eid = await engine.submit({"jobs": [case.job]})
        log = (tmp_path / "victim.log").open("wb")
        victim = subprocess.Popen(
            [sys.executable, "-m", "reelflow.cli", "worker"],
            env=worker_env | case.env | {"REELFLOW_LEASE_SECONDS": "1.0"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 15
            while fake.creates == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        assert fake.creates == 1, (tmp_path / "victim.log").read_text()
        [before] = (await engine.get(eid)).jobs
        assert before.status == "running" and before.provider_job_id is None  # the answer never came
        adapter = case.adapter()
        try:
            async with running_worker(providers_={"replicate": adapter}):
                state = await engine.wait(eid, timeout=15)
        finally:
            await adapter.aclose()
        [job] = state["jobs"]
        assert state["status"] == "succeeded", state
        assert fake.creates == 1  # exactly one create across the crash
        [prediction] = fake.predictions
        assert job["provider_job_id"] == prediction and job["attempts"] == 2
        [reconciled] = await events_of(store, eid, "job.reconciled")
        assert reconciled.data["adopted"] == prediction
        assert job["possible_duplicates"] == state["possible_duplicates"] == 0
        await check_output(case, job["result"])
