"""The rules both stores apply, written once: limits and budgets, the claim's round robin, the hand-off, what a
failure skips, how an execution settles and ends, the events of outcomes, the webhook outbox, the claimed job;
and `StoreManager`, the methods whose statements are the same on both databases, over each store's driver (`Tx`).

The rules are pure: the stores read the rows they need and write what they decide, each in its own dialect
(SQLite on its thread, PostgreSQL on its pool).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from .. import metrics
from ..circuits import Admission, Circuit, CircuitConfig, admit, record
from ..errors import Conflict, IdempotencyConflict, NotFound
from ..states import (
    RESUMABLE_JOB,
    TERMINAL_EXECUTION,
    execution_progress,
    execution_status,
    guard,
    sources,
    transitive_dependents,
)
from .base import ApiKey, ClaimedJob, Event, JobOutcome, NewExecution, NewJob, OrphanedCancel
from .common import (
    CALLBACK_OUTCOME_MAX_BYTES,
    IDEMPOTENCY_WINDOW_S,
    ORPHAN_CANCEL_S,
    callback_matches,
    decode_cursor,
    delivery_view,
    dumps,
    encode_cursor,
    execution_error,
    execution_result,
    execution_summary,
    execution_view,
    loads,
    log_view,
    month_start,
    new_delivery_id,
    new_webhook_secret,
    serves,
    unique_orphans,
    usage_refusal,
    wants_event,
    webhook_body,
)
from .stats import Query, assemble_gauges, assemble_stats, gauge_queries, stats_queries

T = TypeVar("T")
_RESERVED = "CASE WHEN cost_estimated > COALESCE(cost_actual, 0) THEN cost_estimated ELSE COALESCE(cost_actual, 0) END"
"""An unfinished execution's reservation: the larger of its estimate and what it has spent (SQL on both)."""

EventRow = tuple[str, str | None, str, str, float]
"""One event to append: execution id, job key (None: the execution's own), type, data (JSON), time."""
Ready = tuple[int, str | None, str | None, str]
"""A job made ready by a finish: id, provider, model family, tenant."""


class Row(Protocol):
    """A result row by column name (sqlite3.Row, psycopg's dict row)."""

    def __getitem__(self, key: str, /) -> Any: ...


def model_family(model: str | None) -> str | None:
    """`family:variant` -> `family` (model caps count a family)."""
    return model.split(":", 1)[0] if model else None


class StoreRules:
    """Limits the claim enforces, and the decisions both stores take the same way (a base of each store)."""

    _rr_after: str = ""
    """The tenant served first by the last claim: the next claim starts after it (round robin)."""

    def configure_limits(
        self,
        provider_caps: dict[str, int] | None = None,
        model_caps: dict[str, int] | None = None,
        budgets: dict[str, float | None] | None = None,
        default_budget: float | None = None,
        tenant_caps: dict[str, int | None] | None = None,
        default_tenant_cap: int | None = None,
    ) -> None:
        """Concurrency caps the claim enforces (provider -> n, model -> n, tenant -> n or None, and one for
        tenants not named) and monthly cost budgets (tenant -> USD, and one for tenants not named) checked
        before a paid job starts."""
        self._provider_caps = dict(provider_caps or {})
        self._model_caps = dict(model_caps or {})
        self._budgets = dict(budgets or {})
        self._default_budget = default_budget
        self._tenant_caps = dict(tenant_caps or {})
        self._default_tenant_cap = default_tenant_cap

    def _tenant_cap(self, tenant: str) -> int | None:
        """How many jobs of `tenant` may run at once (None: no cap)."""
        return self._tenant_caps[tenant] if tenant in self._tenant_caps else self._default_tenant_cap

    def _budget(self, tenant: str) -> float | None:
        return self._budgets[tenant] if tenant in self._budgets else self._default_budget

    # ------------------------------------------------------------------ claim
    def _rotate(self, tenants: list[str], limit: int) -> list[str]:
        """The tenants with ready jobs (sorted), starting after the one the last claim served first."""
        start = next((i for i, name in enumerate(tenants) if name > self._rr_after), 0)
        return (tenants[start:] + tenants[:start])[:limit]

    def _round_robin(
        self,
        tenants: list[str],
        queues: Sequence[Sequence[tuple[int, str | None, str | None]]],
        limit: int,
        running_p: dict[str, int],
        running_m: dict[str, int],
    ) -> list[int]:
        """Up to `limit` job ids: each tenant's queue (id, provider, model; best first) in turn, one job per
        tenant per round, skipping jobs whose provider or model family is at its cap (counted as they are
        picked). Remembers the first tenant for the next claim's rotation."""
        caps_p, caps_m = self._provider_caps, self._model_caps
        picked: list[int] = []
        for round_ in range(limit):
            for queue in queues:  # each tenant's holds no more than it has room for
                if round_ >= len(queue) or len(picked) >= limit:
                    continue
                job_id, provider, model = queue[round_]
                base = model_family(model)
                if provider in caps_p and running_p.get(provider, 0) >= caps_p[provider]:
                    continue
                if base in caps_m and running_m.get(base, 0) >= caps_m[base]:
                    continue
                picked.append(job_id)
                if provider in caps_p:
                    running_p[provider] = running_p.get(provider, 0) + 1
                if base in caps_m:
                    running_m[base] = running_m.get(base, 0) + 1
            if len(picked) >= limit or all(round_ >= len(q) - 1 for q in queues):
                break
        if picked:
            self._rr_after = tenants[0]
        return picked

    def _budget_tenants(self, rows: Iterable[Row]) -> list[str]:
        """The tenants of just-leased `rows` whose monthly spending the budget check needs."""
        if not self._budgets and self._default_budget is None:
            return []
        paid = {r["tenant"] for r in rows if float(r["cost_estimated"] or 0.0) > 0}
        return sorted(t for t in paid if self._budget(t) is not None)

    def _budget_refusals(self, rows: Sequence[Row], spent_so_far: Mapping[str, float]) -> dict[int, str]:
        """Paid jobs that would take their tenant past its monthly budget: spent this month (actual costs)
        plus the estimates of its jobs already running (`spent_so_far`, this batch included), plus this job's
        estimate. Jobs are checked in order; each one let through counts for the next."""
        refusals: dict[int, str] = {}
        if not spent_so_far:  # no budget applies to these jobs
            return refusals
        batch: dict[str, float] = defaultdict(float)
        for r in rows:
            batch[r["tenant"]] += float(r["cost_estimated"] or 0.0)
        spent = {t: v - batch[t] for t, v in spent_so_far.items()}
        for r in rows:
            tenant, cost = r["tenant"], float(r["cost_estimated"] or 0.0)
            budget = self._budget(tenant)
            if budget is None or cost <= 0:
                continue
            if spent[tenant] + cost > budget + 1e-9:
                refusals[r["id"]] = (
                    f"stopped before this paid job: tenant {tenant!r} would pass its monthly_cost_usd budget of"
                    f" ${budget:.2f} (${spent[tenant]:.4f} spent or running this month, this job is estimated at"
                    f" ${cost:.4f})"
                )
            else:
                spent[tenant] += cost
        return refusals

    def _hand_off(
        self, ready: Iterable[Ready], limit: int, room: Mapping[str, int | None]
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """Which jobs a finish made ready its worker leases at once: up to `limit`, none of a capped provider or
        model (the claim counts those under their locks), within each capped tenant's `room` (None: its count
        is not known yet; those go to the second list). Returns (job ids to lease, (id, tenant) to lease once
        the tenant's room is known)."""
        left = dict(room)
        mine: list[int] = []
        busy: list[tuple[int, str]] = []
        for job_id, provider, base, tenant in ready:
            if provider in self._provider_caps or base in self._model_caps:
                continue
            if len(mine) + len(busy) >= limit:
                break
            if tenant in left:
                n = left[tenant]
                if n is None:
                    busy.append((job_id, tenant))
                    continue
                if n <= 0:
                    continue
                left[tenant] = n - 1
            mine.append(job_id)
        return mine, busy

    def _capped_tenants(self, ready: Iterable[Ready]) -> dict[str, int]:
        """Tenant -> cap, for the tenants of the hand-off candidates in `ready` that have a cap."""
        return {
            t: cap
            for _, provider, base, t in ready
            if provider not in self._provider_caps
            and base not in self._model_caps
            and (cap := self._tenant_cap(t)) is not None
        }


def claimed_job(
    r: Row, deadline: float | None, results: Mapping[tuple[str, str], dict[str, Any]], refusal: str | None
) -> ClaimedJob:
    """A leased job as the worker gets it: its row, its execution's deadline, its dependencies' results."""
    return ClaimedJob(
        id=r["id"],
        execution_id=r["execution_id"],
        key=r["key"],
        type=r["type"],
        provider=r["provider"],
        model=r["model"],
        params=loads(r["params"]),
        attempts=r["attempts"],
        max_attempts=r["max_attempts"],
        provider_job_id=r["provider_job_id"],
        timeout_s=r["timeout_s"],
        start_timeout_s=r["start_timeout_s"],
        started_at=r["started_at"],
        execution_deadline=deadline,
        dep_results={k: results.get((r["execution_id"], k), {}) for k in loads(r["depends_on"])},
        tenant=r["tenant"],
        use_cache=bool(r["use_cache"]),
        refusal=refusal,
        seq=r["lease_seq"],
        intent_at=r["intent_at"],
        failover=loads(r["failover"]) if r["failover"] else None,
        intent_seq=r["intent_seq"],
        cost_estimated=float(r["cost_estimated"] or 0.0),
    )


def failover_json(j: NewJob) -> str | None:
    """A new job's failover state, when it has alternatives."""
    if not j.alternatives:
        return None
    return dumps({"models": [j.model, *j.alternatives], "on": j.failover_on, "passed": []})


def failover_update(o: JobOutcome) -> tuple[str, str, str, int] | None:
    """(model, provider, failover JSON, job id) to write for a failover outcome, else None."""
    if o.status != "retry" or not o.failover_to:
        return None
    return o.failover_to, o.failover_to.split("/", 1)[0], dumps(o.failover or {}), o.job_id


FAILOVER_SQL = "UPDATE jobs SET model = %s, provider = %s, failover = %s, attempts = 0 WHERE id = %s"
UNCOUNT_SQL = "UPDATE jobs SET attempts = attempts - 1 WHERE id = %s AND attempts > 0"


def running_events(rows: Iterable[Row], owner: str, now: float) -> list[EventRow]:
    return [
        (r["execution_id"], r["key"], "job.running", dumps({"attempt": r["attempts"], "worker": owner}), now)
        for r in rows
    ]


# ---------------------------------------------------------------------- finishing
def outcome_events(o: JobOutcome, eid: str, key: str, attempts: int, now: float) -> list[EventRow]:
    """The events of one outcome written (the dependents it released excepted)."""
    if o.status == "succeeded":
        events: list[EventRow] = []
        if o.cache_hit:
            events.append((eid, key, "job.cache_hit", dumps((o.result or {}).get("cached_from")), now))
        events.append((eid, key, "job.succeeded", dumps({"result": o.result, "cost": o.cost_usd}), now))
        return events
    if o.status == "retry" and o.failover_to:
        passed = ((o.failover or {}).get("passed") or [{}])[-1]
        data = {"from": passed.get("model"), "to": o.failover_to, "reason": passed.get("reason"), "attempt": attempts}
        return [(eid, key, "job.failover", dumps(data), now)]
    if o.status == "retry":
        delay = round(max(0.0, (o.retry_at or now) - now), 3)
        data = {"attempt": attempts, "error": o.error, "retry_in_s": delay}
        return [(eid, key, "job.retrying", dumps(data), now)]
    return [(eid, key, f"job.{o.status}", dumps({"attempt": attempts, "error": o.error}), now)]


def skips(
    graph: Mapping[str, tuple[list[str], str]], failed: list[str], on_failure: str
) -> list[tuple[str, str]]:
    """(key, reason) of every job that will not run now that `failed` failed: its dependents, transitively,
    and, when `on_failure` is stop, every other job not started. `graph`: key -> (dependents, status)."""
    after = transitive_dependents({k: v[0] for k, v in graph.items()}, failed)
    names = ", ".join(repr(k) for k in failed)
    skippable = sources("skipped")
    out = []
    for key, (_, status) in graph.items():
        if status not in skippable:
            continue
        if key in after:
            out.append((key, f"not run: it depends on {names}, which failed"))
        elif on_failure == "stop":
            out.append((key, f"not run: job {names} failed and on_failure is stop"))
    return out


Settled = Literal["end", "update", "same"]


def settle(ex: Row, counts: Mapping[str, int], running: Iterable[float]) -> tuple[Settled, str, float]:
    """An execution's status and progress re-derived from its jobs', and what to do: end it, update it, or
    nothing."""
    started, cancel = ex["started_at"] is not None, bool(ex["cancel_requested"])
    status = execution_status(counts, started=started, cancel_requested=cancel)
    progress = execution_progress(counts, running)
    if status in TERMINAL_EXECUTION and ex["status"] not in TERMINAL_EXECUTION:
        return "end", status, progress
    if status != ex["status"] or progress != ex["progress"]:
        return "update", status, progress
    return "same", status, progress


def progress_event(eid: str, old: float, new: float, now: float) -> list[EventRow]:
    return [(eid, None, "execution.progress", dumps({"progress": new}), now)] if new != old else []


def ending(
    status: str, progress: float, sinks: list[tuple[str, str | None]], failed: list[tuple[str, str | None]]
) -> tuple[float, str | None, str | None]:
    """An ending execution's (progress, result as JSON, error), from its sink jobs' results and its failures."""
    result = execution_result(sinks) if status == "succeeded" else None
    error = execution_error(failed)
    if status == "canceled":
        error = "canceled by request"
    elif status == "failed" and error is None:
        error = "not every job succeeded"
    return (100.0 if status == "succeeded" else progress), (dumps(result) if result else None), error


def end_event(eid: str, status: str, error: str | None, now: float) -> EventRow:
    return (eid, None, f"execution.{status}", dumps({"status": status, "error": error}), now)


# ---------------------------------------------------------------------- webhook outbox
Subscribed = Mapping[str, tuple[str, str, list[str]]]
"""execution id -> (tenant, webhook URL, event patterns) of the executions with a webhook."""


def webhook_executions(events: Iterable[EventRow], subscribed: Subscribed) -> list[str]:
    """The executions whose state the deliveries for `events` carry (in the order of their first event)."""
    out: dict[str, None] = {}
    for eid, _, etype, _, _ in events:
        if eid in subscribed and wants_event(subscribed[eid][2], etype):
            out.setdefault(eid)
    return list(out)


def webhook_rows(
    events: Iterable[EventRow], subscribed: Subscribed, states: Mapping[str, dict[str, Any]]
) -> list[tuple[str, str, str, str, str, str, float, float]]:
    """The webhook_deliveries rows (id, execution, tenant, url, type, payload, next attempt, created) the events
    call for, each with the state of its execution (`states`, read in the same transaction)."""
    rows = []
    for eid, job_key, etype, data, at in events:
        if eid not in subscribed:
            continue
        tenant, url, wanted = subscribed[eid]
        if not wants_event(wanted, etype):
            continue
        body = webhook_body(etype, at, states[eid], job_key, loads(data))
        rows.append((new_delivery_id(), eid, tenant, url, etype, dumps(body), at, at))
    return rows


# ---------------------------------------------------------------------- statements written once
class Tx(Protocol):
    """One transaction of a store (or, from `_in_read`, single autocommit reads), in PostgreSQL's parameter
    style (`%s`); each store's driver runs the text in its own dialect."""

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row, or None."""
        ...

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""
        ...

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute once per row of arguments."""
        ...

    for_update: str
    """` FOR UPDATE` where row locks exist (PostgreSQL), else empty (SQLite's write lock covers the file)."""

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` is one of `values` (at most IN_CHUNK of them): the condition and its arguments."""
        ...


IN_CHUNK = 500
"""The most values one `Tx.in_` condition holds (SQLite counts every one as a parameter)."""


class StoreManager(StoreRules):
    """The methods both stores run with the same statements, over each store's transaction (`_in_tx`) and
    reads (`_in_read`). The stores keep connections, transactions and the statements whose dialects differ."""

    async def _in_tx(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run `fn` in one write transaction."""
        raise NotImplementedError

    async def _in_read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run `fn`'s reads (each statement on its own; no transaction around them)."""
        raise NotImplementedError

    async def _in_snapshot(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run `fn`'s reads in one read-only transaction: they see one state of the database."""
        raise NotImplementedError

    # the statements whose dialects differ, inside a transaction of `_in_tx`
    async def _settle_in(self, tx: Tx, exec_ids: set[str], now: float, events: list[EventRow]) -> None:
        """Re-derive the touched executions' status and progress (`settle`); ended ones get their events."""
        raise NotImplementedError

    async def _append_in(self, tx: Tx, events: list[EventRow]) -> None:
        """Append `events` to the log, with the webhook deliveries they call for."""
        raise NotImplementedError

    async def _apply_in(self, tx: Tx, outcomes: list[JobOutcome], now: float) -> list[str]:
        """`finish_jobs` inside the transaction."""
        raise NotImplementedError

    async def _lock_in(self, tx: Tx, name: str) -> None:
        """Hold the lock `name` to the end of the transaction (PostgreSQL's advisory locks; SQLite's write lock
        already excludes every other writer)."""

    async def _notify_in(self, tx: Tx) -> None:
        """Tell the other processes' workers that jobs became claimable (when the transaction commits)."""

    def _announce(self) -> None:
        """After a commit that made jobs claimable: wake this process's `wait_for_work`."""

    async def _skip_after_failure(self, tx: Tx, eid: str, keys: list[str], now: float, events: list[EventRow]) -> None:
        """Skip the jobs of `eid` that will not run now that `keys` failed (`skips`)."""
        ex = await tx.one("SELECT on_failure FROM executions WHERE id = %s", (eid,))
        rows = await tx.all("SELECT key, dependents, status FROM jobs WHERE execution_id = %s ORDER BY id", (eid,))
        graph = {r["key"]: (loads(r["dependents"]), r["status"]) for r in rows}
        for key, reason in skips(graph, keys, ex["on_failure"]):
            await tx.run(
                "UPDATE jobs SET status = 'skipped', error = %s, finished_at = %s WHERE execution_id = %s AND key = %s",
                (reason, now, eid, key),
            )
            events.append((eid, key, "job.skipped", dumps({"reason": reason}), now))

    async def _finish_execution(
        self, tx: Tx, eid: str, status: str, progress: float, now: float, events: list[EventRow]
    ) -> None:
        """End `eid` with `status`: its result (the sinks'), error and cost; count it; its event."""
        sinks = await tx.all(
            "SELECT key, result FROM jobs WHERE execution_id = %s AND dependents = '[]' AND status = 'succeeded'"
            " ORDER BY position",
            (eid,),
        )
        failed = await tx.all(
            "SELECT key, error FROM jobs WHERE execution_id = %s AND status = 'failed' ORDER BY finished_at, position",
            (eid,),
        )
        cost = await tx.one("SELECT COALESCE(SUM(cost_actual), 0) AS cost FROM jobs WHERE execution_id = %s", (eid,))
        progress, result, error = ending(
            status, progress, [(r["key"], r["result"]) for r in sinks], [(r["key"], r["error"]) for r in failed]
        )
        ended = await tx.one(
            "UPDATE executions SET status = %s, progress = %s, result = %s, error = %s, cost_actual = %s,"
            " finished_at = %s, updated_at = %s WHERE id = %s RETURNING created_at",
            (status, progress, result, error, float(cost["cost"]), now, now, eid),
        )
        metrics.execution_finished(status, now - ended["created_at"] if ended else None)
        events.append(end_event(eid, status, error, now))

    @staticmethod
    async def _webhook_deliveries(tx: Tx, events: list[EventRow], subscribed: Subscribed) -> None:
        """Record the webhook deliveries `events` call for, each with its execution's state as of now, in the
        transaction that made them (the outbox)."""
        states: dict[str, dict[str, Any]] = {}
        for eid in webhook_executions(events, subscribed):
            row = await tx.one("SELECT * FROM executions WHERE id = %s", (eid,))
            jobs = await tx.all("SELECT * FROM jobs WHERE execution_id = %s ORDER BY position", (eid,))
            states[eid] = execution_view(dict(row), [dict(j) for j in jobs])
        if rows := webhook_rows(events, subscribed, states):
            await tx.many(
                "INSERT INTO webhook_deliveries (id, execution_id, tenant, url, event_type, payload,"
                " next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )

    async def cache_lookup(self, tenant: str, cache_key: str) -> dict[str, Any] | None:
        return (await self.cache_lookup_many([(tenant, cache_key)])).get((tenant, cache_key))

    async def cache_lookup_many(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ circuits
    async def circuit_admit(
        self, keys: Sequence[tuple[str, str, str | None, CircuitConfig]], owner: str, now: float | None = None
    ) -> Admission:
        """May one create go through every circuit of `keys` ((key, provider, model, config))? Reservations it
        takes are given back by `circuit_record`."""
        at = time.time() if now is None else now

        async def write(tx: Tx) -> Admission:
            rows = [await self._circuit_row(tx, key, provider, model, at) for key, provider, model, _ in keys]
            reserved: list[str] = []
            probe = False
            for c, (*_, cfg) in zip(rows, keys, strict=True):
                answer = admit(c, owner, at, cfg)
                if not answer.allowed:
                    return answer  # nothing written: the reservations taken so far are dropped
                reserved += answer.reserved
                probe = probe or answer.probe
            for c in rows:
                await self._circuit_write(tx, c, at)
            return Admission(True, reserved=tuple(reserved), probe=probe)

        return await self._in_tx(write)

    async def circuit_record(
        self,
        keys: Sequence[tuple[str, str, str | None, CircuitConfig]],
        ok: bool,
        held: Sequence[str],
        now: float | None = None,
    ) -> list[Circuit]:
        """Count one create's outcome in each circuit of `keys`; the circuits as they now are."""
        at = time.time() if now is None else now

        async def write(tx: Tx) -> list[Circuit]:
            out = []
            for key, provider, model, cfg in keys:
                c = await self._circuit_row(tx, key, provider, model, at)
                record(c, ok, key in held, keys[-1][2], at, cfg)
                await self._circuit_write(tx, c, at)
                out.append(c)
            return out

        return await self._in_tx(write)

    async def circuits(self) -> list[Circuit]:
        """Every circuit the store knows, by key."""

        async def read(tx: Tx) -> list[Circuit]:
            return [Circuit.of_row(r) for r in await tx.all("SELECT * FROM circuits ORDER BY key")]

        return await self._in_read(read)

    @staticmethod
    async def _circuit_row(tx: Tx, key: str, provider: str, model: str | None, now: float) -> Circuit:
        row = await tx.one("SELECT * FROM circuits WHERE key = %s" + tx.for_update, (key,))
        if row is not None:
            return Circuit.of_row(row)
        await tx.run(
            "INSERT INTO circuits (key, provider, model, updated_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (key, provider, model, now),
        )
        row = await tx.one("SELECT * FROM circuits WHERE key = %s" + tx.for_update, (key,))
        return Circuit.of_row(row)

    @staticmethod
    async def _circuit_write(tx: Tx, c: Circuit, now: float) -> None:
        await tx.run(
            "UPDATE circuits SET state = %s, failures = %s, pending = %s, pending_at = %s, until_at = %s,"
            " probe_owner = %s, ok_count = %s, fail_count = %s, window_at = %s, failing = %s, updated_at = %s"
            " WHERE key = %s",
            (
                c.state, c.failures, c.pending, c.pending_at, c.until_at, c.probe_owner, c.ok_count, c.fail_count,
                c.window_at, dumps(c.failing), now, c.key,
            ),
        )  # fmt: skip

    # ------------------------------------------------------------------ cancel / resume
    async def cancel_execution(self, execution_id: str, tenant: str | None = None) -> dict[str, Any]:
        async def write(tx: Tx) -> None:
            now = time.time()
            if tx.for_update:  # job rows first, then the execution: the order in which claims and completions
                # lock them (taken the other way round, a cancel and a completion would deadlock)
                await tx.all("SELECT id FROM jobs WHERE execution_id = %s ORDER BY id FOR UPDATE", (execution_id,))
            row = await tx.one("SELECT tenant, status FROM executions WHERE id = %s" + tx.for_update, (execution_id,))
            if row is None or (tenant is not None and row["tenant"] != tenant):
                raise NotFound(f"execution {execution_id!r} not found")
            if row["status"] in TERMINAL_EXECUTION:
                ended = "is already canceled" if row["status"] == "canceled" else f"has already {row['status']}"
                raise Conflict(f"execution {execution_id!r} {ended}; nothing to cancel")
            await tx.run("UPDATE executions SET cancel_requested = 1 WHERE id = %s", (execution_id,))
            await tx.run(
                "INSERT INTO job_cancels (owner, job_id, seq, provider, model, type, provider_job_id, created_at)"
                " SELECT COALESCE(lease_owner, ''), id, lease_seq, provider, model, type, provider_job_id, %s"
                " FROM jobs WHERE execution_id = %s AND ((status = 'running' AND lease_owner IS NOT NULL)"
                " OR (status = 'queued' AND provider_job_id IS NOT NULL)) ON CONFLICT DO NOTHING",
                (now, execution_id),
            )
            canceled = await tx.all(
                "UPDATE jobs SET status = 'canceled', finished_at = %s, error = 'canceled by request'"
                f" WHERE execution_id = %s AND {guard('canceled')} RETURNING id, key",
                (now, execution_id),
            )
            events: list[EventRow] = [
                (execution_id, k["key"], "job.canceled", dumps({"reason": "canceled by request"}), now)
                for k in sorted(canceled, key=lambda k: int(k["id"]))
            ]
            await self._settle_in(tx, {execution_id}, now, events)
            await self._append_in(tx, events)

        await self._in_tx(write)
        state = await self.get_execution(execution_id, tenant)
        assert state is not None
        return state

    async def resume_execution(self, execution_id: str, tenant: str | None = None) -> dict[str, Any]:
        async def write(tx: Tx) -> bool:
            now = time.time()
            if tx.for_update:  # the one lock order (docs/reliability.md): job rows by id, then the execution
                await tx.all("SELECT id FROM jobs WHERE execution_id = %s ORDER BY id FOR UPDATE", (execution_id,))
            row = await tx.one("SELECT tenant, status FROM executions WHERE id = %s" + tx.for_update, (execution_id,))
            if row is None or (tenant is not None and row["tenant"] != tenant):
                raise NotFound(f"execution {execution_id!r} not found")
            if row["status"] not in TERMINAL_EXECUTION:
                raise Conflict(
                    f"execution {execution_id!r} is {row['status']}; only a finished execution can be resumed"
                )
            if row["status"] == "succeeded":
                raise Conflict(f"execution {execution_id!r} succeeded; there is nothing to resume")
            jobs = await tx.all(
                "SELECT id, key, status, depends_on, failover FROM jobs WHERE execution_id = %s ORDER BY id",
                (execution_id,),
            )
            done = {j["key"] for j in jobs if j["status"] == "succeeded"}
            events: list[EventRow] = []
            rerun = []
            queued = False
            for j in jobs:
                if j["status"] not in RESUMABLE_JOB:
                    continue
                left = sum(1 for d in loads(j["depends_on"]) if d not in done)
                status = "waiting" if left else "queued"
                queued = queued or status == "queued"
                rerun.append(j["key"])
                await tx.run(
                    "UPDATE jobs SET status = %s, deps_left = %s, attempts = 0, error = NULL, result = NULL,"
                    " provider_job_id = NULL, progress = 0, queue_position = NULL, started_at = NULL,"
                    " finished_at = NULL, run_after = 0, lease_owner = NULL, lease_expires_at = NULL,"
                    " cost_actual = NULL, intent_at = NULL, intent_seq = NULL, queued_at = %s"
                    " WHERE execution_id = %s AND key = %s",
                    (status, left, now if status == "queued" else None, execution_id, j["key"]),
                )
                if j["failover"] and (restart := loads(j["failover"])).get("models"):  # from its first model again
                    first = restart["models"][0]
                    await tx.run(
                        FAILOVER_SQL, (first, first.split("/", 1)[0], dumps({**restart, "passed": []}), j["id"])
                    )
                events.append((execution_id, j["key"], f"job.{status}", dumps({"reason": "resume"}), now))
            await tx.run(
                "UPDATE executions SET status = 'running', cancel_requested = 0, finished_at = NULL,"
                " error = NULL, result = NULL, updated_at = %s WHERE id = %s",
                (now, execution_id),
            )
            events.insert(0, (execution_id, None, "execution.resumed", dumps({"jobs": rerun}), now))
            await self._settle_in(tx, {execution_id}, now, events)
            await self._append_in(tx, events)
            if queued:
                await self._notify_in(tx)
            return queued

        if await self._in_tx(write):
            self._announce()
        state = await self.get_execution(execution_id, tenant)
        assert state is not None
        return state

    # ------------------------------------------------------------------ leases
    async def note_attempt(
        self,
        job_id: int,
        owner: str,
        seq: int,
        event: str,
        data: dict[str, Any],
        *,
        possible_duplicate_usd: float | None = None,
    ) -> bool:
        async def write(tx: Tx) -> bool:
            now = time.time()
            row = await tx.one(
                "UPDATE jobs SET possible_duplicates = possible_duplicates + %s,"
                " possible_duplicate_usd = possible_duplicate_usd + %s"
                " WHERE id = %s AND lease_owner = %s AND lease_seq = %s AND status = 'running'"
                " RETURNING execution_id, key",
                (1 if possible_duplicate_usd is not None else 0, possible_duplicate_usd or 0.0, job_id, owner, seq),
            )
            if row is None:
                return False
            await self._append_in(tx, [(row["execution_id"], row["key"], event, dumps(data), now)])
            return True

        return await self._in_tx(write)

    async def canceled_for(self, owner: str) -> list[int]:
        # A cheap read first: every worker asks often, and must not take a write lock for nothing.
        found = await self._in_read(
            lambda tx: tx.one("SELECT 1 FROM jobs WHERE lease_owner = %s AND status <> 'running' LIMIT 1", (owner,))
        )
        if found is None:
            return []
        rows = await self._in_tx(
            lambda tx: tx.all(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL"
                " WHERE lease_owner = %s AND status <> 'running' RETURNING id",
                (owner,),
            )
        )
        return sorted(r["id"] for r in rows)

    async def canceled_attempts(self, owner: str) -> list[tuple[int, int]]:
        found = await self._in_read(lambda tx: tx.one("SELECT 1 FROM job_cancels WHERE owner = %s LIMIT 1", (owner,)))
        if found is None:
            return []

        async def write(tx: Tx) -> list[tuple[int, int]]:
            deleted = await tx.all("DELETE FROM job_cancels WHERE owner = %s RETURNING job_id, seq", (owner,))
            rows = sorted((int(r["job_id"]), int(r["seq"])) for r in deleted)
            ids = sorted({r[0] for r in rows})
            for i in range(0, len(ids), IN_CHUNK):
                cond, args = tx.in_("id", ids[i : i + IN_CHUNK])
                await tx.run(
                    "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = %s"
                    f" AND status <> 'running' AND {cond}",
                    (owner, *args),
                )
            return rows

        return await self._in_tx(write)

    async def release_jobs(self, owner: str, job_ids: list[int], *, reason: str = "worker shutting down") -> None:
        if not job_ids:
            return

        async def write(tx: Tx) -> bool:
            now = time.time()
            rows: list[Any] = []
            ids = sorted(set(job_ids))
            for i in range(0, len(ids), IN_CHUNK):
                cond, args = tx.in_("id", ids[i : i + IN_CHUNK])
                rows += await tx.all(
                    "UPDATE jobs SET status = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0"
                    " END, lease_owner = NULL, lease_expires_at = NULL, queued_at = %s, run_after = %s, progress = 0"
                    f" WHERE lease_owner = %s AND {guard('queued', frm='running')} AND {cond}"
                    " RETURNING id, execution_id, key",
                    (now, now, owner, *args),
                )
            rows.sort(key=lambda r: int(r["id"]))
            events: list[EventRow] = [
                (r["execution_id"], r["key"], "job.released", dumps({"reason": reason}), now) for r in rows
            ]
            await self._settle_in(tx, {r["execution_id"] for r in rows}, now, events)
            await self._append_in(tx, events)
            if rows:
                await self._notify_in(tx)
            return bool(rows)

        if await self._in_tx(write):
            self._announce()

    async def recover_expired(self) -> list[OrphanedCancel]:
        now = time.time()
        found = await self._in_read(
            lambda tx: tx.one(
                "SELECT 1 FROM jobs WHERE lease_owner IS NOT NULL AND lease_expires_at < %s"
                " UNION ALL SELECT 1 FROM job_cancels WHERE owner = '' OR created_at < %s LIMIT 1",
                (now, now - ORPHAN_CANCEL_S),
            )
        )
        if found is None:
            return []
        return await self._in_tx(self._recover_expired)

    async def _recover_expired(self, tx: Tx) -> list[OrphanedCancel]:
        now = time.time()
        requeued = await tx.all(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
            " queued_at = %s, run_after = %s, progress = 0"
            f" WHERE {guard('queued', frm='running')} AND lease_expires_at < %s"
            " AND attempts < max_attempts RETURNING id, execution_id, key, attempts",
            (now, now, now),
        )
        requeued.sort(key=lambda r: int(r["id"]))
        events: list[EventRow] = [
            (
                r["execution_id"], r["key"], "job.requeued",
                dumps({"reason": "lease expired", "attempts": r["attempts"]}), now,
            )
            for r in requeued
        ]  # fmt: skip
        await self._settle_in(tx, {r["execution_id"] for r in requeued}, now, events)
        await self._append_in(tx, events)
        if requeued:
            await self._notify_in(tx)
        exhausted = await tx.all(
            "SELECT id, lease_owner, attempts FROM jobs WHERE status = 'running' AND lease_expires_at < %s ORDER BY id",
            (now,),
        )
        await self._apply_in(
            tx,
            [
                JobOutcome(
                    job_id=r["id"],
                    owner=r["lease_owner"],
                    status="failed",
                    error=f"the worker running it stopped responding (lease expired) after {r['attempts']} attempts",
                )
                for r in exhausted
            ],
            now,
        )
        orphans = await tx.all(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE status <> 'running'"
            " AND lease_owner IS NOT NULL AND lease_expires_at < %s"
            " RETURNING id, provider, model, type, provider_job_id",
            (now,),
        )
        orphans.sort(key=lambda r: int(r["id"]))
        # cancellations addressed to a worker that stopped beating before it read them (the job may have been
        # resumed since): their provider work is cancelled here
        addressed = await tx.all(
            "DELETE FROM job_cancels WHERE owner = '' OR (created_at < %s AND owner NOT IN"
            " (SELECT id FROM workers WHERE last_seen >= %s))"
            " RETURNING job_id AS id, provider, model, type, provider_job_id",
            (now - ORPHAN_CANCEL_S, now - ORPHAN_CANCEL_S),
        )
        orphans += sorted(addressed, key=lambda r: int(r["id"]))
        return unique_orphans(
            [OrphanedCancel(r["id"], r["provider"], r["model"], r["type"], r["provider_job_id"]) for r in orphans]
        )

    async def prune(self, older_than: float) -> dict[str, int]:
        """Delete executions that ended before `older_than` (unix time), with their jobs, events and webhook
        deliveries. Artifacts stay: their files are content-addressed and may serve newer executions."""

        async def work(tx: Tx) -> dict[str, int]:
            removed = {"executions": 0, "jobs": 0, "events": 0, "webhook_deliveries": 0}
            found = await tx.all(
                "SELECT id FROM executions WHERE finished_at IS NOT NULL AND finished_at < %s" + tx.for_update,
                (older_than,),
            )
            ids = [r["id"] for r in found]
            for i in range(0, len(ids), IN_CHUNK):
                chunk = ids[i : i + IN_CHUNK]
                for table in ("events", "jobs", "webhook_deliveries"):
                    cond, args = tx.in_("execution_id", chunk)
                    removed[table] += await tx.run(f"DELETE FROM {table} WHERE {cond}", args)
                cond, args = tx.in_("id", chunk)
                removed["executions"] += await tx.run(f"DELETE FROM executions WHERE {cond}", args)
            return removed

        return await self._in_tx(work)

    # ------------------------------------------------------------------ workers
    async def register_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        now = time.time()
        await self._in_tx(
            lambda tx: tx.run(
                "INSERT INTO workers (id, info, started_at, last_seen) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET info = excluded.info, started_at = excluded.started_at,"
                " last_seen = excluded.last_seen",
                (worker_id, dumps(info), now, now),
            )
        )

    async def unregister_worker(self, worker_id: str) -> None:
        await self._in_tx(lambda tx: tx.run("DELETE FROM workers WHERE id = %s", (worker_id,)))

    async def live_workers(self, within_s: float, *, serving: str | None = None) -> int:
        rows = await self._in_read(
            lambda tx: tx.all("SELECT info FROM workers WHERE last_seen > %s", (time.time() - within_s,))
        )
        return sum(1 for r in rows if serves(loads(r["info"]), serving))

    async def heartbeat(self, owner: str, lease_s: float) -> set[int]:
        now = time.time()

        async def write(tx: Tx) -> set[int]:
            held = await tx.all(
                "UPDATE jobs SET lease_expires_at = %s WHERE lease_owner = %s AND status = 'running' RETURNING id",
                (now + lease_s, owner),
            )
            await tx.run("UPDATE workers SET last_seen = %s WHERE id = %s", (now, owner))
            return {r["id"] for r in held}

        return await self._in_tx(write)

    async def wake_job(
        self,
        provider: str,
        remote_id: str,
        execution_id: str | None = None,
        job_key: str | None = None,
        outcome: str | None = None,
    ) -> str:
        if outcome is not None and len(outcome.encode()) > CALLBACK_OUTCOME_MAX_BYTES:
            outcome = None  # too big to carry: the worker asks the provider

        async def write(tx: Tx) -> str:
            if execution_id is not None and job_key is not None:
                row = await tx.one(
                    "SELECT id, status, provider_job_id FROM jobs WHERE execution_id = %s AND key = %s"
                    " AND provider = %s",
                    (execution_id, job_key, provider),
                )
            else:
                row = await tx.one(
                    "SELECT id, status, provider_job_id FROM jobs WHERE provider = %s AND provider_job_id = %s"
                    " ORDER BY id DESC LIMIT 1",
                    (provider, remote_id),
                )
            if row is None:
                return "unknown"
            if not callback_matches(row["provider_job_id"], remote_id):
                return "mismatch"
            if row["status"] != "running":
                return "ignored"
            if outcome is None:  # an outcome already left (by an earlier callback) stays
                await tx.run("UPDATE jobs SET woken_at = %s WHERE id = %s", (time.time(), row["id"]))
            else:
                await tx.run(
                    "UPDATE jobs SET woken_at = %s, woken_outcome = %s WHERE id = %s", (time.time(), outcome, row["id"])
                )
            return "woken"

        return await self._in_tx(write)

    async def woken_for(self, owner: str) -> list[int]:
        return [job_id for job_id, _ in await self.woken_outcomes(owner)]

    async def woken_outcomes(self, owner: str) -> list[tuple[int, str | None]]:
        # A cheap read first: every worker asks often, and must not take a write lock for nothing.
        found = await self._in_read(
            lambda tx: tx.one("SELECT 1 FROM jobs WHERE lease_owner = %s AND woken_at IS NOT NULL LIMIT 1", (owner,))
        )
        if found is None:
            return []

        async def take(tx: Tx) -> list[tuple[int, str | None]]:
            # Read, then clear by id (RETURNING would give the cleared outcome): a job woken meanwhile keeps its mark.
            rows = await tx.all(
                "SELECT id, woken_outcome FROM jobs WHERE lease_owner = %s AND woken_at IS NOT NULL ORDER BY id"
                + tx.for_update,
                (owner,),
            )
            if rows:
                await tx.many(
                    "UPDATE jobs SET woken_at = NULL, woken_outcome = NULL WHERE id = %s", [(r["id"],) for r in rows]
                )
            return [(r["id"], r["woken_outcome"]) for r in rows]

        return await self._in_tx(take)

    # ------------------------------------------------------------------ submission
    async def create_execution(self, execution: NewExecution) -> str:
        execution_id = await self._in_tx(lambda tx: self._create_execution(tx, execution))
        if any(not j.depends_on for j in execution.jobs):
            self._announce()
        return execution_id

    async def _create_execution(self, tx: Tx, ex: NewExecution) -> str:
        now = time.time()
        deadline = now + ex.timeout_s if ex.timeout_s else None
        if ex.idempotency_key is not None:
            # Two submissions with one key wait for each other, so the second finds the first.
            await self._lock_in(tx, f"reelflow:idem:{ex.tenant}:{ex.idempotency_key}")
            earlier = await tx.one(
                "SELECT id, request_hash, created_at FROM executions WHERE tenant = %s AND idempotency_key = %s",
                (ex.tenant, ex.idempotency_key),
            )
            if earlier is not None and earlier["created_at"] > now - IDEMPOTENCY_WINDOW_S:
                if earlier["request_hash"] != ex.request_hash:
                    raise IdempotencyConflict(
                        f"Idempotency-Key {ex.idempotency_key!r} was already used for a different request"
                        f" (execution {earlier['id']}); use a new key for a new request"
                    )
                return str(earlier["id"])
            if earlier is not None:  # older than the window: the key is free again
                await tx.run("UPDATE executions SET idempotency_key = NULL WHERE id = %s", (earlier["id"],))
        await self._tenant_secret(tx, ex.tenant, now)
        if ex.usage_limit is not None:
            # Concurrent submissions of one tenant count one after the other, so both cannot slip under it.
            await self._lock_in(tx, f"reelflow:usage:{ex.tenant}")
            count, used = await self._month_usage(tx, ex.tenant, now)
            refusal = usage_refusal(ex.tenant, ex.usage_limit, count, used, ex.cost_estimated)
            if refusal is not None:
                raise refusal
        inserted = await tx.one(
            "INSERT INTO executions (id, tenant, status, plan, metadata, webhook, on_failure, priority,"
            " cost_estimated, deadline, retry_of, idempotency_key, request_hash, webhook_events,"
            " created_at, updated_at)"
            " VALUES (%s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            (
                ex.id, ex.tenant, dumps(ex.plan), dumps(ex.metadata), ex.webhook, ex.on_failure,
                ex.priority, ex.cost_estimated, deadline, ex.retry_of, ex.idempotency_key, ex.request_hash,
                dumps(ex.webhook_events) if ex.webhook else None, now, now,
            ),
        )  # fmt: skip
        if inserted is None:
            # This very submission is stored already: the transaction is being run again because its COMMIT's
            # answer was lost with the connection, and the COMMIT had happened. Read back, do not guess.
            stored = await tx.one("SELECT request_hash FROM executions WHERE id = %s", (ex.id,))
            if stored is None or stored["request_hash"] != ex.request_hash:
                raise Conflict(f"execution id {ex.id!r} is taken")
            return ex.id
        if ex.jobs:
            await tx.many(
                "INSERT INTO jobs (execution_id, key, position, type, provider, model, params, depends_on,"
                " dependents, deps_left, status, priority, max_attempts, timeout_s, start_timeout_s,"
                " cost_estimated, created_at, queued_at, tenant, use_cache, failover)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        ex.id, j.key, j.position, j.type, j.provider, j.model, dumps(j.params),
                        dumps(j.depends_on), dumps(j.dependents), len(j.depends_on),
                        "waiting" if j.depends_on else "queued", ex.priority, j.max_attempts,
                        j.timeout_s, j.start_timeout_s, j.cost_estimated, now,
                        None if j.depends_on else now, ex.tenant, int(j.cache), failover_json(j),
                    )
                    for j in ex.jobs
                ],
            )  # fmt: skip
        await self._append_in(
            tx, [(ex.id, None, "execution.created", dumps({"status": "queued", "jobs": len(ex.jobs)}), now)]
        )
        if any(not j.depends_on for j in ex.jobs):
            await self._notify_in(tx)
        return ex.id

    # ------------------------------------------------------------------ reading
    async def get_execution(self, execution_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        async def read(tx: Tx) -> dict[str, Any] | None:
            row = await tx.one("SELECT * FROM executions WHERE id = %s", (execution_id,))
            if row is None or (tenant is not None and row["tenant"] != tenant):
                return None
            jobs = await tx.all("SELECT * FROM jobs WHERE execution_id = %s ORDER BY position", (execution_id,))
            return execution_view(dict(row), [dict(j) for j in jobs])

        return await self._in_snapshot(read)

    async def list_executions(
        self,
        tenant: str | None = None,
        *,
        status: str | None = None,
        created_after: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        where, args = equal_filters(tenant=tenant, status=status)
        if created_after is not None:
            where.append("created_at > %s")
            args.append(created_after)
        if cursor:
            ts, eid = decode_cursor(cursor)
            where.append("(created_at < %s OR (created_at = %s AND id < %s))")
            args += [ts, ts, eid]
        sql = "SELECT * FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT %s"
        rows = await self._in_read(lambda tx: tx.all(sql, (*args, limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
        return [execution_summary(r) for r in rows], nxt

    async def execution_plan(self, execution_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        row = await self._in_read(
            lambda tx: tx.one("SELECT tenant, plan FROM executions WHERE id = %s", (execution_id,))
        )
        if row is None or (tenant is not None and row["tenant"] != tenant):
            return None
        return dict(loads(row["plan"]))

    async def job_logs(self, execution_id: str, job_key: str, tenant: str | None = None) -> dict[str, Any] | None:
        async def read(tx: Tx) -> dict[str, Any] | None:
            job = await tx.one(
                "SELECT j.id, j.key, j.status, j.provider, j.provider_job_id, e.tenant FROM jobs j"
                " JOIN executions e ON e.id = j.execution_id WHERE j.execution_id = %s AND j.key = %s",
                (execution_id, job_key),
            )
            if job is None or (tenant is not None and job["tenant"] != tenant):
                return None
            row = await tx.one("SELECT * FROM job_logs WHERE job_id = %s", (job["id"],))
            return log_view(execution_id, dict(job), None if row is None else dict(row))

        return await self._in_snapshot(read)

    async def events(self, execution_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self._in_read(
            lambda tx: tx.all(
                "SELECT * FROM events WHERE execution_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (execution_id, after, limit),
            )
        )
        return [
            Event(r["seq"], r["execution_id"], r["job_key"], r["type"], loads(r["data"]), r["created_at"]) for r in rows
        ]

    async def next_wakeup(self) -> float | None:
        row = await self._in_read(lambda tx: tx.one("SELECT MIN(run_after) AS t FROM jobs WHERE status = 'queued'"))
        return None if row is None or row["t"] is None else float(row["t"])

    # ------------------------------------------------------------------ usage and statistics
    @staticmethod
    async def _month_usage(tx: Tx, tenant: str, now: float) -> tuple[int, float]:
        """Executions created this month, and their cost: actual once finished, else the larger of the
        estimate (the reservation) and what has been spent so far."""
        row = await tx.one(
            f"SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN COALESCE(cost_actual, 0)"
            f" ELSE {_RESERVED} END), 0) AS used FROM executions WHERE tenant = %s AND created_at >= %s",
            (tenant, month_start(now)),
        )
        return int(row["n"]), float(row["used"])

    async def usage(self, tenant: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        since = month_start(now)

        async def read(tx: Tx) -> dict[str, Any]:
            row = await tx.one(
                "SELECT COUNT(*) AS n,"
                " COALESCE(SUM(CASE WHEN finished_at IS NOT NULL THEN COALESCE(cost_actual, 0) ELSE 0 END), 0)"
                f"   AS cost, COALESCE(SUM(CASE WHEN finished_at IS NULL THEN {_RESERVED} ELSE 0 END), 0) AS reserved,"
                " COALESCE(SUM(CASE WHEN finished_at IS NULL THEN 1 ELSE 0 END), 0) AS unfinished"
                " FROM executions WHERE tenant = %s AND created_at >= %s",
                (tenant, since),
            )
            jobs = await tx.one(
                "SELECT COUNT(*) AS n, COALESCE(SUM(cache_hit), 0) AS hits FROM jobs j"
                " JOIN executions e ON e.id = j.execution_id"
                " WHERE e.tenant = %s AND e.created_at >= %s AND j.status = 'succeeded'",
                (tenant, since),
            )
            running = await tx.one("SELECT COUNT(*) AS n FROM jobs WHERE status = 'running' AND tenant = %s", (tenant,))
            return {
                "tenant": tenant,
                "month": datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m"),
                "executions": int(row["n"]),
                "executions_unfinished": int(row["unfinished"]),
                "cost_usd": round(float(row["cost"]), 6),
                "reserved_usd": round(float(row["reserved"]), 6),
                "jobs_succeeded": int(jobs["n"]),
                "cache_hits": int(jobs["hits"]),
                "jobs_running": int(running["n"]),
            }

        return await self._in_snapshot(read)

    async def queue_stats(self) -> dict[str, Any]:
        async def read(tx: Tx) -> dict[str, Any]:
            async def pairs(sql: str) -> dict[str, int]:
                return {r["k"]: int(r["n"]) for r in await tx.all(sql)}

            return {
                "jobs": await pairs("SELECT status AS k, COUNT(*) AS n FROM jobs GROUP BY status"),
                "running_by_provider": await pairs(
                    "SELECT COALESCE(provider, 'local') AS k, COUNT(*) AS n FROM jobs WHERE status = 'running'"
                    " GROUP BY 1"
                ),
                "queued_by_provider": await pairs(
                    "SELECT COALESCE(provider, 'local') AS k, COUNT(*) AS n FROM jobs WHERE status = 'queued'"
                    " GROUP BY 1"
                ),
                "active_by_tenant": await pairs(
                    "SELECT tenant AS k, COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running') GROUP BY tenant"
                ),
            }

        return await self._in_snapshot(read)

    async def stats(self, tenant: str | None, since: float) -> dict[str, Any]:
        return assemble_stats(await self._fetch(stats_queries(tenant, since, time.time())), tenant, since)

    async def metric_gauges(self) -> dict[str, Any]:
        gauges = assemble_gauges(await self._fetch(gauge_queries(time.time())))
        gauges["circuits"] = [(c.provider, c.model or "", c.state) for c in await self.circuits()]
        return gauges

    async def _fetch(self, queries: list[Query]) -> dict[str, list[Any]]:
        """The rows (as tuples) of named read queries (`?` parameters), in one read-only transaction."""

        async def read(tx: Tx) -> dict[str, list[Any]]:
            rows: dict[str, list[Any]] = {}
            for name, sql, args in queries:
                found = await tx.all(sql.replace("?", "%s"), args)
                rows[name] = [tuple(r.values()) if isinstance(r, Mapping) else tuple(r) for r in found]
            return rows

        return await self._in_snapshot(read)

    # ------------------------------------------------------------------ provider pacing
    async def take_tokens(self, provider: str, want: int, per_minute: float | None) -> tuple[int, float]:
        """Up to `want` request tokens of `provider`'s shared bucket, and the seconds until the next one.

        The bucket refills at `per_minute` / 61 a second times the pace factor (halved by each 429, back
        to 1 over about a minute) and holds at most one second's worth, so no 60 s window ever sees more
        than `per_minute` requests across all workers. Without `per_minute` only a 429's hold applies."""

        async def write(tx: Tx) -> tuple[int, float]:
            await tx.run(
                "INSERT INTO provider_pace (provider, tokens, updated_at, factor, hold_until, throttled_at)"
                " VALUES (%s, 0, %s, 1, 0, 0) ON CONFLICT (provider) DO NOTHING",
                (provider, time.time()),
            )
            row = await tx.one(
                "SELECT tokens, updated_at, factor, hold_until, throttled_at FROM provider_pace WHERE provider = %s"
                + tx.for_update,
                (provider,),
            )
            now = time.time()  # after the lock: another worker may have just taken tokens
            tokens, updated = float(row["tokens"]), float(row["updated_at"])
            factor, hold_until = float(row["factor"]), float(row["hold_until"])
            factor = min(1.0, factor * 2 ** (max(0.0, now - max(updated, float(row["throttled_at"]))) / 20.0))
            if now < hold_until:
                granted, wait = 0, hold_until - now
            elif per_minute is None:
                granted, wait = want, 0.0
            else:
                rate = per_minute / 61.0 * factor
                capacity = max(1.0, rate)
                tokens = min(capacity, tokens + max(0.0, now - updated) * rate)
                granted = min(want, int(tokens))
                tokens -= granted
                wait = 0.0 if granted else (1.0 - tokens) / rate
            await tx.run(
                "UPDATE provider_pace SET tokens = %s, updated_at = %s, factor = %s WHERE provider = %s",
                (tokens, now, factor, provider),
            )
            return granted, wait

        return await self._in_tx(write)

    async def report_throttle(self, provider: str, retry_after_s: float | None) -> None:
        """A 429 from `provider`: every worker holds for Retry-After and the shared pace halves (once a second)."""
        now = time.time()
        hold = now + (retry_after_s if retry_after_s is not None else 1.0)
        again = "excluded.throttled_at - p.throttled_at >= 1.0"
        await self._in_tx(
            lambda tx: tx.run(
                "INSERT INTO provider_pace AS p (provider, updated_at, factor, hold_until, throttled_at)"
                " VALUES (%s, %s, 0.5, %s, %s) ON CONFLICT (provider) DO UPDATE SET"
                " hold_until = CASE WHEN excluded.hold_until > p.hold_until THEN excluded.hold_until"
                "   ELSE p.hold_until END,"
                f" factor = CASE WHEN {again} THEN CASE WHEN p.factor * 0.5 > 0.02 THEN p.factor * 0.5 ELSE 0.02 END"
                "   ELSE p.factor END,"
                f" throttled_at = CASE WHEN {again} THEN excluded.throttled_at ELSE p.throttled_at END",
                (provider, now, hold, now),
            )
        )

    async def provider_paces(self) -> dict[str, tuple[float, float]]:
        """provider -> (hold_until, throttled_at) for providers throttled in the last minute."""
        rows = await self._in_read(
            lambda tx: tx.all(
                "SELECT provider, hold_until, throttled_at FROM provider_pace WHERE throttled_at > %s",
                (time.time() - 60,),
            )
        )
        return {r["provider"]: (float(r["hold_until"]), float(r["throttled_at"])) for r in rows}

    # ------------------------------------------------------------------ tenants, keys, artifacts
    @staticmethod
    async def _tenant_secret(tx: Tx, tenant: str, now: float) -> str:
        """The tenant's webhook secret; the tenant is created (with a new secret) when missing."""
        row = await tx.one("SELECT webhook_secret FROM tenants WHERE name = %s", (tenant,))
        if row is None:  # a concurrent transaction may be creating it too: the first one's secret stands
            await tx.run(
                "INSERT INTO tenants (name, webhook_secret, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (tenant, new_webhook_secret(), now),
            )
            row = await tx.one("SELECT webhook_secret FROM tenants WHERE name = %s", (tenant,))
        return str(row["webhook_secret"])

    async def ensure_tenant(self, tenant: str) -> str:
        return await self._in_tx(lambda tx: self._tenant_secret(tx, tenant, time.time()))

    async def add_api_key(self, key: ApiKey) -> None:
        async def write(tx: Tx) -> None:
            await self._tenant_secret(tx, key.tenant, key.created_at)
            await tx.run(
                "INSERT INTO api_keys (id, tenant, key_hash, created_at) VALUES (%s, %s, %s, %s)",
                (key.id, key.tenant, key.key_hash, key.created_at),
            )

        await self._in_tx(write)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._in_read(
            lambda tx: tx.one(
                "SELECT id, tenant, key_hash, created_at, revoked_at FROM api_keys WHERE id = %s", (key_id,)
            )
        )
        return ApiKey(**dict(row)) if row else None

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKey]:
        sql = "SELECT id, tenant, key_hash, created_at, revoked_at FROM api_keys"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = %s"
            args = (tenant,)
        rows = await self._in_read(lambda tx: tx.all(sql + " ORDER BY created_at", args))
        return [ApiKey(**dict(r)) for r in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        changed = await self._in_tx(
            lambda tx: tx.run(
                "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", (time.time(), key_id)
            )
        )
        return changed > 0

    async def owned_artifacts(self, tenant: str, keys: Collection[str]) -> set[str]:
        return await self._in_read(
            lambda tx: self._column_in(tx, "SELECT key FROM artifacts WHERE tenant = %s AND", [tenant], "key", keys)
        )

    async def adopted(self, provider: str, provider_job_ids: Collection[str]) -> set[str]:
        sql = "SELECT provider_job_id AS key FROM jobs WHERE provider = %s AND"
        return await self._in_read(lambda tx: self._column_in(tx, sql, [provider], "provider_job_id", provider_job_ids))

    @staticmethod
    async def _column_in(tx: Tx, sql: str, args: list[Any], column: str, values: Collection[str]) -> set[str]:
        """The `key` column of `sql` (ending in AND) for the rows whose `column` is one of `values`."""
        found: set[str] = set()
        ordered = sorted(set(values))
        for i in range(0, len(ordered), IN_CHUNK):
            cond, more = tx.in_(column, ordered[i : i + IN_CHUNK])
            found.update(r["key"] for r in await tx.all(f"{sql} {cond}", [*args, *more]))
        return found

    async def owns_artifact(self, tenant: str, key: str) -> bool:
        row = await self._in_read(
            lambda tx: tx.one("SELECT 1 FROM artifacts WHERE tenant = %s AND key = %s", (tenant, key))
        )
        return row is not None

    # ------------------------------------------------------------------ webhook deliveries
    async def record_delivery_attempt(
        self,
        delivery_id: str,
        owner: str,
        *,
        delivered: bool,
        status_code: int | None,
        latency_ms: float | None,
        error: str | None,
        next_attempt_at: float | None,
        request_body: str | None = None,
        response_body: str | None = None,
    ) -> None:
        now = time.time()
        status = "delivered" if delivered else ("pending" if next_attempt_at is not None else "failed")

        async def write(tx: Tx) -> None:
            row = await tx.one(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = %s, next_attempt_at = %s,"
                " last_status_code = %s, last_error = %s, delivered_at = %s, lease_owner = NULL,"
                " lease_expires_at = NULL WHERE id = %s AND lease_owner = %s RETURNING attempts",
                (status, next_attempt_at if next_attempt_at is not None else now, status_code, error,
                 now if delivered else None, delivery_id, owner),
            )  # fmt: skip
            if row is None:
                return
            await tx.run(
                "INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, status_code, latency_ms, error,"
                " request_body, response_body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (delivery_id, row["attempts"], now, status_code, latency_ms, error, request_body, response_body),
            )

        await self._in_tx(write)

    async def list_deliveries(
        self, tenant: str | None, execution_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self._in_snapshot(lambda tx: self._deliveries(tx, tenant, execution_id, limit))

    @staticmethod
    async def _deliveries(
        tx: Tx, tenant: str | None, execution_id: str | None, limit: int, delivery_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = equal_filters(id=delivery_id, tenant=tenant, execution_id=execution_id)
        sql = "SELECT * FROM webhook_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await tx.all(sql + " ORDER BY created_at DESC, id LIMIT %s", (*args, limit))
        attempts: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for i in range(0, len(rows), IN_CHUNK):
            cond, ids = tx.in_("delivery_id", [r["id"] for r in rows[i : i + IN_CHUNK]])
            for a in await tx.all(
                "SELECT delivery_id, attempt, attempted_at, status_code, latency_ms, error, request_body, response_body"
                " FROM webhook_attempts"
                f" WHERE {cond} ORDER BY delivery_id, attempt",
                ids,
            ):
                attempts[a["delivery_id"]].append(dict(a))
        return [delivery_view(dict(r), attempts[r["id"]]) for r in rows]

    async def redeliver(self, delivery_id: str, tenant: str | None) -> dict[str, Any]:
        async def write(tx: Tx) -> dict[str, Any]:
            row = await tx.one("SELECT tenant FROM webhook_deliveries WHERE id = %s" + tx.for_update, (delivery_id,))
            if row is None or (tenant is not None and row["tenant"] != tenant):
                raise NotFound(f"webhook delivery {delivery_id!r} not found")
            now = time.time()
            await tx.run(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = %s, retry_from = %s,"
                " lease_owner = NULL, lease_expires_at = NULL WHERE id = %s",
                (now, now, delivery_id),
            )
            found = await self._deliveries(tx, tenant, None, 1, delivery_id)
            return found[0]

        return await self._in_tx(write)


def equal_filters(**columns: Any) -> tuple[list[str], list[Any]]:
    """`column = %s` conditions (and their arguments) for every filter that is set."""
    given = [(name, value) for name, value in columns.items() if value is not None]
    return [f"{name} = %s" for name, _ in given], [value for _, value in given]
