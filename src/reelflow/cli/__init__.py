"""The `reelflow` command line (typer, rich for output). Exit status: 0 ok, 1 failed or refused, 2 bad usage,
130 interrupted.

One module per command group, each command written once against `backend.Backend` (the local database, or a
server with --server): `executions` (run, status, events, cancel, resume, retry, estimate), `services`
(worker, serve, demo), `database` (migrate, prune), `usage` (models, stats), `keys`; `commands` registers
them on the app. The plumbing (the app, the consoles, how a body runs and fails) is in `common`; following an
execution and Ctrl-C in `follow`; `reelflow --help` without loading typer in `helptext`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typer import Typer

    app: Typer


def main() -> None:
    """The console script `reelflow`."""
    from .helptext import fast_help

    if (text := fast_help(sys.argv[1:])) is not None:
        sys.stdout.write(text)
        return
    from .commands import app
    from .common import configuration_errors, err, escape

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
