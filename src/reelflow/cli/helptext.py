"""`reelflow --help` printed without loading typer, the largest part of the start-up: the text typer prints
at its usual width (78 columns: on a terminal of 80 or more, or on none). `render` gives typer's text;
tests/test_startup.py checks `TEXT` against it (after a change of commands: `python -m reelflow.cli.helptext`
prints the new text)."""

from __future__ import annotations

import os
import sys

WIDTH = 78
USAGE = "Usage: {prog} [OPTIONS] COMMAND [ARGS]..."
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
            --server: followed to the end).
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


def program_name() -> str:
    """The name typer (click) shows in the usage line: the script's, or `python -m package`."""
    main, path = sys.modules["__main__"], sys.argv[0]
    package = getattr(main, "__package__", None)
    if package in (None, "") or os.name == "nt":
        return os.path.basename(path)
    name = os.path.splitext(os.path.basename(path))[0]
    return f"python -m {(package if name == '__main__' else f'{package}.{name}').lstrip('.')}"


def fast_help(args: list[str]) -> str | None:
    """The top-level help when that is all that was asked and typer would print exactly `TEXT`, else None."""
    if args != ["--help"]:
        return None
    import shutil

    prog = program_name()
    if shutil.get_terminal_size().columns < WIDTH + 2 or len(USAGE.format(prog=prog)) > WIDTH:
        return None
    return TEXT.replace("{prog}", prog)


def render(prog: str) -> str:
    """What typer prints for `--help` at `WIDTH` (what `TEXT` must be, `{prog}` for the program's name)."""
    import typer.main

    from .commands import app

    group = typer.main.get_command(app)
    with group.make_context(prog, [], resilient_parsing=True, terminal_width=WIDTH) as ctx:
        return group.get_help(ctx) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render("{prog}"))
