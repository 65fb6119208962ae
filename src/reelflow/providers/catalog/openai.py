"""OpenAI's speech, image and transcription models, and how our normalised params map to their requests.

OpenAI shut its Videos API and the Sora 2 models down on 2026-09-24: `openai/sora-*` is refused (see
`retired`), and nothing here makes video.

Prices are approximate public list prices (late 2026) and only feed estimates and reported costs;
OpenAI bills the real amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import ASPECT_RATIOS, ModelSpec, ParamSpec, Price

_NOT_REREAD = "not re-read on OpenAI's pricing page in the 2026-12-06 check; a late-2026 list price"
"""Why these prices are unconfirmed."""

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
        price_unconfirmed=_NOT_REREAD,
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
        price_unconfirmed=_NOT_REREAD,
        description=(
            "OpenAI GPT Image 1, text to image (approximately $0.011-0.25 per image by quality and size)." + _RUN_NOTE
        ),
        est_seconds=30.0,
    ),
    ModelSpec(
        id="openai/whisper-1",
        provider="openai",
        name="whisper-1",
        types=["transcribe"],
        params=TRANSCRIBE_PARAMS,
        price=Price(unit="second", usd=TRANSCRIPTION_PRICE_PER_MINUTE / 60),
        price_unconfirmed=_NOT_REREAD,
        description=(
            "OpenAI Whisper, speech to text with word timings (approximately $0.006 per minute of audio);"
            " stores an SRT and gives `words` for captions."
        ),
        est_seconds=10.0,
    ),
]

MODELS_BY_ID: dict[str, ModelSpec] = {m.id: m for m in MODELS}
