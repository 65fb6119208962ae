"""The Provider protocol: submit work, wait on the provider's id for it, cancel it.

Errors are classified once, here at the edge: a `TransientError` is retried with backoff,
a `PermanentError` fails the job at once with the provider's message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable


class ProviderError(Exception):
    """A provider refused or failed the work. `transient` decides retry or fail."""

    transient: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None, resubmit: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.resubmit = resubmit
        """Raised while waiting: the remote work is gone and a retry must submit anew. By default a
        transient error after submission keeps the provider id, so the retry waits on the same (paid) work."""


class TransientError(ProviderError):
    """Worth another try later: 429, 5xx, timeouts, connection resets."""

    transient = True


class PermanentError(ProviderError):
    """Trying again cannot help: bad input, unknown model, refused content, no credit."""

    transient = False


@dataclass
class Task:
    """One attempt of one job, as a provider sees it. `params` have every reference resolved."""

    execution_id: str
    job_id: str
    type: str
    model: str | None
    params: dict[str, Any]
    attempt: int
    scratch: Path
    """Where this attempt may write files; created on first use of `workdir`, removed afterwards."""
    inputs: dict[str, Path] = field(default_factory=dict)
    """Local files for the URL parameters that point at our own artifacts (param name -> path)."""

    @property
    def workdir(self) -> Path:
        """The attempt's scratch folder, created on first use (most remote jobs never need one)."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch


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


Phase = Literal["queued", "running"]


@dataclass
class ProgressUpdate:
    """What a provider tells while it works: a percentage, or a queue position, and its phase."""

    phase: Phase = "running"
    percent: float | None = None
    queue_position: int | None = None
    message: str | None = None


ProgressReporter = Callable[[ProgressUpdate], Awaitable[None] | None]


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
