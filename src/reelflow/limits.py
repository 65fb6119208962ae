"""The limits file (REELFLOW_LIMITS_FILE) and the built-in provider limits it overrides.

```yaml
providers:                       # enforced across every worker process and machine
  replicate: {max_concurrent: 5, requests_per_minute: 600, creates_per_minute: 120,
              circuit: {failures: 5, cooldown_s: 60}}
models:
  replicate/bytedance/seedance-1-pro: {max_concurrent: 2}
tenants:                         # monthly: checked at submission; max_concurrent: held by the claim
  default: {monthly_executions: 1000, monthly_cost_usd: 500, max_concurrent: 200}
  acme: {monthly_cost_usd: 25, max_concurrent: 20}
```

A provider's entry is merged over the provider adapter's `default_limits`: a field the file leaves
out keeps the default, a field set to null lifts it. A tenant without an entry of its own gets the
`default` entry; a tenant's entry (its own or `default`) works the same way over the built-in tenant
limits, of which only `max_concurrent` has a value (TENANT_MAX_CONCURRENT). `load_limits` validates the
whole file at once and raises LimitsFileError naming every problem with its file, line, section, entry
and field.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelflow.circuits import (
    DEFAULT_COOLDOWN_S,
    DEFAULT_FAILURES,
    DEFAULT_MIN_CALLS,
    DEFAULT_MIN_SUCCESS_RATE,
    CircuitConfig,
)
from reelflow.errors import ReelflowError
from reelflow.providers.catalog import is_model_id, join_or, show, suggest

if TYPE_CHECKING:
    from reelflow.config import Settings

SECTIONS: tuple[str, ...] = ("providers", "models", "tenants")
DEFAULT_TENANT = "default"
"""The tenants entry that applies to every tenant without an entry of its own."""

TENANT_MAX_CONCURRENT = 200
"""The built-in `max_concurrent` of every tenant: a fifth of one worker's default slots (`--concurrency` 1000),
so a tenant flooding the queue leaves most of a worker to the others. `null` in the file lifts it."""

_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class _Entry(BaseModel):
    # Strict: YAML already gives numbers as numbers, so `"5"` or `true` is a mistake, not a 5 or a 1.
    # Built on first use (`defer_build`): without a limits file, a process may need none of them.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class CircuitLimit(_Entry):
    """When a circuit opens: after `failures` consecutive transient failures, or when fewer than
    `min_success_rate` of at least `min_calls` creates in the last five minutes succeeded; for `cooldown_s`
    seconds."""

    failures: int = Field(default=DEFAULT_FAILURES, ge=1)
    cooldown_s: float = Field(default=DEFAULT_COOLDOWN_S, gt=0, allow_inf_nan=False)
    min_success_rate: float = Field(default=DEFAULT_MIN_SUCCESS_RATE, ge=0, le=1, allow_inf_nan=False)
    min_calls: int = Field(default=DEFAULT_MIN_CALLS, ge=1)


class ProviderLimit(_Entry):
    """How hard reelflow may use one provider, across every worker process and machine."""

    max_concurrent: int | None = Field(default=None, ge=1)
    """Jobs of this provider running at once."""
    requests_per_minute: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """HTTP requests to this provider per minute (creates too, unless `creates_per_minute` is set)."""
    creates_per_minute: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Requests that start paid work (a prediction's create) per minute, a bucket of their own; set, creates
    no longer count against `requests_per_minute`."""
    circuit: CircuitLimit | None = None
    """This provider's circuits (its own and, without an entry of their own, its models')."""


class ModelLimit(_Entry):
    """How many jobs of one model may run at once (within its provider's limit)."""

    max_concurrent: int | None = Field(default=None, ge=1)
    circuit: CircuitLimit | None = None
    """This model's circuit (else its provider's)."""


class TenantLimit(_Entry):
    """A tenant's monthly usage limits, checked at submission against the estimate, and how many of its jobs
    may run at once. A field left out has its built-in value: none, except `max_concurrent`."""

    monthly_executions: int | None = Field(default=None, ge=0)
    monthly_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_concurrent: int | None = Field(default=TENANT_MAX_CONCURRENT, ge=1)
    """Jobs of this tenant running at once, across every worker process and machine (null: no cap)."""


_ENTRY_TYPES: dict[str, type[_Entry]] = {"providers": ProviderLimit, "models": ModelLimit, "tenants": TenantLimit}


def default_provider_limits() -> dict[str, ProviderLimit]:
    """The providers' documented limits (`ProviderInfo.default_limits`), by provider name."""
    from reelflow.providers.plugins import provider_infos

    out: dict[str, ProviderLimit] = {}
    for name, info in provider_infos().items():
        raw = info.default_limits
        if raw is None:
            continue
        values: dict[str, Any] = {}
        if raw.get("max_concurrent") is not None:
            values["max_concurrent"] = int(raw["max_concurrent"])
        for rate in ("requests_per_minute", "creates_per_minute"):
            if raw.get(rate) is not None:
                values[rate] = float(raw[rate])
        out[name] = ProviderLimit(**values)
    return out


class BuiltinDefaults(Mapping[str, "ProviderLimit"]):
    """`default_provider_limits()`, read on first use: finding them loads every provider module (and the
    plugins), which a command that only checks the limits file (`reelflow run --server`) never needs."""

    def __init__(self) -> None:
        self._limits: dict[str, ProviderLimit] | None = None

    def _loaded(self) -> dict[str, ProviderLimit]:
        if self._limits is None:
            self._limits = default_provider_limits()
        return self._limits

    def __getitem__(self, name: str) -> ProviderLimit:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def base_model_id(model_id: str) -> str:
    """`replicate/a/b:version` -> `replicate/a/b`; an unpinned id is returned as it is."""
    head, sep, _ = model_id.rpartition(":")
    return head if sep and "/" in head else model_id


@dataclass
class Limits:
    """Every limit in force: the built-in provider defaults with the limits file over them."""

    providers: dict[str, ProviderLimit]
    """The file's provider entries (only the fields they set count; see `provider`)."""
    models: dict[str, ModelLimit]
    tenants: dict[str, TenantLimit]
    defaults: Mapping[str, ProviderLimit] = field(default_factory=BuiltinDefaults)
    """The built-in provider limits (read from the providers when first used)."""
    source: str | None = None
    """The limits file these came from; None for the built-in defaults alone."""

    def provider(self, name: str) -> ProviderLimit:
        """The provider's limits: the file's entry merged over the built-in default."""
        base = self.defaults.get(name, ProviderLimit())
        entry = self.providers.get(name)
        if entry is None:
            return base
        update = {f: getattr(entry, f) for f in entry.model_fields_set}
        merged = base.model_copy(update=update)
        rpm, cpm = merged.requests_per_minute, merged.creates_per_minute
        if "creates_per_minute" not in entry.model_fields_set and rpm is not None and cpm is not None and cpm > rpm:
            # a file that lowers requests_per_minute without a word on creates means every request, creates too
            merged = merged.model_copy(update={"creates_per_minute": rpm})
        return merged

    def model_key(self, model_id: str) -> str | None:
        """The models entry that applies to `model_id` (its own, else its unpinned id's), or None."""
        if model_id in self.models:
            return model_id
        base = base_model_id(model_id)
        return base if base in self.models else None

    def model(self, model_id: str) -> ModelLimit:
        """The model's limits; a pinned version (`replicate/a/b:ver`) uses the entry of `replicate/a/b`."""
        key = self.model_key(model_id)
        return self.models[key] if key is not None else ModelLimit()

    def circuit(self, provider: str, model: str | None = None) -> CircuitConfig:
        """The circuit settings of `model` (its own entry, else its provider's, else the defaults)."""
        own = self.model(model).circuit if model else None
        chosen = own or self.provider(provider).circuit or CircuitLimit()
        return CircuitConfig(
            failures=chosen.failures, cooldown_s=chosen.cooldown_s, min_success_rate=chosen.min_success_rate,
            min_calls=chosen.min_calls,
        )  # fmt: skip

    def tenant(self, name: str) -> TenantLimit:
        """The tenant's own entry, else the `default` entry, else no limits."""
        if name in self.tenants:
            return self.tenants[name]
        return self.tenants.get(DEFAULT_TENANT, TenantLimit())

    def tenant_caps(self) -> tuple[dict[str, int | None], int | None]:
        """(tenant -> max_concurrent for the tenants with an entry of their own, the cap of every other tenant);
        None is no cap."""
        own = {t: lim.max_concurrent for t, lim in self.tenants.items() if t != DEFAULT_TENANT}
        return own, self.tenant(DEFAULT_TENANT).max_concurrent

    def provider_names(self) -> list[str]:
        """Every provider with a built-in default or a file entry, sorted."""
        return sorted(set(self.defaults) | set(self.providers))

    def concurrency_caps(self) -> tuple[dict[str, int], dict[str, int]]:
        """(provider -> max_concurrent, model -> max_concurrent), only the caps that are set."""
        providers: dict[str, int] = {}
        for name in self.provider_names():
            cap = self.provider(name).max_concurrent
            if cap is not None:
                providers[name] = cap
        models = {m: lim.max_concurrent for m, lim in self.models.items() if lim.max_concurrent is not None}
        return providers, models

    def rpm(self) -> dict[str, float]:
        """Provider -> requests_per_minute, only the providers that have one."""
        out: dict[str, float] = {}
        for name in self.provider_names():
            value = self.provider(name).requests_per_minute
            if value is not None:
                out[name] = value
        return out

    def cpm(self) -> dict[str, float]:
        """Provider -> creates_per_minute, only the providers that have one."""
        out: dict[str, float] = {}
        for name in self.provider_names():
            value = self.provider(name).creates_per_minute
            if value is not None:
                out[name] = value
        return out

    def as_dict(self) -> dict[str, Any]:
        """The limits in force, for display (`reelflow stats`): null means no limit."""
        return {
            "source": self.source,
            "providers": {name: _dump(self.provider(name)) for name in self.provider_names()},
            "models": {m: _dump(lim) for m, lim in sorted(self.models.items())},
            "tenants": {t: self.tenant(t).model_dump() for t in sorted({DEFAULT_TENANT, *self.tenants})},
        }


def _dump(entry: ProviderLimit | ModelLimit) -> dict[str, Any]:
    """An entry for display; `circuit` only where the file sets one."""
    return entry.model_dump(exclude=None if entry.circuit is not None else {"circuit"})


# --- the file --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitsProblem:
    """One thing wrong in a limits file: where (file, line, dotted path) and what."""

    source: str
    line: int | None
    loc: str
    msg: str

    def __str__(self) -> str:
        parts = [f"{self.source}:{self.line}" if self.line else self.source]
        if self.loc:
            parts.append(self.loc)
        return ": ".join([*parts, self.msg])


class LimitsFileError(ReelflowError):
    """A limits file that cannot be used; `problems` lists every one."""

    def __init__(self, source: str, problems: list[LimitsProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"invalid limits file: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"invalid limits file {self.source} ({len(self.problems)} problems):\n{lines}"


def _dotted(loc: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


class _Problems:
    """Collects the problems of one file, finding each one's line in the YAML node tree."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source = source
        self.root = root
        self.items: list[LimitsProblem] = []

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if not isinstance(node, yaml.MappingNode):
                break
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
            if not found:
                break
            key, node = found[-1]
            line = key.start_mark.line + 1
        return line

    def add(self, loc: Sequence[str | int], msg: str, *, line: int | None = None) -> None:
        self.items.append(LimitsProblem(self.source, line or self.line_of(loc), _dotted(loc), msg))


def _entry_problem(error: Any, fields: Sequence[str]) -> tuple[list[str | int], str]:
    """(loc inside the entry, message) for one pydantic error, in words a limits-file author can act on."""
    loc = [p for p in error["loc"] if isinstance(p, str | int)]
    kind = error["type"]
    got = show(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(loc[-1])
        return loc, f"unknown field '{name}'{suggest(name, fields)}; the fields are {join_or(list(fields))}"
    if kind == "model_type":
        return loc, f"must be a mapping of {join_or(list(fields))} (got {got})"
    if kind == "int_type":
        return loc, f"must be a whole number or null (got {got})"
    if kind == "float_type":
        return loc, f"must be a number or null (got {got})"
    if kind == "finite_number":
        return loc, f"must be a finite number (got {got})"
    if kind == "greater_than_equal":
        return loc, f"must be at least {show(ctx.get('ge'))} (got {got})"
    if kind == "greater_than":
        return loc, f"must be greater than {show(ctx.get('gt'))} (got {got})"
    if kind == "less_than_equal":
        return loc, f"must be at most {show(ctx.get('le'))} (got {got})"
    return loc, f"{error['msg']} (got {got})"


def _duplicate_keys(node: yaml.Node | None, loc: list[str | int], problems: _Problems) -> None:
    """YAML quietly keeps the last of two equal keys; a limits file must not have them."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name is None:
            continue
        if name in seen:
            problems.add(loc, f"duplicate key '{name}'", line=key.start_mark.line + 1)
        seen.add(name)
        _duplicate_keys(value, [*loc, name], problems)


def _check_name(section: str, name: str) -> str | None:
    """Why `name` cannot be an entry of `section`, or None."""
    if section == "providers" and not _PROVIDER_RE.match(name):
        return "a provider name is lower-case letters, digits, '_' and '-' (like 'replicate')"
    if section == "models" and not is_model_id(name):
        return "a model id is '<provider>/<model name>' (like 'replicate/bytedance/seedance-1-pro')"
    if section == "tenants":
        from reelflow.keys import TENANT_RE

        if not TENANT_RE.match(name):
            return "a tenant name is letters, digits, '_', '.' and '-' (at most 64)"
    return None


def parse_limits_text(text: str, source: str) -> Limits:
    """Validate a limits file's text; raise LimitsFileError naming every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" (column {mark.column + 1})" if mark is not None else ""
        line = mark.line + 1 if mark is not None else None
        raise LimitsFileError(
            source, [LimitsProblem(source, line, "", f"YAML syntax error: {problem}{where}")]
        ) from None
    problems = _Problems(source, root)
    _duplicate_keys(root, [], problems)
    tables: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.add([], f"the file must be a mapping with sections {join_or(list(SECTIONS))} (got {show(data)})")
        data = {}
    for key, section_data in data.items():
        if key not in SECTIONS:
            problems.add(
                [str(key)],
                f"unknown section '{key}'{suggest(str(key), SECTIONS)}; the sections are {join_or(SECTIONS)}",
            )
            continue
        if section_data is None:
            continue
        entry_type = _ENTRY_TYPES[key]
        fields = list(entry_type.model_fields)
        if not isinstance(section_data, Mapping):
            problems.add([key], f"must be a mapping of names to limits (got {show(section_data)})")
            continue
        for name, raw in section_data.items():
            if not isinstance(name, str):
                problems.add([key], f"an entry's name must be text (got {show(name)}); quote it")
                continue
            if why := _check_name(key, name):
                problems.add([key, name], f"'{name}' is not a valid name: {why}")
                continue
            try:
                tables[key][name] = entry_type.model_validate({} if raw is None else raw)
            except ValidationError as exc:
                for e in exc.errors():
                    loc, msg = _entry_problem(e, fields)
                    problems.add([key, name, *loc], msg)
    if problems.items:
        raise LimitsFileError(source, sorted(problems.items, key=lambda p: p.line or 0))
    return Limits(
        providers=tables["providers"],
        models=tables["models"],
        tenants=tables["tenants"],
        source=source,
    )


def load_limits(path: str | os.PathLike[str] | None) -> Limits:
    """The limits of a limits file over the built-in defaults; None gives the defaults alone."""
    if path is None:
        return Limits(providers={}, models={}, tenants={})
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LimitsFileError(source, [LimitsProblem(source, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise LimitsFileError(source, [LimitsProblem(source, None, "", "is a directory, not a file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LimitsFileError(source, [LimitsProblem(source, None, "", f"cannot be read: {exc}")]) from None
    return parse_limits_text(text, source)


_CACHE: dict[str | None, Limits] = {}
_LOCK = threading.Lock()


def get_limits(settings: Settings | None = None) -> Limits:
    """The limits of `settings.limits_file` (the process settings when None), read once per path."""
    if settings is None:
        from reelflow.config import get_settings

        settings = get_settings()
    path = settings.limits_file or None
    with _LOCK:
        cached = _CACHE.get(path)
        if cached is None:
            cached = _CACHE[path] = load_limits(path)
        return cached


def reset_limits() -> None:
    """Forget the limits read so far (tests)."""
    with _LOCK:
        _CACHE.clear()
