"""The catalog of what can be run: models, local operations, their parameters and prices.

Everything here is data plus one validator (`check_params`). A new model is one more
`ModelSpec` in `BUILTIN_MODELS` (or a `register_model` call). Users add models without editing
reelflow through a catalog file (`REELFLOW_CATALOG_FILE`) or a provider plugin; both are loaded
on the first use of the catalog (`load_extensions`).
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reelflow.errors import ErrorItem, ReelflowError

if TYPE_CHECKING:
    from reelflow.config import Settings

ParamType = Literal["string", "number", "integer", "boolean", "url", "list", "object"]

REFERENCE_PATTERN = r"^\$[a-z0-9][a-z0-9_-]{0,63}(\.[A-Za-z0-9_\-]+)*$"
"""A string that is exactly `$<job id>` or `$<job id>.<field>[.<field>...]` refers to a job's result."""

_REFERENCE_RE = re.compile(REFERENCE_PATTERN)
_MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9._:+@-]*(/[A-Za-z0-9][A-Za-z0-9._:+@-]*)*$")


def is_reference(value: Any) -> bool:
    """True when `value` is a string that is exactly a reference (`$clip`, `$clip.duration`)."""
    return isinstance(value, str) and _REFERENCE_RE.fullmatch(value) is not None  # `$` alone allows a final "\n"


def unescape(value: str) -> str:
    """A string starting with `$$` stands for itself with one `$` less (`$$5` is the text `$5`)."""
    return value[1:] if value.startswith("$$") else value


def is_model_id(value: str) -> bool:
    """True when `value` is shaped like `<provider>/<model name>` (the name may hold more slashes)."""
    return _MODEL_ID_RE.match(value) is not None


def is_http_url(value: Any) -> bool:
    """True for an absolute http or https URL with a host and no whitespace."""
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class ParamSpec(BaseModel):
    """One parameter of a model or of a local operation."""

    type: ParamType
    required: bool = False
    description: str = ""
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    """The value must be strictly greater than this (e.g. a duration above 0)."""
    max_length: int | None = None
    choices: list[Any] | None = None
    items: ParamSpec | None = None
    min_items: int | None = None
    max_items: int | None = None


class ParamRule(BaseModel):
    """A rule across parameters: at least one (`one_of`) or exactly one (`exactly_one_of`) of them."""

    kind: Literal["one_of", "exactly_one_of"]
    params: list[str]


class Price(BaseModel):
    """What one unit costs in USD: per run, per image, per second of output, per character of input."""

    unit: Literal["free", "run", "image", "second", "character"]
    usd: float = 0.0


class ModelSpec(BaseModel):
    """A model a provider runs: the job types it serves, its parameters, its price."""

    id: str
    provider: str
    name: str
    types: list[str]
    params: dict[str, ParamSpec]
    rules: list[ParamRule] = Field(default_factory=list)
    extra_params: bool = False
    price: Price
    description: str = ""
    max_duration: float | None = None
    est_seconds: float = 5.0
    """Rough fixed time a run takes (used by estimates)."""
    est_seconds_per_second: float = 0.0
    """Rough extra time per second of output (used by estimates)."""

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.id != f"{self.provider}/{self.name}" or not is_model_id(self.id):
            raise ValueError(f"model id {self.id!r} must be '<provider>/<name>' ({self.provider}/{self.name})")
        unknown = [t for t in self.types if t not in MODEL_TYPES]
        if unknown or not self.types:
            raise ValueError(f"model {self.id}: types must be among {', '.join(MODEL_TYPES)} (got {unknown})")
        for rule in self.rules:
            missing = [p for p in rule.params if p not in self.params]
            if missing:
                raise ValueError(f"model {self.id}: rule names undeclared parameters {missing}")
        return self


# --- parameter building blocks -------------------------------------------------------------------

ASPECT_RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"]


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

MODEL_TYPES: tuple[str, ...] = ("generate-image", "generate-video", "generate-audio", "transcribe", "run")
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

_MODELS: dict[str, ModelSpec] = {m.id: m for m in BUILTIN_MODELS}


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model to the catalog (a user catalog); refuses to replace one unless asked."""
    if spec.id in _MODELS and not replace:
        raise ValueError(f"model {spec.id} is already in the catalog")
    _MODELS[spec.id] = spec


_VERSION_SUFFIX = re.compile(r"^[A-Za-z0-9]{1,128}$")


def get_model(model_id: str) -> ModelSpec | None:
    """The catalogued model with this id, or None. A pinned version (`replicate/owner/name:<version>`) is the
    catalogued model it pins."""
    _ensure_extensions()
    found = _MODELS.get(model_id)
    if found is None and ":" in model_id and _VERSION_SUFFIX.match(model_id.rpartition(":")[2]):
        found = _MODELS.get(model_id.rpartition(":")[0])
    return found


def list_models() -> list[ModelSpec]:
    """Every catalogued model, built-in first."""
    _ensure_extensions()
    return list(_MODELS.values())


def known_providers() -> set[str]:
    """Providers of catalogued models, the remote providers that run any model, and provider plugins."""
    _ensure_extensions()
    return {m.provider for m in _MODELS.values()} | set(OPEN_PROVIDERS) | _EXT.plugin_providers


def models_for_type(job_type: str) -> list[ModelSpec]:
    """Catalogued models that serve `job_type`."""
    _ensure_extensions()
    return [m for m in _MODELS.values() if job_type in m.types]


@dataclass(frozen=True)
class ParamSchema:
    """What `check_params` needs to check one job's params."""

    specs: dict[str, ParamSpec]
    rules: tuple[ParamRule, ...]
    extra_allowed: bool
    owner: str
    """Named in "unknown parameter ... for <owner>" messages."""


def param_schema(job_type: str, model: ModelSpec | None) -> ParamSchema | None:
    """The parameter schema of a job of this type on this model; None when it cannot be known."""
    if job_type == "run":
        return ParamSchema({"input": RUN_INPUT}, (), True, "run")
    if job_type in OPERATIONS:
        return ParamSchema(OPERATIONS[job_type], tuple(OPERATION_RULES.get(job_type, ())), False, job_type)
    if model is None or job_type not in model.types:
        return None
    return ParamSchema(model.params, tuple(model.rules), model.extra_params, f"model {model.id}")


def check_job_params(
    job_type: str,
    model_id: str | None,
    params: Mapping[str, Any],
    *,
    job_id: str,
    loc_prefix: Sequence[str | int] = ("params",),
    allow_refs: bool = False,
) -> list[ErrorItem]:
    """Check a job's params against its type and model (the worker's check of resolved values)."""
    model = get_model(model_id) if model_id else None
    schema = param_schema(job_type, model)
    if schema is None:
        return [ErrorItem(["model"], f"job '{job_id}': no catalogued model {model_id} serves {job_type}")]
    return check_params(
        schema.specs,
        params,
        extra_allowed=schema.extra_allowed,
        loc_prefix=list(loc_prefix),
        job_id=job_id,
        allow_refs=allow_refs,
        rules=schema.rules,
        owner=schema.owner,
    )


# --- the validator -------------------------------------------------------------------------------

_TYPE_WORDS: dict[str, str] = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "url": "an http(s) URL",
    "list": "a list",
    "object": "an object",
}


def fmt_number(x: float) -> str:
    """60.0 -> '60', 0.5 -> '0.5'."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def show(value: Any) -> str:
    """A short readable rendering of a user's value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return fmt_number(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def join_or(names: Sequence[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b or c'."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def suggest(name: str, candidates: Sequence[str]) -> str:
    """' (did you mean 'x'?)' when a candidate is close to `name`, else ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(
    spec: ParamSpec, value: Any, label: str, loc: list[str | int], allow_refs: bool
) -> list[tuple[list[str | int], str]]:
    """Problems with one value against its spec, as (loc, message without the job prefix)."""
    if allow_refs and isinstance(value, str):
        if is_reference(value):
            return []
        value = unescape(value)
    t = spec.type
    ok = {
        "string": isinstance(value, str),
        "url": is_http_url(value),
        "number": _is_number(value),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "list": isinstance(value, list | tuple),
        "object": isinstance(value, Mapping),
    }[t]
    if not ok:
        want = _TYPE_WORDS[t]
        if t == "url" and allow_refs:
            want += " or a reference such as '$clip'"
        return [(loc, f"{label} must be {want} (got {show(value)})")]
    if t in ("number", "integer") and not _finite(value):
        if isinstance(value, int):
            return [(loc, f"{label} is too large ({len(str(abs(value)))} digits)")]
        return [(loc, f"{label} must be a finite number (got {show(value)})")]
    if spec.choices is not None and value not in spec.choices:
        options = ", ".join(str(c) for c in spec.choices)
        return [(loc, f"{label} must be one of {options} (got {show(value)})")]
    problems: list[tuple[list[str | int], str]] = []
    if t in ("number", "integer"):
        if spec.exclusive_minimum is not None and value <= spec.exclusive_minimum:
            problems.append(
                (
                    loc,
                    f"{label} must be greater than {fmt_number(spec.exclusive_minimum)} (got {show(value)})",
                )
            )
        if spec.minimum is not None and value < spec.minimum:
            problems.append((loc, f"{label} must be at least {fmt_number(spec.minimum)} (got {show(value)})"))
        if spec.maximum is not None and value > spec.maximum:
            problems.append((loc, f"{label} must be at most {fmt_number(spec.maximum)} (got {show(value)})"))
    if t in ("string", "url") and spec.max_length is not None and len(value) > spec.max_length:
        problems.append((loc, f"{label} is longer than {spec.max_length} characters ({len(value)})"))
    if t == "list":
        n = len(value)
        if spec.min_items is not None and n < spec.min_items:
            problems.append((loc, f"{label} needs at least {spec.min_items} items (got {n})"))
        if spec.max_items is not None and n > spec.max_items:
            problems.append((loc, f"{label} may have at most {spec.max_items} items (got {n})"))
        if spec.items is not None:
            for i, item in enumerate(value):
                problems += _check_value(spec.items, item, f"{label}[{i}]", [*loc, i], allow_refs)
    return problems


def check_params(
    specs: Mapping[str, ParamSpec],
    params: Mapping[str, Any],
    *,
    extra_allowed: bool,
    loc_prefix: Sequence[str | int],
    job_id: str | None,
    allow_refs: bool,
    rules: Sequence[ParamRule] = (),
    owner: str | None = None,
) -> list[ErrorItem]:
    """Every problem with `params` against `specs` and `rules`, each naming the job and parameter.

    With `allow_refs`, a reference string passes any field's checks (its value is known only at
    run time) and a leading `$$` is read as a literal `$`; without it, values are checked as given.
    """
    prefix = f"job '{job_id}': " if job_id else ""
    base = list(loc_prefix)
    errors: list[ErrorItem] = []
    for name, spec in specs.items():
        if spec.required and name not in params:
            errors.append(ErrorItem([*base, name], f"{prefix}missing required parameter '{name}'"))
    for name, value in params.items():
        declared = specs.get(name)
        if declared is None:
            if not extra_allowed:
                where = f" for {owner}" if owner else ""
                hint = suggest(str(name), list(specs))
                errors.append(ErrorItem([*base, name], f"{prefix}unknown parameter '{name}'{where}{hint}"))
            continue
        for loc, msg in _check_value(declared, value, str(name), [*base, name], allow_refs):
            errors.append(ErrorItem(loc, prefix + msg))
    for rule in rules:
        present = [p for p in rule.params if params.get(p) is not None]
        if not present:
            errors.append(ErrorItem(base, f"{prefix}one of {join_or(rule.params)} is required"))
        elif rule.kind == "exactly_one_of" and len(present) > 1:
            got = " and ".join(present)
            errors.append(
                ErrorItem([*base, present[1]], f"{prefix}give only one of {join_or(rule.params)} (got {got})")
            )
    return errors


def params_with_defaults(specs: Mapping[str, ParamSpec], params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with each declared default filled in where the parameter is absent."""
    out = dict(params)
    for name, spec in specs.items():
        if name not in out and spec.default is not None:
            out[name] = spec.default
    return out


# --- rough estimates -----------------------------------------------------------------------------


def _num(params: Mapping[str, Any], name: str, fallback: float) -> float:
    value = params.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and _finite(value):
        return float(value)
    return fallback


def _finite(value: float) -> bool:
    """A number we can compare and store: finite, and an integer within 64 bits."""
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return math.isfinite(value)


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


_REMOTE_CATALOGS = ("catalog_replicate", "catalog_fal", "catalog_elevenlabs", "catalog_openai", "catalog_google")


def _register_remote_models(*, load: bool = True) -> None:
    """The built-in remote providers' models (their modules build on the definitions above), in this order.

    The modules and this one import each other. When one of them is imported first, it starts this module,
    which finds it half-built (no MODELS yet) and skips it; so each of them ends by calling this again with
    `load=False` (no imports: the modules already loaded, re-placed in order). Every model is then in the
    catalog, in the same order, whichever module was imported first."""
    for name in _REMOTE_CATALOGS:
        module = importlib.import_module(f"{__package__}.{name}") if load else sys.modules.get(f"{__package__}.{name}")
        for spec in getattr(module, "MODELS", ()):
            _MODELS.pop(spec.id, None)
            _MODELS[spec.id] = spec


_register_remote_models()


# --- user models: the catalog file (REELFLOW_CATALOG_FILE) and provider plugins -----------------
#
# A catalog file is YAML: `models:` and a list of entries shaped like `GET /v1/models` items, with
# `limits` (max_duration, prompt_length, text_length) and, per parameter, the provider's `input` name
# it maps to (`convert` too, for fal). Examples: examples/catalog.yaml. Plugins' models use the same
# entry format (or ready ModelSpecs). Everything is loaded once, when the catalog is first used.

NORMALISED_PARAMS: dict[str, tuple[ParamType, ...]] = {
    "prompt": ("string",),
    "text": ("string",),
    "voice": ("string",),
    "aspect_ratio": ("string",),
    "resolution": ("string",),
    "image": ("url",),
    "duration": ("number", "integer"),
    "seed": ("integer",),
}
"""Parameter names with one meaning across models (plans use these), and the types they may have."""

INPUT_MAPPED_BY: dict[str, str] = {"replicate": "INPUT_MAPS", "fal": "INPUT_MAP"}
"""Built-in adapters that read per-model input names (the catalog_<provider> map a user model joins)."""

FAL_CONVERTERS: tuple[str, ...] = ("string", "upper", "image_size")
"""Value conversions the fal adapter can apply on the way to a model's input."""

_PARAM_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileParamItem(ParamSpec):
    """A list parameter's items, as written in a catalog file."""

    model_config = ConfigDict(extra="forbid")
    items: FileParamItem | None = None


class FileParam(FileParamItem):
    """One parameter in a catalog file: a ParamSpec plus where it goes in the provider's input."""

    input: str | None = Field(default=None, min_length=1, max_length=200)
    """The provider's input name for this parameter (absent: passed under its own name)."""
    convert: Literal["string", "upper", "image_size"] | None = None
    """fal only: `string` ("5"), `upper` ("768P"), `image_size` (16:9 -> landscape_16_9)."""


class FileRule(ParamRule):
    model_config = ConfigDict(extra="forbid")


class FileLimits(_Strict):
    max_duration: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Longest output in seconds: caps the `duration` parameter."""
    prompt_length: int | None = Field(default=None, ge=1)
    """Longest `prompt` in characters."""
    text_length: int | None = Field(default=None, ge=1)
    """Longest `text` in characters."""


class FilePrice(_Strict):
    unit: Literal["free", "run", "image", "second", "character"]
    usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _usd_given(self) -> FilePrice:
        if self.unit != "free" and self.usd is None:
            raise ValueError(f"usd is required for a price per {self.unit}")
        if self.unit == "free" and self.usd:
            raise ValueError("a free model has no usd price (use unit run, image, second or character)")
        return self


class FileModel(_Strict):
    """One model entry of a catalog file (or of a plugin's `models()`)."""

    id: str = Field(min_length=3, max_length=300)
    types: list[str] = Field(min_length=1)
    description: str = ""
    params: dict[str, FileParam] = Field(default_factory=dict)
    rules: list[FileRule] = Field(default_factory=list)
    extra_params: bool = False
    price: FilePrice
    limits: FileLimits = Field(default_factory=FileLimits)
    est_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    est_seconds_per_second: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    replace: bool = False
    """Override a model of the same id that is already catalogued (a built-in one, say)."""


_FILE_FIELDS: tuple[str, ...] = tuple(
    sorted({f for cls in (FileModel, FileParam, FilePrice, FileLimits, FileRule) for f in cls.model_fields})
)


@dataclass(frozen=True)
class CatalogProblem:
    """One thing wrong in a catalog file: where (file, line, model, field) and what."""

    source: str
    line: int | None
    model: str | None
    loc: str
    """The field, as a dotted path inside the model entry (`params.prompt.type`)."""
    msg: str

    def __str__(self) -> str:
        parts = [f"{self.source}:{self.line}" if self.line else self.source]
        if self.model:
            parts.append(self.model)
        if self.loc:
            parts.append(self.loc)
        return ": ".join([*parts, self.msg])


class CatalogFileError(ReelflowError):
    """A catalog file (or a plugin's model list) that cannot be used; nothing of it was loaded."""

    def __init__(self, source: str, problems: list[CatalogProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"invalid catalog: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"invalid catalog: {self.source} ({len(self.problems)} problems):\n{lines}"


@dataclass(frozen=True)
class UserModel:
    """A validated user model, ready to install: its spec and what the adapters need besides."""

    spec: ModelSpec
    inputs: dict[str, str]
    """Our parameter name -> the provider's input name (only the ones that differ or were given)."""
    converts: dict[str, str]
    replace: bool


def _dotted(loc: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


class _Problems:
    """Collects problems of one source, finding line numbers in its YAML node tree when there is one."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source = source
        self.root = root
        self.items: list[CatalogProblem] = []

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
                if not found:
                    break
                key, node = found[-1]
                line = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def add(self, loc: Sequence[str | int], msg: str, *, model: str | None = None, base: int = 0) -> None:
        """`loc` from the document root; the part after `base` items is named as the field."""
        self.items.append(CatalogProblem(self.source, self.line_of(loc), model, _dotted(loc[base:]), msg))


def _pydantic_problem(error: Any) -> tuple[list[str | int], str]:
    """(loc to name, message) for one pydantic error, in words a catalog author can act on."""
    loc = [p for p in error["loc"] if isinstance(p, str | int)]
    kind = error["type"]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        return loc, f"unknown field '{name}'{suggest(name, _FILE_FIELDS)}"
    if kind == "missing":
        return loc, "required field missing"
    msg = str(error["msg"])
    if msg.startswith("Value error, "):
        return loc, msg[len("Value error, ") :]
    return loc, f"{msg} (got {show(error.get('input'))})"


def _limit_conflict(
    params: dict[str, ParamSpec], name: str, attr: str, limit: float, what: str
) -> tuple[list[str | int], str] | None:
    """Apply a limit to params[name].attr, or say why it conflicts with what the param declares."""
    spec = params[name]
    current = getattr(spec, attr)
    if current is None:
        params[name] = spec.model_copy(update={attr: limit})
        return None
    if current > limit:
        return ["params", name, attr], f"{fmt_number(current)} is above limits.{what} ({fmt_number(limit)})"
    return None


def _build_model(fm: FileModel, providers: set[str]) -> tuple[UserModel | None, list[tuple[list[str | int], str]]]:
    """The UserModel for a shape-checked entry, or the problems with it (loc relative to the entry)."""
    errs: list[tuple[list[str | int], str]] = []
    if not is_model_id(fm.id):
        return None, [(["id"], f"'{fm.id}' is not '<provider>/<model name>' (lower-case provider, no spaces)")]
    provider, _, name = fm.id.partition("/")
    if provider not in providers:
        known = sorted(providers)
        errs.append(
            (
                ["id"],
                f"unknown provider '{provider}'{suggest(provider, known)}; a catalog file adds models of "
                f"{join_or(known)}",
            )
        )
    for k, t in enumerate(fm.types):
        if t not in MODEL_TYPES:
            errs.append((["types", k], f"unknown job type '{t}'{suggest(t, MODEL_TYPES)}; use {join_or(MODEL_TYPES)}"))
    params: dict[str, ParamSpec] = {}
    inputs: dict[str, str] = {}
    converts: dict[str, str] = {}
    for pname, p in fm.params.items():
        if not _PARAM_NAME_RE.match(pname):
            errs.append((["params", pname], "a parameter name is lower-case letters, digits and _, from a letter"))
        want = NORMALISED_PARAMS.get(pname)
        if want and p.type not in want:
            errs.append((["params", pname, "type"], f"'{pname}' is a normalised parameter of type {join_or(want)}"))
        if p.input is not None:
            if provider in OPEN_PROVIDERS and provider not in INPUT_MAPPED_BY:
                errs.append(
                    (["params", pname, "input"], f"the {provider} adapter builds its request itself; remove input")
                )
            taken = [other for other, target in inputs.items() if target == p.input]
            if taken:
                errs.append((["params", pname, "input"], f"'{taken[0]}' maps to input '{p.input}' already"))
            inputs[pname] = p.input
        if p.convert is not None:
            if provider != "fal":
                errs.append((["params", pname, "convert"], "convert is read by the fal adapter only"))
            converts[pname] = p.convert
        spec = ParamSpec.model_validate(p.model_dump(exclude={"input", "convert"}))
        if p.default is not None:
            for _, msg in _check_value(spec, p.default, "default", [], allow_refs=False):
                errs.append((["params", pname, "default"], msg))
        params[pname] = spec
    for j, rule in enumerate(fm.rules):
        missing = [p for p in rule.params if p not in fm.params]
        if missing or not rule.params:
            errs.append((["rules", j, "params"], f"names undeclared parameters: {', '.join(missing) or 'none given'}"))
    limits = fm.limits
    if limits.max_duration is not None and "duration" in params:
        dur = params["duration"]
        if dur.choices and any(_is_number(c) and c > limits.max_duration for c in dur.choices):
            errs.append((["params", "duration", "choices"], "a choice is above limits.max_duration"))
        elif conflict := _limit_conflict(params, "duration", "maximum", limits.max_duration, "max_duration"):
            errs.append(conflict)
    for pname, limit in (("prompt", limits.prompt_length), ("text", limits.text_length)):
        if limit is None:
            continue
        if pname not in params:
            errs.append((["limits", f"{pname}_length"], f"the model has no '{pname}' parameter to limit"))
        elif conflict := _limit_conflict(params, pname, "max_length", limit, f"{pname}_length"):
            errs.append(conflict)
    if errs:
        return None, errs
    price = Price(unit=fm.price.unit, usd=fm.price.usd or 0.0)
    try:
        spec_ = ModelSpec(
            id=fm.id,
            provider=provider,
            name=name,
            types=fm.types,
            params=params,
            rules=[ParamRule(kind=r.kind, params=r.params) for r in fm.rules],
            extra_params=fm.extra_params,
            price=price,
            description=fm.description,
            max_duration=limits.max_duration,
            est_seconds=fm.est_seconds,
            est_seconds_per_second=fm.est_seconds_per_second,
        )
    except ValidationError as exc:
        return None, [([], _pydantic_problem(e)[1]) for e in exc.errors()]
    return UserModel(spec_, inputs, converts, fm.replace), []


def parse_model_entries(
    entries: Sequence[Any],
    *,
    source: str,
    providers: set[str],
    root: yaml.Node | None = None,
    prefix: Sequence[str | int] = (),
) -> list[UserModel]:
    """Validate model entries (the catalog-file format); raise CatalogFileError naming every problem.

    `providers` are the ones models may belong to; an id already in the catalog needs `replace: true`.
    """
    problems = _Problems(source, root)
    out: list[UserModel] = []
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        base = [*prefix, i]
        label = f"models[{i}]"
        raw_id = entry.get("id") if isinstance(entry, Mapping) else None
        if isinstance(raw_id, str):
            label = f"model '{raw_id}'"
            if raw_id in first:
                j = first[raw_id]
                line = problems.line_of([*prefix, j])
                at = f" (line {line})" if line and root is not None else ""
                msg = f"duplicate model id: models[{j}]{at} has it already"
                problems.add([*base, "id"], msg, model=label, base=len(base))
                continue
            first[raw_id] = i
        try:
            fm = FileModel.model_validate(entry)
        except ValidationError as exc:
            for e in exc.errors():
                loc, msg = _pydantic_problem(e)
                problems.add([*base, *loc], msg, model=label, base=len(base))
            continue
        built, errs = _build_model(fm, providers)
        for loc, msg in errs:
            problems.add([*base, *loc], msg, model=label, base=len(base))
        if fm.id in _MODELS and not fm.replace:
            origin = _EXT.installed[fm.id][0] if fm.id in _EXT.installed else "built in"
            problems.add(
                [*base, "id"],
                f"already in the catalog ({origin}); pick another id, or set `replace: true` to override it",
                model=label,
                base=len(base),
            )
        if built is not None:
            out.append(built)
    if problems.items:
        raise CatalogFileError(source, sorted(problems.items, key=lambda p: p.line or 0))
    return out


def _duplicate_keys(node: yaml.Node | None, loc: list[str | int], problems: _Problems) -> None:
    """YAML quietly keeps the last of two equal keys; a catalog file must not have them."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                problems.items.append(
                    CatalogProblem(
                        problems.source, key.start_mark.line + 1, None, _dotted(loc), f"duplicate key '{name}'"
                    )
                )
            if name is not None:
                seen.add(name)
            _duplicate_keys(value, [*loc, name if name is not None else "?"], problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, [*loc, i], problems)


def parse_catalog_text(text: str, source: str, providers: set[str] | None = None) -> list[UserModel]:
    """Validate a catalog file's text; raise CatalogFileError with file, line, model and field of each problem."""
    if providers is None:
        providers = set(OPEN_PROVIDERS) | _EXT.plugin_providers
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" (column {mark.column + 1})" if mark is not None else ""
        line = mark.line + 1 if mark is not None else None
        raise CatalogFileError(
            source, [CatalogProblem(source, line, None, "", f"YAML syntax error: {problem}{where}")]
        ) from None
    problems = _Problems(source, root)
    if data is None:
        problems.add([], "the file is empty; it needs `models:` and a list of models")
    elif not isinstance(data, Mapping):
        problems.add([], f"the file must be a mapping with a `models` list (got {show(data)})")
    else:
        for key in data:
            if key != "models":
                problems.add([str(key)], f"unknown top-level field '{key}'{suggest(str(key), ['models'])}")
        if "models" not in data:
            problems.add([], "`models:` is missing (a list of models)")
        elif not isinstance(data["models"], list):
            problems.add(["models"], f"`models` must be a list of models (got {show(data['models'])})")
    _duplicate_keys(root, [], problems)
    if problems.items:
        raise CatalogFileError(source, problems.items)
    return parse_model_entries(data["models"], source=source, providers=providers, root=root, prefix=["models"])


def load_catalog_file(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Read, validate and install a catalog file's models; all or nothing (CatalogFileError names each problem)."""
    _ensure_extensions()  # plugins first: their providers may have models here
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogFileError(source, [CatalogProblem(source, None, None, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogFileError(source, [CatalogProblem(source, None, None, "", f"cannot be read: {exc}")]) from None
    models = parse_catalog_text(text, source)
    for um in models:
        install_model(um, origin=f"from {source}")
    return [um.spec for um in models]


# --- installing user models (the catalog and the adapters' maps) ----------------------------------

_MISSING: Any = object()
_INPUT_NAMES: dict[str, dict[str, str]] = {}


def input_names(model_id: str) -> dict[str, str]:
    """A user model's {our parameter name: provider input name} (for plugin adapters; empty if none)."""
    return dict(_INPUT_NAMES.get(model_id, {}))


def _fal_converter(name: str) -> Any:
    from . import catalog_fal

    def to_string(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)

    def upper(value: Any) -> Any:
        return str(value).upper()

    def image_size(value: Any) -> Any:
        return catalog_fal.IMAGE_SIZES.get(str(value), value)

    return {"string": to_string, "upper": upper, "image_size": image_size}[name]


def _adapter_entries(um: UserModel) -> list[tuple[dict[str, Any], str, Any]]:
    """(map, key, value) entries the built-in adapters read for this model."""
    spec = um.spec
    if spec.provider == "replicate":
        from . import catalog_replicate

        key = catalog_replicate.base_model_id(spec.id)
        entries: list[tuple[dict[str, Any], str, Any]] = [(catalog_replicate.MODELS_BY_ID, key, spec)]
        if um.inputs:
            entries.append((catalog_replicate.INPUT_MAPS, key, dict(um.inputs)))
        return entries
    if spec.provider == "fal":
        from . import catalog_fal

        names = {**{n: n for n in um.converts}, **um.inputs}
        if not names:
            return []
        mapping = {
            n: catalog_fal.FalInput(target, _fal_converter(um.converts[n]) if n in um.converts else None)
            for n, target in names.items()
        }
        return [(catalog_fal.INPUT_MAP, spec.id, mapping)]
    if spec.provider == "elevenlabs":
        from . import catalog_elevenlabs

        return [(catalog_elevenlabs.MODELS_BY_ID, spec.id, spec)]
    return []


def install_model(um: UserModel, *, origin: str) -> None:
    """Put a user model in the catalog and in its adapter's maps; `unregister_model` undoes it all."""
    if um.spec.id in _EXT.installed:
        unregister_model(um.spec.id)
    undo: list[tuple[dict[str, Any], str, Any]] = []
    entries: list[tuple[dict[str, Any], str, Any]] = [(_MODELS, um.spec.id, um.spec)]
    if um.inputs:
        entries.append((_INPUT_NAMES, um.spec.id, dict(um.inputs)))
    for mapping, key, value in [*entries, *_adapter_entries(um)]:
        undo.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value
    _EXT.installed[um.spec.id] = (origin, undo)


def unregister_model(model_id: str) -> bool:
    """Remove a model a catalog file or a plugin added (restoring any built-in it replaced)."""
    found = _EXT.installed.pop(model_id, None)
    if found is None:
        return False
    for mapping, key, old in reversed(found[1]):
        if old is _MISSING:
            mapping.pop(key, None)
        else:
            mapping[key] = old
    return True


# --- loading once ----------------------------------------------------------------------------------


@dataclass
class _Extensions:
    state: Literal["new", "loading", "ready", "failed"] = "new"
    error: CatalogFileError | None = None
    plugin_providers: set[str] = field(default_factory=set)
    installed: dict[str, tuple[str, list[tuple[dict[str, Any], str, Any]]]] = field(default_factory=dict)
    """Model id -> (where it came from, how to undo its installation)."""


_EXT = _Extensions()
_EXT_LOCK = threading.RLock()


def _ensure_extensions() -> None:
    if _EXT.state not in ("ready", "loading"):
        load_extensions()


def load_extensions(settings: Settings | None = None, *, reload: bool = False) -> None:
    """Install provider plugins' models, then the catalog file (`REELFLOW_CATALOG_FILE`); once per process.

    Called on first use of the catalog; call it at startup to fail early on a bad file. Raises
    CatalogFileError (then again on every use of the catalog, until fixed and reloaded).
    """
    with _EXT_LOCK:
        if reload:
            reset_extensions()
        if _EXT.state in ("ready", "loading"):
            return
        if _EXT.state == "failed" and _EXT.error is not None:
            raise _EXT.error
        _EXT.state = "loading"
        try:
            from .plugins import load_plugins

            for plugin in load_plugins().values():
                _EXT.plugin_providers.add(plugin.name)
                for um in plugin.models:
                    install_model(um, origin=f"provider plugin '{plugin.name}'")
            if settings is None:
                from reelflow.config import get_settings

                settings = get_settings()
            if settings.catalog_file:
                load_catalog_file(settings.catalog_file)
        except CatalogFileError as exc:
            _EXT.state, _EXT.error = "failed", exc
            raise
        except BaseException:
            _EXT.state = "new"
            raise
        _EXT.state = "ready"


def reset_extensions() -> None:
    """Forget every plugin and catalog-file model (tests; `load_extensions(reload=True)`)."""
    from .plugins import reset_plugins

    with _EXT_LOCK:
        for model_id in list(_EXT.installed):
            unregister_model(model_id)
        _EXT.plugin_providers.clear()
        _EXT.state, _EXT.error = "new", None
        reset_plugins()
