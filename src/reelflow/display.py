"""Showing executions to a person: a live per-job table and a timeline (rich)."""

from __future__ import annotations

from datetime import UTC, datetime
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


def shown_progress(state: dict[str, Any]) -> float | None:
    """The execution's progress as shown: while it runs, or once it succeeded, the state's; once it failed or was
    canceled, the share of its jobs' work done (succeeded jobs whole, others as far as they got), not 100%.
    None for an ended execution listed without its jobs."""
    if state["status"] not in ("failed", "canceled"):
        return float(state["progress"])
    jobs = state.get("jobs")
    if not jobs:
        return None
    done = sum(100.0 if j["status"] == "succeeded" else float(j.get("progress") or 0.0) for j in jobs)
    return min(100.0, done / len(jobs))


def _elapsed(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _job_time(job: dict[str, Any], now: datetime) -> str:
    """How long a job ran (or has been running), or has waited in the queue."""
    started, finished = _ts(job.get("started_at")), _ts(job.get("finished_at"))
    if started and finished:
        return _elapsed((finished - started).total_seconds())
    if started:
        return _elapsed((now - started).total_seconds())
    queued = _ts(job.get("queued_at"))
    if job["status"] == "queued" and queued:
        return f"queued {_elapsed((now - queued).total_seconds())}"
    return "-"


def provider_queued(job: dict[str, Any]) -> float | None:
    """The seconds the job waited in its provider's queue; None where that says nothing: a job run in the
    worker (an ffmpeg operation, `local/*`) has no provider queue, its 0 s is only noise."""
    queued = job.get("provider_queued_s")
    if not isinstance(queued, int | float):
        return None
    local = not job.get("model") or str(job["model"]).startswith("local/")
    return None if local and queued == 0 else float(queued)


def _job_note(job: dict[str, Any], now: datetime | None = None, read_at: datetime | None = None) -> str:
    """An error; or, while it runs, where the provider has it: in its queue (for how long, at which position
    when known), or running (for how long, after how long queued). `read_at`: when the state was read (the
    wait in the provider's queue it gives grows from then)."""
    if job.get("error"):
        return str(job["error"])
    if job["status"] != "running":
        queued = provider_queued(job)
        if job["status"] == "succeeded" and not job.get("cache_hit") and queued is not None:
            return f"queued at provider {_elapsed(queued)}"
        return "cache hit" if job.get("cache_hit") else ""
    now = now or datetime.now(UTC)
    phase, position = job.get("provider_phase"), job.get("queue_position")
    queued = job.get("provider_queued_s")
    if phase == "queued":
        if isinstance(queued, int | float) and read_at is not None:
            queued += max(0.0, (now - read_at).total_seconds())
        waited = f" {_elapsed(queued)}" if isinstance(queued, int | float) else ""
        return f"queued at provider{waited}" + (f", position {position}" if position is not None else "")
    if position is not None:
        return f"in the provider's queue, position {position}"
    started = _ts(job.get("provider_started_at"))
    if phase == "running" and started is not None:
        note = f"running {_elapsed((now - started).total_seconds())}"
        if isinstance(queued, int | float):
            note += f" (queued at provider {_elapsed(queued)})"
        return note
    return ""


class ProgressView:
    """The live display of one state, drawn anew each time it is shown: in a `rich.live.Live` (8 times a
    second) running jobs' times keep counting between two reads of the state."""

    def __init__(self, state: dict[str, Any], read_at: datetime | None = None) -> None:
        self.state = state
        self.read_at = read_at or datetime.now(UTC)

    def __rich__(self) -> Group:
        return _progress_group(self.state, datetime.now(UTC), self.read_at)


def progress_view(state: dict[str, Any]) -> ProgressView:
    """The live display: the execution's bar, then one row per job (progress, time running or queued, and
    where the provider has it)."""
    return ProgressView(state)


def _progress_group(state: dict[str, Any], now: datetime, read_at: datetime) -> Group:
    status = state["status"]
    shown = shown_progress(state) or 0.0
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text(state["id"], style="bold"),
        Text(status, style=STATUS_STYLE.get(status, "")),
        ProgressBar(total=100, completed=shown, width=40),
        Text(f"{shown:5.1f}%"),
    )
    jobs = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("job", "type", "status", "progress", "", "time", "attempts", "note"):
        jobs.add_column(col, no_wrap=col != "note", justify="right" if col in ("", "time") else "left")
    for job in state["jobs"]:
        note = _job_note(job, now, read_at)
        progress = float(job.get("progress") or 0.0)
        known = progress > 0 or job["status"] in ("succeeded", "skipped")
        jobs.add_row(
            job["id"],
            job["type"],
            Text(job["status"], style=STATUS_STYLE.get(job["status"], "")),
            ProgressBar(total=100, completed=progress, width=20, pulse=job["status"] == "running" and not known),
            f"{progress:.0f}%" if known else "",
            _job_time(job, now),
            str(job["attempts"]),
            Text(note, style="red" if job.get("error") else "dim", overflow="fold"),
        )
    return Group(head, jobs)


def timeline_table(state: dict[str, Any]) -> Table:
    """Per job: when it started after the execution was created, how long it ran, and how it ended."""
    origin = state["created_at"]
    table = Table(title=f"execution {state['id']} — {state['status']}")
    # the provider-queue column only when some job had a provider queue (not for a plan run in the worker)
    queues = {job["id"]: provider_queued(job) for job in state["jobs"]}
    queue_col = any(q is not None for q in queues.values())
    for col, justify in (("job", "left"), ("type", "left"), ("status", "left"), ("start", "right"),
                         ("duration", "right"), ("queued at provider", "right"), ("attempts", "right"),
                         ("timeline", "left")):
        if col != "queued at provider" or queue_col:
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
        status = Text(job["status"], style=STATUS_STYLE.get(job["status"], ""))
        if job.get("cache_hit"):  # reused an identical earlier job's result: nothing ran, nothing was paid
            status.append(" (cache hit)", style="cyan")
        queued = queues[job["id"]]
        cells: list[str | Text] = [
            job["id"],
            job["type"],
            status,
            f"{start:.2f}s" if start is not None else "-",
            "cached" if job.get("cache_hit") else (f"{dur:.2f}s" if dur is not None else "-"),
            *([f"{queued:.2f}s" if queued is not None else "-"] if queue_col else []),
            str(job["attempts"]),
            Text(bar, style=STATUS_STYLE.get(job["status"], "")),
        ]
        table.add_row(*cells)
    return table
