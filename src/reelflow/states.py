"""The rules of the state machine that every Store applies the same way (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
JOB_STATUSES = ("waiting", "queued", "running", "succeeded", "failed", "canceled", "skipped")
DELIVERY_STATUSES = ("pending", "delivered", "failed")
"""A webhook delivery's status (pending until delivered, or failed once its retries ran out)."""

JOB_INITIAL = frozenset({"waiting", "queued"})
"""A job is stored waiting (for its dependencies) or queued."""
JOB_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "waiting": frozenset({"queued", "canceled", "skipped"}),  # its dependencies succeeded; cancel; one failed
    "queued": frozenset({"running", "canceled", "skipped"}),  # claimed; cancel; another job failed
    "running": frozenset({"succeeded", "failed", "canceled", "queued"}),  # outcomes; retry, release, lease lost
    "succeeded": frozenset(),
    "failed": frozenset({"waiting", "queued"}),  # resume
    "canceled": frozenset({"waiting", "queued"}),  # resume
    "skipped": frozenset({"waiting", "queued"}),  # resume
}
"""Every legal change of a job's status: from -> the statuses it may become. The stores' guarded UPDATEs
take their `WHERE status ...` from here (`guard`)."""

EXECUTION_INITIAL = frozenset({"queued"})
EXECUTION_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "queued": frozenset({"running", "succeeded", "failed", "canceled"}),  # first claim; settled or canceled
    "running": frozenset({"queued", "succeeded", "failed", "canceled"}),  # resumed before it ever started
    "succeeded": frozenset(),
    "failed": frozenset({"running"}),  # resume
    "canceled": frozenset({"running"}),  # resume
}
"""Every legal change of an execution's status (derived from its jobs' by `execution_status`)."""

TERMINAL_EXECUTION = frozenset({"succeeded", "failed", "canceled"})
TERMINAL_JOB = frozenset({"succeeded", "failed", "canceled", "skipped"})
ACTIVE_JOB = frozenset({"waiting", "queued", "running"})
RESUMABLE_JOB = frozenset(s for s in TERMINAL_JOB if JOB_TRANSITIONS[s])


def sources(to: str, *, execution: bool = False) -> tuple[str, ...]:
    """The statuses a job (or an execution) may become `to` from, in the order of the status list."""
    table, order = (EXECUTION_TRANSITIONS, EXECUTION_STATUSES) if execution else (JOB_TRANSITIONS, JOB_STATUSES)
    return tuple(s for s in order if to in table[s])


@cache
def guard(to: str, column: str = "status", *, frm: str | None = None, execution: bool = False) -> str:
    """The SQL condition under which a row may change to status `to` (only from `frm` when given):
    `status = 'queued'` or `status IN ('waiting', 'queued', 'running')`, the same text on both dialects."""
    found = sources(to, execution=execution)
    if frm is not None:
        if frm not in found:
            raise ValueError(f"{frm!r} -> {to!r} is not a legal transition")
        found = (frm,)
    if not found:
        raise ValueError(f"no status may become {to!r}")
    if len(found) == 1:
        return f"{column} = '{found[0]}'"
    return f"{column} IN ({', '.join(repr(s) for s in found)})"


def check_constraint(statuses: Iterable[str]) -> str:
    """The CHECK body the migrations put on a status column: `status IN ('queued', 'running', …)`."""
    return f"status IN ({', '.join(repr(s) for s in statuses)})"


def execution_status(counts: Mapping[str, int], *, started: bool, cancel_requested: bool) -> str:
    """Derive an execution's status from how many of its jobs are in each status."""
    if any(counts.get(s, 0) for s in ACTIVE_JOB):
        return "running" if started else "queued"
    if cancel_requested:
        return "canceled"
    if counts.get("failed", 0) or counts.get("skipped", 0):
        return "failed"
    if counts.get("canceled", 0):
        return "canceled"
    return "succeeded"


def _finished(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in TERMINAL_JOB)


def execution_progress(counts: Mapping[str, int], running_progress: Iterable[float]) -> float:
    """0–100: finished jobs count whole, running jobs by their own progress."""
    total = sum(counts.values())
    if total == 0:
        return 0.0
    done = float(_finished(counts)) + sum(min(max(p, 0.0), 100.0) / 100.0 for p in running_progress)
    return round(min(100.0, 100.0 * done / total), 1)


def transitive_dependents(dependents: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """Every job that depends, directly or not, on one of `roots` (the roots excluded)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        for d in dependents.get(stack.pop(), ()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen
