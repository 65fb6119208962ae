"""Errors shared by every layer: each carries what went wrong and where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ErrorItem:
    """One problem in user input: `loc` is the path to the culprit, `msg` says what is wrong."""

    loc: list[str | int]
    msg: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}

    def __str__(self) -> str:
        where = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in self.loc).replace(".[", "[")
        return f"{where}: {self.msg}" if where else self.msg


class ReelflowError(Exception):
    """Base of reelflow's own errors; their messages are meant for users."""


@dataclass
class PlanError(ReelflowError):
    """A plan failed validation; `errors` lists every culprit."""

    errors: list[ErrorItem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return f"invalid plan: {self.errors[0]}"
        lines = "\n".join(f"  - {e}" for e in self.errors)
        return f"invalid plan ({len(self.errors)} problems):\n{lines}"


class NotFound(ReelflowError):
    """An execution (or other resource) that does not exist for this caller."""


class Conflict(ReelflowError):
    """The resource is in a state that does not allow the operation (e.g. resume a running execution)."""


class IdempotencyConflict(Conflict):
    """An Idempotency-Key reused with a different request."""


class StoreUnavailable(ReelflowError):
    """The database could not be reached for longer than the store retries (HTTP 503)."""


class StoreBusy(StoreUnavailable):
    """The database is up but every pooled connection stayed in use while this request waited for one
    (HTTP 503 at once, "busy"; never reported as an outage)."""


class UsageLimitExceeded(ReelflowError):
    """A tenant's monthly limit would be passed: HTTP 402 for the cost budget, 429 for the execution count."""

    def __init__(self, message: str, *, status: int, limit: str) -> None:
        super().__init__(message)
        self.status = status
        self.limit = limit


class ProviderError(Exception):
    """A provider refused or failed the work (or its output could not be fetched). `transient` decides
    retry or fail. Defined here, below the providers and the engine, so that `net` can raise them too;
    `reelflow.providers.base` re-exports them."""

    transient: bool = False

    def __init__(
        self, message: str, *, retry_after: float | None = None, resubmit: bool = False, not_sent: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.resubmit = resubmit
        """Raised while waiting: the remote work is gone and a retry must submit anew. By default a
        transient error after submission keeps the provider id, so the retry waits on the same (paid) work."""
        self.not_sent = not_sent
        """True when the request is known not to have been acted on (the connection was never made, a 429, a
        refusal before any work): a create that failed so started nothing, and the retry needs no reconciling.
        False means "maybe taken": the answer was lost (read timeout, reset, a 5xx after sending)."""


class TransientError(ProviderError):
    """Worth another try later: 429, 5xx, timeouts, connection resets."""

    transient = True


class PermanentError(ProviderError):
    """Trying again cannot help: bad input, unknown model, refused content, no credit."""

    transient = False
