"""The parameter tables of docs/job-types.md, written from the catalog's operation specs.

`python -m reelflow.providers.catalog.docs docs/job-types.md` rewrites every block between
`<!-- params:<type> -->` and `<!-- /params -->`; a test checks that the file matches.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .builtin import operations
from .spec import ParamRule, ParamSpec
from .validation import fmt_number

_BLOCK = re.compile(r"(<!-- params:(?P<type>[a-z-]+) -->\n).*?(<!-- /params -->)", re.DOTALL)


def allowed(spec: ParamSpec) -> str:
    """The values a parameter takes, in words: `16–3840`, `≥ 0`, `> 0, ≤ 4`, `` `jpg`, `png` ``."""
    parts: list[str] = []
    if spec.choices is not None:
        parts.append(", ".join(f"`{c}`" for c in spec.choices))
    low = spec.minimum
    if low is not None and spec.maximum is not None:
        parts.append(f"{fmt_number(low)}–{fmt_number(spec.maximum)}")
    else:
        if spec.exclusive_minimum is not None:
            parts.append(f"> {fmt_number(spec.exclusive_minimum)}")
        if low is not None:
            parts.append(f"≥ {fmt_number(low)}")
        if spec.maximum is not None:
            parts.append(f"≤ {fmt_number(spec.maximum)}")
    if spec.pattern is not None:
        parts.append(f"matching `{spec.pattern.replace('|', chr(92) + '|')}`")
    if spec.max_length is not None:
        parts.append(f"at most {spec.max_length} characters")
    if spec.min_items is not None:
        parts.append(f"at least {spec.min_items} item{'s' if spec.min_items > 1 else ''}")
    if spec.max_items is not None:
        parts.append(f"at most {spec.max_items} items")
    return ", ".join(parts)


def type_words(spec: ParamSpec) -> str:
    """`integer`, `list of url`, ..."""
    if spec.type == "list" and spec.items is not None:
        return f"list of {spec.items.type}"
    return spec.type


def param_table(specs: Mapping[str, ParamSpec], rules: Sequence[ParamRule] = ()) -> str:
    """A markdown table of parameters: name, type, required, allowed values, default, meaning."""
    needed: dict[str, str] = {}
    for rule in rules:
        if rule.kind == "increasing":
            continue
        word = "one of" if rule.kind == "exactly_one_of" else "at least one of"
        for name in rule.params:
            needed[name] = f"{word} {', '.join(rule.params)}"
    rows = [
        "| parameter | type | required | allowed values | default | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, spec in specs.items():
        required = "yes" if spec.required else needed.get(name, "")
        default = "" if spec.default is None else f"`{_show(spec.default)}`"
        rows.append(
            f"| `{name}` | {type_words(spec)} | {required} | {allowed(spec)} | {default} | {spec.description} |"
        )
    return "\n".join(rows) + "\n"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return fmt_number(value)
    return str(value)


def operation_tables() -> dict[str, str]:
    """Each operation's parameter table, by job type."""
    return {op.type: param_table(op.params, op.rules) for op in operations()}


def sync(text: str) -> str:
    """`text` with every `<!-- params:<type> -->` block replaced by that operation's table."""
    tables = operation_tables()

    def fill(m: re.Match[str]) -> str:
        table = tables.get(m.group("type"))
        if table is None:
            raise ValueError(f"no operation {m.group('type')!r} in the catalog")
        return f"{m.group(1)}{table}{m.group(3)}"

    return _BLOCK.sub(fill, text)


def main(argv: Sequence[str]) -> int:
    """Rewrite the tables of the files named (docs/job-types.md)."""
    for name in argv:
        path = Path(name)
        path.write_text(sync(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
