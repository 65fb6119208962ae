"""The local operations' parameters (issue 15, item 8): one spec in the catalog that the plan check, the worker,
`/v1/schema/plan` and docs/job-types.md all read, so that what passes at submission also runs."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reelflow import media
from reelflow.engine.ownership import local_input_problems
from reelflow.engine.scheduler import Engine
from reelflow.errors import PlanError
from reelflow.media import filters
from reelflow.plan import parse_plan, plan_json_schema
from reelflow.providers.base import PermanentError, Task
from reelflow.providers.catalog import BUILTIN_MODELS, OPERATIONS, ParamSpec, check_params, operations
from reelflow.providers.catalog.docs import sync
from reelflow.providers.local import LocalProvider, _Params
from reelflow.storage import LocalStorage

W, H = 320, 180
ARTIFACT = "http://127.0.0.1:8000/v1/artifacts/ab/" + "0" * 64 + ".mp4"
LOCAL_MODELS = {m.id: m for m in BUILTIN_MODELS if m.provider == "local"}


def submit_errors(job: dict[str, Any]) -> list[str]:
    """The messages parse_plan gives for a plan of `job` after two jobs `a` and `b` ([] when it passes)."""
    try:
        sources = [{"id": k, "type": "generate-video", "model": "sim/video"} for k in ("a", "b")]
        parse_plan({"jobs": [*sources, {"id": "j", **job}]})
    except PlanError as exc:
        return [e.msg for e in exc.errors]
    return []


def task(job_type: str, params: dict[str, Any], model: str | None = None, **inputs: Path) -> Task:
    return Task(
        execution_id="ex1", job_id="j", type=job_type, model=model, params=params, attempt=1,
        scratch=Path("/nonexistent"), inputs=dict(inputs),
    )  # fmt: skip


def worker_reads(job_type: str, name: str, value: Any, model: str | None = None) -> str | None:
    """The worker's own check of one numeric or choice parameter: None when it accepts the value, else why not."""
    spec = (LOCAL_MODELS[model].params if model else OPERATIONS[job_type])[name]
    p = _Params(task(job_type, {name: value}, model))
    try:
        if spec.choices is not None:
            p.choice(name)
        elif spec.type == "integer":
            p.integer(name)
        else:
            p.number(name)
    except PermanentError as exc:
        return str(exc)
    return None


def _bounded() -> list[tuple[str, str | None, str, ParamSpec]]:
    out = [(op, None, name, spec) for op, specs in OPERATIONS.items() for name, spec in specs.items()]
    for model in LOCAL_MODELS.values():
        out += [(model.types[0], model.id, name, spec) for name, spec in model.params.items()]
    return [row for row in out if row[3].type in ("number", "integer") or row[3].choices is not None]


# --- one source of truth: the worker takes exactly what the submission check takes ---------------


@pytest.mark.parametrize(
    ("job_type", "model", "name", "spec"), _bounded(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_worker_and_the_plan_check_agree_on_every_bound_and_choice(
    job_type: str, model: str | None, name: str, spec: ParamSpec
) -> None:
    values: list[Any] = list(spec.choices or [])
    if spec.choices is not None:
        values.append("nonsense")
    for bound in (spec.minimum, spec.maximum, spec.exclusive_minimum):
        if bound is not None:
            step = 1 if spec.type == "integer" else 0.5
            values += [bound - step, bound, bound + step]
    if spec.type == "integer":
        values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    need = {"prompt": "x"} if model in ("local/image", "local/video") else {"text": "x"} if model else {}
    for value in values:
        params = {**need, name: value}
        if job_type in OPERATIONS:
            params |= {p: "$src" for p, s in OPERATIONS[job_type].items() if s.required}
            params |= {"video": "$src"} if job_type in ("transcode", "captions") else {}
            params |= {"text": "x"} if job_type == "captions" and name != "text" else {}
        specs = LOCAL_MODELS[model].params if model else OPERATIONS[job_type]  # the per-parameter checks, no rules
        errors = check_params(specs, params, extra_allowed=True, loc_prefix=(), job_key="j", allow_refs=True)
        refused = [e.msg for e in errors if e.msg.startswith(f"job 'j': {name} ")]
        assert (worker_reads(job_type, name, value, model) is None) == (not refused), (name, value, refused)


@pytest.mark.parametrize(
    ("job_type", "params"),
    [
        ("concat", {"videos": ["$a"], "width": 4000}),  # was 16-4096 at submission, 16-3840 in the worker
        ("transcode", {"input": "$a", "height": 4000}),
        ("captions", {"video": "$a", "text": "x", "font_size": 300}),  # was 8-200 vs 4-400
        ("overlay", {"video": "$a", "overlay": "$b", "x": -20, "y": -5}),  # was >=0 vs -8192..8192
        ("overlay", {"video": "$a", "overlay": "$b", "scale": 2}),  # was <=1 vs <=4
        ("thumbnail", {"video": "$a", "format": "jpeg"}),  # refused at submission, worked in the worker
        ("transcode", {"video": "$a"}),  # transcode takes video like the others
        ("transcode", {"input": "$a"}),  # and still input
    ],
)
def test_what_the_worker_runs_passes_submission_and_the_reverse(job_type: str, params: dict[str, Any]) -> None:
    plan_params = dict(params)
    errors = submit_errors({"type": job_type, "params": plan_params})
    if job_type == "concat" or (job_type == "transcode" and "height" in params):
        assert errors == [
            f"job 'j': {next(k for k in ('width', 'height') if k in params)} must be at most 3840 (got 4000)"
        ]
        side = "width" if "width" in params else "height"
        assert worker_reads(job_type, side, 4000) == f"{job_type}: parameter '{side}' must be at most 3840 (got 4000)"
        assert worker_reads(job_type, side, 3840) is None and not submit_errors(
            {"type": job_type, "params": {**params, side: 3840}}
        )
    else:
        assert errors == []


def test_the_worker_refuses_numbers_that_are_not_finite() -> None:
    for value in ("nan", "inf", float("nan")):
        assert worker_reads("overlay", "x", value) == "overlay: parameter 'x' must be a finite number"
    assert worker_reads("generate-image", "seed", "inf", "local/image") is not None


def test_crf_takes_what_the_worker_and_ffmpeg_take() -> None:
    """VP9 takes crf up to 63, as the worker and ffmpeg do (the plan check used to stop at 51)."""
    assert submit_errors({"type": "transcode", "params": {"video": "$a", "format": "webm", "crf": 60}}) == []
    assert submit_errors({"type": "transcode", "params": {"video": "$a", "crf": 64}}) == [
        "job 'j': crf must be at most 63 (got 64)"
    ]
    assert worker_reads("transcode", "crf", 64) == "transcode: parameter 'crf' must be at most 63 (got 64)"


def test_local_video_takes_width_and_height() -> None:
    assert (
        submit_errors({"type": "generate-video", "model": "local/video", "params": {"prompt": "x", "width": 640}}) == []
    )
    assert submit_errors(
        {"type": "generate-video", "model": "local/video", "params": {"prompt": "x", "height": 5000}}
    ) == ["job 'j': height must be at most 3840 (got 5000)"]


def test_transcode_takes_video_or_input_but_not_both() -> None:
    both = submit_errors({"type": "transcode", "params": {"video": "$a", "input": "$b"}})
    assert both == ["job 'j': give only one of video or input (got video and input)"]
    assert submit_errors({"type": "transcode", "params": {}}) == ["job 'j': one of video or input is required"]
    assert submit_errors({"type": "thumbnail", "params": {"video": "$a", "time": 1}}) == [
        "job 'j': unknown parameter 'time' for thumbnail"
    ]


async def test_transcode_runs_with_video(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    await media.make_video(clip, prompt="clip", duration=1.0, width=W, height=H)
    for name in ("video", "input"):
        t = Task(
            execution_id="ex1", job_id=f"t-{name}", type="transcode", model=None,
            params={name: ARTIFACT, "format": "webm"}, attempt=1, scratch=tmp_path / name, inputs={name: clip},
        )  # fmt: skip
        provider = LocalProvider()
        result = await provider.wait(t, await provider.submit(t), lambda _: None)
        assert result.outputs[0].path is not None and result.outputs[0].path.suffix == ".webm"
    both = task("transcode", {"video": ARTIFACT, "input": ARTIFACT}, video=clip, input=clip)
    with pytest.raises(PermanentError, match="give only one of video or input"):
        await LocalProvider().wait(both, "x", lambda _: None)


# --- media inputs must be stored artifacts, refused at submission ----------------------------------


def test_a_link_that_is_not_one_of_our_artifacts_is_refused_at_submission(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000")
    plan = parse_plan(
        {
            "jobs": [
                {"id": "cap", "type": "captions", "params": {"video": "https://cdn.example/v.mp4", "text": "hi"}},
                {"id": "join", "type": "concat", "params": {"videos": [ARTIFACT, "http://x.example/b.mp4"]}},
                {"id": "move", "type": "generate-video", "model": "local/video",
                 "params": {"image": "https://x.example/i.png"}},
                {"id": "ok", "type": "thumbnail", "params": {"video": ARTIFACT}},
                {"id": "ref", "type": "transcode", "params": {"video": "$ok"}},
            ]
        }
    )  # fmt: skip
    problems = [(e.loc, e.msg) for e in local_input_problems(plan, storage)]
    note = "must be a `$job` reference or a link to one of your stored artifacts"
    assert problems == [
        (["jobs", 0, "params", "video"],
         f"job 'cap': video {note}, since captions runs in the worker and reads stored files only "
         "(got 'https://cdn.example/v.mp4')"),
        (["jobs", 1, "params", "videos", 1],
         f"job 'join': videos[1] {note}, since concat runs in the worker and reads stored files only "
         "(got 'http://x.example/b.mp4')"),
        (["jobs", 2, "params", "image"],
         f"job 'move': image {note}, since generate-video runs in the worker and reads stored files only "
         "(got 'https://x.example/i.png')"),
    ]  # fmt: skip


# --- captions without a font fail permanently ------------------------------------------------------


async def test_captions_without_a_font_fail_the_job_permanently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = tmp_path / "clip.mp4"
    await media.make_video(clip, prompt="clip", duration=1.0, width=W, height=H)
    monkeypatch.setattr(filters, "find_font", lambda: None)
    t = Task(
        execution_id="ex1", job_id="cap", type="captions", model=None, params={"video": ARTIFACT, "text": "hello"},
        attempt=1, scratch=tmp_path / "s", inputs={"video": clip},
    )  # fmt: skip
    with pytest.raises(PermanentError, match=r"^captions: no font to draw captions with: install one .*fonts-dejavu"):
        await LocalProvider().wait(t, "x", lambda _: None)


# --- /v1/schema/plan: per-type params -------------------------------------------------------------


def test_the_plan_schema_has_each_operations_params_and_is_valid_json_schema() -> None:
    schema = plan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for op in operations():
        definition = schema["$defs"][f"params.{op.type}"]
        assert set(definition["properties"]) == set(op.params)
        assert definition["additionalProperties"] is False
    thumb = schema["$defs"]["params.thumbnail"]["properties"]["at"]
    assert thumb["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 86400}
    validator = jsonschema.Draft202012Validator(schema)

    def errors(job: dict[str, Any]) -> list[str]:
        return [e.message for e in validator.iter_errors({"jobs": [{"id": "j", **job}]})]

    assert errors({"type": "thumbnail", "params": {"video": "$a", "at": 2.5, "format": "jpeg"}}) == []
    assert errors({"type": "thumbnail", "params": {"video": "$a", "time": 2}})  # unknown parameter
    assert errors({"type": "transcode", "params": {"input": "$a", "crf": 64}})
    assert errors({"type": "transcode", "params": {"video": "$a", "input": "$b"}})
    assert errors({"type": "transcode", "params": {"video": "$a", "crf": "$probe.crf"}}) == []  # a reference
    assert errors({"type": "generate-video", "model": "local/video", "params": {"anything": 1}}) == []


def test_the_job_types_doc_lists_every_operations_parameters() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "job-types.md").read_text(encoding="utf-8")
    assert all(f"<!-- params:{op.type} -->" in doc for op in operations())
    assert sync(doc) == doc  # regenerate: python -m reelflow.providers.catalog.docs docs/job-types.md
    assert "| `at` | number |  | 0–86400 |" in doc and "| `crf` | integer |  | 0–63 |" in doc


# --- the local image: no seam -----------------------------------------------------------------------


def _largest_step(raw: bytes, width: int, height: int, centre: tuple[int, int], radius: int) -> int:
    """The largest colour difference between neighbouring pixels, away from the gradient's centre."""

    def px(x: int, y: int) -> bytes:
        i = (y * width + x) * 3
        return raw[i : i + 3]

    best = 0
    for y in range(height - 1):
        for x in range(width - 1):
            if math.hypot(x - centre[0], y - centre[1]) < radius:
                continue
            a, b, c = px(x, y), px(x + 1, y), px(x, y + 1)
            best = max(best, sum(abs(a[k] - b[k]) for k in range(3)), sum(abs(a[k] - c[k]) for k in range(3)))
    return best


@pytest.mark.parametrize("seed", [27, 53])  # a circular gradient centred near the right edge
async def test_the_local_image_has_no_seam_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(filters, "find_font", lambda: None)  # no text: only the gradient
    digest = filters._seeded("A sunset over the sea", seed)
    assert re.search(r"type=circular", filters._gradient_source(digest, W, H, fps=1))
    out = tmp_path / "still.png"
    await media.make_image(out, prompt="A sunset over the sea", width=W, height=H, seed=seed)
    proc = await asyncio.create_subprocess_exec(
        media.ffmpeg_exe(), "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    raw, _ = await proc.communicate()
    centre = (digest[12] * W // 255, digest[13] * H // 255)
    assert _largest_step(raw, W, H, centre, radius=12) < 40  # the seam was a step of 230 and more


def test_the_plan_limits_read_transcodes_video_as_they_read_input() -> None:
    """The work budget at submission sees the source's shape through `video` as it does through `input`."""
    from reelflow.local_limits import _Shapes, plan_jobs_of

    for name in ("video", "input"):
        still = {"id": "s", "type": "generate-image", "model": "local/image", "params": {"width": 640, "height": 360}}
        copy = {"id": "c", "type": "transcode", "params": {name: "$s", "width": 320}}
        shapes = _Shapes(plan_jobs_of([(0, still), (1, copy)]))
        shape = shapes.of_job("c")
        assert (shape.width, shape.height) == (320, 180), name


async def test_the_engine_refuses_an_outside_link_before_storing_anything(engine: Engine) -> None:
    """API, CLI and SDK submit through Engine.submit: the refusal names the job and the parameter."""
    plan = {"jobs": [{"id": "copy", "type": "transcode", "params": {"video": "https://cdn.example/a.mp4"}}]}
    with pytest.raises(PlanError) as caught:
        await engine.submit(plan)
    assert [(e.loc, e.msg) for e in caught.value.errors] == [
        (
            ["jobs", 0, "params", "video"],
            "job 'copy': video must be a `$job` reference or a link to one of your stored artifacts, since "
            "transcode runs in the worker and reads stored files only (got 'https://cdn.example/a.mp4')",
        )
    ]
    assert (await engine.store.list_executions("default")).data == []


def test_an_overlay_ending_before_it_starts_is_refused_at_submission() -> None:
    """The worker refused `end <= start` at run time; the plan check let it through."""
    overlay = {"type": "overlay", "params": {"video": "$a", "overlay": "$b", "start": 3, "end": 2}}
    assert submit_errors(overlay) == ["job 'j': end must be greater than start (got start 3, end 2)"]
    overlay["params"] = {"video": "$a", "overlay": "$b", "end": 0}  # start defaults to 0
    assert submit_errors(overlay) == ["job 'j': end must be greater than start (got start 0, end 0)"]
    overlay["params"] = {"video": "$a", "overlay": "$b", "start": 1, "end": "$a.duration"}  # known at run time
    assert submit_errors(overlay) == []


def test_a_caption_colour_ffmpeg_cannot_read_is_refused_at_submission() -> None:
    """The worker refused such a colour at run time; the plan check took any string."""
    captions = {"type": "captions", "params": {"video": "$a", "text": "x", "color": "light blue"}}
    errors = submit_errors(captions)
    assert len(errors) == 1 and errors[0].startswith("job 'j': color must match ") and "(got 'light blue')" in errors[0]
    for fine in ("yellow", "#ffcc00", "#ffcc0080", "white@0.5", "0xFFCC00"):
        captions["params"] = {"video": "$a", "text": "x", "color": fine}
        assert submit_errors(captions) == [], fine
