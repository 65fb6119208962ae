"""SIGKILL of a worker process after it submitted work to a provider and before the work finished: the
next worker resumes waiting on the saved provider id, and each fake sees exactly one submission per job."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory
from fakes.fal import FakeFal
from fakes.replicate import FakeReplicate
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers.base import Provider
from reelflow.providers.fal import FalProvider
from reelflow.providers.replicate import ReplicateProvider

LATENCY_S = 4.0


@contextmanager
def replicate() -> Iterator[tuple[dict[str, str], Callable[[], int], Callable[[], Provider], dict[str, Any]]]:
    with FakeReplicate(latency_s=LATENCY_S, queue_s=0.0) as fake:
        env = {"REELFLOW_REPLICATE_BASE_URL": fake.base_url, "REPLICATE_API_TOKEN": fake.token}
        job = {
            "type": "generate-video",
            "model": "replicate/bytedance/seedance-1-lite",
            "params": {"prompt": "waves", "duration": 5},
        }
        yield env, lambda: fake.creates, lambda: ReplicateProvider(fake.token, fake.base_url, poll_max_s=0.5), job


@contextmanager
def fal() -> Iterator[tuple[dict[str, str], Callable[[], int], Callable[[], Provider], dict[str, Any]]]:
    with FakeFal(latency_s=LATENCY_S) as fake:
        env = {"REELFLOW_FAL_BASE_URL": fake.base_url, "FAL_KEY": fake.key}
        job = {"type": "generate-image", "model": "fal/fal-ai/flux/schnell", "params": {"prompt": "a sunset"}}
        yield env, lambda: fake.count("submit"), lambda: FalProvider(fake.key, fake.base_url, poll_max_s=0.5), job


@pytest.mark.parametrize("provider", [replicate, fal], ids=["replicate", "fal"])
async def test_a_worker_killed_after_submission_never_submits_twice(
    provider: Callable[..., Any],
    engine: Engine,
    settings: Settings,
    worker_env: dict[str, str],
    tmp_path: Path,
    running_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with provider() as (env, submissions, adapter, job):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings.lease_seconds = 1.0
        eid = await engine.submit({"jobs": [{"id": f"j{i}", **job} for i in range(3)]})
        log = (tmp_path / "victim.log").open("wb")
        victim = subprocess.Popen(
            [sys.executable, "-m", "reelflow.cli", "worker"],
            env=worker_env | env | {"REELFLOW_LEASE_SECONDS": "1.0"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                jobs = (await engine.get(eid)).jobs
                if all(j.provider_job_id for j in jobs):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the worker did not submit in time: " + (tmp_path / "victim.log").read_text())
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        first = {j.id: j.provider_job_id for j in (await engine.get(eid)).jobs}
        assert submissions() == 3
        assert all(j.status == "running" for j in (await engine.get(eid)).jobs)  # not done yet
        remote = adapter()
        async with running_worker(providers_={env_provider(job): remote}):
            state = await engine.wait(eid, timeout=30)
        assert state["status"] == "succeeded", state["error"]
        assert submissions() == 3  # exactly one submission per job, across the crash
        for j in state["jobs"]:
            assert j["provider_job_id"] == first[j["id"]]
            assert j["attempts"] == 2
            assert j["result"]["url"]


def env_provider(job: dict[str, Any]) -> str:
    return str(job["model"]).split("/", 1)[0]


# --- google (Veo on the Gemini API): its own block, so the list above can change without touching it -----------


@contextmanager
def google() -> Iterator[tuple[dict[str, str], Callable[[], int], Callable[[], Provider], dict[str, Any]]]:
    from fakes.google import FakeGoogle
    from reelflow.providers.google import GoogleProvider

    with FakeGoogle(latency_s=LATENCY_S) as fake:
        env = {"REELFLOW_GOOGLE_BASE_URL": fake.base_url, "GEMINI_API_KEY": fake.key}
        job = {
            "type": "generate-video",
            "model": "google/veo-3.1-fast-generate-preview",
            "params": {"prompt": "waves", "duration": 4},
        }
        yield env, lambda: fake.creates, lambda: GoogleProvider(fake.key, fake.base_url, poll_max_s=0.5), job


async def test_a_worker_killed_after_a_veo_operation_started_never_starts_another(
    engine: Engine,
    settings: Settings,
    worker_env: dict[str, str],
    tmp_path: Path,
    running_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await test_a_worker_killed_after_submission_never_submits_twice(
        google, engine, settings, worker_env, tmp_path, running_worker, monkeypatch
    )
