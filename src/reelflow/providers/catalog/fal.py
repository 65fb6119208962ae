"""fal's counterparts of the catalogued models, and how our normalised params map to their inputs.

Prices are approximate public list prices and only feed estimates; fal bills the real amount.

Checked on 2026-12-06 against fal's own model pages (`fal.ai/models/<endpoint>/llms.txt`, which give the
input schema and the price, and `fal.ai/docs/model-api-reference/...`), as stored by the search tool:
fal-ai/kling-video/v2.1/standard/image-to-video ($0.28 for 5 s, $0.056 each further second: the catalog said
$0.05), fal-ai/kling-video/v2.5-turbo/pro and /standard/image-to-video ($0.07/s, $0.042/s),
fal-ai/minimax/hailuo-02/standard/image-to-video ($0.045/s at 768P, $0.017/s at 512P),
bytedance/seedance-2.0/image-to-video ($0.3024/s at 720p). Those models carry `price_read`.

Uncertain: Seedance 2.0's stored llms.txt lists no input schema; its names (`image_url`, `end_image_url`,
`duration`, `resolution`, `aspect_ratio`, `generate_audio`, `seed`) come from fal's API reference page and
its 480p/720p resolutions and 4-15 s durations from pages quoting fal's schema; its 480p price is not given
(tokens: about $0.13/s). Kling 2.5 Turbo's stored page cuts off after `negative_prompt`. Not re-checked (no
page found): the FLUX models and Seedance 1.0 Pro, whose prices stay as they were, without a date.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .spec import ASPECT_RATIOS, ModelSpec, ParamSpec, Price

# --- input mapping -------------------------------------------------------------------------------

IMAGE_SIZES: dict[str, Any] = {
    "16:9": "landscape_16_9",
    "9:16": "portrait_16_9",
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "3:4": "portrait_4_3",
    "21:9": {"width": 1568, "height": 672},
}
"""Our aspect ratios as fal's `image_size` (a preset name, or an explicit size where there is none)."""


def _image_size(value: Any) -> Any:
    return IMAGE_SIZES.get(str(value), value)


def _as_string(value: Any) -> Any:
    """fal's video models take their duration as a string enum ("5", "10")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _upper_p(value: Any) -> Any:
    """Hailuo spells resolutions "768P"."""
    return str(value).upper()


CONVERTERS: dict[str, Callable[[Any], Any]] = {"string": _as_string, "upper": _upper_p, "image_size": _image_size}
"""The conversions a catalog file may name (`convert`), by name."""


@dataclass(frozen=True)
class FalInput:
    """Where one of our params goes in the model's input, and how its value is converted."""

    name: str
    convert: Callable[[Any], Any] | None = None


_FLUX_MAP: dict[str, FalInput] = {
    "prompt": FalInput("prompt"),
    "aspect_ratio": FalInput("image_size", _image_size),
    "seed": FalInput("seed"),
    "num_images": FalInput("num_images"),
}

_KLING_MAP: dict[str, FalInput] = {
    "prompt": FalInput("prompt"),
    "image": FalInput("image_url"),
    "duration": FalInput("duration", _as_string),
    "negative_prompt": FalInput("negative_prompt"),
}

INPUT_MAP: dict[str, dict[str, FalInput]] = {
    "fal/fal-ai/flux/schnell": _FLUX_MAP,
    "fal/fal-ai/flux/dev": _FLUX_MAP,
    "fal/fal-ai/flux-pro/v1.1": _FLUX_MAP,
    "fal/fal-ai/bytedance/seedance/v1/pro/image-to-video": {
        "prompt": FalInput("prompt"),
        "image": FalInput("image_url"),
        "duration": FalInput("duration", _as_string),
        "resolution": FalInput("resolution"),
        "seed": FalInput("seed"),
    },
    "fal/fal-ai/kling-video/v2.1/standard/image-to-video": _KLING_MAP,
    "fal/fal-ai/kling-video/v2.5-turbo/pro/image-to-video": _KLING_MAP,
    "fal/fal-ai/kling-video/v2.5-turbo/standard/image-to-video": _KLING_MAP,
    "fal/fal-ai/minimax/hailuo-02/standard/image-to-video": {
        "prompt": FalInput("prompt"),
        "image": FalInput("image_url"),
        "duration": FalInput("duration", _as_string),
        "resolution": FalInput("resolution", _upper_p),
        "prompt_optimizer": FalInput("prompt_optimizer"),
    },
    "fal/bytedance/seedance-2.0/image-to-video": {
        "prompt": FalInput("prompt"),
        "image": FalInput("image_url"),
        "last_frame": FalInput("end_image_url"),
        "duration": FalInput("duration", _as_string),
        "resolution": FalInput("resolution"),
        "aspect_ratio": FalInput("aspect_ratio"),
        "generate_audio": FalInput("generate_audio"),
        "seed": FalInput("seed"),
    },
}


def to_fal_input(
    model_id: str | None, params: Mapping[str, Any], mapping: Mapping[str, FalInput] | None = None
) -> dict[str, Any]:
    """The model's input body for our normalised params (unmapped names pass through unchanged); `mapping`
    replaces the built-in map of this model (a user model's, from the catalog)."""
    if mapping is None:
        mapping = INPUT_MAP.get(model_id or "", {})
    body: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        target = mapping.get(name)
        if target is None:
            body[name] = value
        else:
            body[target.name] = target.convert(value) if target.convert else value
    return body


# --- the models ----------------------------------------------------------------------------------

PRICES_READ = "2026-12-06"
_RUN_NOTE = " Also runs as `run` with the model's own input."
_NEGATIVE = ParamSpec(type="string", max_length=2500, description="What to keep out of the video.")
_SEED = ParamSpec(type="integer", minimum=0, description="Random seed, for repeatable output.")


def _prompt(required: bool) -> ParamSpec:
    return ParamSpec(type="string", required=required, max_length=2000, description="What to make.")


_NOT_REREAD = "not re-read on fal's pages: no llms.txt for it was found on 2026-12-06; an older list price"
"""Why the prices of the models without `price_read` are unconfirmed."""


def _image_model(name: str, usd: float, what: str, est_seconds: float, *, unconfirmed: str | None) -> ModelSpec:
    return ModelSpec(
        id=f"fal/{name}",
        provider="fal",
        name=name,
        types=["generate-image", "run"],
        params={
            "prompt": _prompt(required=True),
            "aspect_ratio": ParamSpec(type="string", choices=ASPECT_RATIOS, description="Shape of the output."),
            "seed": _SEED,
            "num_images": ParamSpec(type="integer", minimum=1, maximum=4, default=1, description="Images to make."),
        },
        price=Price(unit="image", usd=usd),
        price_unconfirmed=unconfirmed,
        description=f"{what} on fal (approximately ${usd:g} per image).{_RUN_NOTE}",
        est_seconds=est_seconds,
    )


def _video_model(
    name: str,
    usd_per_s: float,
    what: str,
    durations: list[int],
    resolutions: list[str] | None,
    seed: bool,
    est_seconds: float,
    est_per_second: float,
    *,
    extra: dict[str, ParamSpec] | None = None,
    price_read: str | None = None,
    unconfirmed: str | None = None,
) -> ModelSpec:
    params: dict[str, ParamSpec] = {
        "prompt": _prompt(required=True),
        "image": ParamSpec(type="url", required=True, description="The first frame to animate."),
        "duration": ParamSpec(type="integer", choices=durations, default=durations[0], description="Seconds of video."),
    }
    if resolutions:
        params["resolution"] = ParamSpec(type="string", choices=resolutions, description="Output resolution.")
    if seed:
        params["seed"] = _SEED
    params.update(extra or {})
    return ModelSpec(
        id=f"fal/{name}",
        provider="fal",
        name=name,
        types=["generate-video", "run"],
        params=params,
        price=Price(unit="second", usd=usd_per_s),
        price_read=price_read,
        price_unconfirmed=unconfirmed,
        description=f"{what} on fal (approximately ${usd_per_s:g} per second of video).{_RUN_NOTE}",
        max_duration=float(max(durations)),
        est_seconds=est_seconds,
        est_seconds_per_second=est_per_second,
    )


MODELS: list[ModelSpec] = [
    _image_model("fal-ai/flux/schnell", 0.003, "FLUX.1 [schnell], fast text to image", 2.0, unconfirmed=_NOT_REREAD),
    _image_model("fal-ai/flux/dev", 0.025, "FLUX.1 [dev], text to image", 6.0, unconfirmed=_NOT_REREAD),
    _image_model("fal-ai/flux-pro/v1.1", 0.04, "FLUX1.1 [pro], text to image", 8.0, unconfirmed=_NOT_REREAD),
    _video_model(
        "fal-ai/bytedance/seedance/v1/pro/image-to-video",
        0.12,
        "ByteDance Seedance 1.0 Pro, image to video",
        [5, 10],
        ["480p", "720p", "1080p"],
        True,
        30.0,
        12.0,
        unconfirmed="not re-read on fal's pages: only the v1 Pro Fast page was found on 2026-12-06; an older list "
        "price",
    ),
    _video_model(
        "fal-ai/kling-video/v2.1/standard/image-to-video",
        0.056,
        "Kling 2.1 Standard, image to video, 720p",
        [5, 10],
        None,
        False,
        60.0,
        20.0,
        extra={"negative_prompt": _NEGATIVE},
        price_read=PRICES_READ,
    ),
    _video_model(
        "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
        0.07,
        "Kling 2.5 Turbo Pro, image to video, 1080p",
        [5, 10],
        None,
        False,
        60.0,
        12.0,
        extra={"negative_prompt": _NEGATIVE},
        price_read=PRICES_READ,
    ),
    _video_model(
        "fal-ai/kling-video/v2.5-turbo/standard/image-to-video",
        0.042,
        "Kling 2.5 Turbo Standard, image to video, 720p",
        [5, 10],
        None,
        False,
        45.0,
        10.0,
        extra={"negative_prompt": _NEGATIVE},
        price_read=PRICES_READ,
    ),
    _video_model(
        "fal-ai/minimax/hailuo-02/standard/image-to-video",
        0.045,
        "MiniMax Hailuo-02 Standard, image to video ($0.017/s at 512p)",
        [6, 10],
        ["512p", "768p"],
        False,
        60.0,
        15.0,
        extra={"prompt_optimizer": ParamSpec(type="boolean", description="Let the model rewrite the prompt.")},
        price_read=PRICES_READ,
    ),
    _video_model(
        "bytedance/seedance-2.0/image-to-video",
        0.3024,
        "ByteDance Seedance 2.0, image to video with sound, 4-15 s, price at 720p",
        [4, 15],
        ["480p", "720p"],
        True,
        90.0,
        15.0,
        extra={
            "duration": ParamSpec(type="integer", minimum=4, maximum=15, default=5, description="Seconds of video."),
            "last_frame": ParamSpec(type="url", description="A last frame to end on."),
            "aspect_ratio": ParamSpec(
                type="string",
                choices=["auto", "21:9", "16:9", "4:3", "1:1", "3:4", "9:16"],
                description="Shape of the output (auto: from the image).",
            ),
            "generate_audio": ParamSpec(type="boolean", default=True, description="Make sound with the video."),
        },
        price_read=PRICES_READ,
    ),
]
