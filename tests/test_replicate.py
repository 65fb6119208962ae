"""The Replicate adapter against a faithful fake of Replicate's API."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from conftest import WorkerFactory
from fakes.replicate import FakeReplicate
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog, replicate
from reelflow.providers.base import PermanentError, ProgressUpdate, Task, TransientError
from reelflow.providers.catalog import get_model, register_model
from reelflow.providers.catalog.replicate import INPUT_MAPS, MODELS
from reelflow.providers.local import LocalProvider
from reelflow.providers.replicate import ReplicateProvider, parse_percent

SEEDANCE = "replicate/bytedance/seedance-1-pro"
FLUX = "replicate/black-forest-labs/flux-schnell"
CALLBACK_URL = "https://callbacks.example/v1/providers/replicate/callback?execution=ex1&job=clip"


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    with FakeReplicate(latency_s=0.4, queue_s=0.1) as f:
        yield f


def make_provider(fake: FakeReplicate, **kw: Any) -> ReplicateProvider:
    kw.setdefault("poll_initial_s", 0.05)
    kw.setdefault("poll_max_s", 0.2)
    return ReplicateProvider(kw.pop("token", fake.token), fake.base_url, **kw)


def task(tmp_path: Path, model: str = SEEDANCE, type_: str = "generate-video", **params: Any) -> Task:
    return Task("ex1", "clip", type_, model, params, 1, tmp_path / "scratch")


def create_bodies(fake: FakeReplicate) -> list[dict[str, Any]]:
    return [json.loads(r["raw_body"]) for r in fake.requests if r["method"] == "POST" and "raw_body" in r]


async def run(provider: ReplicateProvider, t: Task) -> tuple[Any, list[ProgressUpdate]]:
    updates: list[ProgressUpdate] = []
    pid = await provider.submit(t)
    result = await provider.wait(t, pid, updates.append)
    return result, updates


# --- the catalog ---------------------------------------------------------------------------------


def test_every_model_serves_run_and_maps_only_declared_params() -> None:
    assert len(MODELS) >= 10
    for m in MODELS:
        assert "run" in m.types and m.provider == "replicate"
        assert set(INPUT_MAPS[m.id]) <= set(m.params), m.id
        assert m.price.usd > 0


# --- a full job ----------------------------------------------------------------------------------


async def test_seedance_job_reaches_the_right_endpoint_with_mapped_input(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    t = task(tmp_path, prompt="slow waves", image="https://example.com/still.png", duration=5, resolution="480p")
    result, _ = await run(provider, t)
    creates = fake.requests_to("/v1/models/")
    assert [r["path"] for r in creates] == ["/v1/models/bytedance/seedance-1-pro/predictions"]
    assert creates[0]["authorization"] == f"Bearer {fake.token}"
    assert creates[0]["prefer"] is None  # only image models hold the create open
    body = create_bodies(fake)[0]
    assert "version" not in body
    assert body["input"] == {
        "prompt": "slow waves",
        "image": "https://example.com/still.png",
        "duration": 5,
        "resolution": "480p",
        "aspect_ratio": "16:9",
    }
    pid = result.fields["provider_id"]
    assert [o.url for o in result.outputs] == [f"{fake.origin}/files/{pid}.mp4"]
    assert result.outputs[0].content_type == "video/mp4"
    assert result.fields["predict_time"] == pytest.approx(0.4)
    assert result.cost_usd == pytest.approx(5 * 0.03)
    async with httpx.AsyncClient() as client:
        video = await client.get(result.outputs[0].url or "")
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    await provider.aclose()


async def test_inputs_use_each_models_own_names(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    t = task(tmp_path, model="replicate/kwaivgi/kling-v2.1", prompt="p", image="https://example.com/a.png")
    await provider.submit(t)
    assert create_bodies(fake)[0]["input"] == {
        "prompt": "p",
        "start_image": "https://example.com/a.png",
        "duration": 5,
        "mode": "standard",
    }
    await provider.aclose()


async def test_progress_comes_from_the_logs(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.latency_s, fake.queue_s = 1.0, 0.2
    provider = make_provider(fake, poll_initial_s=0.1, poll_max_s=0.1)
    _, updates = await run(provider, task(tmp_path, prompt="p"))
    assert updates[0].phase == "queued"
    running = [u.percent for u in updates if u.phase == "running" and u.percent is not None]
    assert len(running) >= 3
    assert running == sorted(running) and running[-1] > running[0]
    await provider.aclose()


def test_parse_percent_takes_the_last_one() -> None:
    assert parse_percent("loading\n 10%|#| 1/10\n 40%|####| 4/10\n") == 40
    assert parse_percent("no numbers here") is None
    assert parse_percent(None) is None


async def test_image_model_prefers_wait_and_needs_no_poll(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.latency_s, fake.queue_s = 0.2, 0.0
    provider = make_provider(fake)
    result, _ = await run(provider, task(tmp_path, model=FLUX, type_="generate-image", prompt="a cat"))
    assert fake.requests_to("/v1/models/")[0]["prefer"] == "wait=5"
    assert fake.gets == 0
    assert create_bodies(fake)[0]["input"]["output_format"] == "png"
    assert len(result.outputs) == 1 and (result.outputs[0].url or "").endswith(".png")
    assert result.cost_usd == pytest.approx(0.003)
    await provider.aclose()


async def test_pinned_version_posts_to_predictions_with_the_version(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    t = task(
        tmp_path,
        model="replicate/acme/thing:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
        type_="run",
        input={"text": "hi", "steps": 4},
    )
    result, _ = await run(provider, t)
    assert fake.requests_to("/v1/predictions")[0]["path"] == "/v1/predictions"
    body = create_bodies(fake)[0]
    assert body == {
        "input": {"text": "hi", "steps": 4},
        "version": "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa",
    }
    assert result.outputs and result.cost_usd is None
    await provider.aclose()


async def test_data_uri_output_becomes_a_local_file(fake: FakeReplicate, tmp_path: Path) -> None:
    png = fake.media["png"]
    fake.output_override = "data:image/png;base64," + base64.b64encode(png).decode()
    provider = make_provider(fake)
    result, _ = await run(provider, task(tmp_path, prompt="p"))
    out = result.outputs[0]
    assert out.url is None and out.path is not None and out.path.read_bytes() == png
    assert out.path.parent == tmp_path / "scratch" and out.content_type == "image/png"
    await provider.aclose()


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "detail", "expected_retry_after"),
    [
        (429, 7, None, 7.0),
        (429, None, "Request was throttled. Expected available in 3 seconds.", 3.0),
        (429, None, "Request was throttled. Expected available in 1 second.", 1.0),
        (500, None, None, None),
        (503, None, None, None),
    ],
)
async def test_throttling_and_server_errors_are_transient(
    fake: FakeReplicate,
    tmp_path: Path,
    status: int,
    retry_after: float | None,
    detail: str | None,
    expected_retry_after: float | None,
) -> None:
    fake.fail_next_creates_with(status, 1, retry_after=retry_after, detail=detail)
    provider = make_provider(fake)
    provider.create_retries_on_429 = 0  # the classification itself, not the in-place retry
    with pytest.raises(TransientError) as caught:
        await provider.submit(task(tmp_path, prompt="p"))
    assert caught.value.retry_after == expected_retry_after
    assert str(status) in caught.value.message
    assert provider.gate.throttled == (status == 429)
    provider.gate.hold_until = 0.0  # not wait out the Retry-After here
    assert await provider.submit(task(tmp_path, prompt="p"))  # the next try goes through
    await provider.aclose()


async def test_a_throttled_create_is_sent_again_after_the_hold_and_other_calls_wait_too(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    fake.fail_next_creates_with(429, 2, retry_after=0.3)
    provider = make_provider(fake)
    started = time.monotonic()
    pid = await provider.submit(task(tmp_path, prompt="p"))
    assert pid in fake.predictions and fake.creates == 1  # one prediction, billed once
    assert len(fake.requests_to("/v1/models/")) == 3  # three create requests: two refused with 429
    assert time.monotonic() - started >= 0.55  # two holds of 0.3 s
    assert provider.gate.throttled == 2
    await provider.aclose()


async def test_dropped_connection_is_transient(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.drop_connection_next(1)
    provider = make_provider(fake)
    with pytest.raises(TransientError):
        await provider.submit(task(tmp_path, prompt="p"))
    await provider.aclose()


async def test_unreachable_host_is_transient(tmp_path: Path) -> None:
    provider = ReplicateProvider("tok", "http://127.0.0.1:9/v1")
    with pytest.raises(TransientError):
        await provider.submit(task(tmp_path, prompt="p"))
    await provider.aclose()


@pytest.mark.parametrize("status", [402, 404, 422])
async def test_refusals_are_permanent_with_the_detail(fake: FakeReplicate, tmp_path: Path, status: int) -> None:
    from fakes.replicate import DEFAULT_DETAILS

    fake.fail_next_creates_with(status)
    provider = make_provider(fake)
    with pytest.raises(PermanentError) as caught:
        await provider.submit(task(tmp_path, prompt="p"))
    assert DEFAULT_DETAILS[status] in caught.value.message
    await provider.aclose()


async def test_bad_token_is_permanent_with_the_detail(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake, token="r8_wrong")
    with pytest.raises(PermanentError, match="You did not pass a valid authentication token"):
        await provider.submit(task(tmp_path, prompt="p"))
    await provider.aclose()


async def test_missing_token_is_permanent_and_sends_nothing(
    fake: FakeReplicate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    provider = ReplicateProvider(base_url=fake.base_url)
    with pytest.raises(PermanentError, match="REPLICATE_API_TOKEN is not set"):
        await provider.submit(task(tmp_path, prompt="p"))
    assert fake.requests == []


async def test_failed_prediction_is_permanent_with_replicates_error(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.prediction_fails("NSFW content detected")
    provider = make_provider(fake)
    with pytest.raises(PermanentError, match="NSFW content detected"):
        await run(provider, task(tmp_path, prompt="p"))
    await provider.aclose()


async def test_a_dropped_poll_is_retried_inside_wait(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    t = task(tmp_path, prompt="p")
    pid = await provider.submit(t)
    fake.drop_connection_next(2)
    result = await provider.wait(t, pid, lambda u: None)
    assert result.outputs
    await provider.aclose()


# --- cancel, hosts, polling ----------------------------------------------------------------------


async def test_cancel_reaches_the_fake_and_wait_then_fails(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.latency_s = 30
    provider = make_provider(fake)
    t = task(tmp_path, prompt="p")
    pid = await provider.submit(t)
    await provider.cancel(t, pid)
    assert fake.cancels == 1
    assert fake.requests_to(f"/v1/predictions/{pid}/cancel")[0]["authorization"] == f"Bearer {fake.token}"
    with pytest.raises(PermanentError, match="canceled"):
        await provider.wait(t, pid, lambda u: None)
    await provider.cancel(t, pid)  # already over: no error
    await provider.cancel(t, "unknown-id")  # never ours: no error
    await provider.aclose()


def signed_webhook(fake: FakeReplicate, body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    now = datetime.now(UTC)
    signature = Webhook(fake.webhook_secret).sign("msg_1", now, raw.decode())
    return {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}, raw


@pytest.mark.parametrize(
    ("body", "tells"),
    [
        ({"status": "succeeded", "output": "https://x.example/a.mp4", "input": {"prompt": "p"}, "urls": {}}, True),
        ({"status": "succeeded", "output": ["https://x.example/a.png", "https://x.example/b.png"]}, True),
        ({"status": "failed", "error": "out of memory", "output": None}, True),
        ({"status": "canceled"}, True),
        ({"status": "aborted"}, True),
        ({"status": "succeeded", "output": None}, False),  # the output is not in yet
        ({"status": "succeeded"}, False),
        ({"status": "processing", "output": "https://x.example/partial.mp4"}, False),
        ({"status": "starting"}, False),
        ({"status": "mystery", "output": "https://x.example/a.mp4"}, False),
    ],
)
async def test_a_webhook_carries_an_outcome_only_when_it_tells_the_end(
    fake: FakeReplicate, body: dict[str, Any], tells: bool
) -> None:
    event = await make_provider(fake).verify_callback(*signed_webhook(fake, {"id": "p1", **body}))
    assert event.provider_job_id == "p1" and event.status == body["status"]
    if tells:  # the fields `wait` reads, and no others (the input, the urls stay behind)
        assert event.outcome == {"id": "p1", **{k: v for k, v in body.items() if k not in ("input", "urls")}}
    else:
        assert event.outcome is None


@pytest.mark.parametrize(("about", "reads"), [("the prediction", 0), ("another prediction", 1)])
async def test_a_callbacks_outcome_ends_the_wait_without_a_read_only_when_it_is_about_the_prediction(
    fake: FakeReplicate, tmp_path: Path, about: str, reads: int
) -> None:
    provider = make_provider(fake, callback_poll_s=30.0)
    t = task(tmp_path, prompt="waves", duration=5)
    t.callback_url = CALLBACK_URL
    pid = await provider.submit(t)
    time.sleep(0.6)  # the prediction ends
    if about == "the prediction":
        event = await provider.verify_callback(*signed_webhook(fake, fake._view(fake.predictions[pid])))
        assert event.outcome is not None
        t.callback_outcome = event.outcome
    else:
        t.callback_outcome = {"id": "earlier", "status": "failed", "error": "an earlier attempt's", "output": None}
    t.wake.set()
    result = await provider.wait(t, pid, lambda update: None)
    assert fake.gets == reads
    assert [o.url for o in result.outputs] == [f"{fake.origin}/files/{pid}.mp4"]
    assert result.fields == {"provider_id": pid, "predict_time": fake.latency_s}
    assert "Generating" in t.log.text and t.provider_queued_s is not None


async def test_a_failure_told_by_a_callback_fails_the_wait_with_replicates_error_without_a_read(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    provider = make_provider(fake, callback_poll_s=30.0)
    failing = task(tmp_path, prompt="fire", duration=5)
    failing.callback_url = CALLBACK_URL
    other = await provider.submit(failing)
    failing.callback_outcome = {"id": other, "status": "failed", "error": "the GPU caught fire", "output": None}
    failing.wake.set()
    with pytest.raises(PermanentError, match=f"prediction {other} failed: the GPU caught fire"):
        await provider.wait(failing, other, lambda update: None)
    assert fake.gets == 0


async def test_a_forged_get_url_is_never_followed(fake: FakeReplicate, tmp_path: Path) -> None:
    with FakeReplicate() as elsewhere:
        fake.forge_urls_get(f"http://localhost:{elsewhere.port}/v1/predictions/{{id}}")
        provider = make_provider(fake)
        result, _ = await run(provider, task(tmp_path, prompt="p"))
        assert result.outputs
        assert elsewhere.requests == []
    hosts = {r["host"] for r in fake.requests if r["authorization"]}
    assert hosts == {f"127.0.0.1:{fake.port}"}
    await provider.aclose()


async def test_odd_prediction_ids_are_refused_before_any_request(fake: FakeReplicate, tmp_path: Path) -> None:
    provider = make_provider(fake)
    with pytest.raises(PermanentError):
        await provider.wait(task(tmp_path), "../../elsewhere", lambda u: None)
    assert fake.requests == []


async def test_polling_jumps_to_the_finish_estimated_from_the_percentages(fake: FakeReplicate, tmp_path: Path) -> None:
    fake.latency_s, fake.queue_s = 5.0, 0.0
    provider = make_provider(fake, poll_initial_s=0.1, poll_max_s=15.0)
    created = time.time()
    result, _ = await run(provider, task(tmp_path, prompt="p"))
    assert result.outputs
    times = [r["t"] for r in fake.requests_to("/v1/predictions/")]
    assert 2 <= len(times) <= 5  # one per 0.1 s would be 50; doubling from 0.1 s would be 7 and end late
    assert times[-1] - created < 5.0 + 1.2  # seen done about a second after it ended at most
    await provider.aclose()


async def test_polling_interval_doubles_without_percentages(
    fake: FakeReplicate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.latency_s, fake.queue_s = 3.0, 0.0
    monkeypatch.setattr(replicate, "parse_percent", lambda logs: None)
    provider = make_provider(fake, poll_initial_s=0.1, poll_max_s=15.0)
    result, _ = await run(provider, task(tmp_path, prompt="p"))
    assert result.outputs
    times = [r["t"] for r in fake.requests_to("/v1/predictions/")]
    assert 3 <= len(times) <= 8  # one per 0.1 s would be 30
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] > 4 * gaps[0]
    await provider.aclose()


# --- through the engine --------------------------------------------------------------------------


@pytest.fixture
def replicate_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Replicate models in the catalog for this test only (the catalog is left as it was)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for m in MODELS:
        register_model(m, replace=True)


async def test_end_to_end_through_the_engine(
    engine: Engine,
    running_worker: Any,
    fake: FakeReplicate,
    monkeypatch: pytest.MonkeyPatch,
    replicate_catalog: None,
) -> None:
    monkeypatch.setenv("REELFLOW_REPLICATE_BASE_URL", fake.base_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
    provider = ReplicateProvider(poll_initial_s=0.05, poll_max_s=0.2)
    plan = {
        "jobs": [
            {
                "id": "clip",
                "type": "generate-video",
                "model": SEEDANCE,
                "params": {"prompt": "slow waves", "duration": 5},
            }
        ]
    }
    eid = await engine.submit(plan)
    async with running_worker(providers_={"replicate": provider}):
        state = await engine.wait(eid, timeout=30)
    await provider.aclose()
    assert get_model(SEEDANCE) is not None
    assert fake.creates == 1
    job = state["jobs"][0]
    assert state["status"] == "succeeded", job.get("error")
    result = job["result"]
    assert result["provider_id"] in fake.predictions
    assert "/v1/artifacts/" in result["url"] and not result["url"].startswith(fake.origin)
    assert result["content_type"] == "video/mp4"
    assert fake.requests_to("/files/")  # the worker copied the output from the provider's URL


async def test_whisper_on_replicate_gives_word_timings_that_caption_a_video(
    fake: FakeReplicate, engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
    fake.latency_s, fake.queue_s = 0.2, 0.0
    plan = {
        "jobs": [
            {
                "id": "voice",
                "type": "generate-audio",
                "model": "local/audio",
                "params": {"text": "Every evening the sea keeps its promise.", "duration": 3},
            },
            {
                "id": "transcript",
                "type": "transcribe",
                "model": "replicate/openai/whisper:abc123",
                "params": {"audio": "$voice", "language": "en"},
            },
            {
                "id": "clip",
                "type": "generate-video",
                "model": "local/video",
                "params": {"prompt": "the sea", "duration": 3},
            },
            {"id": "final", "type": "captions", "params": {"video": "$clip", "words": "$transcript.words"}},
        ]
    }
    eid = await engine.submit(plan)
    provider = make_provider(fake)
    async with running_worker(providers_={"replicate": provider, "local": LocalProvider()}):
        state = await engine.wait(eid, timeout=60)
    await provider.aclose()
    assert state["status"] == "succeeded", state["error"]
    jobs = {j["id"]: j for j in state["jobs"]}
    transcript = jobs["transcript"]["result"]
    assert [w["word"] for w in transcript["words"]] == ["Every", "evening", "the", "sea", "keeps", "its", "promise."]
    assert transcript["words"][0]["start"] == 0.0 and transcript["words"][-1]["end"] == pytest.approx(2.4)
    assert transcript["language"] == "english" and transcript["url"].endswith(".srt")
    assert Path(transcript["path"]).read_text().startswith("1\n00:00:00,000 --> ")
    create = json.loads(fake.requests_to("/v1/predictions")[0]["raw_body"])
    assert create["version"] == "abc123" and create["input"]["audio"] == jobs["voice"]["result"]["url"]
    final = await media.probe(Path(jobs["final"]["result"]["path"]))
    assert final["has_video"] and final["duration"] == pytest.approx(3.0, abs=0.1)
