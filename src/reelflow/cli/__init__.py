"""The `reelflow` command line (typer, rich for output). Exit status: 0 ok, 1 failed or refused, 2 bad usage,
130 interrupted.

One module per command group, each command written once against `backend.Backend` (the local database, or a
server with --server): `executions` (run, status, events, cancel, resume, retry, estimate), `services`
(worker, serve, demo), `database` (migrate, prune), `usage` (models, stats), `keys`; `commands` registers
them on the app. The plumbing (the consoles, how a body runs and fails) is in `common`; following an
execution and Ctrl-C in `follow`; `reelflow --help` and `reelflow run --help` without loading typer in
`helptext`; typer's app and shared options in `options`.
"""

from __future__ import annotations

import atexit
import gc
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typer import Typer

    app: Typer


def main() -> None:
    """The console script `reelflow`."""
    # The start-up (typer, pydantic, the settings, the catalog) makes a few hundred thousand objects that live as
    # long as the process. The cyclic collector walked them 100 times while they were made, and the interpreter's
    # last collection walks them all once more at exit: 15-20% and 20% of a short command's time. So the collector
    # is off until the command has started (`collect_from_now_on`: after a long-running command's start, or when
    # this function returns), and everything left at exit is frozen before that last collection. It would only
    # finalize garbage cycles, which Python does not promise at exit; reelflow closes what it opens itself.
    atexit.register(gc.freeze)
    gc.disable()
    try:
        _main()
    finally:
        collect_from_now_on()


def collect_from_now_on() -> None:
    """Turn the cyclic collector back on for the rest of the process, the start-up's objects left out of it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _main() -> None:
    from .helptext import fast_help

    args = sys.argv[1:]
    # httpx's own command line (`httpx.main`: click, pygments, rich's tables and progress bars), which
    # `import httpx` loads whenever click is installed, is never used here: skipping it saves ~0.1 s
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    if (text := fast_help(args)) is not None:
        sys.stdout.write(text)
        return
    from .commands import build_app
    from .common import configuration_errors, err, escape

    app = build_app(args[0] if args else None)  # typer builds the named command's options alone
    try:
        app()
    except configuration_errors() as exc:  # outside an async command (serve)
        err().print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)


def __getattr__(name: str) -> Any:
    """`app`, the typer app with every command, loaded on first use."""
    if name == "app":
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
