"""The built-in catalog entries: local operations (ffmpeg in the worker), the local and simulated models."""

from __future__ import annotations

from .spec import ASPECT_RATIOS, MODEL_TYPES, ModelSpec, ParamRule, ParamSpec, Price

# --- parameter building blocks -------------------------------------------------------------------


def _prompt(max_length: int = 2000, required: bool = False) -> ParamSpec:
    return ParamSpec(type="string", required=required, max_length=max_length, description="What to make.")


def _side(name: str) -> ParamSpec:
    return ParamSpec(type="integer", minimum=16, maximum=4096, description=f"Output {name} in pixels.")


def _fps() -> ParamSpec:
    return ParamSpec(type="integer", minimum=1, maximum=60, description="Frames per second.")


def _url(description: str, required: bool = True) -> ParamSpec:
    return ParamSpec(type="url", required=required, description=description)


_SEED = ParamSpec(type="integer", minimum=0, description="Random seed, for repeatable output.")
_ASPECT = ParamSpec(type="string", choices=ASPECT_RATIOS, description="Shape of the output.")

# --- local operations (ffmpeg in the worker, no model) -------------------------------------------

OPERATIONS: dict[str, dict[str, ParamSpec]] = {
    "merge-video-audio": {
        "video": _url("The video."),
        "audio": _url("The audio track to lay under it."),
    },
    "concat": {
        "videos": ParamSpec(
            type="list",
            required=True,
            items=ParamSpec(type="url"),
            min_items=1,
            description="Videos to join, in order (at most REELFLOW_CONCAT_MAX_INPUTS, default 200).",
        ),
        "width": _side("width"),
        "height": _side("height"),
        "fps": _fps(),
    },
    "captions": {
        "video": _url("The video to caption."),
        "text": ParamSpec(type="string", max_length=5000, description="Plain text spread over the video."),
        "segments": ParamSpec(
            type="list", items=ParamSpec(type="object"), description="Timed lines: {start, end, text}."
        ),
        "srt": ParamSpec(type="string", description="Captions in SRT format."),
        "words": ParamSpec(
            type="list",
            items=ParamSpec(type="object"),
            description="Word timings, as a transcribe job gives.",
        ),
        "position": ParamSpec(type="string", choices=["bottom", "top", "center"], default="bottom"),
        "font_size": ParamSpec(type="integer", minimum=8, maximum=200),
        "color": ParamSpec(type="string", description="Text colour (ffmpeg colour name or #rrggbb)."),
        "box": ParamSpec(type="boolean", description="Draw a box behind the text."),
    },
    "overlay": {
        "video": _url("The background video."),
        "overlay": _url("The image or video laid over it."),
        "position": ParamSpec(
            type="string",
            choices=["top-left", "top-right", "bottom-left", "bottom-right", "center"],
            default="top-right",
        ),
        "x": ParamSpec(type="integer", minimum=0, description="Left edge in pixels (overrides position)."),
        "y": ParamSpec(type="integer", minimum=0, description="Top edge in pixels (overrides position)."),
        "scale": ParamSpec(
            type="number",
            exclusive_minimum=0,
            maximum=1,
            description="Overlay width as a share of the video.",
        ),
        "start": ParamSpec(type="number", minimum=0, description="Seconds when the overlay appears."),
        "end": ParamSpec(type="number", minimum=0, description="Seconds when it disappears."),
        "opacity": ParamSpec(type="number", minimum=0, maximum=1),
    },
    "transcode": {
        "input": _url("The media to convert."),
        "format": ParamSpec(
            type="string", choices=["mp4", "webm", "mov", "mkv", "gif", "m4a", "mp3", "wav"], default="mp4"
        ),
        "width": _side("width"),
        "height": _side("height"),
        "fps": _fps(),
        "crf": ParamSpec(type="integer", minimum=0, maximum=51, description="Quality: lower is better."),
    },
    "thumbnail": {
        "video": _url("The video."),
        "at": ParamSpec(type="number", minimum=0, description="Second to grab the frame at."),
        "width": _side("width"),
        "format": ParamSpec(type="string", choices=["jpg", "png"], default="jpg"),
    },
}

OPERATION_RULES: dict[str, list[ParamRule]] = {
    "captions": [ParamRule(kind="exactly_one_of", params=["text", "segments", "srt", "words"])],
}

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
            "image": _url("An image to move over.", required=False),
            "duration": ParamSpec(type="number", minimum=0.5, maximum=60, default=5, description="Seconds of video."),
            "aspect_ratio": _ASPECT,
            "resolution": ParamSpec(type="string", choices=["480p", "720p", "1080p"]),
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
