"""The Provider protocol: submit work, wait on the provider's id for it, cancel it.

Errors are classified once, here at the edge: a `TransientError` is retried with backoff,
a `PermanentError` fails the job at once with the provider's message.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeGuard, runtime_checkable

# defined below the providers (net.py raises them too); every provider imports them from here
from ..errors import PermanentError as PermanentError
from ..errors import ProviderError as ProviderError
from ..errors import TransientError as TransientError
from . import sleeps

log = logging.getLogger(__name__)

LOG_LIMIT_CHARS = 64 * 1024
"""The most of a job's provider log kept (its end): what comes before is dropped, and the count of what was
dropped is kept and shown (nothing is cut silently)."""
_LOG_SEEN_KEEP = 4096
"""Keys of log entries already taken from a provider that returns entries (fal), kept to skip repeats."""


class ProviderLog:
    """What a provider said while it worked on one attempt of one job: its log lines, bounded to the last
    LOG_LIMIT_CHARS characters, with the number of characters dropped before them.

    Adapters feed it the way their provider gives logs: `replace` with a whole log so far (Replicate's `logs`
    string grows with each look), `merge_entries` with entries that may repeat from one look to the next (fal's
    status with `logs=1`: the entries so far, or only new ones; both readings work), `add` for lines of one's own
    (the local ffmpeg provider). `version` counts changes; `on_change`, set by the worker, hears of each one."""

    # one per attempt (10,000 jobs waiting in one worker hold 10,000 of these): no instance dict
    __slots__ = (
        "_own",
        "_own_dropped",
        "_replaced",
        "_replaced_dropped",
        "_seen",
        "dropped",
        "limit",
        "on_change",
        "text",
        "version",
    )

    def __init__(self, limit: int = LOG_LIMIT_CHARS) -> None:
        self.limit = max(1, limit)
        self.text = ""
        self.dropped = 0
        self.version = 0
        self.on_change: Callable[[], None] | None = None
        self._own = ""  # lines added with `add`/`merge_entries` (kept apart from a provider's whole log)
        self._own_dropped = 0
        self._replaced = ""  # the last whole log given to `replace`
        self._replaced_dropped = 0
        self._seen: dict[tuple[str, str], None] = {}

    def _changed(self) -> None:
        whole = self._own + self._replaced
        extra = max(0, len(whole) - self.limit)
        self.text = whole[extra:]
        self.dropped = self._own_dropped + self._replaced_dropped + extra
        self.version += 1
        if self.on_change is not None:
            self.on_change()

    def _bound_own(self) -> None:
        if len(self._own) > self.limit:
            cut = len(self._own) - self.limit
            self._own = self._own[cut:]
            self._own_dropped += cut

    def add(self, line: str) -> None:
        """Append one line (or several, newline-separated) of our own."""
        if not line:
            return
        self._own += line if line.endswith("\n") else line + "\n"
        self._bound_own()
        self._changed()

    def replace(self, whole: str | None) -> None:
        """The provider's whole log so far; nothing changes when it is the same as last time."""
        if not isinstance(whole, str) or whole == self._replaced:
            return
        if len(whole) > self.limit:
            self._replaced_dropped = len(whole) - self.limit
            whole = whole[-self.limit :]
        else:
            self._replaced_dropped = 0
        if whole == self._replaced:
            return
        self._replaced = whole
        self._changed()

    def merge_entries(self, entries: Any) -> None:
        """Log entries (`timestamp`, `level`, `source`, `message`) of which some may have been given before:
        the new ones are appended, in order; anything that is not a list of objects is ignored."""
        if not isinstance(entries, list):
            return
        lines: list[str] = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            message = entry.get("message")
            if not isinstance(message, str):
                continue
            stamp = entry.get("timestamp")
            key = (stamp if isinstance(stamp, str) else "", message)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > _LOG_SEEN_KEEP:
                self._seen.pop(next(iter(self._seen)))
            level = entry.get("level")
            parts = [p for p in (key[0], level if isinstance(level, str) else "") if p]
            lines.append(" ".join([*parts, message]))
        if lines:
            self._own += "\n".join(lines) + "\n"
            self._bound_own()
            self._changed()


class _Wake(asyncio.Event):
    """`Task.wake`: an event that also ends the pause under way (`Task.pause`) when it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.pausing: asyncio.Future[None] | None = None

    def set(self) -> None:
        super().set()
        fut = self.pausing
        if fut is not None and not fut.done():
            fut.set_result(None)


@dataclass
class Task:
    """One attempt of one job, as a provider sees it. `params` have every reference resolved."""

    execution_id: str
    job_id: str
    """The plan's key of the job (`clip`; the engine calls it `job_key`). Named `job_id` here because provider
    plugins read it."""
    type: str
    model: str | None
    params: dict[str, Any]
    attempt: int
    scratch: Path
    """Where this attempt may write files; created on first use of `workdir`, removed afterwards."""
    inputs: dict[str, Path] = field(default_factory=dict)
    """Local files for the URL parameters that point at our own artifacts (param name -> path)."""
    callback_url: str | None = None
    """Where the provider should POST when the work ends (`{public_url}/v1/providers/{name}/callback?...`);
    None when callbacks are off, and then `wait` polls on its own."""
    resumed: bool = False
    """True when `wait` picks up work an earlier attempt submitted (a crash, a restart): look at once."""
    _wake: _Wake | None = field(default=None, repr=False, compare=False)
    callback_outcome: dict[str, Any] | None = field(default=None, repr=False)
    """The terminal outcome a verified callback carried (`CallbackEvent.outcome`), set by the worker with `wake`:
    `wait` takes it with `take_callback_outcome` and finishes from it, without asking the provider, when it is
    about the very work it waits on (the adapter compares the provider id); otherwise it asks as usual."""
    intent_at: float | None = None
    """When the job's first unsettled attempt began: an attempt from then on may have started paid work whose
    answer was lost (a read timeout, a crash). None for a task that nothing earlier may have submitted."""
    intent_attempt: int | None = None
    """The attempt that `intent_at` belongs to (for tasks made by hand; the worker sets `intent_seq`)."""
    seq: int = 0
    """The attempt's lease number: every claim of the job increments it, nothing resets it (unlike `attempt`,
    which a shutdown hands back and a resume restarts)."""
    intent_seq: int | None = None
    """The lease number of the job's first unsettled attempt; below `seq`, an earlier attempt may have started
    paid work whose answer was lost. The idempotency key names it, so every attempt until the job settles sends
    the same key and the provider de-duplicates them."""
    tenant: str = "default"
    possible_duplicate: Callable[[str], Awaitable[None]] | None = field(default=None, repr=False)
    """Set by the worker. A provider about to repeat a paid call that an earlier attempt may have made, with no
    way to look that call up, says why through `note_possible_duplicate`: the job records a possible duplicate
    charge (once per attempt)."""
    _duplicate_noted: bool = field(default=False, repr=False)
    log: ProviderLog = field(default_factory=ProviderLog, repr=False)
    """The provider's log of this attempt, as the adapter read it (see ProviderLog); stored per job."""
    provider_queued_s: float | None = None
    """Seconds the work waited in the provider's queue before it started, when the provider tells it (Replicate:
    `started_at - created_at`); the worker otherwise measures it from when it sees the work start."""

    @property
    def wake(self) -> _Wake:
        """Set by the worker when a verified callback for this job arrived: look at the work now. Made on first
        use: an event is ~750 bytes, and most tasks (10,000 waiting at once in one worker) never need one."""
        if self._wake is None:
            self._wake = _Wake()
        return self._wake

    async def note_possible_duplicate(self, why: str) -> None:
        """Record, once per attempt, that the paid call about to go out may repeat one already paid."""
        if not self._duplicate_noted:
            self._duplicate_noted = True
            if self.possible_duplicate is not None:
                await self.possible_duplicate(why)

    @property
    def idempotency_key(self) -> str:
        """A key naming the job's first unsettled attempt (this attempt when nothing is unsettled), for
        providers that de-duplicate submissions by one: a retry after a lost answer sends the same key."""
        if self.intent_seq is not None:
            return f"reelflow-{self.execution_id}-{self.job_id}-s{self.intent_seq}"
        return f"reelflow-{self.execution_id}-{self.job_id}-{self.intent_attempt or self.attempt}"

    @property
    def unsettled(self) -> bool:
        """An earlier attempt may have started work at the provider whose answer never reached us."""
        if self.intent_at is None:
            return False
        if self.intent_seq is not None:
            return self.intent_seq < self.seq
        return self.intent_attempt is not None and self.intent_attempt < self.attempt

    async def pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`, or less if a callback wakes the job; True when woken.

        The sleep shares the loop's timer with the others ending within the same few milliseconds
        (`sleeps.ring_later`; it ends at most `sleeps.GRAIN_S` late): `asyncio.wait_for` made a task, a future
        and a timer of its own for each pause of each waiting job."""
        wake = self.wake
        if not wake.is_set():
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            wake.pausing = fut
            delay = max(0.0, seconds)  # a NaN is 0, as asyncio.wait_for took it
            if delay < math.inf:  # an endless pause waits for the wake-up alone
                sleeps.ring_later(loop, fut, delay)
            try:
                await fut
            finally:
                wake.pausing = None
        woken = wake.is_set()
        wake.clear()
        return woken

    def take_callback_outcome(
        self, remote_id: str, finished: Callable[[dict[str, Any], str], dict[str, Any] | None], what: str
    ) -> dict[str, Any] | None:
        """The outcome a callback brought since the last call (see `callback_outcome`), once, as `finished`
        reads it when it is about `remote_id`: the job then ends without asking the provider. An outcome about
        other work (a replay of an earlier attempt's callback) is dropped, logged with `what` ("fal: request
        X"), and the caller asks the provider."""
        outcome, self.callback_outcome = self.callback_outcome, None
        if outcome is None:
            return None
        told = finished(outcome, remote_id)
        if told is None:
            log.info("%s: a callback's outcome is about other work; asking the provider", what)
        return told

    _workdir_made: bool = field(default=False, repr=False)

    @property
    def workdir(self) -> Path:
        """The attempt's scratch folder, created on first use (most remote jobs never need one; each later use
        costs no mkdir, which raised and caught FileExistsError every time)."""
        if not self._workdir_made:
            self.scratch.mkdir(parents=True, exist_ok=True)
            self._workdir_made = True
        return self.scratch

    @property
    def workdir_made(self) -> bool:
        """`workdir` was asked for (its folder made): files may be in it."""
        return self._workdir_made


@dataclass
class Output:
    """A produced file: a local `path` the worker stores, or a remote `url` it copies."""

    path: Path | None = None
    url: str | None = None
    content_type: str | None = None


@dataclass
class ProviderResult:
    outputs: list[Output]
    fields: dict[str, Any] = field(default_factory=dict)
    cost_usd: float | None = None
    """What the run cost; a value that is not a finite, non-negative number is recorded as unknown (None)."""

    def __post_init__(self) -> None:
        cost = self.cost_usd
        if cost is not None and not (isinstance(cost, int | float) and math.isfinite(cost) and cost >= 0):
            self.cost_usd = None


Phase = Literal["queued", "running"]


@dataclass
class ProgressUpdate:
    """What a provider tells while it works: a percentage, or a queue position, and its phase."""

    phase: Phase = "running"
    percent: float | None = None
    queue_position: int | None = None
    message: str | None = None


class CannotReconcile(Exception):
    """The provider offers no way to look up work whose create answer was lost (no list, no history, no
    idempotency key): the worker submits again and records a possible duplicate charge."""


class CallbackRejected(Exception):
    """An inbound provider callback failed verification (bad or missing signature, stale timestamp,
    unreadable body). The API answers 401 and changes nothing."""


@dataclass
class CallbackEvent:
    """What a verified callback says: which remote work it is about, its status as given, and, when the body is
    the work's terminal outcome complete enough to finish the job from (Replicate: the prediction succeeded with
    its output, or failed, or was canceled; fal: OK with its payload, or ERROR), that outcome in the adapter's
    own terms: the parts of the body its `wait` needs, the provider's id of the work included. None otherwise
    (the woken worker then asks the provider)."""

    provider_job_id: str
    status: str | None = None
    outcome: dict[str, Any] | None = None


ProgressReporter = Callable[[ProgressUpdate], Awaitable[None] | None]


async def report_progress(report: ProgressReporter, update: ProgressUpdate) -> None:
    """Tell `report` about progress; it may be a plain function or a coroutine function."""
    maybe = report(update)
    if maybe is not None:
        await maybe


@runtime_checkable
class Provider(Protocol):
    """An AI provider (or the local ffmpeg one) behind the same three calls."""

    name: str

    async def submit(self, task: Task) -> str:
        """Start the work and return the provider's id for it (persisted before `wait`)."""
        ...

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        """Wait until the work identified by `provider_id` ends; raise ProviderError on failure."""
        ...

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Stop the work at the provider so nothing more is paid; never raises for done work."""
        ...


@runtime_checkable
class Reconciling(Protocol):
    """A provider that can find work an earlier attempt started but whose answer was lost.

    Before a job submits again after an attempt that ended without knowing whether the provider took the
    work (`Task.unsettled`), the worker calls `find_submitted(task, since=task.intent_at)`: the provider ids
    of work created at or after `since` whose request is exactly what `submit(task)` would send (model or
    version, input, our callback URL when set), oldest first. The worker skips ids that another job already
    adopted, adopts the first one left (waits on it, as after a restart) and otherwise submits. Raise
    CannotReconcile when the provider cannot be asked, TransientError when asking failed (the job then
    retries later rather than paying blind)."""

    async def find_submitted(self, task: Task, since: float) -> list[str]: ...


@runtime_checkable
class CallbackProvider(Provider, Protocol):
    """A provider that can call us back when work ends, instead of (or besides) being polled.

    `submit` passes `task.callback_url` on when it is set; `wait` sleeps with `task.pause()` so a
    callback cuts the sleep short. `verify_callback` checks an inbound request's signature and names
    the work it is about; it raises CallbackRejected for anything it cannot verify.
    """

    async def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent: ...


_CONFORMING: dict[tuple[type, type], bool] = {}


def _conforms(obj: object, protocol: type) -> bool:
    """isinstance(obj, protocol), worked out once per class: a runtime-checkable protocol's isinstance looks up
    each of its members every time (0.04-0.2 ms; a callback and every job ask it)."""
    key = (type(obj), protocol)
    found = _CONFORMING.get(key)
    if found is None:
        found = _CONFORMING[key] = isinstance(obj, protocol)
    return found


def is_callback_provider(obj: object) -> TypeGuard[CallbackProvider]:
    """isinstance(obj, CallbackProvider), answered once per class."""
    return _conforms(obj, CallbackProvider)
