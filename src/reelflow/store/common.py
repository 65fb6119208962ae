"""Helpers every Store shares: shaping rows into the API's state, cursors, migrations on disk."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from ..errors import ReelflowError


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with a Z, millisecond precision."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One job as SPEC §2 shows it."""
    return {
        "id": row["key"],
        "type": row["type"],
        "model": row["model"],
        "status": row["status"],
        "attempts": row["attempts"],
        "max_attempts": row["max_attempts"],
        "progress": row["progress"],
        "queue_position": row["queue_position"],
        "depends_on": loads(row["depends_on"]),
        "provider_job_id": row["provider_job_id"],
        "result": loads(row["result"]),
        "error": row["error"],
        "cost": {"estimated": row["cost_estimated"], "actual": row["cost_actual"]},
        "queued_at": iso(row["queued_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
    }


def execution_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """An execution without its jobs (listings)."""
    return {
        "id": row["id"],
        "status": row["status"],
        "progress": row["progress"],
        "error": row["error"],
        "cost": {"estimated": row["cost_estimated"], "actual": row["cost_actual"]},
        "metadata": loads(row["metadata"]),
        "retry_of": row["retry_of"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
    }


def execution_view(row: Mapping[str, Any], jobs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The full state of one execution (SPEC §2)."""
    view = execution_summary(row)
    view["result"] = loads(row["result"])
    view["jobs"] = [job_view(j) for j in jobs]
    view["webhook"] = row["webhook"]
    view["options"] = (loads(row["plan"]) or {}).get("options", {})
    return view


def execution_result(sinks: list[tuple[str, str | None]]) -> dict[str, Any] | None:
    """An execution's result: its last sink job's result, plus every sink's under `outputs`."""
    outputs = {key: loads(res) for key, res in sinks if res is not None}
    if not outputs:
        return None
    last = next(reversed(outputs.values()))
    return {**(last or {}), "outputs": outputs}


def execution_error(failed: list[tuple[str, str | None]]) -> str | None:
    if not failed:
        return None
    key, err = failed[0]
    more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
    return f"job '{key}' failed: {err}{more}"


def encode_cursor(created_at: float, execution_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{execution_id}".encode()).decode().rstrip("=")


class BadCursor(ReelflowError):
    """A pagination cursor that this server did not issue."""


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, eid = raw.partition("|")
        if not eid:
            raise ValueError
        return float(ts), eid
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor(f"invalid cursor {cursor!r}") from exc


def migration_scripts(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped for `dialect`, in order."""
    folder = resources.files("reelflow.store") / "migrations" / dialect
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)
