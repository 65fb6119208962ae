"""Helpers every Store shares: shaping rows into the API's state, cursors, migrations on disk."""

from __future__ import annotations

import base64
import fnmatch
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from ..errors import ReelflowError, UsageLimitExceeded
from ..fieldkinds import text_fields
from ..states import guard
from .base import UsageLimit


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with a Z, millisecond precision."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The decoder's scanner (C), called directly: `json.loads` wraps it in ~0.6 µs of Python (keyword checks, the
encoding's detection, two whitespace matches), as much as the scan of a small result, more than of a key list."""


def loads(text: str | None) -> Any:
    if text is None:
        return None
    if text == "[]":  # most jobs' depends_on or dependents, and params: a fresh object, as json.loads makes
        return []
    if text == "{}":
        return {}
    if type(text) is str:
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:  # not a value at the start (whitespace first, or no JSON): json.loads says
            pass
        else:
            if end == len(text):  # the text was that value and nothing more, as stored
                return value
    return json.loads(text)


def encoder_once(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode` (no indent), with its C encoder made once: `JSONEncoder.encode` makes one at every call
    (half the cost of a small value), from the same options, giving the same text. Without circular-reference
    markers (a cycle ends in RecursionError, not ValueError), so that it keeps no state between calls and threads
    may share it. A top-level string, and Pythons without the C encoder, go through `encoder.encode`."""
    if c_make_encoder is None or encoder.indent is not None:
        return encoder.encode
    made = c_make_encoder(
        None, encoder.default, encode_basestring_ascii if encoder.ensure_ascii else encode_basestring, None,
        encoder.key_separator, encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan,
    )  # fmt: skip

    def encode(value: Any) -> str:
        return encoder.encode(value) if isinstance(value, str) else "".join(made(value, 0))

    return encode


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""Made once: `json.dumps` with options builds a new encoder at every call (a third of the cost of a small value)."""
_encode = encoder_once(_ENCODER)


def dumps(value: Any) -> str:
    kind = type(value)
    if kind is str:  # a key, an id: what JSONEncoder.encode gives a string, without its checks
        return str(encode_basestring(value))
    if kind is float and math.isfinite(value):  # a cost: the encoder writes a finite float as its repr
        return float.__repr__(value)
    return _encode(value)


def _failover_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A job's `models` and `failover` (the models passed over, each with why)."""
    state = loads(row["failover"]) if "failover" in row.keys() and row["failover"] else None
    if not state:
        return {"models": None, "failover": []}
    return {"models": state.get("models"), "failover": list(state.get("passed") or [])}


def job_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One job as the API shows it."""
    return {
        "id": row["key"],
        "type": row["type"],
        "model": row["model"],
        **_failover_view(row),
        "params": loads(row["params"]),
        "resolved_params": None,
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
        "cache_hit": bool(row["cache_hit"]) if "cache_hit" in row.keys() else False,
        "possible_duplicate_charge": round(float(row["possible_duplicate_usd"] or 0.0), 6),
        "possible_duplicates": int(row["possible_duplicates"] or 0),
        "queued_at": iso(row["queued_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        **provider_times(row),
    }


def provider_times(row: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """Where the job's work is at its provider: when it was handed over, the phase the provider gave, when the
    provider started it, and the seconds it waited in the provider's queue (while it still waits: so far)."""
    submitted, phase = row["provider_submitted_at"], row["provider_phase"]
    started, queued = row["provider_started_at"], row["provider_queued_s"]
    if row["status"] != "running":
        phase = None
    elif phase == "queued" and started is None and submitted is not None:
        queued = max(0.0, (time.time() if now is None else now) - submitted)
    return {
        "provider_phase": phase,
        "provider_submitted_at": iso(submitted),
        "provider_started_at": iso(started),
        "provider_queued_s": None if queued is None else round(float(queued), 3),
    }


LOG_LIMIT_CHARS = 64 * 1024
"""The most of a job's provider log kept: the end of it (see providers.base.ProviderLog, which bounds each
attempt's log the same way before it is written)."""


_LINE_START_WITHIN = 1024
"""A log cut to its end starts at the next line when one begins this close to the cut."""


def merged_log(old: Mapping[str, Any] | None, attempt: int, log: str, dropped: int) -> dict[str, Any]:
    """The job_logs row after attempt `attempt` wrote its whole log so far (`log`, after `dropped` characters
    not kept): the same attempt replaces its part; a new attempt moves the earlier part, bounded, before it."""
    if len(log) > LOG_LIMIT_CHARS:
        dropped += len(log) - LOG_LIMIT_CHARS
        log = log[-LOG_LIMIT_CHARS:]
    if old is None:
        earlier, earlier_dropped = "", 0
    elif int(old["attempt"]) == attempt:
        earlier, earlier_dropped = str(old["earlier"]), int(old["earlier_dropped"])
    else:
        before = str(old["earlier"]) + str(old["current"])
        if before and not before.endswith("\n"):
            before += "\n"
        earlier = before + f"--- attempt {attempt} ---\n" if before else ""
        earlier_dropped = int(old["earlier_dropped"]) + int(old["current_dropped"])
        if len(earlier) > LOG_LIMIT_CHARS:
            earlier_dropped += len(earlier) - LOG_LIMIT_CHARS
            earlier = earlier[-LOG_LIMIT_CHARS:]
    return {
        "attempt": attempt, "earlier": earlier, "earlier_dropped": earlier_dropped, "current": log,
        "current_dropped": max(0, int(dropped)),
    }  # fmt: skip


def log_view(
    execution_id: str,
    job: Mapping[str, Any],
    row: Mapping[str, Any] | None,
    *,
    cached_from: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A job's provider log as the API shows it: the last LOG_LIMIT_CHARS characters of every attempt's log,
    oldest first; when anything was left out, `truncated`, the count in `dropped_chars`, and a first line
    saying so. A job served from the cache shows the log of the job whose output it took (`cached_from`: its
    execution and key), after a first line naming it."""
    if row is None:
        text, dropped, attempt, updated = "", 0, None, None
    else:
        earlier = str(row["earlier"])
        text = earlier + str(row["current"])
        dropped = int(row["earlier_dropped"]) + int(row["current_dropped"])
        # where the text begins, was anything cut? (then it begins in the middle of a line, most likely)
        cut_at_start = bool(int(row["earlier_dropped"]) if earlier else int(row["current_dropped"]))
        if len(text) > LOG_LIMIT_CHARS:
            dropped += len(text) - LOG_LIMIT_CHARS
            text = text[-LOG_LIMIT_CHARS:]
            cut_at_start = True
        if cut_at_start and 0 <= (cut := text.find("\n", 0, _LINE_START_WITHIN)) < len(text) - 1:
            dropped += cut + 1  # start at a whole line (what was left out is counted, all of it)
            text = text[cut + 1 :]
        attempt, updated = int(row["attempt"]), row["updated_at"]
    if dropped:
        text = f"[... {dropped} earlier characters of this log were not kept ...]\n" + text
    if cached_from is not None:
        origin = f"job '{cached_from.get('job')}' of execution {cached_from.get('execution_id')}"
        text = f"[served from the cache: the output and this log are those of {origin}]\n" + text
    return {
        "execution_id": execution_id,
        "job_id": job["key"],
        "status": job["status"],
        "provider": job["provider"],
        "provider_job_id": job["provider_job_id"],
        "attempt": attempt,
        "text": text,
        "truncated": dropped > 0,
        "dropped_chars": dropped,
        "updated_at": iso(updated),
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
    """The full state of one execution, as the API shows it."""
    view = execution_summary(row)
    view["result"] = loads(row["result"])
    view["jobs"] = [job_view(j) for j in jobs]
    view["outputs"] = leaf_outputs(view["jobs"])
    _resolve_params(view["jobs"])
    # paid retries that went ahead where the provider could not be asked whether it took the earlier one (USD
    # estimated, and how many)
    view["possible_duplicate_charge"] = round(sum(j["possible_duplicate_charge"] for j in view["jobs"]), 6)
    view["possible_duplicates"] = sum(j["possible_duplicates"] for j in view["jobs"])
    view["webhook"] = row["webhook"]
    view["options"] = (loads(row["plan"]) or {}).get("options", {})
    return view


def leaf_outputs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every leaf job's output (a job no other job depends on, that has a result), in plan order."""
    needed = {dep for job in jobs for dep in job["depends_on"] or ()}
    outputs: list[dict[str, Any]] = []
    for job in jobs:
        result = job["result"]
        if job["id"] in needed or not isinstance(result, dict):
            continue
        outputs.append(
            {
                "job_id": job["id"],
                "type": job["type"],
                "url": result.get("url"),
                "content_type": result.get("content_type"),
                "duration": result.get("duration"),
            }
        )
    return outputs


def _resolve_params(jobs: list[dict[str, Any]]) -> None:
    """Set each job's `resolved_params`: its params with every reference replaced by the value it stands for,
    once every job it refers to has a result (None until then)."""
    from ..errors import PlanError
    from ..plan import find_references, resolve_references

    results = {job["id"]: job["result"] for job in jobs if isinstance(job["result"], dict)}
    for job in jobs:
        params = job["params"]
        if not isinstance(params, dict):
            continue
        if any(ref[0] not in results for ref in find_references(params)):
            continue
        try:
            job["resolved_params"] = resolve_references(params, results, job_key=job["id"])
        except PlanError:
            job["resolved_params"] = None


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


_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,400}")
_CURSOR_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created_at, execution id) of a cursor `encode_cursor` made; BadCursor for anything else, so no
    stray byte (a NUL, which PostgreSQL refuses in text) ever reaches a query."""
    try:
        if not _CURSOR_RE.fullmatch(cursor):  # base64 decoding would skip characters outside its alphabet
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, _, eid = raw.partition("|")
        when = float(ts)
        if not _CURSOR_ID_RE.fullmatch(eid) or not math.isfinite(when):
            raise ValueError
        return when, eid
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCursor(f"invalid cursor {cursor!r}") from exc


_BLOCK = re.compile(r"^-- (name|fragment): (\w+)[ \t]*$", re.M)
_GUARD = re.compile(r"\{guard ([\w. ]+)\}")
_USE = re.compile(r"\{use (\w+)(?: if ([^{}]+))?\}")


def _guard(m: re.Match[str]) -> str:
    """`{guard TO [from STATUS] [on COLUMN] [execution]}` -> `states.guard`'s condition."""
    to, *words = m[1].split()
    execution = "execution" in words
    words = [w for w in words if w != "execution"]
    opts = dict(zip(words[::2], words[1::2], strict=True))
    return guard(to, opts.get("on", "status"), frm=opts.get("from"), execution=execution)


class Statements:
    """The named statements of `sql/shared.sql` and `sql/<dialect>.sql` (a dialect's block replaces the shared one
    of its name), read once: one attribute a `-- name:` block, its lines joined, comments left out.

    A `-- fragment:` block is a part written once for several statements: `{use NAME}` puts it in as it is;
    `{use NAME if COND}` puts in its assignments (`column = value,`, one a line) as
    `column = CASE WHEN COND THEN value ELSE j.column END` (the statement's table is `j`)."""

    def __init__(self, dialect: str) -> None:
        folder = resources.files("reelflow.store") / "sql"
        blocks: dict[str, tuple[str, list[str]]] = {}
        for file in ("shared", dialect):
            parts = _BLOCK.split((folder / f"{file}.sql").read_text(encoding="utf-8"))
            for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
                lines = [line.strip() for line in body.splitlines()]
                blocks[name] = (kind, [s for s in lines if s and not s.startswith("--")])
        fragments = {name: lines for name, (kind, lines) in blocks.items() if kind == "fragment"}

        def use(m: re.Match[str]) -> str:
            lines = fragments[m[1]]
            if m[2] is None:
                return " ".join(lines)
            pairs = [line.rstrip(",").split(" = ", 1) for line in lines]
            return ", ".join(f"{col} = CASE WHEN {m[2]} THEN {value} ELSE j.{col} END" for col, value in pairs)

        for name, (kind, lines) in blocks.items():
            if kind == "name":
                setattr(self, name, _GUARD.sub(_guard, _USE.sub(use, " ".join(lines))))

    def __getattr__(self, name: str) -> str:  # only reached for a name no block has
        raise AttributeError(f"no SQL statement named {name!r}")


def migration_scripts(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped for `dialect`, in order."""
    folder = resources.files("reelflow.store") / "migrations" / dialect
    out = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


IDEMPOTENCY_WINDOW_S = 24 * 3600
CALLBACK_OUTCOME_MAX_BYTES = 64 * 1024
"""The most bytes of a callback's outcome (compact JSON) kept with the job's wake-up mark (`wake_job`); a larger
one is dropped, and the woken worker asks the provider instead."""
ORPHAN_CANCEL_S = 60.0
"""A cancellation its worker has not read for this long, while that worker no longer beats, is carried out by
lease recovery instead (the provider work of the cancelled attempt is cancelled there)."""
DEFAULT_WEBHOOK_EVENTS = ("execution.succeeded", "execution.failed", "execution.canceled")


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_delivery_id() -> str:
    """The `webhook-id` of one event: the same on every retry of that event."""
    return f"msg_{uuid.uuid4().hex}"


def wants_event(wanted: list[str], event_type: str) -> bool:
    """Whether a plan's webhook subscription (defaults plus `options.webhook_events`) covers an event."""
    return any(fnmatch.fnmatchcase(event_type, p) for p in (*DEFAULT_WEBHOOK_EVENTS, *wanted))


T = TypeVar("T")


def strip_paths(value: T) -> T:
    """A copy without the server's local file paths (`path` beside an artifact `key`): not for clients. An answer
    model (`reelflow.models`) is copied only where a path is left out: the rest is shared with `value`."""
    if isinstance(value, BaseModel):
        return cast(T, _strip_shared(value))
    return cast(T, _strip(value))


def _strip_shared(value: Any) -> Any:
    """`value` without paths; the parts that had none are `value`'s own (not copied)."""
    if isinstance(value, BaseModel):
        fields, changes = value.__dict__, {}
        for name in text_fields(type(value)):
            if isinstance(v := fields[name], dict | list | BaseModel) and (new := _strip_shared(v)) is not v:
                changes[name] = new
        return value.model_copy(update=changes) if changes else value
    if isinstance(value, dict):
        if "path" in value and "key" in value:
            return {k: _strip_shared(v) for k, v in value.items() if k != "path"}
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if isinstance(v, dict | list) and (new := _strip_shared(v)) is not v:
                out = dict(value) if out is None else out
                out[k] = new
        return value if out is None else out
    if isinstance(value, list):
        items: list[Any] | None = None
        for i, v in enumerate(value):
            if isinstance(v, dict | list | BaseModel) and (new := _strip_shared(v)) is not v:
                items = list(value) if items is None else items
                items[i] = new
        return value if items is None else items
    return value


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not (k == "path" and "key" in value)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def webhook_body(
    event_type: str, at: float, state: dict[str, Any], job_key: str | None, data: dict[str, Any] | None
) -> dict[str, Any]:
    """A webhook's body: type, timestamp and the execution's state (plus the job event's details)."""
    payload: dict[str, Any] = dict(state)
    if job_key is not None or event_type == "execution.progress":
        payload["event"] = {"job": job_key, **(data or {})}
    return {"type": event_type, "timestamp": iso(at), "data": strip_paths(payload)}


def artifact_keys(result: dict[str, Any] | None) -> list[str]:
    """The storage keys a job's result points at."""
    if not result:
        return []
    keys = [result["key"]] if isinstance(result.get("key"), str) else []
    for out in result.get("outputs") or []:
        if isinstance(out, dict) and isinstance(out.get("key"), str):
            keys.append(out["key"])
    return keys


def delivery_view(row: Mapping[str, Any], attempts: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "execution_id": row["execution_id"],
        "event_type": row["event_type"],
        "url": row["url"],
        "status": row["status"],
        "attempts": [
            {
                "attempt": a["attempt"],
                "at": iso(a["attempted_at"]),
                "status_code": a["status_code"],
                "latency_ms": a["latency_ms"],
                "error": a["error"],
                "request_body": a.get("request_body"),
                "response_body": a.get("response_body"),
            }
            for a in attempts
        ],
        "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "created_at": iso(row["created_at"]),
        "delivered_at": iso(row["delivered_at"]),
    }


def callback_matches(stored: str | None, remote_id: str) -> bool:
    """Whether a callback about `remote_id` is about the job whose provider id is `stored`.

    The stored id may carry a prefix the callback does not name (fal keeps `<owner>/<app>/<request id>`).
    A job whose id is not stored yet (the callback beat the write) matches: the signature already
    proved the provider sent it, and waking only makes the worker look.
    """
    if not remote_id:
        return False
    return stored is None or stored == remote_id or stored.endswith("/" + remote_id)


def month_start(now: float) -> float:
    """The start (UTC) of the calendar month `now` falls in: usage limits count from there."""
    t = datetime.fromtimestamp(now, tz=UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC).timestamp()


def usage_refusal(
    tenant: str, limit: UsageLimit, executions: int, cost_used: float, cost_asked: float
) -> UsageLimitExceeded | None:
    """The error for a submission that would pass one of the tenant's monthly limits, or None."""
    if limit.monthly_executions is not None and executions + 1 > limit.monthly_executions:
        return UsageLimitExceeded(
            f"tenant {tenant!r} reached its monthly_executions limit of {limit.monthly_executions}:"
            f" {executions} executions this month, this one would be number {executions + 1}",
            status=429,
            limit="monthly_executions",
        )
    if limit.monthly_cost_usd is not None and cost_used + cost_asked > limit.monthly_cost_usd + 1e-9:
        return UsageLimitExceeded(
            f"tenant {tenant!r} would pass its monthly_cost_usd budget of ${limit.monthly_cost_usd:.2f}:"
            f" ${cost_used:.4f} used or reserved this month, this execution is estimated at ${cost_asked:.4f}",
            status=402,
            limit="monthly_cost_usd",
        )
    return None


def serves(info: Any, execution_id: str | None) -> bool:
    """Whether a worker registered with `info` runs `execution_id`'s jobs: every worker does, except the embedded
    worker of a wait, which is scoped to the executions it lists. With no execution named, any worker counts."""
    scoped = info.get("executions") if isinstance(info, dict) else None
    return execution_id is None or scoped is None or execution_id in scoped


def unique_orphans(orphans: list[Any]) -> list[Any]:
    """Orphaned cancels that name remote work, each provider id once."""
    seen: set[str] = set()
    out = []
    for o in orphans:
        if o.provider_job_id and o.provider_job_id not in seen:
            seen.add(o.provider_job_id)
            out.append(o)
    return out
