"""Showing executions to a person: a live per-job table and a timeline (rich)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "waiting": "dim",
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "canceled": "magenta",
    "skipped": "dim red",
}


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _seconds(a: str | None, b: str | None) -> float | None:
    start, end = _ts(a), _ts(b)
    return (end - start).total_seconds() if start and end else None


def progress_view(state: dict[str, Any]) -> Group:
    """The live display: the execution's bar, then one row per job."""
    status = state["status"]
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text(state["id"], style="bold"),
        Text(status, style=STATUS_STYLE.get(status, "")),
        ProgressBar(total=100, completed=state["progress"], width=40),
        Text(f"{state['progress']:5.1f}%"),
    )
    jobs = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("job", "type", "status", "progress", "attempts", "note"):
        jobs.add_column(col)
    for job in state["jobs"]:
        note = job["error"] or ""
        if job["status"] == "running" and job.get("queue_position") is not None:
            note = f"queue position {job['queue_position']}"
        jobs.add_row(
            job["id"],
            job["type"],
            Text(job["status"], style=STATUS_STYLE.get(job["status"], "")),
            ProgressBar(total=100, completed=job["progress"], width=20),
            str(job["attempts"]),
            Text(note[:80], style="red" if job["error"] else "dim"),
        )
    return Group(head, jobs)


def timeline_table(state: dict[str, Any]) -> Table:
    """Per job: when it started after the execution was created, how long it ran, and how it ended."""
    origin = state["created_at"]
    table = Table(title=f"execution {state['id']} — {state['status']}")
    for col, justify in (("job", "left"), ("type", "left"), ("status", "left"), ("start", "right"),
                         ("duration", "right"), ("attempts", "right"), ("timeline", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    total = _seconds(origin, state.get("finished_at")) or 0.0
    for job in state["jobs"]:
        start = _seconds(origin, job["started_at"])
        dur = _seconds(job["started_at"], job["finished_at"])
        bar = ""
        if total > 0 and start is not None and dur is not None:
            width = 30
            a = int(width * start / total)
            b = max(1, int(width * dur / total))
            bar = " " * a + "█" * min(b, width - a)
        table.add_row(
            job["id"],
            job["type"],
            Text(job["status"], style=STATUS_STYLE.get(job["status"], "")),
            f"{start:.2f}s" if start is not None else "-",
            f"{dur:.2f}s" if dur is not None else "-",
            str(job["attempts"]),
            Text(bar, style=STATUS_STYLE.get(job["status"], "")),
        )
    return table
