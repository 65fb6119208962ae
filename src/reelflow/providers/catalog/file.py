"""Catalog files (REELFLOW_CATALOG_FILE) and plugins' model lists: parsing and validating their entries.

A catalog file is YAML: `models:` and a list of entries shaped like `GET /v1/models` items, with
`limits` (max_duration, prompt_length, text_length) and, per parameter, the provider's `input` name
it maps to (`convert` too, for fal). Examples: examples/catalog.yaml. Plugins' models use the same
entry format (or ready ModelSpecs). Parsing here is pure: what is already catalogued, and which
providers may have models, are given by the caller (a `Catalog`, which installs the result).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reelflow.errors import ReelflowError

from .builtin import OPEN_PROVIDERS
from .spec import MODEL_TYPES, ModelSpec, ParamRule, ParamSpec, ParamType, Price, is_model_id
from .validation import _check_value, _is_number, fmt_number, join_or, show, suggest

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
    # each model of a catalog file builds its validator on first use: most processes never read one
    model_config = ConfigDict(extra="forbid", defer_build=True)


class FileParamItem(ParamSpec):
    """A list parameter's items, as written in a catalog file."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    items: FileParamItem | None = None


class FileParam(FileParamItem):
    """One parameter in a catalog file: a ParamSpec plus where it goes in the provider's input."""

    input: str | None = Field(default=None, min_length=1, max_length=200)
    """The provider's input name for this parameter (absent: passed under its own name)."""
    convert: Literal["string", "upper", "image_size"] | None = None
    """fal only: `string` ("5"), `upper` ("768P"), `image_size` (16:9 -> landscape_16_9)."""


class FileRule(ParamRule):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    kind: Literal["one_of", "exactly_one_of"]


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
    price_read: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    """The day (YYYY-MM-DD) the price was read from the provider's pages."""
    price_unconfirmed: str | None = Field(default=None, min_length=1, max_length=300)
    """Why the price is not confirmed, where it comes from instead (optional; not together with price_read)."""
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
            price_read=fm.price_read,
            price_unconfirmed=fm.price_unconfirmed,
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
    catalogued: Callable[[str], str | None],
    root: yaml.Node | None = None,
    prefix: Sequence[str | int] = (),
) -> list[UserModel]:
    """Validate model entries (the catalog-file format); raise CatalogFileError naming every problem.

    `providers` are the ones models may belong to; an id already in the catalog (`catalogued` gives where it
    came from, None when it is not there) needs `replace: true`.
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
        origin = catalogued(fm.id)
        if origin is not None and not fm.replace:
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


def parse_catalog_text(
    text: str, source: str, *, providers: set[str], catalogued: Callable[[str], str | None]
) -> list[UserModel]:
    """Validate a catalog file's text; raise CatalogFileError with file, line, model and field of each problem."""
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
    return parse_model_entries(
        data["models"], source=source, providers=providers, catalogued=catalogued, root=root, prefix=["models"]
    )
