"""Two runtimes with different catalogs in one process (issue 14): each estimates, validates submissions,
prices the actual cost, judges outputs and bounds local parameters with the catalog it was built with, and
neither sees the other's models or prices, nor the process's default catalog theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from apiserver import ApiServer, server_settings
from conftest import fast_settings
from fakes.replicate import FakeReplicate
from reelflow import compose, generate_video
from reelflow.api.app import create_app
from reelflow.config import Settings
from reelflow.engine.outputs import expected_kinds, judge
from reelflow.engine.runtime import LocalRuntime
from reelflow.engine.worker import Worker
from reelflow.errors import PlanError
from reelflow.estimate import estimate_plan
from reelflow.providers.base import PermanentError, Task
from reelflow.providers.catalog import Catalog, builtin_models, get_model, reset_extensions
from reelflow.providers.local import LocalProvider, _Params
from reelflow.store import open_store

SHARED = """
  - id: replicate/acme/clip
    types: [generate-video]
    params:
      prompt: {{type: string, required: true}}
      duration: {{type: integer, minimum: 1, maximum: {max_duration}, default: 5}}
    price: {{unit: second, usd: {per_second}}}
  - id: replicate/acme/scribe
    types: [{scribe_type}, run]
    extra_params: true
    price: {{unit: run, usd: 0.01}}
"""
CATALOG_A = (
    "models:"
    + SHARED.format(max_duration=10, per_second=0.08, scribe_type="transcribe")
    + """
  - id: replicate/acme/only-a
    types: [generate-image]
    params:
      prompt: {type: string, required: true}
    price: {unit: image, usd: 0.01}
"""
)
CATALOG_B = "models:" + SHARED.format(max_duration=6, per_second=0.02, scribe_type="generate-image")


def clip(duration: int, model: str = "replicate/acme/clip") -> dict[str, Any]:
    return {
        "jobs": [{"id": "v", "type": "generate-video", "model": model, "params": {"prompt": "a", "duration": duration}}]
    }


ONLY_A = {"jobs": [{"id": "i", "type": "generate-image", "model": "replicate/acme/only-a", "params": {"prompt": "a"}}]}


def errors_of(caught: pytest.ExceptionInfo[PlanError]) -> list[str]:
    return [e.msg for e in caught.value.errors]


@pytest.fixture(autouse=True)
def clean_default() -> Iterator[None]:
    reset_extensions()
    yield
    reset_extensions()


@pytest.fixture
def catalogs(tmp_path: Path) -> tuple[Catalog, Catalog]:
    """Two catalogs built the way a runtime builds one: from settings naming a catalog file."""
    built = []
    for name, text in (("a", CATALOG_A), ("b", CATALOG_B)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        settings = Settings(catalog_file=str(path), _env_file=None)  # type: ignore[call-arg]
        built.append(Catalog.build(settings, plugins=False))
    return built[0], built[1]


def runtime_settings(tmp_path: Path, name: str) -> Settings:
    (tmp_path / name).mkdir()
    return fast_settings(tmp_path / name, f"sqlite:///{tmp_path}/{name}.db")


@pytest.fixture
async def runtimes(
    tmp_path: Path, catalogs: tuple[Catalog, Catalog]
) -> AsyncIterator[tuple[LocalRuntime, LocalRuntime]]:
    a = LocalRuntime(runtime_settings(tmp_path, "a"), catalog=catalogs[0])
    b = LocalRuntime(runtime_settings(tmp_path, "b"), catalog=catalogs[1])
    for rt in (a, b):
        await rt.store.migrate()
    yield a, b
    for rt in (a, b):
        await rt.close()


def test_estimates_come_from_the_catalog_given(catalogs: tuple[Catalog, Catalog]) -> None:
    a, b = catalogs
    assert estimate_plan(clip(5), catalog=a)["cost_usd"] == pytest.approx(0.40)
    assert estimate_plan(clip(5), catalog=b)["cost_usd"] == pytest.approx(0.10)
    with pytest.raises(PlanError) as caught:
        estimate_plan(clip(8), catalog=b)  # b's clip stops at 6 s
    assert errors_of(caught) == ["job 'v': duration must be at most 6 (got 8)"]
    assert estimate_plan(clip(8), catalog=a)["cost_usd"] == pytest.approx(0.64)
    with pytest.raises(PlanError, match="unknown model 'replicate/acme/clip'"):
        estimate_plan(clip(5))  # the process's default catalog has neither file's models
    assert get_model("replicate/acme/clip") is None
    # the SDK's local estimate takes a catalog too
    steps = compose(generate_video(model="replicate/acme/clip", prompt="a", duration=4))
    assert steps.estimate(catalog=b)["cost_usd"] == pytest.approx(0.08)
    assert steps.estimate(catalog=a)["cost_usd"] == pytest.approx(0.32)


async def test_two_runtimes_validate_and_price_with_their_own_catalogs(
    runtimes: tuple[LocalRuntime, LocalRuntime], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = runtimes
    assert a.engine.catalog is not b.engine.catalog
    # submission: each engine knows only its own models and bounds
    with pytest.raises(PlanError) as caught:
        await b.engine.submit(ONLY_A)
    assert "unknown model 'replicate/acme/only-a'" in errors_of(caught)[0]
    with pytest.raises(PlanError) as caught:
        await b.engine.submit(clip(8))
    assert errors_of(caught) == ["job 'v': duration must be at most 6 (got 8)"]
    with FakeReplicate(latency_s=0.05, queue_s=0.02) as rep:
        monkeypatch.setenv("REPLICATE_API_TOKEN", rep.token)
        monkeypatch.setenv("REELFLOW_REPLICATE_BASE_URL", rep.base_url)
        ids = {rt: await rt.engine.submit(clip(5)) for rt in (a, b)}
        # the estimate stored with each execution is its own catalog's
        estimated = {rt: (await rt.engine.get(ids[rt])).cost.estimated for rt in (a, b)}
        assert estimated[a] == pytest.approx(0.40) and estimated[b] == pytest.approx(0.10)
        # each runtime's embedded worker builds its providers on its catalog: the actual cost is its price
        states = {rt: await rt.wait(ids[rt], timeout=60, embedded_worker=True) for rt in (a, b)}
    for rt, price in ((a, 0.40), (b, 0.10)):
        assert states[rt]["status"] == "succeeded", states[rt]["error"]
        assert states[rt]["cost"]["actual"] == pytest.approx(price)
    assert rep.creates == 2


async def test_two_api_apps_estimate_submit_and_list_with_their_own_catalogs(
    tmp_path: Path, catalogs: tuple[Catalog, Catalog], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_unused")  # submissions check that the key is set
    answers: dict[str, dict[str, Any]] = {}
    for name, catalog in zip("ab", catalogs, strict=True):
        settings = server_settings(tmp_path / name)
        app = create_app(settings, deliver_webhooks=False, catalog=catalog)
        with ApiServer(settings, app=app) as api, api.client(api.new_key(name).api_key) as http:
            answers[name] = {
                "estimate": http.post("/v1/estimate", json=clip(5)).json(),
                "too_long": http.post("/v1/estimate", json=clip(8)).status_code,
                "only_a": http.post("/v1/executions", json=ONLY_A).status_code,
                "models": {m["id"] for m in http.get("/v1/models").json()["data"]},
            }
    assert answers["a"]["estimate"]["cost_usd"] == pytest.approx(0.40)
    assert answers["b"]["estimate"]["cost_usd"] == pytest.approx(0.10)
    assert (answers["a"]["too_long"], answers["b"]["too_long"]) == (200, 422)
    assert (answers["a"]["only_a"], answers["b"]["only_a"]) == (202, 422)
    assert "replicate/acme/only-a" in answers["a"]["models"] - answers["b"]["models"]


async def test_a_worker_hands_its_catalog_to_its_providers(tmp_path: Path, catalogs: tuple[Catalog, Catalog]) -> None:
    settings = runtime_settings(tmp_path, "w")
    store = open_store(settings.database_url)
    try:
        for catalog in catalogs:
            worker = Worker(store, settings=settings, catalog=catalog, deliver_webhooks=False)
            assert worker.catalog is catalog
            for name in ("local", "replicate", "fal", "elevenlabs", "openai", "google"):
                assert getattr(worker.providers.get(name), "catalog", None) is catalog, name
    finally:
        await store.close()


async def test_outputs_are_judged_by_the_models_types_in_the_catalog_given(
    tmp_path: Path, catalogs: tuple[Catalog, Catalog]
) -> None:
    a, b = catalogs
    scribe = "replicate/acme/scribe"
    assert expected_kinds("run", scribe, a) == {"text"}
    assert expected_kinds("run", scribe, b) == {"image"}
    assert expected_kinds("run", scribe) == {"image", "video", "audio"}  # not in the default catalog: any media
    transcript = tmp_path / "out.txt"
    transcript.write_text("hello there\n")

    async def no_probe(path: Path) -> dict[str, Any]:
        raise AssertionError("text is not probed")

    assert await judge(transcript, "run", scribe, no_probe, catalog=a) == {"size_bytes": 12}
    with pytest.raises(PermanentError, match=r"the output is not an image: it is text \(12\+ bytes\)"):
        await judge(transcript, "run", scribe, no_probe, catalog=b)


def short_local_video() -> Catalog:
    """The built-ins, with local/video's duration capped at 3 s."""
    models = builtin_models()
    video = models["local/video"]
    duration = video.params["duration"].model_copy(update={"maximum": 3})
    models["local/video"] = video.model_copy(update={"params": {**video.params, "duration": duration}})
    return Catalog(models.values())


async def test_the_local_provider_reads_bounds_from_its_catalog(tmp_path: Path) -> None:
    short = short_local_video()
    task = Task(
        execution_id="ex1", job_id="j", type="generate-video", model="local/video",
        params={"prompt": "a", "duration": 5}, attempt=1, scratch=tmp_path, inputs={},
    )  # fmt: skip
    assert _Params(task).number("duration") == 5  # the default catalog allows 60 s
    with pytest.raises(PermanentError, match=r"generate-video: parameter 'duration' must be at most 3 \(got 5\)"):
        _Params(task, short).number("duration")
    provider = LocalProvider()
    provider.catalog = short
    with pytest.raises(PermanentError, match="must be at most 3"):
        await provider.wait(task, "local-1", lambda update: None)
    with pytest.raises(PlanError, match="duration must be at most 3"):
        estimate_plan(clip(5, "local/video"), catalog=short)
    assert estimate_plan(clip(5, "local/video"))["cost_usd"] == 0
