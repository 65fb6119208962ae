"""Rough estimates of what one run costs and how long it takes, from a model's price and params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import ModelSpec
from .validation import _finite, _is_number


def _num(params: Mapping[str, Any], name: str, fallback: float) -> float:
    value = params.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and _finite(value):
        return float(value)
    return fallback


def _output_seconds(model: ModelSpec, params: Mapping[str, Any]) -> float:
    spec = model.params.get("duration")
    default = spec.default if spec is not None and _is_number(spec.default) else 5.0
    return _num(params, "duration", float(default))


def estimate_cost(model: ModelSpec | None, params: Mapping[str, Any]) -> float:
    """Rough USD cost of one run (0 for local operations; sim: its `cost_usd`)."""
    if model is None:
        return 0.0
    if "cost_usd" in model.params and "cost_usd" in params:
        return _num(params, "cost_usd", 0.0)
    price = model.price
    if price.unit == "free":
        return 0.0
    if price.unit == "run":
        return price.usd
    if price.unit == "image":
        return price.usd * max(1.0, _num(params, "num_outputs", _num(params, "num_images", 1.0)))
    if price.unit == "second":
        return price.usd * _output_seconds(model, params)
    text = params.get("text", params.get("prompt", ""))
    return price.usd * (len(text) if isinstance(text, str) else 0)


def estimate_seconds(model: ModelSpec | None, params: Mapping[str, Any], job_type: str | None = None) -> float:
    """Rough wall time of one run in seconds (sim: latency_s + queue_s)."""
    if model is None:
        if job_type == "run":
            return 30.0
        return 2.0 + 0.2 * _num(params, "duration", 0.0)
    if "latency_s" in model.params:
        return _num(params, "latency_s", 0.0) + _num(params, "queue_s", 0.0)
    return model.est_seconds + model.est_seconds_per_second * _output_seconds(model, params)
