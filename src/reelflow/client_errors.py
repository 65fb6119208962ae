"""The errors of the HTTP client: one class per kind of error answer, each carrying the problem details
(RFC 9457), and `APIConnectionError` for a server that cannot be reached. Importing them loads no httpx."""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import Conflict, NotFound, ReelflowError

if TYPE_CHECKING:
    import httpx


class APIError(ReelflowError):
    """An error answer of the server, with its problem details (RFC 9457)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: builtins.list[dict[str, Any]] | None = None,
        *,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors: builtins.list[dict[str, Any]] = list(errors or [])
        self.type = type
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, title={self.title!r}, detail={self.detail!r})"


class BadRequest(APIError):
    """400 or 422: the request (or the plan in it) is not acceptable."""


class PlanRejected(BadRequest):
    """422 with `errors`: each names the culprit (`loc`) and what is wrong with it (`msg`)."""


class Unauthorized(APIError):
    """401: no API key, or an unknown or revoked one."""


class NotFoundError(APIError, NotFound):
    """404: unknown, or another tenant's (also caught by `except reelflow.errors.NotFound`)."""


class ConflictError(APIError, Conflict):
    """409: the state does not allow it (resume a running execution), or an Idempotency-Key reused."""


class PayloadTooLarge(APIError):
    """413: the request body is over the server's limit (1 MB)."""


class RateLimited(APIError):
    """429: a rate or usage limit; `retry_after` (seconds) when the server says."""

    @property
    def retry_after(self) -> float | None:
        raw = self.headers.get("retry-after")
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None


class UsageLimitExceeded(RateLimited):
    """402: a usage limit of the tenant (the detail says which); also caught by `except RateLimited`."""


class ServerError(APIError):
    """5xx: the server failed."""


class InvalidAnswer(APIError):
    """A success answer that is not what the API documents (a field missing, of the wrong type, a status it does
    not have): `detail` names the operation and each field's path (`jobs.0.status`) with what was wrong, `errors`
    lists them (`loc`, `msg`). Raised when the answer is read, instead of a KeyError later."""

    @classmethod
    def of(cls, status: int, operation: str, kind: str, problems: builtins.list[dict[str, Any]]) -> InvalidAnswer:
        """From pydantic's errors (`ValidationError.errors()`) for the answer of `operation` (`GET /v1/...`)."""
        items = [{"loc": [*p.get("loc", ())], "msg": str(p.get("msg", "")), "type": str(p.get("type", ""))}
                 for p in problems]  # fmt: skip
        said = [f"{'.'.join(str(part) for part in i['loc']) or '(the answer)'}: {i['msg']}" for i in items[:5]]
        more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
        detail = f"the answer to {operation} is not {kind}: {'; '.join(said)}{more}"
        return cls(status, "Invalid answer", detail, items)


class APIConnectionError(ReelflowError, ConnectionError):
    """The server could not be reached, or the connection failed (timeouts included)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: UsageLimitExceeded,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLarge,
    422: BadRequest,
    429: RateLimited,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed error for an error answer (problem+json, or anything else a proxy may send)."""
    status = response.status_code
    title = response.reason_phrase or "Error"
    detail = ""
    errors: list[dict[str, Any]] = []
    type_ = "about:blank"
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        title = str(body.get("title") or title)
        raw_detail = body.get("detail")
        detail = raw_detail if isinstance(raw_detail, str) else json.dumps(raw_detail) if raw_detail else ""
        type_ = str(body.get("type") or type_)
        if isinstance(body.get("errors"), list):
            errors = [e for e in body["errors"] if isinstance(e, dict)]
    if not detail:
        detail = response.text.strip()[:500] if body is None else ""
        detail = detail or f"HTTP {status} {title}"
    if status >= 500:
        cls: type[APIError] = ServerError
    elif status == 422 and errors:
        cls = PlanRejected
    else:
        cls = _BY_STATUS.get(status, APIError)
    return cls(status, title, detail, errors, type=type_, headers=dict(response.headers))
