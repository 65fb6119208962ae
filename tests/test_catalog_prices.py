"""Every catalogued price says whether it was read from the provider's pages (and when) or is unconfirmed.

`price_read` is the day a price was read; `price_unconfirmed` says where an unconfirmed estimate comes from.
Both reach `GET /v1/models` and `reelflow models --json` (with `price_confirmed`), and `reelflow models` shows
"read <day>" or "unconfirmed" next to each price.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reelflow.cli.usage import price_words
from reelflow.providers.base import Task
from reelflow.providers.catalog import ModelSpec, list_models
from reelflow.providers.catalog import builtin as catalog_builtin
from reelflow.providers.catalog import elevenlabs as catalog_elevenlabs
from reelflow.providers.catalog import fal as catalog_fal
from reelflow.providers.catalog import google as catalog_google
from reelflow.providers.catalog import openai as catalog_openai
from reelflow.providers.catalog import replicate as catalog_replicate
from reelflow.providers.replicate import ReplicateProvider

IMG = "https://x.test/a.png"

BUILT_IN: list[ModelSpec] = [
    *catalog_replicate.MODELS,
    *catalog_fal.MODELS,
    *catalog_google.MODELS,
    *catalog_openai.MODELS,
    *catalog_elevenlabs.MODELS,
]


def unstated(models: list[ModelSpec]) -> list[str]:
    """Models with a price that says neither when it was read nor that it is unconfirmed."""
    return [
        m.id
        for m in models
        if m.price.unit != "free" and m.price.usd != 0 and (m.price_read is None) == (m.price_unconfirmed is None)
    ]


def test_every_built_in_price_is_read_on_a_day_or_marked_unconfirmed() -> None:
    assert {m.id for m in BUILT_IN} | {m.id for m in catalog_builtin.BUILTIN_MODELS} >= {m.id for m in list_models()}
    assert unstated(BUILT_IN) == []
    assert unstated(catalog_builtin.BUILTIN_MODELS) == []  # local and sim: free or $0
    # the check bites: a price with neither (or a spec built around the validator) is reported
    seedance = catalog_replicate.MODELS_BY_ID["replicate/bytedance/seedance-1-pro"]
    bare = seedance.model_copy(update={"price_unconfirmed": None})
    assert unstated([bare]) == [seedance.id] and not bare.price_confirmed


def test_replicate_prices_read_and_unconfirmed() -> None:
    by_id = catalog_replicate.MODELS_BY_ID
    read = {i: (m.price.usd, m.price_read) for i, m in by_id.items() if m.price_read}
    assert read == {
        "replicate/google/veo-3": (0.40, "2026-10-05"),
        "replicate/google/veo-3.1": (0.40, "2026-10-05"),
        "replicate/kwaivgi/kling-v2.1": (0.05, "2026-10-05"),
        "replicate/wan-video/wan-2.2-i2v-fast": (0.05, "2026-10-05"),
        "replicate/kwaivgi/kling-v2.5-turbo-pro": (0.07, "2026-10-08"),
        "replicate/black-forest-labs/flux-schnell": (0.003, "2026-10-07"),
        "replicate/black-forest-labs/flux-dev": (0.025, "2026-10-07"),
        "replicate/black-forest-labs/flux-1.1-pro": (0.04, "2026-10-07"),
    }
    unconfirmed = {i for i, m in by_id.items() if m.price_unconfirmed}
    assert unconfirmed == set(by_id) - set(read)
    for model_id in unconfirmed:  # the description says so too, never "approximate" as if read
        assert "unconfirmed" in by_id[model_id].description, model_id
    for model_id in read:
        assert f"(read {read[model_id][1]})" in by_id[model_id].description, model_id


def test_a_price_is_read_or_unconfirmed_never_both() -> None:
    spec = catalog_replicate.MODELS_BY_ID["replicate/google/veo-3"]
    with pytest.raises(ValueError, match="either read"):
        ModelSpec(**{**spec.model_dump(), "price_unconfirmed": "a guess"})
    with pytest.raises(ValueError, match="price_unconfirmed"):
        ModelSpec(**{**spec.model_dump(), "price_read": None, "price_unconfirmed": ""})


def test_the_catalog_json_says_which_prices_are_confirmed() -> None:
    items = {m.id: m.model_dump(mode="json") for m in list_models()}  # what GET /v1/models and --json give
    veo = items["replicate/google/veo-3"]
    assert (veo["price_read"], veo["price_unconfirmed"], veo["price_confirmed"]) == ("2026-10-05", None, True)
    hailuo = items["replicate/minimax/hailuo-2.3"]
    assert hailuo["price_read"] is None and hailuo["price_confirmed"] is False
    assert "Hailuo 02" in hailuo["price_unconfirmed"]
    assert items["local/video"]["price_confirmed"] is True and items["sim/video"]["price_confirmed"] is True
    assert ModelSpec(**veo) == catalog_replicate.MODELS_BY_ID["replicate/google/veo-3"]  # the JSON reads back


def test_price_words_name_the_day_or_say_unconfirmed() -> None:
    def item(model_id: str) -> dict[str, object]:
        return next(m.model_dump(mode="json") for m in list_models() if m.id == model_id)

    assert price_words(item("replicate/google/veo-3")) == "$0.4 / second, read 2026-10-05"
    assert price_words(item("replicate/bytedance/seedance-1-pro")) == "$0.15 / second, unconfirmed"
    assert price_words(item("local/image")) == "free"
    assert price_words(item("sim/image")) == "$0 / run"
    # a catalog file's model that gives no day is unconfirmed too, with or without a reason
    assert price_words({"price": {"unit": "image", "usd": 0.02}}) == "$0.02 / image, unconfirmed"


@pytest.mark.parametrize(
    ("model_id", "params", "cost"),
    [
        ("replicate/google/veo-3", {"prompt": "p", "duration": 8}, 3.2),  # with audio, the default
        ("replicate/google/veo-3", {"prompt": "p", "duration": 8, "generate_audio": False}, 1.6),
        ("replicate/google/veo-3.1", {"prompt": "p", "duration": 4, "generate_audio": False}, 0.8),
        ("replicate/kwaivgi/kling-v2.1", {"prompt": "p", "image": IMG, "mode": "pro"}, 0.45),
        ("replicate/wan-video/wan-2.2-i2v-fast", {"prompt": "p", "image": IMG}, 0.05),
        ("replicate/wan-video/wan-2.2-i2v-fast", {"prompt": "p", "image": IMG, "resolution": "720p"}, 0.11),
        ("replicate/black-forest-labs/flux-schnell", {"prompt": "p"}, 0.006),  # two images out
    ],
)  # fmt: skip
def test_reported_cost_follows_the_read_prices(
    model_id: str, params: dict[str, object], cost: float, tmp_path: Path
) -> None:
    spec = catalog_replicate.MODELS_BY_ID[model_id]
    task = Task("ex1", "job", spec.types[0], model_id, dict(params), 1, tmp_path)
    got = ReplicateProvider("r8_test", "https://api.replicate.test/v1")._cost(task, 2)
    assert got == pytest.approx(cost)
