"""Local operations' limits checked at submission, from what a plan states literally.

A value is known when the plan writes it, or when it follows from jobs of the same plan whose outputs are
known by their parameters (a `local/video` clip of 60 s at 1080p and 60 fps, a `concat` of such clips...).
A job is refused only when its work is over the budget for certain: the sum of the known durations is a
lower bound, unknown sizes are never guessed. Whatever is left unknown here is checked at run time, after
ffmpeg probed the inputs and before it starts (media.py). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ErrorItem
from .media_limits import MediaLimits, caption_problems, concat_count_problem, work_message
from .providers.catalog import is_reference

LOCAL_VIDEO_DEFAULTS = {"fps": 24.0, "duration": 5.0}
"""What `local/video` makes when the plan does not say (see LocalProvider._generate_video)."""
STILL_SECONDS = 3.0
"""How long a still lasts in a concat (media.concat's image_duration)."""


@dataclass(frozen=True)
class PlanJob:
    """The parts of one plan job these checks read; `loc` is where its params are (for error locations)."""

    id: str
    type: str
    model: str | None
    params: Mapping[str, Any]
    loc: Sequence[str | int]


@dataclass(frozen=True)
class Shape:
    """What is known of a job's primary output; None where it is not known at submission."""

    width: float | None = None
    height: float | None = None
    fps: float | None = None
    duration: float | None = None
    still: bool = False

    @property
    def pixels(self) -> float | None:
        return self.width * self.height if self.width and self.height else None


UNKNOWN = Shape()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) < 1e12 else None  # NaN and absurd values: unknown


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class _Shapes:
    """Shapes of a plan's jobs' outputs, each inferred once."""

    def __init__(self, jobs: Sequence[PlanJob]) -> None:
        self.jobs = {j.id: j for j in jobs}
        self.known: dict[str, Shape] = {}
        self.visiting: set[str] = set()

    def of_value(self, value: Any) -> Shape:
        """The shape of a parameter's value: a reference to another job's primary output, else unknown."""
        if isinstance(value, str) and is_reference(value) and "." not in value:
            return self.of_job(value[1:])
        return UNKNOWN

    def of_job(self, job_key: str) -> Shape:
        if job_key in self.known:
            return self.known[job_key]
        job = self.jobs.get(job_key)
        if job is None or job_key in self.visiting:  # unknown job or a cycle: reported elsewhere
            return UNKNOWN
        self.visiting.add(job_key)
        try:
            shape = self._infer(job)
        finally:
            self.visiting.discard(job_key)
        self.known[job_key] = shape
        return shape

    def _infer(self, job: PlanJob) -> Shape:
        p = job.params
        if job.type == "generate-image":
            if job.model == "local/image":
                from .providers.local_sizes import image_size

                try:
                    w, h = image_size(_int(p.get("width")), _int(p.get("height")), _text(p.get("aspect_ratio")))
                except Exception:  # a bad value: its own check reports it
                    return Shape(still=True)
                return Shape(width=w, height=h, still=True)
            return Shape(still=True)
        if job.type == "generate-video":
            duration = _number(p.get("duration"))
            if job.model == "local/video":
                from .providers.local_sizes import video_size

                try:
                    w, h = video_size(
                        _text(p.get("aspect_ratio")),
                        _text(p.get("resolution")),
                        _int(p.get("width")),
                        _int(p.get("height")),
                    )
                except Exception:
                    return Shape(duration=duration)
                fps = _number(p.get("fps")) or LOCAL_VIDEO_DEFAULTS["fps"]
                return Shape(w, h, fps, duration if duration is not None else LOCAL_VIDEO_DEFAULTS["duration"])
            return Shape(duration=duration)
        if job.type in ("merge-video-audio", "captions", "overlay"):
            return self.of_value(p.get("video"))
        if job.type == "transcode":
            if p.get("format") in ("m4a", "mp3", "wav"):  # audio only: no pixels to encode
                return UNKNOWN
            src = self.of_value(p.get("video") if p.get("video") is not None else p.get("input"))
            out_w, out_h = _fit(src, _number(p.get("width")), _number(p.get("height")))
            gif = p.get("format") == "gif"
            out_fps = _number(p.get("fps")) or (min(12.0, src.fps or 12.0) if gif else src.fps)
            return Shape(out_w, out_h, out_fps, src.duration, src.still)
        if job.type == "concat":
            return self._concat(job)[0]
        return UNKNOWN

    def _concat(self, job: PlanJob) -> tuple[Shape, list[Shape], float]:
        """The concat's output shape, its inputs' shapes, and the sum of the inputs' known durations."""
        p = job.params
        videos = p.get("videos")
        parts = [self.of_value(v) for v in videos] if isinstance(videos, list) else []
        first = parts[0] if parts else UNKNOWN
        w, h = _fit(first, _number(p.get("width")), _number(p.get("height")))
        fps = _number(p.get("fps"))
        if fps is None:  # the first moving input's rate, or 24 when every input is a still
            for part in parts:
                if part.still:
                    continue
                fps = part.fps
                break
            else:
                fps = 24.0 if parts else None
        known_s = sum(STILL_SECONDS if s.still else (s.duration or 0.0) for s in parts)
        all_known = all(s.still or s.duration is not None for s in parts)
        return Shape(w, h, fps, known_s if all_known and parts else None), parts, known_s


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _fit(src: Shape, width: float | None, height: float | None) -> tuple[float | None, float | None]:
    """Output size as media.edits._fit_size makes it; None where it depends on what is unknown."""
    if width and height:
        return width, height
    if (width or height) and src.width and src.height:
        if width:
            return width, width * src.height / src.width
        assert height is not None
        return height * src.width / src.height, height
    if width or height:
        return None, None
    return src.width, src.height


def _work(what: str, amount: float | None, limits: MediaLimits) -> str | None:
    return work_message(what, amount, limits) if amount else None


def _shape_text(shape: Shape, seconds: float) -> str:
    return f"{shape.width:.0f}x{shape.height:.0f} at {shape.fps:g} fps for {seconds:,.6g} s"


def plan_problems(jobs: Sequence[PlanJob], limits: MediaLimits) -> list[ErrorItem]:
    """Every local job of a plan over a limit for certain, each naming the job and the parameter."""
    shapes = _Shapes(jobs)
    problems: list[ErrorItem] = []

    def add(job: PlanJob, param: str, message: str) -> None:
        problems.append(ErrorItem([*job.loc, param], f"job '{job.id}': {message}"))

    for job in jobs:
        p = job.params
        if job.type == "concat":
            videos = p.get("videos")
            if isinstance(videos, list) and (too_many := concat_count_problem(len(videos), limits)):
                add(job, "videos", too_many)
                continue
            out, parts, known_s = shapes._concat(job)
            if out.pixels and out.fps:
                shape = _shape_text(out, known_s)
                if msg := _work(f"the output ({shape})", out.pixels * out.fps * known_s, limits):
                    add(job, "videos", msg)
                    continue
            decoded = 0.0
            for part in parts:
                if part.pixels and part.still:
                    decoded += part.pixels * STILL_SECONDS * (out.fps or 24.0)
                elif part.pixels and part.fps and part.duration:
                    decoded += part.pixels * part.fps * part.duration
            if msg := _work("decoding its inputs", decoded, limits):
                add(job, "videos", msg)
        elif job.type == "captions":
            for param, problem in caption_problems(
                srt=p.get("srt"), text=p.get("text"), segments=p.get("segments"), words=p.get("words"), limits=limits
            ):
                add(job, param, problem)
            _check_whole(job, "video", shapes.of_value(p.get("video")), limits, add)
        elif job.type == "overlay":
            _check_whole(job, "video", shapes.of_value(p.get("video")), limits, add)
        elif job.type == "transcode":
            _check_whole(job, "input", shapes.of_job(job.id), limits, add)
        elif job.type == "generate-video" and job.model == "local/video":
            _check_whole(job, "duration", shapes.of_job(job.id), limits, add)
    return problems


def _check_whole(job: PlanJob, param: str, shape: Shape, limits: MediaLimits, add: Any) -> None:
    """An operation that encodes a whole video of `shape`: over the budget when that is known to be so."""
    if shape.pixels and shape.fps and shape.duration and not shape.still:
        text = _shape_text(shape, shape.duration)
        if msg := _work(f"the output ({text})", shape.pixels * shape.fps * shape.duration, limits):
            add(job, param, msg)


def plan_jobs_of(raw_jobs: Sequence[tuple[int, Any]]) -> list[PlanJob]:
    """PlanJobs of the well-formed jobs among (position, raw job) pairs."""
    out = []
    for pos, raw in raw_jobs:
        if not isinstance(raw, Mapping):
            continue
        job_key, jtype, model, params = raw.get("id"), raw.get("type"), raw.get("model"), raw.get("params", {})
        if isinstance(job_key, str) and isinstance(jtype, str) and isinstance(params, Mapping):
            out.append(
                PlanJob(job_key, jtype, model if isinstance(model, str) else None, params, ["jobs", pos, "params"])
            )
    return out


__all__ = ["PlanJob", "Shape", "plan_jobs_of", "plan_problems"]
