"""The rules both stores apply, written once: limits and budgets, the claim's round robin, the hand-off, what a
failure skips, how an execution settles and ends, the events of outcomes, the webhook outbox, the claimed job.

Pure: the stores read the rows these rules need and write what they decide, each in its own dialect
(SQLite on its thread, PostgreSQL on its pool); nothing here touches a database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from ..states import TERMINAL_EXECUTION, execution_progress, execution_status, sources, transitive_dependents
from .base import ClaimedJob, JobOutcome
from .common import dumps, execution_error, execution_result, loads, new_delivery_id, wants_event, webhook_body

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
        paid = {r["tenant"] for r in rows if float(r["cost_estimated"] or 0.0) > 0}
        return sorted(t for t in paid if self._budget(t) is not None)

    def _budget_refusals(self, rows: Sequence[Row], spent_so_far: Mapping[str, float]) -> dict[int, str]:
        """Paid jobs that would take their tenant past its monthly budget: spent this month (actual costs)
        plus the estimates of its jobs already running (`spent_so_far`, this batch included), plus this job's
        estimate. Jobs are checked in order; each one let through counts for the next."""
        refusals: dict[int, str] = {}
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
        intent_seq=r["intent_seq"],
        cost_estimated=float(r["cost_estimated"] or 0.0),
    )


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
