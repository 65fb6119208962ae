"""The model catalog: contents, the parameter checker, estimates, registration."""

from __future__ import annotations

from typing import Any

import pytest

from reelflow.providers import catalog
from reelflow.providers.catalog import (
    JOB_TYPES,
    MODEL_TYPES,
    OPERATIONS,
    ModelSpec,
    ParamSpec,
    Price,
    check_job_params,
    check_params,
    estimate_cost,
    estimate_seconds,
    get_model,
    is_reference,
    known_providers,
    list_models,
    params_with_defaults,
    register_model,
)


def check(specs: dict[str, ParamSpec], params: dict[str, Any], *, refs: bool = False) -> list[str]:
    errors = check_params(
        specs, params, extra_allowed=False, loc_prefix=["params"], job_key="j", allow_refs=refs, owner="test"
    )
    return [e.msg for e in errors]


def test_builtin_models_and_types() -> None:
    ids = [m.id for m in list_models()]
    assert ids[:6] == ["local/image", "local/video", "local/audio", "sim/image", "sim/video", "sim/audio"]
    assert get_model("sim/video") is not None and get_model("sim/video").types == ["generate-video", "run"]
    assert get_model("nope/x") is None
    assert {"local", "sim", "replicate", "fal", "elevenlabs", "openai"} <= known_providers()
    assert JOB_TYPES[:5] == MODEL_TYPES
    assert set(OPERATIONS) == {"merge-video-audio", "concat", "captions", "overlay", "transcode", "thumbnail"}
    assert all(m.price.unit == "free" for m in list_models() if m.provider == "local")


def test_models_serialise_for_the_catalog_endpoint() -> None:
    dumped = get_model("local/video").model_dump(mode="json")  # type: ignore[union-attr]
    assert dumped["params"]["duration"]["maximum"] == 60
    assert dumped["params"]["duration"]["default"] == 5


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("$clip", True),
        ("$clip.duration", True),
        ("$a.b.0", True),
        ("$Clip", False),
        ("$$clip", False),
        ("see $clip", False),
        ("$clip.", False),
        ("$", False),
        (5, False),
    ],
)
def test_reference_syntax(value: Any, ok: bool) -> None:
    assert is_reference(value) is ok


def test_numbers_integers_and_booleans_are_kept_apart() -> None:
    specs = {"n": ParamSpec(type="number"), "i": ParamSpec(type="integer"), "b": ParamSpec(type="boolean")}
    assert check(specs, {"n": 1, "i": 2, "b": False}) == []
    assert check(specs, {"n": True, "i": 2.5, "b": 1}) == [
        "job 'j': n must be a number (got true)",
        "job 'j': i must be an integer (got 2.5)",
        "job 'j': b must be true or false (got 1)",
    ]
    assert check(specs, {"n": float("nan")}) == ["job 'j': n must be a finite number (got nan)"]


def test_exclusive_minimum_and_ranges() -> None:
    specs = {"scale": ParamSpec(type="number", exclusive_minimum=0, maximum=1)}
    assert check(specs, {"scale": 0}) == ["job 'j': scale must be greater than 0 (got 0)"]
    assert check(specs, {"scale": 1.5}) == ["job 'j': scale must be at most 1 (got 1.5)"]
    assert check(specs, {"scale": 0.25}) == []


def test_lists_and_their_items() -> None:
    specs = {"v": ParamSpec(type="list", items=ParamSpec(type="url"), min_items=1, max_items=2)}
    assert check(specs, {"v": "https://x.test/a"}) == ["job 'j': v must be a list (got 'https://x.test/a')"]
    assert check(specs, {"v": ["https://x.test/a"] * 3}) == ["job 'j': v may have at most 2 items (got 3)"]
    assert check(specs, {"v": ["ftp://x.test/a"]}) == ["job 'j': v[0] must be an http(s) URL (got 'ftp://x.test/a')"]


def test_references_pass_only_when_allowed() -> None:
    specs = {"video": ParamSpec(type="url", required=True), "d": ParamSpec(type="number", maximum=3)}
    assert check(specs, {"video": "$clip", "d": "$clip.duration"}, refs=True) == []
    assert check(specs, {"video": "$clip", "d": 2}) == ["job 'j': video must be an http(s) URL (got '$clip')"]


def test_unknown_and_missing_parameters() -> None:
    specs = {"video": ParamSpec(type="url", required=True)}
    assert check(specs, {"vidoe": "https://x.test/v"}) == [
        "job 'j': missing required parameter 'video'",
        "job 'j': unknown parameter 'vidoe' for test (did you mean 'video'?)",
    ]


def test_extra_params_are_allowed_for_sim_but_declared_ones_still_checked() -> None:
    errors = check_job_params("generate-video", "sim/video", {"whatever": 1, "latency_s": -1}, job_key="s")
    assert [(e.loc, e.msg) for e in errors] == [
        (["params", "latency_s"], "job 's': latency_s must be at least 0 (got -1)")
    ]
    assert check_job_params("generate-video", "sim/video", {"fail": "permanent", "media": True}, job_key="s") == []


def test_check_job_params_for_an_unserved_pair() -> None:
    errors = check_job_params("generate-video", "local/image", {"prompt": "x"}, job_key="s")
    assert errors[0].msg == "job 's': no catalogued model local/image serves generate-video"


def test_estimates() -> None:
    sim = get_model("sim/video")
    assert estimate_cost(sim, {"cost_usd": 0.25}) == 0.25
    assert estimate_cost(sim, {}) == 0.0
    assert estimate_seconds(sim, {"latency_s": 2, "queue_s": 3}) == 5
    assert estimate_seconds(sim, {"latency_s": "$x.n"}) == 0
    local = get_model("local/video")
    assert estimate_cost(local, {"duration": 10}) == 0
    assert estimate_seconds(local, {"duration": 10}) > estimate_seconds(local, {"duration": 2}) > 0
    assert estimate_cost(None, {}) == 0
    assert estimate_seconds(None, {}, "concat") > 0


def test_prices_by_unit() -> None:
    def model(unit: Any, usd: float) -> ModelSpec:
        return ModelSpec(
            id="acme/m", provider="acme", name="m", types=["generate-video"], params={}, price=Price(unit=unit, usd=usd)
        )

    assert estimate_cost(model("run", 0.5), {}) == 0.5
    assert estimate_cost(model("second", 0.1), {"duration": 4}) == pytest.approx(0.4)
    assert estimate_cost(model("image", 0.01), {"num_outputs": 3}) == pytest.approx(0.03)
    assert estimate_cost(model("character", 0.001), {"text": "hello"}) == pytest.approx(0.005)


def test_register_model_is_just_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    spec = ModelSpec(
        id="acme/vid-1",
        provider="acme",
        name="vid-1",
        types=["generate-video"],
        params={"prompt": ParamSpec(type="string", required=True)},
        price=Price(unit="second", usd=0.05),
    )
    register_model(spec)
    assert get_model("acme/vid-1") is spec
    assert "acme" in known_providers()
    with pytest.raises(ValueError, match="already in the catalog"):
        register_model(spec)
    register_model(spec, replace=True)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "acme/x", "provider": "acme", "name": "y"},
        {"id": "acme/x", "provider": "acme", "name": "x", "types": ["teleport"]},
    ],
)
def test_inconsistent_model_specs_are_refused(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"types": ["generate-image"], "params": {}, "price": {"unit": "free"}}
    with pytest.raises(ValueError):
        ModelSpec.model_validate({**base, **fields})


def test_defaults_fill_only_absent_parameters() -> None:
    specs = get_model("local/video").params  # type: ignore[union-attr]
    assert params_with_defaults(specs, {"prompt": "x", "duration": 3}) == {"prompt": "x", "duration": 3}
    assert params_with_defaults(specs, {"prompt": "x"})["duration"] == 5
