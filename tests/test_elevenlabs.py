"""The ElevenLabs adapter against a faithful fake of its text-to-speech API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory
from fakes.elevenlabs import CUSTOM_ID, FakeElevenLabs
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, ProgressUpdate, Task, TransientError
from reelflow.providers.catalog import check_params, estimate_cost, register_model
from reelflow.providers.catalog_elevenlabs import MODELS, MODELS_BY_ID
from reelflow.providers.elevenlabs import ElevenLabsProvider

MULTI = "elevenlabs/eleven_multilingual_v2"
FLASH = "elevenlabs/eleven_flash_v2_5"
RACHEL = "21m00Tcm4TlvDq8ikWAM"


@pytest.fixture
def eleven() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs() as fake:
        yield fake


def provider(eleven: FakeElevenLabs) -> ElevenLabsProvider:
    return ElevenLabsProvider(eleven.key, eleven.base_url)


def task(tmp_path: Path, model: str = MULTI, job_type: str = "generate-audio", **params: Any) -> Task:
    return Task("ex1", "job1", job_type, model, params, 1, scratch=tmp_path / "scratch")


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


async def run(p: ElevenLabsProvider, t: Task) -> Any:
    return await p.wait(t, await p.submit(t), Reports())


def speeches(eleven: FakeElevenLabs) -> list[Any]:
    return [entry for entry in eleven.log if entry.route == "tts"]


async def test_a_speech_job_sends_the_body_and_writes_real_audio(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    p = provider(eleven)
    t = task(tmp_path, text="Every evening the sea keeps its promise.", voice="Rachel", seed=7)
    pid = await p.submit(t)
    assert pid.startswith("tts-") and eleven.count("tts") == 0  # the work happens in wait
    result = await p.wait(t, pid, Reports())
    [call] = speeches(eleven)
    assert call.path == f"/v1/text-to-speech/{RACHEL}"
    assert call.query == {"output_format": "mp3_44100_128"}
    assert call.body == {
        "text": "Every evening the sea keeps its promise.",
        "model_id": "eleven_multilingual_v2",
        "seed": 7,
    }
    assert call.key == eleven.key and "authorization" not in call.headers
    assert eleven.count("voices") == 0  # a premade name needs no lookup
    [out] = result.outputs
    assert out.url is None and out.path is not None and out.content_type == "audio/mpeg"
    assert out.path.parent == t.workdir and out.path.suffix == ".mp3"
    assert out.path.read_bytes() == eleven.audio
    info = await media.probe(out.path)
    assert info["has_audio"] and 0.5 < info["duration"] < 2
    assert result.fields["voice_id"] == RACHEL and result.fields["characters"] == 40
    assert result.fields["provider_id"] == pid and result.fields["request_id"] == "req-1"
    assert result.cost_usd == pytest.approx(40 * MODELS_BY_ID[MULTI].price.usd)


async def test_wait_is_safe_to_redo(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    p = provider(eleven)
    t = task(tmp_path, FLASH, text="again")
    pid = await p.submit(t)
    first = await p.wait(t, pid, Reports())
    second = await p.wait(t, pid, Reports())
    assert first.outputs[0].path == second.outputs[0].path and second.outputs[0].path.exists()  # type: ignore[union-attr]
    assert eleven.count("tts") == 2
    assert [c.body["model_id"] for c in speeches(eleven)] == ["eleven_flash_v2_5"] * 2
    assert first.cost_usd == pytest.approx(5 * MODELS_BY_ID[FLASH].price.usd)


async def test_voices_by_custom_name_are_looked_up_once_and_ids_pass_through(
    eleven: FakeElevenLabs, tmp_path: Path
) -> None:
    p = provider(eleven)
    result = await run(p, task(tmp_path, text="hi", voice="Narrator Nell - warm, calm"))
    assert result.fields["voice_id"] == CUSTOM_ID
    result = await run(p, task(tmp_path, text="hi", voice="narrator nell"))  # the name before " - " will do
    assert result.fields["voice_id"] == CUSTOM_ID
    assert eleven.count("voices") == 1
    assert [e.key for e in eleven.log if e.route == "voices"] == [eleven.key]
    await run(p, task(tmp_path, text="hi", voice=RACHEL))
    await run(p, task(tmp_path, text="hi"))  # the default voice
    assert [c.path.rsplit("/", 1)[1] for c in speeches(eleven)] == [CUSTOM_ID, CUSTOM_ID, RACHEL, RACHEL]
    assert eleven.count("voices") == 1


async def test_an_unknown_voice_name_is_permanent_and_never_spoken(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    with pytest.raises(
        PermanentError,
        match=r"no voice named 'Nobody' \(voices include Rachel, Adam, Sarah, Narrator Nell - warm, calm, or",
    ):
        await run(provider(eleven), task(tmp_path, text="hi", voice="Nobody"))
    assert eleven.count("voices") == 1 and eleven.count("tts") == 0


async def test_run_passes_elevenlabs_own_body(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    body = {"text": "raw", "voice_id": RACHEL, "voice_settings": {"stability": 0.3}, "output_format": "mp3_22050_32"}
    result = await run(provider(eleven), task(tmp_path, FLASH, "run", input=body))
    [call] = speeches(eleven)
    assert call.path.endswith(RACHEL) and call.query == {"output_format": "mp3_22050_32"}
    assert call.body == {"text": "raw", "voice_settings": {"stability": 0.3}, "model_id": "eleven_flash_v2_5"}
    assert result.outputs[0].path.suffix == ".mp3"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "detail", "error", "retry_after", "shown"),
    [
        (
            429,
            {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests."},
            TransientError,
            2.0,
            ["Too many concurrent requests.", "too_many_concurrent_requests"],
        ),
        (
            429,
            {"status": "system_busy", "message": "We are experiencing heavy traffic."},
            TransientError,
            None,
            ["heavy traffic", "system_busy"],
        ),
        (500, None, TransientError, None, ["An internal error occurred."]),
        (503, "Service Unavailable", TransientError, None, ["Service Unavailable"]),
        (
            401,
            {"status": "quota_exceeded", "message": "This request exceeds your quota. You have 3 credits remaining."},
            PermanentError,
            None,
            ["You have 3 credits remaining", "quota_exceeded"],
        ),
        (
            402,
            {"status": "payment_required", "message": "Payment required to use this model."},
            PermanentError,
            None,
            ["Payment required", "payment_required"],
        ),
        (
            404,
            {"status": "voice_not_found", "message": "A voice with voice_id abc was not found."},
            PermanentError,
            None,
            ["voice_id abc was not found", "voice_not_found"],
        ),
        (
            422,
            [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}],
            PermanentError,
            None,
            ["Field required", '"loc"', '"text"'],
        ),
    ],
)
async def test_speech_errors_are_classified_with_the_message_intact(
    eleven: FakeElevenLabs,
    tmp_path: Path,
    status: int,
    detail: Any,
    error: type[Exception],
    retry_after: Any,
    shown: list[str],
) -> None:
    eleven.fail_next("tts", 1, status, detail=detail, retry_after=retry_after)
    with pytest.raises(error) as info:
        await run(provider(eleven), task(tmp_path, text="hi"))
    assert type(info.value) is error
    assert f"HTTP {status}" in str(info.value)
    for text in shown:
        assert text in str(info.value)
    assert getattr(info.value, "retry_after", None) == retry_after
    assert not getattr(info.value, "resubmit", False)


async def test_the_fakes_own_refusals_keep_their_message(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    p = provider(eleven)
    with pytest.raises(PermanentError, match=r"HTTP 404: A voice with voice_id ZZZZZZZZZZZZZZZZZZZZ.*voice_not_found"):
        await run(p, task(tmp_path, text="hi", voice="ZZZZZZZZZZZZZZZZZZZZ"))
    with pytest.raises(PermanentError, match=r"HTTP 400: Text is 10001 characters.*max_character_limit_exceeded"):
        await run(p, task(tmp_path, text="x" * 10001))


async def test_voice_lookup_errors_are_classified(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    eleven.fail_next("voices", 1, 502, detail="Bad gateway")
    with pytest.raises(TransientError, match="looking up voices failed: HTTP 502"):
        await run(provider(eleven), task(tmp_path, text="hi", voice="Narrator Nell"))
    eleven.drop_next("voices")
    with pytest.raises(TransientError):
        await run(provider(eleven), task(tmp_path, text="hi", voice="Narrator Nell"))


async def test_a_dropped_connection_is_transient(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    eleven.drop_next("tts")
    p = provider(eleven)
    t = task(tmp_path, text="hi")
    pid = await p.submit(t)
    with pytest.raises(TransientError):
        await p.wait(t, pid, Reports())
    assert (await p.wait(t, pid, Reports())).outputs  # the retry just speaks again


async def test_a_bad_key_and_a_missing_key_are_permanent(
    eleven: FakeElevenLabs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PermanentError, match=r"HTTP 401: Invalid API key \(invalid_api_key\)"):
        await run(ElevenLabsProvider("wrong", eleven.base_url), task(tmp_path, text="hi"))
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    before = sum(eleven.hits.values())
    p = ElevenLabsProvider(base_url=eleven.base_url)
    t = task(tmp_path, text="hi")
    with pytest.raises(PermanentError, match="ELEVENLABS_API_KEY is not set"):
        await p.submit(t)
    with pytest.raises(PermanentError, match="ELEVENLABS_API_KEY is not set"):
        await p.wait(t, "tts-" + "0" * 32, Reports())
    assert sum(eleven.hits.values()) == before
    monkeypatch.setenv("ELEVENLABS_API_KEY", eleven.key)  # read at call time
    monkeypatch.setenv("REELFLOW_ELEVENLABS_BASE_URL", eleven.base_url)
    assert (await run(ElevenLabsProvider(), t)).outputs


async def test_bad_requests_fail_at_submit_without_a_call(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    p = provider(eleven)
    with pytest.raises(PermanentError, match="text to speak is required"):
        await p.submit(task(tmp_path, text="  "))
    with pytest.raises(PermanentError, match="not an elevenlabs model id"):
        await p.submit(task(tmp_path, "fal/x", text="hi"))
    with pytest.raises(PermanentError, match=r"params\.input must be an object"):
        await p.submit(task(tmp_path, MULTI, "run", input=["text"]))
    with pytest.raises(PermanentError, match="unsupported output_format"):
        await p.submit(task(tmp_path, MULTI, "run", input={"text": "hi", "output_format": "flac"}))
    with pytest.raises(PermanentError, match="not an elevenlabs request id"):
        await p.wait(task(tmp_path, text="hi"), "../../etc", Reports())
    assert sum(eleven.hits.values()) == 0
    await p.cancel(task(tmp_path, text="hi"), "tts-" + "0" * 32)  # nothing to stop, never raises


def test_catalog_models_check_text_length_and_estimate_by_character() -> None:
    multi, flash = MODELS_BY_ID[MULTI], MODELS_BY_ID[FLASH]
    for spec in MODELS:
        assert spec.types == ["generate-audio", "run"] and spec.price.unit == "character"
    assert check_params(multi.params, {"text": "x" * 10000, "voice": "Rachel", "seed": 1}, **_checks()) == []
    [too_long] = check_params(multi.params, {"text": "x" * 10001}, **_checks())
    assert "longer than 10000" in too_long.msg
    assert check_params(flash.params, {"text": "x" * 40000}, **_checks()) == []
    [missing] = check_params(flash.params, {"voice": "Rachel"}, **_checks())
    assert "'text'" in missing.msg
    assert estimate_cost(multi, {"text": "x" * 1000}) == pytest.approx(1000 * multi.price.usd)
    assert flash.price.usd < multi.price.usd


def _checks() -> dict[str, Any]:
    return {"extra_allowed": False, "loc_prefix": [], "job_id": None, "allow_refs": False}


# --- through the engine ---------------------------------------------------------------------------


@pytest.fixture
def elevenlabs_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """ElevenLabs' models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog, "_MODELS", dict(catalog._MODELS))
    for model in MODELS:
        register_model(model, replace=True)


async def test_a_speech_job_through_the_engine_lands_in_our_storage(
    engine: Engine,
    running_worker: WorkerFactory,
    elevenlabs_models: None,
    eleven: FakeElevenLabs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", eleven.key)
    monkeypatch.setenv("REELFLOW_ELEVENLABS_BASE_URL", eleven.base_url)
    eleven.fail_next("tts", 1, 429, detail={"status": "system_busy", "message": "busy"}, retry_after=0)
    job = {"id": "voice", "type": "generate-audio", "model": MULTI, "params": {"text": "Hello there.", "voice": "Adam"}}
    eid = await engine.submit({"jobs": [job]})
    async with running_worker(providers_={"elevenlabs": ElevenLabsProvider()}):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state
    result = state["jobs"][0]["result"]
    assert "/v1/artifacts/" in result["url"] and result["url"].endswith(".mp3")
    assert Path(result["path"]).read_bytes() == eleven.audio
    assert result["voice_id"] == "pNInz6obpgDQGcFmaJgB" and result["characters"] == 12
    assert eleven.count("tts") == 2  # the busy answer was retried
    assert (await media.probe(Path(result["path"])))["has_audio"]
