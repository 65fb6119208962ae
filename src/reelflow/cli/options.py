"""The typer side of the command line: the app, its command group class, the options the command groups
share, and the configuration check every command starts with (`common.configuration_problem`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from .common import configuration_problem, fail

if TYPE_CHECKING:
    from typer._click import Context, HelpFormatter


class Group(TyperGroup):
    """A command group whose list shows each command's whole first paragraph (click would cut it short)."""

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                text = cmd.short_help or (cmd.help or "").split("\n\n")[0]
                rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def typer_app(**options: Any) -> typer.Typer:
    """A (sub)command group: plain help, no completion, no rich tracebacks."""
    return typer.Typer(
        cls=Group, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
        rich_markup_mode=None, **options,
    )  # fmt: skip


def new_app() -> typer.Typer:
    """The `reelflow` app, with no command yet (`commands` registers them), checking the configuration first."""
    app = typer_app(name="reelflow", help="Run AI video pipelines: plans of generation jobs on a durable queue.")
    app.callback()(check_configuration)
    return app


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (the API's execution state).")]

ServerOpt = Annotated[
    str | None, typer.Option("--server", envvar="REELFLOW_SERVER", help="Talk to a reelflow server at this URL.")
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="REELFLOW_API_KEY", help="The API key for --server.", show_default=False),
]
PlanArg = Annotated[
    Path, typer.Argument(metavar="PLAN", help="Plan file (YAML or JSON), or - for standard input.")
]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The execution's id (ex_..., as `run` printed it).")]


def check_configuration(ctx: typer.Context) -> None:
    """Every command starts by checking the configuration: a problem is bad usage (exit 2), before anything
    is done. `--help` still works on a broken configuration."""
    if ctx.resilient_parsing or any(a in ("--help", "-h") for a in sys.argv[1:]):
        return
    problem = configuration_problem()
    if problem is not None:
        raise fail(problem, 2)
