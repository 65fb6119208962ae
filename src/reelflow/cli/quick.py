"""`reelflow run` without typer. Loading typer and building its parameters (typer validates each option with
a pydantic TypeAdapter) took about as long as submitting the plan, so when `run`'s arguments are plain,
`main` parses them here and runs the same body (`run_plan`) with the same configuration check and the same
exits. Anything else (an unknown option, a missing value, `--help` among other arguments, `--`, no plan or
two) goes to typer, which prints its usual usage error.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import configuration_errors, configuration_problem, err, escape, fail, on_backend, read_plan

if TYPE_CHECKING:
    from .backend import Backend

FLAGS = {"--wait": "wait", "--json": "as_json"}
VALUES = {"--webhook": "webhook", "--server": "server", "--api-key": "api_key"}
ENV = {"server": "REELFLOW_SERVER", "api_key": "REELFLOW_API_KEY"}


@dataclass
class RunArgs:
    """`reelflow run`'s parameters, as typer would pass them to `executions.run`."""

    plan: Path
    wait: bool = False
    webhook: str | None = None
    server: str | None = None
    api_key: str | None = None
    as_json: bool = False


def parse_run(args: list[str]) -> RunArgs | None:
    """The parameters of `reelflow run ARGS` (options anywhere, `--opt value` or `--opt=value`, the last of a
    repeated option wins, unset --server/--api-key from a non-empty REELFLOW_SERVER/REELFLOW_API_KEY), or
    None when typer must see the arguments: one it would refuse, `--help`, `--`, not exactly one plan."""
    found: dict[str, Any] = {}
    plans: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in FLAGS:
            found[FLAGS[arg]] = True
            continue
        name, eq, value = arg.partition("=")
        if name in VALUES:
            if not eq:
                if i >= len(args) or args[i].startswith("-"):
                    return None  # a missing value (or one typer may read differently): typer says so
                value = args[i]
                i += 1
            found[VALUES[name]] = value
        elif arg == "-" or (arg and not arg.startswith("-")):
            plans.append(arg)
        else:
            return None  # --help, --, an unknown option, an empty argument
    if len(plans) != 1:
        return None
    for key, var in ENV.items():
        if key not in found:
            found[key] = os.environ.get(var) or None
    return RunArgs(plan=Path(plans[0]), **found)


def run_plan(
    plan: Path, wait: bool, webhook: str | None, server: str | None, api_key: str | None, as_json: bool
) -> None:
    """`reelflow run`: validate and enqueue a plan and print its execution id; with --wait, follow it."""
    from .show import exit_for, show_accepted, show_final

    data = read_plan(plan)

    async def body(backend: Backend) -> dict[str, Any]:
        execution_id = await backend.submit(data, webhook)
        state = await backend.get(execution_id)
        show_accepted(execution_id, state, as_json, wait)
        if wait:
            from .follow import follow

            state = await follow(backend, execution_id, as_json=as_json)
            show_final(state, as_json)
        return state

    state = on_backend(server, api_key, body)
    if wait:
        exit_for(state)


def quick_run(args: list[str]) -> bool:
    """Run `reelflow run ARGS` without typer when `parse_run` reads them (False: typer must run it). Ends as
    typer would: the configuration checked first (a problem is exit 2), Ctrl-C is 130, a closed pipe 1."""
    parsed = parse_run(args)
    if parsed is None:
        return False
    try:
        problem = configuration_problem()
        if problem is not None:
            raise fail(problem, 2)
        run_plan(parsed.plan, parsed.wait, parsed.webhook, parsed.server, parsed.api_key, parsed.as_json)
    except configuration_errors() as exc:
        err().print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    return True
