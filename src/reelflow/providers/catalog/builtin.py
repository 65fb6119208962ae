"""The built-in catalog entries: local operations (ffmpeg in the worker), the local and simulated models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import ASPECT_RATIOS, MODEL_TYPES, ModelSpec, OperationSpec, ParamRule, ParamSpec, Price, is_reference

# --- parameter building blocks -------------------------------------------------------------------


def _prompt(max_length: int = 2000, required: bool = False) -> ParamSpec:
    return ParamSpec(type="string", required=required, max_length=max_length, description="What to make.")


def _side(name: str, more: str = "") -> ParamSpec:
    return ParamSpec(type="integer", minimum=16, maximum=4096, description=f"Output {name} in pixels{more}.")


def _fps() -> ParamSpec:
    return ParamSpec(type="integer", minimum=1, maximum=60, description="Frames per second.")


_SEED = ParamSpec(type="integer", minimum=0, description="Random seed, for repeatable output.")
_ASPECT = ParamSpec(type="string", choices=ASPECT_RATIOS, description="Shape of the output.")

# --- local operations (ffmpeg in the worker, no model) -------------------------------------------
# The one statement of every operation's parameters: the plan check at submission, `/v1/schema/plan`,
# docs/job-types.md and the worker (providers/local.py reads its bounds and choices from here) all use it.

MEDIA_INPUT_NOTE = "a `$job` reference or a link to one of your stored artifacts"
"""What a media input of a local operation (or a local model) accepts: ffmpeg reads only stored files."""


COLOR_PATTERN = r"[A-Za-z]+(@[0-9.]+)?|(#|0x)[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?(@[0-9.]+)?"
"""A colour ffmpeg's drawtext takes: a name or hex digits, with an optional `@alpha` (captions' `color`)."""


def _media(description: str, required: bool = True, more: str = "") -> ParamSpec:
    return ParamSpec(type="url", required=required, description=f"{description}: {MEDIA_INPUT_NOTE}.{more}")


def _video_side(name: str, more: str = "") -> ParamSpec:
    return ParamSpec(type="integer", minimum=16, maximum=3840, description=f"Output {name} in pixels{more}.")


def _seconds(description: str) -> ParamSpec:
    return ParamSpec(type="number", minimum=0, maximum=86400, description=description)


OPERATION_SPECS: list[OperationSpec] = [
    OperationSpec(
        type="merge-video-audio",
        description="Lay an audio track under a video; the video's length wins (the audio is padded or cut).",
        output="video/mp4",
        params={
            "video": _media("The video", more=" A still image is refused."),
            "audio": _media("The audio", more=" Any input with an audio stream (a video's sound is taken too)."),
        },
    ),
    OperationSpec(
        type="concat",
        description="Join videos end to end, scaled and letterboxed to one size and frame rate.",
        output="video/mp4",
        params={
            "videos": ParamSpec(
                type="list",
                required=True,
                items=ParamSpec(type="url"),
                min_items=1,
                description="The inputs, in order (at most `REELFLOW_CONCAT_MAX_INPUTS`, default 200), each "
                f"{MEDIA_INPUT_NOTE}; a still image is shown 3 s.",
            ),
            "width": _video_side("width", ", rounded to an even number (default: the first input's)"),
            "height": _video_side("height", ", rounded to an even number (default: the first input's)"),
            "fps": ParamSpec(
                type="integer", minimum=1, maximum=60, description="Frames per second (default: the first video's)."
            ),
        },
    ),
    OperationSpec(
        type="captions",
        description="Burn captions into a video; give exactly one of text, segments, srt or words.",
        output="video/mp4",
        params={
            "video": _media("The video to caption"),
            "text": ParamSpec(
                type="string",
                max_length=5000,
                description="Plain text over the whole video, wrapped and paged two lines at a time.",
            ),
            "segments": ParamSpec(
                type="list",
                items=ParamSpec(type="object"),
                description="Timed lines: `{start, end, text}`, seconds, `end` after `start`.",
            ),
            "srt": ParamSpec(type="string", description="Captions in SRT format; HTML-like tags are removed."),
            "words": ParamSpec(
                type="list",
                items=ParamSpec(type="object"),
                description='Word timings `{word, start, end}`, as a transcribe job gives (`"$transcript.words"`), '
                "grouped into short lines.",
            ),
            "position": ParamSpec(
                type="string", choices=["bottom", "top", "center"], default="bottom", description="Where the lines go."
            ),
            "font_size": ParamSpec(
                type="integer",
                minimum=4,
                maximum=400,
                description="Font size in pixels (default: the video's height / 16, at least 10).",
            ),
            "color": ParamSpec(
                type="string",
                default="white",
                pattern=COLOR_PATTERN,
                description="Text colour: an ffmpeg colour name (`yellow`), or `#rrggbb` / `#rrggbbaa`, optionally "
                "with `@alpha`.",
            ),
            "box": ParamSpec(
                type="boolean", default=True, description="Draw a half-transparent black box behind the text."
            ),
        },
        rules=[ParamRule(kind="exactly_one_of", params=["text", "segments", "srt", "words"])],
    ),
    OperationSpec(
        type="overlay",
        description="Lay an image or a video over a video (a logo, a watermark, picture in picture).",
        output="video/mp4",
        params={
            "video": _media("The background video"),
            "overlay": _media("The image or video laid over it"),
            "position": ParamSpec(
                type="string",
                choices=["top-left", "top-right", "bottom-left", "bottom-right", "center"],
                default="top-right",
                description="Corner (16 px from the edges) or centre; x and y override it.",
            ),
            "x": ParamSpec(
                type="integer",
                minimum=-8192,
                maximum=8192,
                description="Left edge in pixels, negative to start off screen (overrides position).",
            ),
            "y": ParamSpec(
                type="integer",
                minimum=-8192,
                maximum=8192,
                description="Top edge in pixels, negative to start off screen (overrides position).",
            ),
            "scale": ParamSpec(
                type="number",
                exclusive_minimum=0,
                maximum=4,
                description="The overlay's width as a share of the video's width (default: its own size).",
            ),
            "start": ParamSpec(
                type="number", minimum=0, maximum=86400, default=0, description="Seconds when the overlay appears."
            ),
            "end": _seconds("Seconds when it disappears, after start (default: the end)."),
            "opacity": ParamSpec(
                type="number", minimum=0, maximum=1, default=1, description="0 is invisible, 1 opaque."
            ),
        },
        rules=[ParamRule(kind="increasing", params=["start", "end"])],
    ),
    OperationSpec(
        type="transcode",
        description="Convert to another format or size; give the media as video (or input).",
        output="the format's type",
        params={
            "video": _media("The media to convert", required=False),
            "input": _media("The same as video (the older name)", required=False),
            "format": ParamSpec(
                type="string",
                choices=["mp4", "webm", "mov", "mkv", "gif", "m4a", "mp3", "wav"],
                default="mp4",
                description="Output format (m4a, mp3 and wav keep the audio only).",
            ),
            "width": _video_side("width", "; with height too, letterboxed to that size; alone, the shape is kept"),
            "height": _video_side("height", ", as width"),
            "fps": ParamSpec(
                type="integer",
                minimum=1,
                maximum=60,
                description="Frames per second (default: the input's; gif: at most 12).",
            ),
            "crf": ParamSpec(
                type="integer",
                minimum=0,
                maximum=63,
                description="Quality: lower is better and bigger (default 23 for H.264, 33 for VP9); H.264 "
                "stops at 51 (higher values act as 51), VP9 (webm) at 63.",
            ),
        },
        rules=[ParamRule(kind="exactly_one_of", params=["video", "input"])],
    ),
    OperationSpec(
        type="thumbnail",
        description="One frame of a video as an image.",
        output="image/jpeg or image/png",
        params={
            "video": _media("The video"),
            "at": _seconds("Second of the frame (default: a third of the way in; past the end: the last frame)."),
            "width": _side("width", "; the height keeps the shape (default: the video's)"),
            "format": ParamSpec(
                type="string", choices=["jpg", "jpeg", "png"], default="jpg", description="Image format."
            ),
        },
    ),
]

OPERATIONS: dict[str, dict[str, ParamSpec]] = {op.type: op.params for op in OPERATION_SPECS}
OPERATION_RULES: dict[str, list[ParamRule]] = {op.type: op.rules for op in OPERATION_SPECS if op.rules}


def operations() -> list[OperationSpec]:
    """Every local operation with its parameters (for `reelflow ops`, the docs and the plan schema)."""
    return list(OPERATION_SPECS)


JOB_TYPES: tuple[str, ...] = (*MODEL_TYPES, *OPERATIONS)

OPEN_PROVIDERS: frozenset[str] = frozenset({"replicate", "fal", "elevenlabs", "openai"})
"""Remote providers that run any of their models through the `run` type, catalogued or not."""

RUN_INPUT = ParamSpec(type="object", description="The model's input, passed to the provider as given.")

# --- models --------------------------------------------------------------------------------------


SIM_MAX_COST_USD = 1000.0
"""The most a simulated run may cost: sums of costs and the cost metrics stay finite."""


def _sim_params() -> dict[str, ParamSpec]:
    return {
        "latency_s": ParamSpec(
            type="number", minimum=0, maximum=86400, default=0, description="How long the work takes."
        ),
        "queue_s": ParamSpec(
            type="number",
            minimum=0,
            maximum=86400,
            default=0,
            description="Time in the queue before starting.",
        ),
        "fail_times": ParamSpec(
            type="integer", minimum=0, description="The first N attempts fail with a transient error."
        ),
        "fail": ParamSpec(type="string", choices=["permanent"], description="Fail at once, permanently."),
        "cost_usd": ParamSpec(
            type="number", minimum=0, maximum=SIM_MAX_COST_USD, description="What the run costs (estimate and actual)."
        ),
        "billed_usd": ParamSpec(
            type="number",
            minimum=0,
            maximum=SIM_MAX_COST_USD,
            description="What the run reports it cost instead (an overrun of the estimate).",
        ),
        "retry_after_s": ParamSpec(
            type="number", minimum=0, maximum=3600, description="The Retry-After of its transient failures."
        ),
        "media": ParamSpec(type="boolean", description="Make a real small media file."),
        "prompt": ParamSpec(type="string"),
        "duration": ParamSpec(type="number", exclusive_minimum=0, maximum=600),
    }


def _sim(kind: str) -> ModelSpec:
    return ModelSpec(
        id=f"sim/{kind}",
        provider="sim",
        name=kind,
        types=[f"generate-{kind}", "run"],
        params=_sim_params(),
        extra_params=True,
        price=Price(unit="run", usd=0.0),
        description=f"Simulated remote {kind} model with latency and fault knobs (tests, benchmarks).",
        est_seconds=0.0,
    )


BUILTIN_MODELS: list[ModelSpec] = [
    ModelSpec(
        id="local/image",
        provider="local",
        name="image",
        types=["generate-image"],
        params={
            "prompt": _prompt(required=True),
            "width": _side("width"),
            "height": _side("height"),
            "aspect_ratio": _ASPECT,
            "seed": _SEED,
        },
        price=Price(unit="free"),
        description="A still drawn from the prompt with ffmpeg.",
        est_seconds=1.0,
    ),
    ModelSpec(
        id="local/video",
        provider="local",
        name="video",
        types=["generate-video"],
        params={
            "prompt": _prompt(),
            "image": _media("An image to move over", required=False),
            "duration": ParamSpec(type="number", minimum=0.5, maximum=60, default=5, description="Seconds of video."),
            "aspect_ratio": _ASPECT,
            "resolution": ParamSpec(
                type="string", choices=["480p", "720p", "1080p"], description="Short side (default 720p)."
            ),
            "width": _video_side("width", " (overrides resolution)"),
            "height": _video_side("height", " (overrides resolution)"),
            "fps": _fps(),
            "seed": _SEED,
        },
        rules=[ParamRule(kind="one_of", params=["prompt", "image"])],
        price=Price(unit="free"),
        description="A video made with ffmpeg from a prompt, or by moving over an image.",
        max_duration=60,
        est_seconds=1.0,
        est_seconds_per_second=0.5,
    ),
    ModelSpec(
        id="local/audio",
        provider="local",
        name="audio",
        types=["generate-audio"],
        params={
            "text": ParamSpec(type="string", max_length=5000, description="Words to speak."),
            "prompt": _prompt(),
            "duration": ParamSpec(type="number", minimum=0.5, maximum=600, description="Seconds of audio."),
            "voice": ParamSpec(type="string", description="espeak-ng voice name."),
        },
        rules=[ParamRule(kind="one_of", params=["text", "prompt", "duration"])],
        price=Price(unit="free"),
        description="Speech with espeak-ng where installed, otherwise a tone bed of the requested length.",
        max_duration=600,
        est_seconds=1.0,
        est_seconds_per_second=0.05,
    ),
    _sim("image"),
    _sim("video"),
    _sim("audio"),
]


def local_media_inputs(
    job_type: str, model: str | None, params: Mapping[str, Any]
) -> list[tuple[list[str | int], str]]:
    """`(location under params, value)` of every literal URL given to a media input of a local operation or a
    local model: ffmpeg reads only stored files, so each must link to one of the tenant's artifacts."""
    if model is not None:
        spec = next((m for m in BUILTIN_MODELS if m.id == model and m.provider == "local"), None)
        specs = spec.params if spec is not None else {}
    else:
        specs = OPERATIONS.get(job_type, {})
    found: list[tuple[list[str | int], str]] = []
    for name, pspec in specs.items():
        value = params.get(name)
        if pspec.type == "url":
            values: list[tuple[list[str | int], Any]] = [([name], value)]
        elif pspec.type == "list" and pspec.items is not None and pspec.items.type == "url" and isinstance(value, list):
            values = [([name, i], v) for i, v in enumerate(value)]
        else:
            continue
        found += [(loc, v) for loc, v in values if isinstance(v, str) and not is_reference(v) and "://" in v]
    return found
