"""Every command, registered on the app in the order `reelflow --help` lists them."""

from __future__ import annotations

from . import database, executions, services, usage
from .keys import keys_app
from .options import app

# the order of `reelflow --help`
app.command()(executions.run)
app.command()(executions.status)
app.command()(executions.events)
app.command()(executions.logs)
app.command("list")(executions.list_executions)
app.command("cancel", help="Cancel an execution: queued jobs are canceled, running ones stopped.")(executions.cancel)
app.command("resume", help="Re-run only the failed, canceled and skipped jobs of an execution.")(executions.resume)
app.command("retry", help="Start a new execution of the same plan (--wait follows the new one).")(executions.retry)
app.command()(executions.estimate)
app.command()(services.worker)
app.command()(services.serve)
app.add_typer(keys_app, name="keys")
app.command()(database.migrate)
app.command()(usage.models)
app.command()(usage.ops)
app.command()(usage.stats)
app.command()(database.prune)
app.command()(services.demo)


__all__ = ["app"]
