"""OpenAI's speech, image, video (Sora) and transcription models, and how our normalised params map to
their requests.

Prices are approximate public list prices (late 2026) and only feed estimates and reported costs;
OpenAI bills the real amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import ASPECT_RATIOS, ModelSpec, ParamSpec, Price

SPEECH_VOICES = ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"]
DEFAULT_SPEECH_VOICE = "coral"
IMAGE_SIZES = ["1024x1024", "1536x1024", "1024x1536", "auto"]
IMAGE_QUALITIES = ["low", "medium", "high", "auto"]
IMAGE_FORMATS = ["png", "jpeg", "webp"]

SIZE_FOR_ASPECT: dict[str, str] = {
    "1:1": "1024x1024",
    "16:9": "1536x1024",
    "4:3": "1536x1024",
    "21:9": "1536x1024",
    "9:16": "1024x1536",
    "3:4": "1024x1536",
}
"""Our aspect ratios as the nearest size gpt-image-1 makes."""

IMAGE_PRICES: dict[tuple[str, str], float] = {
    ("low", "square"): 0.011,
    ("medium", "square"): 0.042,
    ("high", "square"): 0.167,
    ("low", "wide"): 0.016,
    ("medium", "wide"): 0.063,
    ("high", "wide"): 0.25,
}
"""Approximate USD per gpt-image-1 image by (quality, square or not); `auto` counts as medium."""


def image_price(params: Mapping[str, Any]) -> float:
    """The approximate price of one image for a request body's `quality` and `size`."""
    quality = params.get("quality")
    quality = quality if quality in ("low", "medium", "high") else "medium"
    shape = "square" if params.get("size") in (None, "auto", "1024x1024") else "wide"
    return IMAGE_PRICES[(quality, shape)]


def to_speech_body(model_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`POST /audio/speech` body for our normalised params."""
    body: dict[str, Any] = {
        "model": model_name,
        "input": params.get("text"),
        "voice": params.get("voice") or DEFAULT_SPEECH_VOICE,
        "response_format": "mp3",
    }
    for name in ("instructions", "speed"):
        if params.get(name) is not None:
            body[name] = params[name]
    return body


def to_image_body(model_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`POST /images/generations` body for our normalised params (`aspect_ratio` becomes a size)."""
    body: dict[str, Any] = {"model": model_name, "prompt": params.get("prompt")}
    size = params.get("size") or SIZE_FOR_ASPECT.get(str(params.get("aspect_ratio")))
    if size is not None:
        body["size"] = size
    if params.get("num_images") is not None:
        body["n"] = params["num_images"]
    for name in ("quality", "output_format", "background"):
        if params.get(name) is not None:
            body[name] = params[name]
    return body


# --- video (Sora) ---------------------------------------------------------------------------------

VIDEO_SECONDS = [4, 8, 12]
"""Clip lengths the Videos API makes (sent as the strings "4", "8", "12")."""
VIDEO_PROMPT_MAX = 32000
VIDEO_SIZES: dict[str, list[str]] = {
    "sora-2": ["1280x720", "720x1280"],
    "sora-2-pro": ["1280x720", "720x1280", "1792x1024", "1024x1792"],
}
"""The `size` values each Sora model accepts (width x height)."""
VIDEO_SIZE_FOR: dict[tuple[str, str], str] = {
    ("16:9", "720p"): "1280x720",
    ("9:16", "720p"): "720x1280",
    ("16:9", "1024p"): "1792x1024",
    ("9:16", "1024p"): "1024x1792",
}
"""Our (aspect_ratio, resolution) as a Sora size."""
VIDEO_RESOLUTIONS: dict[str, list[str]] = {"sora-2": ["720p"], "sora-2-pro": ["720p", "1024p"]}
VIDEO_PRICES: dict[tuple[str, str], float] = {
    ("sora-2", "1280x720"): 0.10,
    ("sora-2", "720x1280"): 0.10,
    ("sora-2-pro", "1280x720"): 0.30,
    ("sora-2-pro", "720x1280"): 0.30,
    ("sora-2-pro", "1792x1024"): 0.50,
    ("sora-2-pro", "1024x1792"): 0.50,
}
"""Approximate USD per second of video by (model, size)."""


def video_size(model_name: str, params: Mapping[str, Any]) -> str:
    """The Sora `size` for our params: `size` as given, else from `aspect_ratio` (16:9) and `resolution` (720p).

    Raises ValueError, naming the choices, when the model does not make that size."""
    allowed = VIDEO_SIZES.get(model_name, VIDEO_SIZES["sora-2"])
    size = params.get("size")
    if size is None:
        aspect = params.get("aspect_ratio") or "16:9"
        resolution = params.get("resolution") or "720p"
        size = VIDEO_SIZE_FOR.get((str(aspect), str(resolution)))
        if size is None:
            raise ValueError(
                f"{model_name} makes 16:9 or 9:16 video at {' or '.join(VIDEO_RESOLUTIONS.get(model_name, ['720p']))}"
                f" (got aspect_ratio {aspect!r}, resolution {resolution!r})"
            )
    if size not in allowed:
        raise ValueError(f"{model_name} makes sizes {', '.join(allowed)} (got {size!r})")
    return str(size)


def video_seconds(params: Mapping[str, Any]) -> int:
    """The clip length for our `duration` param (4 when absent); ValueError for another length."""
    duration = params.get("duration", VIDEO_SECONDS[0])
    if duration is None:
        duration = VIDEO_SECONDS[0]
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration not in VIDEO_SECONDS:
        raise ValueError(f"duration must be one of {', '.join(map(str, VIDEO_SECONDS))} seconds (got {duration!r})")
    return int(duration)


def video_price(model_name: str, size: str) -> float:
    """Approximate USD per second for a Sora model at a size (the model's lowest price for an unknown size)."""
    if (model_name, size) in VIDEO_PRICES:
        return VIDEO_PRICES[(model_name, size)]
    return min(
        (usd for (m, _), usd in VIDEO_PRICES.items() if m == model_name), default=VIDEO_PRICES[("sora-2", "1280x720")]
    )


def to_video_form(model_name: str, params: Mapping[str, Any]) -> dict[str, str]:
    """`POST /videos` form fields (without `input_reference`) for our normalised params; ValueError when invalid."""
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a prompt is required")
    if len(prompt) > VIDEO_PROMPT_MAX:
        raise ValueError(f"the prompt is longer than {VIDEO_PROMPT_MAX} characters ({len(prompt)})")
    return {
        "prompt": prompt,
        "model": model_name,
        "seconds": str(video_seconds(params)),
        "size": video_size(model_name, params),
    }


def _video_model(name: str, per_second: str, description: str, est_seconds: float) -> ModelSpec:
    return ModelSpec(
        id=f"openai/{name}",
        provider="openai",
        name=name,
        types=["generate-video", "run"],
        params={
            "prompt": ParamSpec(
                type="string", required=True, max_length=VIDEO_PROMPT_MAX, description="What to make, shot by shot."
            ),
            "image": ParamSpec(
                type="url",
                description="A first frame to start from (jpg, png or webp); fitted to the output size.",
            ),
            "duration": ParamSpec(
                type="integer", choices=VIDEO_SECONDS, default=VIDEO_SECONDS[0], description="Seconds of video."
            ),
            "aspect_ratio": ParamSpec(
                type="string", choices=["16:9", "9:16"], default="16:9", description="Landscape or portrait."
            ),
            "resolution": ParamSpec(
                type="string", choices=VIDEO_RESOLUTIONS[name], default="720p", description="Output resolution."
            ),
            "size": ParamSpec(
                type="string",
                choices=VIDEO_SIZES[name],
                description="Output size as width x height (overrides aspect_ratio and resolution).",
            ),
        },
        price=Price(unit="second", usd=VIDEO_PRICES[(name, "1280x720")]),
        description=f"OpenAI {description}, text or image to video with sound ({per_second}).{_RUN_NOTE}",
        max_duration=float(max(VIDEO_SECONDS)),
        est_seconds=est_seconds,
        est_seconds_per_second=est_seconds / 4,
    )


# --- transcription --------------------------------------------------------------------------------

TRANSCRIPTION_PRICE_PER_MINUTE = 0.006
TRANSCRIPTION_MAX_BYTES = 25 * 1024 * 1024
"""OpenAI refuses audio files over 25 MB."""
TRANSCRIPTION_FORMATS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "wav", "webm")

TRANSCRIBE_PARAMS: dict[str, ParamSpec] = {
    "audio": ParamSpec(
        type="url",
        required=True,
        description="The speech to transcribe: audio or video (mp3, mp4, m4a, wav, webm, ogg, flac; up to 25 MB).",
    ),
    "language": ParamSpec(
        type="string", max_length=3, description="The spoken language as ISO-639-1 (`en`); improves accuracy."
    ),
    "prompt": ParamSpec(type="string", max_length=1000, description="Text to guide spelling and style (names, terms)."),
}
"""The params of a `transcribe` job (defined here as long as OpenAI is the only provider that transcribes)."""


def transcription_cost(duration_s: float | None) -> float | None:
    """Approximate USD for transcribing `duration_s` seconds of audio."""
    if duration_s is None:
        return None
    return round(TRANSCRIPTION_PRICE_PER_MINUTE * max(0.0, duration_s) / 60.0, 6)


_RUN_NOTE = " Also runs as `run` with OpenAI's own request body."

MODELS: list[ModelSpec] = [
    ModelSpec(
        id="openai/gpt-4o-mini-tts",
        provider="openai",
        name="gpt-4o-mini-tts",
        types=["generate-audio", "run"],
        params={
            "text": ParamSpec(type="string", required=True, max_length=4096, description="Words to speak."),
            "voice": ParamSpec(
                type="string", choices=SPEECH_VOICES, default=DEFAULT_SPEECH_VOICE, description="A built-in voice."
            ),
            "instructions": ParamSpec(
                type="string", max_length=4096, description="How to speak: tone, pace, accent, emotion."
            ),
            "speed": ParamSpec(type="number", minimum=0.25, maximum=4.0, description="1 is normal speed."),
        },
        price=Price(unit="character", usd=0.000015),
        description=f"OpenAI GPT-4o mini TTS, steerable speech (approximately $0.015 per minute).{_RUN_NOTE}",
        est_seconds=3.0,
    ),
    ModelSpec(
        id="openai/gpt-image-1",
        provider="openai",
        name="gpt-image-1",
        types=["generate-image", "run"],
        params={
            "prompt": ParamSpec(type="string", required=True, max_length=32000, description="What to make."),
            "aspect_ratio": ParamSpec(type="string", choices=ASPECT_RATIOS, description="Shape of the output."),
            "size": ParamSpec(type="string", choices=IMAGE_SIZES, description="Output size (overrides aspect_ratio)."),
            "quality": ParamSpec(type="string", choices=IMAGE_QUALITIES, description="Higher costs more."),
            "num_images": ParamSpec(type="integer", minimum=1, maximum=4, default=1, description="Images to make."),
            "output_format": ParamSpec(type="string", choices=IMAGE_FORMATS, description="The image file format."),
            "background": ParamSpec(
                type="string", choices=["transparent", "opaque", "auto"], description="Transparent needs png or webp."
            ),
        },
        price=Price(unit="image", usd=IMAGE_PRICES[("medium", "square")]),
        description=(
            "OpenAI GPT Image 1, text to image (approximately $0.011-0.25 per image by quality and size)." + _RUN_NOTE
        ),
        est_seconds=30.0,
    ),
    _video_model("sora-2", "approximately $0.10 per second", "Sora 2", 60.0),
    _video_model(
        "sora-2-pro",
        "approximately $0.30 per second at 720p, $0.50 at 1024p",
        "Sora 2 Pro, higher fidelity and slower",
        180.0,
    ),
    ModelSpec(
        id="openai/whisper-1",
        provider="openai",
        name="whisper-1",
        types=["transcribe"],
        params=TRANSCRIBE_PARAMS,
        price=Price(unit="second", usd=TRANSCRIPTION_PRICE_PER_MINUTE / 60),
        description=(
            "OpenAI Whisper, speech to text with word timings (approximately $0.006 per minute of audio);"
            " stores an SRT and gives `words` for captions."
        ),
        est_seconds=10.0,
    ),
]

MODELS_BY_ID: dict[str, ModelSpec] = {m.id: m for m in MODELS}
