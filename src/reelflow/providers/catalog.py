"""The catalog of what can be run: models, local operations, their parameters and prices.

Everything here is data plus one validator (`check_params`). A new model is one more
`ModelSpec` in `BUILTIN_MODELS` (or a `register_model` call for a user catalog).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, model_validator

from reelflow.errors import ErrorItem

ParamType = Literal["string", "number", "integer", "boolean", "url", "list", "object"]

REFERENCE_PATTERN = r"^\$[a-z0-9][a-z0-9_-]{0,63}(\.[A-Za-z0-9_\-]+)*$"
"""A string that is exactly `$<job id>` or `$<job id>.<field>[.<field>...]` refers to a job's result."""

_REFERENCE_RE = re.compile(REFERENCE_PATTERN)
_MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*/[A-Za-z0-9][A-Za-z0-9._:+@-]*(/[A-Za-z0-9][A-Za-z0-9._:+@-]*)*$")


def is_reference(value: Any) -> bool:
    """True when `value` is a string that is exactly a reference (`$clip`, `$clip.duration`)."""
    return isinstance(value, str) and _REFERENCE_RE.match(value) is not None


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
            max_items=100,
            description="Videos to join, in order.",
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
        "cost_usd": ParamSpec(type="number", minimum=0, description="What the run reports it cost."),
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


def get_model(model_id: str) -> ModelSpec | None:
    """The catalogued model with this id, or None."""
    return _MODELS.get(model_id)


def list_models() -> list[ModelSpec]:
    """Every catalogued model, built-in first."""
    return list(_MODELS.values())


def known_providers() -> set[str]:
    """Providers of catalogued models plus the remote providers that run any model."""
    return {m.provider for m in _MODELS.values()} | set(OPEN_PROVIDERS)


def models_for_type(job_type: str) -> list[ModelSpec]:
    """Catalogued models that serve `job_type`."""
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


def _register_remote_models() -> None:
    """The built-in remote providers' models (their modules build on the definitions above)."""
    from . import catalog_elevenlabs, catalog_fal, catalog_openai, catalog_replicate

    for spec in (*catalog_replicate.MODELS, *catalog_fal.MODELS, *catalog_elevenlabs.MODELS, *catalog_openai.MODELS):
        register_model(spec, replace=True)


_register_remote_models()
