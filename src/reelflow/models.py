"""The typed answers of the HTTP API: an execution's state, its jobs, events, webhook deliveries, usage, stats.

The API declares them as `response_model`s, so its OpenAPI document describes every answer; they need pydantic
only (no FastAPI), so the SDK and the stores can use them too. The stores return them (validated there, once: FastAPI
passes an instance of the route's model through without validating it again), and the client checks every answer
it reads against them. The wire format is the one the stores build
(`store/common.py`): each model declares its fields in the order the stores write them, and a number the store
hands over as an int stays an int (`Number`), so an answer passed through a model is byte for byte the same.
Where the set of keys is open (results, metadata, options) the field is a plain JSON object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .providers.catalog import ModelSpec

Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
"""A JSON number kept as given: an int stays an int (a `float` field would turn 0 into 0.0). The fields of an
execution's state that the stores read from floating point columns, or round as floats, are `float`: they are
validated on every GET, and the union costs about half of that validation on a 200-job state."""
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""ISO 8601 in UTC with a `Z`, millisecond precision (`2026-01-31T12:00:00.000Z`)."""
JsonObject = dict[str, Any]

ExecutionStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
JobStatus = Literal["waiting", "queued", "running", "succeeded", "failed", "canceled", "skipped"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class Answer(BaseModel):
    """Base of the answers: plain data, frozen once built."""

    model_config = ConfigDict(frozen=True)


class Cost(Answer):
    """USD: estimated at submission, and actually charged (settled jobs)."""

    estimated: float | None = Field(description="Estimated at submission (USD)")
    actual: float | None = Field(description="Charged by the providers so far (USD); null before a job settles")


class FailoverStep(Answer):
    """A model a job passed over, and why."""

    model: str = Field(description="The model passed over")
    reason: str = Field(description="Why: its last error after its attempts, or that its circuit was open")


class JobState(Answer):
    """One job of an execution."""

    id: str = Field(description="The job's id in the plan")
    type: str = Field(description="Job type: generate-image, generate-video, merge-video-audio, ...")
    model: str | None = Field(description="The model that ran (with failover, the alternative that ran)")
    models: list[str] | None = Field(
        None, description="With failover: the job's models in the order they are tried; null for a single model"
    )
    failover: list[FailoverStep] = Field(
        default_factory=list, description="The models passed over so far, in order, each with why"
    )
    params: JsonObject = Field(description="The job's parameters as submitted (references such as `$clip` as written)")
    resolved_params: JsonObject | None = Field(
        description="The parameters with every reference replaced by the value it stands for, once every job it "
        "refers to has a result; null until then"
    )
    status: JobStatus = Field(description="waiting (on dependencies), queued, running, then how it ended")
    attempts: int = Field(description="Attempts started so far")
    max_attempts: int = Field(description="Attempts allowed before the job fails")
    progress: float = Field(description="0-100")
    queue_position: int | None = Field(description="Place in the queue while queued")
    depends_on: list[str] = Field(description="Ids of the jobs this one waits for")
    provider_job_id: str | None = Field(description="The provider's id of the remote work")
    result: JsonObject | None = Field(
        description="The job's output: `url` (a link to the artifact), `key`, `content_type` and the fields its "
        "type gives (duration, width, height, words, ...)"
    )
    error: str | None = Field(description="Why the job failed, was canceled or skipped")
    cost: Cost = Field(description="The job's cost (USD)")
    cache_hit: bool = Field(description="The result was reused from an identical earlier job (nothing paid)")
    possible_duplicate_charge: float = Field(
        description="USD of paid retries made where the provider could not say whether it took the earlier one"
    )
    possible_duplicates: int = Field(description="How many such retries")
    queued_at: Timestamp | None = Field(description="When it was last queued")
    started_at: Timestamp | None = Field(description="When its attempt started")
    finished_at: Timestamp | None = Field(description="When it ended")
    provider_phase: Literal["queued", "running"] | None = Field(
        description="While it runs: queued (waiting in the provider's queue) or running (the provider is working on "
        "it), as the provider last said; null when the provider does not tell, or the job is not running"
    )
    provider_submitted_at: Timestamp | None = Field(description="When its attempt handed the work to the provider")
    provider_started_at: Timestamp | None = Field(
        description="When the provider started the work (it left the provider's queue); null until then or unknown"
    )
    provider_queued_s: float | None = Field(
        description="Seconds the work waited in the provider's queue before it started (while it still waits: so "
        "far; 0 when the provider never said it queued the work); null until known"
    )


class JobLogs(Answer):
    """What the provider logged for one job (GET /v1/executions/{id}/jobs/{job_id}/logs)."""

    execution_id: str = Field(description="The execution's id")
    job_id: str = Field(description="The job's id in the plan")
    status: JobStatus = Field(description="The job's status")
    provider: str | None = Field(description="The provider that runs the job")
    provider_job_id: str | None = Field(description="The provider's id of the remote work")
    attempt: int | None = Field(description="The attempt the last lines belong to; null before anything was logged")
    text: str = Field(
        description="The log, oldest line first: the provider's log (Replicate's `logs`, fal's log entries, the "
        "local provider's ffmpeg commands and errors), each later attempt after a `--- attempt N ---` line; "
        "the last 65,536 characters are kept, and when more was logged the text begins with a line saying how "
        "much was left out"
    )
    truncated: bool = Field(description="Earlier characters were left out (see dropped_chars)")
    dropped_chars: int = Field(description="How many characters of the log were left out, from its start")
    updated_at: Timestamp | None = Field(description="When the log was last written; null before anything was")


class ExecutionSummary(Answer):
    """An execution without its jobs (listings)."""

    id: str = Field(description="The execution's id")
    status: ExecutionStatus = Field(description="queued, running, then succeeded, failed or canceled")
    progress: float = Field(description="0-100: finished jobs count whole, running ones by their own progress")
    error: str | None = Field(description="Why it failed: the first failed job and its error")
    cost: Cost = Field(description="The jobs' costs summed (USD)")
    metadata: JsonObject | None = Field(description="The plan's metadata, echoed back")
    retry_of: str | None = Field(description="The execution this one retries (POST .../retry)")
    created_at: Timestamp = Field(description="When it was submitted")
    started_at: Timestamp | None = Field(description="When its first job started")
    finished_at: Timestamp | None = Field(description="When it ended")


class LeafOutput(Answer):
    """The output of a leaf job (one that no other job depends on)."""

    job_id: str = Field(description="The job's id in the plan")
    type: str = Field(description="Its job type")
    url: str | None = Field(description="A link to the artifact")
    content_type: str | None = Field(description="The artifact's media type")
    duration: Number | None = Field(description="Seconds of audio or video; null for images and text")


class ExecutionState(ExecutionSummary):
    """The full state of an execution (GET /v1/executions/{id}, and the `data` of a webhook)."""

    result: JsonObject | None = Field(
        description="The last sink job's result, plus `outputs`: every sink job's result by job id"
    )
    jobs: list[JobState] = Field(description="Every job, in plan order")
    outputs: list[LeafOutput] = Field(
        description="Every leaf job's output that exists so far (a job no other job depends on), in plan order"
    )
    possible_duplicate_charge: float = Field(description="The jobs' possible duplicate charges summed (USD)")
    possible_duplicates: int = Field(description="The jobs' possible duplicates summed")
    webhook: str | None = Field(description="Where the webhook goes")
    options: JsonObject = Field(description="The plan's options (on_failure, cache, priority, timeout_s, ...)")


class ExecutionPage(Answer):
    """One page of executions, newest first."""

    data: list[ExecutionSummary] = Field(description="Up to `limit` executions")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one")


class Links(Answer):
    """Where to follow an execution."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    self_: str = Field(alias="self", description="Its state")
    events: str = Field(description="Its server-sent events")
    cancel: str = Field(description="POST: cancel it")
    resume: str = Field(description="POST: re-run what did not succeed")
    retry: str = Field(description="POST: a new execution of the same plan")


class Accepted(Answer):
    """A submission taken (202): the execution's id, status and links; `Location` names its state."""

    id: str = Field(description="The execution's id")
    status: ExecutionStatus = Field(description="queued; for a replayed Idempotency-Key, the first execution's")
    links: Links = Field(description="Where to follow it")


class Event(Answer):
    """One event of an execution's log: the `data:` of a server-sent event."""

    seq: int = Field(description="The event's number, increasing (also its SSE `id:`, for Last-Event-ID)")
    type: str = Field(description="execution.created, job.running, job.succeeded, execution.succeeded, ...")
    job: str | None = Field(description="The job's id, for job events")
    data: JsonObject = Field(description="The event's details (artifact links in it signed when sent)")
    created_at: Timestamp = Field(description="When it happened (ISO 8601, UTC)")
    created_at_unix: Number = Field(description="The same instant in Unix seconds (what `created_at` held before)")


class WebhookData(ExecutionState):
    """The execution's state as a webhook carries it."""

    event: JsonObject | None = Field(
        default=None, description="For job events and execution.progress: `job` (its id) and the event's details"
    )


class WebhookEvent(Answer):
    """A webhook's body (Standard Webhooks, signed with the tenant's secret)."""

    type: str = Field(description="execution.succeeded, execution.failed, execution.canceled, or job.* on request")
    timestamp: Timestamp = Field(description="When the event happened")
    data: WebhookData = Field(description="The execution's state (its artifact links signed when sent)")
    created_at: Timestamp = Field(description="When the event happened, like every event's `created_at`")


class DeliveryAttempt(Answer):
    """One try to deliver a webhook."""

    attempt: int = Field(description="1, 2, ...")
    at: Timestamp | None = Field(description="When it was made")
    status_code: int | None = Field(description="The destination's answer; null when none came")
    latency_ms: Number | None = Field(description="How long the destination took to answer")
    error: str | None = Field(description="What went wrong (connection refused, timeout, status 500, ...)")
    request_body: str | None = Field(
        description="The body this attempt sent (cut after 16,384 characters); null when nothing was sent"
    )
    response_body: str | None = Field(
        description="The start of the destination's answer (up to 2,000 characters); null when none came"
    )


class Delivery(Answer):
    """A webhook delivery with every attempt."""

    id: str = Field(description="The `webhook-id`: the same on every retry of one event")
    execution_id: str = Field(description="The execution the event is about")
    event_type: str = Field(description="The webhook's `type`: execution.succeeded, job.failed, ...")
    url: str = Field(description="The destination")
    status: DeliveryStatus = Field(description="pending (tries left), delivered, or failed (given up)")
    attempts: list[DeliveryAttempt] = Field(description="Every try, oldest first")
    next_attempt_at: Timestamp | None = Field(description="The next try, while pending")
    created_at: Timestamp = Field(description="When the event was queued for delivery")
    delivered_at: Timestamp | None = Field(description="When a 2xx answer came")


class DeliveryList(Answer):
    """Webhook deliveries, newest first."""

    data: list[Delivery] = Field(description="Up to `limit` deliveries")


class JobEstimate(Answer):
    """One job's estimate."""

    id: str = Field(description="The job's id in the plan")
    cost_usd: Number = Field(description="Estimated cost (USD)")
    seconds: Number = Field(description="Estimated run time")


class Estimate(Answer):
    """What a plan would cost and how long it would take; nothing enqueued."""

    jobs: list[JobEstimate] = Field(description="Each job's estimate, in plan order")
    cost_usd: Number = Field(description="The jobs' costs summed (USD)")
    seconds: Number = Field(description="The critical path: the longest chain of dependencies")


class ModelList(Answer):
    """The model catalog."""

    data: list[ModelSpec] = Field(description="Every model: provider, job types, parameters, price")


class UsageLimits(Answer):
    """A tenant's limits; null where there is none."""

    monthly_executions: int | None = Field(description="Executions allowed per calendar month")
    monthly_cost_usd: Number | None = Field(description="USD allowed per calendar month")
    max_concurrent: int | None = Field(description="Jobs allowed to run at once")


class Usage(Answer):
    """A tenant's use this calendar month (UTC), and its jobs running now."""

    tenant: str = Field(description="The caller's tenant")
    month: str = Field(description="YYYY-MM")
    executions: int = Field(description="Executions submitted this month")
    executions_unfinished: int = Field(description="Of these, not finished yet")
    cost_usd: Number = Field(description="Settled cost of the month's executions")
    reserved_usd: Number = Field(description="Estimated cost held by unfinished executions")
    jobs_succeeded: int = Field(description="Jobs of this month's executions that succeeded")
    cache_hits: int = Field(description="Of these, served from the result cache")
    jobs_running: int = Field(description="Jobs running now, against `limits.max_concurrent`")
    limits: UsageLimits = Field(description="The tenant's limits")


class ExecutionStats(Answer):
    """Executions active now or finished in the window."""

    by_status: dict[str, int] = Field(description="How many in each status")
    success_rate: Number | None = Field(description="succeeded / (succeeded + failed), null without either")
    p50_s: Number | None = Field(description="Median seconds from submission to the end (succeeded and failed)")
    p95_s: Number | None = Field(description="95th percentile of the same")


class JobStats(Answer):
    """Jobs active now or finished in the window."""

    by_status: dict[str, int] = Field(description="How many in each status")


class ProviderStats(Answer):
    """One provider's jobs finished in the window (cache hits left out)."""

    provider: str = Field(description="The provider (`local` for jobs run in the worker)")
    requests: int = Field(description="Jobs that succeeded or failed")
    succeeded: int = Field(description="Jobs that succeeded")
    failed: int = Field(description="Jobs that failed")
    success_rate: Number | None = Field(description="succeeded / requests")
    p50_s: Number | None = Field(description="Median run time (seconds)")


class WebhookStats(Answer):
    """Webhook deliveries: pending now, delivered or given up in the window."""

    delivered: int = Field(description="Delivered in the window")
    failed: int = Field(description="Given up in the window")
    pending: int = Field(description="With tries left")
    success_rate: Number | None = Field(description="delivered / (delivered + failed)")


class WorkerStats(Answer):
    """The workers (every tenant's)."""

    live: int = Field(description="Workers seen in the last minute")
    slots_in_use: int = Field(description="The tenant's jobs running now")


class Stats(Answer):
    """A tenant's operational figures since a time."""

    tenant: str | None = Field(description="The caller's tenant")
    since: Timestamp = Field(description="The window's start (`since`, 24 h back by default)")
    executions: ExecutionStats = Field(description="Executions by status, success rate, time")
    queue_depth: int = Field(description="Jobs queued and due now")
    jobs: JobStats = Field(description="Jobs by status")
    providers: list[ProviderStats] = Field(description="Per provider: success and time, by provider name")
    webhooks: WebhookStats = Field(description="Webhook deliveries")
    spend_usd_month: Number = Field(description="Cost settled by jobs finished this calendar month (USD)")
    workers: WorkerStats = Field(description="Live workers and slots in use")


class CallbackReceipt(Answer):
    """A verified provider callback: what it did to the job."""

    received: bool = Field(description="Always true: the signature verified")
    job: Literal["woken", "ignored", "mismatch", "unknown"] = Field(
        description="woken (its worker looks now), ignored (not running), mismatch or unknown (no such job)"
    )


class Health(Answer):
    """The server answers (`/healthz`), and its database too (`/readyz`)."""

    status: Literal["ok"] = Field(description="ok")


class PlanSchema(Answer):
    """The JSON Schema of a plan; its other keywords pass through as they are."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="allow")

    defs: JsonObject = Field(alias="$defs", description="The schemas of a job, of the options, ...")
    additional_properties: bool = Field(alias="additionalProperties", description="false: no other keys")
    description: str = Field(description="What a plan is")
    properties: JsonObject = Field(description="jobs, webhook, metadata, options")
    required: list[str] = Field(description="The keys a plan must have")
    title: str = Field(description="The schema's title")
    type: Literal["object"] = Field(description="object")


__all__ = [
    "Accepted",
    "CallbackReceipt",
    "Cost",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryList",
    "Estimate",
    "Event",
    "ExecutionPage",
    "ExecutionState",
    "ExecutionStats",
    "ExecutionSummary",
    "Health",
    "JobEstimate",
    "JobState",
    "JobStats",
    "Links",
    "ModelList",
    "PlanSchema",
    "ProviderStats",
    "Stats",
    "Usage",
    "UsageLimits",
    "WebhookData",
    "WebhookEvent",
    "WebhookStats",
    "WorkerStats",
]


class CircuitView(Answer):
    """One circuit, shared by every worker."""

    state: Literal["closed", "open", "half-open"] = Field(
        description="closed: creates go out; open: none does until `open_until`; half-open: one probe is out"
    )
    consecutive_failures: int = Field(description="Transient failures since the last success")
    open_until: Timestamp | None = Field(description="While open: when a probe may go out")
    success_rate: float | None = Field(description="Creates that reached the provider, of those in the last 5 min")
    failures_to_open: int = Field(description="Consecutive transient failures that open it")
    cooldown_s: float = Field(description="How long it stays open before a probe")


class ModelCircuit(Answer):
    """A model's circuit and limits."""

    model: str = Field(description="'<provider>/<model name>'")
    circuit: CircuitView
    max_concurrent: int | None = Field(description="Jobs of this model running at once (null: no cap)")


class ProviderCircuits(Answer):
    """A provider: its circuit, its limits, its models' circuits."""

    provider: str
    circuit: CircuitView
    max_concurrent: int | None = Field(description="Jobs of this provider running at once (null: no cap)")
    requests_per_minute: float | None = Field(description="HTTP requests per minute (null: no limit)")
    models: list[ModelCircuit] = Field(description="Its models that have a circuit or limits of their own")


class ProviderList(Answer):
    """Every provider with limits or a circuit."""

    data: list[ProviderCircuits]

