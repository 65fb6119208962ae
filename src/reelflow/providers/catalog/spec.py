"""The catalog's types: parameters, rules, prices and models, and the shapes of ids and references."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, computed_field, model_validator

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
    pattern: str | None = None
    """A string must match this regular expression whole (Python and JSON Schema syntax alike)."""
    choices: list[Any] | None = None
    items: ParamSpec | None = None
    min_items: int | None = None
    max_items: int | None = None


class ParamRule(BaseModel):
    """A rule across parameters: at least one (`one_of`) or exactly one (`exactly_one_of`) of them, or each one
    above the one before, where given or defaulted (`increasing`: an overlay's start before its end)."""

    kind: Literal["one_of", "exactly_one_of", "increasing"]
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
    price_read: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    """The day (YYYY-MM-DD) the price was read from the provider's public pages; None when not known."""
    price_unconfirmed: str | None = Field(default=None, min_length=1, max_length=300)
    """Set when the price could not be confirmed on the provider's pages: where the estimate comes from instead.
    A price without `price_read` is unconfirmed whether or not this says why."""
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
        if self.price_read is not None and self.price_unconfirmed is not None:
            raise ValueError(f"model {self.id}: a price is either read (price_read) or unconfirmed, not both")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def price_confirmed(self) -> bool:
        """True when the price carries the day it was read from the provider's pages (nothing to confirm at $0)."""
        return self.price_read is not None or self.price.unit == "free" or self.price.usd == 0


MODEL_TYPES: tuple[str, ...] = ("generate-image", "generate-video", "generate-audio", "transcribe", "run")

ASPECT_RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"]


class OperationSpec(BaseModel):
    """A local operation (ffmpeg in the worker): its job type, what it does, its parameters and rules."""

    type: str
    description: str
    output: str
    """What it makes (a content type, or words when it depends on the parameters)."""
    params: dict[str, ParamSpec]
    rules: list[ParamRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> OperationSpec:
        for rule in self.rules:
            missing = [p for p in rule.params if p not in self.params]
            if missing:
                raise ValueError(f"operation {self.type}: rule names undeclared parameters {missing}")
        return self
