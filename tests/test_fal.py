"""The fal adapter against a faithful fake of fal's queue API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory
from fakes.fal import FakeFal
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, ProgressUpdate, Task, TransientError
from reelflow.providers.catalog import register_model
from reelflow.providers.catalog.fal import MODELS
from reelflow.providers.fal import FalProvider

SCHNELL = "fal/fal-ai/flux/schnell"
SEEDANCE = "fal/fal-ai/bytedance/seedance/v1/pro/image-to-video"


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency_s=0.2) as fake:
        yield fake


def quick(fal: FakeFal, **kw: Any) -> FalProvider:
    return FalProvider(fal.key, fal.base_url, poll_initial_s=0.02, poll_max_s=0.1, **kw)


def task(tmp_path: Path, model: str = SCHNELL, job_type: str = "generate-image", **params: Any) -> Task:
    return Task("ex1", "job1", job_type, model, params, 1, scratch=tmp_path / "scratch")


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


def submits(fal: FakeFal) -> list[Any]:
    return [entry.body for entry in fal.log if entry.route == "submit"]


async def test_image_job_maps_params_and_returns_the_images(fal: FakeFal, tmp_path: Path) -> None:
    provider = quick(fal)
    t = task(tmp_path, prompt="a red fox", aspect_ratio="16:9", seed=7)
    pid = await provider.submit(t)
    assert pid.startswith("fal-ai/flux/")
    result = await provider.wait(t, pid, Reports())
    assert submits(fal) == [{"prompt": "a red fox", "image_size": "landscape_16_9", "seed": 7}]
    assert [e.path for e in fal.log if e.route == "submit"] == ["/fal-ai/flux/schnell"]
    assert all(e.authorization == f"Key {fal.key}" for e in fal.log)
    [out] = result.outputs
    assert out.url and out.url.startswith(fal.base_url + "/files/") and out.content_type == "image/png"
    assert result.fields["seed"] == 7 and result.fields["inference_time"] == pytest.approx(0.2)
    assert result.fields["provider_id"] == pid


async def test_image_to_video_sends_image_url_and_returns_the_video(fal: FakeFal, tmp_path: Path) -> None:
    provider = quick(fal)
    t = task(
        tmp_path,
        SEEDANCE,
        "generate-video",
        prompt="pan",
        image="https://example.com/a.png",
        duration=5,
        resolution="720p",
    )
    result = await provider.wait(t, await provider.submit(t), Reports())
    assert submits(fal) == [
        {"prompt": "pan", "image_url": "https://example.com/a.png", "duration": "5", "resolution": "720p"}
    ]
    assert [e.path for e in fal.log if e.route == "submit"] == ["/fal-ai/bytedance/seedance/v1/pro/image-to-video"]
    assert next(e.path for e in fal.log if e.route == "status").startswith("/fal-ai/bytedance/requests/")
    [out] = result.outputs
    assert out.url and out.url.endswith(".mp4") and out.content_type == "video/mp4"


async def test_a_partner_app_gets_its_documented_inputs(fal: FakeFal, tmp_path: Path) -> None:
    """Seedance 2.0 is `bytedance/...` on fal, not `fal-ai/...`: the app id and the names still follow fal's page."""
    provider = quick(fal)
    t = task(
        tmp_path,
        "fal/bytedance/seedance-2.0/image-to-video",
        "generate-video",
        prompt="pan",
        image="https://example.com/a.png",
        last_frame="https://example.com/b.png",
        duration=8,
        generate_audio=False,
    )
    pid = await provider.submit(t)
    result = await provider.wait(t, pid, Reports())
    assert submits(fal) == [
        {
            "prompt": "pan",
            "image_url": "https://example.com/a.png",
            "end_image_url": "https://example.com/b.png",
            "duration": "8",
            "generate_audio": False,
        }
    ]
    assert [e.path for e in fal.log if e.route == "submit"] == ["/bytedance/seedance-2.0/image-to-video"]
    assert result.outputs and result.fields["provider_id"] == pid


async def test_run_passes_the_input_as_given(fal: FakeFal, tmp_path: Path) -> None:
    provider = quick(fal)
    t = task(tmp_path, SCHNELL, "run", input={"prompt": "raw", "image_size": "square", "num_images": 2})
    result = await provider.wait(t, await provider.submit(t), Reports())
    assert submits(fal) == [{"prompt": "raw", "image_size": "square", "num_images": 2}]
    assert len(result.outputs) == 2


async def test_queue_position_then_progress_are_reported(tmp_path: Path) -> None:
    with FakeFal(queue_s=0.5, latency_s=0.5, queue_start=4) as fal:
        provider = quick(fal)
        reports = Reports()
        t = task(tmp_path, prompt="x")
        await provider.wait(t, await provider.submit(t), reports)
    queued = [u for u in reports.updates if u.phase == "queued"]
    running = [u for u in reports.updates if u.phase == "running"]
    assert queued and running
    assert reports.updates.index(queued[-1]) < reports.updates.index(running[0])
    positions = [u.queue_position for u in queued if u.queue_position is not None]
    assert len(positions) == len(queued) and positions == sorted(positions, reverse=True) and positions[0] >= 2
    percents = [u.percent for u in running if u.percent is not None]
    assert len(percents) == len(running) and all(0 <= p <= 100 for p in percents)
    assert percents == sorted(percents)


@pytest.mark.parametrize(
    ("status", "kwargs", "error", "retry_after"),
    [
        (429, {"retry_after": 3, "detail": "Rate limited"}, TransientError, 3.0),
        (500, {}, TransientError, None),
        (503, {"detail": "Service unavailable"}, TransientError, None),
        (503, {"retryable": False}, PermanentError, None),
        (401, {"detail": "No user found for Key ID and Secret"}, PermanentError, None),
        (403, {"detail": "User is locked. Reason: Exhausted balance."}, PermanentError, None),
        (404, {"detail": "Application 'nope' not found"}, PermanentError, None),
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]},
            PermanentError,
            None,
        ),
        (422, {"detail": "Content policy violation", "retryable": False}, PermanentError, None),
    ],
)
async def test_submit_errors_are_classified(
    fal: FakeFal, tmp_path: Path, status: int, kwargs: dict[str, Any], error: type[Exception], retry_after: Any
) -> None:
    fal.fail_next("submit", 1, status, **kwargs)
    with pytest.raises(error) as info:
        await quick(fal).submit(task(tmp_path, prompt="x"))
    assert type(info.value) is error
    assert f"HTTP {status}" in str(info.value)
    detail = kwargs.get("detail", "Internal server error")
    for text in [detail] if isinstance(detail, str) else [d["msg"] for d in detail] + ['"loc"', '"body"']:
        assert text in str(info.value)
    assert getattr(info.value, "retry_after", None) == retry_after


async def test_a_bad_request_the_fake_refuses_keeps_fals_detail(fal: FakeFal, tmp_path: Path) -> None:
    t = task(tmp_path, SEEDANCE, "generate-video", prompt="no image")
    with pytest.raises(PermanentError, match=r"HTTP 422: .*image_url.*Field required"):
        await quick(fal).submit(t)


async def test_a_bad_key_and_a_missing_key_are_permanent(
    fal: FakeFal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PermanentError, match="HTTP 401"):
        await FalProvider("wrong:key", fal.base_url).submit(task(tmp_path, prompt="x"))
    monkeypatch.delenv("FAL_KEY", raising=False)
    before = sum(fal.hits.values())
    with pytest.raises(PermanentError, match="FAL_KEY is not set"):
        await FalProvider(base_url=fal.base_url).submit(task(tmp_path, prompt="x"))
    assert sum(fal.hits.values()) == before
    monkeypatch.setenv("FAL_KEY", fal.key)
    monkeypatch.setenv("REELFLOW_FAL_BASE_URL", fal.base_url)
    assert (await FalProvider().submit(task(tmp_path, prompt="x"))).startswith("fal-ai/flux/")


async def test_a_dropped_submit_is_transient(fal: FakeFal, tmp_path: Path) -> None:
    fal.drop_next("submit")
    with pytest.raises(TransientError):
        await quick(fal).submit(task(tmp_path, prompt="x"))


async def test_a_request_that_fails_at_fal_is_permanent_with_its_message(fal: FakeFal, tmp_path: Path) -> None:
    fal.fail_requests(1, "The image could not be generated: content flagged", "content_policy_violation")
    provider = quick(fal)
    t = task(tmp_path, prompt="x")
    pid = await provider.submit(t)
    with pytest.raises(PermanentError, match=r"content flagged.*content_policy_violation"):
        await provider.wait(t, pid, Reports())


async def test_transient_polling_errors_are_ridden_out(fal: FakeFal, tmp_path: Path) -> None:
    provider = quick(fal)
    t = task(tmp_path, prompt="x")
    pid = await provider.submit(t)
    fal.fail_next("status", 1, 503)
    fal.drop_next("status", 1)
    fal.fail_next("status", 1, 429, retry_after=0.1)
    fal.fail_next("result", 1, 500)
    result = await provider.wait(t, pid, Reports())
    assert result.outputs and fal.count("submit") == 1


async def test_polling_gives_up_after_a_few_transient_errors_and_keeps_the_work(fal: FakeFal, tmp_path: Path) -> None:
    provider = quick(fal)
    t = task(tmp_path, prompt="x")
    pid = await provider.submit(t)
    fal.fail_next("status", 50, 502)
    with pytest.raises(TransientError) as info:
        await provider.wait(t, pid, Reports())
    assert not info.value.resubmit
    assert 2 <= fal.count("status") <= 10


async def test_a_permanent_polling_error_ends_the_wait(fal: FakeFal, tmp_path: Path) -> None:
    provider = quick(fal)
    t = task(tmp_path, prompt="x")
    pid = await provider.submit(t)
    fal.fail_next("status", 1, 500, retryable=False)
    with pytest.raises(PermanentError, match="HTTP 500"):
        await provider.wait(t, pid, Reports())


async def test_cancel_reaches_fal_and_done_work_is_fine(tmp_path: Path) -> None:
    with FakeFal(queue_s=5, latency_s=5) as fal:
        provider = quick(fal)
        t = task(tmp_path, prompt="x")
        pid = await provider.submit(t)
        await provider.cancel(t, pid)
        [req] = fal.requests.values()
        assert req.canceled and fal.count("cancel") == 1
        await provider.cancel(t, pid)  # 400 ALREADY_COMPLETED: fine
        assert fal.count("cancel") == 2
        cancels = [e for e in fal.log if e.route == "cancel"]
        assert all(e.method == "PUT" and e.path.endswith(f"/requests/{req.request_id}/cancel") for e in cancels)


async def test_forged_status_urls_on_another_host_are_never_requested(tmp_path: Path) -> None:
    with FakeFal() as elsewhere, FakeFal(forge_urls=elsewhere.base_url) as fal:
        provider = quick(fal)
        t = task(tmp_path, prompt="x")
        result = await provider.wait(t, await provider.submit(t), Reports())
        assert result.outputs
        assert elsewhere.log == []
        assert all(e.authorization == f"Key {fal.key}" for e in fal.log)


async def test_polling_interval_grows(tmp_path: Path) -> None:
    with FakeFal(queue_s=1, latency_s=4) as fal:
        provider = FalProvider(fal.key, fal.base_url)  # the real schedule: 1 s doubling to 15 s
        t = task(tmp_path, prompt="x")
        started = time.monotonic()
        await provider.wait(t, await provider.submit(t), Reports())
        elapsed = time.monotonic() - started
    assert elapsed < 9  # polled at 0, 1, 3 and 7 s
    assert fal.count("status") <= 5


# --- through the engine ---------------------------------------------------------------------------


@pytest.fixture
def fal_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """fal's models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for model in MODELS:
        register_model(model, replace=True)


async def test_a_fal_job_through_the_engine_lands_in_our_storage(
    engine: Engine, running_worker: WorkerFactory, fal_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeFal(queue_s=0.2, latency_s=0.3) as fal:
        monkeypatch.setenv("FAL_KEY", fal.key)
        monkeypatch.setenv("REELFLOW_FAL_BASE_URL", fal.base_url)
        provider = FalProvider(poll_initial_s=0.05, poll_max_s=0.2)
        job = {"id": "still", "type": "generate-image", "model": SCHNELL, "params": {"prompt": "fox", "seed": 3}}
        eid = await engine.submit({"jobs": [job]})
        async with running_worker(providers_={"fal": provider}):
            state = await engine.wait(eid, timeout=30)
        image = fal.media["image.png"]
    assert state["status"] == "succeeded", state
    result = state["jobs"][0]["result"]
    assert "/v1/artifacts/" in result["url"] and result["url"].endswith(".png")
    assert Path(result["path"]).read_bytes() == image  # the fake is gone; our copy stays
    assert result["seed"] == 3
