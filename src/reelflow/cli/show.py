"""How the execution commands show a state to a person, or as JSON."""

from __future__ import annotations

from typing import Any

import typer

from .app import out, print_json


def summary(state: dict[str, Any]) -> None:
    style = {"succeeded": "green", "failed": "red", "canceled": "magenta"}.get(state["status"], "yellow")
    out().print(f"execution [bold]{state['id']}[/bold] [{style}]{state['status']}[/{style}]", highlight=False)
    if state.get("error"):
        out().print(f"  error: {state['error']}", highlight=False)
    result = state.get("result") or {}
    if result.get("path") or result.get("url"):
        out().print(f"  output: {result.get('path') or result.get('url')}", highlight=False, soft_wrap=True)
    if n := state.get("possible_duplicates"):
        jobs = ", ".join(j["id"] for j in state.get("jobs", []) if j.get("possible_duplicates"))
        out().print(
            f"  [red]possible duplicate charge[/red]: about ${state.get('possible_duplicate_charge') or 0:.4f}"
            f" ({n} {'retry' if n == 1 else 'retries'} of {jobs} went ahead where the provider could not be asked"
            " whether it took the earlier attempt)",
            highlight=False,
            soft_wrap=True,
        )


def exit_for(state: dict[str, Any]) -> None:
    """Exit status 1 unless the execution succeeded."""
    if state["status"] != "succeeded":
        raise typer.Exit(1)


def show_final(state: dict[str, Any], as_json: bool) -> None:
    """A finished execution: its timeline and summary."""
    if as_json:
        print_json(state)
    else:
        from ..display import timeline_table

        out().print(timeline_table(state))
        summary(state)


def show_accepted(execution_id: str, state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json({"id": execution_id, "status": state["status"]})
    else:
        out().print(f"accepted: execution [bold]{execution_id}[/bold] ({len(state['jobs'])} jobs queued)")


def show_state(state: dict[str, Any], as_json: bool) -> None:
    """An execution as it stands: the per-job view and summary."""
    if as_json:
        print_json(state)
    else:
        from ..display import progress_view

        out().print(progress_view(state))
        summary(state)
