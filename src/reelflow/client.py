"""A client for a reelflow server's HTTP API: the blocking `Client` and the `AsyncClient`.

    client = Client("http://127.0.0.1:8000")         # the key comes from REELFLOW_API_KEY
    execution = client.execute(compose(clip))        # the same handle as compose(clip).execute()
    execution.wait(progress=True)                    # follows the server-sent events
    print(execution.result.url)

Every error answer raises an `APIError` subclass carrying the problem details (`status`, `title`,
`detail`, `errors`); a server that cannot be reached raises `APIConnectionError` (a ConnectionError).
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .errors import Conflict, NotFound, ReelflowError
from .sdk import AsyncExecution, Execution, Listener
from .states import TERMINAL_EXECUTION

log = logging.getLogger("reelflow.client")

USER_AGENT = "reelflow-python"
STREAM_READ_TIMEOUT_S = 45.0
"""Longest silence tolerated on an event stream (the server sends a keep-alive every 15 s)."""
REFRESH_S = 0.25
"""While waiting with a display, how often progress events refresh the state at most."""
POLL_S = 0.5
"""How often `wait` polls when the event stream is not available."""


# ---------------------------------------------------------------------------------------------- errors
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


def _connection_error(base_url: str, exc: Exception) -> APIConnectionError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"timed out ({type(exc).__name__})"
    return APIConnectionError(f"cannot reach the reelflow server at {base_url}: {reason}")


# ---------------------------------------------------------------------------------- server-sent events
_NEWLINE = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Bytes of a `text/event-stream` in, events out (the data of each, parsed as JSON)."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_s: float | None = None

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buf += self._text.decode(chunk)
        out: list[dict[str, Any]] = []
        while (m := _NEWLINE.search(self._buf)) is not None:
            if m.group() == "\r" and m.end() == len(self._buf):
                break  # maybe the first half of a \r\n
            line, self._buf = self._buf[: m.start()], self._buf[m.end():]
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> dict[str, Any] | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_s = int(value) / 1000
        return None

    def _dispatch(self) -> dict[str, Any] | None:
        if self._id is not None:
            self.last_id = self._id
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if not data:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        if isinstance(parsed, dict) and "type" in parsed:
            return parsed
        seq = int(self.last_id) if self.last_id and self.last_id.isdigit() else self.last_id
        return {"seq": seq, "type": event or "message", "job": None, "data": parsed, "created_at": None}


def is_terminal_event(event: Mapping[str, Any]) -> bool:
    """`execution.succeeded`, `execution.failed` or `execution.canceled`: the stream ends after it."""
    kind = str(event.get("type") or "")
    return kind.startswith("execution.") and kind.removeprefix("execution.") in TERMINAL_EXECUTION


def _is_done(state: Mapping[str, Any]) -> bool:
    return state.get("status") in TERMINAL_EXECUTION


_PROGRESS_EVENTS = frozenset({"job.progress", "execution.progress"})


def _wants_refresh(event: Mapping[str, Any], since_refresh: float) -> bool:
    """Whether an event should refresh the displayed state (progress events are throttled)."""
    return since_refresh >= (REFRESH_S if event.get("type") in _PROGRESS_EVENTS else 0.05)


class _Reconnect:
    """When a dropped event stream is resumed (`Last-Event-ID`), and when the client gives up."""

    def __init__(self, window_s: float, deadline: float | None) -> None:
        self.window_s = window_s
        self.deadline = deadline
        self.connected = False
        self.failed_since: float | None = None
        self.failures = 0
        self.retry_s = 2.0

    def timeout(self, base: float) -> httpx.Timeout:
        read = max(base, STREAM_READ_TIMEOUT_S)
        if self.deadline is not None:
            read = min(read, max(0.05, self.deadline - time.monotonic()))
        return httpx.Timeout(base, read=read)

    def ok(self, retry_s: float | None) -> None:
        self.connected = True
        self.failures = 0
        self.failed_since = None
        if retry_s is not None:
            self.retry_s = retry_s

    def check_deadline(self, what: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(what)

    def failed(self, base_url: str, exc: Exception, what: str) -> float:
        """The delay before the next attempt, or raise when the stream cannot be resumed."""
        self.check_deadline(what)
        now = time.monotonic()
        if not self.connected:
            raise _connection_error(base_url, exc) from exc
        if self.failed_since is None:
            self.failed_since = now
        elif now - self.failed_since > self.window_s:
            raise _connection_error(base_url, exc) from exc
        self.failures += 1
        log.info("event stream dropped (%s); resuming (attempt %d)", exc, self.failures)
        return 0.0 if self.failures == 1 else min(self.retry_s, 0.25 * 2 ** (self.failures - 2))


# ----------------------------------------------------------------------------------- shared plumbing
def _plan_of(plan: Any, webhook: str | None = None) -> dict[str, Any]:
    """A plan's data from a plan dict, a `Composition` or a `Step`; `webhook` set when given."""
    data: dict[str, Any]
    if hasattr(plan, "plan") and callable(plan.plan):
        data = dict(plan.plan())
    elif isinstance(plan, Mapping):
        data = dict(plan)
    else:
        raise TypeError(f"expected a plan (a mapping), a Composition or a Step, got {type(plan).__name__}")
    if webhook is not None:
        data["webhook"] = webhook
    return data


def _iso(value: datetime | str) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.astimezone()).isoformat()
    return value


def _normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the server URL must be http(s)://host[:port], got {base_url!r}")
    return url.removesuffix("/v1")


def _exec_path(execution_id: str, action: str = "") -> str:
    path = f"/v1/executions/{quote(str(execution_id), safe='')}"
    return f"{path}/{action}" if action else path


def _decode(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise APIError(
            response.status_code, "Invalid response", f"the server answered {response.status_code} without JSON"
        ) from None


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = _normalize_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("REELFLOW_API_KEY") or None
        self.timeout = timeout
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @staticmethod
    def _list_params(status: str | None, created_after: datetime | str | None, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if created_after is not None:
            params["created_after"] = _iso(created_after)
        return params

    @staticmethod
    def _submit_headers(idempotency_key: str | None) -> dict[str, str]:
        return {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}

    @staticmethod
    def _stream_headers(last_event_id: str | None) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        return headers


def _timeout_message(execution_id: str, timeout: float | None, status: str = "not finished") -> str:
    return f"execution {execution_id} still {status} after {timeout} s"


# ------------------------------------------------------------------------------------ blocking client
class Client(_Base):
    """A reelflow server, blocking calls (over `httpx.Client`). Use as a context manager, or `close()`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.RequestError as exc:
            raise _connection_error(self.base_url, exc) from exc
        return _decode(response)

    # executions
    def execute(self, plan: Any, webhook: str | None = None, idempotency_key: str | None = None) -> Execution:
        """Validate and enqueue a plan (a dict, a `Composition` or a `Step`); return its handle."""
        body = self._request(
            "POST", "/v1/executions", json=_plan_of(plan, webhook), headers=self._submit_headers(idempotency_key)
        )
        return self.execution(body["id"])

    def execution(self, execution_id: str) -> Execution:
        """A handle on an existing execution (nothing is fetched until asked)."""
        return Execution(execution_id, _HTTPBackend(self))

    def get(self, execution_id: str) -> dict[str, Any]:
        """The execution's full state, as `GET /v1/executions/{id}` gives it."""
        state: dict[str, Any] = self._request("GET", _exec_path(execution_id))
        return state

    def cancel(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self._request("POST", _exec_path(execution_id, "cancel"))
        return state

    def resume(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self._request("POST", _exec_path(execution_id, "resume"))
        return state

    def retry(self, execution_id: str) -> Execution:
        """A new execution of the same plan; its handle."""
        return self.execution(self._retry(execution_id))

    def _retry(self, execution_id: str) -> str:
        return str(self._request("POST", _exec_path(execution_id, "retry"))["id"])

    def estimate(self, plan: Any) -> dict[str, Any]:
        """Cost and time estimate of a plan; nothing is enqueued."""
        answer: dict[str, Any] = self._request("POST", "/v1/estimate", json=_plan_of(plan))
        return answer

    def models(self) -> builtins.list[dict[str, Any]]:
        """The model catalog."""
        return list(self._request("GET", "/v1/models")["data"])

    def usage(self) -> dict[str, Any]:
        """This calendar month's usage of the key's tenant, with its limits."""
        answer: dict[str, Any] = self._request("GET", "/v1/usage")
        return answer

    def stats(self, since: str | None = None) -> dict[str, Any]:
        """The key's tenant's figures (`GET /v1/stats`) since `since`: an ISO 8601 time or a duration such
        as `24h` (the default), `90m`, `7d`."""
        answer: dict[str, Any] = self._request("GET", "/v1/stats", params={"since": since} if since else None)
        return answer

    # events and waiting
    def events(self, execution_id: str, last_event_id: int | str | None = None) -> Iterator[dict[str, Any]]:
        """The execution's events (`{seq, type, job, data, created_at}`) in order, after `last_event_id`.

        A dropped connection is resumed with `Last-Event-ID`; the iteration ends after the terminal event.
        """
        last = str(last_event_id) if last_event_id is not None else None
        return self._events(execution_id, last)

    def _events(
        self, execution_id: str, last: str | None, deadline: float | None = None, what: str = ""
    ) -> Iterator[dict[str, Any]]:
        path = _exec_path(execution_id, "events")
        plan = _Reconnect(self.timeout, deadline)
        while True:
            plan.check_deadline(what)
            got = 0
            try:
                with self._http.stream(
                    "GET", path, headers=self._stream_headers(last), timeout=plan.timeout(self.timeout)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    decoder = SSEDecoder()
                    plan.ok(None)
                    for chunk in response.iter_bytes():
                        for event in decoder.feed(chunk):
                            got += 1
                            last = decoder.last_id or last
                            yield event
                            if is_terminal_event(event):
                                return
                        plan.ok(decoder.retry_s)
            except httpx.RequestError as exc:
                time.sleep(plan.failed(self.base_url, exc, what))
                continue
            if got == 0:  # closed with nothing new: the end when the execution is over, else try again
                if _is_done(self.get(execution_id)):
                    return
                time.sleep(plan.retry_s)

    def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        """Follow the execution to its end (over its events; by polling when they are unavailable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = self.get(execution_id)
        if on_update is not None:
            on_update(state)
        if _is_done(state):
            return state
        try:
            return self._wait_events(execution_id, deadline, on_update, timeout)
        except Unauthorized:
            raise
        except (APIError, APIConnectionError) as exc:
            log.info("event stream of %s unavailable (%s); polling", execution_id, exc)
        return self._poll(execution_id, deadline, on_update, timeout)

    def _wait_events(
        self, execution_id: str, deadline: float | None, on_update: Listener | None, timeout: float | None
    ) -> dict[str, Any]:
        last: str | None = None
        refreshed = time.monotonic()
        while True:
            for event in self._events(execution_id, last, deadline, _timeout_message(execution_id, timeout)):
                last = str(event["seq"]) if event.get("seq") is not None else last
                if on_update is not None and not is_terminal_event(event):
                    if _wants_refresh(event, time.monotonic() - refreshed):
                        on_update(self.get(execution_id))
                        refreshed = time.monotonic()
            state = self.get(execution_id)
            if on_update is not None:
                on_update(state)
            if _is_done(state):
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(execution_id, timeout, state["status"]))

    def _poll(
        self, execution_id: str, deadline: float | None, on_update: Listener | None, timeout: float | None
    ) -> dict[str, Any]:
        while True:
            state = self.get(execution_id)
            if on_update is not None:
                on_update(state)
            if _is_done(state):
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(execution_id, timeout, state["status"]))
            time.sleep(POLL_S)

    def list(
        self, status: str | None = None, created_after: datetime | str | None = None, limit: int = 50
    ) -> Iterator[dict[str, Any]]:
        """Executions, newest first, following `next_cursor` across pages (`limit` per page)."""
        params = self._list_params(status, created_after, limit)
        cursor: str | None = None
        while True:
            page = self._request("GET", "/v1/executions", params={**params, **({"cursor": cursor} if cursor else {})})
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


class _HTTPBackend:
    """What a blocking `Execution` handle does on a server."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, execution_id: str) -> dict[str, Any]:
        return self.client.get(execution_id)

    def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        return self.client.wait(execution_id, timeout=timeout, on_update=on_update)

    def cancel(self, execution_id: str) -> dict[str, Any]:
        return self.client.cancel(execution_id)

    def resume(self, execution_id: str) -> dict[str, Any]:
        return self.client.resume(execution_id)

    def retry(self, execution_id: str) -> str:
        return self.client._retry(execution_id)


# ---------------------------------------------------------------------------------------- async client
class AsyncClient(_Base):
    """A reelflow server, async calls (over `httpx.AsyncClient`). `async with`, or `await aclose()`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.RequestError as exc:
            raise _connection_error(self.base_url, exc) from exc
        return _decode(response)

    async def execute(
        self, plan: Any, webhook: str | None = None, idempotency_key: str | None = None
    ) -> AsyncExecution:
        """Validate and enqueue a plan (a dict, a `Composition` or a `Step`); return its handle."""
        body = await self._request(
            "POST", "/v1/executions", json=_plan_of(plan, webhook), headers=self._submit_headers(idempotency_key)
        )
        return self.execution(body["id"])

    def execution(self, execution_id: str) -> AsyncExecution:
        """A handle on an existing execution (nothing is fetched until asked)."""
        return AsyncExecution(execution_id, _AsyncHTTPBackend(self))

    async def get(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self._request("GET", _exec_path(execution_id))
        return state

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self._request("POST", _exec_path(execution_id, "cancel"))
        return state

    async def resume(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self._request("POST", _exec_path(execution_id, "resume"))
        return state

    async def retry(self, execution_id: str) -> AsyncExecution:
        return self.execution(await self._retry(execution_id))

    async def _retry(self, execution_id: str) -> str:
        return str((await self._request("POST", _exec_path(execution_id, "retry")))["id"])

    async def estimate(self, plan: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", "/v1/estimate", json=_plan_of(plan))
        return answer

    async def models(self) -> builtins.list[dict[str, Any]]:
        return list((await self._request("GET", "/v1/models"))["data"])

    async def usage(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", "/v1/usage")
        return answer

    async def stats(self, since: str | None = None) -> dict[str, Any]:
        """The key's tenant's figures (`GET /v1/stats`) since `since` (ISO 8601 time or duration; 24h)."""
        answer: dict[str, Any] = await self._request("GET", "/v1/stats", params={"since": since} if since else None)
        return answer

    def events(self, execution_id: str, last_event_id: int | str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The execution's events in order, after `last_event_id`; resumes dropped connections; ends after
        the terminal event. Leaving early: wrap in `contextlib.aclosing` to close the connection at once."""
        last = str(last_event_id) if last_event_id is not None else None
        return self._events(execution_id, last)

    async def _events(
        self, execution_id: str, last: str | None, deadline: float | None = None, what: str = ""
    ) -> AsyncGenerator[dict[str, Any], None]:
        path = _exec_path(execution_id, "events")
        plan = _Reconnect(self.timeout, deadline)
        while True:
            plan.check_deadline(what)
            got = 0
            try:
                async with self._http.stream(
                    "GET", path, headers=self._stream_headers(last), timeout=plan.timeout(self.timeout)
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    decoder = SSEDecoder()
                    plan.ok(None)
                    async for chunk in response.aiter_bytes():
                        for event in decoder.feed(chunk):
                            got += 1
                            last = decoder.last_id or last
                            yield event
                            if is_terminal_event(event):
                                return
                        plan.ok(decoder.retry_s)
            except httpx.RequestError as exc:
                await asyncio.sleep(plan.failed(self.base_url, exc, what))
                continue
            if got == 0:
                if _is_done(await self.get(execution_id)):
                    return
                await asyncio.sleep(plan.retry_s)

    async def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        """Follow the execution to its end (over its events; by polling when they are unavailable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = await self.get(execution_id)
        if on_update is not None:
            on_update(state)
        if _is_done(state):
            return state
        try:
            return await self._wait_events(execution_id, deadline, on_update, timeout)
        except Unauthorized:
            raise
        except (APIError, APIConnectionError) as exc:
            log.info("event stream of %s unavailable (%s); polling", execution_id, exc)
        return await self._poll(execution_id, deadline, on_update, timeout)

    async def _wait_events(
        self, execution_id: str, deadline: float | None, on_update: Listener | None, timeout: float | None
    ) -> dict[str, Any]:
        last: str | None = None
        refreshed = time.monotonic()
        while True:
            what = _timeout_message(execution_id, timeout)
            async with contextlib.aclosing(self._events(execution_id, last, deadline, what)) as stream:
                async for event in stream:
                    last = str(event["seq"]) if event.get("seq") is not None else last
                    if on_update is not None and not is_terminal_event(event):
                        if _wants_refresh(event, time.monotonic() - refreshed):
                            on_update(await self.get(execution_id))
                            refreshed = time.monotonic()
            state = await self.get(execution_id)
            if on_update is not None:
                on_update(state)
            if _is_done(state):
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(execution_id, timeout, state["status"]))

    async def _poll(
        self, execution_id: str, deadline: float | None, on_update: Listener | None, timeout: float | None
    ) -> dict[str, Any]:
        while True:
            state = await self.get(execution_id)
            if on_update is not None:
                on_update(state)
            if _is_done(state):
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(_timeout_message(execution_id, timeout, state["status"]))
            await asyncio.sleep(POLL_S)

    async def list(
        self, status: str | None = None, created_after: datetime | str | None = None, limit: int = 50
    ) -> AsyncIterator[dict[str, Any]]:
        """Executions, newest first, following `next_cursor` across pages (`limit` per page)."""
        params = self._list_params(status, created_after, limit)
        cursor: str | None = None
        while True:
            page = await self._request(
                "GET", "/v1/executions", params={**params, **({"cursor": cursor} if cursor else {})}
            )
            for row in page["data"]:
                yield row
            cursor = page.get("next_cursor")
            if not cursor:
                return


class _AsyncHTTPBackend:
    """What an `AsyncExecution` handle does on a server."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get(self, execution_id: str) -> dict[str, Any]:
        return await self.client.get(execution_id)

    async def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        return await self.client.wait(execution_id, timeout=timeout, on_update=on_update)

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        return await self.client.cancel(execution_id)

    async def resume(self, execution_id: str) -> dict[str, Any]:
        return await self.client.resume(execution_id)

    async def retry(self, execution_id: str) -> str:
        return await self.client._retry(execution_id)
