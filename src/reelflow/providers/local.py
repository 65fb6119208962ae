"""The `local` provider: real media made with ffmpeg in the worker, no key and no cost.

It serves the `local/image`, `local/video` and `local/audio` models and the local job types
(`merge-video-audio`, `concat`, `captions`, `overlay`, `transcode`, `thumbnail`). The work happens in
`wait`; cancelling the awaiting task kills ffmpeg.
"""

from __future__ import annotations

import inspect
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from reelflow.providers.base import (
    Output,
    PermanentError,
    ProgressReporter,
    ProgressUpdate,
    ProviderResult,
    Task,
)

from .. import media
from .catalog import OPERATIONS, Catalog, ParamSpec, default_catalog
from .info import BUILTIN_INFO
from .local_sizes import LONG_SIDE as LONG_SIDE
from .local_sizes import RESOLUTIONS as RESOLUTIONS
from .local_sizes import image_size as image_size
from .local_sizes import video_size as video_size

Handler = Callable[["LocalProvider", Task], Awaitable[ProviderResult]]


class LocalProvider:
    """Makes and edits media locally with ffmpeg (see media.py)."""

    info = BUILTIN_INFO["local"]
    name = info.name
    catalog: Catalog | None = None
    """The catalog whose local models' parameter bounds the handlers read (set by the worker's provider table,
    like the HTTP adapters'); None: the process's default one."""

    async def submit(self, task: Task) -> str:
        """A fresh id; nothing starts until `wait`."""
        return f"local-{uuid.uuid4().hex}"

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        """Do the work into `task.workdir` and return the produced file."""
        handler = self._handler(task)
        await _report(report, 0.0)
        told = media.tool_log.set(task.log.add)  # each ffmpeg run goes to the job's log (see `media.tool_log`)
        try:
            result = await handler(self, task)
        except media.MediaError as exc:
            message = str(exc)
            if not message.startswith(task.type):
                message = f"{task.type}: {message}"
            task.log.add(f"failed: {message}")
            raise PermanentError(message) from exc
        finally:
            media.tool_log.reset(told)
        await _report(report, 100.0)
        return result

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Nothing to do: the worker cancels the awaiting task, which kills ffmpeg."""

    def _handler(self, task: Task) -> Handler:
        if task.model is not None:
            handler = _MODELS.get(task.model)
            if handler is None:
                raise PermanentError(f"{task.type}: unknown local model {task.model!r}")
            expected = _MODEL_TYPES[task.model]
            if task.type != expected:
                raise PermanentError(f"{task.type}: model {task.model!r} only does {expected}")
            return handler
        local = _JOB_TYPES.get(task.type)
        if local is None:
            raise PermanentError(f"{task.type}: unknown job type for the local provider")
        return local

    # ---------------------------------------------------------------------------------------------
    # local/image, local/video, local/audio

    async def _generate_image(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        prompt = p.text("prompt", required=True) or ""
        width, height = image_size(p.integer("width"), p.integer("height"), p.choice("aspect_ratio"))
        seed = p.integer("seed")
        out = _output(task, ".png")
        await media.make_image(out, prompt=prompt, width=width, height=height, seed=seed)
        return _result(out, {"width": width, "height": height, "seed": seed})

    async def _generate_video(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        prompt = p.text("prompt")
        image = p.optional_input("image")
        if prompt is None and image is None:
            raise PermanentError(f"{task.type}: give a prompt or an image")
        duration = p.number("duration")
        fps = p.integer("fps") or 24
        width, height = video_size(
            p.choice("aspect_ratio"), p.choice("resolution"), p.integer("width"), p.integer("height")
        )
        out = _output(task, ".mp4")
        await media.make_video(
            out,
            prompt=prompt,
            image=image,
            duration=duration if duration is not None else 5.0,
            width=width,
            height=height,
            fps=fps,
            seed=p.integer("seed"),
        )
        return _result(out, {"width": width, "height": height, "fps": fps})

    async def _generate_audio(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        text = p.text("text")
        if text is None:
            text = p.text("prompt")
        duration = p.number("duration")
        if text is None and duration is None:
            raise PermanentError(f"{task.type}: give text (or a prompt) or a duration")
        out = _output(task, ".m4a")
        await media.make_audio(out, text=text, duration=duration, voice=p.text("voice"))
        return _result(out, {"speech": media.speech_available() and bool(text and text.strip())})

    # ---------------------------------------------------------------------------------------------
    # local job types

    async def _merge(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        video, audio = p.input("video"), p.input("audio")
        out = _output(task, ".mp4")
        await media.merge_video_audio(video, audio, out)
        return _result(out)

    async def _concat(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        videos = p.input_list("videos")
        out = _output(task, ".mp4")
        await media.concat(
            videos,
            out,
            width=p.integer("width"),
            height=p.integer("height"),
            fps=p.integer("fps"),
        )
        return _result(out, {"parts": len(videos)})

    async def _captions(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        video = p.input("video")
        sources = [k for k in ("text", "segments", "srt", "words") if task.params.get(k) is not None]
        if len(sources) != 1:
            got = ", ".join(sources) or "none"
            raise PermanentError(f"captions: give exactly one of text, segments, srt, words (got {got})")
        words = task.params.get("words")
        if isinstance(words, dict):  # a transcribe result passed whole: {"words": [...], ...}
            words = words.get("words")
        segments = task.params.get("segments")
        for name, value in (("words", words), ("segments", segments)):
            if value is not None and not isinstance(value, list):
                raise PermanentError(f"captions: parameter '{name}' must be a list")
        box = task.params.get("box", True)
        if not isinstance(box, bool):
            raise PermanentError("captions: parameter 'box' must be true or false")
        out = _output(task, ".mp4")
        await media.captions(
            video,
            out,
            text=p.text("text"),
            segments=segments,
            srt=p.text("srt"),
            words=words,
            position=p.choice("position") or "bottom",
            font_size=p.integer("font_size"),
            color=p.text("color") or "white",
            box=box,
        )
        return _result(out)

    async def _overlay(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        base, over = p.input("video"), p.input("overlay")
        out = _output(task, ".mp4")
        opacity = p.number("opacity")
        await media.overlay(
            base,
            over,
            out,
            position=p.choice("position") or "top-right",
            x=p.integer("x"),
            y=p.integer("y"),
            scale=p.number("scale"),
            start=p.number("start") or 0.0,
            end=p.number("end"),
            opacity=1.0 if opacity is None else opacity,
        )
        return _result(out)

    async def _transcode(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        given = [k for k in ("video", "input") if task.params.get(k) is not None or k in task.inputs]
        if len(given) > 1:
            raise PermanentError("transcode: give only one of video or input (got video and input)")
        source = p.input(given[0] if given else "video")
        fmt = p.choice("format") or "mp4"
        out = _output(task, f".{fmt}")
        await media.transcode(
            source,
            out,
            width=p.integer("width"),
            height=p.integer("height"),
            fps=p.integer("fps"),
            crf=p.integer("crf"),
        )
        return _result(out, {"format": fmt})

    async def _thumbnail(self, task: Task) -> ProviderResult:
        p = _Params(task, self.catalog)
        video = p.input("video")
        fmt = p.choice("format") or "jpg"
        out = _output(task, ".png" if fmt == "png" else ".jpg")
        await media.thumbnail(video, out, at=p.number("at"), width=p.integer("width"))
        return _result(out)


_MODELS: dict[str, Handler] = {
    "local/image": LocalProvider._generate_image,
    "local/video": LocalProvider._generate_video,
    "local/audio": LocalProvider._generate_audio,
}
_MODEL_TYPES = {
    "local/image": "generate-image",
    "local/video": "generate-video",
    "local/audio": "generate-audio",
}
_JOB_TYPES: dict[str, Handler] = {
    "merge-video-audio": LocalProvider._merge,
    "concat": LocalProvider._concat,
    "captions": LocalProvider._captions,
    "overlay": LocalProvider._overlay,
    "transcode": LocalProvider._transcode,
    "thumbnail": LocalProvider._thumbnail,
}
LOCAL_JOB_TYPES = tuple(_JOB_TYPES)


# -------------------------------------------------------------------------------------------------
# helpers


async def _report(report: ProgressReporter, percent: float) -> None:
    """Tell progress; `report` may be sync or async."""
    outcome = report(ProgressUpdate(phase="running", percent=percent))
    if inspect.isawaitable(outcome):
        await outcome


def _output(task: Task, suffix: str) -> Path:
    """The output path in the task's workdir, named after the job."""
    stem = task.job_id if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", task.job_id or "") else "output"
    return task.workdir / f"{stem}{suffix}"


def _result(out: Path, fields: dict[str, Any] | None = None) -> ProviderResult:
    kept = {k: v for k, v in (fields or {}).items() if v is not None}
    content_type = media.CONTENT_TYPES.get(out.suffix.lower(), "application/octet-stream")
    return ProviderResult(outputs=[Output(path=out, content_type=content_type)], fields=kept, cost_usd=0.0)


def _specs(task: Task, catalog: Catalog | None) -> dict[str, ParamSpec]:
    """The catalog's parameter specs of the task's operation or local model: the bounds the plan was checked with
    (`catalog`'s, the process's default catalog when None)."""
    if task.model is not None:
        model = (catalog or default_catalog()).get(task.model)
        return dict(model.params) if model is not None else {}
    return dict(OPERATIONS.get(task.type, {}))


class _Params:
    """Typed access to a task's params with errors that name the job type and the parameter.

    Bounds and choices come from the catalog's spec of the parameter (see `_specs`), never from here."""

    def __init__(self, task: Task, catalog: Catalog | None = None) -> None:
        self.task = task
        self.params = task.params
        self.specs = _specs(task, catalog)

    def _spec(self, name: str) -> ParamSpec:
        spec = self.specs.get(name)
        if spec is None:  # pragma: no cover - a handler reads a parameter the catalog lacks
            raise self._fail(f"parameter '{name}' is not in the catalog")
        return spec

    def _fail(self, message: str) -> PermanentError:
        return PermanentError(f"{self.task.type}: {message}")

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.params.get(name)
        if value is None:
            if required:
                raise self._fail(f"parameter '{name}' is required")
            return None
        if not isinstance(value, str):
            raise self._fail(f"parameter '{name}' must be a string")
        return value

    def number(self, name: str) -> float | None:
        spec = self._spec(name)
        value = self.params.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self._fail(f"parameter '{name}' must be a number")
        try:
            number = float(value)
        except ValueError:
            raise self._fail(f"parameter '{name}' must be a number") from None
        if not math.isfinite(number):
            raise self._fail(f"parameter '{name}' must be a finite number")
        if spec.exclusive_minimum is not None and number <= spec.exclusive_minimum:
            raise self._fail(f"parameter '{name}' must be greater than {spec.exclusive_minimum:g} (got {number:g})")
        if spec.minimum is not None and number < spec.minimum:
            raise self._fail(f"parameter '{name}' must be at least {spec.minimum:g} (got {number:g})")
        if spec.maximum is not None and number > spec.maximum:
            raise self._fail(f"parameter '{name}' must be at most {spec.maximum:g} (got {number:g})")
        return number

    def integer(self, name: str) -> int | None:
        number = self.number(name)
        if number is None:
            return None
        if number != int(number):
            raise self._fail(f"parameter '{name}' must be a whole number")
        return int(number)

    def choice(self, name: str) -> str | None:
        value = self.text(name)
        allowed = [str(c) for c in self._spec(name).choices or ()]
        if value is not None and value not in allowed:
            raise self._fail(f"parameter '{name}' must be one of {', '.join(allowed)} (got {value!r})")
        return value

    def _stored(self, key: str) -> Path:
        path = self.task.inputs.get(key)
        if path is None:
            raise self._fail(f"input '{key}' is not a stored artifact")
        if not Path(path).is_file():
            raise self._fail(f"input '{key}' is missing from the worker's disk")
        return Path(path)

    def input(self, name: str) -> Path:
        """The local file for a required media parameter."""
        if self.params.get(name) is None and name not in self.task.inputs:
            raise self._fail(f"parameter '{name}' is required")
        return self._stored(name)

    def optional_input(self, name: str) -> Path | None:
        if self.params.get(name) is None and name not in self.task.inputs:
            return None
        return self._stored(name)

    def input_list(self, name: str) -> list[Path]:
        """The local files for a list-valued media parameter (`name[0]`, `name[1]`, ...)."""
        value = self.params.get(name)
        if value is None:
            count = sum(1 for k in self.task.inputs if re.fullmatch(rf"{re.escape(name)}\[\d+\]", k))
        elif isinstance(value, list):
            count = len(value)
        else:
            raise self._fail(f"parameter '{name}' must be a list")
        if count == 0:
            raise self._fail(f"parameter '{name}' needs at least one item")
        return [self._stored(f"{name}[{i}]") for i in range(count)]
