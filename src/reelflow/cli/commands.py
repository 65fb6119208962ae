"""Every command, registered on the app in the order `reelflow --help` lists them."""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

import typer

from .options import new_app

if TYPE_CHECKING:
    app: typer.Typer

COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "run": ("executions", "run", None),
    "status": ("executions", "status", None),
    "events": ("executions", "events", None),
    "logs": ("executions", "logs", None),
    "list": ("executions", "list_executions", None),
    "cancel": ("executions", "cancel", "Cancel an execution: queued jobs are canceled, running ones stopped."),
    "resume": ("executions", "resume", "Re-run only the failed, canceled and skipped jobs of an execution."),
    "retry": ("executions", "retry", "Start a new execution of the same plan (--wait follows the new one)."),
    "estimate": ("executions", "estimate", None),
    "worker": ("services", "worker", None),
    "serve": ("services", "serve", None),
    "keys": ("keys", "keys_app", None),
    "migrate": ("database", "migrate", None),
    "models": ("usage", "models", None),
    "ops": ("usage", "ops", None),
    "stats": ("usage", "stats", None),
    "prune": ("database", "prune", None),
    "demo": ("services", "demo", None),
}
"""Each command by name, in the order of `reelflow --help`: its module of this package, the function (or
sub-app) there, and its help when it is not the function's docstring."""


def register(app: typer.Typer, name: str) -> None:
    """Register the command `name` of `COMMANDS` on `app` (importing its module now)."""
    module, attr, help_text = COMMANDS[name]
    target = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name)
    else:
        app.command(name, help=help_text)(target)


def build_app(command: str | None = None) -> typer.Typer:
    """The app with every command; with `command`, one of `COMMANDS`, with that command alone.

    Each time an app runs, typer builds the click command of every command registered on it (its parameters,
    from the function's signature and annotations): `reelflow run PLAN` needs `run`'s only (and its module
    only), and `main` asks for the command the arguments name. Anything else (no command, an unknown or
    misspelt one) gets every command, for typer's usage errors and suggestions."""
    app = new_app()
    for name in COMMANDS:
        if command not in COMMANDS or name == command:
            register(app, name)
    return app


@cache
def _every_command() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> typer.Typer:
    """`app`: the app with every command, built on first use (`main` builds its own)."""
    if name == "app":
        return _every_command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMANDS", "app", "build_app", "register"]
