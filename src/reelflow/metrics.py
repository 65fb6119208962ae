"""Prometheus metrics.

Counters and histograms live in one registry per process (`REGISTRY`) and are recorded where the events
happen: an execution ending (the stores, once the transaction that ended it commits), a job ending (the
worker), each provider HTTP request (`HttpAdapter.send`), each webhook delivery attempt. Every process
exposes its own: the API at `GET /metrics` (its embedded workers included; or on a listener of its own,
REELFLOW_METRICS_ADDR), `reelflow worker --metrics-port` on a port of its own; Prometheus scrapes them all and
sums. REELFLOW_METRICS_TOKEN makes every one of them ask for `Authorization: Bearer <token>`.

Gauges of shared state (jobs by status, queue depth, live workers and their slots) are read from the
database at scrape time by `StoreGauges`, which only the API registers, so they are not repeated by
every worker.

This module imports nothing else of reelflow: every layer may record into it. It does not import
prometheus_client either until something is recorded or exposed (the registry and the families are made on
first use): the stores import it, and `reelflow run` without --wait records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

    CONTENT_TYPE: str
    """The text exposition format (version 0.0.4), which every Prometheus reads (made on first use)."""
    REGISTRY: CollectorRegistry
    """This process's metrics (made on first use; see `_Families`)."""

log = logging.getLogger("reelflow.metrics")

MAX_JOB_COST_USD = 1_000_000.0
"""A job cost above this (or not finite) is a provider's or plugin's error: counting it would make the cost
counter +Inf for good."""
EXECUTION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 2700, 3600)
"""Seconds to tens of minutes (an hour is the default execution timeout)."""
JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
EXECUTION_STATUSES = ("succeeded", "failed", "canceled")
WEBHOOK_OUTCOMES = ("delivered", "failed", "gave_up")


class _Families:
    """The process's registry and its families. Made on first use (`_families()`), not at import: the stores
    import this module, and a command that records nothing (`reelflow run` without --wait) does not pay for
    prometheus_client."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
            disable_created_metrics,
        )

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series next to every counter and histogram: nothing here reads them
        self.REGISTRY = CollectorRegistry()
        """This process's metrics (with the usual process_*, python_* families)."""
        ProcessCollector(registry=self.REGISTRY)
        PlatformCollector(registry=self.REGISTRY)
        GCCollector(registry=self.REGISTRY)
        registry = self.REGISTRY
        self.EXECUTIONS = Counter(
            "reelflow_executions", "Executions that ended, by final status.", ["status"], registry=registry
        )
        self.EXECUTION_SECONDS = Histogram(
            "reelflow_execution_duration_seconds",
            "Time from submission to the end of an execution (every final status).",
            buckets=EXECUTION_BUCKETS,
            registry=registry,
        )
        self.JOB_SECONDS = Histogram(
            "reelflow_job_duration_seconds",
            "Time from a job's first start to its end (succeeded or failed), retries included.",
            ["type", "provider"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.PROVIDER_REQUESTS = Counter(
            "reelflow_provider_requests",
            "HTTP requests to providers, by outcome: ok, throttled (429), rejected (other 4xx), error (5xx or"
            " transport).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.PROVIDER_LATENCY = Histogram(
            "reelflow_provider_latency_seconds",
            "Latency of provider HTTP requests (the request itself, not the wait for a free slot).",
            ["provider"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.PROVIDER_COST = Counter(
            "reelflow_provider_cost_usd",
            "Cost of finished jobs, in US dollars, by provider.",
            ["provider"],
            registry=registry,
        )
        self.POSSIBLE_DUPLICATES = Counter(
            "reelflow_possible_duplicate_charges",
            "Paid retries that went ahead after an attempt whose answer was lost, where the provider offers no way"
            " to ask whether it took the earlier one (each may have been paid twice), by provider.",
            ["provider"],
            registry=registry,
        )
        self.RECONCILED = Counter(
            "reelflow_reconciliations",
            "Lookups at a provider after an attempt whose answer was lost: adopted (the earlier work was found and"
            " waited on, nothing paid again) or none_found (submitted anew), by provider.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.WEBHOOK_DELIVERIES = Counter(
            "reelflow_webhook_deliveries",
            "Webhook delivery attempts: delivered, failed (a retry follows) or gave_up (failed for good).",
            ["outcome"],
            registry=registry,
        )
        self.children: dict[tuple[Any, ...], Any] = {}
        """Labelled children by (family, *label values): `.labels(...)` joins, validates and looks the values
        up under a lock on every call; the worker counts every job it finishes (see `child`)."""
        for status in EXECUTION_STATUSES:  # present at 0 from the start, so rate() sees the first one
            self.EXECUTIONS.labels(status)
        for outcome in WEBHOOK_OUTCOMES:
            self.WEBHOOK_DELIVERIES.labels(outcome)


_FAMILY_NAMES = frozenset(
    {"REGISTRY", "EXECUTIONS", "EXECUTION_SECONDS", "JOB_SECONDS", "PROVIDER_REQUESTS", "PROVIDER_LATENCY",
     "PROVIDER_COST", "POSSIBLE_DUPLICATES", "RECONCILED", "WEBHOOK_DELIVERIES"}
)  # fmt: skip
_FAMILIES: _Families | None = None
_FAMILIES_LOCK = threading.Lock()


def _families() -> _Families:
    """The process's families, made on the first call (from any thread: the SQLite store records in its own)."""
    global _FAMILIES
    if _FAMILIES is None:
        with _FAMILIES_LOCK:
            if _FAMILIES is None:
                _FAMILIES = _Families()
    return _FAMILIES


def child(family: Any, *values: str) -> Any:
    """`family.labels(*values)`, looked up once per process and kept (children are never removed here)."""
    children = _families().children
    key = (family, *values)
    found = children.get(key)
    if found is None:
        found = children[key] = family.labels(*values)
    return found


def __getattr__(name: str) -> Any:
    """`REGISTRY`, the families (`EXECUTIONS`, `JOB_SECONDS`, ...) and `CONTENT_TYPE`, made on first use."""
    if name == "CONTENT_TYPE":
        from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

        return CONTENT_TYPE_PLAIN_0_0_4  # the text exposition format (version 0.0.4), which every Prometheus reads
    if name in _FAMILY_NAMES:
        return getattr(_families(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------- executions
_held: ContextVar[list[tuple[str, float | None]] | None] = ContextVar("reelflow_metrics_held", default=None)


@contextlib.contextmanager
def settling() -> Iterator[None]:
    """Around one database transaction: executions that end inside it are counted when it commits (the block
    exits without an exception), and not at all when it rolls back or is retried."""
    held: list[tuple[str, float | None]] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
    for status, seconds in held:
        _count_execution(status, seconds)


def execution_finished(status: str, seconds: float | None) -> None:
    """An execution ended with `status`, `seconds` after it was submitted (called by the stores)."""
    held = _held.get()
    if held is None:
        _count_execution(status, seconds)
    else:
        held.append((status, seconds))


def _count_execution(status: str, seconds: float | None) -> None:
    child(_families().EXECUTIONS, status).inc()
    if seconds is not None:
        _families().EXECUTION_SECONDS.observe(max(0.0, seconds))


# ---------------------------------------------------------------------------------------- jobs
def job_finished(job_type: str, provider: str | None, status: str, seconds: float, cost_usd: float | None) -> None:
    """A worker finished a job. Only final outcomes (succeeded, failed) are counted, not retries."""
    if status not in ("succeeded", "failed"):
        return
    name = provider or "local"
    families = _families()
    child(families.JOB_SECONDS, job_type, name).observe(max(0.0, seconds))
    if cost_usd is not None and 0.0 < cost_usd <= MAX_JOB_COST_USD:  # NaN, +Inf or an absurd cost: not added
        child(families.PROVIDER_COST, name).inc(cost_usd)


# ---------------------------------------------------------------------------------------- providers
class ProviderCall:
    """One provider request under way: set `status` to the HTTP status code once the answer is in."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: int | None = None


def request_outcome(status: int | None) -> str:
    """ok, throttled (429), rejected (other 4xx), or error (5xx, or no answer at all)."""
    if status is None or status >= 500:
        return "error"
    if status == 429:
        return "throttled"
    if status >= 400:
        return "rejected"
    return "ok"


@contextlib.contextmanager
def provider_call(provider: str) -> Iterator[ProviderCall]:
    """Time one provider HTTP request and count it by outcome; an exception (a transport failure, a
    timeout) counts as `error`. A cancelled request is not counted."""
    call = ProviderCall()
    started = time.perf_counter()
    try:
        yield call
    except Exception:
        _count_request(provider, None, time.perf_counter() - started)
        raise
    _count_request(provider, call.status, time.perf_counter() - started)


def _count_request(provider: str, status: int | None, seconds: float) -> None:
    families = _families()
    child(families.PROVIDER_REQUESTS, provider, request_outcome(status)).inc()
    child(families.PROVIDER_LATENCY, provider).observe(seconds)


# ---------------------------------------------------------------------------------------- webhooks
def possible_duplicate(provider: str) -> None:
    """A paid retry went ahead where the provider could not be asked whether it took the earlier attempt."""
    _families().POSSIBLE_DUPLICATES.labels(provider).inc()


def reconciled(provider: str, adopted: bool) -> None:
    """A provider was asked for work an earlier attempt may have started."""
    _families().RECONCILED.labels(provider, "adopted" if adopted else "none_found").inc()


def webhook_attempt(delivered: bool, *, retrying: bool) -> None:
    """One webhook delivery attempt: delivered, failed with a retry to come, or failed for good."""
    _families().WEBHOOK_DELIVERIES.labels("delivered" if delivered else "failed" if retrying else "gave_up").inc()


# ---------------------------------------------------------------------------------------- store gauges
CIRCUIT_STATE_VALUE = {"closed": 0, "half-open": 1, "open": 2}
"""`reelflow_provider_circuit_state`'s values, by circuit state (reelflow.circuits)."""


class GaugeSource(Protocol):
    """What `StoreGauges` reads (the Store has it)."""

    async def metric_gauges(self) -> dict[str, Any]: ...


class StoreGauges:
    """Gauges of the shared state, from one cheap store query per scrape: `refresh()` reads, `collect()` gives
    what was read. Registered by the API only."""

    def __init__(self, store: GaugeSource) -> None:
        self.store = store
        self.snapshot: dict[str, Any] | None = None
        self._lock = threading.Lock()

    async def refresh(self) -> None:
        """Read the gauges now; on a database error the store families are left out of this scrape."""
        try:
            snapshot: dict[str, Any] | None = await self.store.metric_gauges()
        except Exception as exc:
            log.warning("metrics: reading the store's gauges failed: %s", exc)
            snapshot = None
        with self._lock:
            self.snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            snap = self.snapshot
        if snap is None:
            return []
        jobs = GaugeMetricFamily("reelflow_jobs", "Jobs by status, from the database.", labels=["status"])
        for status, n in sorted(snap["jobs"].items()):
            jobs.add_metric([status], n)
        circuits = GaugeMetricFamily(
            "reelflow_provider_circuit_state",
            "Each provider's and model's circuit: 0 closed, 1 half-open, 2 open (model empty: the provider's).",
            labels=["provider", "model"],
        )
        for provider, model, state in snap.get("circuits", []):
            circuits.add_metric([provider, model], CIRCUIT_STATE_VALUE.get(state, 0))
        return [
            circuits,
            jobs,
            GaugeMetricFamily(
                "reelflow_queue_depth",
                "Queued jobs that may be claimed now (retries waiting out their delay not counted).",
                value=snap["queue_depth"],
            ),
            GaugeMetricFamily("reelflow_workers_live", "Workers seen in the last minute.", value=snap["workers_live"]),
            GaugeMetricFamily(
                "reelflow_worker_slots",
                "Jobs the live workers may hold at once (their concurrency, summed).",
                value=snap["worker_slots"],
            ),
            GaugeMetricFamily(
                "reelflow_worker_slots_in_use", "Worker slots in use: jobs running now.", value=snap["slots_in_use"]
            ),
        ]


def exposition(*registries: CollectorRegistry) -> bytes:
    """This process's metrics, then those of `registries`, in the text format."""
    from prometheus_client import generate_latest

    return b"".join(generate_latest(r) for r in (_families().REGISTRY, *registries))


# ---------------------------------------------------------------------------------------- the listener
def token_matches(authorization: str | None, token: str) -> bool:
    """True when an Authorization header value is `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def listen(host: str, port: int) -> socket.socket:
    """A listening socket for a metrics listener; an OSError saying which address when it is taken."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


Render = Callable[[], Awaitable[bytes]]


async def serve_listener(sock: socket.socket, render: Render, token: str | None = None) -> asyncio.Server:
    """Answer `GET /metrics` on `sock` with `render()`, from this event loop; with `token`, only requests
    that carry `Authorization: Bearer <token>`. A small HTTP/1.1 server: one request per connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, headers, body = await _metrics_answer(reader, render, token)
            head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(head.encode("latin-1") + b"\r\n" + body)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, sock=sock)


async def _metrics_answer(
    reader: asyncio.StreamReader, render: Render, token: str | None
) -> tuple[str, dict[str, str], bytes]:
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")  # at most the reader's limit (64 KiB)
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, _, rest = request_line.partition(" ")
    target = rest.partition(" ")[0]
    fields = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines if ln)}
    text = {"content-type": "text/plain; charset=utf-8"}
    if target.partition("?")[0] != "/metrics":
        return "404 Not Found", text, b"not found: the metrics are at /metrics\n"
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", {**text, "allow": "GET, HEAD"}, b"method not allowed\n"
    if token is not None and not token_matches(fields.get("authorization"), token):
        challenge = {**text, "www-authenticate": 'Bearer realm="reelflow metrics"'}
        return "401 Unauthorized", challenge, b"send Authorization: Bearer <REELFLOW_METRICS_TOKEN>\n"
    body = await render()
    return "200 OK", {"content-type": __getattr__("CONTENT_TYPE")}, b"" if method == "HEAD" else body


__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "StoreGauges",
    "execution_finished",
    "exposition",
    "job_finished",
    "listen",
    "provider_call",
    "request_outcome",
    "serve_listener",
    "settling",
    "token_matches",
    "webhook_attempt",
]
