"""Every catalogued model's parameters map to input names its provider documents.

The tables below hold, per model, the input names of the provider's public page read on 2026-12-06 (through the
search tool; the page is named in a comment). A model whose page could not be found is listed in UNCHECKED
with the reason, so a new model must either name its page here or say why it cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reelflow.providers.base import Task
from reelflow.providers.catalog import ModelSpec, ParamSpec, list_models
from reelflow.providers.catalog import elevenlabs as catalog_elevenlabs
from reelflow.providers.catalog import fal as catalog_fal
from reelflow.providers.catalog import google as catalog_google
from reelflow.providers.catalog import openai as catalog_openai
from reelflow.providers.catalog import replicate as catalog_replicate
from reelflow.providers.replicate import ReplicateProvider

REPLICATE: dict[str, set[str]] = {
    # replicate.com/google/veo-3.1/versions/ed5b1767.../api
    "replicate/google/veo-3.1": {
        "prompt", "aspect_ratio", "duration", "image", "last_frame", "reference_images", "negative_prompt",
        "resolution", "generate_audio", "seed",
    },
    # replicate.com/google/veo-3-fast/versions/368d4063.../api (the Veo 3 family's names), and
    # replicate.com/google/veo-3/api/schema as a project's fixture copied it on 2026-10-05
    "replicate/google/veo-3": {
        "prompt", "aspect_ratio", "duration", "image", "negative_prompt", "resolution", "generate_audio", "seed",
    },
    # replicate.com/minimax/hailuo-2.3/versions/23a02633.../api
    "replicate/minimax/hailuo-2.3": {"prompt", "first_frame_image", "duration", "resolution", "prompt_optimizer"},
    # replicate.com/minimax/hailuo-02/versions/c43b610e.../api
    "replicate/minimax/hailuo-02": {
        "prompt", "first_frame_image", "last_frame_image", "duration", "resolution", "prompt_optimizer",
    },
    # api.core.today/v1/models/kwaivgi/kling-v2.1/llms.txt (Replicate's schema, mirrored)
    "replicate/kwaivgi/kling-v2.1": {"prompt", "negative_prompt", "start_image", "end_image", "mode", "duration"},
    # api.core.today/v1/models/kwaivgi/kling-v2.5-turbo-pro/llms.txt (Replicate's schema, mirrored)
    "replicate/kwaivgi/kling-v2.5-turbo-pro": {
        "prompt", "negative_prompt", "start_image", "image", "aspect_ratio", "duration",
    },
    # api.core.today/v1/models/wan-video/wan-2.5-i2v/llms.txt (Replicate's schema, mirrored)
    "replicate/wan-video/wan-2.5-i2v": {
        "prompt", "image", "duration", "resolution", "audio", "negative_prompt", "enable_prompt_expansion", "seed",
    },
    # docs.genhub.me/api-reference/seedance-1-pro (a copy of replicate.com/bytedance/seedance-1-pro's schema)
    "replicate/bytedance/seedance-1-pro": {
        "prompt", "fps", "seed", "image", "duration", "resolution", "aspect_ratio", "camera_fixed", "last_frame_image",
    },
    # the same schema as Seedance 1 Pro (Replicate lists Pro and Lite with the same inputs)
    "replicate/bytedance/seedance-1-lite": {
        "prompt", "fps", "seed", "image", "duration", "resolution", "aspect_ratio", "camera_fixed", "last_frame_image",
    },
    # cinemasetfree.com/guides/generators/black-forest-labs/flux-dev (replicate.com/black-forest-labs/flux-dev's table)
    "replicate/black-forest-labs/flux-dev": {
        "prompt", "aspect_ratio", "disable_safety_checker", "go_fast", "guidance", "image", "megapixels",
        "num_inference_steps", "num_outputs", "output_format", "output_quality", "prompt_strength", "seed",
    },
    # replicate.com/black-forest-labs/flux-1.1-pro/versions/96ccd0e7.../api
    "replicate/black-forest-labs/flux-1.1-pro": {
        "prompt", "image_prompt", "aspect_ratio", "width", "height", "safety_tolerance", "seed", "prompt_upsampling",
        "output_format", "output_quality",
    },
    # replicate.com/wan-video/wan-2.2-i2v-fast/api/schema as a project's fixture copied it on 2026-10-05
    "replicate/wan-video/wan-2.2-i2v-fast": {
        "prompt", "image", "last_image", "num_frames", "resolution", "frames_per_second", "go_fast", "sample_shift",
        "interpolate_output", "disable_safety_checker", "lora_weights_transformer", "lora_scale_transformer",
        "lora_weights_transformer_2", "lora_scale_transformer_2", "seed",
    },
    # replicate.com/ideogram-ai/ideogram-v3-quality/versions/03944eb9.../api (the v3 family's names; no
    # negative_prompt, which the catalog offered before)
    "replicate/ideogram-ai/ideogram-v3-turbo": {
        "prompt", "aspect_ratio", "resolution", "magic_prompt_option", "image", "mask", "style_type",
        "style_reference_images", "style_preset", "seed",
    },
}  # fmt: skip

FAL: dict[str, set[str]] = {
    # fal.ai/models/fal-ai/kling-video/v2.1/standard/image-to-video/llms.txt
    "fal/fal-ai/kling-video/v2.1/standard/image-to-video": {
        "prompt", "image_url", "duration", "negative_prompt", "cfg_scale",
    },
    # fal.ai/models/fal-ai/kling-video/v2.5-turbo/pro/image-to-video/llms.txt
    "fal/fal-ai/kling-video/v2.5-turbo/pro/image-to-video": {
        "prompt", "image_url", "duration", "negative_prompt", "cfg_scale",
    },
    # fal.ai/models/fal-ai/kling-video/v2.5-turbo/standard/image-to-video/llms.txt
    "fal/fal-ai/kling-video/v2.5-turbo/standard/image-to-video": {
        "prompt", "image_url", "duration", "negative_prompt", "cfg_scale",
    },
    # fal.ai/models/fal-ai/minimax/hailuo-02/standard/image-to-video/llms.txt
    "fal/fal-ai/minimax/hailuo-02/standard/image-to-video": {
        "prompt", "image_url", "duration", "prompt_optimizer", "resolution",
    },
    # fal.ai/docs/model-api-reference/video-generation-api/bytedance-seedance-2.0-image-to-video
    "fal/bytedance/seedance-2.0/image-to-video": {
        "prompt", "image_url", "end_image_url", "duration", "resolution", "aspect_ratio", "generate_audio", "seed",
    },
}  # fmt: skip

GOOGLE = {"prompt", "image", "lastFrame", "negativePrompt", "aspectRatio", "resolution", "durationSeconds",
          "personGeneration"}  # fmt: skip
"""ai.google.dev's Veo reference as Google's SDK maps it (googleapis/java-genai, see catalog/google.py)."""

UNCHECKED: dict[str, str] = {
    "replicate/black-forest-labs/flux-schnell": "no schema page for it was found",
    "replicate/openai/whisper": "a community model pinned by version; no schema page was found",
    "fal/fal-ai/flux/schnell": "no llms.txt for it was found",
    "fal/fal-ai/flux/dev": "no llms.txt for it was found",
    "fal/fal-ai/flux-pro/v1.1": "no llms.txt for it was found",
    "fal/fal-ai/bytedance/seedance/v1/pro/image-to-video": "only the v1 Pro Fast page was found",
}
"""Catalogued models whose provider page could not be read, and why."""


def sample(spec: ParamSpec) -> Any:
    if spec.choices:
        return spec.choices[-1]
    return {"string": "x", "number": 1.0, "integer": 1, "boolean": True, "url": "https://x.test/a.png"}.get(
        spec.type, ["x"] if spec.type == "list" else {}
    )


def full_params(model: ModelSpec) -> dict[str, Any]:
    return {name: sample(p) for name, p in model.params.items()}


def remote(provider: str) -> list[ModelSpec]:
    return [m for m in list_models() if m.provider == provider]


def test_every_remote_model_is_checked_or_says_why_not() -> None:
    checked = set(REPLICATE) | set(FAL) | set(UNCHECKED)
    for provider in ("replicate", "fal"):
        missing = [m.id for m in remote(provider) if m.id not in checked]
        assert missing == [], f"name the documented inputs of {missing} (or say in UNCHECKED why not)"
    assert not set(REPLICATE) & set(UNCHECKED) and not set(FAL) & set(UNCHECKED)
    assert {*REPLICATE, *FAL, *UNCHECKED} <= {m.id for m in list_models()}


@pytest.mark.parametrize("model_id", sorted(REPLICATE))
def test_replicate_inputs_are_documented_names(model_id: str, tmp_path: Path) -> None:
    model = catalog_replicate.MODELS_BY_ID[model_id]
    task = Task("ex1", "job", model.types[0], model_id, full_params(model), 1, tmp_path)
    sent = ReplicateProvider("r8_test", "https://api.replicate.test/v1")._input(task)
    assert set(sent) <= REPLICATE[model_id], set(sent) - REPLICATE[model_id]
    assert len(sent) == len(model.params)  # every parameter reaches the input, under its own name


@pytest.mark.parametrize("model_id", sorted(FAL))
def test_fal_inputs_are_documented_names(model_id: str) -> None:
    [model] = [m for m in catalog_fal.MODELS if m.id == model_id]
    sent = catalog_fal.to_fal_input(model_id, full_params(model))
    assert set(sent) <= FAL[model_id], set(sent) - FAL[model_id]
    assert len(sent) == len(model.params)


def test_google_requests_use_the_gemini_api_names() -> None:
    for model in catalog_google.MODELS:
        params = full_params(model)
        instance, parameters = catalog_google.split_params(params)
        images = {catalog_google.INPUT_MAP[p][1] for p in catalog_google.IMAGE_PARAMS if p in params}
        assert set(instance) | set(parameters) | images <= GOOGLE
        assert set(params) <= set(catalog_google.INPUT_MAP), model.id


def test_openai_and_elevenlabs_bodies_use_their_documented_names() -> None:
    # platform.openai.com API reference: audio/speech and images/generations request bodies
    speech = catalog_openai.to_speech_body("gpt-4o-mini-tts", full_params(catalog_openai.MODELS_BY_ID[
        "openai/gpt-4o-mini-tts"]))  # fmt: skip
    assert set(speech) <= {"model", "input", "voice", "instructions", "speed", "response_format"}
    image = catalog_openai.to_image_body("gpt-image-1", full_params(catalog_openai.MODELS_BY_ID["openai/gpt-image-1"]))
    assert set(image) <= {"model", "prompt", "size", "n", "quality", "output_format", "background"}
    assert {m.provider for m in catalog_elevenlabs.MODELS} == {"elevenlabs"}


def test_prices_say_when_they_were_read() -> None:
    dated = {m.id: m.price_read for m in list_models() if m.price_read is not None}
    assert all(len(day) == 10 and day.startswith("2026-") for day in dated.values())
    assert {m.id for m in catalog_google.MODELS} <= set(dated)
    assert {"fal/bytedance/seedance-2.0/image-to-video", "fal/fal-ai/kling-video/v2.1/standard/image-to-video"} <= set(
        dated
    )
    assert catalog_fal.PRICES_READ == "2026-12-06"
    # Replicate: dated copies of its price data (catalog/replicate.py names them)
    replicate_days = {
        "google/veo-3": "2026-10-05", "google/veo-3.1": "2026-10-05", "kwaivgi/kling-v2.1": "2026-10-05",
        "wan-video/wan-2.2-i2v-fast": "2026-10-05", "black-forest-labs/flux-schnell": "2026-10-07",
        "black-forest-labs/flux-dev": "2026-10-07", "black-forest-labs/flux-1.1-pro": "2026-10-07",
        "kwaivgi/kling-v2.5-turbo-pro": "2026-10-08",
    }  # fmt: skip
    assert {f"replicate/{name}": day for name, day in replicate_days.items()}.items() <= dated.items()
    spec = next(m for m in list_models() if m.id == "fal/fal-ai/kling-video/v2.5-turbo/pro/image-to-video")
    assert spec.model_dump(mode="json")["price_read"] == "2026-12-06"  # GET /v1/models and `models --json`
    with pytest.raises(ValueError, match="price_read"):
        ModelSpec(**{**spec.model_dump(), "price_read": "December"})
