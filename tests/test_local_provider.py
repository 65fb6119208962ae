"""The `local` provider end to end: every model and job type through submit and wait."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mediacheck import decoded_duration
from reelflow import media
from reelflow.providers.base import PermanentError, ProgressUpdate, Provider, ProviderResult, Task
from reelflow.providers.local import LocalProvider, image_size, video_size

W, H = 320, 180


@dataclass(frozen=True)
class Inputs:
    image: Path
    video: Path  # 1.5 s, no audio
    audio: Path  # 1.0 s
    talkie: Path  # 1.5 s with audio


async def _make_inputs(d: Path) -> Inputs:
    i = Inputs(image=d / "img.png", video=d / "clip.mp4", audio=d / "voice.m4a", talkie=d / "talkie.mp4")
    await asyncio.gather(
        media.make_image(i.image, prompt="logo", width=W, height=H),
        media.make_video(i.video, prompt="clip", duration=1.5, width=W, height=H),
        media.make_audio(i.audio, duration=1.0),
    )
    await media.merge_video_audio(i.video, i.audio, i.talkie)
    return i


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return asyncio.run(_make_inputs(tmp_path_factory.mktemp("inputs")))


@pytest.fixture
def provider() -> LocalProvider:
    return LocalProvider()


def url(name: str) -> str:
    return f"http://127.0.0.1:8000/v1/artifacts/{name}"


def make_task(
    workdir: Path,
    type_: str,
    params: dict[str, Any],
    *,
    model: str | None = None,
    inputs: dict[str, Path] | None = None,
) -> Task:
    return Task(
        execution_id="ex1",
        job_id="job1",
        type=type_,
        model=model,
        params=params,
        attempt=1,
        scratch=workdir,
        inputs=inputs or {},
    )


def scratch_made(task: Task) -> bool:
    return task.scratch.exists()


async def run(provider: LocalProvider, task: Task) -> tuple[ProviderResult, list[ProgressUpdate]]:
    updates: list[ProgressUpdate] = []
    provider_id = await provider.submit(task)
    result = await provider.wait(task, provider_id, updates.append)
    return result, updates


async def only_output(result: ProviderResult, suffix: str, content_type: str) -> dict[str, Any]:
    assert len(result.outputs) == 1 and result.cost_usd == 0.0
    out = result.outputs[0]
    assert out.path is not None and out.path.suffix == suffix and out.content_type == content_type
    return await media.probe(out.path)


# --- the protocol --------------------------------------------------------------------------------


async def test_is_a_provider_with_fresh_ids_and_a_harmless_cancel(provider: LocalProvider, tmp_path: Path) -> None:
    assert isinstance(provider, Provider) and provider.name == "local"
    task = make_task(tmp_path / "scratch", "generate-image", {"prompt": "x"}, model="local/image")
    ids = {await provider.submit(task) for _ in range(3)}
    assert len(ids) == 3 and all(re.fullmatch(r"local-[0-9a-f]{32}", i) for i in ids)
    assert not scratch_made(task)  # submit starts nothing
    await provider.cancel(task, ids.pop())


async def test_progress_reporter_may_be_async(provider: LocalProvider, tmp_path: Path) -> None:
    seen: list[float | None] = []

    async def report(update: ProgressUpdate) -> None:
        await asyncio.sleep(0)
        seen.append(update.percent)

    task = make_task(tmp_path, "generate-image", {"prompt": "x", "width": 64, "height": 64}, model="local/image")
    await provider.wait(task, await provider.submit(task), report)
    assert seen[0] == 0.0 and seen[-1] == 100.0


# --- local/image, local/video, local/audio -------------------------------------------------------


def test_aspect_ratios_map_to_sizes() -> None:
    assert image_size(None, None, None) == (1280, 720)
    assert image_size(None, None, "16:9") == (1280, 720)
    assert image_size(None, None, "9:16") == (720, 1280)
    assert image_size(None, None, "1:1") == (1280, 1280)
    assert image_size(None, None, "4:3") == (1280, 960)
    assert image_size(None, None, "3:4") == (960, 1280)
    assert image_size(None, None, "21:9") == (1280, 548)
    assert image_size(400, None, "1:1") == (400, 400)
    assert image_size(None, 300, "4:3") == (400, 300)
    assert image_size(333, 222, "9:16") == (333, 222)
    assert video_size(None, None) == (1280, 720)
    assert video_size("9:16", "1080p") == (1080, 1920)
    assert video_size("16:9", "480p") == (854, 480)
    assert video_size("1:1", "720p") == (720, 720)
    assert video_size("21:9", "480p") == (1120, 480)


async def test_generate_image(provider: LocalProvider, tmp_path: Path) -> None:
    task = make_task(tmp_path, "generate-image", {"prompt": "A sunset", "aspect_ratio": "9:16"}, model="local/image")
    result, updates = await run(provider, task)
    info = await only_output(result, ".png", "image/png")
    assert (info["width"], info["height"]) == (720, 1280)
    assert result.fields == {"width": 720, "height": 1280}
    assert updates[0].percent == 0.0 and updates[-1].percent == 100.0
    assert all(u.phase == "running" for u in updates)
    assert result.outputs[0].path == tmp_path / "job1.png"


async def test_generate_video_from_prompt_and_from_image(
    provider: LocalProvider, tmp_path: Path, inputs: Inputs
) -> None:
    task = make_task(
        tmp_path,
        "generate-video",
        {"prompt": "waves", "duration": 1.5, "resolution": "480p", "aspect_ratio": "1:1", "fps": 12},
        model="local/video",
    )
    result, _ = await run(provider, task)
    info = await only_output(result, ".mp4", "video/mp4")
    assert (info["width"], info["height"], info["fps"]) == (480, 480, 12.0)
    assert await decoded_duration(result.outputs[0].path or Path()) == pytest.approx(1.5, abs=0.1)

    from_image = make_task(
        tmp_path / "b",
        "generate-video",
        {"image": url("img.png"), "duration": 1, "resolution": "480p", "fps": 12, "seed": 3},
        model="local/video",
        inputs={"image": inputs.image},
    )
    result, _ = await run(provider, from_image)
    info = await only_output(result, ".mp4", "video/mp4")
    assert (info["width"], info["height"]) == (854, 480)
    assert info["duration"] == pytest.approx(1.0, abs=0.1)


async def test_generate_audio(provider: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "speech_available", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng: a tone bed
    task = make_task(tmp_path, "generate-audio", {"text": "Hello sea", "duration": 1.2}, model="local/audio")
    result, _ = await run(provider, task)
    info = await only_output(result, ".m4a", "audio/mp4")
    assert info["duration"] == pytest.approx(1.2, abs=0.1) and info["has_audio"]
    assert result.fields == {"speech": False}


# --- local job types -----------------------------------------------------------------------------


async def test_merge_video_audio(provider: LocalProvider, tmp_path: Path, inputs: Inputs) -> None:
    task = make_task(
        tmp_path,
        "merge-video-audio",
        {"video": url("clip.mp4"), "audio": url("voice.m4a")},
        inputs={"video": inputs.video, "audio": inputs.audio},
    )
    result, _ = await run(provider, task)
    info = await only_output(result, ".mp4", "video/mp4")
    assert info["has_video"] and info["has_audio"] and info["duration"] == pytest.approx(1.5, abs=0.1)


async def test_concat(provider: LocalProvider, tmp_path: Path, inputs: Inputs) -> None:
    task = make_task(
        tmp_path,
        "concat",
        {"videos": [url("clip.mp4"), url("talkie.mp4")], "width": 160, "height": 90},
        inputs={"videos[0]": inputs.video, "videos[1]": inputs.talkie},
    )
    result, _ = await run(provider, task)
    info = await only_output(result, ".mp4", "video/mp4")
    assert (info["width"], info["height"]) == (160, 90) and info["has_audio"]
    assert await decoded_duration(result.outputs[0].path or Path()) == pytest.approx(3.0, abs=0.1)
    assert result.fields == {"parts": 2}


@pytest.mark.parametrize(
    "source",
    [
        {"text": "Hello"},
        {"srt": "1\n00:00:00,000 --> 00:00:01,000\nHi\n"},
        {"segments": [{"start": 0, "end": 1, "text": "Hi"}]},
        {"words": [{"word": "Hi", "start": 0.1, "end": 0.5}]},
        {"words": {"text": "Hi", "words": [{"word": "Hi", "start": 0.1, "end": 0.5}]}},  # a transcribe result
    ],
)
async def test_captions(provider: LocalProvider, tmp_path: Path, inputs: Inputs, source: dict[str, Any]) -> None:
    params = {"video": url("talkie.mp4"), **source, "position": "top", "font_size": 16, "box": False}
    task = make_task(tmp_path, "captions", params, inputs={"video": inputs.talkie})
    result, _ = await run(provider, task)
    info = await only_output(result, ".mp4", "video/mp4")
    assert info["has_audio"] and info["duration"] == pytest.approx(1.5, abs=0.1)


async def test_overlay(provider: LocalProvider, tmp_path: Path, inputs: Inputs) -> None:
    task = make_task(
        tmp_path,
        "overlay",
        {"video": url("talkie.mp4"), "overlay": url("img.png"), "position": "bottom-left", "scale": 0.3, "end": 1},
        inputs={"video": inputs.talkie, "overlay": inputs.image},
    )
    result, _ = await run(provider, task)
    info = await only_output(result, ".mp4", "video/mp4")
    assert info["has_audio"] and info["duration"] == pytest.approx(1.5, abs=0.1)


@pytest.mark.parametrize(
    ("fmt", "suffix", "content_type"),
    [(None, ".mp4", "video/mp4"), ("webm", ".webm", "video/webm"), ("mp3", ".mp3", "audio/mpeg")],
)
async def test_transcode(
    provider: LocalProvider, tmp_path: Path, inputs: Inputs, fmt: str | None, suffix: str, content_type: str
) -> None:
    params: dict[str, Any] = {"input": url("talkie.mp4"), "width": 160}
    if fmt:
        params["format"] = fmt
    task = make_task(tmp_path, "transcode", params, inputs={"input": inputs.talkie})
    result, _ = await run(provider, task)
    info = await only_output(result, suffix, content_type)
    assert info["duration"] == pytest.approx(1.5, abs=0.1)
    assert result.fields == {"format": fmt or "mp4"}


async def test_thumbnail(provider: LocalProvider, tmp_path: Path, inputs: Inputs) -> None:
    task = make_task(
        tmp_path, "thumbnail", {"video": url("clip.mp4"), "width": 120, "at": 0.5}, inputs={"video": inputs.video}
    )
    result, _ = await run(provider, task)
    info = await only_output(result, ".jpg", "image/jpeg")
    assert (info["width"], info["duration"]) == (120, None)

    png = make_task(tmp_path, "thumbnail", {"video": url("clip.mp4"), "format": "png"}, inputs={"video": inputs.video})
    result, _ = await run(provider, png)
    await only_output(result, ".png", "image/png")


# --- refusals ------------------------------------------------------------------------------------


async def test_missing_input_is_permanent(provider: LocalProvider, tmp_path: Path, inputs: Inputs) -> None:
    task = make_task(tmp_path, "captions", {"video": "https://elsewhere.example/v.mp4", "text": "hi"})
    with pytest.raises(PermanentError, match=r"^captions: input 'video' is not a stored artifact$"):
        await run(provider, task)
    concat = make_task(tmp_path, "concat", {"videos": [url("a.mp4"), url("b.mp4")]}, inputs={"videos[0]": inputs.video})
    with pytest.raises(PermanentError, match=r"concat: input 'videos\[1\]' is not a stored artifact"):
        await run(provider, concat)
    no_param = make_task(tmp_path, "merge-video-audio", {"audio": url("a.m4a")})
    with pytest.raises(PermanentError, match="merge-video-audio: parameter 'video' is required"):
        await run(provider, no_param)


async def test_unknown_type_or_model_is_permanent(provider: LocalProvider, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="unknown job type"):
        await run(provider, make_task(tmp_path, "teleport", {}))
    with pytest.raises(PermanentError, match="unknown local model 'local/hologram'"):
        await run(provider, make_task(tmp_path, "generate-image", {"prompt": "x"}, model="local/hologram"))
    with pytest.raises(PermanentError, match="only does generate-image"):
        await run(provider, make_task(tmp_path, "generate-video", {"prompt": "x"}, model="local/image"))


async def test_bad_params_and_bad_media_are_permanent(provider: LocalProvider, tmp_path: Path, inputs: Inputs) -> None:
    with pytest.raises(PermanentError, match="generate-image: parameter 'prompt' is required"):
        await run(provider, make_task(tmp_path, "generate-image", {}, model="local/image"))
    with pytest.raises(PermanentError, match="parameter 'width' must be a number"):
        await run(
            provider, make_task(tmp_path, "generate-image", {"prompt": "x", "width": "wide"}, model="local/image")
        )
    with pytest.raises(PermanentError, match="parameter 'format' must be one of"):
        await run(
            provider, make_task(tmp_path, "transcode", {"input": "u", "format": "avi"}, inputs={"input": inputs.video})
        )

    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    task = make_task(tmp_path, "thumbnail", {"video": url("junk.mp4")}, inputs={"video": junk})
    with pytest.raises(PermanentError, match=r"^thumbnail: probe: junk\.mp4 is not a media file"):
        await run(provider, task)
    bad_srt = make_task(tmp_path, "captions", {"video": "u", "srt": "nonsense"}, inputs={"video": inputs.video})
    with pytest.raises(PermanentError, match=r"^captions: SRT block 1"):
        await run(provider, bad_srt)
    no_audio = make_task(tmp_path, "transcode", {"input": "u", "format": "wav"}, inputs={"input": inputs.video})
    with pytest.raises(PermanentError, match="has no audio stream"):
        await run(provider, no_audio)
