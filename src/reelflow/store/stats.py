"""Operational figures both stores compute the same way: the assembly of the rows of the `stats_*` statements
(sql/shared.sql, read by `StoreManager.stats`) into the answers of `Store.stats` (the JSON of `GET /v1/stats`)
and `Store.metric_gauges` (the gauges `/metrics` reads at scrape time).

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

from .common import iso

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
    """The figures of `GET /v1/stats` from the rows of the `stats_*` statements (sql/shared.sql)."""
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


__all__ = ["assemble_gauges", "assemble_stats", "parse_since", "percentile"]
