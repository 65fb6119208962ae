"""The rules both stores apply, written once: limits and budgets, the claim's round robin, the hand-off, what a
failure skips, how an execution settles and ends, the events of outcomes, the webhook outbox, the claimed job;
and `StoreManager`, every method of the Store over each database's driver (`Tx` and the steps it takes its own way).

The rules are pure; the statements are in `sql/*.sql`; each store's driver runs them in its own dialect (SQLite
on its thread, PostgreSQL on its pool) and takes the few steps whose dialects differ.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from .. import metrics
from ..circuits import Admission, Admit, Circuit, CircuitKeys, CircuitOp, Outcome, admit, record
from ..errors import Conflict, IdempotencyConflict, NotFound
from ..states import (
    RESUMABLE_JOB,
    TERMINAL_EXECUTION,
    execution_progress,
    execution_status,
    sources,
    transitive_dependents,
)
from .base import (
    ApiKey,
    ClaimedJob,
    Delivery,
    Event,
    JobNote,
    JobOutcome,
    NewExecution,
    NewJob,
    OrphanedCancel,
    ProgressReport,
)
from .common import (
    CALLBACK_OUTCOME_MAX_BYTES,
    IDEMPOTENCY_WINDOW_S,
    ORPHAN_CANCEL_S,
    Statements,
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
    merged_log,
    month_start,
    new_delivery_id,
    new_webhook_secret,
    serves,
    unique_orphans,
    usage_refusal,
    wants_event,
    webhook_body,
)
from .stats import LIVE_WITHIN_S, assemble_gauges, assemble_stats

if TYPE_CHECKING:  # the answer models load on first use: `reelflow run` never builds one
    from ..models import Delivery as DeliveryAnswer
    from ..models import DeliveryList, ExecutionPage, ExecutionState, JobLogs, Stats

T = TypeVar("T")

EventRow = tuple[str, str | None, str, str, float]
"""One event to append: execution id, job key (None: the execution's own), type, data (JSON), time."""
Ready = tuple[int, str | None, str | None, str]
"""A job made ready by a finish: job row, provider, model family, tenant."""
Released = list[tuple[int, str, str | None, str | None, str]]
"""The dependents a success queued: job row, key, provider, model, tenant."""
Written = tuple[dict[int, Any], dict[tuple[str, str], Released], dict[int, str]]
"""Outcomes written: `id(outcome)` -> the row (execution_id, key, attempts) it wrote, for each outcome applied (one
per job at most: not a stale attempt's outcome beside it in the batch); (execution, key of a job that succeeded) ->
the dependents it queued; job row -> provider id recorded with a success (not on its own before)."""


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
        """Up to `limit` job rows: each tenant's queue (job row, provider, model; best first) in turn, one job per
        tenant per round, skipping jobs whose provider or model family is at its cap (counted as they are
        picked). Remembers the first tenant for the next claim's rotation."""
        caps_p, caps_m = self._provider_caps, self._model_caps
        picked: list[int] = []
        for round_ in range(limit):
            for queue in queues:  # each tenant's holds no more than it has room for
                if round_ >= len(queue) or len(picked) >= limit:
                    continue
                job_row, provider, model = queue[round_]
                base = model_family(model)
                if provider in caps_p and running_p.get(provider, 0) >= caps_p[provider]:
                    continue
                if base in caps_m and running_m.get(base, 0) >= caps_m[base]:
                    continue
                picked.append(job_row)
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
        is not known yet; those go to the second list). Returns (job rows to lease, (row, tenant) to lease once
        the tenant's room is known)."""
        left = dict(room)
        mine: list[int] = []
        busy: list[tuple[int, str]] = []
        for job_row, provider, base, tenant in ready:
            if provider in self._provider_caps or base in self._model_caps:
                continue
            if len(mine) + len(busy) >= limit:
                break
            if tenant in left:
                n = left[tenant]
                if n is None:
                    busy.append((job_row, tenant))
                    continue
                if n <= 0:
                    continue
                left[tenant] = n - 1
            mine.append(job_row)
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


RENEW_WITHIN = 0.75
"""A heartbeat renews the leases that have less than this share of their `lease_s` left (the others were renewed
recently enough). The worker beats every quarter lease (at most every 15 s), so a live worker's lease never gets
closer than half a lease to its end, and a dead worker's leases still end at most one lease after its last beat."""


def _shared(value: Any) -> Any:
    """One copy of a string that many claimed jobs repeat (their type, provider, model, tenant): a worker holding
    10,000 jobs held 10,000 copies of each. Only for values of a small set: `sys.intern` keeps a string forever on
    some Pythons (3.12.0 to 3.12.4; free-threaded builds), so a value as many as the executions (their ids) is
    never interned."""
    return sys.intern(value) if type(value) is str else value


def claimed_job(
    r: Row, deadline: float | None, results: Mapping[tuple[str, str], dict[str, Any]], refusal: str | None
) -> ClaimedJob:
    """A leased job as the worker gets it: its row, its execution's deadline, its dependencies' results."""
    return ClaimedJob(
        id=r["id"],
        execution_id=r["execution_id"],
        key=r["key"],
        type=_shared(r["type"]),
        provider=_shared(r["provider"]),
        model=_shared(r["model"]),
        params=loads(r["params"]),
        attempts=r["attempts"],
        max_attempts=r["max_attempts"],
        provider_job_id=r["provider_job_id"],
        timeout_s=r["timeout_s"],
        start_timeout_s=r["start_timeout_s"],
        started_at=r["started_at"],
        execution_deadline=deadline,
        dep_results={k: results.get((r["execution_id"], k), {}) for k in loads(r["depends_on"])},
        tenant=_shared(r["tenant"]),
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
    """(model, provider, failover JSON, job row) to write for a failover outcome, else None."""
    if o.status != "retry" or not o.failover_to:
        return None
    return o.failover_to, o.failover_to.split("/", 1)[0], dumps(o.failover or {}), o.job_row


def running_events(rows: Iterable[Row], owner: str, now: float) -> list[EventRow]:
    """`job.running` of each leased row: `dumps({"attempt": n, "worker": owner})`, the owner encoded once."""
    worker = dumps(owner)
    return [
        (r["execution_id"], r["key"], "job.running", f'{{"attempt":{int(r["attempts"])},"worker":{worker}}}', now)
        for r in rows
    ]


# ---------------------------------------------------------------------- finishing
def result_texts(outcomes: Iterable[JobOutcome]) -> dict[int, str]:
    """The result column of each success (`id(outcome)` -> `dumps(result or {})`), encoded once for its row and
    its `job.succeeded` event."""
    return {id(o): dumps(o.result or {}) for o in outcomes if o.status == "succeeded"}


def submitted_data(provider_job_id: str) -> str:
    """A `job.submitted` event's data: `dumps({"provider_job_id": ...})`, spelled out (a dict through the encoder
    cost ~0.5 µs more, for every quick job)."""
    return f'{{"provider_job_id":{dumps(provider_job_id)}}}'


def outcome_events(
    o: JobOutcome, eid: str, key: str, attempts: int, now: float, result_text: str | None = None
) -> list[EventRow]:
    """The events of one outcome written (the dependents it released excepted). `result_text`: the success's
    result as `result_texts` encoded it, reused for the event's data (the same text as encoding it again)."""
    if o.status == "succeeded":
        events: list[EventRow] = []
        if o.cache_hit:
            events.append((eid, key, "job.cache_hit", dumps((o.result or {}).get("cached_from")), now))
        result = result_text if result_text is not None and o.result is not None else dumps(o.result)
        events.append((eid, key, "job.succeeded", f'{{"result":{result},"cost":{dumps(o.cost_usd)}}}', now))
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


def skips(graph: Mapping[str, tuple[list[str], str]], failed: list[str], on_failure: str) -> list[tuple[str, str]]:
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


# ---------------------------------------------------------------------- the driver's seam
class Tx(Protocol):
    """One transaction of a store (or, from `_in_read`, single autocommit reads), in PostgreSQL's parameter
    style (`%s`); each store's driver runs the text in its own dialect."""

    async def one(self, sql: str, args: Sequence[Any] = ()) -> Any: ...

    async def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]: ...

    async def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """The number of rows changed."""

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    for_update: str
    """` FOR UPDATE` where row locks exist (PostgreSQL), else empty (SQLite's write lock covers the file)."""

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """`column` is one of `values` (at most IN_CHUNK of them): the condition and its arguments."""


NO_NOTE = JobNote(attempt=0)
"""What a progress report without a note writes: nothing more."""
Note = tuple[int, str, JobNote]
"""What a provider told about a running attempt: job row, lease owner, the note."""

IN_CHUNK = 500
"""The most values one `Tx.in_` condition holds (SQLite counts every one as a parameter)."""

Fn = Callable[[Tx], Coroutine[Any, Any, T]]


def chunks(values: Sequence[T]) -> list[Sequence[T]]:
    return [values[i : i + IN_CHUNK] for i in range(0, len(values), IN_CHUNK)]


CACHE_LOG_HOPS = 16
"""How many cache hits in a row a job's log is followed through to the run that made the output."""


class StoreManager(StoreRules):
    """Every method of the Store, written once over a driver: the transactions (`_in_tx`, `_in_read`,
    `_in_snapshot`, `_in_tx_if`), the statements (`sql`, shared.sql and the dialect's file) and the steps whose
    dialects differ (the methods below that raise NotImplementedError)."""

    sql: Statements
    _claims_full = False
    """The last claim filled its batch: the next one skips the look for ready jobs."""

    async def _in_tx(self, fn: Fn[T]) -> T:
        """Run `fn` in one write transaction."""
        raise NotImplementedError

    async def _in_read(self, fn: Fn[T]) -> T:
        """Run `fn`'s reads (each statement on its own; no transaction around them)."""
        raise NotImplementedError

    async def _in_snapshot(self, fn: Fn[T]) -> T:
        """Run `fn`'s reads in one read-only transaction: they see one state of the database."""
        raise NotImplementedError

    async def _in_tx_if(self, probe: str, args: Sequence[Any], fn: Fn[T], default: T) -> T:
        """`default` when the cheap read `probe` finds no row (a worker asks often, and must not take a write lock
        for nothing); else `fn` in a write transaction."""
        raise NotImplementedError

    # the steps whose dialects differ, inside a transaction of `_in_tx`
    async def _pick(self, tx: Tx, limit: int, now: float, executions: list[str] | None) -> list[int]:
        """Up to `limit` ready jobs to start: tenants in turn (`_round_robin`), skipping those at a cap."""
        raise NotImplementedError

    async def _lease_rows(self, tx: Tx, owner: str, picked: list[int], lease_s: float, now: float) -> list[Any]:
        """Lease the jobs `picked` (those still queued) to `owner`: their rows by id, with their execution's
        `deadline`."""
        raise NotImplementedError

    async def _dep_results(self, tx: Tx, rows: list[Any]) -> dict[tuple[str, str], dict[str, Any]]:
        """(execution, key) -> result of the dependencies of the leased `rows`."""
        raise NotImplementedError

    async def _write_outcomes(
        self, tx: Tx, outcomes: list[JobOutcome], now: float, provider_ids: list[tuple[int, str, str]],
        results: Mapping[int, str],
    ) -> Written:  # fmt: skip
        """Record `provider_ids` and write the outcomes (each applies only to the attempt holding the lease), with
        the artifacts of the successes (their result column: `results`, see `result_texts`), and count down and
        queue their dependents."""
        raise NotImplementedError

    async def _tenant_room(self, tx: Tx, caps: dict[str, int]) -> dict[str, int | None]:
        """For the hand-off: how many more jobs each capped tenant may start now (None: not known yet)."""
        raise NotImplementedError

    async def _hand_off_rest(self, owner: str, jobs: list[tuple[int, str]], lease_s: float) -> list[ClaimedJob]:
        """Lease the hand-off's jobs whose tenant room `_tenant_room` could not tell, in a transaction of their own."""
        raise NotImplementedError

    async def _settling(
        self, tx: Tx, ids: list[str]
    ) -> tuple[list[Any], dict[str, dict[str, int]], dict[str, list[float]]]:
        """The executions to settle (locked where rows lock), their jobs' counts by status, running progress."""
        raise NotImplementedError

    async def _write_events(self, tx: Tx, events: list[EventRow]) -> list[Any]:
        """Append `events`; return the rows (id, tenant, webhook, webhook_events) of their executions with a
        webhook."""
        raise NotImplementedError

    async def _set_provider_ids(self, tx: Tx, items: list[tuple[int, str, str]], now: float) -> list[Any]:
        """Record (job id, owner, provider id) of running jobs (each job id and owner at most once), submitted at
        `now`; the rows changed, by job id."""
        raise NotImplementedError

    async def _set_progress(self, tx: Tx, reports: list[ProgressReport]) -> dict[int, Any]:
        """Record the reports of running jobs (their notes' phase and times, `NO_NOTE` without one); job row ->
        (execution_id, key) of the rows changed."""
        raise NotImplementedError

    async def _set_notes(self, tx: Tx, notes: list[Note]) -> set[int]:
        """Record the notes' phase and times on the jobs their attempts still hold; the rows of those jobs."""
        raise NotImplementedError

    async def _cache_hits(self, tx: Tx, wanted: list[tuple[str, str]]) -> list[tuple[tuple[str, str], Any]]:
        """The latest succeeded job (result, execution_id, key) of each (tenant, cache key) that has one."""
        raise NotImplementedError

    async def _lease_deliveries(
        self, tx: Tx, owner: str, limit: int, lease_s: float, now: float, executions: list[str] | None
    ) -> list[Any]:
        """Lease due deliveries; their rows with the tenant's `webhook_secret`."""
        raise NotImplementedError

    async def _lock_in(self, tx: Tx, name: str) -> None:
        """Hold the lock `name` to the end of the transaction (PostgreSQL's advisory locks; SQLite's write lock
        already excludes every other writer)."""

    async def _notify_in(self, tx: Tx) -> None:
        """Tell the other processes' workers that jobs became claimable (when the transaction commits)."""

    def _announce(self) -> None:
        """After a commit that made jobs claimable: wake this process's `wait_for_work`."""

    def _unsubscribed(self, tx: Tx, execution_ids: Collection[str]) -> bool:
        """True when this transaction already knows that none of these executions has a webhook (their events
        need no delivery, so appending them may wait for the transaction's later events: one statement)."""
        return False

    # ------------------------------------------------------------------ claiming
    async def claim(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[ClaimedJob]:
        if limit <= 0 or (executions is not None and not executions):
            return []
        only = sorted(executions) if executions is not None else None

        async def write(tx: Tx) -> list[ClaimedJob]:
            now = time.time()
            picked = await self._pick(tx, limit, now, only)
            return await self._lease(tx, owner, picked, lease_s, now) if picked else []

        if self._claims_full:  # the last claim was full: there is surely more, no need to look first
            claimed = await self._in_tx(write)
        else:
            claimed = await self._in_tx_if(self.sql.any_ready, (time.time(),), write, [])
        self._claims_full = len(claimed) >= limit and only is None
        return claimed

    async def _lease(
        self, tx: Tx, owner: str, picked: list[int], lease_s: float, now: float, earlier: Sequence[EventRow] = ()
    ) -> list[ClaimedJob]:
        """Lease `picked` to `owner`: the jobs, their executions started, the budget check, the events (after
        the `earlier` ones this transaction held back, appended with them)."""
        rows = await self._lease_rows(tx, owner, picked, lease_s, now)
        if not rows:
            await self._append(tx, list(earlier))
            return []
        spent = {
            t: float((await tx.one(self.sql.month_spent, (t, month_start(now))))["spent"])
            for t in self._budget_tenants(rows)
        }
        refusals = self._budget_refusals(rows, spent)
        events = running_events(rows, owner, now)
        started: list[str] = []
        for chunk in chunks(sorted({r["execution_id"] for r in rows})):
            cond, args = tx.in_("id", chunk)
            started += [s["id"] for s in await tx.all(self.sql.start_executions.format(cond=cond), (now, now, *args))]
        events += [(eid, None, "execution.running", dumps({"status": "running"}), now) for eid in sorted(started)]
        results = await self._dep_results(tx, rows)
        await self._append(tx, [*earlier, *events])
        return [claimed_job(r, r["deadline"], results, refusals.get(r["id"])) for r in rows]

    # ------------------------------------------------------------------ finishing
    async def finish_jobs(
        self, outcomes: list[JobOutcome], provider_ids: list[tuple[int, str, str]] | None = None
    ) -> list[str]:
        if not outcomes and not provider_ids:
            return []
        promoted = await self._in_tx(
            lambda tx: self._apply_outcomes(tx, outcomes, time.time(), None, provider_ids or [])
        )
        if promoted:
            self._announce()
        return promoted

    async def finish_and_claim(
        self,
        outcomes: list[JobOutcome],
        provider_ids: list[tuple[int, str, str]] | None,
        owner: str,
        limit: int,
        lease_s: float,
    ) -> tuple[list[str], list[ClaimedJob]]:
        """`finish_jobs`, and in the same transaction lease to `owner` up to `limit` of the jobs it made ready:
        the hand-off from a job to its dependent costs no notification and no separate claim. Jobs of a capped
        provider or model are left to the regular claim, which counts caps under their locks; the others skip
        the tenants' round robin (a pipeline under way goes on), within their tenant's cap (`_tenant_room`).
        Those of a tenant whose room is not known yet are leased in a second, short transaction
        (`_hand_off_rest`). Returns the promoted keys (those left queued are announced) and the jobs claimed."""
        if not outcomes and not provider_ids:
            return [], []
        busy: list[tuple[int, str]] = []
        left = [False]

        async def write(tx: Tx) -> tuple[list[str], list[ClaimedJob]]:
            busy.clear()  # a retried transaction starts again
            now = time.time()
            ready: list[Ready] = []
            held: list[EventRow] = []  # the outcomes' events, when they may wait for the lease's (one statement)
            promoted = await self._apply_outcomes(tx, outcomes, now, ready, provider_ids or [], held)
            room = await self._tenant_room(tx, self._capped_tenants(ready)) if limit > 0 else {}
            mine, later = self._hand_off(ready, limit, room)
            busy.extend(later)
            if mine:  # leased as of now, after the writes above: started_at says when the dependent was leased
                claimed = await self._lease(tx, owner, mine, lease_s, time.time(), held)
            else:
                claimed = []
                await self._append(tx, held)
            left[0] = len(claimed) + len(busy) < len(ready)
            if left[0]:  # the rest are for anyone
                await self._notify_in(tx)
            return promoted, claimed

        promoted, claimed = await self._in_tx(write)
        if left[0]:
            self._announce()
        if busy:
            claimed += await self._hand_off_rest(owner, list(busy), lease_s)
        return promoted, claimed

    async def _apply_outcomes(
        self, tx: Tx, outcomes: list[JobOutcome], now: float, ready: list[Ready] | None,
        provider_ids: list[tuple[int, str, str]], held: list[EventRow] | None = None,
    ) -> list[str]:  # fmt: skip
        """Write the outcomes and their events, skip what failures make pointless, settle the executions; return
        the keys of the dependents made ready (added to `ready` when given). With `held`, events that need no
        webhook delivery (`_unsubscribed`) are added to it for the caller to append, instead of appended here."""
        results = result_texts(outcomes)
        rows, released, inline = await self._write_outcomes(tx, outcomes, now, provider_ids, results)
        requeued = any(o.status == "retry" and id(o) in rows for o in outcomes)
        if moves := [u for o in outcomes if id(o) in rows and (u := failover_update(o)) is not None]:
            await tx.many(self.sql.failover_move, moves)
        if waits := [(o.job_row,) for o in outcomes if o.status == "retry" and o.uncount and id(o) in rows]:
            await tx.many(self.sql.uncount_attempt, waits)
        events: list[EventRow] = []
        promoted: list[str] = []
        touched: set[str] = set()
        failed: dict[str, list[str]] = defaultdict(list)
        for o in outcomes:
            if (found := rows.pop(id(o), None)) is None:
                continue
            eid, key = found["execution_id"], found["key"]
            touched.add(eid)
            if o.status == "succeeded":
                if (pid := inline.get(o.job_row)) is not None:
                    events.append((eid, key, "job.submitted", submitted_data(pid), now))
                events += outcome_events(o, eid, key, 0, now, results.get(id(o)))
                for job_row, dep, provider, model, tenant in released.pop((eid, key), []):
                    promoted.append(dep)
                    if ready is not None:
                        ready.append((job_row, provider, model_family(model), tenant))
                    events.append((eid, dep, "job.queued", f'{{"after":{dumps(key)}}}', now))
            else:
                events += outcome_events(o, eid, key, found["attempts"], now)
                if o.status != "retry":
                    failed[eid].append(key)
        for eid, keys in failed.items():
            await self._skip_after_failure(tx, eid, keys, now, events)
        await self._settle(tx, touched, now, events)
        if held is not None and self._unsubscribed(tx, {e[0] for e in events}):
            held += events
        else:
            await self._append(tx, events)
        if (promoted and ready is None) or requeued:
            await self._notify_in(tx)
        return promoted

    async def _skip_after_failure(self, tx: Tx, eid: str, keys: list[str], now: float, events: list[EventRow]) -> None:
        """Skip the jobs of `eid` that will not run now that `keys` failed (`skips`)."""
        ex = await tx.one(self.sql.on_failure, (eid,))
        rows = await tx.all(self.sql.job_graph, (eid,))
        graph = {r["key"]: (loads(r["dependents"]), r["status"]) for r in rows}
        for key, reason in skips(graph, keys, ex["on_failure"]):
            await tx.run(self.sql.skip_job, (reason, now, eid, key))
            events.append((eid, key, "job.skipped", dumps({"reason": reason}), now))

    async def _settle(self, tx: Tx, exec_ids: set[str], now: float, events: list[EventRow]) -> None:
        """Re-derive each touched execution's status and progress from its jobs (`settle`)."""
        if not exec_ids:
            return
        executions, counts, running = await self._settling(tx, sorted(exec_ids))
        updates: list[tuple[str, float, float, str]] = []
        for ex in executions:
            eid = ex["id"]
            action, status, progress = settle(ex, counts[eid], running[eid])
            if action == "end":
                await self._finish_execution(tx, eid, status, progress, now, events)
            elif action == "update":
                updates.append((status, progress, now, eid))
                events += progress_event(eid, ex["progress"], progress, now)
        if updates:  # one round trip for all
            await tx.many(self.sql.update_progress, updates)

    async def _finish_execution(
        self, tx: Tx, eid: str, status: str, progress: float, now: float, events: list[EventRow]
    ) -> None:
        """End `eid` with `status`: its result (the sinks'), error and cost; count it; its event."""
        sinks = await tx.all(self.sql.sink_results, (eid,))
        failed = await tx.all(self.sql.failed_jobs, (eid,))
        cost = await tx.one(self.sql.execution_cost, (eid,))
        progress, result, error = ending(
            status, progress, [(r["key"], r["result"]) for r in sinks], [(r["key"], r["error"]) for r in failed]
        )
        ended = await tx.one(
            self.sql.end_execution, (status, progress, result, error, float(cost["cost"]), now, now, eid)
        )
        metrics.execution_finished(status, now - ended["created_at"] if ended else None)
        events.append(end_event(eid, status, error, now))

    async def _append(self, tx: Tx, events: list[EventRow]) -> None:
        """Append `events` to the log, with the webhook deliveries they call for, each with its execution's state
        as of now, in the transaction that made them (the outbox)."""
        if not events:
            return
        subscribed = {
            r["id"]: (r["tenant"], r["webhook"], loads(r["webhook_events"]) or [])
            for r in await self._write_events(tx, events)
            if r["webhook"] is not None
        }
        states: dict[str, dict[str, Any]] = {}
        for eid in webhook_executions(events, subscribed):
            row = await tx.one(self.sql.execution, (eid,))
            jobs = await tx.all(self.sql.execution_jobs, (eid,))
            states[eid] = execution_view(dict(row), [dict(j) for j in jobs])
        if rows := webhook_rows(events, subscribed, states):
            await tx.many(self.sql.insert_deliveries, rows)

    # ------------------------------------------------------------------ provider ids and progress
    async def set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        if items:
            await self._in_tx(lambda tx: self._write_provider_ids(tx, items, time.time()))

    async def _write_provider_ids(self, tx: Tx, items: list[tuple[int, str, str]], now: float) -> None:
        # One statement writes them all: a job row and owner given twice keeps its last provider id (the newest).
        latest = {(job_row, owner): pid for job_row, owner, pid in items}
        if len(latest) < len(items):
            items = [(job_row, owner, pid) for (job_row, owner), pid in latest.items()]
        rows = await self._set_provider_ids(tx, items, now)
        await self._append(tx, [
            (r["execution_id"], r["key"], "job.submitted", submitted_data(r["provider_job_id"]), now)
            for r in rows
        ])  # fmt: skip

    async def report_progress(self, reports: list[ProgressReport]) -> None:
        if not reports:
            return

        async def write(tx: Tx) -> None:
            now = time.time()
            events: list[EventRow] = []
            updated = await self._set_progress(tx, reports)
            await self._write_logs(tx, [(r.job_row, r.note) for r in reports if r.note and r.job_row in updated], now)
            touched: set[str] = set()
            for r in reports:
                if (row := updated.get(r.job_row)) is None or not r.event:
                    continue
                touched.add(row["execution_id"])
                data: dict[str, Any] = {"progress": r.progress}
                if r.queue_position is not None:
                    data["queue_position"] = r.queue_position
                if r.message:
                    data["message"] = r.message
                events.append((row["execution_id"], row["key"], "job.progress", dumps(data), now))
            await self._settle(tx, touched, now, events)
            await self._append(tx, events)

        await self._in_tx(write)

    async def _write_notes(self, tx: Tx, notes: list[Note], now: float) -> None:
        """What providers told about running attempts (phase, start, log), for the attempts that still hold their
        jobs. Called inside a progress or outcome write: never a transaction of its own."""
        if notes:
            held = await self._set_notes(tx, notes)
            await self._write_logs(tx, [(job_row, note) for job_row, _, note in notes if job_row in held], now)

    async def _write_logs(self, tx: Tx, notes: list[tuple[int, JobNote]], now: float) -> None:
        """The attempts' logs (the notes whose `log` is set) into their jobs' job_logs rows (locked first)."""
        logged = [(job_row, note) for job_row, note in notes if note.log is not None]
        old: dict[int, Any] = {}
        for chunk in chunks([job_row for job_row, _ in logged]):
            cond, args = tx.in_("job_id", chunk)
            old.update(
                (r["job_id"], dict(r))
                for r in await tx.all(self.sql.job_logs_of.format(cond=cond) + tx.for_update, args)
            )
        for job_row, note in logged:
            m = merged_log(old.get(job_row), note.attempt, note.log or "", note.log_dropped)
            await tx.run(self.sql.save_job_log, (
                job_row, m["attempt"], m["earlier"], m["earlier_dropped"], m["current"], m["current_dropped"], now,
            ))  # fmt: skip

    # ------------------------------------------------------------------ cancel / resume
    async def _execution_for_change(self, tx: Tx, execution_id: str, tenant: str | None) -> Any:
        """Lock the execution (job rows by id first, then the execution: the one lock order of claims and
        completions, see docs/reliability.md) and read its status; NotFound when unknown or another tenant's."""
        if tx.for_update:
            await tx.all(self.sql.lock_execution_jobs, (execution_id,))
        row = await tx.one(self.sql.execution_status + tx.for_update, (execution_id,))
        if row is None or (tenant is not None and row["tenant"] != tenant):
            raise NotFound(f"execution {execution_id!r} not found")
        return row

    async def cancel_execution(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        async def write(tx: Tx) -> None:
            now = time.time()
            row = await self._execution_for_change(tx, execution_id, tenant)
            if row["status"] in TERMINAL_EXECUTION:
                ended = "is already canceled" if row["status"] == "canceled" else f"has already {row['status']}"
                raise Conflict(f"execution {execution_id!r} {ended}; nothing to cancel")
            await tx.run(self.sql.request_cancel, (execution_id,))
            await tx.run(self.sql.record_cancels, (now, execution_id))
            canceled = await tx.all(self.sql.cancel_jobs, (now, execution_id))
            events: list[EventRow] = [
                (execution_id, k["key"], "job.canceled", dumps({"reason": "canceled by request"}), now)
                for k in sorted(canceled, key=lambda k: int(k["id"]))
            ]
            await self._settle(tx, {execution_id}, now, events)
            await self._append(tx, events)

        await self._in_tx(write)
        state = await self.get_execution(execution_id, tenant)
        assert state is not None
        return state

    async def resume_execution(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        async def write(tx: Tx) -> bool:
            now = time.time()
            row = await self._execution_for_change(tx, execution_id, tenant)
            if row["status"] not in TERMINAL_EXECUTION:
                raise Conflict(
                    f"execution {execution_id!r} is {row['status']}; only a finished execution can be resumed"
                )
            if row["status"] == "succeeded":
                raise Conflict(f"execution {execution_id!r} succeeded; there is nothing to resume")
            jobs = await tx.all(self.sql.resumable_jobs, (execution_id,))
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
                    self.sql.resume_job, (status, left, now if status == "queued" else None, execution_id, j["key"])
                )
                if j["failover"] and (restart := loads(j["failover"])).get("models"):  # from its first model again
                    first = restart["models"][0]
                    move = (first, first.split("/", 1)[0], dumps({**restart, "passed": []}), j["id"])
                    await tx.run(self.sql.failover_move, move)
                events.append((execution_id, j["key"], f"job.{status}", dumps({"reason": "resume"}), now))
            await tx.run(self.sql.resume_execution, (now, execution_id))
            events.insert(0, (execution_id, None, "execution.resumed", dumps({"jobs": rerun}), now))
            await self._settle(tx, {execution_id}, now, events)
            await self._append(tx, events)
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
        job_row: int,
        owner: str,
        seq: int,
        event: str,
        data: dict[str, Any],
        *,
        possible_duplicate_usd: float | None = None,
    ) -> bool:
        async def write(tx: Tx) -> bool:
            now = time.time()
            dup = (1 if possible_duplicate_usd is not None else 0, possible_duplicate_usd or 0.0)
            row = await tx.one(self.sql.note_attempt, (*dup, job_row, owner, seq))
            if row is None:
                return False
            await self._append(tx, [(row["execution_id"], row["key"], event, dumps(data), now)])
            return True

        return await self._in_tx(write)

    async def canceled_for(self, owner: str) -> list[int]:
        rows: list[Any] = await self._in_tx_if(
            self.sql.any_canceled_for, (owner,), lambda tx: tx.all(self.sql.unlease_canceled, (owner,)), []
        )
        return sorted(r["id"] for r in rows)

    async def canceled_attempts(self, owner: str) -> list[tuple[int, int]]:
        async def write(tx: Tx) -> list[tuple[int, int]]:
            deleted = await tx.all(self.sql.take_cancels, (owner,))
            rows = sorted((int(r["job_id"]), int(r["seq"])) for r in deleted)
            for chunk in chunks(sorted({r[0] for r in rows})):
                cond, args = tx.in_("id", chunk)
                await tx.run(self.sql.unlease_canceled_ids.format(cond=cond), (owner, *args))
            return rows

        return await self._in_tx_if(self.sql.any_cancel_for, (owner,), write, [])

    async def release_jobs(self, owner: str, job_rows: list[int], *, reason: str = "worker shutting down") -> None:
        if not job_rows:
            return

        async def write(tx: Tx) -> bool:
            now = time.time()
            rows: list[Any] = []
            for chunk in chunks(sorted(set(job_rows))):
                cond, args = tx.in_("id", chunk)
                rows += await tx.all(self.sql.release_jobs.format(cond=cond), (now, now, owner, *args))
            rows.sort(key=lambda r: int(r["id"]))
            events: list[EventRow] = [
                (r["execution_id"], r["key"], "job.released", dumps({"reason": reason}), now) for r in rows
            ]
            await self._settle(tx, {r["execution_id"] for r in rows}, now, events)
            await self._append(tx, events)
            if rows:
                await self._notify_in(tx)
            return bool(rows)

        if await self._in_tx(write):
            self._announce()

    async def recover_expired(self) -> list[OrphanedCancel]:
        now = time.time()
        return await self._in_tx_if(self.sql.any_expired, (now, now, now - ORPHAN_CANCEL_S), self._recover_expired, [])

    async def _recover_expired(self, tx: Tx) -> list[OrphanedCancel]:
        now = time.time()
        requeued = await tx.all(self.sql.requeue_expired, (now, now, now))
        requeued.sort(key=lambda r: int(r["id"]))
        events: list[EventRow] = [
            (
                r["execution_id"], r["key"], "job.requeued",
                dumps({"reason": "lease expired", "attempts": r["attempts"]}), now,
            )
            for r in requeued
        ]  # fmt: skip
        await self._settle(tx, {r["execution_id"] for r in requeued}, now, events)
        await self._append(tx, events)
        if requeued:
            await self._notify_in(tx)
        exhausted = await tx.all(self.sql.exhausted_leases, (now,))
        error = "the worker running it stopped responding (lease expired) after {} attempts"
        failed = [
            JobOutcome(job_row=r["id"], owner=r["lease_owner"], status="failed", error=error.format(r["attempts"]))
            for r in exhausted
        ]
        await self._apply_outcomes(tx, failed, now, None, [])
        orphans = sorted(await tx.all(self.sql.orphaned_leases, (now,)), key=lambda r: int(r["id"]))
        # cancellations addressed to a worker that stopped beating before it read them (the job may have been
        # resumed since): their provider work is cancelled here
        addressed = await tx.all(self.sql.orphaned_cancels, (now - ORPHAN_CANCEL_S, now - ORPHAN_CANCEL_S))
        orphans += sorted(addressed, key=lambda r: int(r["id"]))
        return unique_orphans(
            [OrphanedCancel(r["id"], r["provider"], r["model"], r["type"], r["provider_job_id"]) for r in orphans]
        )

    async def prune(self, older_than: float) -> dict[str, int]:
        """Delete executions that ended before `older_than` (unix time), with their jobs, events and webhook
        deliveries. Artifacts stay: their files are content-addressed and may serve newer executions."""

        async def work(tx: Tx) -> dict[str, int]:
            removed = {"executions": 0, "jobs": 0, "events": 0, "webhook_deliveries": 0}
            found = await tx.all(self.sql.finished_before + tx.for_update, (older_than,))
            for chunk in chunks([r["id"] for r in found]):
                for table, column in (("events", "execution_id"), ("jobs", "execution_id"),
                                      ("webhook_deliveries", "execution_id"), ("executions", "id")):  # fmt: skip
                    cond, args = tx.in_(column, chunk)
                    removed[table] += await tx.run(self.sql.prune.format(table=table, cond=cond), args)
            return removed

        return await self._in_tx(work)

    # ------------------------------------------------------------------ workers
    async def register_worker(self, worker_id: str, info: dict[str, Any]) -> None:
        now = time.time()
        await self._in_tx(lambda tx: tx.run(self.sql.register_worker, (worker_id, dumps(info), now, now)))

    async def unregister_worker(self, worker_id: str) -> None:
        await self._in_tx(lambda tx: tx.run(self.sql.unregister_worker, (worker_id,)))

    async def live_workers(self, within_s: float, *, serving: str | None = None) -> int:
        rows = await self._in_read(lambda tx: tx.all(self.sql.live_workers, (time.time() - within_s,)))
        return sum(1 for r in rows if serves(loads(r["info"]), serving))

    async def heartbeat(self, owner: str, lease_s: float) -> set[int]:
        now = time.time()

        async def write(tx: Tx) -> set[int]:
            # Only the leases with less than RENEW_WITHIN of `lease_s` left are written: a worker holding 10,000
            # jobs rewrote 10,000 rows (and their lease index entries) every beat, ~50 ms of SQLite CPU each.
            await tx.run(self.sql.extend_leases, (now + lease_s, owner, now + lease_s * RENEW_WITHIN))
            await tx.run(self.sql.worker_seen, (now, owner))
            return {r["id"] for r in await tx.all(self.sql.held_leases, (owner,))}

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
                row = await tx.one(self.sql.job_by_key, (execution_id, job_key, provider))
            else:
                row = await tx.one(self.sql.job_by_remote_id, (provider, remote_id))
            if row is None:
                return "unknown"
            if not callback_matches(row["provider_job_id"], remote_id):
                return "mismatch"
            if row["status"] != "running":
                return "ignored"
            if outcome is None:  # an outcome already left (by an earlier callback) stays
                await tx.run(self.sql.wake, (time.time(), row["id"]))
            else:
                await tx.run(self.sql.wake_with_outcome, (time.time(), outcome, row["id"]))
            return "woken"

        return await self._in_tx(write)

    async def woken_for(self, owner: str) -> list[int]:
        return [job_row for job_row, _ in await self.woken_outcomes(owner)]

    async def woken_outcomes(self, owner: str) -> list[tuple[int, str | None]]:
        async def take(tx: Tx) -> list[tuple[int, str | None]]:
            # Read, then clear by id (RETURNING would give the cleared outcome): a job woken meanwhile keeps its mark.
            rows = await tx.all(self.sql.woken_rows + tx.for_update, (owner,))
            if rows:
                await tx.many(self.sql.clear_woken, [(r["id"],) for r in rows])
            return [(r["id"], r["woken_outcome"]) for r in rows]

        return await self._in_tx_if(self.sql.any_woken_for, (owner,), take, [])

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
            earlier = await tx.one(self.sql.idempotent_earlier, (ex.tenant, ex.idempotency_key))
            if earlier is not None and earlier["created_at"] > now - IDEMPOTENCY_WINDOW_S:
                if earlier["request_hash"] != ex.request_hash:
                    raise IdempotencyConflict(
                        f"Idempotency-Key {ex.idempotency_key!r} was already used for a different request"
                        f" (execution {earlier['id']}); use a new key for a new request"
                    )
                return str(earlier["id"])
            if earlier is not None:  # older than the window: the key is free again
                await tx.run(self.sql.free_idempotency_key, (earlier["id"],))
        await self._tenant_secret(tx, ex.tenant, now)
        if ex.usage_limit is not None:
            # Concurrent submissions of one tenant count one after the other, so both cannot slip under it.
            await self._lock_in(tx, f"reelflow:usage:{ex.tenant}")
            used = await tx.one(self.sql.month_usage, (ex.tenant, month_start(now)))
            refusal = usage_refusal(ex.tenant, ex.usage_limit, int(used["n"]), float(used["used"]), ex.cost_estimated)
            if refusal is not None:
                raise refusal
        inserted = await tx.one(
            self.sql.insert_execution,
            (
                ex.id, ex.tenant, dumps(ex.plan), dumps(ex.metadata), ex.webhook, ex.on_failure,
                ex.priority, ex.cost_estimated, deadline, ex.retry_of, ex.idempotency_key, ex.request_hash,
                dumps(ex.webhook_events) if ex.webhook else None, now, now,
            ),
        )  # fmt: skip
        if inserted is None:
            # This very submission is stored already: the transaction is being run again because its COMMIT's
            # answer was lost with the connection, and the COMMIT had happened. Read back, do not guess.
            stored = await tx.one(self.sql.stored_request_hash, (ex.id,))
            if stored is None or stored["request_hash"] != ex.request_hash:
                raise Conflict(f"execution id {ex.id!r} is taken")
            return ex.id
        if ex.jobs:
            await tx.many(
                self.sql.insert_jobs,
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
        await self._append(
            tx, [(ex.id, None, "execution.created", dumps({"status": "queued", "jobs": len(ex.jobs)}), now)]
        )
        if any(not j.depends_on for j in ex.jobs):
            await self._notify_in(tx)
        return ex.id

    # ------------------------------------------------------------------ reading
    async def execution_status(self, execution_id: str, tenant: str | None = None) -> str | None:
        row = await self._in_read(lambda tx: tx.one(self.sql.execution_status, (execution_id,)))
        return None if row is None or (tenant is not None and row["tenant"] != tenant) else str(row["status"])

    async def get_execution(self, execution_id: str, tenant: str | None = None) -> ExecutionState | None:
        async def read(tx: Tx) -> dict[str, Any] | None:
            row = await tx.one(self.sql.execution, (execution_id,))
            if row is None or (tenant is not None and row["tenant"] != tenant):
                return None
            jobs = await tx.all(self.sql.execution_jobs, (execution_id,))
            return execution_view(dict(row), [dict(j) for j in jobs])

        view = await self._in_snapshot(read)
        from ..models import ExecutionState

        return None if view is None else ExecutionState.model_validate(view)  # validated here, and only here

    async def list_executions(
        self,
        tenant: str | None = None,
        *,
        status: str | None = None,
        created_after: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        where, args = equal_filters(tenant=tenant, status=status)
        if created_after is not None:
            where.append("created_at > %s")
            args.append(created_after)
        if cursor:
            ts, eid = decode_cursor(cursor)
            where.append("(created_at < %s OR (created_at = %s AND id < %s))")
            args += [ts, ts, eid]
        sql = self.sql.list_executions.format(where=" WHERE " + " AND ".join(where) if where else "")
        rows = await self._in_read(lambda tx: tx.all(sql, (*args, limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
        from ..models import ExecutionPage, ExecutionSummary

        data = [ExecutionSummary.model_validate(execution_summary(r)) for r in rows]
        return ExecutionPage(data=data, next_cursor=nxt)

    async def execution_plan(self, execution_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        row = await self._in_read(lambda tx: tx.one(self.sql.execution_plan, (execution_id,)))
        if row is None or (tenant is not None and row["tenant"] != tenant):
            return None
        return dict(loads(row["plan"]))

    async def job_logs(self, execution_id: str, job_key: str, tenant: str | None = None) -> JobLogs | None:
        async def read(tx: Tx) -> dict[str, Any] | None:
            job = await tx.one(self.sql.job_of_execution, (execution_id, job_key))
            if job is None or (tenant is not None and job["tenant"] != tenant):
                return None
            row = await tx.one(self.sql.job_log, (job["id"],))
            source, hops = job, 0
            while row is None and source["cache_hit"] and hops < CACHE_LOG_HOPS:
                # Served from the cache: the log is the one of the run that made the output (the tenant's own),
                # through the hits that passed it on.
                origin = (loads(source["result"]) or {}).get("cached_from") or {}
                source = await tx.one(self.sql.job_of_execution, (origin.get("execution_id"), origin.get("job")))
                if source is None or source["tenant"] != job["tenant"]:
                    break
                if (found := await tx.one(self.sql.job_log, (source["id"],))) is not None:
                    return log_view(execution_id, dict(job), dict(found), cached_from=origin)
                hops += 1
            return log_view(execution_id, dict(job), None if row is None else dict(row))

        view = await self._in_snapshot(read)
        from ..models import JobLogs

        return None if view is None else JobLogs.model_validate(view)

    async def events(self, execution_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = await self._in_read(lambda tx: tx.all(self.sql.events, (execution_id, after, limit)))
        return [
            Event(r["seq"], r["execution_id"], r["job_key"], r["type"], loads(r["data"]), r["created_at"]) for r in rows
        ]

    async def next_wakeup(self) -> float | None:
        row = await self._in_read(lambda tx: tx.one(self.sql.next_wakeup))
        return None if row is None or row["t"] is None else float(row["t"])

    # ------------------------------------------------------------------ usage and statistics
    async def usage(self, tenant: str, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        since = month_start(now)

        async def read(tx: Tx) -> dict[str, Any]:
            row = await tx.one(self.sql.usage, (tenant, since))
            jobs = await tx.one(self.sql.usage_jobs, (tenant, since))
            running = await tx.one(self.sql.tenant_running, (tenant,))
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
                "jobs": await pairs(self.sql.jobs_by_status),
                "running_by_provider": await pairs(self.sql.running_by_provider),
                "queued_by_provider": await pairs(self.sql.queued_by_provider),
                "active_by_tenant": await pairs(self.sql.active_by_tenant),
            }

        return await self._in_snapshot(read)

    async def stats(self, tenant: str | None, since: float) -> Stats:
        now = time.time()
        t, ta = ("", ()) if tenant is None else (" AND tenant = %s", (tenant,))
        args = {
            "executions": (since, *ta), "execution_seconds": (since, *ta), "jobs": (since, *ta),
            "queue_depth": (now, *ta), "provider_jobs": (since, *ta), "webhooks": (since, since, *ta),
            "spend_month": (month_start(now), *ta), "workers": (now - LIVE_WITHIN_S,),
        }  # fmt: skip
        queries = {name: (getattr(self.sql, f"stats_{name}").format(t=t), a) for name, a in args.items()}
        from ..models import Stats

        return Stats.model_validate(assemble_stats(await self._fetch(queries), tenant, since))

    async def metric_gauges(self) -> dict[str, Any]:
        now = time.time()
        queries = {
            "jobs": (self.sql.jobs_by_status, ()),
            "queue_depth": (self.sql.stats_queue_depth.format(t=""), (now,)),
            "workers": (self.sql.live_workers, (now - LIVE_WITHIN_S,)),
        }
        gauges = assemble_gauges(await self._fetch(queries))
        gauges["circuits"] = [(c.provider, c.model or "", c.state) for c in await self.circuits()]
        return gauges

    async def _fetch(self, queries: dict[str, tuple[str, tuple[Any, ...]]]) -> dict[str, list[Any]]:
        """The rows (as tuples) of named read queries, in one read-only transaction."""

        async def read(tx: Tx) -> dict[str, list[Any]]:
            rows: dict[str, list[Any]] = {}
            for name, (sql, args) in queries.items():
                found = await tx.all(sql, args)
                rows[name] = [tuple(r.values()) if isinstance(r, Mapping) else tuple(r) for r in found]
            return rows

        return await self._in_snapshot(read)

    async def cache_lookup(self, tenant: str, cache_key: str) -> dict[str, Any] | None:
        return (await self.cache_lookup_many([(tenant, cache_key)])).get((tenant, cache_key))

    async def cache_lookup_many(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        wanted = list(dict.fromkeys(items))
        if not wanted:
            return {}
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for pair, r in await self._in_read(lambda tx: self._cache_hits(tx, wanted)):
            result = loads(r["result"]) or {}
            result["cached_from"] = {"execution_id": r["execution_id"], "job": r["key"]}
            found[pair] = dict(result)
        return found

    # ------------------------------------------------------------------ circuits
    async def circuit_steps(
        self, steps: Sequence[CircuitOp], now: float | None = None
    ) -> list[Admission | list[Circuit]]:
        at = time.time() if now is None else now

        async def write(tx: Tx) -> list[Admission | list[Circuit]]:
            rows: dict[str, Circuit] = {}  # each row read once, the steps applied to it in order, written once
            wanted = {k[0]: k for step in steps for k in step.keys}
            for key, provider, model, _ in sorted(wanted.values(), key=lambda k: k[0]):  # one lock order: no deadlock
                rows[key] = await self._circuit_row(tx, key, provider, model, at)
            before = {key: replace(c) for key, c in rows.items()}
            done: list[Admission | list[Circuit]] = []
            for step in steps:
                if isinstance(step, Admit):
                    done.append(_admitted(rows, step, at))
                else:
                    done.append(_recorded(rows, step, at))
            for key, c in rows.items():
                if c != before[key]:
                    await self._circuit_write(tx, c, at)
            return done

        return await self._in_tx(write)

    async def circuit_admit(self, keys: CircuitKeys, owner: str, now: float | None = None) -> Admission:
        (answer,) = await self.circuit_steps([Admit(keys, owner)], now)
        assert isinstance(answer, Admission)
        return answer

    async def circuit_record(
        self, keys: CircuitKeys, ok: bool, held: Sequence[str], now: float | None = None
    ) -> list[Circuit]:
        (circuits,) = await self.circuit_steps([Outcome(keys, ok, held)], now)
        assert isinstance(circuits, list)
        return circuits

    async def circuits(self) -> list[Circuit]:
        return [Circuit.of_row(r) for r in await self._in_read(lambda tx: tx.all(self.sql.circuits))]

    async def _circuit_row(self, tx: Tx, key: str, provider: str, model: str | None, now: float) -> Circuit:
        row = await tx.one(self.sql.circuit + tx.for_update, (key,))
        if row is None:
            await tx.run(self.sql.insert_circuit, (key, provider, model, now))
            row = await tx.one(self.sql.circuit + tx.for_update, (key,))
        return Circuit.of_row(row)

    async def _circuit_write(self, tx: Tx, c: Circuit, now: float) -> None:
        await tx.run(self.sql.update_circuit, (
            c.state, c.failures, c.pending, c.pending_at, c.until_at, c.probe_owner, c.ok_count, c.fail_count,
            c.window_at, dumps(c.failing), now, c.key,
        ))  # fmt: skip

    # ------------------------------------------------------------------ provider pacing
    async def take_tokens(self, provider: str, want: int, per_minute: float | None) -> tuple[int, float]:
        """Up to `want` request tokens of `provider`'s shared bucket, and the seconds until the next one.

        The bucket refills at `per_minute` / 61 a second times the pace factor (halved by each 429, back
        to 1 over about a minute) and holds at most one second's worth, so no 60 s window ever sees more
        than `per_minute` requests across all workers. Without `per_minute` only a 429's hold applies."""

        async def write(tx: Tx) -> tuple[int, float]:
            await tx.run(self.sql.pace_row, (provider, time.time()))
            row = await tx.one(self.sql.pace + tx.for_update, (provider,))
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
            await tx.run(self.sql.take_tokens, (tokens, now, factor, provider))
            return granted, wait

        return await self._in_tx(write)

    async def report_throttle(self, provider: str, retry_after_s: float | None) -> None:
        now = time.time()
        hold = now + (retry_after_s if retry_after_s is not None else 1.0)
        await self._in_tx(lambda tx: tx.run(self.sql.throttle, (provider, now, hold, now)))

    async def provider_paces(self) -> dict[str, tuple[float, float]]:
        rows = await self._in_read(lambda tx: tx.all(self.sql.provider_paces, (time.time() - 60,)))
        return {r["provider"]: (float(r["hold_until"]), float(r["throttled_at"])) for r in rows}

    # ------------------------------------------------------------------ tenants, keys, artifacts
    async def _tenant_secret(self, tx: Tx, tenant: str, now: float) -> str:
        """The tenant's webhook secret; the tenant is created (with a new secret) when missing."""
        row = await tx.one(self.sql.tenant_secret, (tenant,))
        if row is None:  # a concurrent transaction may be creating it too: the first one's secret stands
            await tx.run(self.sql.insert_tenant, (tenant, new_webhook_secret(), now))
            row = await tx.one(self.sql.tenant_secret, (tenant,))
        return str(row["webhook_secret"])

    async def ensure_tenant(self, tenant: str) -> str:
        return await self._in_tx(lambda tx: self._tenant_secret(tx, tenant, time.time()))

    async def add_api_key(self, key: ApiKey) -> None:
        async def write(tx: Tx) -> None:
            await self._tenant_secret(tx, key.tenant, key.created_at)
            await tx.run(self.sql.insert_api_key, (key.id, key.tenant, key.key_hash, key.created_at))

        await self._in_tx(write)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._in_read(lambda tx: tx.one(self.sql.api_key, (key_id,)))
        return ApiKey(**dict(row)) if row else None

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKey]:
        where, args = equal_filters(tenant=tenant)
        sql = self.sql.api_keys.format(where=" WHERE " + " AND ".join(where) if where else "")
        return [ApiKey(**dict(r)) for r in await self._in_read(lambda tx: tx.all(sql, args))]

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self._in_tx(lambda tx: tx.run(self.sql.revoke_api_key, (time.time(), key_id))) > 0

    async def owned_artifacts(self, tenant: str, keys: Collection[str]) -> set[str]:
        return await self._in_read(lambda tx: self._keys_in(tx, self.sql.owned_artifacts, tenant, "key", keys))

    async def adopted(self, provider: str, provider_job_ids: Collection[str]) -> set[str]:
        sql = self.sql.adopted
        return await self._in_read(lambda tx: self._keys_in(tx, sql, provider, "provider_job_id", provider_job_ids))

    @staticmethod
    async def _keys_in(tx: Tx, sql: str, arg: str, column: str, values: Collection[str]) -> set[str]:
        """The `key` column of `sql` (`{cond}`: `column` is one of `values`)."""
        found: set[str] = set()
        for chunk in chunks(sorted(set(values))):
            cond, more = tx.in_(column, chunk)
            found.update(r["key"] for r in await tx.all(sql.format(cond=cond), [arg, *more]))
        return found

    async def owns_artifact(self, tenant: str, key: str) -> bool:
        return await self._in_read(lambda tx: tx.one(self.sql.owns_artifact, (tenant, key))) is not None

    # ------------------------------------------------------------------ webhook deliveries
    async def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[Delivery]:
        if executions is not None and not executions:
            return []
        only = sorted(executions) if executions is not None else None

        async def write(tx: Tx) -> list[Delivery]:
            rows = await self._lease_deliveries(tx, owner, limit, lease_s, time.time(), only)
            return [
                Delivery(
                    id=r["id"], execution_id=r["execution_id"], tenant=r["tenant"], url=r["url"],
                    event_type=r["event_type"], payload=r["payload"], attempts=r["attempts"],
                    created_at=r["created_at"], secret=r["webhook_secret"] or "", retry_from=r["retry_from"],
                )
                for r in rows
            ]  # fmt: skip

        now = time.time()
        return await self._in_tx_if(self.sql.any_delivery_due, (now, now), write, [])

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
                self.sql.delivery_attempted,
                (status, next_attempt_at if next_attempt_at is not None else now, status_code, error,
                 now if delivered else None, delivery_id, owner),
            )  # fmt: skip
            if row is not None:
                await tx.run(
                    self.sql.insert_attempt,
                    (delivery_id, row["attempts"], now, status_code, latency_ms, error, request_body, response_body),
                )

        await self._in_tx(write)

    async def list_deliveries(
        self, tenant: str | None, execution_id: str | None = None, limit: int = 100
    ) -> DeliveryList:
        from ..models import DeliveryList

        return DeliveryList.model_validate(
            {"data": await self._in_snapshot(lambda tx: self._deliveries(tx, tenant, execution_id, limit))}
        )

    async def _deliveries(
        self, tx: Tx, tenant: str | None, execution_id: str | None, limit: int, delivery_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, args = equal_filters(id=delivery_id, tenant=tenant, execution_id=execution_id)
        sql = self.sql.deliveries.format(where=" WHERE " + " AND ".join(where) if where else "")
        rows = await tx.all(sql, (*args, limit))
        attempts: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for chunk in chunks([r["id"] for r in rows]):
            cond, ids = tx.in_("delivery_id", chunk)
            for a in await tx.all(self.sql.delivery_attempts.format(cond=cond), ids):
                attempts[a["delivery_id"]].append(dict(a))
        return [delivery_view(dict(r), attempts[r["id"]]) for r in rows]

    async def redeliver(self, delivery_id: str, tenant: str | None) -> DeliveryAnswer:
        async def write(tx: Tx) -> dict[str, Any]:
            row = await tx.one(self.sql.delivery_tenant + tx.for_update, (delivery_id,))
            if row is None or (tenant is not None and row["tenant"] != tenant):
                raise NotFound(f"webhook delivery {delivery_id!r} not found")
            now = time.time()
            await tx.run(self.sql.redeliver, (now, now, delivery_id))
            found = await self._deliveries(tx, tenant, None, 1, delivery_id)
            return found[0]

        from ..models import Delivery as DeliveryAnswer

        return DeliveryAnswer.model_validate(await self._in_tx(write))


def equal_filters(**columns: Any) -> tuple[list[str], list[Any]]:
    """`column = %s` conditions (and their arguments) for every filter that is set."""
    given = [(name, value) for name, value in columns.items() if value is not None]
    return [f"{name} = %s" for name, _ in given], [value for _, value in given]


def _admitted(rows: dict[str, Circuit], step: Admit, at: float) -> Admission:
    """One admission against the rows as the steps before it left them; refused, it changes none of them."""
    trial = [replace(rows[key]) for key, *_ in step.keys]
    reserved: list[str] = []
    probe = False
    for c, (*_, cfg) in zip(trial, step.keys, strict=True):
        answer = admit(c, step.owner, at, cfg)
        if not answer.allowed:
            return answer  # the reservations taken so far are dropped
        reserved += answer.reserved
        probe = probe or answer.probe
    for c in trial:
        rows[c.key] = c
    return Admission(True, reserved=tuple(reserved), probe=probe)


def _recorded(rows: dict[str, Circuit], step: Outcome, at: float) -> list[Circuit]:
    """One create's outcome counted in its circuits; the circuits as they are after it (copies: the steps
    after it change the rows, not this answer)."""
    out = []
    for key, _, _, cfg in step.keys:
        c = rows[key]
        record(c, step.ok, key in step.held, step.keys[-1][2], at, cfg)
        out.append(replace(c))
    return out
