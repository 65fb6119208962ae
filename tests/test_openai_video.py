"""Sora is retired: OpenAI shut the Videos API and the Sora 2 models down on 2026-09-24. A plan naming
`openai/sora-*` is refused with that date and current alternatives from the catalog; the worker's check and
the adapter refuse it too, without a request to OpenAI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.openai import FakeOpenAI
from reelflow.errors import PlanError
from reelflow.plan import parse_plan
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, Task
from reelflow.providers.catalog import check_job_params, get_model, list_models, retired_message
from reelflow.providers.catalog.retired import RETIRED
from reelflow.providers.openai import OpenAIProvider

SORAS = ["openai/sora-2", "openai/sora-2-pro", "openai/sora-2-2025-10-06", "openai/sora-2-pro-2025-10-06"]


def refusal(job: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as info:
        parse_plan({"jobs": [job]})
    [problem] = info.value.errors
    assert problem.loc == ["jobs", 0, "model"]
    return problem.msg


@pytest.mark.parametrize("model", SORAS)
@pytest.mark.parametrize("job_type", ["generate-video", "run"])
def test_a_plan_naming_sora_is_refused_with_the_date_and_alternatives(model: str, job_type: str) -> None:
    params: dict[str, Any] = {"input": {"prompt": "waves"}} if job_type == "run" else {"prompt": "waves"}
    msg = refusal({"id": "clip", "type": job_type, "model": model, "params": params})
    assert msg.startswith(f"job 'clip': model '{model}' is retired: OpenAI shut the Videos API and the Sora 2 models")
    assert "down on 2026-09-24" in msg
    [sora] = RETIRED
    assert sora.alternatives and all(alt in msg for alt in sora.alternatives)


def test_the_alternatives_named_are_catalogued_video_models() -> None:
    for retirement in RETIRED:
        for alt in retirement.alternatives:
            spec = get_model(alt)
            assert spec is not None and "generate-video" in spec.types, alt
            assert retired_message(alt) is None


def test_the_catalog_holds_no_openai_video_model_and_other_openai_models_pass() -> None:
    assert [m.id for m in list_models() if m.provider == "openai" and "generate-video" in m.types] == []
    assert not any(m.id.startswith("openai/sora") for m in catalog.openai.MODELS)
    assert retired_message("openai/gpt-image-1") is None and retired_message("replicate/openai/sora") is None
    parse_plan({"jobs": [{"id": "v", "type": "generate-audio", "model": "openai/gpt-4o-mini-tts",
                          "params": {"text": "hi"}}]})  # fmt: skip


def test_the_workers_check_refuses_sora_too() -> None:
    [problem] = check_job_params("generate-video", "openai/sora-2", {"prompt": "waves"}, job_key="clip")
    assert problem.loc == ["model"]
    assert "job 'clip': model 'openai/sora-2' is retired" in problem.msg and "2026-09-24" in problem.msg


async def test_the_adapter_refuses_a_sora_job_left_in_a_queue_without_asking_openai(tmp_path: Path) -> None:
    with FakeOpenAI() as oai:
        p = OpenAIProvider(oai.key, oai.base_url)
        for job_type, params in (("generate-video", {"prompt": "waves"}), ("run", {"input": {"prompt": "waves"}})):
            task = Task("ex1", "clip", job_type, "openai/sora-2-pro", params, 1, tmp_path / job_type)
            with pytest.raises(PermanentError, match=r"^openai: model 'openai/sora-2-pro' is retired: .*2026-09-24"):
                await p.submit(task)
        await p.aclose()
        assert sum(oai.hits.values()) == 0
        # the fake, like OpenAI since the shutdown, has no Videos API left
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{oai.base_url}/videos", headers={"Authorization": f"Bearer {oai.key}"})
        assert answer.status_code == 404
