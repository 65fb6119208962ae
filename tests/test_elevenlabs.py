"""The ElevenLabs adapter against a faithful fake of its text-to-speech API (timestamped speech)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import WorkerFactory
from fakes.elevenlabs import CUSTOM_ID, FakeElevenLabs, audio_for, speech_seconds
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, ProgressUpdate, Task, TransientError
from reelflow.providers.catalog import check_params, estimate_cost, register_model
from reelflow.providers.catalog.elevenlabs import MODELS, MODELS_BY_ID
from reelflow.providers.elevenlabs import ElevenLabsProvider, alignment_words
from reelflow.providers.local import LocalProvider

MULTI = "elevenlabs/eleven_multilingual_v2"
FLASH = "elevenlabs/eleven_flash_v2_5"
RACHEL = "21m00Tcm4TlvDq8ikWAM"
TIMESTAMPED = f"/v1/text-to-speech/{RACHEL}/with-timestamps"


@pytest.fixture
def eleven() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs() as fake:
        yield fake


@pytest.fixture
async def p(eleven: FakeElevenLabs) -> AsyncIterator[ElevenLabsProvider]:
    provider = ElevenLabsProvider(eleven.key, eleven.base_url)
    yield provider
    await provider.aclose()


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


async def test_a_speech_job_asks_for_timestamps_and_writes_real_audio_and_words(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    text = "Every evening the sea keeps its promise."
    t = task(tmp_path, text=text, voice="Rachel", seed=7)
    pid = await p.submit(t)
    assert pid.startswith("tts-") and eleven.count("tts") == 0  # the work happens in wait
    reports = Reports()
    result = await p.wait(t, pid, reports)
    assert [u.phase for u in reports.updates] == ["running"]
    [call] = speeches(eleven)
    assert call.path == TIMESTAMPED and eleven.count("tts-timestamps") == 1 and eleven.count("tts-plain") == 0
    assert call.query == {"output_format": "mp3_44100_128"}
    assert call.body == {"text": text, "model_id": "eleven_multilingual_v2", "seed": 7}
    assert call.key == eleven.key and "authorization" not in call.headers
    assert call.headers["accept"] == "application/json"
    assert eleven.count("voices") == 0  # a premade name needs no lookup
    [out] = result.outputs
    assert out.url is None and out.path is not None and out.content_type == "audio/mpeg"
    assert out.path.parent == t.workdir and out.path.suffix == ".mp3"
    assert out.path.read_bytes() == audio_for(text)  # the decoded audio_base64, byte for byte
    info = await media.probe(out.path)
    assert info["has_audio"] and abs(info["duration"] - speech_seconds(text)) < 0.15
    fields = result.fields
    assert fields["text"] == text and [w["word"] for w in fields["words"]] == text.split()
    assert fields["voice_id"] == RACHEL and fields["characters"] == 40
    [made] = eleven.history  # billed once, and kept in the history under the answer's request-id
    assert fields["provider_id"] == pid and fields["request_id"] == made.request_id and eleven.creates == 1
    assert (made.text, made.voice_id, made.model_id) == (text, RACHEL, "eleven_multilingual_v2")
    assert fields["words_source"] == "alignment" and "history_item_id" not in fields
    assert result.cost_usd == pytest.approx(40 * MODELS_BY_ID[MULTI].price.usd)


async def test_words_rise_and_lie_within_the_audio(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    text = "  Wait...  the tide, it turns!\nAnd we   go home, slowly, as the light fades. "
    result = await run(p, task(tmp_path, text=text))
    words = result.fields["words"]
    assert [w["word"] for w in words] == text.split()
    assert words[0]["word"] == "Wait..." and words[4]["word"] == "turns!"  # punctuation stays with its word
    duration = (await media.probe(result.outputs[0].path))["duration"]
    for w in words:
        assert 0 <= w["start"] < w["end"] <= duration, w
    for a, b in itertools.pairwise(words):
        assert a["end"] <= b["start"] and a["start"] < b["start"]
    assert words[0]["start"] < 0.3 and words[-1]["end"] > duration - 0.5  # spread over the whole audio
    # the times are those of the alignment ElevenLabs gave for the first and last characters of each word
    [call] = speeches(eleven)
    assert call.body["text"] == text


def answer(body: Any, status: int = 200, content_type: str = "application/json") -> Callable[..., httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=raw, headers={"content-type": content_type})

    seen: list[httpx.Request] = []
    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def mocked(handler: Callable[..., httpx.Response]) -> ElevenLabsProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ElevenLabsProvider("k", "http://eleven.test/v1", client=client)


ALIGNED = {
    "characters": list("Hi you"),
    "character_start_times_seconds": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
    "character_end_times_seconds": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
}
AUDIO = base64.b64encode(b"ID3 not really audio").decode()


async def test_the_normalized_alignment_stands_in_when_the_alignment_is_missing_or_malformed(tmp_path: Path) -> None:
    normalized = {**ALIGNED, "characters": list("hi yo!")}
    handler = answer({"audio_base64": AUDIO, "alignment": None, "normalized_alignment": normalized})
    result = await run(mocked(handler), task(tmp_path, text="Hi you"))
    assert [w["word"] for w in result.fields["words"]] == ["hi", "yo!"]
    [request] = handler.seen  # type: ignore[attr-defined]
    assert request.url.path == TIMESTAMPED and request.headers["xi-api-key"] == "k"
    assert result.outputs[0].path.read_bytes() == b"ID3 not really audio"

    uneven = {**ALIGNED, "character_end_times_seconds": [0.1]}
    result = await run(mocked(answer({"audio_base64": AUDIO, "alignment": uneven})), task(tmp_path, text="Hi you"))
    assert result.fields["words"] == [] and result.fields["text"] == "Hi you"  # the audio still counts
    both = {"audio_base64": AUDIO, "alignment": ALIGNED, "normalized_alignment": normalized}
    result = await run(mocked(answer(both)), task(tmp_path, text="Hi you"))
    assert [w["word"] for w in result.fields["words"]] == ["Hi", "you"]  # the text as given wins


@pytest.mark.parametrize(
    "alignment",
    [
        None,
        [],
        {"characters": "Hi", "character_start_times_seconds": [0, 1], "character_end_times_seconds": [1, 2]},
        {**ALIGNED, "characters": ["H", None, "i", " ", "y", "o"]},
        {**ALIGNED, "character_start_times_seconds": [0.0, True, 0.2, 0.3, 0.4, 0.5]},
        {**ALIGNED, "character_end_times_seconds": [0.1, 0.2, "0.3", 0.4, 0.5, 0.6]},
        {**ALIGNED, "character_end_times_seconds": [0.1, 0.2, float("nan"), 0.4, 0.5, 0.6]},
        {**ALIGNED, "character_start_times_seconds": [0.0, 0.1, 0.2, float("inf"), 0.4, 0.5]},
        {"characters": list("Hi"), "character_start_times_seconds": [0, 1]},
    ],
)
def test_malformed_alignments_give_no_words(alignment: Any) -> None:
    assert alignment_words(alignment) is None


def test_an_alignment_gives_words() -> None:
    assert alignment_words(ALIGNED) == [
        {"word": "Hi", "start": 0.0, "end": 0.2},
        {"word": "you", "start": 0.3, "end": 0.6},
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "shown"),
    [
        ({"alignment": ALIGNED}, "application/json", "no audio_base64"),
        ({"audio_base64": "", "alignment": ALIGNED}, "application/json", "no audio_base64"),
        ({"audio_base64": "not base64!!", "alignment": ALIGNED}, "application/json", "undecodable audio_base64"),
        (b"ID3\x00\x01", "audio/mpeg", "answered no JSON (audio/mpeg)"),
        (["audio"], "application/json", "not an object"),
    ],
)
async def test_answers_without_usable_audio_are_transient(
    tmp_path: Path, body: Any, content_type: str, shown: str
) -> None:
    t = task(tmp_path, text="Hi you")
    with pytest.raises(TransientError, match=re.escape(shown)):
        await run(mocked(answer(body, content_type=content_type)), t)
    assert not (t.scratch / "speech.mp3").exists()


async def test_wait_is_safe_to_redo(eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path) -> None:
    t = task(tmp_path, FLASH, text="again")
    pid = await p.submit(t)
    first = await p.wait(t, pid, Reports())
    second = await p.wait(t, pid, Reports())
    assert first.outputs[0].path == second.outputs[0].path and second.outputs[0].path.exists()  # type: ignore[union-attr]
    assert first.fields["words"] == second.fields["words"] == [{"word": "again", "start": 0.05, "end": 0.9}]
    assert eleven.count("tts") == 2
    assert [c.body["model_id"] for c in speeches(eleven)] == ["eleven_flash_v2_5"] * 2
    assert first.cost_usd == pytest.approx(5 * MODELS_BY_ID[FLASH].price.usd)


async def test_one_pooled_client_serves_every_call(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    for i in range(3):
        await run(p, task(tmp_path / str(i), text="hi", voice="Narrator Nell"))
    client = p.http()
    assert client is p.http() and not client.is_closed
    assert [e.route for e in eleven.log] == ["voices", "tts", "tts", "tts"]
    assert len({e.peer for e in eleven.log}) == 1  # one kept-alive connection, not one client per call
    await p.aclose()
    assert client.is_closed


async def test_voices_by_custom_name_are_looked_up_once_and_ids_pass_through(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    result = await run(p, task(tmp_path, text="hi", voice="Narrator Nell - warm, calm"))
    assert result.fields["voice_id"] == CUSTOM_ID
    result = await run(p, task(tmp_path, text="hi", voice="narrator nell"))  # the name before " - " will do
    assert result.fields["voice_id"] == CUSTOM_ID
    assert eleven.count("voices") == 1
    assert [e.key for e in eleven.log if e.route == "voices"] == [eleven.key]
    await run(p, task(tmp_path, text="hi", voice=RACHEL))
    await run(p, task(tmp_path, text="hi"))  # the default voice
    ids = [c.path.split("/")[-2] for c in speeches(eleven)]
    assert ids == [CUSTOM_ID, CUSTOM_ID, RACHEL, RACHEL]
    assert eleven.count("voices") == 1


async def test_jobs_starting_together_share_one_voice_lookup(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    results = await asyncio.gather(
        *(run(p, task(tmp_path / str(i), text="hi", voice="Narrator Nell")) for i in range(4))
    )
    assert {r.fields["voice_id"] for r in results} == {CUSTOM_ID}
    assert eleven.count("voices") == 1 and eleven.count("tts") == 4


async def test_an_unknown_voice_name_is_permanent_and_never_spoken(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    with pytest.raises(
        PermanentError,
        match=r"no voice named 'Nobody' \(voices include Rachel, Adam, Sarah, Narrator Nell - warm, calm, or",
    ):
        await run(p, task(tmp_path, text="hi", voice="Nobody"))
    assert eleven.count("voices") == 1 and eleven.count("tts") == 0


async def test_run_passes_elevenlabs_own_body(eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path) -> None:
    body = {"text": "raw", "voice_id": RACHEL, "voice_settings": {"stability": 0.3}, "output_format": "mp3_22050_32"}
    result = await run(p, task(tmp_path, FLASH, "run", input=body))
    [call] = speeches(eleven)
    assert call.path == TIMESTAMPED and call.query == {"output_format": "mp3_22050_32"}
    assert call.body == {"text": "raw", "voice_settings": {"stability": 0.3}, "model_id": "eleven_flash_v2_5"}
    assert result.outputs[0].path.suffix == ".mp3"
    assert [w["word"] for w in result.fields["words"]] == ["raw"]


def _throttled(code: str) -> dict[str, Any]:
    message = {"rate_limit_exceeded": "rate limit", "concurrent_limit_exceeded": "Too many concurrent"}[code]
    return {"type": "rate_limit_error", "code": code, "message": message, "status": code, "request_id": "r1"}


@pytest.mark.parametrize("route", ["tts", "tts-timestamps"])
@pytest.mark.parametrize(
    ("status", "detail", "headers", "error", "retry_after", "shown"),
    [
        (429, _throttled("rate_limit_exceeded"), {}, TransientError, 2.0, ["rate limit", "(rate_limit_exceeded)"]),
        (
            429,
            _throttled("concurrent_limit_exceeded"),
            {"current-concurrent-requests": "3", "maximum-concurrent-requests": "2"},
            TransientError,
            None,
            ["Too many concurrent", "concurrent_limit_exceeded", "[3 concurrent requests, the plan allows 2]"],
        ),
        (
            429,
            {"status": "system_busy", "message": "We are experiencing heavy traffic."},
            {},
            TransientError,
            None,
            ["heavy traffic", "system_busy"],
        ),
        (500, None, {}, TransientError, None, ["An internal error occurred."]),
        (503, "Service Unavailable", {}, TransientError, 5.0, ["Service Unavailable"]),
        (
            401,
            {"status": "quota_exceeded", "message": "This request exceeds your quota. You have 3 credits remaining."},
            {},
            PermanentError,
            None,
            ["You have 3 credits remaining", "quota_exceeded"],
        ),
        (
            402,
            {"status": "payment_required", "message": "Payment required to use this model."},
            {},
            PermanentError,
            None,
            ["Payment required", "payment_required"],
        ),
        (
            400,
            {"type": "validation_error", "code": "max_character_limit_exceeded", "message": "Text is too long."},
            {},
            PermanentError,
            None,
            ["Text is too long.", "max_character_limit_exceeded"],
        ),
        (
            404,
            {"status": "voice_not_found", "message": "A voice with voice_id abc was not found."},
            {},
            PermanentError,
            None,
            ["voice_id abc was not found", "voice_not_found"],
        ),
        (
            422,
            [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}],
            {},
            PermanentError,
            None,
            ["Field required", '"loc"', '"text"'],
        ),
    ],
)
async def test_speech_errors_are_classified_with_the_message_intact(
    eleven: FakeElevenLabs,
    p: ElevenLabsProvider,
    tmp_path: Path,
    route: str,
    status: int,
    detail: Any,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: Any,
    shown: list[str],
) -> None:
    eleven.fail_next(route, 1, status, detail=detail, retry_after=retry_after, headers=headers)
    with pytest.raises(error) as info:
        await run(p, task(tmp_path, text="hi"))
    assert type(info.value) is error
    assert f"HTTP {status}" in str(info.value)
    for text in shown:
        assert text in str(info.value)
    assert getattr(info.value, "retry_after", None) == retry_after
    assert not getattr(info.value, "resubmit", False)
    [call] = speeches(eleven)
    assert call.path == TIMESTAMPED and call.status == status  # the knob hit the timestamped route
    assert p.gate.throttled == (1 if status == 429 else 0)


async def test_the_fakes_own_refusals_keep_their_message(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    with pytest.raises(PermanentError, match=r"HTTP 404: A voice with voice_id ZZZZZZZZZZZZZZZZZZZZ.*voice_not_found"):
        await run(p, task(tmp_path, text="hi", voice="ZZZZZZZZZZZZZZZZZZZZ"))
    with pytest.raises(PermanentError, match=r"HTTP 400: Text is 10001 characters.*max_character_limit_exceeded"):
        await run(p, task(tmp_path, text="x" * 10001))
    assert [c.status for c in speeches(eleven)] == [404, 400]
    assert all(c.path.endswith("/with-timestamps") for c in speeches(eleven))


async def test_the_fakes_throttle_knob_speaks_elevenlabs_429s(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    eleven.throttle_next(code="concurrent_limit_exceeded", retry_after=0)
    with pytest.raises(TransientError, match=r"HTTP 429: .*concurrent_limit_exceeded.*\[3 concurrent requests") as info:
        await run(p, task(tmp_path, text="hi"))
    assert info.value.retry_after == 0
    eleven.throttle_next()
    with pytest.raises(TransientError, match=r"HTTP 429: You have exceeded the rate limit.*\(rate_limit_exceeded\)"):
        await run(p, task(tmp_path, text="hi"))
    assert [c.status for c in speeches(eleven)] == [429, 429] and p.gate.throttled == 2


async def test_over_the_concurrency_limit_a_job_is_told_to_come_back(
    tmp_path: Path,
) -> None:
    with FakeElevenLabs(latency_s=0.3, max_concurrent=1) as eleven:
        p = provider(eleven)
        got = await asyncio.gather(
            *(run(p, task(tmp_path / str(i), text="hi")) for i in range(2)), return_exceptions=True
        )
        await p.aclose()
    errors = [g for g in got if isinstance(g, BaseException)]
    assert len(errors) == 1 and type(errors[0]) is TransientError, got
    assert "HTTP 429" in str(errors[0]) and "[2 concurrent requests, the plan allows 1]" in str(errors[0])
    assert eleven.peak_in_flight == 1 and sorted(c.status for c in speeches(eleven)) == [200, 429]


async def test_after_a_429_every_job_of_the_provider_waits_and_is_spaced_out(
    eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path
) -> None:
    eleven.throttle_next(retry_after=0.6)
    first = await asyncio.gather(
        *(run(p, task(tmp_path / f"a{i}", text=f"job {i}")) for i in range(4)), return_exceptions=True
    )
    errors = [r for r in first if isinstance(r, BaseException)]
    assert len(errors) == 1 and type(errors[0]) is TransientError and "rate_limit_exceeded" in str(errors[0])
    [throttled] = [c for c in speeches(eleven) if c.status == 429]
    await asyncio.gather(*(run(p, task(tmp_path / f"b{i}", text=f"other {i}")) for i in range(3)))
    later = sorted(c.t for c in speeches(eleven)[4:])
    assert len(later) == 3 and all(c.status == 200 for c in speeches(eleven)[4:])
    assert later[0] >= throttled.t + 0.6 - 0.02  # held until Retry-After passed
    gaps = [b - a for a, b in itertools.pairwise(later)]
    assert min(gaps) >= 0.3, gaps  # then spaced out, not sent in a burst
    assert p.gate.throttled == 1


async def test_without_a_429_jobs_are_not_held(eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path) -> None:
    await asyncio.gather(*(run(p, task(tmp_path / f"a{i}", text=f"job {i}")) for i in range(3)))
    times = sorted(c.t for c in speeches(eleven))
    assert times[-1] - times[0] < 0.3 and p.gate.interval == 0  # the control for the test above


async def test_voice_lookup_errors_are_classified(eleven: FakeElevenLabs, tmp_path: Path) -> None:
    eleven.fail_next("voices", 1, 502, detail="Bad gateway")
    with pytest.raises(TransientError, match="looking up voices failed: HTTP 502"):
        await run(provider(eleven), task(tmp_path, text="hi", voice="Narrator Nell"))
    eleven.drop_next("voices")
    with pytest.raises(TransientError):
        await run(provider(eleven), task(tmp_path, text="hi", voice="Narrator Nell"))


async def test_a_dropped_connection_is_transient(eleven: FakeElevenLabs, p: ElevenLabsProvider, tmp_path: Path) -> None:
    eleven.drop_next("tts-timestamps")
    t = task(tmp_path, text="hi")
    pid = await p.submit(t)
    with pytest.raises(TransientError):
        await p.wait(t, pid, Reports())
    assert (await p.wait(t, pid, Reports())).outputs  # the retry just speaks again
    assert eleven.count("tts-timestamps") == 2


async def test_a_bad_key_and_a_missing_key_are_permanent(
    eleven: FakeElevenLabs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PermanentError, match=r"HTTP 401: Invalid API key \(invalid_api_key\)"):
        await run(ElevenLabsProvider("wrong", eleven.base_url), task(tmp_path, text="hi"))
    assert speeches(eleven)[-1].path == TIMESTAMPED
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
        assert "words" in spec.description
    assert check_params(multi.params, {"text": "x" * 10000, "voice": "Rachel", "seed": 1}, **_checks()) == []
    [too_long] = check_params(multi.params, {"text": "x" * 10001}, **_checks())
    assert "longer than 10000" in too_long.msg
    assert check_params(flash.params, {"text": "x" * 40000}, **_checks()) == []
    [missing] = check_params(flash.params, {"voice": "Rachel"}, **_checks())
    assert "'text'" in missing.msg
    assert estimate_cost(multi, {"text": "x" * 1000}) == pytest.approx(1000 * multi.price.usd)
    assert flash.price.usd < multi.price.usd


def _checks() -> dict[str, Any]:
    return {"extra_allowed": False, "loc_prefix": [], "job_key": None, "allow_refs": False}


# --- through the engine ---------------------------------------------------------------------------


@pytest.fixture
def elevenlabs_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """ElevenLabs' models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
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
    eleven.throttle_next(retry_after=0)
    job = {"id": "voice", "type": "generate-audio", "model": MULTI, "params": {"text": "Hello there.", "voice": "Adam"}}
    eid = await engine.submit({"jobs": [job]})
    p = ElevenLabsProvider()
    async with running_worker(providers_={"elevenlabs": p}):
        state = await engine.wait(eid, timeout=30)
    await p.aclose()
    assert state["status"] == "succeeded", state
    result = state["jobs"][0]["result"]
    assert "/v1/artifacts/" in result["url"] and result["url"].endswith(".mp3")
    assert Path(result["path"]).read_bytes() == eleven.audio == audio_for("Hello there.")
    assert result["voice_id"] == "pNInz6obpgDQGcFmaJgB" and result["characters"] == 12
    assert result["text"] == "Hello there." and [w["word"] for w in result["words"]] == ["Hello", "there."]
    assert eleven.count("tts") == 2  # the throttled answer was retried
    assert (await media.probe(Path(result["path"])))["has_audio"]


async def test_timestamped_speech_feeds_captions_on_a_local_video(
    engine: Engine,
    running_worker: WorkerFactory,
    elevenlabs_models: None,
    eleven: FakeElevenLabs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", eleven.key)
    text = "Every evening the sea keeps its promise. The light goes, and the waves stay."
    plan = {
        "jobs": [
            {"id": "voice", "type": "generate-audio", "model": MULTI, "params": {"text": text, "voice": "Rachel"}},
            {"id": "clip", "type": "generate-video", "model": "local/video",
             "params": {"prompt": "slow waves", "duration": 3, "resolution": "480p"}},
            {"id": "merged", "type": "merge-video-audio", "params": {"video": "$clip", "audio": "$voice"}},
            {"id": "final", "type": "captions", "params": {"video": "$merged", "words": "$voice.words"}},
        ]
    }  # fmt: skip
    eid = await engine.submit(plan)
    p = ElevenLabsProvider(eleven.key, eleven.base_url)
    async with running_worker(providers_={"elevenlabs": p, "local": LocalProvider()}):
        state = await engine.wait(eid, timeout=90)
    await p.aclose()
    assert state["status"] == "succeeded", state["error"]
    jobs = {j["id"]: j for j in state["jobs"]}
    words = jobs["voice"]["result"]["words"]
    assert [w["word"] for w in words] == text.split() and eleven.count("tts-timestamps") == 1
    assert all(0 <= w["start"] < w["end"] <= jobs["voice"]["result"]["duration"] for w in words)
    final = await media.probe(Path(jobs["final"]["result"]["path"]))
    assert final["has_video"] and final["has_audio"]
    assert abs(final["duration"] - 3.0) <= 0.1
    assert abs(final["duration"] - jobs["clip"]["result"]["duration"]) <= 0.1
