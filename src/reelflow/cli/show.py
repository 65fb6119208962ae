"""How the execution commands show a state to a person, or as JSON."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..states import TERMINAL_EXECUTION
from .common import out, print_json

if TYPE_CHECKING:
    from .backend import Submitted


def summary(state: dict[str, Any]) -> None:
    style = {"succeeded": "green", "failed": "red", "canceled": "magenta"}.get(state["status"], "yellow")
    out().print(f"execution [bold]{state['id']}[/bold] [{style}]{state['status']}[/{style}]", highlight=False)
    if state.get("error"):
        out().print(f"  error: {state['error']}", highlight=False)
    from ..sdk import outputs_of

    for o in outputs_of(state):
        where = o.get("path") or o.get("url")
        duration = f", {o['duration']:g}s" if isinstance(o.get("duration"), (int, float)) else ""
        job = f" ({o['job']}, {o['type']}{duration})" if o.get("job") else ""
        out().print(f"  output: {where}{job}", highlight=False, soft_wrap=True)
    jobs_all = state.get("jobs") or []
    if hits := [j["id"] for j in jobs_all if j.get("cache_hit")]:
        out().print(
            f"  cache: {len(hits)} of {len(jobs_all)} jobs reused an identical earlier result, nothing paid"
            f" ({', '.join(hits)})",
            highlight=False,
            soft_wrap=True,
        )
    if n := state.get("possible_duplicates"):
        jobs = ", ".join(j["id"] for j in state.get("jobs", []) if j.get("possible_duplicates"))
        out().print(
            f"  [red]possible duplicate charge[/red]: about ${state.get('possible_duplicate_charge') or 0:.4f}"
            f" ({n} {'retry' if n == 1 else 'retries'} of {jobs} went ahead where the provider could not be asked"
            " whether it took the earlier attempt)",
            highlight=False,
            soft_wrap=True,
        )


def exit_for(state: dict[str, Any], *, finished_only: bool = False) -> None:
    """Exit status 1 unless the execution succeeded; with `finished_only`, 0 too while it has not ended."""
    if state["status"] == "succeeded" or (finished_only and state["status"] not in TERMINAL_EXECUTION):
        return
    raise SystemExit(1)


def show_final(state: dict[str, Any], as_json: bool) -> None:
    """A finished execution: its timeline and summary."""
    if as_json:
        print_json(state)
    else:
        from ..display import timeline_table

        out().print(timeline_table(state))
        summary(state)


def show_accepted(accepted: Submitted, as_json: bool, wait: bool = False) -> None:
    """What was accepted, on stderr; on stdout the id alone (`EX=$(reelflow run plan.yaml)`), or the JSON
    `{id, status}`; with --wait and --json nothing (stdout is the final state's JSON alone)."""
    execution_id, n = accepted.id, accepted.jobs
    if as_json and not wait:
        print_json({"id": execution_id, "status": accepted.status})
        return
    # plain text, not rich: no markup to render, and `run` without --wait then never loads rich (~40 ms)
    sys.stderr.write(f"accepted: execution {execution_id} ({n} {'job' if n == 1 else 'jobs'} queued)\n")
    sys.stderr.flush()
    if not as_json:
        sys.stdout.write(execution_id + "\n")
        sys.stdout.flush()


def show_list(rows: list[dict[str, Any]], status: str | None = None) -> None:
    """Executions, one row each; a sentence when there are none (an empty table reads like a failure)."""
    if not rows:
        out().print(f"no {status} executions" if status else "no executions yet", highlight=False)
        return
    from rich.table import Table
    from rich.text import Text

    from ..display import STATUS_STYLE, shown_progress

    table = Table(title="executions")
    for col, justify in (("execution", "left"), ("status", "left"), ("progress", "right"), ("cost", "right"),
                         ("created", "left"), ("finished", "left")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        cost = (r.get("cost") or {}).get("actual")
        if cost is None:
            cost = (r.get("cost") or {}).get("estimated")
        table.add_row(
            r["id"],
            Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
            "-" if (shown := shown_progress(r)) is None else f"{shown:.0f}%",
            f"${cost:.4f}" if isinstance(cost, (int, float)) else "-",
            r.get("created_at") or "-",
            r.get("finished_at") or "-",
        )
    out().print(table)


def show_state(state: dict[str, Any], as_json: bool) -> None:
    """An execution as it stands: the per-job view and summary."""
    if as_json:
        print_json(state)
    else:
        from ..display import progress_view

        out().print(progress_view(state))
        summary(state)
