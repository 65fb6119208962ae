"""OpenAI's Whisper transcription and the idempotency keys of its synchronous calls, against the fake in
tests/fakes/openai.py (and through the engine)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WorkerFactory
from fakes.openai import DEFAULT_TRANSCRIPT, FakeOpenAI
from reelflow import media
from reelflow.engine.scheduler import Engine
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, ProgressUpdate, Task
from reelflow.providers.catalog import check_params, register_model
from reelflow.providers.catalog.openai import MODELS, MODELS_BY_ID
from reelflow.providers.local import LocalProvider
from reelflow.providers.openai import OpenAIProvider

WHISPER = "openai/whisper-1"


@pytest.fixture
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def provider(oai: FakeOpenAI, **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(oai.key, oai.base_url, **kwargs)


class Reports:
    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def __call__(self, update: ProgressUpdate) -> None:
        self.updates.append(update)


def logged(oai: FakeOpenAI, route: str) -> list[Any]:
    return [entry for entry in oai.log if entry.route == route]


# --- idempotency ----------------------------------------------------------------------------------


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


# --- catalog --------------------------------------------------------------------------------------


def test_the_whisper_entry_checks_its_limits() -> None:
    checks: dict[str, Any] = {"extra_allowed": False, "loc_prefix": [], "job_key": None, "allow_refs": False}
    whisper = MODELS_BY_ID[WHISPER]
    assert whisper.types == ["transcribe"]
    assert check_params(whisper.params, {"audio": "https://x.test/a.mp3", "language": "en"}, **checks) == []
    [missing] = check_params(whisper.params, {"language": "en"}, **checks)
    assert "missing required parameter 'audio'" in missing.msg
    assert whisper.price.usd * 60 == pytest.approx(0.006)
    assert "approximately" in whisper.description


# --- through the engine ---------------------------------------------------------------------------


@pytest.fixture
def openai_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for model in MODELS:
        register_model(model, replace=True)


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
