"""No import cycle in the package (issue 14).

Two checks. Every module imports on its own in a fresh interpreter, so a cycle that works only because some
other module happened to be imported first fails here. And the graph of module-level imports (those run when a
module loads: not the ones inside functions or under `if TYPE_CHECKING`) has no cycle at all, so one that
happens to work today in every order is caught too.
"""

from __future__ import annotations

import ast
import graphlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import reelflow

SRC = Path(reelflow.__file__).parent.parent


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: name -> (file, is a package)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in (SRC / "reelflow").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _load_time_imports(statements: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports run when the module loads: top level, in `if`/`try` blocks, but not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                found += _load_time_imports(node.body)
            found += _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += _load_time_imports(node.body)
            for handler in node.handlers:
                found += _load_time_imports(handler.body)
            found += _load_time_imports(node.orelse) + _load_time_imports(node.finalbody)
    return found


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """module -> the package's modules it imports when it loads.

    `from . import sub` (from a package the importer is inside, which is always loaded first) depends on
    `sub` only; `from pkg import name` depends on `pkg` (and on `pkg.name` when that is a module).
    """
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _load_time_imports(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names if alias.name in modules)
                continue
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{alias.name}" for alias in node.names} & modules.keys()
            deps |= subs
            ancestor = name.startswith(target + ".")
            if target in modules and not (ancestor and len(subs) == len(node.names)):
                deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (its modules, the first repeated at the end), or [] when there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(set(cycles(graph))) == ["a", "b", "c"]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_relative_and_guarded_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .one import x\n")
    (pkg / "one.py").write_text("from . import two\nx = 1\n")
    (pkg / "two.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .one import x\n"
        "def f():\n    from pkg import one\ntry:\n    from pkg import three\nexcept ImportError:\n    pass\n"
    )
    (pkg / "three.py").write_text("import pkg.one\n")
    modules = {
        "pkg": (pkg / "__init__.py", True),
        **{f"pkg.{n}": (pkg / f"{n}.py", False) for n in ("one", "two", "three")},
    }
    graph = import_graph(modules)
    assert graph == {"pkg": {"pkg.one"}, "pkg.one": {"pkg.two"}, "pkg.two": {"pkg.three"}, "pkg.three": {"pkg.one"}}
    assert sorted(set(cycles(graph))) == ["pkg.one", "pkg.three", "pkg.two"]


def test_no_import_cycle_in_the_package() -> None:
    modules = package_modules()
    assert len(modules) > 80 and "reelflow.providers.catalog.catalog" in modules
    graph = import_graph(modules)
    assert "reelflow.providers.catalog" in graph["reelflow.engine.scheduler"]  # the graph sees real imports
    assert cycles(graph) == []


ALONE = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "reelflow" or m.startswith("reelflow.")]:
        del sys.modules[loaded]  # the package's own modules only: a cycle among them shows, third parties stay
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_module_imports_first() -> None:
    """`import reelflow.x.y` with none of the package loaded before it, for every module but the `__main__`
    ones (importing those runs the command line): one interpreter, the package's modules forgotten between
    imports."""
    names = sorted(m.name for m in pkgutil.walk_packages(reelflow.__path__, "reelflow."))
    names = [n for n in names if not n.endswith(".__main__")]
    assert set(names) | {"reelflow"} >= set(package_modules()) - {"reelflow.__main__", "reelflow.cli.__main__"}
    done = subprocess.run([sys.executable, "-c", ALONE, *names], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}
