"""The async worker: claims jobs in batches, runs thousands at once, heartbeats, shuts down cleanly.

One asyncio task per held job; no thread per job. Database writes are batched: provider ids,
outcomes and progress reports queue up and a single flusher writes each kind in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .. import logs, media, metrics
from ..circuits import Admission, Admit, Circuit, CircuitConfig, CircuitOp, Outcome, circuit_keys
from ..config import Settings, get_settings
from ..errors import PlanError, StoreUnavailable
from ..limits import get_limits
from ..media_limits import limits_of
from ..net import MAX_OUTPUT_BYTES, EgressGuard, EgressPolicy, fetch_output, guarded_client
from ..plan import resolve_references
from ..providers.base import (
    CannotReconcile,
    PermanentError,
    ProgressUpdate,
    Provider,
    ProviderError,
    ProviderResult,
    Reconciling,
    Task,
    TransientError,
    is_callback_provider,
)
from ..providers.catalog import Catalog, default_catalog
from ..providers.http import RateGate
from ..providers.registry import Providers, reads_local_files
from ..storage import Storage, artifact_key, open_storage
from ..store.base import ClaimedJob, JobNote, JobOutcome, ProgressReport, Store
from ..store.common import callback_matches, encoder_once, iso
from ..webhooks import WebhookDispatcher
from .coalesce import Coalesced
from .fairslots import FairSlots
from .outputs import judge_then, write_data_url
from .ownership import foreign_inputs, refusal
from .pace import SharedPace, gates_of
from .retry import backoff_delay
from .scratch import ScratchPool

log = logging.getLogger("reelflow.worker")

PROGRESS_FLUSH_S = 0.5
CONTROL_TICK_S = 0.5
RECOVER_EVERY_S = 1.0
FLUSH_MAX = 5000
"""Outcomes written in one transaction at most."""
CLAIM_RETRY_S = 2.0
"""Pause after a claim failed (the database unreachable past the store's own retries)."""
DOWNLOADS_IN_FLIGHT = 16
"""Output downloads under way at once in one worker; the rest wait their turn."""
CLAIM_GROWTH_MAX = 4
"""While each claim comes back full (a deep queue), the next asks for up to this many times `batch_size`:
a claim, the cache lookup of what it claimed and the write of their provider ids are one store trip each
for the whole batch; 10,000 queued jobs took 40 of each, 250 jobs a trip (~1.7 s to start them all on
SQLite). A claim that comes back short brings the batch back to `batch_size`."""


_CANONICAL = encoder_once(json.JSONEncoder(sort_keys=True, default=str))
"""`json.dumps(..., sort_keys=True, default=str)`, its encoder made once (a job's parameters, read from JSON, hold
no cycle)."""


def cache_key(c: ClaimedJob, params: dict[str, Any]) -> str:
    """A job's canonical form: type, provider, model and its resolved parameters (seed included). Inputs
    made by earlier jobs appear as their content-addressed URLs, so equal inputs give equal keys."""
    canonical = {"type": c.type, "provider": c.provider, "model": c.model, "params": params}
    return hashlib.sha256(_CANONICAL(canonical).encode()).hexdigest()


def tune_gc() -> None:
    """For a process that is mainly a worker: fewer, cheaper garbage collections.

    Thousands of short-lived task objects per second trigger the cyclic collector often; its
    full passes over start-up objects showed up as 20–40 ms stalls in the hand-off latency.
    Start-up objects are frozen out of collection and the young generation is made larger. No collection
    first: it found ~20 objects to free and cost 10–40 ms of a worker's start; they stay, frozen.
    """
    gc.freeze()
    gc.set_threshold(10_000, 20, 50)
    gc.enable()  # the command line keeps it off during its start-up


class JobTimeout(Exception):
    """A job's own deadline (timeout_s, start_timeout_s, or the execution's) passed."""


@dataclass
class _Gate:
    """A create let through the job's circuits: their keys and the reservations taken."""

    keys: list[tuple[str, str, str | None, CircuitConfig]]
    reserved: list[str]
    probe: bool
    """The create is a half-open circuit's probe: its failure reopens the circuit and costs the job no attempt."""


_NO_GATE = _Gate([], [], False)
"""The create of a job without circuits (every unpaid provider): one shared, never changed, instead of one held
by each waiting job's frame."""


class _ProbeFailed(Exception):
    """A circuit's probe failed with a transient error: the circuit is open again."""

    def __init__(self, message: str, settled: bool) -> None:
        super().__init__(message)
        self.settled = settled
        """As TransientError: False when the request may have started paid work (the next attempt asks)."""


@dataclass(eq=False, slots=True)
class _Held:
    """One attempt this worker runs (10,000 may wait at once: no instance dict)."""

    claim: ClaimedJob
    task: asyncio.Task[None]
    worker: Worker
    provider: Provider | None = None
    provider_job_id: str | None = None
    stop_reason: str | None = None  # canceled (its provider work is cancelled too) | lost | shutdown
    work: Task | None = None
    # what the provider told, kept for the next progress write or the outcome (see `Worker._note`)
    percent: float = 0.0
    queue_position: int | None = None
    submitted_at: float | None = None
    """When this attempt handed the work to its provider (None: it adopted work submitted earlier)."""
    phase: str | None = None
    phase_seen_queued: bool = False
    started_at: float | None = None
    queued_s: float | None = None
    phase_sent: str | None = None
    start_sent: bool = False
    log_sent: int = 0

    # The attempt's callbacks, as bound methods of this object: ~80 bytes each for a waiting job, where a
    # closure (or a partial of a Worker method) was 200-600.
    def report(self, update: ProgressUpdate) -> None:
        """The `report` the provider's `wait` calls with its progress."""
        self.worker._reported(self, update)

    def log_changed(self) -> None:
        """The provider's log of this attempt grew (ProviderLog.on_change)."""
        self.worker._log_changed(self)

    async def possible_duplicate(self, why: str) -> None:
        """Task.possible_duplicate: a paid call about to go out may repeat one an earlier attempt made."""
        c = self.claim
        await self.worker._possible_duplicate(c, c.provider or (self.provider.name if self.provider else ""), why)


def _outcome_of(kept: str | None) -> dict[str, Any] | None:
    """A callback's outcome as `wake_job` kept it (JSON); None when there is none or it does not read as an
    object (the adapter then asks the provider)."""
    if kept is None:
        return None
    try:
        outcome = json.loads(kept)
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) else None


class Worker:
    """Runs jobs from a Store until stopped. Safe to run many of these against one database."""

    def __init__(
        self,
        store: Store,
        *,
        settings: Settings | None = None,
        providers: Providers | None = None,
        storage: Storage | None = None,
        concurrency: int = 1000,
        batch_size: int = 250,
        worker_id: str | None = None,
        drain_timeout_s: float = 30.0,
        deliver_webhooks: bool = True,
        egress: EgressGuard | None = None,
        executions: Collection[str] | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.store = store
        self._catalog = catalog or (providers.catalog if providers is not None else None)
        self.executions = set(executions) if executions is not None else None
        """Claim only these executions' jobs (the embedded worker of a wait); None: the whole queue."""
        self.settings = settings or get_settings()
        self.providers = providers or Providers(catalog=catalog)
        self.storage = storage or open_storage(self.settings.storage_url, self.settings.public_url)
        self.concurrency = max(1, concurrency)
        self.batch_size = max(1, batch_size)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_s = self.settings.lease_seconds
        self.drain_timeout_s = drain_timeout_s
        if self.settings.storage_url.startswith("file://"):
            self.workroot = Path(self.settings.storage_url.removeprefix("file://")).parent / "work"
        else:  # object storage: scratch space is this machine's temporary folder
            self.workroot = Path(tempfile.gettempdir()) / "reelflow-work"
        own = f"{re.sub(r'[^A-Za-z0-9._-]', '_', self.id)}.{uuid.uuid4().hex[:8]}"  # unique even if ids clash
        self._scratch = ScratchPool(self.workroot / own)
        """The attempts' scratch folders, reused after attempts that ended well; removed when run() ends."""
        self.held: dict[int, _Held] = {}
        self._rows: dict[tuple[str, str], int] = {}
        """The held jobs' rows by (execution id, job key), while callbacks are on (a callback names its job so,
        see `holding`); none otherwise (10,000 `sim` jobs would pay ~1 MB for nothing)."""
        self._superseded: set[_Held] = set()
        """Attempts whose job this worker claimed again (a cancel then a resume) while they were still ending:
        they are stopped, their outcomes no longer count, and the drain waits for them too."""
        self.started = 0
        self.finished = 0
        self._stopping = False
        self._wake = asyncio.Event()
        self._flush = asyncio.Event()
        self._outcomes: list[JobOutcome] = []
        self._claims_under_way = 0
        self._claims_begun = 0
        """Claims (the claim loop's and the flusher's hand-offs) in flight, and how many began: a heartbeat that saw
        none in flight and none begin knows every lease this worker holds (see `_hand_back_unknown`)."""
        self._reserved = 0
        """Slots set aside for dependents the flusher may claim in its transaction (see `_flush_all`)."""
        self._slot_wanted = False
        """The claim loop waits for a slot (`_wait_for_slot`): the flusher wakes it when it gives back the slots it
        set aside."""
        self._pids: list[tuple[int, str, str]] = []
        self._circuits: Coalesced[CircuitOp, Admission | list[Circuit]] = Coalesced(
            lambda steps: self.store.circuit_steps(steps)  # the store as it is then (tests make workers without one)
        )
        """The creates' admissions and outcomes, many to a transaction (see engine/coalesce.py)."""
        self._progress: dict[int, ProgressReport] = {}
        self._last_progress_flush = 0.0
        self._http: httpx.AsyncClient | None = None
        self._egress = egress
        self._download_slots = FairSlots(DOWNLOADS_IN_FLIGHT)
        """Shared fairly between tenants: a freed slot goes to the waiting tenant holding the fewest."""
        self._probes = media.ProbeBatcher()
        """Outputs finishing together share ffmpeg runs to be probed (1,000 lone probes cost ~10 CPU-s)."""
        self.pace = SharedPace(store, {})
        self.gates: dict[str, RateGate] = {}
        self._lookups: Coalesced[tuple[str, str], dict[str, Any] | None] = Coalesced(self._lookup_many)
        """Result-cache lookups of jobs starting together, one store trip (see engine/coalesce.py)."""
        self.webhooks = (
            WebhookDispatcher(store, settings=self.settings, owner=self.id, executions=self.executions)
            if deliver_webhooks
            else None
        )

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop claiming; held jobs finish (or are released after the drain timeout)."""
        if not self._stopping:
            log.info("worker %s stopping: no new claims, draining %d jobs", self.id, len(self.held))
        self._stopping = True
        self._wake.set()

    def notify(self) -> None:
        """New work may be claimable (an in-process submission): look now instead of at the next poll."""
        self._wake.set()

    @property
    def catalog(self) -> Catalog:
        """The models whose parameters each job is checked against once its references are resolved."""
        return self._catalog if self._catalog is not None else default_catalog()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)

    async def run(self, until: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Claim and run jobs until `stop()` (or SIGTERM), or until `until()` turns true."""
        await self.store.register_worker(
            self.id,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "concurrency": self.concurrency,
                **({"executions": sorted(self.executions)} if self.executions is not None else {}),
            },
        )
        self._apply_limits()
        self._share_egress()
        background = [
            asyncio.create_task(self._flusher(), name="reelflow-flusher"),
            asyncio.create_task(self._control(), name="reelflow-control"),
        ]
        webhooks = asyncio.create_task(self.webhooks.run(), name="reelflow-webhooks") if self.webhooks else None
        try:
            with limits_of(self.settings):  # ffmpeg caps of this worker's settings, in every job task started here
                await self._claim_loop(until)
                await self._drain()
        finally:
            self._flush.set()
            for t in background:
                t.cancel()
            for t in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            try:
                await self._flush_all()
            finally:
                await self._stop_webhooks(webhooks)
            with contextlib.suppress(Exception):
                await self.store.unregister_worker(self.id)
            if self._http is not None:
                await self._http.aclose()
            self._scratch.close()

    def _apply_limits(self) -> None:
        """Hand the limits file (and the built-in defaults) to the store's claim and to the providers' gates."""
        limits = get_limits(self.settings)
        caps_p, caps_m = limits.concurrency_caps()
        budgets = {t: lim.monthly_cost_usd for t, lim in limits.tenants.items() if t != "default"}
        caps_t, default_cap_t = limits.tenant_caps()
        self.store.configure_limits(
            caps_p, caps_m, budgets, limits.tenant("default").monthly_cost_usd, caps_t, default_cap_t
        )
        self.pace = SharedPace(self.store, limits.rpm(), limits.cpm())
        self.gates = gates_of(self.providers)
        for name, gate in self.gates.items():
            self.pace.attach(name, gate)

    async def _stop_webhooks(self, task: asyncio.Task[None] | None) -> None:
        """Stop the webhook dispatcher after the drain (so drained jobs' final events go out too), once the
        attempts it has under way end."""
        if task is None or self.webhooks is None:
            return
        self.webhooks.stop()
        try:
            await task
        except Exception:
            log.exception("worker %s: webhook dispatcher failed", self.id)

    async def _claim_loop(self, until: Callable[[], Awaitable[bool]] | None) -> None:
        poll = self.settings.poll_interval_s
        next_recover = 0.0
        next_until = 0.0
        growth = 1  # see CLAIM_GROWTH_MAX
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            if now >= next_recover:
                next_recover = now + RECOVER_EVERY_S
                try:
                    await self._recover()
                except Exception:
                    log.exception("worker %s: recovering expired leases failed; trying again later", self.id)
            want = min(self._free_slots(), self.batch_size * growth)
            try:
                self._claims_under_way += 1
                self._claims_begun += 1
                try:
                    claimed = (
                        await self.store.claim(self.id, want, self.lease_s, executions=self.executions)
                        if want > 0
                        else []
                    )
                finally:
                    self._claims_under_way -= 1
            except Exception:  # the database is away for longer than the store retries: keep trying, slowly
                log.exception("worker %s: claiming failed; trying again in %.0f s", self.id, CLAIM_RETRY_S)
                await asyncio.sleep(CLAIM_RETRY_S)
                continue
            for c in claimed:
                self._start(c)
            if until is not None and time.monotonic() >= next_until:
                next_until = time.monotonic() + 0.1
                if await until():
                    return
            if claimed and len(claimed) == want:
                growth = min(growth * 2, CLAIM_GROWTH_MAX)
                await asyncio.sleep(0)  # let the new tasks start before claiming more
                continue
            growth = 1
            if want == 0 and until is None:
                await self._wait_for_slot(next_recover - time.monotonic())
            else:
                await self._idle(poll)

    async def _wait_for_slot(self, timeout: float) -> None:
        """Every slot is taken: nothing the store could say would let this worker claim, so it is not asked (10,000
        held jobs took 300 looks over 30 s). Wait for a local wake-up (a job ended, a flush gave back the slots it
        set aside, `notify`, `stop`) or the next lease recovery, whichever comes first."""
        self._slot_wanted = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, timeout))
        finally:
            self._slot_wanted = False

    async def _idle(self, poll: float) -> None:
        """Wait for work: a local wake-up (an in-process submission, a finished job), the store's notification
        that jobs became claimable (`wait_for_work`: PostgreSQL's LISTEN, SQLite's writes in this process), or the
        poll interval, whichever comes first."""
        local = asyncio.ensure_future(self._wake.wait())
        remote = asyncio.ensure_future(self.store.wait_for_work(poll))
        try:
            await asyncio.wait({local, remote}, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (local, remote):
                if not fut.done():
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fut

    async def _drain(self) -> None:
        tasks = [h.task for h in [*self.held.values(), *self._superseded]]
        if tasks:
            await asyncio.wait(tasks, timeout=self.drain_timeout_s)
        leftover = list(self.held.values())
        for h in [*leftover, *self._superseded]:
            h.stop_reason = h.stop_reason or "shutdown"
            h.task.cancel()
        if leftover or self._superseded:
            await asyncio.wait([h.task for h in [*leftover, *self._superseded]])
        if leftover:
            # Provider ids first: a released job keeps the remote work it started, and whichever worker takes
            # it next waits on that work instead of paying for it again.
            await self._flush_provider_ids()
            await self.store.release_jobs(self.id, [h.claim.id for h in leftover])
            log.info("worker %s released %d unfinished jobs", self.id, len(leftover))

    async def _recover(self) -> None:
        for orphan in await self.store.recover_expired():
            provider = self.providers.get(orphan.provider)
            if provider is None:
                continue
            task = Task("", "", orphan.type, orphan.model, {}, 0, self.workroot)
            with contextlib.suppress(Exception):
                await provider.cancel(task, orphan.provider_job_id)

    async def _control(self) -> None:
        """Heartbeats (extend leases, notice lost ones) and cancellations requested elsewhere."""
        next_beat = 0.0
        beat_every = max(0.05, min(self.lease_s / 4, 15.0))
        while True:
            await asyncio.sleep(min(CONTROL_TICK_S, beat_every))
            try:
                for job_row, seq in await self.store.canceled_attempts(self.id):
                    self._interrupt(job_row, "canceled", seq)
                for job_row, outcome in await self.store.woken_outcomes(self.id):
                    self.wake(job_row, _outcome_of(outcome))
                if self.gates:
                    await self.pace.refresh(self.gates)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + beat_every
                    before = set(self.held)
                    quiet = self._claims_under_way == 0
                    begun = self._claims_begun
                    leased = await self.store.heartbeat(self.id, self.lease_s)
                    if quiet and self._claims_under_way == 0 and begun == self._claims_begun:
                        await self._hand_back_unknown(leased)
                    lost = before - leased
                    if lost:  # canceled since the look above, or taken over by another worker
                        for job_row, seq in await self.store.canceled_attempts(self.id):
                            self._interrupt(job_row, "canceled", seq)
                        for job_row in lost:
                            self._interrupt(job_row, "lost")
                if self._progress and time.monotonic() - self._last_progress_flush >= PROGRESS_FLUSH_S:
                    self._flush.set()
            except Exception:  # the database may be briefly unavailable; try again next tick
                log.exception("worker %s: control loop error", self.id)

    async def _hand_back_unknown(self, leased: set[int]) -> None:
        """Jobs the database says this worker holds, that it never heard of: a claim that committed while its
        connection died (the database restarting), so its answer was lost. They go back to the queue at once,
        without costing an attempt, instead of sitting out their lease and coming back as a second attempt."""
        # Known: jobs running here, attempts ending here, and jobs whose outcome waits for the flusher (still
        # `running` in the database until it writes; a flush in flight makes the heartbeat skip this altogether).
        known = set(self.held) | {h.claim.id for h in self._superseded} | {o.job_row for o in self._outcomes}
        unknown = sorted(leased - known)
        if not unknown:
            return
        log.warning(
            "worker %s: %d jobs are leased to it by a claim whose answer was lost; handing them back", self.id,
            len(unknown),
        )  # fmt: skip
        await self.store.release_jobs(self.id, unknown, reason="leased by a claim whose answer was lost")

    def _free_slots(self) -> int:
        """Jobs this worker may still take on: its concurrency, less those held and those being handed off."""
        return max(0, self.concurrency - len(self.held) - self._reserved)

    def wake(self, job_row: int, outcome: dict[str, Any] | None = None) -> None:
        """A provider called back about this job: its adapter looks at the work now, or, given the `outcome` the
        callback told (see `Task.callback_outcome`), finishes from it when it is about the work it waits on."""
        held = self.held.get(job_row)
        if held is not None and held.work is not None:
            if outcome is not None:
                held.work.callback_outcome = outcome
            held.work.wake.set()

    def holding(self, remote_id: str, execution_id: str | None = None, job_key: str | None = None) -> int | None:
        """The id of the job a callback names (by execution and key, else by provider id) when this worker holds
        it; None otherwise. By execution and key it is one look-up (the walk over 10,000 held jobs was ~0.5 ms a
        callback)."""
        if execution_id is not None:
            if job_key is None:
                return None
            job_row = self._rows.get((execution_id, job_key))
            if job_row is not None and job_row in self.held:
                return job_row
            if len(self._rows) >= len(self.held):  # every held job is in `_rows`: it is not held here
                return None
        for job_row, held in self.held.items():
            c = held.claim
            if (execution_id is not None and c.execution_id == execution_id and c.key == job_key) or (
                execution_id is None and held.provider_job_id == remote_id
            ):
                return job_row
        return None

    def callback_target(
        self, provider: str, remote_id: str, execution_id: str | None = None, job_key: str | None = None
    ) -> tuple[int | None, bool]:
        """The job a verified callback names, when this worker holds it (else None), and whether it waits here on
        the work the callback is about: it runs on `provider` and waits on `remote_id` (or on work whose id it does
        not know yet), as `wake_job` would check in the database."""
        job_row = self.holding(remote_id, execution_id, job_key)
        if job_row is None:
            return None, False
        held = self.held[job_row]
        waits = (
            held.work is not None
            and held.stop_reason is None
            and held.claim.provider == provider
            and callback_matches(held.provider_job_id, remote_id)
        )
        return job_row, waits

    def _interrupt(self, job_row: int, reason: str, seq: int | None = None) -> None:
        """Stop the attempt of `job_row` this worker holds (only the attempt numbered `seq`, when given: a
        cancellation of an attempt that was since superseded must not stop its successor)."""
        candidates = [self.held.get(job_row), *(h for h in self._superseded if h.claim.id == job_row)]
        for held in candidates:
            if held is None or (seq is not None and held.claim.seq != seq):
                continue
            if held.stop_reason is None and not held.task.done():
                held.stop_reason = reason
                held.task.cancel()

    # ------------------------------------------------------------------ batching
    async def _flusher(self) -> None:
        while True:
            await self._flush.wait()
            self._flush.clear()
            try:
                await self._flush_all()
            except Exception:
                log.exception("worker %s: flush failed; will retry", self.id)
                await asyncio.sleep(0.5)
                self._flush.set()

    async def _flush_provider_ids(self) -> None:
        """Write the provider ids recorded since the last flush (put back, for the next flush, when it fails)."""
        if not self._pids:
            return
        pids, self._pids = self._pids, []
        try:
            await self.store.set_provider_ids(pids)
        except BaseException:
            self._pids[:0] = pids
            raise

    async def _flush_all(self) -> None:
        if not self._outcomes:
            await self._flush_provider_ids()
        while self._outcomes:
            # At most FLUSH_MAX outcomes per transaction: a longer one holds back every dependent it releases.
            # Provider ids still unwritten go in the same transaction, first: a job.submitted event precedes
            # the job's end (quick jobs finish before their id was ever flushed on its own).
            outcomes, self._outcomes = self._outcomes[:FLUSH_MAX], self._outcomes[FLUSH_MAX:]
            pids, self._pids = self._pids, []
            room = 0 if self._stopping else self._free_slots()
            self._reserved += room  # the claim loop leaves these slots to the dependents claimed here
            self._claims_under_way += 1
            self._claims_begun += 1
            try:
                if room > 0:
                    promoted, claimed = await self.store.finish_and_claim(
                        outcomes, pids or None, self.id, room, self.lease_s
                    )
                    for c in claimed:
                        self._start(c)
                    if len(promoted) <= len(claimed):  # none left queued for the claim loop
                        promoted = []
                else:
                    promoted = await self.store.finish_jobs(outcomes, provider_ids=pids or None)
            except BaseException:
                self._outcomes[:0] = outcomes
                self._pids[:0] = pids
                raise
            finally:
                self._reserved -= room
                self._claims_under_way -= 1
            if promoted or (room > 0 and self._slot_wanted):
                self._wake.set()
            if self.webhooks is not None:  # finished jobs may have queued webhooks
                self.webhooks.notify()
        if self._progress and time.monotonic() - self._last_progress_flush >= PROGRESS_FLUSH_S:
            reports = [r for r in self._progress.values() if r.job_row in self.held]
            self._progress.clear()
            self._last_progress_flush = time.monotonic()
            for r in reports:
                r.note = self._note(self.held[r.job_row])
            if reports:
                try:
                    await self.store.report_progress(reports)
                except BaseException:  # what the notes carried goes with the next write
                    for r in reports:
                        if r.note is not None and (held := self.held.get(r.job_row)) is not None:
                            held.phase_sent, held.start_sent, held.log_sent = None, False, -1
                    raise

    def _persist_provider_id(self, c: ClaimedJob, pid: str) -> None:
        """Record the provider's id of the job with the next flush, without waiting for it: waiting would not
        narrow the window in which a crash forgets the id (the submission has happened either way), and it
        would cost every job a round trip before it can finish. The flush writes ids before outcomes."""
        self._pids.append((c.id, self.id, pid))
        self._flush.set()

    # ------------------------------------------------------------------ one job
    def _start(self, c: ClaimedJob) -> None:
        earlier = self.held.pop(c.id, None)
        if earlier is not None:  # canceled and resumed while its attempt here was still ending: that attempt
            # is over (its outcome would no longer count); its remote work is cancelled unless this one adopts it
            self._superseded.add(earlier)
            self._pids = [p for p in self._pids if p[0] != c.id]
            self._progress.pop(c.id, None)
            if not earlier.task.done():
                adopts = earlier.provider_job_id is not None and earlier.provider_job_id == c.provider_job_id
                earlier.stop_reason = "lost" if adopts else "canceled"
                earlier.task.cancel()
        task = asyncio.create_task(self._run_job(c), name=f"job-{c.execution_id}-{c.key}")
        self.held[c.id] = _Held(claim=c, task=task, worker=self)
        if self.settings.callbacks_enabled:
            self._rows[(c.execution_id, c.key)] = c.id
        self.started += 1

    async def _run_job(self, c: ClaimedJob) -> None:
        logs.bind(execution_id=c.execution_id, job_key=c.key)  # this task's log lines (and its subtasks')
        held = self.held[c.id]
        outcome: JobOutcome | None = None
        try:
            outcome = await self._attempt(c, held)
        except asyncio.CancelledError:
            if held.stop_reason == "canceled" and held.provider and held.provider_job_id:
                await self._cancel_remote(c, held)
            elif held.stop_reason is None:  # cancelled from outside (event loop closing)
                raise
        except Exception as exc:  # a bug of ours: never lose the job, retry it like a transient failure
            log.exception("job %s/%s: unexpected error", c.execution_id, c.key)
            outcome = self._transient_outcome(c, f"internal error: {type(exc).__name__}: {exc}", None, settled=False)
        finally:
            if self.held.get(c.id) is held:
                del self.held[c.id]
                self._rows.pop((c.execution_id, c.key), None)
            self._superseded.discard(held)
            self.finished += 1
            self._wake.set()
        if held.stop_reason is not None:  # stopped from here: whatever it produced no longer counts
            outcome = None
        if outcome is not None:
            work = held.work
            if work is not None and work.provider_queued_s is not None:  # it started, then failed: when, still
                self._provider_started(held, work, time.time())
            outcome.note = self._note(held, final=True)
            outcome.ended_at = now = time.time()  # the job's end, not the later write of its outcome
            self._log_outcome(c, outcome)
            metrics.job_finished(c.type, c.provider, outcome.status, now - c.started_at, outcome.cost_usd)
            self._outcomes.append(outcome)
            self._flush.set()

    @staticmethod
    def _note(held: _Held, *, final: bool = False) -> JobNote | None:
        """What the provider told about the attempt that was not written yet (phase, start, log), marked as
        written; None when nothing new. The outcome's note (`final`) leaves out the phase: it no longer shows."""
        task = held.work
        log_new = task is not None and task.log.version != held.log_sent
        phase_new = held.phase != held.phase_sent and not final
        start_new = held.started_at is not None and not held.start_sent
        if not (log_new or phase_new or start_new):
            return None
        held.phase_sent, held.start_sent = held.phase, held.started_at is not None
        if task is not None:
            held.log_sent = task.log.version
        return JobNote(
            attempt=held.claim.attempts,
            log=task.log.text if log_new and task is not None else None,
            log_dropped=task.log.dropped if task is not None else 0,
            phase=held.phase,
            submitted_at=held.submitted_at,
            started_at=held.started_at,
            queued_s=held.queued_s,
        )

    def _log_changed(self, held: _Held) -> None:
        """The provider's log of a held job grew: written with the next progress write (at most one every
        PROGRESS_FLUSH_S), without a `job.progress` event when nothing else changed."""
        job_row = held.claim.id
        if self.held.get(job_row) is held and job_row not in self._progress:
            self._progress[job_row] = ProgressReport(
                job_row, self.id, held.percent, held.queue_position, None, event=False
            )

    @staticmethod
    def _provider_started(held: _Held, task: Task, now: float) -> None:
        """The work began at the provider: when (by the provider's own figure of its queue time when given)."""
        if held.started_at is not None:
            return
        queued = task.provider_queued_s
        if queued is None and held.phase_seen_queued and held.submitted_at is not None:
            queued = max(0.0, now - held.submitted_at)
        elif queued is None and held.submitted_at is not None:  # never said it was queued: it started at once
            queued = 0.0
        held.queued_s = queued
        held.started_at = held.submitted_at + queued if held.submitted_at is not None and queued is not None else now

    @staticmethod
    def _log_outcome(c: ClaimedJob, outcome: JobOutcome) -> None:
        if outcome.status == "retry":
            delay = max(0.0, (outcome.retry_at or time.time()) - time.time())
            log.warning(
                "job %s/%s: attempt %d of %d failed (%s); retrying in %.2f s",
                c.execution_id, c.key, c.attempts, c.max_attempts, outcome.error, delay,
                extra={"attempt": c.attempts, "retry_in_s": round(delay, 3)},
            )
        elif outcome.status == "failed":
            log.warning("job %s/%s failed: %s", c.execution_id, c.key, outcome.error, extra={"attempt": c.attempts})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("job %s/%s %s", c.execution_id, c.key, outcome.status, extra={"attempt": c.attempts})

    async def _cancel_remote(self, c: ClaimedJob, held: _Held) -> None:
        assert held.provider is not None and held.provider_job_id is not None
        task = Task(c.execution_id, c.key, c.type, c.model, c.params, c.attempts, self.workroot)
        try:
            await asyncio.shield(held.provider.cancel(task, held.provider_job_id))
        except Exception:
            log.warning("job %s/%s: cancel at provider failed", c.execution_id, c.key, exc_info=True)

    async def _attempt(self, c: ClaimedJob, held: _Held) -> JobOutcome:
        now = time.time()
        if c.execution_deadline is not None and now >= c.execution_deadline:
            return self._failed(c, "the execution's timeout (options.timeout_s) passed before this job could run")
        provider = self.providers.get(c.provider)
        if provider is None:
            return self._failed(c, f"no provider named {c.provider!r} is configured in this worker")
        held.provider = provider
        try:
            params = resolve_references(c.params, c.dep_results, job_key=c.key)
        except PlanError as exc:
            return self._failed(c, str(exc))
        if c.type != "run" and (problems := self.catalog.check_job_params(c.type, c.model, params, job_key=c.key)):
            return self._failed(c, "invalid parameters after resolving references: " + "; ".join(map(str, problems)))
        key = cache_key(c, params)
        if c.use_cache and (cached := await self._cache_lookup(c.tenant, key)) is not None:
            cached["cache_hit"] = True
            return JobOutcome(
                c.id, self.id, "succeeded", result=cached, cost_usd=0.0, cache_key=key, cache_hit=True, seq=c.seq
            )
        if c.refusal is not None:
            return self._failed(c, c.refusal)
        workdir = self._scratch.take()
        ended_well = False  # only then is the folder emptied for another attempt (see engine/scratch.py)
        try:
            inputs = await self._local_inputs(c, params, workdir)
        except PermanentError as exc:  # an input that is not this tenant's artifact
            self._scratch.give_back(workdir, reuse=False)
            return self._failed(c, exc.message)
        task = Task(
            execution_id=c.execution_id,
            job_id=c.key,
            type=c.type,
            model=c.model,
            params=params,
            attempt=c.attempts,
            scratch=workdir,
            inputs=inputs,
            callback_url=self._callback_url(provider, c),
            intent_at=c.intent_at,
            seq=c.seq,
            intent_seq=c.intent_seq,
            tenant=c.tenant,
            possible_duplicate=held.possible_duplicate,
        )
        held.work = task
        # bound methods of `held`, not lambdas: a lambda here would also make c, held and provider cells of this
        # frame, which every waiting job keeps for as long as it waits
        task.log.on_change = held.log_changed
        try:
            pid = c.provider_job_id
            if pid is None and task.unsettled and getattr(provider, "paid", False):
                pid = await self._reconcile(provider, task, c, held)
            if pid is None:
                gate = await self._circuit_gate(provider, c)
                if isinstance(gate, JobOutcome):
                    return gate
                held.submitted_at = time.time()
                pid = await self._submit_through(gate, provider, task, c, held)
            else:
                held.provider_job_id = pid
                task.resumed = True
                log.info("job %s/%s: resuming wait on provider id %s", c.execution_id, c.key, pid)
            if c.timeout_s is None and c.execution_deadline is None and c.start_timeout_s is None:
                # No deadline to watch: wait right here. A second task per job, and asyncio.wait's future, set
                # and callbacks, were ~2 KB a job (20 MB of 10,000 jobs in flight) for nothing to time out; a
                # frame of `_wait` in between, ~400 bytes more.
                result = await provider.wait(task, pid, held.report)
            else:
                result = await self._wait(provider, task, pid, c, held)
            if held.phase is not None or task.provider_queued_s is not None:
                self._provider_started(held, task, time.time())
            job_result = await self._store_outputs(result, task, c.tenant)
            ended_well = True
            return JobOutcome(
                c.id, self.id, "succeeded", result=job_result, cost_usd=result.cost_usd, cache_key=key, seq=c.seq
            )
        except _ProbeFailed as exc:
            if (moved := self._failover(c, "circuit open")) is not None:
                return moved
            return self._circuit_wait(c, f"{exc}; circuit open again for {c.model}: waiting", None, exc.settled)
        except JobTimeout as exc:
            if held.provider_job_id:
                await self._cancel_remote(c, held)
            return self._failed(c, str(exc))
        except TransientError as exc:
            keep = held.provider_job_id is not None and not exc.resubmit
            # Settled when the request provably started nothing, or the remote work is known to be gone; any
            # other failure may have come after the provider took paid work: the next attempt asks first.
            settled = exc.not_sent or exc.resubmit
            return self._transient_outcome(c, exc.message, exc.retry_after, keep_provider_id=keep, settled=settled)
        except ProviderError as exc:
            if (c.failover or {}).get("on") == "any" and (moved := self._failover(c, exc.message)) is not None:
                return moved
            return self._failed(c, exc.message)
        finally:  # the folder was made only if the task asked for its workdir, or an input was fetched into it
            self._scratch.give_back(workdir, reuse=ended_well, touched=task.workdir_made or bool(inputs))

    async def _cache_lookup(self, tenant: str, key: str) -> dict[str, Any] | None:
        """The cached result for this job, if any (a copy: jobs of one key get the same answer)."""
        hit = await self._lookups((tenant, key))
        return dict(hit) if hit is not None else None

    async def _lookup_many(self, items: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        try:
            found = await self.store.cache_lookup_many(items)
        except Exception as exc:  # the cache is an optimisation: without it the job just runs
            log.warning("worker %s: cache lookup failed (%s); running the jobs", self.id, exc)
            found = {}
        return [found.get(item) for item in items]

    def _callback_url(self, provider: Provider, c: ClaimedJob) -> str | None:
        """The URL the provider should call when this job's work ends, when callbacks are on and it takes them."""
        if not self.settings.callbacks_enabled or not is_callback_provider(provider):
            return None
        if not getattr(provider, "callbacks_ready", True):
            return None
        return self.settings.callback_url(provider.name, c.execution_id, c.key)

    def _failed(self, c: ClaimedJob, error: str) -> JobOutcome:
        return JobOutcome(c.id, self.id, "failed", error=error, seq=c.seq)

    def _transient_outcome(
        self,
        c: ClaimedJob,
        error: str,
        retry_after: float | None,
        *,
        keep_provider_id: bool = False,
        settled: bool = True,
    ) -> JobOutcome:
        if c.attempts >= c.max_attempts:
            if (moved := self._failover(c, f"{error} (after {c.attempts} attempts)")) is not None:
                return moved
            return self._failed(c, f"{error} (gave up after {c.attempts} attempts)")
        delay = backoff_delay(
            c.attempts, base=self.settings.retry_base_s, cap=self.settings.retry_max_s, retry_after=retry_after
        )
        return JobOutcome(
            c.id,
            self.id,
            "retry",
            error=error,
            retry_at=time.time() + delay,
            keep_provider_id=keep_provider_id,
            seq=c.seq,
            settled=settled,
        )

    def _failover(self, c: ClaimedJob, reason: str) -> JobOutcome | None:
        """Move the job to its next model at once, with fresh attempts, if it has one."""
        following = c.next_model()
        if following is None or c.failover is None:
            return None
        passed = [*(c.failover.get("passed") or []), {"model": c.model, "reason": reason}]
        log.warning(
            "job %s/%s: model %s passed over (%s); trying %s", c.execution_id, c.key, c.model, reason, following
        )
        return JobOutcome(
            c.id,
            self.id,
            "retry",
            error=f"{c.model}: {reason}; failing over to {following}",
            retry_at=time.time(),
            seq=c.seq,
            failover_to=following,
            failover={**c.failover, "passed": passed},
        )

    def _circuit_keys(self, provider: Provider, c: ClaimedJob) -> list[tuple[str, str, str | None, CircuitConfig]]:
        """The circuits a create of `c` goes through (paid remote providers only), with their settings."""
        if not getattr(provider, "paid", False):
            return []
        name = c.provider or provider.name
        limits = get_limits(self.settings)
        return [(k, p, m, limits.circuit(p, m)) for k, p, m in circuit_keys(name, c.model)]

    async def _circuit_gate(self, provider: Provider, c: ClaimedJob) -> _Gate | JobOutcome:
        """Ask the job's circuits (shared through the store) whether a create may go out now. When one is open:
        the job moves to its next model at once, or, without one, waits queued past the cool-down, the attempt
        not counted."""
        keys = self._circuit_keys(provider, c)
        if not keys:
            return _NO_GATE
        try:
            answer = await self._circuits(Admit(keys, f"{self.id}:{c.id}"))
            assert isinstance(answer, Admission)
        except StoreUnavailable as exc:  # no create goes out unless its circuits were asked
            return self._circuit_wait(c, f"circuits not readable ({exc}): waiting", time.time() + 1.0)
        if answer.allowed:
            return _Gate(keys, list(answer.reserved), answer.probe)
        if answer.why == "open" and (moved := self._failover(c, "circuit open")) is not None:
            return moved
        why = "open" if answer.why == "open" else "failing (waiting for the answers of the creates out)"
        return self._circuit_wait(c, f"circuit {why} for {c.model}: waiting", answer.until)

    def _circuit_wait(self, c: ClaimedJob, error: str, until: float | None, settled: bool = True) -> JobOutcome:
        """Back to the queue until `until` (a cool-down when None), this attempt not counted."""
        if until is None:
            limits = get_limits(self.settings)
            until = time.time() + limits.circuit(c.provider or "", c.model).cooldown_s
        wait = max(0.05, until - time.time()) + random.uniform(0, 0.2)
        return JobOutcome(
            c.id, self.id, "retry", error=error, retry_at=time.time() + wait, seq=c.seq, uncount=True, settled=settled
        )

    async def _submit_through(self, gate: _Gate, provider: Provider, task: Task, c: ClaimedJob, held: _Held) -> str:
        """Submit, and count the answer in the job's circuits: a transient failure against them, anything else
        (the model answered) for them."""
        if not gate.keys:
            return await self._submit(provider, task, c, held)
        try:
            pid = await self._submit(provider, task, c, held)
        except TransientError as exc:
            await self._circuit_note(gate, ok=False)
            if gate.probe:
                raise _ProbeFailed(exc.message, exc.not_sent or exc.resubmit) from exc
            raise
        except ProviderError:
            await self._circuit_note(gate, ok=True)
            raise
        await self._circuit_note(gate, ok=True)
        return pid

    async def _circuit_note(self, gate: _Gate, *, ok: bool) -> None:
        try:
            await self._circuits(Outcome(gate.keys, ok, gate.reserved))
        except Exception:  # circuits protect providers; failing to count one outcome must not fail the job
            log.warning("worker %s: recording a circuit outcome failed", self.id, exc_info=True)

    async def _submit(self, provider: Provider, task: Task, c: ClaimedJob, held: _Held) -> str:
        """Submit, and record the provider's id. When the answer is lost (the request went out: a read timeout,
        a reset, a 5xx), a provider that can be asked is asked at once, inside this attempt and its lease: the
        work found is adopted and the attempt goes on waiting on it, instead of ending, spending one of the job's
        attempts and a claim to learn the same thing later. Found nothing, could not tell: the attempt ends as
        before, unsettled, and the next one asks again before paying."""
        try:
            pid = await provider.submit(task)
        except TransientError as exc:
            if exc.not_sent or not getattr(provider, "paid", False) or not isinstance(provider, Reconciling):
                raise
            try:
                adopted = await self._reconcile(provider, task, c, held, lost=exc.message)
            except (ProviderError, CannotReconcile):
                adopted = None
            if adopted is None:
                raise exc from None
            return adopted
        held.provider_job_id = pid
        self._persist_provider_id(c, pid)
        return pid

    async def _reconcile(
        self, provider: Provider, task: Task, c: ClaimedJob, held: _Held, *, lost: str | None = None
    ) -> str | None:
        """Before paying again after an attempt whose answer was lost: ask the provider for work that attempt
        may have started, and adopt it (wait on it as after a restart) when found and not another job's. Where
        the provider cannot be asked, the retry goes ahead and a possible duplicate charge is recorded on the
        job, in its events, in the log and in a metric: nothing is paid twice silently. A failure to ask
        (TransientError) ends this attempt, to ask again later rather than pay blind."""
        since = task.intent_at or c.started_at
        name = c.provider or provider.name
        if not isinstance(provider, Reconciling):
            await task.note_possible_duplicate(f"{name} offers no way to look up work whose answer was lost")
            return None
        try:
            found = await provider.find_submitted(task, since)
        except CannotReconcile as exc:
            if lost is not None:  # this attempt's own answer: the next attempt records the possible duplicate
                raise
            await task.note_possible_duplicate(str(exc))
            return None
        taken = await self.store.adopted(name, found) if found else set()
        free = [pid for pid in found if pid not in taken]
        metrics.reconciled(name, bool(free))
        data: dict[str, Any] = {"since": iso(since), "matches": len(found)}
        if lost is not None:
            data["lost"] = lost
        if not free:
            log.info(
                "job %s/%s: %s has no work of an earlier attempt (%d matches taken); submitting",
                c.execution_id, c.key, name, len(taken),
            )  # fmt: skip
            await self.store.note_attempt(c.id, self.id, c.seq, "job.reconciled", {**data, "adopted": None})
            return None
        pid = free[0]
        log.info(
            "job %s/%s: adopting %s work %s that an earlier attempt started (its answer was lost)",
            c.execution_id, c.key, name, pid,
        )  # fmt: skip
        held.provider_job_id = pid
        self._persist_provider_id(c, pid)
        task.resumed = True
        await self.store.note_attempt(c.id, self.id, c.seq, "job.reconciled", {**data, "adopted": pid})
        return pid

    async def _possible_duplicate(self, c: ClaimedJob, provider: str, why: str) -> None:
        usd = float(c.cost_estimated or 0.0)
        log.warning(
            "job %s/%s: possible duplicate charge of about $%.4f: an earlier attempt may have started paid work at"
            " %s whose answer was lost, and %s; submitting again",
            c.execution_id, c.key, usd, provider, why,
        )  # fmt: skip
        metrics.possible_duplicate(provider)
        data = {"provider": provider, "estimated_usd": usd, "reason": why}
        await self.store.note_attempt(
            c.id, self.id, c.seq, "job.possible_duplicate_charge", data, possible_duplicate_usd=usd
        )

    async def _local_inputs(self, c: ClaimedJob, params: dict[str, Any], workdir: Path) -> dict[str, Path]:
        """Local files for every top-level URL parameter (or list item) that is one of our artifacts: the
        stored file itself on local storage; on object storage a download into the attempt's folder, made
        only for the providers that read files (the others pass the URL on).

        First, every artifact link anywhere in the resolved parameters (a reference's value included) must be
        one of the job's tenant's artifacts, whichever provider runs it: otherwise PermanentError, with the
        same words as the refusal at submission, and nothing is fetched or sent."""
        if foreign := await foreign_inputs(self.store, self.storage, c.tenant, params, ["params"]):
            raise PermanentError("; ".join(str(refusal(where, c.key)) for where in foreign))
        inputs: dict[str, Path] = {}
        if not self.settings.storage_url.startswith("file://") and not reads_local_files(c.provider):
            return inputs

        async def local(value: Any) -> Path | None:
            if (key := artifact_key(self.storage, value)) is not None:
                return await asyncio.to_thread(self.storage.fetch_to, key, workdir / "inputs")
            return None

        for name, value in params.items():
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if (p := await local(item)) is not None:
                        inputs[f"{name}[{i}]"] = p
            elif (p := await local(value)) is not None:
                inputs[name] = p
        return inputs

    def _reported(self, held: _Held, update: ProgressUpdate) -> None:
        """A held job's provider told its progress (the `report` its adapter's `wait` calls)."""
        phase = update.phase
        held.phase, held.percent, held.queue_position = phase, float(update.percent or 0.0), update.queue_position
        held.phase_seen_queued = held.phase_seen_queued or phase == "queued"
        if phase == "running" and held.work is not None:
            self._provider_started(held, held.work, time.time())
        job_row = held.claim.id
        self._progress[job_row] = ProgressReport(
            job_row, self.id, float(update.percent or 0.0), update.queue_position, update.message
        )

    async def _wait(self, provider: Provider, task: Task, pid: str, c: ClaimedJob, held: _Held) -> ProviderResult:
        """Wait for the work, watching the job's deadlines (`_attempt` waits on its own when there are none)."""
        report = held.report  # not a closure: with its cells, one was ~600 bytes of each waiting job
        submitted = time.time()
        deadlines: list[tuple[float, str]] = []
        if c.timeout_s is not None:
            deadlines.append((c.started_at + c.timeout_s, f"timed out after {c.timeout_s:g} s (timeout_s)"))
        if c.execution_deadline is not None:
            deadlines.append((c.execution_deadline, "the execution's timeout (options.timeout_s) passed"))
        waiting = asyncio.ensure_future(provider.wait(task, pid, report))
        try:
            while True:
                now = time.time()
                active = list(deadlines)
                if c.start_timeout_s is not None and held.phase == "queued":
                    active.append(
                        (
                            submitted + c.start_timeout_s,
                            f"did not start within {c.start_timeout_s:g} s in the provider's queue (start_timeout_s)",
                        )
                    )
                for at, why in active:
                    if now >= at:
                        raise JobTimeout(why)
                timeout = min((at - now for at, _ in active), default=None)
                if c.start_timeout_s is not None:  # the phase may change: look again soon
                    timeout = 0.25 if timeout is None else min(timeout, 0.25)
                done, _ = await asyncio.wait({waiting}, timeout=timeout)
                if done:
                    return waiting.result()
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiting

    async def _store_outputs(self, result: ProviderResult, task: Task, tenant: str) -> dict[str, Any]:
        stored: list[dict[str, Any]] = []
        for i, out in enumerate(result.outputs):
            path = out.path
            content_type = out.content_type
            if path is None:
                if not out.url:
                    raise PermanentError(f"{task.type}: the provider returned an output with neither file nor URL")
                if out.url.startswith("data:"):  # inline bytes: judged below like any other output
                    path, content_type = await asyncio.to_thread(write_data_url, out.url, task.workdir / f"output-{i}")
                else:
                    async with self._download_slots.slot(tenant):  # see HttpAdapter.max_in_flight: queue here
                        path, content_type = await fetch_output(
                            self._http_client(), out.url, task.workdir / f"output-{i}", limit_bytes=MAX_OUTPUT_BYTES
                        )
            assert path is not None  # each branch above sets it (mypy cannot tell through `async with`)
            stored.append(await self._store_file(path, content_type, task))
        job_result: dict[str, Any] = dict(stored[0]) if stored else {}
        if len(stored) > 1:
            job_result["outputs"] = stored
        for k, v in result.fields.items():
            job_result.setdefault(k, v)
        return job_result

    @property
    def egress(self) -> EgressGuard:
        """The guard output downloads connect through: public addresses, REELFLOW_ALLOWED_HOSTS, and the
        host:port of every provider's configured base URL (made on first use, once the providers are set)."""
        if self._egress is None:
            trusted = [getattr(self.providers.get(name), "base_url", None) for name in self.providers.names()]
            policy = EgressPolicy.from_settings(self.settings, trusted=[u for u in trusted if isinstance(u, str)])
            self._egress = EgressGuard(policy)
        return self._egress

    def _share_egress(self) -> None:
        """Providers that fetch on their own (OpenAI's file inputs, fal's JWKS) judge destinations by this
        worker's policy too."""
        for name in self.providers.names():
            provider = self.providers.get(name)
            if provider is not None and hasattr(provider, "egress"):
                provider.egress = self.egress.policy

    def _http_client(self) -> httpx.AsyncClient:
        """One pooled client for output downloads, made on first use; it connects through the egress guard
        and follows at most 3 redirects, each judged again."""
        if self._http is None:
            self._http = guarded_client(
                self.egress,
                timeout=httpx.Timeout(30.0, read=60.0),
                limits=httpx.Limits(max_connections=DOWNLOADS_IN_FLIGHT, max_keepalive_connections=DOWNLOADS_IN_FLIGHT),
            )
        return self._http

    def _put(self, path: Path, suffix: str) -> tuple[str, str, Path | None]:
        """Store a file: its key, URL and local path (when the storage is local). Blocking: one thread trip."""
        key = self.storage.put_file(path, suffix)
        return key, self.storage.url(key), self.storage.local_path(key)

    async def _store_file(self, path: Path, content_type: str | None, task: Task) -> dict[str, Any]:
        """Store one output once its bytes show the kind its job makes (see engine/outputs.py); otherwise
        PermanentError and nothing is stored."""
        suffix = path.suffix.lower()
        info, (key, url, local) = await judge_then(
            path,
            task.type,
            task.model,
            self._probes.probe,
            lambda: self._put(path, suffix),  # stored in the trip that judged it, when the quick probe could
            quick_probe=self._probes.quick,
            catalog=self.catalog,
        )
        entry: dict[str, Any] = {
            "url": url,
            "key": key,
            "content_type": content_type or media.CONTENT_TYPES.get(suffix, "application/octet-stream"),
        }
        if local is not None:
            entry["path"] = str(local)
        entry.update(info)
        return entry


__all__ = ["JobTimeout", "TransientError", "Worker"]
