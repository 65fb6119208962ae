"""The Store protocol: the only way anything touches the database.

Every method is one transaction. Operations that change state also append the matching
events, so the event log is complete by construction. `manager.StoreManager` implements every method once; a
second database is a new driver (a subclass with the steps its dialect takes its own way) and its statements in
`sql/<dialect>.sql`, run against the same test suite.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ..circuits import Admission, Circuit, CircuitKeys, CircuitOp
    from ..models import Delivery as DeliveryAnswer
    from ..models import DeliveryList, ExecutionPage, ExecutionState, JobLogs, Stats

JobOutcomeStatus = Literal["succeeded", "failed", "retry", "canceled"]


@dataclass
class NewJob:
    key: str
    position: int
    type: str
    provider: str | None
    model: str | None
    params: dict[str, Any]
    depends_on: list[str]
    dependents: list[str]
    max_attempts: int = 3
    timeout_s: float | None = None
    start_timeout_s: float | None = None
    cost_estimated: float = 0.0
    cache: bool = True
    alternatives: list[str] = field(default_factory=list)
    """Models tried in turn after `model` (failover)."""
    failover_on: str = "transient"


@dataclass
class UsageLimit:
    """A tenant's monthly limits, checked when an execution is created (None: no limit)."""

    monthly_executions: int | None = None
    monthly_cost_usd: float | None = None


@dataclass
class NewExecution:
    id: str
    plan: dict[str, Any]
    jobs: list[NewJob]
    tenant: str = "default"
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook: str | None = None
    on_failure: str = "stop"
    priority: int = 0
    timeout_s: float | None = None
    cost_estimated: float = 0.0
    retry_of: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_events: list[str] = field(default_factory=list)
    usage_limit: UsageLimit | None = None
    """Checked in the same transaction that creates the execution, so concurrent submissions cannot both
    slip under a limit."""


@dataclass
class ClaimedJob:
    """A job leased to one worker, with everything needed to run it."""

    id: int
    execution_id: str
    key: str
    type: str
    provider: str | None
    model: str | None
    params: dict[str, Any]
    attempts: int
    max_attempts: int
    provider_job_id: str | None
    timeout_s: float | None
    start_timeout_s: float | None
    started_at: float
    execution_deadline: float | None
    dep_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenant: str = "default"
    use_cache: bool = True
    refusal: str | None = None
    """Set when the job must not run (its tenant's monthly budget would be passed): the worker fails it."""
    seq: int = 0
    """This attempt's lease number (every claim increments it, nothing resets it): the attempt's outcome counts
    only while the job's row still carries it, so a cancelled or superseded attempt can never finish the job."""
    intent_at: float | None = None
    """When the job's first unsettled attempt began (this one, when nothing earlier is unsettled)."""
    intent_seq: int | None = None
    """That attempt's lease number: when it is below `seq`, an earlier attempt may have started paid work whose
    answer was lost, and the worker asks the provider before submitting again."""
    cost_estimated: float = 0.0
    failover: dict[str, Any] | None = None
    """A job with alternatives: {"models": [...], "on": "transient" | "any", "passed": [{"model", "reason"}]}."""

    def next_model(self) -> str | None:
        """The model tried after the current one, if any."""
        models = list((self.failover or {}).get("models") or [])
        if self.model not in models:
            return None
        at = models.index(self.model)
        return models[at + 1] if at + 1 < len(models) else None


@dataclass
class JobOutcome:
    """How an attempt ended, as the worker reports it. `retry` re-queues at `retry_at`."""

    job_row: int
    owner: str
    status: JobOutcomeStatus
    result: dict[str, Any] | None = None
    error: str | None = None
    cost_usd: float | None = None
    retry_at: float | None = None
    keep_provider_id: bool = False
    """On `retry`: wait again on the same remote work instead of submitting (and paying) anew."""
    cache_key: str | None = None
    """On `succeeded`: the job's canonical form, so later identical jobs of the tenant reuse the result."""
    cache_hit: bool = False
    """On `succeeded`: the result was reused from an earlier job, nothing was run or paid."""
    seq: int | None = None
    """The attempt's lease number (ClaimedJob.seq): when given, the outcome applies only to that attempt."""
    settled: bool = True
    """On `retry`: False when the attempt ended without knowing whether the provider took paid work (a lost
    answer): the job's intent stays recorded and the next attempt reconciles before paying again."""
    failover_to: str | None = None
    """On `retry`: run the job on this model next, with fresh attempts (failover)."""
    uncount: bool = False
    """On `retry`: this attempt did not count (it waited on an open circuit; nothing was sent)."""
    failover: dict[str, Any] | None = None
    """With `failover_to`: the job's failover state to store (ClaimedJob.failover, the passed model added)."""
    note: JobNote | None = None
    """What the provider told about the attempt that was not written yet (its log, when it started)."""
    ended_at: float | None = None
    """When the attempt ended (the worker's clock, as the stores' times are): the job's `finished_at` when it
    succeeded, failed or was canceled. None: when the outcome is written."""

    def finished_at(self, now: float) -> float:
        """The job's `finished_at` for this outcome written at `now`: its end, never later than `now`."""
        return self.ended_at if self.ended_at is not None and self.ended_at < now else now


@dataclass
class JobNote:
    """What the provider told about one attempt of a job since it was last written: its log (whole, bounded),
    the phase of the work there, and when it left the provider's queue. Written with a progress report or the
    job's outcome, never on its own."""

    attempt: int
    log: str | None = None
    """This attempt's log (its last LOG_LIMIT_CHARS characters); None when unchanged since last written."""
    log_dropped: int = 0
    """Characters of this attempt's log dropped before `log`."""
    phase: str | None = None
    """queued (waiting in the provider's queue) or running; None when not known."""
    submitted_at: float | None = None
    """When the attempt handed the work to the provider (None: it adopted work submitted earlier)."""
    started_at: float | None = None
    """When the provider started the work (None: not yet, or not known)."""
    queued_s: float | None = None
    """Seconds the work waited in the provider's queue before it started."""


@dataclass
class ProgressReport:
    job_row: int
    owner: str
    progress: float
    queue_position: int | None = None
    message: str | None = None
    note: JobNote | None = None
    event: bool = True
    """False when only the note changed (new log lines): no `job.progress` event is written for it."""


@dataclass
class Event:
    seq: int
    execution_id: str
    job_key: str | None
    type: str
    data: dict[str, Any]
    created_at: float


@dataclass
class OrphanedCancel:
    """A canceled job whose remote work may still be running at its provider."""

    job_row: int
    provider: str | None
    model: str | None
    type: str
    provider_job_id: str


@dataclass
class ApiKey:
    id: str
    tenant: str
    key_hash: str
    created_at: float
    revoked_at: float | None = None


@dataclass
class Delivery:
    """One webhook event to deliver, leased to one delivery loop at a time."""

    id: str
    execution_id: str
    tenant: str
    url: str
    event_type: str
    payload: str
    attempts: int
    created_at: float
    secret: str
    retry_from: float | None = None
    """When it was last redelivered by hand: its retries' window counts from then (else from `created_at`)."""


class ExecutionStore(Protocol):
    """Executions and their jobs: submission, reading, cancel and resume, claims, leases, outcomes."""

    url: str

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""

    async def close(self) -> None: ...

    async def create_execution(self, execution: NewExecution) -> str:
        """Insert it (one transaction) and return its id; with an idempotency key seen in the last 24 h
        and the same request hash, return the earlier execution's id instead (IdempotencyConflict if the
        hash differs)."""

    async def execution_status(self, execution_id: str, tenant: str | None = None) -> str | None:
        """Only the execution's status (one row, no jobs), or None when unknown (or another tenant's)."""
        ...

    async def get_execution(self, execution_id: str, tenant: str | None = None) -> ExecutionState | None:
        """The full state the API shows (validated once, here: the API passes it through as it is; artifact
        entries keep their local `path`, which the API leaves out), or None when unknown (or another tenant's)."""

    async def execution_plan(self, execution_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The plan an execution was submitted with (for retry)."""

    async def job_logs(self, execution_id: str, job_key: str, tenant: str | None = None) -> JobLogs | None:
        """One job's provider log as the API shows it; None when the execution (the tenant's) or job is unknown."""
        ...

    async def list_executions(
        self,
        tenant: str | None = None,
        *,
        status: str | None = None,
        created_after: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExecutionPage:
        """Up to `limit` executions (summaries), newest first, and the cursor of the next page (None: the last)."""
        ...

    async def cancel_execution(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        """Cancel it; its state after (NotFound, Conflict when it has ended)."""
        ...

    async def resume_execution(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        """Re-run what did not succeed; its state after (NotFound, Conflict unless it failed or was canceled)."""
        ...

    async def events(self, execution_id: str, after: int = 0, limit: int = 1000) -> list[Event]: ...

    async def register_worker(self, worker_id: str, info: dict[str, Any]) -> None: ...

    async def unregister_worker(self, worker_id: str) -> None: ...

    async def live_workers(self, within_s: float, *, serving: str | None = None) -> int:
        """Workers seen within `within_s`; with `serving`, only those that would run that execution's jobs (a
        wait's embedded worker, scoped to its own execution, serves no other)."""

    async def claim(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[ClaimedJob]:
        """Lease up to `limit` ready jobs to `owner` (only jobs of `executions` when given)."""

    async def canceled_attempts(self, owner: str) -> list[tuple[int, int]]:
        """(job row, lease seq) of attempts `owner` holds that were canceled since it last asked (the worker stops
        them and cancels their provider work). A cancellation survives a resume that re-queued the job."""

    async def adopted(self, provider: str, provider_job_ids: Collection[str]) -> set[str]:
        """Which of these provider ids some job already records as its work (reconciliation skips them)."""

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
        """Append `event` to the job's attempt (when it still holds the lease); with `possible_duplicate_usd`,
        also count a possible duplicate charge of that estimated amount on the job. False when the attempt is
        no longer the job's."""

    async def heartbeat(self, owner: str, lease_s: float) -> set[int]:
        """Extend the leases `owner` holds to `lease_s` from now, those with less than 3/4 of `lease_s` left
        (`manager.RENEW_WITHIN`; the others were extended recently); return the rows of the jobs it still holds."""

    async def wake_job(
        self,
        provider: str,
        remote_id: str,
        execution_id: str | None = None,
        job_key: str | None = None,
        outcome: str | None = None,
    ) -> str:
        """A verified provider callback about `remote_id` arrived: mark the job (named by execution and key,
        or found by its provider id) so its worker looks at once. `outcome` (JSON, at most
        CALLBACK_OUTCOME_MAX_BYTES; a larger one is dropped) is how the work ended as the callback told it: it is
        kept with the mark for the worker (`woken_outcomes`); without one, an outcome left by an earlier callback
        stays. Answers `woken`, `ignored` (the job is not running), `mismatch` (the job waits on other work: nothing
        is kept) or `unknown`."""

    async def woken_for(self, owner: str) -> list[int]:
        """Jobs leased to `owner` that a callback woke since the last call (the marks are cleared)."""

    async def woken_outcomes(self, owner: str) -> list[tuple[int, str | None]]:
        """`woken_for` with each job's kept outcome (None when the callbacks left none); both are cleared."""

    async def canceled_for(self, owner: str) -> list[int]:
        """Jobs leased to `owner` that were canceled meanwhile (the worker stops them)."""

    async def set_provider_ids(self, items: list[tuple[int, str, str]]) -> None:
        """Persist (job row, owner, provider id) before waiting on the provider."""

    async def report_progress(self, reports: list[ProgressReport]) -> None: ...

    async def finish_jobs(
        self, outcomes: list[JobOutcome], provider_ids: list[tuple[int, str, str]] | None = None
    ) -> list[str]:
        """Apply outcomes, promote dependents, settle executions; return keys of jobs made claimable.
        `provider_ids` (as for `set_provider_ids`) are recorded first, in the same transaction."""

    async def finish_and_claim(
        self,
        outcomes: list[JobOutcome],
        provider_ids: list[tuple[int, str, str]] | None,
        owner: str,
        limit: int,
        lease_s: float,
    ) -> tuple[list[str], list[ClaimedJob]]:
        """`finish_jobs`, and in the same transaction lease to `owner` up to `limit` of the jobs it made ready
        (not those of a capped provider or model; within their tenant's cap): the hand-off from a job to its
        dependent. Returns the promoted keys and the jobs claimed."""

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for jobs to become claimable; True as soon as some may have."""

    async def release_jobs(self, owner: str, job_rows: list[int], *, reason: str = "worker shutting down") -> None:
        """Give jobs back un-run (a worker shutting down): queued again, the attempt not counted."""

    async def recover_expired(self) -> list[OrphanedCancel]:
        """Requeue (or fail, when out of attempts) jobs whose lease expired."""

    async def next_wakeup(self) -> float | None:
        """When the earliest queued job becomes claimable (epoch seconds), or None."""

    async def prune(self, older_than: float) -> dict[str, int]:
        """Delete executions that ended before `older_than` with their jobs, events and deliveries; counts."""


class LimitStore(Protocol):
    """Limits and usage: concurrency caps, budgets, the result cache, provider pacing, statistics."""

    def configure_limits(
        self,
        provider_caps: dict[str, int] | None = None,
        model_caps: dict[str, int] | None = None,
        budgets: dict[str, float | None] | None = None,
        default_budget: float | None = None,
        tenant_caps: dict[str, int | None] | None = None,
        default_tenant_cap: int | None = None,
    ) -> None:
        """What `claim` enforces: concurrency caps per provider, per model and per tenant (across every worker;
        `default_tenant_cap` for the tenants `tenant_caps` does not name, None for no cap), and monthly cost
        budgets per tenant (a paid job that would pass one is handed out with a `refusal`)."""

    async def usage(self, tenant: str, now: float | None = None) -> dict[str, Any]:
        """A tenant's calendar month so far: executions, settled cost, reserved cost, cache hits; and its jobs
        running now (`jobs_running`). The `Usage` answer without its `limits` (the engine adds them)."""

    async def queue_stats(self) -> dict[str, Any]:
        """Jobs by status, running and queued by provider, active jobs by tenant."""

    async def stats(self, tenant: str | None, since: float) -> Stats:
        """Operational figures of one tenant (None: every tenant) since `since` (epoch seconds): the answer of
        `GET /v1/stats` (store/stats.py says how each is counted)."""

    async def metric_gauges(self) -> dict[str, Any]:
        """Jobs by status, claimable queue depth, live workers, their slots and slots in use, over every tenant:
        the gauges `/metrics` reads at each scrape."""

    async def cache_lookup(self, tenant: str, cache_key: str) -> dict[str, Any] | None:
        """The result of the tenant's latest succeeded job with this cache key, or None."""

    async def circuit_steps(
        self, steps: Sequence[CircuitOp], now: float | None = None
    ) -> list[Admission | list[Circuit]]:
        """Admissions (`Admit`: may one create go through every circuit of its keys? the reservations it takes
        are given back by its create's `Outcome`) and outcomes (the circuits as they now are), in one
        transaction, each step applied as if alone, in order."""

    async def circuit_admit(self, keys: CircuitKeys, owner: str, now: float | None = None) -> Admission:
        """`circuit_steps` of one `Admit`."""

    async def circuit_record(
        self, keys: CircuitKeys, ok: bool, held: Sequence[str], now: float | None = None
    ) -> list[Circuit]:
        """`circuit_steps` of one `Outcome`: count one create's outcome in each circuit of `keys`."""

    async def circuits(self) -> list[Circuit]:
        """Every circuit the store knows."""

    async def cache_lookup_many(self, items: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """`cache_lookup` for many (tenant, key) pairs in one trip; pairs without a result are left out."""

    async def take_tokens(self, provider: str, want: int, per_minute: float | None) -> tuple[int, float]:
        """Up to `want` request tokens from the provider's shared bucket, and seconds until the next one."""

    async def report_throttle(self, provider: str, retry_after_s: float | None) -> None:
        """A 429 from the provider: hold every worker for Retry-After and halve the shared pace."""

    async def provider_paces(self) -> dict[str, tuple[float, float]]:
        """provider -> (hold until, last 429), as unix times, for providers throttled in the last minute."""


class TenantStore(Protocol):
    """Tenants and their API keys."""

    async def ensure_tenant(self, tenant: str) -> str:
        """Create the tenant if missing; return its webhook secret."""

    async def add_api_key(self, key: ApiKey) -> None: ...

    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    async def list_api_keys(self, tenant: str | None = None) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...


class ArtifactStore(Protocol):
    """Which tenant's executions produced which stored artifacts."""

    async def owns_artifact(self, tenant: str, key: str) -> bool: ...

    async def owned_artifacts(self, tenant: str, keys: Collection[str]) -> set[str]:
        """Those of `keys` that `tenant`'s jobs produced (a job input must be one of them)."""


class DeliveryStore(Protocol):
    """The webhook outbox: deliveries to make, their attempts, redelivery."""

    async def claim_deliveries(
        self, owner: str, limit: int, lease_s: float, *, executions: Collection[str] | None = None
    ) -> list[Delivery]: ...

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
        """Record one attempt (what it sent and what came back, cut short); `delivered`, or retry at
        `next_attempt_at`, or (None) give up."""

    async def list_deliveries(
        self, tenant: str | None, execution_id: str | None = None, limit: int = 100
    ) -> DeliveryList:
        """Deliveries with every attempt, newest first."""
        ...

    async def redeliver(self, delivery_id: str, tenant: str | None) -> DeliveryAnswer:
        """Send a delivery again (same webhook-id); the delivery as it now is (NotFound when unknown)."""
        ...


class Store(ExecutionStore, LimitStore, TenantStore, ArtifactStore, DeliveryStore, Protocol):
    """Durable state of executions, jobs and events: every concern's interface, as one store implements them."""
