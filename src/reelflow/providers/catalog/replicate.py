"""Replicate models: their parameters in our normalised names, prices, and the input name each maps to.

Prices are approximate public per-unit prices and only feed estimates and reported costs; Replicate's bill
is the truth. `INPUT_MAPS` says which Replicate input field each of our parameter names becomes (a name
absent from a map is passed under its own name).

Checked on 2026-12-06 against the models' input schemas on replicate.com (the version pages,
`replicate.com/<owner>/<name>/versions/<id>/api`, as stored by the search tool): google/veo-3.1,
minimax/hailuo-2.3, minimax/hailuo-02 (its resolutions are spelled `512p`, `768p`, `1080p`, lower case),
black-forest-labs/flux-1.1-pro, and google/veo-3-fast for the Veo 3 family's names. Where no replicate.com
page was in the corpus, the schema was read from a page that mirrors Replicate's (api.core.today's
`/v1/models/<owner>/<name>/llms.txt`): kwaivgi/kling-v2.1, kwaivgi/kling-v2.5-turbo-pro, wan-video/wan-2.5-i2v;
or from third-party copies of the model page: bytedance/seedance-1-pro and -lite, black-forest-labs/flux-dev,
ideogram-ai/ideogram-v3-turbo (its v3-quality sibling's replicate.com page has the same names).
wan-video/wan-2.2-i2v-fast and google/veo-3 (4, 6 or 8 s, `aspect_ratio`, `generate_audio`, 1080p by default)
from a copy of their `/api/schema` taken on 2026-10-05 (see below). Not checked (no page found): flux-schnell's
exact list, openai/whisper.

Prices (re-checked on 2026-12-06 with the search tool): no replicate.com model page itself is stored, but three
dated copies of Replicate's own price data are, and each model's `price_read` is the day its copy was taken:
- 2026-10-05: a project's fixture of the `billingConfig` that `replicate.com/<owner>/<name>/api/schema` serves
  ("Public provider schema/billingConfig captured 2026-10-05"): google/veo-3, google/veo-3.1,
  kwaivgi/kling-v2.1, wan-video/wan-2.2-i2v-fast (its input names too).
- 2026-10-07: API Evangelist's transcription of replicate.com/pricing ("every price_text was found verbatim in
  the fetched page text", raw.githubusercontent.com/api-evangelist/replicate/refs/heads/main/plans/
  replicate-plans-pricing.yml): the three FLUX models.
- 2026-10-08: a project's test "written from the Replicate schemas and price pages checked on 2026-10-08":
  kwaivgi/kling-v2.5-turbo-pro (the same $0.07/s as a table citing replicate.com on 2026-01-25).
The others carry `price_unconfirmed` instead, saying where their figure comes from; `reelflow models` and
`GET /v1/models` show them as unconfirmed. What was searched for them and not found: replicate.com model pages
and "per second of output video" quotes for Seedance 1 Pro and Lite, Hailuo 02 and 2.3, Wan 2.5 i2v, Ideogram
v3 Turbo and Whisper, in the pages, docs, code and issues corpora.
"""

from __future__ import annotations

from .spec import ASPECT_RATIOS, ModelSpec, ParamSpec, Price

PROVIDER = "replicate"


def _prompt(max_length: int = 2000, required: bool = True) -> ParamSpec:
    return ParamSpec(type="string", required=required, max_length=max_length, description="What to make.")


def _image(description: str, required: bool = False) -> ParamSpec:
    return ParamSpec(type="url", required=required, description=description)


def _seed() -> ParamSpec:
    return ParamSpec(type="integer", minimum=0, maximum=2**32 - 1, description="Random seed, for repeatable output.")


def _aspect(choices: list[str] | None = None, default: str | None = None) -> ParamSpec:
    return ParamSpec(
        type="string", choices=choices or ASPECT_RATIOS, default=default, description="Shape of the output."
    )


def _negative() -> ParamSpec:
    return ParamSpec(type="string", max_length=2000, description="What to keep out of the output.")


def _output_format(default: str = "png") -> ParamSpec:
    return ParamSpec(type="string", choices=["webp", "jpg", "png"], default=default, description="Image file format.")


def _num_outputs() -> ParamSpec:
    return ParamSpec(type="integer", minimum=1, maximum=4, description="How many images to make.")


def _spec(
    name: str,
    kind: str,
    params: dict[str, ParamSpec],
    price: Price,
    description: str,
    *,
    max_duration: float | None = None,
    est_seconds: float = 5.0,
    est_seconds_per_second: float = 0.0,
    price_read: str | None = None,
    unconfirmed: str | None = None,
) -> ModelSpec:
    return ModelSpec(
        id=f"{PROVIDER}/{name}",
        provider=PROVIDER,
        name=name,
        types=[f"generate-{kind}", "run"],
        params=params,
        price=price,
        price_read=price_read,
        price_unconfirmed=unconfirmed,
        description=description,
        max_duration=max_duration,
        est_seconds=est_seconds,
        est_seconds_per_second=est_seconds_per_second,
    )


_SEEDANCE_ASPECTS = ["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "9:21"]


def _seedance(default_resolution: str) -> dict[str, ParamSpec]:
    return {
        "prompt": _prompt(),
        "image": _image("A first frame to start from (image to video)."),
        "duration": ParamSpec(type="integer", minimum=2, maximum=12, default=5, description="Seconds of video."),
        "aspect_ratio": _aspect(_SEEDANCE_ASPECTS, "16:9"),
        "resolution": ParamSpec(type="string", choices=["480p", "720p", "1080p"], default=default_resolution),
        "fps": ParamSpec(type="integer", choices=[24], description="Frames per second."),
        "camera_fixed": ParamSpec(type="boolean", description="Keep the camera still."),
        "seed": _seed(),
    }


RESOLUTION_PRICES: dict[str, dict[str, float]] = {
    "replicate/bytedance/seedance-1-pro": {"480p": 0.03, "720p": 0.06, "1080p": 0.15},  # unconfirmed
    "replicate/bytedance/seedance-1-lite": {"480p": 0.018, "720p": 0.036, "1080p": 0.072},  # unconfirmed
    "replicate/minimax/hailuo-02": {"512p": 0.017, "768p": 0.045, "1080p": 0.08},  # unconfirmed
    "replicate/minimax/hailuo-2.3": {"768p": 0.045, "1080p": 0.08},  # unconfirmed
    "replicate/wan-video/wan-2.5-i2v": {"480p": 0.05, "720p": 0.10, "1080p": 0.15},  # unconfirmed
    # per video, not per second (its price unit is `run`); replicate.com/wan-video/wan-2.2-i2v-fast/api/schema,
    # copy of 2026-10-05: $0.05 at 480p, $0.11 at 720p ($0.065 and $0.145 with interpolate_output, not offered)
    "replicate/wan-video/wan-2.2-i2v-fast": {"480p": 0.05, "720p": 0.11},
}
"""USD per unit of the model's price (a second of output, or a run) by the `resolution` parameter."""

MODE_PRICES: dict[str, dict[str, float]] = {
    # replicate.com/kwaivgi/kling-v2.1/api/schema, copy of 2026-10-05: $0.05/s standard, $0.09/s pro
    "replicate/kwaivgi/kling-v2.1": {"standard": 0.05, "pro": 0.09},
}
"""USD per second of output by the `mode` parameter."""

AUDIO_PRICES: dict[str, dict[bool, float]] = {
    # replicate.com/google/veo-3/api/schema and .../veo-3.1/api/schema, copies of 2026-10-05: "with_audio"
    # $0.40/s, "without_audio" $0.20/s
    "replicate/google/veo-3": {True: 0.40, False: 0.20},
    "replicate/google/veo-3.1": {True: 0.40, False: 0.20},
}
"""USD per second of output by the `generate_audio` parameter."""

BILLING_COPY = "2026-10-05"
"""The day of the copy of Replicate's `billingConfig` (replicate.com/<owner>/<name>/api/schema) read."""
PRICING_PAGE_COPY = "2026-10-07"
"""The day of the transcription of replicate.com/pricing read."""


MODELS: list[ModelSpec] = [
    _spec(
        "bytedance/seedance-1-pro",
        "video",
        _seedance("1080p"),
        Price(unit="second", usd=0.15),
        "ByteDance Seedance 1 Pro: text or image to video, 2-12 s. About $0.03/s at 480p, $0.06/s at 720p, "
        "$0.15/s at 1080p (unconfirmed).",
        max_duration=12,
        est_seconds=30,
        est_seconds_per_second=10,
        unconfirmed="no dated copy of replicate.com/bytedance/seedance-1-pro's price was found; the figures are an "
        "older, undated quote of it",
    ),
    _spec(
        "bytedance/seedance-1-lite",
        "video",
        _seedance("720p"),
        Price(unit="second", usd=0.036),
        "ByteDance Seedance 1 Lite: text or image to video, 2-12 s. About $0.018/s at 480p, $0.036/s at 720p, "
        "$0.072/s at 1080p (unconfirmed).",
        max_duration=12,
        est_seconds=20,
        est_seconds_per_second=6,
        unconfirmed="no dated copy of replicate.com/bytedance/seedance-1-lite's price was found; the figures are an "
        "older, undated quote of it",
    ),
    _spec(
        "kwaivgi/kling-v2.1",
        "video",
        {
            "prompt": _prompt(2500),
            "image": _image("The first frame (Kling 2.1 animates an image).", required=True),
            "duration": ParamSpec(type="integer", choices=[5, 10], default=5, description="Seconds of video."),
            "mode": ParamSpec(
                type="string",
                choices=["standard", "pro"],
                default="standard",
                description="standard: 720p; pro: 1080p.",
            ),
            "negative_prompt": _negative(),
        },
        # replicate.com/kwaivgi/kling-v2.1/api/schema (billingConfig), copy of 2026-10-05
        Price(unit="second", usd=0.05),
        "Kuaishou Kling 2.1: image to video, 5 or 10 s. $0.05/s (standard, 720p) or $0.09/s (pro, 1080p) "
        "(read 2026-10-05).",
        max_duration=10,
        est_seconds=60,
        est_seconds_per_second=15,
        price_read=BILLING_COPY,
    ),
    _spec(
        "wan-video/wan-2.2-i2v-fast",
        "video",
        {
            "prompt": _prompt(),
            "image": _image("The first frame to animate.", required=True),
            "resolution": ParamSpec(type="string", choices=["480p", "720p"], default="480p"),
            "num_frames": ParamSpec(type="integer", minimum=81, maximum=121, description="Frames to make (16 fps)."),
            "seed": _seed(),
        },
        # replicate.com/wan-video/wan-2.2-i2v-fast/api/schema (billingConfig), copy of 2026-10-05
        Price(unit="run", usd=0.05),
        "Wan 2.2 image to video, fast: about 5 s of video. $0.05 per video at 480p, $0.11 at 720p (read 2026-10-05).",
        est_seconds=40,
        price_read=BILLING_COPY,
    ),
    _spec(
        "google/veo-3",
        "video",
        {
            "prompt": _prompt(),
            "image": _image("An image to start from."),
            "duration": ParamSpec(type="integer", choices=[4, 6, 8], default=8, description="Seconds of video."),
            "aspect_ratio": _aspect(["16:9", "9:16"], "16:9"),
            "resolution": ParamSpec(type="string", choices=["720p", "1080p"], default="1080p"),
            "generate_audio": ParamSpec(type="boolean", default=True, description="Make sound with the video."),
            "negative_prompt": _negative(),
            "seed": _seed(),
        },
        # replicate.com/google/veo-3/api/schema (billingConfig), copy of 2026-10-05: $0.40/s with audio, $0.20/s
        # without (the catalog said $0.75/s, Replicate's launch price)
        Price(unit="second", usd=0.40),
        "Google Veo 3: 4, 6 or 8 s of video, with sound unless told not to. $0.40/s with audio, $0.20/s without "
        "(read 2026-10-05).",
        max_duration=8,
        est_seconds=90,
        est_seconds_per_second=10,
        price_read=BILLING_COPY,
    ),
    _spec(
        "minimax/hailuo-02",
        "video",
        {
            "prompt": _prompt(),
            "image": _image("A first frame to start from."),
            "duration": ParamSpec(type="integer", choices=[6, 10], default=6, description="Seconds of video."),
            "last_frame": _image("A last frame to end on (needs `image`)."),
            "resolution": ParamSpec(
                type="string",
                choices=["512p", "768p", "1080p"],
                default="1080p",
                description="1080p allows 6 s only; 10 s needs 768p.",
            ),
            "prompt_optimizer": ParamSpec(type="boolean", description="Let the model rewrite the prompt."),
        },
        Price(unit="second", usd=0.08),
        "MiniMax Hailuo 02: text or image to video, 6 or 10 s. About $0.017/s at 512p, $0.045/s at 768p, $0.08/s "
        "at 1080p (unconfirmed).",
        max_duration=10,
        est_seconds=90,
        est_seconds_per_second=10,
        unconfirmed="no dated copy of replicate.com/minimax/hailuo-02's price was found; 512p and 768p match fal's "
        "Hailuo 02 Standard (read 2026-12-06), 1080p is an older, undated figure",
    ),
    _spec(
        "minimax/hailuo-2.3",
        "video",
        {
            "prompt": _prompt(),
            "image": _image("A first frame to start from; the video takes its aspect ratio."),
            "duration": ParamSpec(type="integer", choices=[6, 10], default=6, description="Seconds of video."),
            "resolution": ParamSpec(
                type="string",
                choices=["768p", "1080p"],
                default="768p",
                description="1080p allows 6 s only.",
            ),
            "prompt_optimizer": ParamSpec(type="boolean", description="Let the model rewrite the prompt."),
        },
        Price(unit="second", usd=0.045),
        "MiniMax Hailuo 2.3: text or image to video, 6 or 10 s, realistic motion. About $0.045/s at 768p, $0.08/s at "
        "1080p (unconfirmed: Hailuo 02's figures).",
        max_duration=10,
        est_seconds=90,
        est_seconds_per_second=10,
        unconfirmed="no copy of replicate.com/minimax/hailuo-2.3's price was found; the figures are Hailuo 02's",
    ),
    _spec(
        "google/veo-3.1",
        "video",
        {
            "prompt": _prompt(),
            "image": _image("A first frame to start from (16:9 or 9:16 fits best)."),
            "last_frame": _image("A last frame to end on (needs `image`)."),
            "duration": ParamSpec(type="integer", choices=[4, 6, 8], default=8, description="Seconds of video."),
            "aspect_ratio": _aspect(["16:9", "9:16"], "16:9"),
            "resolution": ParamSpec(type="string", choices=["720p", "1080p"], default="1080p"),
            "generate_audio": ParamSpec(type="boolean", default=True, description="Make sound with the video."),
            "negative_prompt": _negative(),
            "seed": _seed(),
        },
        # replicate.com/google/veo-3.1/api/schema (billingConfig), copy of 2026-10-05: $0.40/s with audio, $0.20/s
        # without (also so in a table citing replicate.com/google/veo-3.1 on 2026-01-25)
        Price(unit="second", usd=0.40),
        "Google Veo 3.1 on Replicate: text or image to video with sound, 4, 6 or 8 s, first and last frame. "
        "$0.40/s with audio, $0.20/s without (read 2026-10-05).",
        max_duration=8,
        est_seconds=90,
        est_seconds_per_second=10,
        price_read=BILLING_COPY,
    ),
    _spec(
        "kwaivgi/kling-v2.5-turbo-pro",
        "video",
        {
            "prompt": _prompt(2500),
            "image": _image("The first frame (image to video); without it, text to video."),
            "duration": ParamSpec(type="integer", choices=[5, 10], default=5, description="Seconds of video."),
            "aspect_ratio": _aspect(["16:9", "9:16", "1:1"], "16:9"),
            "negative_prompt": _negative(),
        },
        # replicate.com/kwaivgi/kling-v2.5-turbo-pro: $0.07/s in a project's test "written from the Replicate
        # schemas and price pages checked on 2026-10-08" (and in a table citing that page on 2026-01-25)
        Price(unit="second", usd=0.07),
        "Kuaishou Kling 2.5 Turbo Pro: text or image to video, 5 or 10 s, 1080p. $0.07/s (read 2026-10-08).",
        max_duration=10,
        est_seconds=60,
        est_seconds_per_second=10,
        price_read="2026-10-08",
    ),
    _spec(
        "wan-video/wan-2.5-i2v",
        "video",
        {
            "prompt": _prompt(),
            "image": _image("The first frame to animate.", required=True),
            "duration": ParamSpec(type="integer", choices=[5, 10], default=5, description="Seconds of video."),
            "resolution": ParamSpec(type="string", choices=["480p", "720p", "1080p"], default="720p"),
            "audio": _image("A sound track to follow (wav or mp3, 3 to 30 s)."),
            "negative_prompt": _negative(),
            "prompt_expansion": ParamSpec(type="boolean", description="Let the model expand the prompt."),
            "seed": _seed(),
        },
        Price(unit="second", usd=0.10),
        "Alibaba Wan 2.5 image to video with sound, 5 or 10 s. About $0.05/s at 480p, $0.10/s at 720p, $0.15/s at "
        "1080p (unconfirmed: fal's price for the same model).",
        max_duration=10,
        est_seconds=90,
        est_seconds_per_second=10,
        unconfirmed="no copy of replicate.com/wan-video/wan-2.5-i2v's price was found; the figures are fal's for "
        "the same model (undated projects quote the same for Replicate)",
    ),
    _spec(
        "black-forest-labs/flux-schnell",
        "image",
        {
            "prompt": _prompt(),
            "aspect_ratio": _aspect(),
            "seed": _seed(),
            "output_format": _output_format(),
            "num_outputs": _num_outputs(),
        },
        # replicate.com/pricing, transcribed 2026-10-07: "$3.00 / thousand output images"
        Price(unit="image", usd=0.003),
        "FLUX.1 [schnell]: fast text to image. $0.003 per image (read 2026-10-07).",
        est_seconds=2,
        price_read=PRICING_PAGE_COPY,
    ),
    _spec(
        "black-forest-labs/flux-dev",
        "image",
        {
            "prompt": _prompt(),
            "image": _image("An image to start from (image to image)."),
            "prompt_strength": ParamSpec(
                type="number", minimum=0, maximum=1, description="How far to move from the image."
            ),
            "aspect_ratio": _aspect(),
            "seed": _seed(),
            "output_format": _output_format(),
            "num_outputs": _num_outputs(),
            "guidance": ParamSpec(type="number", minimum=0, maximum=10, description="Prompt guidance."),
        },
        # replicate.com/pricing, transcribed 2026-10-07: "$0.025 / output image"
        Price(unit="image", usd=0.025),
        "FLUX.1 [dev]: text or image to image. $0.025 per image (read 2026-10-07).",
        est_seconds=5,
        price_read=PRICING_PAGE_COPY,
    ),
    _spec(
        "black-forest-labs/flux-1.1-pro",
        "image",
        {
            "prompt": _prompt(),
            "image": _image("An image to guide composition (Redux)."),
            "aspect_ratio": _aspect(),
            "seed": _seed(),
            "output_format": _output_format(),
            "safety_tolerance": ParamSpec(type="integer", minimum=1, maximum=6, description="1 strict, 6 loose."),
        },
        # replicate.com/pricing, transcribed 2026-10-07: "$0.04 / output image"
        Price(unit="image", usd=0.04),
        "FLUX1.1 [pro]: text to image. $0.04 per image (read 2026-10-07).",
        est_seconds=8,
        price_read=PRICING_PAGE_COPY,
    ),
    _spec(
        "ideogram-ai/ideogram-v3-turbo",
        "image",
        {
            "prompt": _prompt(),
            "aspect_ratio": _aspect(),
            "style_type": ParamSpec(type="string", choices=["None", "Auto", "General", "Realistic", "Design"]),
            "magic_prompt_option": ParamSpec(type="string", choices=["Auto", "On", "Off"]),
            "seed": _seed(),
        },
        Price(unit="image", usd=0.03),
        "Ideogram v3 Turbo: text to image, good at lettering. About $0.03 per image (unconfirmed).",
        est_seconds=8,
        unconfirmed="no copy of replicate.com/ideogram-ai/ideogram-v3-turbo's price was found; $0.03 is Ideogram's "
        "own API price for 3.0 Turbo (ideogram.ai/features/api-pricing)",
    ),
]

MODELS.append(
    ModelSpec(
        id=f"{PROVIDER}/openai/whisper",
        provider=PROVIDER,
        name="openai/whisper",
        types=["transcribe", "run"],
        params={
            "audio": ParamSpec(type="url", required=True, description="The speech to transcribe (audio or video)."),
            "language": ParamSpec(type="string", max_length=20, description="The spoken language (`en`, `english`)."),
        },
        price=Price(unit="run", usd=0.01),
        price_unconfirmed="a community model billed by GPU time, not by output: $0.01 is a rough guess of one run",
        description=(
            "OpenAI Whisper (large-v3) on Replicate: speech to text. About $0.01 a run (unconfirmed). A community"
            " model: pin a version (`replicate/openai/whisper:<version>`). Word timings come from its segments"
            " (spread over each segment's span when the model gives none)."
        ),
        est_seconds=20.0,
    )
)

MODELS_BY_ID: dict[str, ModelSpec] = {m.id: m for m in MODELS}

_SAME = ("prompt", "seed", "aspect_ratio", "resolution", "duration")

INPUT_MAPS: dict[str, dict[str, str]] = {
    "replicate/bytedance/seedance-1-pro": {
        **{n: n for n in _SAME},
        "image": "image",
        "fps": "fps",
        "camera_fixed": "camera_fixed",
    },
    "replicate/bytedance/seedance-1-lite": {
        **{n: n for n in _SAME},
        "image": "image",
        "fps": "fps",
        "camera_fixed": "camera_fixed",
    },
    "replicate/kwaivgi/kling-v2.1": {
        "prompt": "prompt",
        "image": "start_image",
        "duration": "duration",
        "mode": "mode",
        "negative_prompt": "negative_prompt",
    },
    "replicate/wan-video/wan-2.2-i2v-fast": {
        "prompt": "prompt",
        "image": "image",
        "resolution": "resolution",
        "num_frames": "num_frames",
        "seed": "seed",
    },
    "replicate/google/veo-3": {
        **{n: n for n in _SAME},
        "image": "image",
        "generate_audio": "generate_audio",
        "negative_prompt": "negative_prompt",
    },
    "replicate/minimax/hailuo-02": {
        "prompt": "prompt",
        "image": "first_frame_image",
        "last_frame": "last_frame_image",
        "duration": "duration",
        "resolution": "resolution",
        "prompt_optimizer": "prompt_optimizer",
    },
    "replicate/minimax/hailuo-2.3": {
        "prompt": "prompt",
        "image": "first_frame_image",
        "duration": "duration",
        "resolution": "resolution",
        "prompt_optimizer": "prompt_optimizer",
    },
    "replicate/google/veo-3.1": {
        **{n: n for n in _SAME},
        "image": "image",
        "last_frame": "last_frame",
        "generate_audio": "generate_audio",
        "negative_prompt": "negative_prompt",
    },
    "replicate/kwaivgi/kling-v2.5-turbo-pro": {
        "prompt": "prompt",
        "image": "start_image",
        "duration": "duration",
        "aspect_ratio": "aspect_ratio",
        "negative_prompt": "negative_prompt",
    },
    "replicate/wan-video/wan-2.5-i2v": {
        "prompt": "prompt",
        "image": "image",
        "duration": "duration",
        "resolution": "resolution",
        "audio": "audio",
        "negative_prompt": "negative_prompt",
        "prompt_expansion": "enable_prompt_expansion",
        "seed": "seed",
    },
    "replicate/black-forest-labs/flux-schnell": {
        "prompt": "prompt",
        "aspect_ratio": "aspect_ratio",
        "seed": "seed",
        "output_format": "output_format",
        "num_outputs": "num_outputs",
    },
    "replicate/black-forest-labs/flux-dev": {
        "prompt": "prompt",
        "image": "image",
        "prompt_strength": "prompt_strength",
        "aspect_ratio": "aspect_ratio",
        "seed": "seed",
        "output_format": "output_format",
        "num_outputs": "num_outputs",
        "guidance": "guidance",
    },
    "replicate/black-forest-labs/flux-1.1-pro": {
        "prompt": "prompt",
        "image": "image_prompt",
        "aspect_ratio": "aspect_ratio",
        "seed": "seed",
        "output_format": "output_format",
        "safety_tolerance": "safety_tolerance",
    },
    "replicate/ideogram-ai/ideogram-v3-turbo": {
        "prompt": "prompt",
        "aspect_ratio": "aspect_ratio",
        "style_type": "style_type",
        "magic_prompt_option": "magic_prompt_option",
        "seed": "seed",
    },
}
"""Model id -> {our parameter name: Replicate input name}."""
INPUT_MAPS["replicate/openai/whisper"] = {"audio": "audio", "language": "language"}


def base_model_id(model: str) -> str:
    """`replicate/owner/name:version` -> `replicate/owner/name`."""
    return model.split(":", 1)[0]


def is_image_model(model: str) -> bool:
    """True for catalogued Replicate models that make images (worth a `Prefer: wait`)."""
    spec = MODELS_BY_ID.get(base_model_id(model))
    return spec is not None and "generate-image" in spec.types
