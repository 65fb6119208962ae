"""A pipeline across providers, against their fakes: a FLUX still on fal -> a Seedance video from it on Replicate,
an ElevenLabs narration beside it -> merged and captioned locally. Each provider is paid exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory
from fakes.elevenlabs import FakeElevenLabs
from fakes.fal import FakeFal
from fakes.replicate import FakeReplicate
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers.elevenlabs import ElevenLabsProvider
from reelflow.providers.fal import FalProvider
from reelflow.providers.local import LocalProvider
from reelflow.providers.replicate import ReplicateProvider


@pytest.fixture
def fakes() -> Iterator[tuple[FakeFal, FakeReplicate, FakeElevenLabs]]:
    with FakeFal(latency_s=0.2) as fal, FakeReplicate(latency_s=0.3, queue_s=0.1) as rep, FakeElevenLabs() as el:
        yield fal, rep, el


async def test_a_pipeline_across_providers_runs_end_to_end(
    engine: Engine,
    running_worker: WorkerFactory,
    fakes: tuple[FakeFal, FakeReplicate, FakeElevenLabs],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fal, rep, el = fakes
    monkeypatch.setenv("FAL_KEY", fal.key)
    monkeypatch.setenv("REPLICATE_API_TOKEN", rep.token)
    monkeypatch.setenv("ELEVENLABS_API_KEY", el.key)
    providers: dict[str, Any] = {
        "fal": FalProvider(fal.key, fal.base_url, poll_initial_s=0.05, poll_max_s=0.2),
        "replicate": ReplicateProvider(rep.token, rep.base_url, poll_initial_s=0.05, poll_max_s=0.2),
        "elevenlabs": ElevenLabsProvider(el.key, el.base_url),
        "local": LocalProvider(),
    }
    plan = {
        "jobs": [
            {"id": "still", "type": "generate-image", "model": "fal/fal-ai/flux/schnell",
             "params": {"prompt": "A sunset over the sea", "aspect_ratio": "16:9"}},
            {"id": "clip", "type": "generate-video", "model": "replicate/bytedance/seedance-1-pro",
             "params": {"image": "$still", "prompt": "slow waves", "duration": 5}},
            {"id": "voice", "type": "generate-audio", "model": "elevenlabs/eleven_multilingual_v2",
             "params": {"text": "Every evening the sea keeps its promise.", "voice": "Rachel"}},
            {"id": "merged", "type": "merge-video-audio", "params": {"video": "$clip", "audio": "$voice"}},
            {"id": "final", "type": "captions", "params": {"video": "$merged", "text": "Every evening"}},
        ]
    }
    eid = await engine.submit(plan)
    async with running_worker(providers_=providers):
        state = await engine.wait(eid, timeout=60)
    for p in providers.values():
        if hasattr(p, "aclose"):
            await p.aclose()
    assert state["status"] == "succeeded", state["error"]
    jobs = {j["id"]: j for j in state["jobs"]}
    # the video model got our stored still as its image, and each provider was paid once
    assert rep.creates == 1 and fal.hits["submit"] == 1 and el.hits["tts"] == 1
    [prediction] = rep.predictions.values()
    assert prediction.input["image"] == jobs["still"]["result"]["url"]
    assert "/v1/artifacts/" in jobs["still"]["result"]["url"]
    for job in ("still", "clip", "voice"):
        assert jobs[job]["result"]["provider_id"], job
    final = await media.probe(Path(jobs["final"]["result"]["path"]))
    clip = jobs["clip"]["result"]
    assert final["has_video"] and final["has_audio"]
    assert abs(final["duration"] - clip["duration"]) <= 0.1
    assert state["cost"]["actual"] > 0
