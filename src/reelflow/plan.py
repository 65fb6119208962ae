"""Plans: the models, their validation, and references between jobs (pure: no I/O).

References: a string parameter that is exactly `"$<job id>"` stands for that job's primary
output (its result's `url`); `"$<job id>.<field>[.<field>...]"` reads a field of its result
(a numeric segment indexes a list). Only exact matches are references: `"see $clip"` is text.
A string that starts with `"$$"` is a literal whose value drops the first `$` (`"$$5"` is `"$5"`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reelflow.errors import ErrorItem, PlanError
from reelflow.providers.catalog import (
    JOB_TYPES,
    OPEN_PROVIDERS,
    OPERATIONS,
    REFERENCE_PATTERN,
    RUN_INPUT,
    Catalog,
    ParamRule,
    ParamSchema,
    ParamSpec,
    check_params,
    default_catalog,
    is_http_url,
    is_model_id,
    is_reference,
    join_or,
    operations,
    retired_message,
    show,
    suggest,
)

__all__ = [
    "JOB_ID_PATTERN",
    "MAX_JOBS",
    "REFERENCE_PATTERN",
    "SHORTHAND_JOB_ID",
    "JobSpec",
    "Plan",
    "PlanOptions",
    "find_references",
    "load_plan_text",
    "parse_plan",
    "plan_json_schema",
    "resolve_references",
]

JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_JOBS = 200
MAX_ERRORS = 100
"""A PlanError lists at most this many problems, then says how many more there were."""
SHORTHAND_JOB_ID = "job"
WEBHOOK_EVENT_PATTERN = r"^(\*|(execution|job)\.(\*|[a-z][a-z_]*))$"

_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
_WEBHOOK_EVENT_RE = re.compile(WEBHOOK_EVENT_PATTERN)
_STRICT = ConfigDict(extra="forbid", strict=True)


MAX_TIMEOUT_S = 30 * 86400.0
"""The longest `timeout_s` / `start_timeout_s` a plan may ask for: 30 days."""


class JobSpec(BaseModel):
    """One job of a plan."""

    model_config = _STRICT

    id: str = Field(json_schema_extra={"pattern": JOB_ID_PATTERN})
    type: str = Field(json_schema_extra={"enum": list(JOB_TYPES)})
    model: str | list[str] | None = Field(
        None,
        description="'<provider>/<model name>', or a list [primary, alternative, ...] tried in that order",
        json_schema_extra={"examples": ["local/video"]},
    )
    failover_on: Literal["transient", "any"] = Field(
        "transient", description="Errors that move a job to its next model: transient ones, or any."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="Limit on the whole job."
    )
    start_timeout_s: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False, description="Limit on the time in the provider's queue."
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts allowed for transient errors.")
    cache: bool | None = Field(None, description="Overrides options.cache for this job.")

    @property
    def models(self) -> list[str]:
        """The job's models in the order they are tried (none for a local operation)."""
        if self.model is None:
            return []
        return [self.model] if isinstance(self.model, str) else list(self.model)

    @property
    def primary(self) -> str | None:
        """The model the job runs first."""
        return self.models[0] if self.models else None


class PlanOptions(BaseModel):
    """How a whole execution runs."""

    model_config = _STRICT

    on_failure: Literal["stop", "continue"] = "stop"
    cache: bool = True
    priority: int = Field(0, ge=-1000, le=1000)
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False)
    webhook_events: list[str] | None = None


class Plan(BaseModel):
    """A validated plan: build it with `parse_plan`, which checks what the model alone cannot."""

    model_config = _STRICT

    jobs: list[JobSpec]
    webhook: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    options: PlanOptions = Field(default_factory=PlanOptions)

    def job(self, job_key: str) -> JobSpec:
        """The job with this id (KeyError when there is none)."""
        for job in self.jobs:
            if job.id == job_key:
                return job
        raise KeyError(job_key)

    def dependencies(self) -> dict[str, list[str]]:
        """Job id -> the jobs it waits on (depends_on and references), in plan order, no duplicates."""
        order = {job.id: pos for pos, job in enumerate(self.jobs)}
        out: dict[str, list[str]] = {}
        for job in self.jobs:
            deps = {d for d in job.depends_on if d in order}
            deps |= {ref for ref, _, _ in find_references(job.params) if ref in order}
            deps.discard(job.id)
            out[job.id] = sorted(deps, key=order.__getitem__)
        return out

    def dependents(self, dependencies: Mapping[str, list[str]] | None = None) -> dict[str, list[str]]:
        """Job id -> the jobs that wait on it, in plan order (from `dependencies()`, or the result of it given)."""
        out: dict[str, list[str]] = {job.id: [] for job in self.jobs}
        for job_key, deps in (self.dependencies() if dependencies is None else dependencies).items():
            for dep in deps:
                out[dep].append(job_key)
        return out

    def sinks(self) -> list[str]:
        """Jobs nobody depends on (the plan's results), in plan order."""
        return [job_key for job_key, users in self.dependents().items() if not users]

    def topological_order(self) -> list[str]:
        """Job ids so that each comes after its dependencies; ties keep plan order."""
        deps = self.dependencies()
        done: set[str] = set()
        order: list[str] = []
        while len(order) < len(deps):
            for job_key, needs in deps.items():
                if job_key not in done and all(d in done for d in needs):
                    done.add(job_key)
                    order.append(job_key)
                    break
            else:  # pragma: no cover - parse_plan rejects cycles
                raise ValueError("plan has a cycle")
        return order


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan (for editors and for programs that write plans).

    A job's `params` follow its type: each local operation's parameters (from the catalog's operation specs)
    are a definition `params.<type>`, chosen by `type` (`if`/`then`); a `run` job takes `input`; the other
    types' params depend on the model (see `/v1/models`). Any value may also be a reference (`$clip`)."""
    schema = Plan.model_json_schema()
    defs = schema["$defs"]
    defs["Reference"] = {
        "type": "string",
        "pattern": REFERENCE_PATTERN,
        "description": "A reference to a job's result ($<job id>) or one of its fields ($<job id>.<field>).",
    }
    chosen: list[dict[str, Any]] = []
    for op in operations():
        name = f"params.{op.type}"
        defs[name] = _params_schema(op.params, op.rules, op.description)
        chosen.append(_when_type(op.type, name))
    defs["params.run"] = _params_schema({"input": RUN_INPUT}, [], "Any model, its input passed as given.", extra=True)
    chosen.append(_when_type("run", "params.run"))
    defs["JobSpec"]["allOf"] = chosen
    return schema


def _when_type(job_type: str, definition: str) -> dict[str, Any]:
    return {
        "if": {"properties": {"type": {"const": job_type}}, "required": ["type"]},
        "then": {"properties": {"params": {"$ref": f"#/$defs/{definition}"}}},
    }


def _params_schema(
    specs: Mapping[str, ParamSpec], rules: Sequence[ParamRule], description: str, extra: bool = False
) -> dict[str, Any]:
    """The JSON Schema of a params object made of `specs` and `rules`."""
    out: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {name: _value_schema(spec, top=True) for name, spec in specs.items()},
        "additionalProperties": extra,
    }
    if required := [name for name, spec in specs.items() if spec.required]:
        out["required"] = required
    for rule in rules:
        if rule.kind == "increasing":  # an order between values: JSON Schema cannot say it; the plan check does
            continue
        each = [{"required": [p], "properties": {p: {"not": {"type": "null"}}}} for p in rule.params]
        out.setdefault("allOf", []).append({"oneOf" if rule.kind == "exactly_one_of" else "anyOf": each})
    return out


_JSON_TYPES = {"url": "string", "list": "array"}


def _value_schema(spec: ParamSpec, top: bool = False) -> dict[str, Any]:
    """The JSON Schema of one parameter's value (a reference is allowed too)."""
    value: dict[str, Any] = {"type": _JSON_TYPES.get(spec.type, spec.type)}
    if spec.type == "url":
        value.update(format="uri", pattern="^https?://")
    for key, limit in (
        ("minimum", spec.minimum),
        ("maximum", spec.maximum),
        ("exclusiveMinimum", spec.exclusive_minimum),
        ("maxLength", spec.max_length),
        ("minItems", spec.min_items),
        ("maxItems", spec.max_items),
    ):
        if limit is not None:
            value[key] = limit
    if spec.pattern is not None:
        value["pattern"] = f"^(?:{spec.pattern})$"
    if spec.choices is not None:
        value["enum"] = list(spec.choices)
    if spec.items is not None:
        value["items"] = _value_schema(spec.items)
    out: dict[str, Any] = {"anyOf": [value, {"$ref": "#/$defs/Reference"}]}
    if top and spec.description:
        out["description"] = spec.description
    if top and spec.default is not None:
        out["default"] = spec.default
    return out


# --- loading text --------------------------------------------------------------------------------


class _PlanLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and keeps `16:9` and dates as plain strings."""


_PlanLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlanLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _PlanLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in out
        except TypeError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from exc
        if seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_PlanLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _load_json(text: str, name: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs)
    except json.JSONDecodeError as exc:
        msg = f"{name}: JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise PlanError([ErrorItem([], msg)]) from None
    except ValueError as exc:
        raise PlanError([ErrorItem([], f"{name}: {exc}")]) from None


def _load_yaml(text: str, name: str) -> Any:
    try:
        return yaml.load(text, Loader=_PlanLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise PlanError([ErrorItem([], f"{name}: YAML syntax error{where}: {what}")]) from None
    except yaml.YAMLError as exc:
        raise PlanError([ErrorItem([], f"{name}: YAML syntax error: {exc}")]) from None


def load_plan_text(text: str, *, filename: str | None = None) -> Any:
    """JSON or YAML text -> plain data (not yet validated); PlanError with line and column on bad syntax.

    A `.json` file is read as JSON, a `.yaml`/`.yml` file as YAML; otherwise text that starts with
    `{` or `[` is tried as JSON first, then as YAML (whose flow style looks alike).
    """
    name = filename or "plan"
    lower = (filename or "").lower()
    if lower.endswith(".json"):
        return _load_json(text, name)
    if lower.endswith((".yaml", ".yml")):
        return _load_yaml(text, name)
    if text.lstrip().startswith(("{", "[")):
        try:
            return _load_json(text, name)
        except PlanError as json_error:
            try:
                return _load_yaml(text, name)
            except PlanError:
                raise json_error from None
    return _load_yaml(text, name)


# --- references ----------------------------------------------------------------------------------


def _split_reference(ref: str) -> tuple[str, str | None]:
    job_key, _, field = ref[1:].partition(".")
    return job_key, field or None


def find_references(value: Any) -> list[tuple[str, str | None, list[str | int]]]:
    """Every reference in `value` (nested lists and maps too): (job id, field path or None, location), in
    document order. Called for every job several times per submission: the top level of a plain dict (a
    job's params, mostly flat) is read in a loop of its own, a path is copied only where a reference is
    found, and plain strings, dicts and lists are told apart before the (slower) Mapping check."""
    found: list[tuple[str, str | None, list[str | int]]] = []
    if type(value) is dict:
        for key, item in value.items():
            if type(item) is str:
                if item[:1] == "$" and is_reference(item):
                    job_key, field = _split_reference(item)
                    found.append((job_key, field, [key]))
            elif not isinstance(item, int | float | bool | None):
                _visit_references(item, [key], found)
    else:
        _visit_references(value, [], found)
    return found


def _visit_references(item: Any, path: list[str | int], found: list[tuple[str, str | None, list[str | int]]]) -> None:
    if isinstance(item, str):
        if item.startswith("$") and is_reference(item):
            job_key, field = _split_reference(item)
            found.append((job_key, field, list(path)))
    elif isinstance(item, dict) or (not isinstance(item, list | tuple) and isinstance(item, Mapping)):
        for key, sub in item.items():
            path.append(key)
            _visit_references(sub, path, found)
            path.pop()
    elif isinstance(item, list | tuple):
        for i, sub in enumerate(item):
            path.append(i)
            _visit_references(sub, path, found)
            path.pop()


def _path_label(loc: Sequence[str | int]) -> str:
    """['params', 'videos', 2] -> 'params.videos[2]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _keys_hint(value: Any) -> str:
    if isinstance(value, Mapping) and value:
        keys = ", ".join(str(k) for k in list(value)[:12])
        return f" (it has: {keys})"
    return ""


def _lookup(ref: str, results: Mapping[str, Mapping[str, Any]]) -> tuple[Any, str | None]:
    """The value a reference stands for, or (None, why it has none)."""
    job_key, field = _split_reference(ref)
    if job_key not in results or results[job_key] is None:
        return None, f"refers to job '{job_key}', which has no result"
    current: Any = results[job_key]
    if field is None:
        if not isinstance(current, Mapping) or current.get("url") is None:
            return None, f"refers to job '{job_key}', whose result has no url{_keys_hint(current)}"
        return current["url"], None
    walked = ""
    for part in field.split("."):
        walked = f"{walked}.{part}" if walked else part
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list | tuple) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None, f"refers to '{ref}', but job '{job_key}' has no field '{walked}'{_keys_hint(current)}"
    return current, None


def resolve_references(
    params: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]], *, job_key: str | None = None
) -> dict[str, Any]:
    """A copy of `params` with every reference replaced by the value it stands for in `results`.

    `results` maps a job id to its result (`url` and other fields). A `$$` prefix loses one `$`.
    Raises PlanError naming each reference that cannot be resolved.
    """
    errors: list[ErrorItem] = []
    prefix = f"job '{job_key}': " if job_key else ""

    # The worker resolves every job's params: strings first (most values), and a value's location is made
    # only when it is needed (a container's children, an error), not for every value.
    def resolve(value: Any, parent: list[str | int], at: str | int) -> Any:
        if isinstance(value, str):
            if value.startswith("$"):  # every reference starts with one `$`; `$$` escapes it
                if is_reference(value):
                    resolved, why = _lookup(value, results)
                    if why is not None:
                        loc = [*parent, at]
                        errors.append(ErrorItem(loc, f"{prefix}{_path_label(loc)} {why}"))
                    return resolved
                if value.startswith("$$"):
                    return value[1:]
            return value
        if isinstance(value, dict | Mapping):
            here = [*parent, at]
            return {k: resolve(v, here, k) for k, v in value.items()}
        if isinstance(value, list | tuple):
            here = [*parent, at]
            return [resolve(v, here, i) for i, v in enumerate(value)]
        return value

    top: list[str | int] = ["params"]
    out = {k: resolve(v, top, k) for k, v in params.items()}
    if errors:
        raise PlanError(errors)
    return out


# --- validation ----------------------------------------------------------------------------------


def _field_label(loc: Sequence[Any]) -> str:
    parts = [p for p in loc if p != "[key]"]
    label = _path_label([p if isinstance(p, int | str) else str(p) for p in parts])
    return f"a key of {label}" if "[key]" in loc else label


def _describe(err: Mapping[str, Any], allowed: Sequence[str], field_prefix: str = "") -> str:
    """A readable message for one pydantic error (without the job prefix)."""
    kind = err["type"]
    loc = tuple(err["loc"])
    field = field_prefix + _field_label(loc)
    got = f" (got {show(err.get('input'))})"
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return f"missing required field '{field}'"
    if kind == "extra_forbidden":
        hint = suggest(str(loc[-1]), allowed) if len(loc) == 1 else ""
        return f"unknown field '{field}'{hint}; allowed: {', '.join(allowed)}"
    words = {
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "float_type": "must be a number",
        "bool_type": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "finite_number": "must be a finite number",
    }
    if kind in words:
        return f"{field} {words[kind]}{got}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()))
        phrase = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        return f"{field} must be {phrase} {show(bound)}{got}"
    if kind == "literal_error":
        return f"{field} must be {ctx.get('expected', 'one of the allowed values')}{got}"
    return f"{field}: {str(err['msg']).lower()}{got}"


def _structural(
    model: type[BaseModel], raw: Any, loc: list[str | int], who: str, field_prefix: str = ""
) -> tuple[BaseModel | None, list[ErrorItem]]:
    """Validate `raw` with a pydantic model; its errors turned into ErrorItems."""
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        allowed = list(model.model_fields)
        prefix = f"{who}: " if who else ""
        return None, [
            ErrorItem([*loc, *_error_loc(e)], prefix + _describe(e, allowed, field_prefix))
            for e in _union_errors(exc.errors(include_url=False), raw)
        ]


def _union_errors(errors: list[Any], raw: Any) -> list[Any]:
    """`model` is a string or a list of strings: report only the member the value was meant as."""
    out = []
    for e in errors:
        where = e["loc"]
        if len(where) >= 2 and where[0] == "model" and where[1] in ("str", "list[str]"):
            meant = "list[str]" if isinstance(raw, Mapping) and isinstance(raw.get("model"), list) else "str"
            if where[1] != meant:
                continue
            e = {**e, "loc": (where[0], *where[2:])}
        out.append(e)
    return out


def _error_loc(err: Mapping[str, Any]) -> list[str | int]:
    """A pydantic error's location as an ErrorItem loc."""
    return [p if isinstance(p, int | str) else str(p) for p in err["loc"]]


class _JobView:
    """The well-typed parts of one raw job, read even when other parts are wrong."""

    def __init__(self, pos: int, raw: Any) -> None:
        self.pos = pos
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        rid = self.raw.get("id")
        self.id: str | None = rid if isinstance(rid, str) else None
        rtype = self.raw.get("type")
        self.type: str | None = rtype if isinstance(rtype, str) else None
        rmodel = self.raw.get("model")
        self.models: list[str] = (
            [rmodel] if isinstance(rmodel, str)
            else list(rmodel) if isinstance(rmodel, list) and rmodel and all(isinstance(m, str) for m in rmodel)
            else []
        )  # fmt: skip
        self.model: str | None = self.models[0] if self.models else None
        self.model_index: int | None = 0 if isinstance(rmodel, list) and rmodel else None
        rparams = self.raw.get("params", {})
        self.params: Mapping[str, Any] | None = rparams if isinstance(rparams, Mapping) else None
        rdeps = self.raw.get("depends_on", [])
        self.depends_on: list[tuple[int, str]] = (
            [(i, d) for i, d in enumerate(rdeps) if isinstance(d, str)] if isinstance(rdeps, list) else []
        )
        self.who = f"job '{self.id}'" if self.id else f"jobs[{pos}]"

    def loc(self, *parts: str | int) -> list[str | int]:
        return ["jobs", self.pos, *parts]

    def model_loc(self) -> list[str | int]:
        return self.loc("model") if self.model_index is None else self.loc("model", self.model_index)

    def alternative(self, index: int) -> _JobView:
        """This job seen with its model number `index` (a failover alternative) as its model."""
        view = copy.copy(self)
        view.model, view.model_index = self.models[index], index
        return view


class _Validator:
    """Collects every problem of one plan."""

    def __init__(self, data: Mapping[str, Any], catalog: Catalog) -> None:
        self.data = data
        self.catalog = catalog
        self.errors: list[ErrorItem] = []
        self._providers: list[str] | None = None  # the catalog's, sorted (read once per plan)

    def err(self, loc: list[str | int], msg: str) -> None:
        self.errors.append(ErrorItem(loc, msg))

    def run(self) -> Plan | None:
        self.check_top_level()
        options = self.check_options()
        raw_jobs = self.data.get("jobs")
        jobs: list[JobSpec | None] = []
        views: list[_JobView] = []
        if "jobs" not in self.data:
            self.err(["jobs"], "a plan needs 'jobs': a list of jobs")
        elif not isinstance(raw_jobs, list):
            self.err(["jobs"], f"jobs must be a list of jobs (got {show(raw_jobs)})")
        elif not raw_jobs:
            self.err(["jobs"], "a plan needs at least one job")
        else:
            if len(raw_jobs) > MAX_JOBS:
                self.err(["jobs"], f"a plan may have at most {MAX_JOBS} jobs (got {len(raw_jobs)})")
            for pos, raw in enumerate(raw_jobs):
                view = _JobView(pos, raw)
                views.append(view)
                if not isinstance(raw, Mapping):
                    self.err(view.loc(), f"jobs[{pos}] must be a mapping with id and type (got {show(raw)})")
                    jobs.append(None)
                    continue
                job, errs = _structural(JobSpec, raw, view.loc(), view.who)
                self.errors += errs
                jobs.append(job if isinstance(job, JobSpec) else None)
            self.check_jobs(views)
        if self.errors:
            return None
        assert isinstance(options, PlanOptions)
        return Plan(
            jobs=[j for j in jobs if j is not None],
            webhook=self.data.get("webhook"),
            metadata=dict(self.data.get("metadata") or {}),
            options=options,
        )

    def check_top_level(self) -> None:
        allowed = list(Plan.model_fields)
        for key in self.data:
            if key not in allowed:
                hint = suggest(str(key), allowed)
                self.err([str(key)], f"unknown top-level field '{key}'{hint}; a plan has {', '.join(allowed)}")
        webhook = self.data.get("webhook")
        if webhook is not None and not is_http_url(webhook):
            self.err(["webhook"], f"webhook must be an http(s) URL (got {show(webhook)})")
        metadata = self.data.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                self.err(["metadata"], f"metadata must be a mapping (got {show(metadata)})")
            else:
                for key in metadata:
                    if not isinstance(key, str):
                        self.err(["metadata"], f"metadata keys must be strings (got {show(key)})")

    def check_options(self) -> PlanOptions | None:
        raw = self.data.get("options")
        if raw is None:
            return PlanOptions()
        if not isinstance(raw, Mapping):
            self.err(["options"], f"options must be a mapping (got {show(raw)})")
            return None
        options, errs = _structural(PlanOptions, raw, ["options"], "", field_prefix="options.")
        self.errors += errs
        events = raw.get("webhook_events")
        if isinstance(events, list):
            for i, event in enumerate(events):
                if isinstance(event, str) and not _WEBHOOK_EVENT_RE.match(event):
                    self.err(
                        ["options", "webhook_events", i],
                        f"options.webhook_events[{i}]: unknown event {event!r}; use execution.<name>, "
                        "job.<name>, execution.*, job.* or *",
                    )
        return options if isinstance(options, PlanOptions) else None

    def check_jobs(self, views: list[_JobView]) -> None:
        first_at: dict[str, int] = {}
        for view in views:
            if view.id is None:
                continue
            if not _JOB_ID_RE.match(view.id):
                self.err(
                    view.loc("id"),
                    f"job id {view.id!r} is invalid: use 1 to 64 lowercase letters, digits, '_' or '-', "
                    f"starting with a letter or digit (pattern {JOB_ID_PATTERN})",
                )
            if view.id in first_at:
                self.err(
                    view.loc("id"),
                    f"duplicate job id '{view.id}' (jobs[{first_at[view.id]}] and jobs[{view.pos}])",
                )
            else:
                first_at[view.id] = view.pos
        edges: dict[str, list[str]] = {}
        for view in views:
            schema = self.check_type_and_model(view)
            if schema is not None and view.params is not None:
                self.errors += check_params(
                    schema.specs,
                    view.params,
                    extra_allowed=schema.extra_allowed,
                    loc_prefix=view.loc("params"),
                    job_key=view.id or f"jobs[{view.pos}]",
                    allow_refs=True,
                    rules=schema.rules,
                    owner=schema.owner,
                )
            self.check_alternatives(view)
            deps = self.check_links(view, first_at)
            if view.id is not None and first_at.get(view.id) == view.pos:
                edges[view.id] = deps
        for cycle in _find_cycles(edges, first_at):
            self.err(["jobs", first_at[cycle[0]]], "cycle: " + " -> ".join([*cycle, cycle[0]]))
        self.check_local_limits(views)

    def check_alternatives(self, view: _JobView) -> None:
        """A job's failover alternatives: distinct models of its type, each able to take its params."""
        if view.model_index is None:
            return
        if view.type in OPERATIONS:
            return  # reported: a local operation takes no model
        seen: set[str] = set()
        for index, model_id in enumerate(view.models):
            if model_id in seen:
                self.err(view.loc("model", index), f"{view.who}: model {model_id} is listed twice")
                continue
            seen.add(model_id)
            if index == 0:
                continue
            alt = view.alternative(index)
            schema = self.check_type_and_model(alt)
            if schema is None or view.params is None:
                continue
            problems = check_params(
                schema.specs,
                view.params,
                extra_allowed=schema.extra_allowed,
                loc_prefix=view.loc("params"),
                job_key=None,
                allow_refs=True,
                rules=schema.rules,
                owner=schema.owner,
            )
            for p in problems:
                self.err(p.loc, f"{view.who}: alternative model {model_id} (model[{index}]): {p.msg}")

    def check_local_limits(self, views: list[_JobView]) -> None:
        """Local operations over their limits (inputs, caption size, work budget) where the plan says so."""
        if not any(v.type in OPERATIONS or (v.model or "").startswith("local/") for v in views):
            return
        from .local_limits import plan_jobs_of, plan_problems
        from .media_limits import current_limits

        self.errors += plan_problems(plan_jobs_of([(v.pos, v.raw) for v in views]), current_limits())

    def check_type_and_model(self, view: _JobView) -> ParamSchema | None:
        """Check type and model; return the param schema to check params with, if it can be known."""
        jtype, model_id, who = view.type, view.model, view.who
        if jtype is None:
            return None
        if jtype not in JOB_TYPES:
            self.err(
                view.loc("type"),
                f"{who}: unknown type '{jtype}'{suggest(jtype, JOB_TYPES)}; known types: {', '.join(JOB_TYPES)}",
            )
            return None
        if jtype in OPERATIONS:
            if model_id is not None:
                self.err(
                    view.model_loc(),
                    f"{who}: type {jtype} runs locally with ffmpeg and takes no model (got '{model_id}')",
                )
            return self.catalog.param_schema(jtype, None)
        if "model" in view.raw and view.raw["model"] not in (None, []) and model_id is None:
            return None  # wrong type for model: reported by the structural check
        if model_id is None:
            examples = [m.id for m in self.catalog.models(type=jtype)][:2]  # the built-in local/sim ones come first
            hint = f", e.g. {join_or(examples)}" if examples else ""
            self.err(view.model_loc(), f"{who}: type {jtype} needs a model ('<provider>/<model name>'){hint}")
            return None
        if not is_model_id(model_id):
            self.err(
                view.model_loc(),
                f"{who}: model '{model_id}' is malformed; expected '<provider>/<model name>'",
            )
            return None
        provider = model_id.split("/", 1)[0]
        if self._providers is None:
            self._providers = sorted(self.catalog.providers())
        providers = self._providers
        if provider not in providers:
            self.err(
                view.model_loc(),
                f"{who}: unknown provider '{provider}' in model '{model_id}'{suggest(provider, providers)}; "
                f"known providers: {', '.join(providers)}",
            )
            return None
        retired = retired_message(model_id)
        if retired is not None:
            self.err(view.model_loc(), f"{who}: {retired}")
            return None
        model = self.catalog.get(model_id)
        if jtype == "run":
            if model is None and provider not in OPEN_PROVIDERS:
                self.err(view.model_loc(), self._unknown_model(who, model_id, provider, jtype))
            elif model is not None and "run" not in model.types and provider not in OPEN_PROVIDERS:
                self.err(view.model_loc(), self._unsupported(who, model_id, model.types, jtype))
            return self.catalog.param_schema("run", model)
        if model is None:
            self.err(view.model_loc(), self._unknown_model(who, model_id, provider, jtype))
            return None
        if jtype not in model.types:
            self.err(view.model_loc(), self._unsupported(who, model_id, model.types, jtype))
            return None
        return self.catalog.param_schema(jtype, model)

    def _unknown_model(self, who: str, model_id: str, provider: str, jtype: str) -> str:
        same = [m.id for m in self.catalog.models(provider=provider)]
        msg = f"{who}: unknown model '{model_id}'{suggest(model_id, same)}"
        if same:
            msg += f"; known {provider} models: {', '.join(same)}"
        if provider in OPEN_PROVIDERS and jtype != "run":
            msg += f"; use type run to call a {provider} model the catalog lacks"
        return msg

    @staticmethod
    def _unsupported(who: str, model_id: str, types: Sequence[str], jtype: str) -> str:
        return f"{who}: model {model_id} does not support {jtype} (it supports {', '.join(types)})"

    def check_links(self, view: _JobView, known: Mapping[str, int]) -> list[str]:
        """Check references and depends_on; return the job's known dependencies (self excluded)."""
        deps: list[str] = []
        for i, dep in view.depends_on:
            if dep == view.id:
                self.err(view.loc("depends_on", i), f"{view.who}: depends_on names the job itself")
            elif dep not in known:
                self.err(
                    view.loc("depends_on", i),
                    f"{view.who}: depends_on refers to unknown job '{dep}'{suggest(dep, list(known))}",
                )
            elif dep not in deps:
                deps.append(dep)
        for ref, _, loc in find_references(view.params or {}):
            label = _path_label(["params", *loc])
            if ref == view.id:
                self.err(view.loc("params", *loc), f"{view.who}: {label} refers to the job itself")
            elif ref not in known:
                self.err(
                    view.loc("params", *loc),
                    f"{view.who}: {label} refers to unknown job '{ref}'{suggest(ref, list(known))}",
                )
            elif ref not in deps:
                deps.append(ref)
        return deps


def _find_cycles(edges: Mapping[str, list[str]], order: Mapping[str, int]) -> list[list[str]]:
    """One cycle per strongly connected group of jobs, each in run order (a -> b: b uses a)."""
    users: dict[str, list[str]] = {n: [] for n in edges}
    for node, deps in edges.items():
        for dep in deps:
            if dep in users:
                users[dep].append(node)
    # Tarjan's algorithm, iterative.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    for root in sorted(users, key=order.__getitem__):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(users[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(users[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    cycles = [_cycle_in(set(g), users, order) for g in groups]
    return sorted(cycles, key=lambda c: order[c[0]])


def _cycle_in(group: set[str], users: Mapping[str, list[str]], order: Mapping[str, int]) -> list[str]:
    """A shortest cycle through the group's first job (plan order), found by breadth-first search."""
    start = min(group, key=order.__getitem__)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for user in users[node]:
                if user not in group:
                    continue
                if user == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if user not in parent:
                    parent[user] = node
                    nxt.append(user)
        frontier = nxt
    raise AssertionError("a strongly connected group always holds a cycle")  # pragma: no cover


def _expand_shorthand(data: Mapping[str, Any]) -> dict[str, Any]:
    """A single job given without `jobs:` -> a one-job plan (plan-level keys stay at the top)."""
    plan_keys = {"webhook", "metadata", "options"}
    job = {k: v for k, v in data.items() if k not in plan_keys}
    job.setdefault("id", SHORTHAND_JOB_ID)
    return {"jobs": [job], **{k: v for k, v in data.items() if k in plan_keys}}


def _job_position(item: ErrorItem) -> int:
    """Sort key: plan-level problems first, then each job's in plan order."""
    loc = item.loc
    return loc[1] if len(loc) > 1 and loc[0] == "jobs" and isinstance(loc[1], int) else -1


def parse_plan(data: Any, *, catalog: Catalog | None = None) -> Plan:
    """Validate a plan (or a shorthand single job) against `catalog` (the default one when None); raise
    PlanError listing every problem found.

    For a shorthand job, error locations are relative to the job as given (no `jobs[0]`).
    """
    if isinstance(data, Plan):
        data = data.model_dump(mode="python")
    if not isinstance(data, Mapping):
        hint = "; load JSON or YAML text with load_plan_text first" if isinstance(data, str | bytes) else ""
        raise PlanError([ErrorItem([], f"a plan must be a mapping with 'jobs' (got {show(data)}){hint}")])
    shorthand = "jobs" not in data and "type" in data
    validator = _Validator(_expand_shorthand(data) if shorthand else data, catalog or default_catalog())
    plan = validator.run()
    if validator.errors:
        errors = sorted(validator.errors, key=_job_position)
        if shorthand:
            errors = [ErrorItem(e.loc[2:] if e.loc[:2] == ["jobs", 0] else e.loc, e.msg) for e in errors]
        if len(errors) > MAX_ERRORS:
            more = len(errors) - MAX_ERRORS
            errors = [*errors[:MAX_ERRORS], ErrorItem([], f"... and {more} more problems")]
        raise PlanError(errors)
    assert plan is not None
    return plan
