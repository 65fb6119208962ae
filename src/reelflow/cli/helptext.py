"""`reelflow --help` and `reelflow run --help` printed without loading typer, the largest part of their
start-up: the text typer prints at its usual width (78 columns: on a terminal of 80 or more, or on none).
`render` gives typer's text; tests/test_startup.py checks `TEXT` and `RUN_TEXT` against it (after a change
of commands or of `run`'s options: `python -m reelflow.cli.helptext` prints both texts)."""

from __future__ import annotations

import os
import sys

WIDTH = 78
USAGE = "Usage: {prog} [OPTIONS] COMMAND [ARGS]..."
RUN_USAGE = "Usage: {prog} run [OPTIONS] {PLAN}"
TEXT = """\
Usage: {prog} [OPTIONS] COMMAND [ARGS]...

  Run AI video pipelines: plans of generation jobs on a durable queue.

Options:
  --help  Show this message and exit.

Commands:
  run       Validate and enqueue a plan and print its execution id; with
            --wait, follow it to the end.
  status    Show an execution's state (exit 1 when it failed or was canceled).
  events    Print an execution's event log, one JSON object per line (with
            --follow or --server: to the end).
  logs      Print what the provider logged for one job of an execution (the
            last 64 KiB, every attempt).
  list      List executions, newest first (id, status, progress, cost,
            created).
  cancel    Cancel an execution: queued jobs are canceled, running ones
            stopped.
  resume    Re-run only the failed, canceled and skipped jobs of an execution.
  retry     Start a new execution of the same plan (--wait follows the new
            one).
  estimate  Estimate a plan's cost and time (the longest chain of
            dependencies); nothing is enqueued.
  worker    Run a worker until SIGTERM/SIGINT: claims jobs from the database
            and runs them.
  serve     Run the HTTP API, with N embedded workers (webhook delivery runs
            here too).
  migrate   Create or upgrade the database schema.
  models    List the model catalog.
  ops       List the local operations (ffmpeg in the worker: merge, concat,
            overlay, captions, thumbnail, transcode) with every parameter:
            type, allowed values, default, meaning.
  stats     Usage this month (executions, cost, cache hits) against the
            limits, the queue by provider, and the figures of the window (24 h
            unless --since): success rate, p50/p95 execution time, queue
            depth, per-provider success and latency, webhook deliveries, spend
            this month. Locally: every tenant.
  prune     Delete executions that ended longer ago than --older-than, with
            their jobs, events and deliveries (stored artifacts stay).
  demo      Render the sunset demo on the local provider and print the MP4's
            path and a timeline.
  keys      Manage API keys (each belongs to one tenant).
"""

RUN_TEXT = """\
Usage: {prog} run [OPTIONS] {PLAN}

  Validate and enqueue a plan and print its execution id; with --wait, follow
  it to the end.

Arguments:
  PLAN <path>  Plan file (YAML or JSON), or - for standard input.  [required]

Options:
  --wait           Wait for the end, showing progress (on stderr).
  --webhook <str>  Deliver the final state to this URL.
  --server <str>   Talk to a reelflow server at this URL.  [env var:
                   REELFLOW_SERVER]
  --api-key <str>  The API key for --server.  [env var: REELFLOW_API_KEY]
  --json           Print machine-readable JSON (the API's execution state).
  --help           Show this message and exit.
"""


def program_name() -> str:
    """The name typer (click) shows in the usage line: the script's, or `python -m package`."""
    main, path = sys.modules["__main__"], sys.argv[0]
    package = getattr(main, "__package__", None)
    if package in (None, "") or os.name == "nt":
        return os.path.basename(path)
    name = os.path.splitext(os.path.basename(path))[0]
    return f"python -m {(package if name == '__main__' else f'{package}.{name}').lstrip('.')}"


def fast_help(args: list[str]) -> str | None:
    """The top-level help, or `run`'s, when that is all that was asked and typer would print exactly `TEXT`
    or `RUN_TEXT`, else None."""
    if args == ["--help"]:
        usage, text = USAGE, TEXT
    elif args == ["run", "--help"]:
        usage, text = RUN_USAGE, RUN_TEXT
    else:
        return None
    import shutil

    prog = program_name()
    if shutil.get_terminal_size().columns < WIDTH + 2 or len(usage.replace("{prog}", prog)) > WIDTH:
        return None
    return text.replace("{prog}", prog)


def render(prog: str, command: str | None = None) -> str:
    """What typer prints for `--help` (or `COMMAND --help`) at `WIDTH`: what `TEXT` (`RUN_TEXT`) must be,
    with `{prog}` for the program's name."""
    import typer.core
    import typer.main

    from .commands import app

    group = typer.main.get_command(app)
    with group.make_context(prog, [], resilient_parsing=True, terminal_width=WIDTH) as ctx:
        if command is None:
            return group.get_help(ctx) + "\n"
        assert isinstance(group, typer.core.TyperGroup)
        cmd = group.get_command(ctx, command)
        assert cmd is not None, command
        with cmd.make_context(command, [], parent=ctx, resilient_parsing=True) as sub:
            return str(cmd.get_help(sub)) + "\n"


if __name__ == "__main__":
    sys.stdout.write(f'TEXT = """\\\n{render("{prog}")}"""\n\nRUN_TEXT = """\\\n{render("{prog}", "run")}"""\n')
