"""The Python SDK: builders make the plan (references and dependencies), execute runs it locally."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reelflow import (
    captions,
    compose,
    concat,
    generate_audio,
    generate_image,
    generate_video,
    image_model,
    merge,
    video_model,
)
from reelflow.config import Settings
from reelflow.errors import PlanError
from reelflow.plan import parse_plan


def test_builders_make_references_and_dependencies() -> None:
    still = generate_image(model=image_model("black-forest-labs/flux-schnell", "replicate"), prompt="A sunset")
    clip = generate_video(model=video_model("bytedance/seedance-1-pro", "replicate"), image=still, duration=5)
    voice = generate_audio(model="elevenlabs/eleven_multilingual_v2", text="Every evening")
    plan = compose(merge(video=clip, audio=voice), metadata={"order": 1}).plan()
    assert plan == {
        "jobs": [
            {"id": "image", "type": "generate-image", "model": "replicate/black-forest-labs/flux-schnell",
             "params": {"prompt": "A sunset"}},
            {"id": "video", "type": "generate-video", "model": "replicate/bytedance/seedance-1-pro",
             "params": {"image": "$image", "duration": 5}},
            {"id": "audio", "type": "generate-audio", "model": "elevenlabs/eleven_multilingual_v2",
             "params": {"text": "Every evening"}},
            {"id": "merge", "type": "merge-video-audio", "params": {"video": "$video", "audio": "$audio"}},
        ],
        "metadata": {"order": 1},
    }


def test_fields_nested_references_explicit_ids_and_unique_names() -> None:
    a = generate_video(model="sim/video", id="first", latency_s=0)
    b = generate_video(model="sim/video", echo={"list": [a, a.field("duration")]})
    c = generate_video(model="sim/video", echo=b)
    plan = compose(concat(a, b, c)).plan()
    ids = [j["id"] for j in plan["jobs"]]
    assert ids == ["first", "video", "video-2", "concat"]
    assert plan["jobs"][1]["params"]["echo"] == {"list": ["$first", "$first.duration"]}
    assert plan["jobs"][3]["params"]["videos"] == ["$first", "$video", "$video-2"]
    parsed = parse_plan(plan)
    assert parsed.dependencies()["concat"] == ["first", "video", "video-2"]


def test_a_step_shared_by_two_consumers_appears_once() -> None:
    still = generate_image(model="local/image", prompt="x")
    one = generate_video(model="local/video", image=still)
    two = generate_video(model="local/video", image=still)
    plan = compose(one, two).plan()
    assert [j["id"] for j in plan["jobs"]] == ["image", "video", "video-2"]


def test_an_invalid_composition_is_refused_before_anything_runs(settings: Settings) -> None:
    bad = generate_video(model="local/video", prompt="x", duration=900)
    with pytest.raises(PlanError, match="duration must be at most 60"):
        compose(bad).execute(settings=settings)


def test_execute_runs_on_the_local_engine_and_returns_a_handle(settings: Settings) -> None:
    still = generate_image(model=image_model("image", "local"), prompt="A sunset", width=320, height=180)
    clip = generate_video(model=video_model("video", "local"), image=still, duration=1.5, fps=12)
    final = captions(clip, text="hello")
    execution = compose(final).execute(settings=settings)
    assert execution.status() == "queued"
    execution.wait()
    assert execution.status() == "succeeded"
    result = execution.result
    assert result is not None
    assert abs(result.duration - 1.5) <= 0.1
    assert Path(result.path).is_file()
    assert result.url.endswith(".mp4") and "/v1/artifacts/" in result.url


async def test_the_async_api(settings: Settings) -> None:
    step = generate_video(model="sim/video", latency_s=0.05, fail_times=1)
    execution = await compose(step).execute_async(settings=settings)
    await execution.wait(timeout=20)
    assert execution.done
    assert await execution.status() == "succeeded"
    assert execution.status == "succeeded"  # the status last read, as an attribute
    assert [e["type"] async for e in execution.events()][-1] == "execution.succeeded"
    assert (await compose(step).estimate_async())["jobs"][0]["id"] == "video"
    assert execution.state is not None and execution.state["jobs"][0]["attempts"] == 2
    again = await execution.retry()
    await again.wait(timeout=20)
    assert again.state is not None and again.state["retry_of"] == execution.id
    await asyncio.sleep(0)


def test_status_is_a_property_and_the_handle_gives_events_outputs_and_estimates(settings: Settings) -> None:
    from reelflow import run_model, thumbnail, transcode, transcribe

    clip = generate_video(model="sim/video", latency_s=0.05)
    voice = generate_audio(model="sim/audio", latency_s=0.05)
    estimate = compose(clip, voice).estimate()
    assert [j["id"] for j in estimate["jobs"]] == ["video", "audio"] and estimate["cost_usd"] >= 0
    execution = compose(clip, voice).execute(settings=settings)
    assert execution.status == "queued" and execution.status() == "queued"  # the older call form still works
    execution.wait(timeout=30)
    assert execution.status == "succeeded" and f"{execution.status}" == "succeeded"
    assert [o.job for o in execution.outputs] == ["video", "audio"]
    events = list(execution.events())
    assert events[0]["type"] == "execution.created" and events[-1]["type"] == "execution.succeeded"
    assert all(isinstance(e["created_at"], str) and e["created_at"].endswith("Z") for e in events)
    plan = compose(
        thumbnail(clip, at=1.0), transcode(clip, format="webm"),
        transcribe(model="openai/whisper-1", audio=voice), run_model(model="replicate/a/b", input={"x": 1}),
    ).plan()  # fmt: skip
    by_type = {j["type"]: j["params"] for j in plan["jobs"]}
    assert by_type["thumbnail"] == {"video": "$video", "at": 1.0}
    assert by_type["transcode"] == {"input": "$video", "format": "webm"}
    assert by_type["transcribe"] == {"audio": "$audio"}
    assert by_type["run"] == {"input": {"x": 1}}


def test_wait_with_progress_off_a_terminal_prints_the_timeline_alone(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    execution = compose(generate_video(model="sim/video", latency_s=0.05, id="a-rather-long-job-name")).execute(
        settings=settings
    )
    execution.wait(progress=True, timeout=30)
    text = capsys.readouterr().out
    first = text.splitlines()[0]
    assert first.strip().startswith(f"execution {execution.id}")  # the title on a line of its own
    assert all(len(line) <= 200 for line in text.splitlines()) and "…" not in text
