"""The validator: every problem with a job's params against their specs and rules, in words a user can act on."""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reelflow.errors import ErrorItem

from .spec import ParamRule, ParamSpec, is_http_url, is_reference, unescape

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


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    "url": is_http_url,
    "number": _is_number,
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "list": lambda value: isinstance(value, list | tuple),
    "object": lambda value: isinstance(value, Mapping),
}
"""Whether a value is of a parameter type: only the spec's own type is tested (the worker checks every job's
resolved values; testing each value against all seven types, a URL parse included, cost it for nothing)."""


def _check_value(
    spec: ParamSpec, value: Any, label: str, loc: list[str | int], allow_refs: bool
) -> list[tuple[list[str | int], str]]:
    """Problems with one value against its spec, as (loc, message without the job prefix)."""
    if allow_refs and isinstance(value, str):
        if is_reference(value):
            return []
        value = unescape(value)
    t = spec.type
    ok = _TYPE_CHECKS[t](value)
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
    if t == "string" and spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
        problems.append((loc, f"{label} must match {spec.pattern} (got {show(value)})"))
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
    job_key: str | None,
    allow_refs: bool,
    rules: Sequence[ParamRule] = (),
    owner: str | None = None,
) -> list[ErrorItem]:
    """Every problem with `params` against `specs` and `rules`, each naming the job and parameter.

    With `allow_refs`, a reference string passes any field's checks (its value is known only at
    run time) and a leading `$$` is read as a literal `$`; without it, values are checked as given.
    """
    prefix = f"job '{job_key}': " if job_key else ""
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
        if rule.kind == "increasing":
            errors += _increasing(specs, params, rule.params, base, prefix)
            continue
        present = [p for p in rule.params if params.get(p) is not None]
        if not present:
            errors.append(ErrorItem(base, f"{prefix}one of {join_or(rule.params)} is required"))
        elif rule.kind == "exactly_one_of" and len(present) > 1:
            got = " and ".join(present)
            errors.append(
                ErrorItem([*base, present[1]], f"{prefix}give only one of {join_or(rule.params)} (got {got})")
            )
    return errors


def _increasing(
    specs: Mapping[str, ParamSpec], params: Mapping[str, Any], names: Sequence[str], base: list[str | int], prefix: str
) -> list[ErrorItem]:
    """Each of `names` whose number is known (given or defaulted, not a reference) above the one before it."""
    known = [(n, params[n] if n in params else specs[n].default) for n in names if n in specs]
    known = [(n, v) for n, v in known if _is_number(v) and _finite(v)]
    errors = []
    for (a, va), (b, vb) in itertools.pairwise(known):
        if vb <= va:
            errors.append(
                ErrorItem([*base, b], f"{prefix}{b} must be greater than {a} (got {a} {show(va)}, {b} {show(vb)})")
            )
    return errors


def params_with_defaults(specs: Mapping[str, ParamSpec], params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with each declared default filled in where the parameter is absent."""
    out = dict(params)
    for name, spec in specs.items():
        if name not in out and spec.default is not None:
            out[name] = spec.default
    return out


def _finite(value: float) -> bool:
    """A number we can compare and store: finite, and an integer within 64 bits."""
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return math.isfinite(value)
