"""The OpenAI adapter's asynchronous video API (Sora), Whisper transcription, idempotency keys and
webhooks, against the fake in tests/fakes/openai.py (and through the engine)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from conftest import WorkerFactory
from fakes.openai import DEFAULT_TRANSCRIPT, FakeOpenAI, error
from fakes.runner import ThreadedServer
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import (
    CallbackEvent,
    CallbackRejected,
    PermanentError,
    ProgressUpdate,
    Task,
    TransientError,
)
from reelflow.providers.catalog import check_params, estimate_cost, register_model
from reelflow.providers.catalog.openai import MODELS, MODELS_BY_ID, VIDEO_PRICES
from reelflow.providers.local import LocalProvider
from reelflow.providers.openai import MAX_POLL_FAILURES, OpenAIProvider

SORA = "openai/sora-2"
SORA_PRO = "openai/sora-2-pro"
WHISPER = "openai/whisper-1"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(video_latency_s=0.6, queue_s=0.15) as fake:
        yield fake


def provider(oai: FakeOpenAI, **kwargs: Any) -> OpenAIProvider:
    kwargs.setdefault("poll_initial_s", 0.02)
    kwargs.setdefault("poll_max_s", 0.2)
    return OpenAIProvider(oai.key, oai.base_url, **kwargs)


def vtask(
    tmp_path: Path, model: str = SORA, *, attempt: int = 1, job_type: str = "generate-video", **params: Any
) -> Task:
    return Task("ex1", "clip", job_type, model, params, attempt, scratch=tmp_path / f"scratch-{attempt}")


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


def logged(oai: FakeOpenAI, route: str) -> list[Any]:
    return [entry for entry in oai.log if entry.route == route]


async def image_file(path: Path, width: int, height: int) -> Path:
    await media.make_image(path, prompt="reference", width=width, height=height)
    return path


async def probe_bytes(data: bytes, folder: Path, suffix: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"probe{suffix}"
    path.write_bytes(data)
    return await media.probe(path)


# --- create, poll, download -----------------------------------------------------------------------


async def test_a_video_is_created_polled_and_downloaded(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = vtask(tmp_path, prompt="Waves at dusk, slow dolly in.", duration=8, aspect_ratio="9:16")
    vid = await p.submit(t)
    assert vid.startswith("video_") and oai.creates == 1
    [create] = logged(oai, "video_create")
    assert create.content_type.startswith("multipart/form-data")
    assert create.body == {
        "prompt": "Waves at dusk, slow dolly in.",
        "model": "sora-2",
        "seconds": "8",
        "size": "720x1280",
    }
    assert create.files == {}
    assert create.idempotency_key == t.idempotency_key == "reelflow-ex1-clip-1"
    assert create.authorization == f"Bearer {oai.key}"

    reports = Reports()
    result = await p.wait(t, vid, reports)
    assert reports.updates[0].phase == "queued"
    running = [u.percent for u in reports.updates if u.phase == "running"]
    assert running and running == sorted(running)
    assert any(pct is not None and 0 < pct < 100 for pct in running), running
    [out] = result.outputs
    assert out.url is None and out.path is not None and out.content_type == "video/mp4"
    assert out.path.parent == t.workdir
    info = await media.probe(out.path)
    assert info["has_video"] and info["has_audio"] and abs(info["duration"] - 8) < 0.3
    assert result.fields["provider_id"] == vid and result.fields["size"] == "720x1280"
    assert result.fields["seconds"] == 8
    assert result.cost_usd == pytest.approx(8 * 0.10)
    assert oai.creates == 1 and oai.content_downloads == 1 and oai.gets >= 2
    assert all(e.authorization == f"Bearer {oai.key}" for e in oai.log)
    [content] = logged(oai, "video_content")
    assert content.path == f"/v1/videos/{vid}/content"


async def test_sizes_durations_and_prices_by_model(oai: FakeOpenAI, tmp_path: Path) -> None:
    oai.video_latency_s = oai.queue_s = 0.0
    p = provider(oai)
    pro = vtask(tmp_path, SORA_PRO, prompt="a city at night", duration=12, resolution="1024p")
    result = await p.wait(pro, await p.submit(pro), Reports())
    assert logged(oai, "video_create")[-1].body["size"] == "1792x1024"
    assert logged(oai, "video_create")[-1].body["seconds"] == "12"
    assert result.cost_usd == pytest.approx(12 * 0.50)
    default = vtask(tmp_path, SORA_PRO, attempt=2, prompt="a field")
    result = await p.wait(default, await p.submit(default), Reports())
    assert logged(oai, "video_create")[-1].body == {
        "prompt": "a field",
        "model": "sora-2-pro",
        "seconds": "4",
        "size": "1280x720",
    }
    assert result.cost_usd == pytest.approx(4 * 0.30)
    before = oai.hits["video_create"]
    with pytest.raises(PermanentError, match=r"sora-2 makes 16:9 or 9:16 video at 720p \(got aspect_ratio '1:1'"):
        await p.submit(vtask(tmp_path, prompt="x", aspect_ratio="1:1"))
    with pytest.raises(PermanentError, match=r"sora-2 makes sizes 1280x720, 720x1280 \(got '1792x1024'\)"):
        await p.submit(vtask(tmp_path, prompt="x", size="1792x1024"))
    with pytest.raises(PermanentError, match=r"duration must be one of 4, 8, 12 seconds \(got 5\)"):
        await p.submit(vtask(tmp_path, prompt="x", duration=5))
    with pytest.raises(PermanentError, match="a prompt is required"):
        await p.submit(vtask(tmp_path, prompt="  "))
    assert oai.hits["video_create"] == before  # refused before any call


async def test_run_passes_the_form_as_given_and_the_fake_refuses_with_its_message(
    oai: FakeOpenAI, tmp_path: Path
) -> None:
    oai.video_latency_s = oai.queue_s = 0.0
    p = provider(oai)
    t = vtask(tmp_path, job_type="run", input={"prompt": "raw", "seconds": "4", "size": "720x1280"})
    result = await p.wait(t, await p.submit(t), Reports())
    assert logged(oai, "video_create")[-1].body == {
        "prompt": "raw",
        "seconds": "4",
        "size": "720x1280",
        "model": "sora-2",
    }
    assert result.outputs[0].content_type == "video/mp4"
    bad = vtask(tmp_path, attempt=2, job_type="run", input={"prompt": "raw", "size": "640x480"})
    with pytest.raises(
        PermanentError, match=r"HTTP 400: Invalid value: '640x480'\. Supported values.*\(invalid_value\)"
    ):
        await p.submit(bad)
    blocked = vtask(tmp_path, attempt=3, prompt="something forbidden")
    with pytest.raises(PermanentError, match=r"HTTP 400: .*blocked by our moderation system.*\(moderation_blocked\)"):
        await p.submit(blocked)


async def test_the_poll_after_header_is_a_floor(oai: FakeOpenAI, tmp_path: Path) -> None:
    oai.queue_s, oai.video_latency_s, oai.poll_after_ms = 0.0, 0.3, 1000
    p = provider(oai, poll_initial_s=0.02)
    t = vtask(tmp_path, prompt="x")
    vid = await p.submit(t)
    started = time.monotonic()
    await p.wait(t, vid, Reports())
    assert time.monotonic() - started >= 0.95  # waited as told, not at its own 20 ms pace
    assert oai.gets == 2


async def test_a_failed_video_is_permanent_with_its_message(oai: FakeOpenAI, tmp_path: Path) -> None:
    oai.videos_fail("moderation_blocked", "Your video was blocked: it may depict a real person.")
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    vid = await p.submit(t)
    with pytest.raises(PermanentError) as info:
        await p.wait(t, vid, Reports())
    assert str(info.value) == (
        f"openai: video {vid} failed: Your video was blocked: it may depict a real person. (moderation_blocked)"
    )
    assert oai.content_downloads == 0


# --- input_reference ------------------------------------------------------------------------------


async def test_a_stored_image_is_fitted_to_the_size_and_sent_as_input_reference(
    oai: FakeOpenAI, tmp_path: Path
) -> None:
    oai.video_latency_s = oai.queue_s = 0.0
    p = provider(oai)
    still = await image_file(tmp_path / "still.png", 320, 320)
    t = vtask(tmp_path, prompt="the still comes alive", image="http://127.0.0.1:8000/v1/artifacts/still.png")
    t.inputs["image"] = still
    await p.wait(t, await p.submit(t), Reports())
    [create] = logged(oai, "video_create")
    ref = create.files["input_reference"]
    assert ref.content_type == "image/png"
    info = await probe_bytes(ref.data, tmp_path / "ref", ".png")
    assert (info["width"], info["height"]) == (1280, 720)
    assert "input_reference" not in create.body

    # an image already of the right size goes as it is
    exact = await image_file(tmp_path / "exact.jpg", 720, 1280)
    t2 = vtask(tmp_path, attempt=2, prompt="x", aspect_ratio="9:16", image="http://127.0.0.1:8000/v1/artifacts/e.jpg")
    t2.inputs["image"] = exact
    await p.submit(t2)
    ref2 = logged(oai, "video_create")[-1].files["input_reference"]
    assert ref2.content_type == "image/jpeg" and ref2.data == exact.read_bytes()


@pytest.fixture
def image_host(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A tiny web server with /ref.png (a real image) and /missing.png (404); yields (origin, paths asked)."""
    asked: list[str] = []
    app = FastAPI()
    png = tmp_path / "host.png"
    asyncio.run(media.make_image(png, prompt="hosted", width=200, height=100))

    @app.get("/{name}")
    async def serve(name: str) -> Response:
        asked.append(name)
        if name == "ref.png":
            return Response(png.read_bytes(), media_type="image/png")
        return Response(b"no", status_code=404)

    server = ThreadedServer(app, "image host").start()
    try:
        yield server.url, asked
    finally:
        server.stop()


async def test_an_image_url_is_downloaded_only_when_private_addresses_are_allowed(
    oai: FakeOpenAI, tmp_path: Path, image_host: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    origin, asked = image_host
    monkeypatch.delenv("REELFLOW_ALLOW_PRIVATE_URLS", raising=False)
    refused = provider(oai)
    with pytest.raises(PermanentError, match=r"fetching 'image'.*127\.0\.0\.1 is a loopback address"):
        await refused.submit(vtask(tmp_path, prompt="x", image=f"{origin}/ref.png"))
    assert asked == [] and oai.hits["video_create"] == 0

    allowed = provider(oai, allow_private_urls=True)
    vid = await allowed.submit(vtask(tmp_path, prompt="x", image=f"{origin}/ref.png"))
    assert asked == ["ref.png"] and oai.videos[vid].reference is not None
    info = await probe_bytes(oai.videos[vid].reference.data, tmp_path / "r", ".png")  # type: ignore[union-attr]
    assert (info["width"], info["height"]) == (1280, 720)
    with pytest.raises(
        PermanentError, match=r"openai: fetching 'image' from .*/missing\.png: downloading failed: HTTP 404"
    ):
        await allowed.submit(vtask(tmp_path, prompt="x", image=f"{origin}/missing.png"))
    assert oai.creates == 1
    monkeypatch.setenv("REELFLOW_ALLOW_PRIVATE_URLS", "1")  # the setting as the environment gives it
    assert (await provider(oai).submit(vtask(tmp_path, attempt=3, prompt="x", image=f"{origin}/ref.png"))).startswith(
        "video_"
    )


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_class", "retry_after", "shown"),
    [
        (429, error("Rate limit reached for videos", "requests", "rate_limit_exceeded"), TransientError, 2.0,
         ["Rate limit reached for videos", "rate_limit_exceeded"]),
        (429, error("You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota", "insufficient_quota"), PermanentError, None,
         ["exceeded your current quota", "insufficient_quota"]),
        (500, None, TransientError, None, ["The server had an error"]),
        (503, error("The engine is currently overloaded.", "server_error"), TransientError, 1.0, ["overloaded"]),
        (401, error("Incorrect API key provided.", code="invalid_api_key"), PermanentError, None,
         ["Incorrect API key provided.", "invalid_api_key"]),
        (403, error("Your organization must be verified to use the model `sora-2`.", code=None), PermanentError, None,
         ["must be verified", "invalid_request_error"]),
        (400, error("Invalid value: 'x'. Supported values are: '4', '8', and '12'.", code="invalid_value",
                    param="seconds"), PermanentError, None, ["Invalid value: 'x'. Supported values", "invalid_value"]),
        (422, error("Unprocessable prompt.", code="unprocessable"), PermanentError, None, ["Unprocessable prompt."]),
    ],
)  # fmt: skip
async def test_create_errors_are_classified_with_the_message_intact(
    oai: FakeOpenAI,
    tmp_path: Path,
    status: int,
    body: Any,
    error_class: type[Exception],
    retry_after: float | None,
    shown: list[str],
) -> None:
    oai.fail_next("video_create", 1, status, body=body, retry_after=retry_after)
    p = provider(oai)
    with pytest.raises(error_class) as info:
        await p.submit(vtask(tmp_path, prompt="x"))
    assert type(info.value) is error_class
    assert str(info.value).startswith(f"openai: creating a video with {SORA} failed: HTTP {status}: ")
    for text in shown:
        assert text in str(info.value)
    assert getattr(info.value, "retry_after", None) == retry_after
    assert oai.creates == 0 and p.gate.throttled == (1 if status == 429 else 0)


async def test_timeouts_and_lost_connections_are_transient_and_resent_with_the_same_key(
    oai: FakeOpenAI, tmp_path: Path
) -> None:
    p = OpenAIProvider(oai.key, oai.base_url, client=httpx.AsyncClient(timeout=0.3), poll_initial_s=0.02)
    oai.stall_next("video_create", 1.5, n=3)
    t = vtask(tmp_path, prompt="x")
    with pytest.raises(TransientError, match=r"openai: creating a video with openai/sora-2 timed out \(ReadTimeout\)"):
        await p.submit(t)
    sent = logged(oai, "video_create")
    assert len(sent) == 3 and {e.idempotency_key for e in sent} == {t.idempotency_key}
    oai.drop_next("video_create", 3)
    with pytest.raises(TransientError, match="RemoteProtocolError"):
        await p.submit(vtask(tmp_path, attempt=2, prompt="x"))
    oai.drop_next("video_create", 1)  # once: the resend gets through
    assert (await p.submit(vtask(tmp_path, attempt=3, prompt="x"))).startswith("video_")


async def test_a_lost_create_answer_is_resent_and_makes_one_video(oai: FakeOpenAI, tmp_path: Path) -> None:
    oai.lose_next_answer("video_create")
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    vid = await p.submit(t)
    assert oai.hits["video_create"] == 2 and oai.creates == 1 and oai.replays == 1
    assert list(oai.videos) == [vid]
    assert (await p.wait(t, vid, Reports())).outputs


async def test_polling_rides_out_a_few_failures_then_gives_up(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    vid = await p.submit(t)
    oai.fail_next("video_get", 2, 503, retry_after=0)
    assert (await p.wait(t, vid, Reports())).outputs
    assert oai.gets >= 3

    t2 = vtask(tmp_path, attempt=2, prompt="x")
    vid2 = await p.submit(t2)
    oai.fail_next("video_get", MAX_POLL_FAILURES, 500)
    with pytest.raises(TransientError, match="HTTP 500") as info:
        await p.wait(t2, vid2, Reports())
    assert info.value.resubmit is False  # the retry waits on the same (paid) video
    assert (await p.wait(t2, vid2, Reports())).outputs
    assert oai.creates == 2


async def test_a_failed_download_is_transient_and_the_retry_fetches_again(oai: FakeOpenAI, tmp_path: Path) -> None:
    oai.video_latency_s = oai.queue_s = 0.0
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    vid = await p.submit(t)
    oai.fail_next("video_content", 1, 502, body=error("Bad gateway", "server_error"))
    with pytest.raises(TransientError, match=r"openai: downloading video .* failed: HTTP 502: Bad gateway"):
        await p.wait(t, vid, Reports())
    oai.drop_next("video_content")
    with pytest.raises(TransientError, match="downloading video"):
        await p.wait(t, vid, Reports())
    result = await p.wait(t, vid, Reports())
    assert (await media.probe(result.outputs[0].path))["duration"] == pytest.approx(4, abs=0.3)  # type: ignore[arg-type]
    assert oai.creates == 1 and oai.content_downloads == 3


async def test_a_vanished_video_and_a_bad_id_are_permanent(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    with pytest.raises(PermanentError, match=r"HTTP 404: Video with id 'video_nope' not found\."):
        await p.wait(t, "video_nope", Reports())
    with pytest.raises(PermanentError, match="not an openai video id"):
        await p.wait(t, "../../etc/passwd", Reports())
    assert [e.path for e in oai.log] == ["/v1/videos/video_nope"]


# --- cancel ---------------------------------------------------------------------------------------


async def test_cancel_deletes_the_video_and_never_raises_for_done_work(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    vid = await p.submit(t)
    await p.cancel(t, vid)
    assert oai.deletes == 1 and oai.videos[vid].deleted
    [delete] = logged(oai, "video_delete")
    assert delete.method == "DELETE" and delete.path == f"/v1/videos/{vid}"
    await p.cancel(t, vid)  # already gone: 404, nothing to stop
    assert oai.deletes == 2
    await p.cancel(t, "oai-" + "0" * 32)  # a synchronous call: nothing at OpenAI to stop
    await p.cancel(t, "../x")
    assert oai.deletes == 2
    with pytest.raises(PermanentError, match="not found"):
        await p.wait(t, vid, Reports())


# --- idempotency ----------------------------------------------------------------------------------


async def test_the_same_idempotency_key_gets_the_same_video(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    t = vtask(tmp_path, prompt="x")
    first = await p.submit(t)
    again = await p.submit(t)
    assert again == first and oai.creates == 1 and oai.replays == 1
    assert oai.hits["video_create"] == 2
    other = await p.submit(vtask(tmp_path, attempt=2, prompt="x"))  # the next attempt is new work
    assert other != first and oai.creates == 2
    assert [e.idempotency_key for e in logged(oai, "video_create")] == [
        "reelflow-ex1-clip-1",
        "reelflow-ex1-clip-1",
        "reelflow-ex1-clip-2",
    ]


async def test_every_post_carries_the_idempotency_key(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    speech = Task("ex9", "voice", "generate-audio", "openai/gpt-4o-mini-tts", {"text": "hi"}, 2, tmp_path / "s")
    image = Task("ex9", "still", "generate-image", "openai/gpt-image-1", {"prompt": "x"}, 1, tmp_path / "i")
    audio = tmp_path / "voice.mp3"
    audio.write_bytes(oai.media["mp3"])
    words = Task("ex9", "words", "transcribe", WHISPER, {"audio": "http://h/v1/artifacts/a.mp3"}, 1, tmp_path / "w")
    words.inputs["audio"] = audio
    for t in (speech, image, words):
        await p.wait(t, await p.submit(t), Reports())
    posts = [e for e in oai.log if e.method == "POST"]
    assert [(e.route, e.idempotency_key) for e in posts] == [
        ("speech", "reelflow-ex9-voice-2"),
        ("images", "reelflow-ex9-still-1"),
        ("transcriptions", "reelflow-ex9-words-1"),
    ]


# --- transcription --------------------------------------------------------------------------------


async def test_a_transcription_uploads_the_file_and_gives_words_and_an_srt(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    audio = tmp_path / "speech.m4a"
    await media.make_audio(audio, duration=3.0)
    t = Task("ex1", "words", "transcribe", WHISPER, {"audio": "http://h/v1/artifacts/x.m4a", "language": "en"}, 1,
             tmp_path / "scratch")  # fmt: skip
    t.inputs["audio"] = audio
    pid = await p.submit(t)
    assert pid.startswith("oai-") and sum(oai.hits.values()) == 0
    reports = Reports()
    result = await p.wait(t, pid, reports)
    assert reports.updates[0].message == "transcribing"
    [call] = logged(oai, "transcriptions")
    assert call.content_type.startswith("multipart/form-data")
    assert call.body == {
        "model": "whisper-1",
        "response_format": "verbose_json",
        "language": "en",
        "timestamp_granularities[]": ["word", "segment"],
    }
    upload = call.files["file"]
    assert upload.filename == "audio.m4a" and upload.content_type == "audio/mp4"
    assert upload.data == audio.read_bytes()
    [seen] = oai.transcriptions
    expected = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in seen["words"]]
    assert result.fields["words"] == expected
    assert [w["word"] for w in expected] == ["Every", "evening", "the", "sea", "keeps", "its", "promise"]
    assert result.fields["text"] == DEFAULT_TRANSCRIPT
    assert result.fields["language"] == "english" and result.fields["duration"] == pytest.approx(3.0, abs=0.1)
    assert result.fields["segments"] and result.fields["provider_id"] == pid
    [out] = result.outputs
    assert out.content_type == "application/x-subrip" and out.path is not None and out.path.suffix == ".srt"
    srt = out.path.read_text()
    assert srt.startswith("1\n00:00:00,100 --> ") and "Every evening" in srt
    assert result.cost_usd == pytest.approx(seen["duration"] / 60 * 0.006)


async def test_transcription_refusals_are_precise(oai: FakeOpenAI, tmp_path: Path) -> None:
    p = provider(oai)
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")

    def t(**params: Any) -> Task:
        return Task("ex1", "words", "transcribe", WHISPER, params, 1, tmp_path / "scratch")

    with pytest.raises(PermanentError, match="parameter 'audio' is required"):
        await p.submit(t())
    with pytest.raises(PermanentError, match=r"language must be an ISO-639-1 code such as 'en' \(got 'English'\)"):
        await p.submit(t(audio="http://h/a.mp3", language="English"))
    with pytest.raises(PermanentError, match="whisper-1 runs as a transcribe job"):
        await p.submit(Task("ex1", "w", "run", WHISPER, {"input": {}}, 1, tmp_path / "s"))
    wrong = t(audio="http://h/v1/artifacts/notes.txt")
    wrong.inputs["audio"] = bad
    with pytest.raises(PermanentError, match=r"cannot transcribe a \.txt file"):
        await p.wait(wrong, await p.submit(wrong), Reports())
    broken = t(audio="http://h/v1/artifacts/x.mp3")
    broken.inputs["audio"] = tmp_path / "broken.mp3"
    broken.inputs["audio"].write_bytes(b"\x00" * 100)
    with pytest.raises(
        PermanentError, match=r"HTTP 400: Audio file might be corrupted or unsupported \(invalid_value\)"
    ):
        await p.wait(broken, await p.submit(broken), Reports())
    assert oai.hits["transcriptions"] == 1


# --- webhooks -------------------------------------------------------------------------------------


async def test_verify_callback_accepts_a_good_signature_only(
    oai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    secret = new_secret()
    p = provider(oai, webhook_secret=secret)
    headers, body = oai.signed_event("video_abc123", secret=secret)
    assert await p.verify_callback(headers, body) == CallbackEvent(provider_job_id="video_abc123", status="completed")
    shouted = {k.title(): v for k, v in headers.items()}  # header names in any case
    assert (await p.verify_callback(shouted, body)).provider_job_id == "video_abc123"
    headers, body = oai.signed_event("video_abc123", "video.failed", secret=secret)
    assert (await p.verify_callback(headers, body)).status == "failed"

    async def rejected(headers: dict[str, str], body: bytes, why: str, provider_: OpenAIProvider = p) -> None:
        with pytest.raises(CallbackRejected, match=why):
            await provider_.verify_callback(headers, body)

    headers, body = oai.signed_event("video_abc123", secret=new_secret())
    await rejected(headers, body, "No matching signature")
    headers, body = oai.signed_event("video_abc123", secret=secret)
    await rejected(headers, body.replace(b"video_abc123", b"video_zzz999"), "No matching signature")
    headers, body = oai.signed_event("video_abc123", secret=secret, at=datetime.now(UTC) - timedelta(minutes=10))
    await rejected(headers, body, "too old")
    await rejected({k: v for k, v in headers.items() if k != "webhook-signature"}, body, "Missing required headers")
    headers, body = oai.signed_event("video_abc123", secret=secret)
    await rejected({**headers, "webhook-signature": "v1"}, body, "malformed signature")
    await rejected({**headers, "webhook-signature": "v1,abc"}, body, "malformed signature")
    no_id = json.dumps({"id": "evt_1", "object": "event", "type": "video.completed", "data": {}}).encode()
    headers, body = oai.signed_event("", secret=secret, body=no_id)
    await rejected(headers, body, r"names no object \(data\.id\)")
    headers, body = oai.signed_event("video_abc123", secret=secret)
    await rejected(headers, body, "OPENAI_WEBHOOK_SECRET is not set", OpenAIProvider(oai.key, oai.base_url))
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", secret)  # read at call time
    assert (await OpenAIProvider(oai.key, oai.base_url).verify_callback(headers, body)).status == "completed"


class Receiver:
    """A stand-in for our callback route: verifies with the provider, then wakes the waiting task."""

    def __init__(self, p: OpenAIProvider, task: Task, loop: asyncio.AbstractEventLoop) -> None:
        self.events: list[CallbackEvent] = []
        self.rejected = 0
        app = FastAPI()

        @app.post("/v1/providers/openai/callback")
        async def callback(request: Request) -> Response:
            try:
                event = await p.verify_callback(request.headers, await request.body())
            except CallbackRejected:
                self.rejected += 1
                return Response(status_code=401)
            self.events.append(event)
            loop.call_soon_threadsafe(task.wake.set)
            return Response(status_code=204)

        self.server = ThreadedServer(app, "receiver").start()
        self.url = self.server.url + "/v1/providers/openai/callback"


async def test_a_webhook_wakes_the_wait_for_one_confirming_read(oai: FakeOpenAI, tmp_path: Path) -> None:
    secret = new_secret()
    p = provider(oai, webhook_secret=secret, callback_poll_s=30)
    t = vtask(tmp_path, prompt="x")
    receiver = Receiver(p, t, asyncio.get_running_loop())
    t.callback_url = receiver.url + "?execution=ex1&job=clip"
    oai.webhook_url, oai.webhook_secret = receiver.url, secret
    try:
        vid = await p.submit(t)
        started = time.monotonic()
        result = await asyncio.wait_for(p.wait(t, vid, Reports()), timeout=10)
        assert time.monotonic() - started < 5  # not the 30 s slow poll
    finally:
        receiver.server.stop()
    assert result.outputs and oai.gets == 2  # the first look, then one after the callback
    assert receiver.events == [CallbackEvent(provider_job_id=vid, status="completed")]
    assert receiver.rejected == 0 and len(oai.webhooks_sent) == 1 and oai.webhooks_sent[0]["status"] == 204


async def test_a_lost_webhook_is_covered_by_slow_polling(oai: FakeOpenAI, tmp_path: Path) -> None:
    secret = new_secret()
    p = provider(oai, webhook_secret=secret, callback_poll_s=0.5)
    t = vtask(tmp_path, prompt="x")
    t.callback_url = "http://127.0.0.1:9/v1/providers/openai/callback?execution=ex1&job=clip"
    oai.webhook_url, oai.webhook_secret, oai.drop_webhooks = t.callback_url, secret, True
    result = await asyncio.wait_for(p.wait(t, await p.submit(t), Reports()), timeout=10)
    assert result.outputs and 2 <= oai.gets <= 4  # every 0.5 s over a 0.75 s video
    assert len(oai.webhooks_dropped) == 1 and oai.webhooks_sent == []


async def test_without_a_secret_a_callback_url_does_not_slow_polling(
    oai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    p = provider(oai, callback_poll_s=30)
    t = vtask(tmp_path, prompt="x")
    t.callback_url = "http://127.0.0.1:9/v1/providers/openai/callback?execution=ex1&job=clip"
    started = time.monotonic()
    assert (await asyncio.wait_for(p.wait(t, await p.submit(t), Reports()), timeout=10)).outputs
    assert time.monotonic() - started < 5


# --- catalog --------------------------------------------------------------------------------------


def test_catalog_entries_check_their_limits() -> None:
    checks: dict[str, Any] = {"extra_allowed": False, "loc_prefix": [], "job_id": None, "allow_refs": False}
    sora, pro, whisper = MODELS_BY_ID[SORA], MODELS_BY_ID[SORA_PRO], MODELS_BY_ID[WHISPER]
    assert sora.types == ["generate-video", "run"] and whisper.types == ["transcribe"]
    assert check_params(sora.params, {"prompt": "x", "duration": 12, "aspect_ratio": "9:16"}, **checks) == []
    problems = check_params(
        sora.params, {"prompt": "x" * 32001, "duration": 5, "resolution": "1024p", "size": "1792x1024"}, **checks
    )
    assert len(problems) == 4
    assert check_params(pro.params, {"prompt": "x", "resolution": "1024p", "size": "1024x1792"}, **checks) == []
    assert check_params(whisper.params, {"audio": "https://x.test/a.mp3", "language": "en"}, **checks) == []
    [missing] = check_params(whisper.params, {"language": "en"}, **checks)
    assert "missing required parameter 'audio'" in missing.msg
    assert sora.price.unit == "second" and sora.price.usd == VIDEO_PRICES[("sora-2", "1280x720")] == 0.10
    assert estimate_cost(sora, {"prompt": "x", "duration": 8}) == pytest.approx(0.8)
    assert estimate_cost(pro, {"prompt": "x"}) == pytest.approx(4 * 0.30)
    assert whisper.price.usd * 60 == pytest.approx(0.006)
    assert all("approximately" in m.description for m in (sora, pro, whisper))


# --- through the engine ---------------------------------------------------------------------------


@pytest.fixture
def openai_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog.registry, "_MODELS", dict(catalog.registry._MODELS))
    for model in MODELS:
        register_model(model, replace=True)


async def test_a_sora_job_through_the_engine_lands_in_our_storage(
    engine: Engine, running_worker: WorkerFactory, openai_models: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress: list[float] = []

    def watch(state: dict[str, Any]) -> None:
        progress.extend(j["progress"] for j in state["jobs"] if j["status"] == "running")

    with FakeOpenAI(video_latency_s=2.5, queue_s=0.3) as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.key)
        monkeypatch.setenv("REELFLOW_OPENAI_BASE_URL", fake.base_url)
        fake.fail_next(
            "video_create", 1, 429, body=error("Slow down", "requests", "rate_limit_exceeded"), retry_after=0
        )
        job = {"id": "clip", "type": "generate-video", "model": SORA, "params": {"prompt": "waves", "duration": 4}}
        eid = await engine.submit({"jobs": [job]})
        p = OpenAIProvider(poll_initial_s=0.05, poll_max_s=0.3)
        async with running_worker(providers_={"openai": p}):
            state = await engine.wait(eid, timeout=60, poll_s=0.1, on_update=watch)
        await p.aclose()
        assert fake.creates == 1 and fake.hits["video_create"] == 2 and fake.content_downloads == 1
        [vid] = fake.videos
    assert state["status"] == "succeeded", state
    [clip] = state["jobs"]
    result = clip["result"]
    assert result["provider_id"] == vid and result["url"].endswith(".mp4") and "/v1/artifacts/" in result["url"]
    assert any(0 < pct < 100 for pct in progress), progress
    assert clip["progress"] == 100
    info = await media.probe(Path(result["path"]))  # the fake is gone: the file is ours
    assert info["has_video"] and info["has_audio"] and abs(info["duration"] - 4) < 0.3
    assert clip["cost"] == pytest.approx(0.4) or state["cost"]["actual"] == pytest.approx(0.4)


async def test_a_transcript_captions_a_video_end_to_end(
    engine: Engine,
    running_worker: WorkerFactory,
    openai_models: None,
    oai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", oai.key)
    monkeypatch.setenv("REELFLOW_OPENAI_BASE_URL", oai.base_url)
    plan = {
        "jobs": [
            {"id": "voice", "type": "generate-audio", "model": "local/audio",
             "params": {"text": DEFAULT_TRANSCRIPT, "duration": 3}},
            {"id": "transcript", "type": "transcribe", "model": WHISPER,
             "params": {"audio": "$voice", "language": "en"}},
            {"id": "clip", "type": "generate-video", "model": "local/video",
             "params": {"prompt": "the sea", "duration": 3}},
            {"id": "final", "type": "captions", "params": {"video": "$clip", "words": "$transcript.words"}},
        ]
    }  # fmt: skip
    eid = await engine.submit(plan)
    p = OpenAIProvider()
    async with running_worker(providers_={"openai": p, "local": LocalProvider()}):
        state = await engine.wait(eid, timeout=60)
    await p.aclose()
    assert state["status"] == "succeeded", state
    jobs = {j["id"]: j["result"] for j in state["jobs"]}
    transcript = jobs["transcript"]
    [seen] = oai.transcriptions
    voice_bytes = Path(jobs["voice"]["path"]).read_bytes()
    assert seen["sha256"] == hashlib.sha256(voice_bytes).hexdigest()  # our stored voice, uploaded as a file
    assert transcript["url"].endswith(".srt") and "Every evening" in Path(transcript["path"]).read_text()
    assert [w["word"] for w in transcript["words"]] == [w["word"] for w in seen["words"]]
    assert transcript["language"] == "english" and transcript["text"] == DEFAULT_TRANSCRIPT
    final = await media.probe(Path(jobs["final"]["path"]))
    assert final["has_video"] and abs(final["duration"] - jobs["clip"]["duration"]) <= 0.1
    assert Path(jobs["final"]["path"]).read_bytes() != Path(jobs["clip"]["path"]).read_bytes()
