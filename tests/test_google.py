"""The Google provider (Veo on the Gemini API) against the fake in tests/fakes/google.py, and through the engine."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from conftest import WorkerFactory
from fakes.google import FakeGoogle, video_media
from fakes.hostile import playlist_naming
from fakes.runner import ThreadedServer
from mediacheck import decoded_duration
from reelflow import media
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers.base import (
    CannotReconcile,
    PermanentError,
    ProgressUpdate,
    Task,
    TransientError,
)
from reelflow.providers.catalog import ModelSpec, check_params, estimate_cost, get_model
from reelflow.providers.catalog.google import MODELS, RESOLUTION_PRICES
from reelflow.providers.google import MAX_POLL_FAILURES, GoogleProvider, retry_delay
from reelflow.providers.registry import credential_env
from reelflow.store.sqlite import SQLiteStore

VEO = "google/veo-3.1-generate-preview"
FAST = "google/veo-3.1-fast-generate-preview"


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle(latency_s=0.4) as g:
        yield g


def provider(fake: FakeGoogle, **kwargs: Any) -> GoogleProvider:
    kwargs.setdefault("poll_initial_s", 0.02)
    kwargs.setdefault("poll_max_s", 0.2)
    return GoogleProvider(fake.key, fake.base_url, **kwargs)


def vtask(tmp_path: Path, model: str = FAST, *, attempt: int = 1, **params: Any) -> Task:
    params.setdefault("prompt", "waves at dusk")
    return Task("ex1", "clip", "generate-video", model, params, attempt, scratch=tmp_path / f"scratch-{attempt}")


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


def the_request(fake: FakeGoogle) -> dict[str, Any]:
    [op] = fake.operations.values()
    return op.request


# --- create, poll, download -----------------------------------------------------------------------


async def test_a_video_is_created_polled_and_downloaded_with_the_key_in_a_header(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    p = provider(fake)
    task = vtask(tmp_path, duration=4, negative_prompt="text", person_generation="allow_adult")
    name = await p.submit(task)
    assert name.startswith("models/veo-3.1-fast-generate-preview/operations/")
    reports = Reports()
    result = await p.wait(task, name, reports)
    await p.aclose()
    assert the_request(fake) == {
        "instances": [{"prompt": "waves at dusk"}],
        "parameters": {
            "aspectRatio": "16:9",
            "resolution": "720p",
            "durationSeconds": 4,
            "negativePrompt": "text",
            "personGeneration": "allow_adult",
        },
    }
    [out] = result.outputs
    assert out.path is not None and out.content_type == "video/mp4"
    info = await media.probe(out.path)
    assert info["has_video"] and info["has_audio"] and abs(info["duration"] - 4) < 0.3
    assert abs(await decoded_duration(out.path, "v") - 4) < 0.3
    assert result.cost_usd == pytest.approx(4 * 0.10)
    assert result.fields["provider_id"] == name and result.fields["resolution"] == "720p"
    assert fake.creates == 1 and fake.downloads == 1
    assert all(r["key"] == fake.key for r in fake.requests)  # every call carries the key, in the header only
    assert all(fake.key not in r["query"] and fake.key not in r["path"] for r in fake.requests)
    assert fake.key not in json.dumps(result.fields) and name.count(fake.key) == 0
    assert [u.phase for u in reports.updates] == ["running"]


async def test_prices_follow_the_model_and_the_resolution(fake: FakeGoogle, tmp_path: Path) -> None:
    p = provider(fake)
    for model, resolution, usd in [(VEO, "4k", 0.60), (VEO, "1080p", 0.40), (FAST, "1080p", 0.12)]:
        task = vtask(tmp_path / resolution, model, duration=8, resolution=resolution)
        result = await p.wait(task, await p.submit(task), Reports())
        assert result.cost_usd == pytest.approx(8 * usd), (model, resolution)
    await p.aclose()


async def test_a_stored_image_goes_inline_with_its_mime_type(fake: FakeGoogle, tmp_path: Path) -> None:
    first, last = tmp_path / "first.png", tmp_path / "last.jpg"
    await media.make_image(first, prompt="a", width=64, height=36)
    await media.make_image(last, prompt="b", width=64, height=36)
    p = provider(fake)
    task = vtask(tmp_path, VEO, image="https://example.com/first.png", last_frame="https://example.com/last.jpg")
    task.inputs = {"image": first, "last_frame": last}
    await p.wait(task, await p.submit(task), Reports())
    await p.aclose()
    instance = the_request(fake)["instances"][0]
    assert instance["image"] == {
        "bytesBase64Encoded": base64.b64encode(first.read_bytes()).decode(),
        "mimeType": "image/png",
    }
    assert instance["lastFrame"]["mimeType"] == "image/jpeg"
    assert base64.b64decode(instance["lastFrame"]["bytesBase64Encoded"]) == last.read_bytes()


async def test_an_input_is_typed_by_its_bytes_and_what_is_not_an_image_is_refused(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    nameless, text = tmp_path / "artifact", tmp_path / "notes.png"
    await media.make_image(tmp_path / "a.jpg", prompt="a", width=64, height=36)
    nameless.write_bytes((tmp_path / "a.jpg").read_bytes())
    text.write_bytes(b"not an image at all")
    p = provider(fake)
    task = vtask(tmp_path, VEO, image="https://example.com/a")
    task.inputs = {"image": nameless}
    await p.submit(task)
    assert the_request(fake)["instances"][0]["image"]["mimeType"] == "image/jpeg"
    task = vtask(tmp_path, VEO, image="https://example.com/notes.png")
    task.inputs = {"image": text}
    with pytest.raises(PermanentError, match="must be jpeg, png or webp"):
        await p.submit(task)
    await p.aclose()
    assert fake.creates == 1


async def test_an_image_url_on_a_private_address_is_refused_before_anything_is_sent(
    fake: FakeGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REELFLOW_ALLOW_PRIVATE_URLS", raising=False)
    monkeypatch.delenv("REELFLOW_ALLOWED_HOSTS", raising=False)
    p = provider(fake)
    with pytest.raises(PermanentError, match="'image'"):
        await p.submit(vtask(tmp_path, VEO, image="http://10.0.0.7/cat.png"))
    await p.aclose()
    assert fake.creates == 0 and not fake.requests


async def test_an_image_url_is_fetched_without_the_key_when_private_addresses_are_allowed(
    fake: FakeGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "hosted.png"
    await media.make_image(png, prompt="hosted", width=64, height=36)
    asked: list[dict[str, str | None]] = []
    app = FastAPI()

    @app.get("/{name}")
    async def serve(name: str, request: Request) -> Response:
        asked.append({"name": name, "key": request.headers.get("x-goog-api-key")})
        return Response(png.read_bytes(), media_type="image/png")

    host = ThreadedServer(app, "image host").start()
    try:
        monkeypatch.setenv("REELFLOW_ALLOW_PRIVATE_URLS", "1")
        p = provider(fake)
        await p.submit(vtask(tmp_path, VEO, image=f"{host.url}/cat.png"))
        await p.aclose()
    finally:
        host.stop()
    assert asked == [{"name": "cat.png", "key": None}]
    image = the_request(fake)["instances"][0]["image"]
    assert image["mimeType"] == "image/png" and base64.b64decode(image["bytesBase64Encoded"]) == png.read_bytes()


async def test_a_resolution_veo_makes_only_for_8_s_is_refused_before_sending(fake: FakeGoogle, tmp_path: Path) -> None:
    p = provider(fake)
    with pytest.raises(PermanentError, match="1080p only for 8 s"):
        await p.submit(vtask(tmp_path, VEO, duration=4, resolution="1080p"))
    await p.aclose()
    assert not fake.requests


# --- errors ---------------------------------------------------------------------------------------


def test_retry_delays_are_read_from_retry_info() -> None:
    assert retry_delay([{"@type": "x"}, {"retryDelay": "17s"}]) == 17.0
    assert retry_delay([{"retryDelay": "1.5s"}]) == 1.5
    assert retry_delay([{"retryDelay": "soon"}]) is None
    assert retry_delay(None) is None


async def test_a_quota_429_is_transient_not_sent_with_its_retry_delay(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.fail_next_creates_with(429, retry_delay=17)
    p = provider(fake)
    with pytest.raises(TransientError) as caught:
        await p.submit(vtask(tmp_path))
    assert caught.value.retry_after == 17.0 and caught.value.not_sent
    assert "RESOURCE_EXHAUSTED" in caught.value.message
    assert p.gate.hold_until > time.monotonic() + 15  # every create of this process waits as long
    p.gate.hold_until = 0.0
    fake.fail_next_creates_with(429, retry_after=3)  # no RetryInfo: the Retry-After header
    with pytest.raises(TransientError) as caught:
        await p.submit(vtask(tmp_path))
    assert caught.value.retry_after == 3.0 and caught.value.not_sent
    await p.aclose()
    assert fake.creates == 0


@pytest.mark.parametrize(
    ("status", "rpc", "transient"),
    [
        (500, None, True),
        (503, None, True),
        (400, None, False),
        (403, None, False),
        (400, "FAILED_PRECONDITION", False),
    ],
)
async def test_create_errors_are_classified(
    fake: FakeGoogle, tmp_path: Path, status: int, rpc: str | None, transient: bool
) -> None:
    fake.fail_next_creates_with(status, message="the words Google chose", rpc_status=rpc)
    p = provider(fake)
    with pytest.raises(TransientError if transient else PermanentError) as caught:
        await p.submit(vtask(tmp_path))
    await p.aclose()
    assert "the words Google chose" in caught.value.message and f"HTTP {status}" in caught.value.message
    assert not caught.value.not_sent  # a 5xx may come after the work started


async def test_the_fake_refuses_what_google_refuses_and_the_message_reaches_the_job(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    p = provider(fake)
    task = vtask(tmp_path, "google/veo-3.0-generate-001", duration=4)  # Veo 3 makes 8 s only
    with pytest.raises(PermanentError, match="INVALID_ARGUMENT: durationSeconds 4 is out of bounds"):
        await p.submit(task)
    wrong_key = GoogleProvider("AIza-wrong", fake.base_url)
    with pytest.raises(PermanentError, match="API key not valid"):
        await wrong_key.submit(vtask(tmp_path))
    await p.aclose()
    await wrong_key.aclose()
    assert fake.creates == 0


async def test_a_safety_block_is_permanent_and_names_the_reason(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.safety_block(["Your prompt may violate our usage guidelines (celebrity likeness)."])
    p = provider(fake)
    task = vtask(tmp_path)
    name = await p.submit(task)
    with pytest.raises(PermanentError, match=r"safety filters blocked the video: .*celebrity likeness"):
        await p.wait(task, name, Reports())
    await p.aclose()
    assert fake.downloads == 0


@pytest.mark.parametrize(("code", "transient"), [(13, True), (14, True), (8, True), (3, False), (7, False), (9, False)])
async def test_a_failed_operation_is_classified_by_its_code(
    fake: FakeGoogle, tmp_path: Path, code: int, transient: bool
) -> None:
    fake.operations_fail({"code": code, "message": "generation failed"})
    p = provider(fake)
    task = vtask(tmp_path)
    name = await p.submit(task)
    with pytest.raises(TransientError if transient else PermanentError, match="generation failed") as caught:
        await p.wait(task, name, Reports())
    await p.aclose()
    assert caught.value.resubmit is transient  # the failed operation is gone: a retry starts a new one


async def test_polling_rides_out_a_few_failures_then_gives_up(fake: FakeGoogle, tmp_path: Path) -> None:
    p = provider(fake, poll_max_s=0.05)
    task = vtask(tmp_path)
    name = await p.submit(task)
    fake.fail_next_gets_with(503, MAX_POLL_FAILURES - 1)
    result = await p.wait(task, name, Reports())
    assert result.outputs
    task2 = vtask(tmp_path, attempt=2)
    name2 = await p.submit(task2)
    fake.fail_next_gets_with(503, MAX_POLL_FAILURES)
    with pytest.raises(TransientError, match="UNAVAILABLE"):
        await p.wait(task2, name2, Reports())
    await p.aclose()


async def test_polls_back_off(tmp_path: Path) -> None:
    with FakeGoogle(latency_s=1.6) as fake:
        p = provider(fake, poll_initial_s=0.05, poll_max_s=0.4)
        task = vtask(tmp_path)
        await p.wait(task, await p.submit(task), Reports())
        await p.aclose()
        times = [r["t"] for r in fake.requests_to("/v1beta/models/") if r["method"] == "GET"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 4 <= len(times) <= 9, gaps  # 0.05, 0.1, 0.2, 0.4, 0.4...: not one look every 50 ms
    assert gaps[0] < 0.2 and max(gaps) > 0.3 and all(g < 0.6 for g in gaps), gaps
    assert all(b >= a - 0.05 for a, b in itertools.pairwise(gaps)), gaps  # growing, never shrinking


async def test_an_unknown_operation_and_a_bad_name_are_permanent(fake: FakeGoogle, tmp_path: Path) -> None:
    p = provider(fake)
    task = vtask(tmp_path)
    task.resumed = True
    with pytest.raises(PermanentError, match="not known"):
        await p.wait(task, "models/veo-3.1-fast-generate-preview/operations/gone", Reports())
    with pytest.raises(PermanentError, match="not a google operation name"):
        await p.wait(task, "../files/x", Reports())
    await p.aclose()


# --- the key stays home ---------------------------------------------------------------------------


async def test_a_video_uri_on_another_origin_is_refused_and_never_sees_the_key(
    fake: FakeGoogle, tmp_path: Path
) -> None:
    with FakeGoogle() as elsewhere:
        fake.video_uri_origin = elsewhere.origin
        p = provider(fake)
        task = vtask(tmp_path)
        name = await p.submit(task)
        with pytest.raises(PermanentError, match="not on the API's origin"):
            await p.wait(task, name, Reports())
        await p.aclose()
        assert elsewhere.requests == []
    fake.video_uri_origin = fake.origin.replace("127.0.0.1", "localhost")  # same port, another host name
    p = provider(fake)
    task = vtask(tmp_path, attempt=2)
    with pytest.raises(PermanentError, match="not on the API's origin"):
        await p.wait(task, await p.submit(task), Reports())
    await p.aclose()
    assert fake.downloads == 0


async def test_a_redirected_download_is_followed_without_the_key(fake: FakeGoogle, tmp_path: Path) -> None:
    fake.redirect_downloads = True
    p = provider(fake)
    task = vtask(tmp_path)
    result = await p.wait(task, await p.submit(task), Reports())
    await p.aclose()
    assert result.outputs[0].path is not None and fake.downloads == 1
    [signed] = fake.requests_to("/signed/")
    assert signed["key"] is None


async def test_no_key_no_call(fake: FakeGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    p = GoogleProvider(base_url=fake.base_url)
    with pytest.raises(PermanentError, match="GEMINI_API_KEY is not set"):
        await p.submit(vtask(tmp_path))
    await p.aclose()
    assert not fake.requests and credential_env("google") == "GEMINI_API_KEY"


async def test_cancel_is_a_logged_no_op_and_lookups_cannot_reconcile(fake: FakeGoogle, tmp_path: Path) -> None:
    p = provider(fake)
    task = vtask(tmp_path)
    name = await p.submit(task)
    await p.cancel(task, name)
    with pytest.raises(CannotReconcile):
        await p.find_submitted(task, 0.0)
    await p.aclose()
    assert len(fake.requests) == 1  # the create; nothing else was asked


# --- the catalog ----------------------------------------------------------------------------------


def test_the_catalog_holds_each_veo_model_with_its_choices_and_prices() -> None:
    for spec in MODELS:
        assert get_model(spec.id) is spec
        assert set(RESOLUTION_PRICES[spec.id]) == set(spec.params["resolution"].choices or [])
        assert spec.price.usd == RESOLUTION_PRICES[spec.id]["720p"] and "2026-12-06" in spec.description
    veo = get_model(VEO)
    assert veo is not None
    assert estimate_cost(veo, {"duration": 6}) == pytest.approx(2.4)
    assert problems(veo, {"prompt": "x", "duration": 5})
    assert problems(veo, {"prompt": "x", "aspect_ratio": "1:1"})
    assert problems(veo, {"prompt": "x", "seed": 1})  # the Gemini API takes no seed for Veo (Vertex AI does)
    assert not problems(veo, {"prompt": "x", "duration": 8, "resolution": "4k", "last_frame": "https://e.com/a.png"})
    lite = get_model("google/veo-3.1-lite-generate-preview")
    assert lite is not None and problems(lite, {"prompt": "x", "resolution": "4k"})
    veo3 = get_model("google/veo-3.0-generate-001")
    assert veo3 is not None and problems(veo3, {"prompt": "x", "duration": 4}) and "last_frame" not in veo3.params


def problems(spec: ModelSpec, params: dict[str, Any]) -> list[Any]:
    return list(
        check_params(
            spec.params,
            params,
            extra_allowed=False,
            loc_prefix=["params"],
            job_key="clip",
            allow_refs=False,
            rules=spec.rules,
        )
    )


# --- through the engine ---------------------------------------------------------------------------


async def everything_stored(store: SQLiteStore, engine: Engine, eid: str) -> str:
    """The execution's state and every event, as one text."""
    state = (await engine.get(eid)).model_dump(mode="json")
    events = await store.events(eid)
    return json.dumps(state, default=str) + json.dumps([dataclasses.asdict(e) for e in events], default=str)


async def test_a_veo_job_through_the_engine_after_a_429_lands_in_our_storage(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGoogle(latency_s=1.0) as fake:
        monkeypatch.setenv("GEMINI_API_KEY", fake.key)
        monkeypatch.setenv("REELFLOW_GOOGLE_BASE_URL", fake.base_url)
        fake.fail_next_creates_with(429, retry_delay=0.2)
        job = {"id": "clip", "type": "generate-video", "model": FAST, "params": {"prompt": "waves", "duration": 4}}
        eid = await engine.submit({"jobs": [job]})
        p = GoogleProvider(poll_initial_s=0.05, poll_max_s=0.3)
        async with running_worker(providers_={"google": p}):
            state = await engine.wait(eid, timeout=60, poll_s=0.1)
        await p.aclose()
        assert fake.creates == 1 and len(fake.requests_to("/v1beta/models/veo-3.1-fast-generate-preview:")) == 2
        [name] = fake.operations
        stored = await everything_stored(store, engine, eid)
        key = fake.key
    assert state["status"] == "succeeded", state
    [clip] = state["jobs"]
    result = clip["result"]
    assert result["provider_id"] == name and clip["provider_job_id"] == name
    assert "/v1/artifacts/" in result["url"]
    info = await media.probe(Path(result["path"]))  # the fake is gone: the file is ours
    assert info["has_video"] and info["has_audio"] and abs(info["duration"] - 4) < 0.3
    assert abs(await decoded_duration(Path(result["path"]), "a") - 4) < 0.3
    assert state["cost"]["actual"] == pytest.approx(0.4)
    assert key not in stored and "x-goog-api-key" not in stored


async def test_a_5xx_create_is_retried_through_the_engine(
    engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGoogle(latency_s=0.3) as fake:
        monkeypatch.setenv("GEMINI_API_KEY", fake.key)
        monkeypatch.setenv("REELFLOW_GOOGLE_BASE_URL", fake.base_url)
        fake.fail_next_creates_with(503, 2)
        job = {"id": "clip", "type": "generate-video", "model": FAST, "params": {"prompt": "waves", "duration": 4}}
        eid = await engine.submit({"jobs": [job]})
        p = GoogleProvider(poll_initial_s=0.05, poll_max_s=0.3)
        async with running_worker(providers_={"google": p}):
            state = await engine.wait(eid, timeout=60, poll_s=0.1)
        await p.aclose()
        assert fake.creates == 1
    assert state["status"] == "succeeded", state
    assert state["jobs"][0]["attempts"] == 3


async def test_a_safety_block_fails_the_job_at_once_with_the_reason(
    engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGoogle(latency_s=0.2) as fake:
        monkeypatch.setenv("GEMINI_API_KEY", fake.key)
        monkeypatch.setenv("REELFLOW_GOOGLE_BASE_URL", fake.base_url)
        fake.safety_block(["The prompt names a real person."])
        job = {"id": "clip", "type": "generate-video", "model": VEO, "params": {"prompt": "a senator", "duration": 4}}
        eid = await engine.submit({"jobs": [job]})
        p = GoogleProvider(poll_initial_s=0.05, poll_max_s=0.3)
        async with running_worker(providers_={"google": p}):
            state = await engine.wait(eid, timeout=60, poll_s=0.1)
        await p.aclose()
        assert fake.creates == 1
    assert state["status"] == "failed"
    [clip] = state["jobs"]
    assert clip["attempts"] == 1 and "names a real person" in str(clip["error"]), clip


@pytest.mark.parametrize("fault", ["drop", "delay"])
async def test_a_lost_create_answer_is_paid_again_and_said(
    fault: str, engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing lists Veo operations: after a lost answer the retry starts another one, and the job and the
    execution record the possible duplicate charge (at the job's estimate)."""
    with FakeGoogle(latency_s=0.3) as fake:
        monkeypatch.setenv("GEMINI_API_KEY", fake.key)
        monkeypatch.setenv("REELFLOW_GOOGLE_BASE_URL", fake.base_url)
        p = GoogleProvider(poll_initial_s=0.05, poll_max_s=0.3)
        if fault == "drop":
            fake.accept_then_drop(1)
        else:
            p.timeout = httpx.Timeout(connect=2.0, read=0.5, write=2.0, pool=2.0)
            fake.accept_then_delay(1, delay_s=1.5)
        job = {"id": "clip", "type": "generate-video", "model": FAST, "params": {"prompt": "waves", "duration": 4}}
        eid = await engine.submit({"jobs": [job]})
        estimate = float((await engine.get(eid)).jobs[0].cost.estimated)
        async with running_worker(providers_={"google": p}):
            state = await engine.wait(eid, timeout=30, poll_s=0.1)
        await p.aclose()
        assert fake.creates == 2
    assert state["status"] == "succeeded", state
    [clip] = state["jobs"]
    assert clip["possible_duplicates"] == state["possible_duplicates"] == 1
    assert clip["possible_duplicate_charge"] == pytest.approx(estimate) == pytest.approx(0.4)


@pytest.mark.parametrize("answer", ["redirect to a private address", "playlist naming a local file", "text"])
async def test_a_hostile_video_answer_fails_the_job_for_good_and_stores_nothing(
    answer: str,
    engine: Engine,
    running_worker: WorkerFactory,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The video URI is on the API's origin (so it gets the key) but answers what no video is: a redirect to an
    internal service (followed without the key, and refused by the egress guard), an HLS playlist naming a local
    file, or text. Nothing is stored, nothing internal is reached, and the job is not retried."""
    hits: list[str] = []
    internal_app = FastAPI()

    @internal_app.get("/{name}")
    async def secret(name: str) -> Response:
        hits.append(name)
        return Response(b'{"secret": "s3cr3t"}', media_type="application/json")

    internal = ThreadedServer(internal_app, "internal").start()
    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(video_media(1))
    try:
        with FakeGoogle(latency_s=0.1) as fake:
            monkeypatch.setenv("GEMINI_API_KEY", fake.key)
            monkeypatch.setenv("REELFLOW_GOOGLE_BASE_URL", fake.base_url)
            if answer == "text":
                fake.hostile.serve("clip.mp4", b'{"secret": "s3cr3t"}', "application/octet-stream")
            elif answer.startswith("playlist"):
                fake.hostile.serve("clip.mp4", playlist_naming(f"file://{elsewhere}"), "video/mp4")
            else:
                fake.hostile.redirect("clip.mp4", f"{internal.url}/secret")
            fake.video_uri_override = f"{fake.origin}/hostile/clip.mp4"
            job = {"id": "clip", "type": "generate-video", "model": FAST, "params": {"prompt": "waves", "duration": 4}}
            eid = await engine.submit({"jobs": [{**job, "max_attempts": 3}]})
            p = GoogleProvider(poll_initial_s=0.05, poll_max_s=0.2)
            async with running_worker(providers_={"google": p}):
                state = await engine.wait(eid, timeout=30, poll_s=0.1)
            await p.aclose()
            assert fake.creates == 1 and fake.hostile.hits["clip.mp4"] == 1
    finally:
        internal.stop()
    [clip] = state["jobs"]
    assert clip["status"] == "failed" and clip["attempts"] == 1, clip
    assert clip.get("result") is None and "s3cr3t" not in str(clip["error"])
    assert hits == []
    root = Path(settings.storage_url.removeprefix("file://"))
    assert not root.exists() or not [f for f in root.rglob("*") if f.is_file()]
    if answer.startswith("redirect"):
        assert f"refused: {internal.url}/secret is not a public address" in clip["error"]
