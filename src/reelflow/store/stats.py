"""Operational figures both stores compute the same way: the queries (portable SQL with `?` placeholders;
PostgreSQL swaps them for `%s`) and the assembly of their rows into the answers of `Store.stats` (the
JSON of `GET /v1/stats`) and `Store.metric_gauges` (the gauges `/metrics` reads at scrape time).

Percentiles are computed here from the rows, so SQLite (which has no percentile function) and PostgreSQL
give identical figures.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .common import iso, month_start

Query = tuple[str, str, tuple[Any, ...]]
Rows = Mapping[str, Sequence[Sequence[Any]]]

LIVE_WITHIN_S = 60.0
"""A worker seen (registered or heartbeating) this recently counts as live."""

DEFAULT_WINDOW_S = 24 * 3600.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ZONE_SPACE = re.compile(r" (\d\d:?\d\d)$")


def parse_since(value: str | None, now: float) -> float:
    """The start of a stats window as epoch seconds, from an ISO 8601 time (UTC when it names no zone) or a
    duration back from `now` (`24h`, `90m`, `7d`, `2w`, `30s`); the last 24 h when empty. ValueError says
    what is wrong."""
    text = (value or "").strip()
    if not text:
        return now - DEFAULT_WINDOW_S
    if m := _DURATION.fullmatch(text.lower()):
        seconds = float(m[1]) * _UNITS[m[2]]
        if seconds <= 0:
            raise ValueError(f"since must be a positive duration, got {text!r}")
        return max(0.0, now - seconds)
    try:  # a "+" of a zone offset arrives as a space when the caller did not encode the query
        at = datetime.fromisoformat(_ZONE_SPACE.sub(r"+\1", text))
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        ts = at.timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(
            f"since must be an ISO 8601 time (2026-01-31T12:00:00Z) or a duration (24h, 90m, 7d), got {text[:64]!r}"
        ) from None
    if ts > now:
        raise ValueError(f"since is in the future: {text!r}")
    return max(0.0, ts)


def _scope(tenant: str | None, column: str = "tenant") -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if tenant is None else (f" AND {column} = ?", (tenant,))


def stats_queries(tenant: str | None, since: float, now: float) -> list[Query]:
    """The reads behind `Store.stats` (run in one read transaction). The columns of each query have distinct
    names: PostgreSQL hands rows over as dicts."""
    t, ta = _scope(tenant)
    return [
        (
            "executions",
            "SELECT status, COUNT(*) FROM executions WHERE (status IN ('queued', 'running') OR finished_at >= ?)"
            f"{t} GROUP BY status",
            (since, *ta),
        ),
        (
            "execution_seconds",
            "SELECT finished_at - created_at FROM executions WHERE finished_at >= ?"
            f" AND status IN ('succeeded', 'failed'){t}",
            (since, *ta),
        ),
        (
            "jobs",
            "SELECT status, COUNT(*) FROM jobs WHERE (status IN ('waiting', 'queued', 'running') OR finished_at >= ?)"
            f"{t} GROUP BY status",
            (since, *ta),
        ),
        ("queue_depth", f"SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND run_after <= ?{t}", (now, *ta)),
        (
            "provider_jobs",
            "SELECT COALESCE(provider, 'local'), status, finished_at - started_at FROM jobs WHERE finished_at >= ?"
            f" AND status IN ('succeeded', 'failed') AND cache_hit = 0{t}",
            (since, *ta),
        ),
        (
            "webhooks",
            # a delivery given up on has its next_attempt_at set to the moment it was given up
            "SELECT status, COUNT(*) FROM webhook_deliveries WHERE (status = 'pending'"
            " OR (status = 'delivered' AND delivered_at >= ?) OR (status = 'failed' AND next_attempt_at >= ?))"
            f"{t} GROUP BY status",
            (since, since, *ta),
        ),
        (
            "spend_month",
            f"SELECT COALESCE(SUM(cost_actual), 0) FROM jobs WHERE finished_at >= ?{t}",
            (month_start(now), *ta),
        ),
        ("workers", "SELECT COUNT(*) FROM workers WHERE last_seen > ?", (now - LIVE_WITHIN_S,)),
    ]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between the closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _rate(good: int, bad: int) -> float | None:
    return round(good / (good + bad), 4) if good + bad else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _counts(rows: Sequence[Sequence[Any]]) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in rows}


def assemble_stats(rows: Rows, tenant: str | None, since: float) -> dict[str, Any]:
    """The figures of `GET /v1/stats` from the rows of `stats_queries`."""
    executions = _counts(rows["executions"])
    durations = [float(r[0]) for r in rows["execution_seconds"] if r[0] is not None]
    by_provider: dict[str, dict[str, Any]] = defaultdict(lambda: {"succeeded": 0, "failed": 0, "seconds": []})
    for provider, status, seconds in rows["provider_jobs"]:
        entry = by_provider[str(provider)]
        entry[str(status)] += 1
        if seconds is not None:
            entry["seconds"].append(float(seconds))
    providers = [
        {
            "provider": name,
            "requests": e["succeeded"] + e["failed"],
            "succeeded": e["succeeded"],
            "failed": e["failed"],
            "success_rate": _rate(e["succeeded"], e["failed"]),
            "p50_s": _seconds(percentile(e["seconds"], 0.5)),
        }
        for name, e in sorted(by_provider.items())
    ]
    hooks = _counts(rows["webhooks"])
    jobs = _counts(rows["jobs"])
    return {
        "tenant": tenant,
        "since": iso(since),
        "executions": {
            "by_status": executions,
            "success_rate": _rate(executions.get("succeeded", 0), executions.get("failed", 0)),
            "p50_s": _seconds(percentile(durations, 0.5)),
            "p95_s": _seconds(percentile(durations, 0.95)),
        },
        "queue_depth": int(rows["queue_depth"][0][0]),
        "jobs": {"by_status": jobs},
        "providers": providers,
        "webhooks": {
            "delivered": hooks.get("delivered", 0),
            "failed": hooks.get("failed", 0),
            "pending": hooks.get("pending", 0),
            "success_rate": _rate(hooks.get("delivered", 0), hooks.get("failed", 0)),
        },
        "spend_usd_month": round(float(rows["spend_month"][0][0]), 6),
        "workers": {"live": int(rows["workers"][0][0]), "slots_in_use": jobs.get("running", 0)},
    }


def gauge_queries(now: float) -> list[Query]:
    """The reads behind `Store.metric_gauges`: cheap aggregates over every tenant."""
    return [
        ("jobs", "SELECT status, COUNT(*) FROM jobs GROUP BY status", ()),
        ("queue_depth", "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND run_after <= ?", (now,)),
        ("workers", "SELECT info FROM workers WHERE last_seen > ?", (now - LIVE_WITHIN_S,)),
    ]


def assemble_gauges(rows: Rows) -> dict[str, Any]:
    jobs = _counts(rows["jobs"])
    slots = 0
    for (info,) in rows["workers"]:
        try:
            slots += int(json.loads(info).get("concurrency") or 0)
        except (TypeError, ValueError, AttributeError):
            continue
    return {
        "jobs": jobs,
        "queue_depth": int(rows["queue_depth"][0][0]),
        "workers_live": len(rows["workers"]),
        "worker_slots": slots,
        "slots_in_use": jobs.get("running", 0),
    }


__all__ = ["assemble_gauges", "assemble_stats", "gauge_queries", "parse_since", "percentile", "stats_queries"]
