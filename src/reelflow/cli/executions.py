"""The execution commands: run, status, events, cancel, resume, retry, estimate; each on the local database
or, with --server, on a server."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .app import ApiKeyOpt, IdArg, JsonOpt, PlanArg, ServerOpt, on_backend, out, print_json, read_plan
from .show import exit_for, show_accepted, show_final, show_state, summary

if TYPE_CHECKING:
    from .backend import Backend

WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the end, showing progress.")]


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
    """Validate and enqueue a plan; with --wait, follow it to the end."""
    data = read_plan(plan)

    async def body(backend: Backend) -> dict[str, Any]:
        execution_id = await backend.submit(data, webhook)
        if wait:
            state = await _follow(backend, execution_id, as_json)
            show_final(state, as_json)
            return state
        state = await backend.get(execution_id)
        show_accepted(execution_id, state, as_json)
        return state

    state = on_backend(server, api_key, body)
    if wait:
        exit_for(state)


def status(
    execution_id: IdArg, wait: WaitOpt = False, server: ServerOpt = None, api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Show an execution's state."""

    async def body(backend: Backend) -> dict[str, Any]:
        state = await (_follow(backend, execution_id, as_json) if wait else backend.get(execution_id))
        show_state(state, as_json)
        return state

    state = on_backend(server, api_key, body)
    if wait:
        exit_for(state)


def events(execution_id: IdArg, server: ServerOpt = None, api_key: ApiKeyOpt = None) -> None:
    """Print an execution's event log, one JSON object per line (with --server: followed to the end)."""

    async def body(backend: Backend) -> None:
        async for e in backend.events(execution_id):
            sys.stdout.write(json.dumps(e) + "\n")
            sys.stdout.flush()

    on_backend(server, api_key, body)


def lifecycle(name: str, act: Callable[[Backend, str], Awaitable[dict[str, Any] | str]]) -> Callable[..., None]:
    """A command that acts on an execution (the result is its state, or the id of a new one) and shows the
    state; with --wait it then follows the execution to its end like `status --wait` (output, exit status)."""

    def cmd(
        execution_id: IdArg,
        wait: Annotated[bool, typer.Option("--wait", help="Then wait for the end, showing progress.")] = False,
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
            if as_json:
                print_json(state)
            else:
                summary(state)
            return state

        state = on_backend(server, api_key, body)
        if wait:
            exit_for(state)

    cmd.__name__ = name
    return cmd


cancel = lifecycle("cancel", lambda backend, i: backend.cancel(i))
resume = lifecycle("resume", lambda backend, i: backend.resume(i))
retry = lifecycle("retry", lambda backend, i: backend.retry(i))


def estimate(plan: PlanArg, server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """Estimate a plan's cost and time (the longest chain of dependencies); nothing is enqueued."""
    data = read_plan(plan)

    async def body(backend: Backend) -> dict[str, Any]:
        return await backend.estimate(data)

    answer = on_backend(server, api_key, body)
    if as_json:
        print_json(answer)
        return
    from rich.table import Table

    table = Table(title="estimate")
    table.add_column("job")
    table.add_column("cost", justify="right")
    table.add_column("time", justify="right")
    for job in answer["jobs"]:
        table.add_row(job["id"], f"${job['cost_usd']:.4f}", f"{job['seconds']:.1f}s")
    out().print(table)
    out().print(f"total: ${answer['cost_usd']:.4f}, about {answer['seconds']:.1f}s", highlight=False)
