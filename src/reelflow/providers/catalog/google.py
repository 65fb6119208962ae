"""Google's Veo models on the Gemini API, and how our normalised params map to a `predictLongRunning` request.

Prices were read on 2026-12-06 (USD per second of video, audio included; Google bills only videos it made) from
the Gemini API pricing as quoted with its date by third-party pages (ai.google.dev/gemini-api/docs/pricing itself
was not in the stored corpus): Veo 3.1 $0.40/s at 720p or 1080p and $0.60/s at 4k; Veo 3.1 Fast $0.10/s at 720p,
$0.12/s at 1080p, $0.30/s at 4k; Veo 3.1 Lite $0.05/s at 720p, $0.08/s at 1080p; Veo 3 $0.40/s, Veo 3 Fast
$0.15/s. They only feed estimates and reported costs; Google's bill is the truth.

`INPUT_MAP` says where each of our parameter names goes: `("instance", name)` into `instances[0]`,
`("parameter", name)` into `parameters`. Images (`image`, `last_frame`) are sent inline, base64 with their MIME
type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .spec import ModelSpec, ParamSpec, Price

PROVIDER = "google"
PRICES_READ = "2026-12-06"

Place = Literal["instance", "parameter"]

INPUT_MAP: dict[str, tuple[Place, str]] = {
    "prompt": ("instance", "prompt"),
    "image": ("instance", "image"),
    "last_frame": ("instance", "lastFrame"),
    "negative_prompt": ("parameter", "negativePrompt"),
    "aspect_ratio": ("parameter", "aspectRatio"),
    "resolution": ("parameter", "resolution"),
    "duration": ("parameter", "durationSeconds"),
    "person_generation": ("parameter", "personGeneration"),
}
"""Our parameter name -> where it goes in the request and under which Gemini API name. As Google's own SDKs map
them for the Gemini API (googleapis/java-genai `Models.generateVideosConfigToMldev`), which refuse `seed`, `fps`,
`generateAudio` and `outputGcsUri` there (Vertex AI only): those are not offered."""

IMAGE_PARAMS: frozenset[str] = frozenset({"image", "last_frame"})
"""Parameters that are images, sent inline as `{"bytesBase64Encoded", "mimeType"}`."""

LONG_ONLY_RESOLUTIONS: frozenset[str] = frozenset({"1080p", "4k"})
"""Resolutions Veo 3.1 makes only for 8 s clips (the Gemini API refuses 4 or 6 s at these)."""

RESOLUTION_PRICES: dict[str, dict[str, float]] = {
    "google/veo-3.1-generate-preview": {"720p": 0.40, "1080p": 0.40, "4k": 0.60},
    "google/veo-3.1-fast-generate-preview": {"720p": 0.10, "1080p": 0.12, "4k": 0.30},
    "google/veo-3.1-lite-generate-preview": {"720p": 0.05, "1080p": 0.08},
    "google/veo-3.0-generate-001": {"720p": 0.40, "1080p": 0.40},
    "google/veo-3.0-fast-generate-001": {"720p": 0.15, "1080p": 0.15},
}
"""USD per second of video by resolution (read on PRICES_READ)."""


def _params(resolutions: list[str], *, last_frame: bool, durations: list[int]) -> dict[str, ParamSpec]:
    params = {
        "prompt": ParamSpec(type="string", required=True, max_length=4000, description="What to make, with sound."),
        "image": ParamSpec(type="url", description="A first frame to start from (jpg, png or webp), sent inline."),
        "negative_prompt": ParamSpec(type="string", max_length=2000, description="What to keep out of the video."),
        "aspect_ratio": ParamSpec(
            type="string", choices=["16:9", "9:16"], default="16:9", description="Landscape or portrait."
        ),
        "resolution": ParamSpec(
            type="string",
            choices=resolutions,
            default="720p",
            description="Output resolution; above 720p only for 8 s clips.",
        ),
        "duration": ParamSpec(
            type="integer", choices=durations, default=8, description="Seconds of video (Veo's durationSeconds)."
        ),
        "person_generation": ParamSpec(
            type="string",
            choices=["allow_all", "allow_adult", "dont_allow"],
            description="Whether people may appear (Google restricts some values by region and input).",
        ),
    }
    if last_frame:
        params["last_frame"] = ParamSpec(type="url", description="A last frame to end on (needs `image`).")
    return params


def _veo(name: str, description: str, resolutions: list[str], *, veo31: bool, est_seconds: float) -> ModelSpec:
    model_id = f"{PROVIDER}/{name}"
    prices = RESOLUTION_PRICES[model_id]
    return ModelSpec(
        id=model_id,
        provider=PROVIDER,
        name=name,
        types=["generate-video"],
        params=_params(resolutions, last_frame=veo31, durations=[4, 6, 8] if veo31 else [8]),
        price=Price(unit="second", usd=prices["720p"]),
        price_read=PRICES_READ,
        description=(
            f"{description} Price per second (read {PRICES_READ}): "
            + ", ".join(f"${usd:g} at {res}" for res, usd in prices.items())
            + "."
        ),
        max_duration=8,
        est_seconds=est_seconds,
        est_seconds_per_second=4,
    )


MODELS: list[ModelSpec] = [
    _veo(
        "veo-3.1-generate-preview",
        "Google Veo 3.1 on the Gemini API: text or image to video with native audio, 4, 6 or 8 s, 16:9 or 9:16.",
        ["720p", "1080p", "4k"],
        veo31=True,
        est_seconds=60,
    ),
    _veo(
        "veo-3.1-fast-generate-preview",
        "Google Veo 3.1 Fast on the Gemini API: quicker and cheaper Veo 3.1, with native audio.",
        ["720p", "1080p", "4k"],
        veo31=True,
        est_seconds=30,
    ),
    _veo(
        "veo-3.1-lite-generate-preview",
        "Google Veo 3.1 Lite on the Gemini API: the cheapest Veo 3.1, 720p or 1080p, with native audio.",
        ["720p", "1080p"],
        veo31=True,
        est_seconds=30,
    ),
    _veo(
        "veo-3.0-generate-001",
        "Google Veo 3 on the Gemini API: 8 s text or image to video with native audio.",
        ["720p", "1080p"],
        veo31=False,
        est_seconds=60,
    ),
    _veo(
        "veo-3.0-fast-generate-001",
        "Google Veo 3 Fast on the Gemini API: 8 s text or image to video with native audio.",
        ["720p", "1080p"],
        veo31=False,
        est_seconds=30,
    ),
]
MODELS_BY_ID: dict[str, ModelSpec] = {m.id: m for m in MODELS}


def price_per_second(model_id: str, resolution: Any) -> float | None:
    """USD per second for a model at a resolution; None for a model or resolution without a price."""
    return RESOLUTION_PRICES.get(model_id, {}).get(str(resolution))


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our params (images left out) as the request's `instances[0]` and `parameters`, under Google's names."""
    instance: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or key in IMAGE_PARAMS or key not in INPUT_MAP:
            continue
        place, name = INPUT_MAP[key]
        (instance if place == "instance" else parameters)[name] = value
    return instance, parameters
