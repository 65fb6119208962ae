"""RFC 9457 problem+json for every error the API can give, malformed requests included."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    Conflict,
    IdempotencyConflict,
    NotFound,
    PlanError,
    ReelflowError,
    StoreBusy,
    StoreUnavailable,
    UsageLimitExceeded,
)
from ..limits import LimitsFileError
from ..providers.catalog import CatalogFileError

log = logging.getLogger("reelflow.api")
PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 1_000_000
MAX_TARGET_BYTES = 64 * 1024
"""The longest request target (path and query) answered; a longer one is answered 414."""
MAX_HEAD_BYTES = 128 * 1024
"""The most bytes of request line and headers read for one request; more is answered 431 (or 414)."""
_LOGGED_CONFIG_PROBLEMS: set[str] = set()
"""Configuration problems already logged: each is logged once, not on every request it fails."""


class Problem(Exception):
    """An error answer: status, a short title, a detail, and optional per-field errors."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.headers = headers
        self.type = type_ or "about:blank"


def problem_body(p: Problem, instance: str | None = None) -> dict[str, Any]:
    """The problem+json document of `p`."""
    body: dict[str, Any] = {"type": p.type, "title": p.title, "status": p.status, "detail": p.detail}
    if instance:
        body["instance"] = instance
    if p.errors is not None:
        body["errors"] = p.errors
    return body


def problem_response(p: Problem, instance: str | None = None) -> JSONResponse:
    return JSONResponse(problem_body(p, instance), status_code=p.status, media_type=PROBLEM, headers=p.headers)


def _loc(parts: Any) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in parts]


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(PlanError)
    async def _plan(request: Request, exc: PlanError) -> JSONResponse:
        errors = [e.as_dict() for e in exc.errors]
        return problem_response(Problem(422, str(exc), title="Invalid plan", errors=errors), request.url.path)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(Problem(404, str(exc)), request.url.path)

    @app.exception_handler(IdempotencyConflict)
    async def _idem(request: Request, exc: IdempotencyConflict) -> JSONResponse:
        return problem_response(Problem(409, str(exc), title="Idempotency-Key reused"), request.url.path)

    @app.exception_handler(UsageLimitExceeded)
    async def _usage(request: Request, exc: UsageLimitExceeded) -> JSONResponse:
        title = "Monthly cost budget reached" if exc.status == 402 else "Monthly execution limit reached"
        return problem_response(Problem(exc.status, str(exc), title=title), request.url.path)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        busy = isinstance(exc, StoreBusy)
        problem = Problem(
            503,
            f"{exc}; try again shortly",
            title="Database busy" if busy else "Database unavailable",
            headers={"Retry-After": "1" if busy else "5"},
        )
        return problem_response(problem, request.url.path)

    @app.exception_handler(LimitsFileError)
    @app.exception_handler(CatalogFileError)
    async def _configuration(request: Request, exc: ReelflowError) -> JSONResponse:
        # `serve` checks both files at start; this answers when one goes bad while the server runs
        if str(exc) not in _LOGGED_CONFIG_PROBLEMS:
            _LOGGED_CONFIG_PROBLEMS.add(str(exc))
            log.error("configuration problem, requests answer 503 until it is fixed: %s", exc)
        problem = Problem(503, str(exc), title="Server misconfigured", headers={"Retry-After": "60"})
        return problem_response(problem, request.url.path)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem_response(Problem(409, str(exc)), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", "invalid"))} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors) or "invalid request"
        return problem_response(Problem(422, detail, title="Invalid request", errors=errors), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:  # every method the path has (Starlette names only the first route's)
            allow = ", ".join(allowed_methods(request))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": f"{allow}, OPTIONS"})
            headers = {**(headers or {}), "Allow": allow}
        return problem_response(Problem(exc.status_code, detail, headers=headers), request.url.path)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # an aborted upload: nothing to answer (nobody reads it), nothing wrong on our side
        log.info("%s %s: the client disconnected before sending its whole request", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal error; it has been logged"), request.url.path)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers on the request's path (asked of the routes, included routers too)."""
    routes = request.app.router.routes
    return [
        m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)
    ]


def head_too_big(target_bytes: int, head_bytes: int) -> Problem | None:
    """The answer to a request whose target or head is over the limits, or None when both are within."""
    if target_bytes > MAX_TARGET_BYTES:
        return Problem(414, f"request target (path and query) over {MAX_TARGET_BYTES} bytes")
    if head_bytes > MAX_HEAD_BYTES:
        return Problem(431, f"request line and headers over {MAX_HEAD_BYTES} bytes")
    return None


class HeadLimit:
    """Refuse a request target over MAX_TARGET_BYTES with 414 and a head over MAX_HEAD_BYTES with 431.

    The HTTP protocol refuses a head that grows past MAX_HEAD_BYTES before it is whole; one that arrived
    whole is measured here, so the answer does not depend on how the bytes were split on the way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            head = target + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            refusal = head_too_big(target, head)
            if refusal is not None:
                await problem_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not Content-Length says so."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = Problem(413, f"request body over {self.limit} bytes", title="Request too large")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit or declared < 0:
                    await problem_response(too_big if declared > 0 else Problem(400, "bad Content-Length"))(
                        scope, receive, send
                    )
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise Problem(413, f"request body over {self.limit} bytes", title="Request too large")
            return message

        await self.app(scope, limited, send)


ProblemHandler = Callable[[Request, Exception], Awaitable[JSONResponse]]
