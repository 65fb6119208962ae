"""The rules of the state machine that every Store applies the same way (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
JOB_STATUSES = ("waiting", "queued", "running", "succeeded", "failed", "canceled", "skipped")
TERMINAL_EXECUTION = frozenset({"succeeded", "failed", "canceled"})
TERMINAL_JOB = frozenset({"succeeded", "failed", "canceled", "skipped"})
ACTIVE_JOB = frozenset({"waiting", "queued", "running"})
RESUMABLE_JOB = frozenset({"failed", "canceled", "skipped"})


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
