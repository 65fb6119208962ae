"""The `reelflow` command line (typer, rich for output). Exit status: 0 ok, 1 failed or refused, 2 bad usage,
130 interrupted.

One module per command group, each command written once against `backend.Backend` (the local database, or a
server with --server): `executions` (run, status, events, cancel, resume, retry, estimate), `services`
(worker, serve, demo), `database` (migrate, prune), `usage` (models, stats), `keys`. The plumbing (the app,
the consoles, how a body runs and fails) is in `app`; following an execution and Ctrl-C in `follow`.
"""

from __future__ import annotations

import sys

from . import database, executions, services, usage
from .app import app, configuration_errors, err, escape
from .keys import keys_app

# the order of `reelflow --help`
app.command()(executions.run)
app.command()(executions.status)
app.command()(executions.events)
app.command("cancel", help="Cancel an execution: queued jobs are canceled, running ones stopped.")(executions.cancel)
app.command("resume", help="Re-run only the failed, canceled and skipped jobs of an execution.")(executions.resume)
app.command("retry", help="Start a new execution of the same plan (--wait follows the new one).")(executions.retry)
app.command()(executions.estimate)
app.command()(services.worker)
app.command()(services.serve)
app.add_typer(keys_app, name="keys")
app.command()(database.migrate)
app.command()(usage.models)
app.command()(usage.stats)
app.command()(database.prune)
app.command()(services.demo)


def main() -> None:
    """The console script `reelflow`."""
    try:
        app()
    except configuration_errors() as exc:  # outside an async command (serve)
        err().print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)


__all__ = ["app", "main"]
