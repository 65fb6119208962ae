"""The execution commands: run, status, events, logs, list, cancel, resume, retry, estimate; each on the local
database or, with --server, on a server."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import Conflict
from ..states import TERMINAL_EXECUTION
from .common import Refused, err, on_backend, out, print_json_or, read_plan
from .options import ApiKeyOpt, IdArg, JsonOpt, PlanArg, ServerOpt
from .show import exit_for, show_list, show_state, summary

if TYPE_CHECKING:
    from .backend import Backend

WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the end, showing progress (on stderr).")]
EstimateJsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print machine-readable JSON ({jobs: [{id, cost_usd, seconds}], cost_usd, seconds})."),
]


async def _follow(backend: Backend, execution_id: str, as_json: bool) -> dict[str, Any]:
    from .follow import follow

    return await follow(backend, execution_id, as_json=as_json)


def run(
    plan: PlanArg,
    wait: WaitOpt = False,
    webhook: Annotated[str | None, typer.Option("--webhook", help="Deliver the final state to this URL.")] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate and enqueue a plan and print its execution id; with --wait, follow it to the end."""
    from .show import show_accepted, show_final

    data = read_plan(plan)

    async def body(backend: Backend) -> dict[str, Any]:
        accepted = await backend.accept(data, webhook)
        show_accepted(accepted, as_json, wait)
        if not wait:
            return {"id": accepted.id, "status": accepted.status}
        from .follow import follow

        state = await follow(backend, accepted.id, as_json=as_json)
        show_final(state, as_json)
        return state

    state = on_backend(server, api_key, body)
    if wait:
        exit_for(state)


def status(
    execution_id: IdArg, wait: WaitOpt = False, server: ServerOpt = None, api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Show an execution's state (exit 1 when it failed or was canceled)."""

    async def body(backend: Backend) -> dict[str, Any]:
        state = await (_follow(backend, execution_id, as_json) if wait else backend.get(execution_id))
        show_state(state, as_json)
        return state

    exit_for(on_backend(server, api_key, body), finished_only=not wait)


def events(
    execution_id: IdArg,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f",
            help="Keep printing new events until the execution ends (with --server the stream always is).",
        ),
    ] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Accepted for scripts: the output is JSON lines either way.")
    ] = False,
) -> None:  # fmt: skip
    """Print an execution's event log, one JSON object per line (with --follow or --server: to the end)."""

    async def body(backend: Backend) -> None:
        async for e in backend.events(execution_id, follow=follow):
            sys.stdout.write(json.dumps(e) + "\n")
            sys.stdout.flush()

    on_backend(server, api_key, body)


def logs(
    execution_id: IdArg,
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id in the plan.")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print machine-readable JSON ({execution_id, job_id, status, provider, provider_job_id, attempt, "
            "text, truncated, dropped_chars, updated_at}).",
        ),
    ] = False,
) -> None:
    """Print what the provider logged for one job of an execution (the last 64 KiB, every attempt)."""

    async def body(backend: Backend) -> dict[str, Any]:
        return await backend.job_logs(execution_id, job)

    print_json_or(on_backend(server, api_key, body), as_json, _show_logs)


def _show_logs(answer: dict[str, Any]) -> None:
    where = ", ".join(str(v) for v in (answer["provider"], answer["provider_job_id"]) if v)
    head = f"job {answer['job_id']} ({answer['status']}{', ' + where if where else ''})"
    if answer["attempt"] is None:
        ended = answer["status"] in ("succeeded", "failed", "canceled", "skipped")
        said = "the provider logged nothing" if ended else "nothing logged yet"
        err().print(f"{head}: {said}", highlight=False, markup=False)
        return
    note = f", {answer['dropped_chars']} earlier characters left out" if answer["truncated"] else ""
    err().print(
        f"{head}, attempt {answer['attempt']}, updated {answer['updated_at']}{note}", highlight=False, markup=False
    )
    sys.stdout.write(answer["text"] if answer["text"].endswith("\n") or not answer["text"] else answer["text"] + "\n")
    sys.stdout.flush()


StatusOpt = Annotated[
    str | None,
    typer.Option("--status", help="Only executions in this status (queued, running, succeeded, failed, canceled)."),
]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")]
ListJsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON (a list of execution summaries, without jobs).")
]


def list_executions(
    status: StatusOpt = None, limit: LimitOpt = 20, server: ServerOpt = None, api_key: ApiKeyOpt = None,
    as_json: ListJsonOpt = False,
) -> None:  # fmt: skip
    """List executions, newest first (id, status, progress, cost, created)."""
    from ..states import EXECUTION_STATUSES

    if status is not None and status not in EXECUTION_STATUSES:
        from .common import fail

        raise fail(f"--status must be one of {', '.join(EXECUTION_STATUSES)}, not {status!r}", 2)

    async def body(backend: Backend) -> list[dict[str, Any]]:
        return await backend.list_executions(status, limit)

    print_json_or(on_backend(server, api_key, body), as_json, lambda rows: show_list(rows, status))


def lifecycle(name: str, act: Callable[[Backend, str], Awaitable[dict[str, Any] | str]]) -> Callable[..., None]:
    """A command that acts on an execution (the result is its state, or the id of a new one) and shows the
    state; with --wait it then follows the execution to its end like `status --wait` (output, exit status)."""

    def cmd(
        execution_id: IdArg,
        wait: Annotated[
            bool, typer.Option("--wait", help="Then wait for the end, showing progress (on stderr).")
        ] = False,
        server: ServerOpt = None,
        api_key: ApiKeyOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        async def body(backend: Backend) -> dict[str, Any]:
            result = await act(backend, execution_id)
            if wait:
                state = await _follow(backend, result if isinstance(result, str) else execution_id, as_json)
                show_state(state, as_json)
                return state
            state = result if isinstance(result, dict) else await backend.get(result)
            print_json_or(state, as_json, summary)
            return state

        state = on_backend(server, api_key, body)
        if wait:
            exit_for(state)

    cmd.__name__ = name
    return cmd


async def _cancel(backend: Backend, execution_id: str) -> dict[str, Any]:
    """Cancel; one that has already ended is refused with a message saying how it ended."""
    try:
        return await backend.cancel(execution_id)
    except Conflict:  # a server's 409 too (ConflictError)
        state = await backend.get(execution_id)
        if state["status"] not in TERMINAL_EXECUTION:
            raise
        ended = "is already canceled" if state["status"] == "canceled" else f"has already {state['status']}"
        err().print(f"[red]refused:[/red] execution {execution_id} {ended}; nothing to cancel", highlight=False)
        raise Refused from None


cancel = lifecycle("cancel", _cancel)
resume = lifecycle("resume", lambda backend, i: backend.resume(i))
retry = lifecycle("retry", lambda backend, i: backend.retry(i))


def estimate(
    plan: PlanArg, server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: EstimateJsonOpt = False
) -> None:
    """Estimate a plan's cost and time (the longest chain of dependencies); nothing is enqueued."""
    data = read_plan(plan)

    async def body(backend: Backend) -> dict[str, Any]:
        return await backend.estimate(data)

    print_json_or(on_backend(server, api_key, body), as_json, _show_estimate)


def _show_estimate(answer: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="estimate")
    table.add_column("job")
    table.add_column("cost", justify="right")
    table.add_column("time", justify="right")
    for job in answer["jobs"]:
        table.add_row(job["id"], f"${job['cost_usd']:.4f}", f"{job['seconds']:.1f}s")
    out().print(table)
    out().print(f"total: ${answer['cost_usd']:.4f}, about {answer['seconds']:.1f}s", highlight=False)
