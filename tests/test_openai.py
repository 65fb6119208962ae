"""The OpenAI adapter (speech and images) against a faithful fake of those APIs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory
from fakes.openai import FakeOpenAI, error
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, ProgressUpdate, Task, TransientError
from reelflow.providers.catalog import check_params, register_model
from reelflow.providers.catalog.openai import IMAGE_PRICES, MODELS, MODELS_BY_ID
from reelflow.providers.openai import OpenAIProvider

TTS = "openai/gpt-4o-mini-tts"
IMAGE = "openai/gpt-image-1"


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def provider(oai: FakeOpenAI) -> OpenAIProvider:
    return OpenAIProvider(oai.key, oai.base_url)


_JOBS = itertools.count(1)


def task(tmp_path: Path, model: str = TTS, job_type: str = "generate-audio", **params: Any) -> Task:
    """A task of a job of its own: the fake answers a reused idempotency key with the first answer (or refuses it
    for a different request), as APIs that honour keys do, so two tasks must not share one."""
    return Task("ex1", f"job{next(_JOBS)}", job_type, model, params, 1, scratch=tmp_path / "scratch")


def image_task(tmp_path: Path, **params: Any) -> Task:
    return task(tmp_path, IMAGE, "generate-image", **params)


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


async def run(p: OpenAIProvider, t: Task) -> Any:
    return await p.wait(t, await p.submit(t), Reports())


def bodies(oai: FakeOpenAI, route: str) -> list[Any]:
    return [entry.body for entry in oai.log if entry.route == route]


async def test_speech_sends_the_body_and_writes_real_audio(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = task(tmp_path, text="Hello from the sea.", voice="nova", instructions="Calm and slow.", speed=0.9)
    pid = await p.submit(t)
    assert pid.startswith("oai-") and sum(oai.hits.values()) == 0  # the work happens in wait
    result = await p.wait(t, pid, Reports())
    assert bodies(oai, "speech") == [
        {
            "model": "gpt-4o-mini-tts",
            "input": "Hello from the sea.",
            "voice": "nova",
            "response_format": "mp3",
            "instructions": "Calm and slow.",
            "speed": 0.9,
        }
    ]
    assert all(e.authorization == f"Bearer {oai.key}" for e in oai.log)
    [out] = result.outputs
    assert out.url is None and out.path is not None and out.content_type == "audio/mpeg"
    assert out.path.parent == t.workdir and out.path.read_bytes() == oai.media["mp3"]
    info = await media.probe(out.path)
    assert info["has_audio"] and 0.5 < info["duration"] < 2
    assert result.fields["characters"] == 19 and result.fields["request_id"] == "req_speech_1"
    assert result.cost_usd == pytest.approx(19 * MODELS_BY_ID[TTS].price.usd)


async def test_speech_uses_the_default_voice(oai: FakeOpenAI, tmp_path: Path) -> None:
    await run(provider(oai), task(tmp_path, text="hi"))
    assert bodies(oai, "speech")[0]["voice"] == "coral"


async def test_images_decode_b64_json_into_files(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = image_task(tmp_path, prompt="a lighthouse", aspect_ratio="16:9", quality="high", num_images=2)
    result = await run(p, t)
    assert bodies(oai, "images") == [
        {"model": "gpt-image-1", "prompt": "a lighthouse", "size": "1536x1024", "n": 2, "quality": "high"}
    ]
    assert [o.path.name for o in result.outputs] == ["image-0.png", "image-1.png"]  # type: ignore[union-attr]
    for out in result.outputs:
        assert out.content_type == "image/png" and out.path.read_bytes() == oai.media["png"]  # type: ignore[union-attr]
        info = await media.probe(out.path)  # type: ignore[arg-type]
        assert any(s["type"] == "video" for s in info["streams"])
    assert result.fields["usage"]["output_tokens"] == 2112 and result.fields["size"] == "1536x1024"
    assert result.cost_usd == pytest.approx(2 * IMAGE_PRICES[("high", "wide")])


async def test_image_format_and_explicit_size(oai: FakeOpenAI, tmp_path: Path) -> None:
    t = image_task(tmp_path, prompt="x", aspect_ratio="16:9", size="1024x1024", output_format="jpeg")
    result = await run(provider(oai), t)
    assert bodies(oai, "images")[0]["size"] == "1024x1024"
    [out] = result.outputs
    assert out.path.name == "image-0.jpg" and out.content_type == "image/jpeg"  # type: ignore[union-attr]
    assert result.cost_usd == pytest.approx(IMAGE_PRICES[("medium", "square")])


async def test_run_passes_the_body_as_given(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    await run(p, task(tmp_path, IMAGE, "run", input={"prompt": "raw", "n": 1, "moderation": "low"}))
    await run(p, task(tmp_path, TTS, "run", input={"input": "raw", "voice": "ash"}))
    assert bodies(oai, "images") == [{"prompt": "raw", "n": 1, "moderation": "low", "model": "gpt-image-1"}]
    assert bodies(oai, "speech") == [{"input": "raw", "voice": "ash", "model": "gpt-4o-mini-tts"}]


@pytest.mark.parametrize(
    ("status", "body", "error_class", "retry_after", "shown"),
    [
        (
            429,
            error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
            TransientError,
            1.5,
            ["Rate limit reached", "rate_limit_exceeded"],
        ),
        (
            429,
            error(
                "You exceeded your current quota, please check your plan.", "insufficient_quota", "insufficient_quota"
            ),
            PermanentError,
            None,
            ["exceeded your current quota", "insufficient_quota"],
        ),
        (500, None, TransientError, None, ["The server had an error"]),
        (503, error("The engine is currently overloaded.", "server_error"), TransientError, None, ["overloaded"]),
        (
            401,
            error("Incorrect API key provided.", code="invalid_api_key"),
            PermanentError,
            None,
            ["Incorrect API key", "invalid_api_key"],
        ),
        (
            403,
            error("Your organization must be verified to use the model `gpt-image-1`.", code=None),
            PermanentError,
            None,
            ["must be verified", "invalid_request_error"],
        ),
        (
            404,
            error("The model `gpt-nope` does not exist.", code="model_not_found"),
            PermanentError,
            None,
            ["does not exist", "model_not_found"],
        ),
    ],
)
@pytest.mark.parametrize("route", ["speech", "images"])
async def test_errors_are_classified_with_the_message_intact(
    oai: FakeOpenAI,
    tmp_path: Path,
    route: str,
    status: int,
    body: Any,
    error_class: type[Exception],
    retry_after: Any,
    shown: list[str],
) -> None:
    oai.fail_next(route, 1, status, body=body, retry_after=retry_after)
    t = task(tmp_path, text="hi") if route == "speech" else image_task(tmp_path, prompt="x")
    with pytest.raises(error_class) as info:
        await run(provider(oai), t)
    assert type(info.value) is error_class
    assert f"HTTP {status}" in str(info.value)
    for text in shown:
        assert text in str(info.value)
    assert getattr(info.value, "retry_after", None) == retry_after


async def test_the_fakes_own_refusals_keep_their_message(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    with pytest.raises(PermanentError, match=r"HTTP 400: Your request was rejected.*moderation_blocked"):
        await run(p, image_task(tmp_path, prompt="something forbidden"))
    with pytest.raises(PermanentError, match=r"HTTP 400: .*at most 4096 characters.*string_above_max_length"):
        await run(p, task(tmp_path, text="x" * 5000))
    with pytest.raises(PermanentError, match=r"HTTP 400: Invalid value: 'gandalf'.*invalid_value"):
        await run(p, task(tmp_path, TTS, "run", input={"input": "hi", "voice": "gandalf"}))


async def test_dropped_connections_and_bad_base64_are_transient(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    oai.drop_next("speech")
    t = task(tmp_path, text="hi")
    pid = await p.submit(t)
    with pytest.raises(TransientError):
        await p.wait(t, pid, Reports())
    assert (await p.wait(t, pid, Reports())).outputs  # the retry just asks again
    oai.drop_next("images")
    with pytest.raises(TransientError):
        await run(p, image_task(tmp_path, prompt="x"))
    oai.corrupt_images = 1
    with pytest.raises(TransientError, match="invalid base64"):
        await run(p, image_task(tmp_path, prompt="x"))


async def test_a_bad_key_and_a_missing_key_are_permanent(
    oai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PermanentError, match=r"HTTP 401: Incorrect API key provided\. \(invalid_api_key\)"):
        await run(OpenAIProvider("sk-wrong", oai.base_url), task(tmp_path, text="hi"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = sum(oai.hits.values())
    p = OpenAIProvider(base_url=oai.base_url)
    t = task(tmp_path, text="hi")
    with pytest.raises(PermanentError, match="OPENAI_API_KEY is not set"):
        await p.submit(t)
    with pytest.raises(PermanentError, match="OPENAI_API_KEY is not set"):
        await p.wait(t, "oai-" + "0" * 32, Reports())
    assert sum(oai.hits.values()) == before
    monkeypatch.setenv("OPENAI_API_KEY", oai.key)  # read at call time
    monkeypatch.setenv("REELFLOW_OPENAI_BASE_URL", oai.base_url)
    assert (await run(OpenAIProvider(), t)).outputs


async def test_bad_requests_fail_at_submit_without_a_call(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    with pytest.raises(PermanentError, match="text to speak is required"):
        await p.submit(task(tmp_path, text=""))
    with pytest.raises(PermanentError, match="a prompt is required"):
        await p.submit(image_task(tmp_path))
    with pytest.raises(PermanentError, match="not a speech, image or transcription"):
        await p.submit(task(tmp_path, "openai/gpt-4o", "run", input={"input": "x"}))
    with pytest.raises(PermanentError, match="not an openai model id"):
        await p.submit(task(tmp_path, "elevenlabs/x", text="hi"))
    with pytest.raises(PermanentError, match=r"params\.input must be an object"):
        await p.submit(task(tmp_path, TTS, "run", input="hi"))
    with pytest.raises(PermanentError, match="unsupported output_format"):
        await p.submit(task(tmp_path, IMAGE, "run", input={"prompt": "x", "output_format": "gif"}))
    with pytest.raises(PermanentError, match="not an openai request id"):
        await p.wait(task(tmp_path, text="hi"), "../etc", Reports())
    assert sum(oai.hits.values()) == 0
    await p.cancel(task(tmp_path, text="hi"), "oai-" + "0" * 32)  # nothing to stop, never raises


def test_catalog_models_check_their_limits() -> None:
    checks: dict[str, Any] = {"extra_allowed": False, "loc_prefix": [], "job_key": None, "allow_refs": False}
    tts, image = MODELS_BY_ID[TTS], MODELS_BY_ID[IMAGE]
    assert check_params(tts.params, {"text": "x" * 4096, "voice": "sage", "speed": 4}, **checks) == []
    problems = check_params(tts.params, {"text": "x" * 4097, "voice": "gandalf", "speed": 5}, **checks)
    assert len(problems) == 3
    assert check_params(image.params, {"prompt": "x", "size": "1536x1024", "quality": "low"}, **checks) == []
    [bad] = check_params(image.params, {"prompt": "x", "size": "512x512"}, **checks)
    assert "size must be one of" in bad.msg


# --- through the engine ---------------------------------------------------------------------------


@pytest.fixture
def openai_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for model in MODELS:
        register_model(model, replace=True)


async def test_speech_and_image_jobs_through_the_engine_land_in_our_storage(
    engine: Engine,
    running_worker: WorkerFactory,
    openai_models: None,
    oai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", oai.key)
    monkeypatch.setenv("REELFLOW_OPENAI_BASE_URL", oai.base_url)
    oai.fail_next("speech", 1, 429, body=error("Rate limit reached", "requests", "rate_limit_exceeded"), retry_after=0)
    jobs = [
        {"id": "voice", "type": "generate-audio", "model": TTS, "params": {"text": "Hello there.", "voice": "onyx"}},
        {"id": "still", "type": "generate-image", "model": IMAGE, "params": {"prompt": "a fox", "quality": "low"}},
    ]
    eid = await engine.submit({"jobs": jobs})
    async with running_worker(providers_={"openai": OpenAIProvider()}):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state
    results = {job["id"]: job["result"] for job in state["jobs"]}
    assert results["voice"]["url"].endswith(".mp3") and "/v1/artifacts/" in results["voice"]["url"]
    assert Path(results["voice"]["path"]).read_bytes() == oai.media["mp3"]
    assert (await media.probe(Path(results["voice"]["path"])))["has_audio"]
    assert results["still"]["url"].endswith(".png")
    assert Path(results["still"]["path"]).read_bytes() == oai.media["png"]
    assert oai.count("speech") == 2 and oai.count("images") == 1  # the rate-limited speech was retried
