"""Every command, registered on the app in the order `reelflow --help` lists them."""

from __future__ import annotations

from collections.abc import Callable

import typer

from . import database, executions, services, usage
from .keys import keys_app
from .options import new_app

COMMANDS: dict[str, Callable[[typer.Typer], object]] = {
    "run": lambda app: app.command()(executions.run),
    "status": lambda app: app.command()(executions.status),
    "events": lambda app: app.command()(executions.events),
    "logs": lambda app: app.command()(executions.logs),
    "list": lambda app: app.command("list")(executions.list_executions),
    "cancel": lambda app: app.command(
        "cancel", help="Cancel an execution: queued jobs are canceled, running ones stopped."
    )(executions.cancel),
    "resume": lambda app: app.command(
        "resume", help="Re-run only the failed, canceled and skipped jobs of an execution."
    )(executions.resume),
    "retry": lambda app: app.command(
        "retry", help="Start a new execution of the same plan (--wait follows the new one)."
    )(executions.retry),
    "estimate": lambda app: app.command()(executions.estimate),
    "worker": lambda app: app.command()(services.worker),
    "serve": lambda app: app.command()(services.serve),
    "keys": lambda app: app.add_typer(keys_app, name="keys"),
    "migrate": lambda app: app.command()(database.migrate),
    "models": lambda app: app.command()(usage.models),
    "ops": lambda app: app.command()(usage.ops),
    "stats": lambda app: app.command()(usage.stats),
    "prune": lambda app: app.command()(database.prune),
    "demo": lambda app: app.command()(services.demo),
}
"""How each command registers on an app, by name, in the order of `reelflow --help`."""


def build_app(command: str | None = None) -> typer.Typer:
    """The app with every command; with `command`, one of `COMMANDS`, with that command alone.

    Each time an app runs, typer builds the click command of every command registered on it (its parameters,
    from the function's signature and annotations): `reelflow run PLAN` needs `run`'s only, and `main` asks for
    the command the arguments name. Anything else (no command, an unknown or misspelt one) gets every command,
    for typer's usage errors and suggestions."""
    app = new_app()
    for name, register in COMMANDS.items():
        if command not in COMMANDS or name == command:
            register(app)
    return app


app = build_app()


__all__ = ["COMMANDS", "app", "build_app"]
