"""A client for a reelflow server's HTTP API: the `AsyncClient`, and the blocking `Client` derived from it.

    client = Client("http://127.0.0.1:8000")         # the key comes from REELFLOW_API_KEY
    execution = client.execute(compose(clip))        # the same handle as compose(clip).execute()
    execution.wait(progress=True)                    # follows the server-sent events
    print(execution.result.url)

Every error answer raises an `APIError` subclass carrying the problem details (`status`, `title`,
`detail`, `errors`); a server that cannot be reached raises `APIConnectionError` (a ConnectionError).
The requests, the event streams and the waiting are written once, in `AsyncClient`; `Client` runs its
coroutines on an event loop of its own, in a thread of its own.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import logging
import os
import queue
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Coroutine, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from . import models
from .client_errors import (
    APIConnectionError,
    APIError,
    BadRequest,
    ConflictError,
    InvalidAnswer,
    NotFoundError,
    PayloadTooLarge,
    PlanRejected,
    RateLimited,
    ServerError,
    Unauthorized,
    UsageLimitExceeded,
    error_from_response,
)
from .sdk import AsyncExecution, Execution, Listener, event_view
from .sse import SSEDecoder, is_terminal_event
from .states import TERMINAL_EXECUTION

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConflictError",
    "InvalidAnswer",
    "NotFoundError",
    "PayloadTooLarge",
    "PlanRejected",
    "RateLimited",
    "SSEDecoder",
    "ServerError",
    "Unauthorized",
    "UsageLimitExceeded",
    "error_from_response",
    "is_terminal_event",
]

log = logging.getLogger("reelflow.client")
T = TypeVar("T")

USER_AGENT = "reelflow-python"
STREAM_READ_TIMEOUT_S = 45.0
"""Longest silence tolerated on an event stream (the server sends a keep-alive every 15 s)."""
REFRESH_S = 0.25
"""While waiting with a display, how often progress events refresh the state at most."""
POLL_S = 0.5
"""How often `wait` polls when the event stream is not available."""


def _connection_error(base_url: str, exc: Exception) -> APIConnectionError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"timed out ({type(exc).__name__})"
    elif (refused := _socket_error(exc)) is not None:
        reason = refused
    return APIConnectionError(f"cannot reach the reelflow server at {base_url}: {reason}")


def _socket_error(exc: BaseException) -> str | None:
    """Why the socket failed, said as a blocking connection says it (`[Errno 111] Connection refused`), where
    the async transport says only `All connection attempts failed`."""
    if str(exc) != "All connection attempts failed":
        return None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[-1]
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
        cause = cause.__cause__ or cause.__context__
    return None


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


class _ModelEntries(BaseModel):
    """What the client checks of `GET /v1/models`: a list of objects. Not each entry against `ModelSpec`, whose
    checks (known job types, ...) would make this client refuse the catalog of a newer server."""

    data: list[dict[str, Any]]


def _checked(answer: type[BaseModel], body: Any, operation: str, status: int) -> Any:
    """`body` (the JSON received, returned as it is) once it parses as `answer`, the API's model of that answer;
    InvalidAnswer naming `operation` and each field that does not match otherwise."""
    try:
        answer.model_validate(body)
    except ValidationError as exc:
        problems = [dict(e) for e in exc.errors(include_url=False, include_input=False)]
        raise InvalidAnswer.of(status, operation, f"a valid {answer.__name__}", problems) from None
    return body


def _timeout_message(execution_id: str, timeout: float | None, status: str = "not finished") -> str:
    return f"execution {execution_id} still {status} after {timeout} s"


# ---------------------------------------------------------------------------------------- async client
class AsyncClient:
    """A reelflow server, async calls (over `httpx.AsyncClient`). `async with`, or `await aclose()`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = _normalize_base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("REELFLOW_API_KEY") or None
        self.timeout = timeout
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        # A plain-http server is never spoken TLS to (no redirects are followed), so no CA bundle is loaded for
        # it (certifi's: 45-115 ms of a CLI command's start-up); a context that trusts nothing stands in.
        verify: ssl.SSLContext | bool = True
        if self.base_url.startswith("http://"):
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, verify=verify)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

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
        answer: type[BaseModel] | None = None,
    ) -> Any:
        """The JSON answer; with `answer` (the model the API answers with), checked against it first."""
        try:
            response = await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.RequestError as exc:
            raise _connection_error(self.base_url, exc) from exc
        body = _decode(response)
        return body if answer is None else _checked(answer, body, f"{method} {path}", response.status_code)

    # executions
    async def execute(
        self, plan: Any, webhook: str | None = None, idempotency_key: str | None = None
    ) -> AsyncExecution:
        """Validate and enqueue a plan (a dict, a `Composition` or a `Step`); return its handle."""
        return self.execution(await self._submit(plan, webhook, idempotency_key))

    async def _submit(self, plan: Any, webhook: str | None, idempotency_key: str | None) -> str:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        body = await self._request(
            "POST", "/v1/executions", json=_plan_of(plan, webhook), headers=headers, answer=models.Accepted
        )
        return str(body["id"])

    def execution(self, execution_id: str) -> AsyncExecution:
        """A handle on an existing execution (nothing is fetched until asked)."""
        return AsyncExecution(execution_id, _HTTPBackend(self))

    async def get(self, execution_id: str) -> dict[str, Any]:
        """The execution's full state, as `GET /v1/executions/{id}` gives it."""
        state: dict[str, Any] = await self._request("GET", _exec_path(execution_id), answer=models.ExecutionState)
        return state

    async def job_logs(self, execution_id: str, job_id: str) -> dict[str, Any]:
        """What the provider logged for one job, as `GET /v1/executions/{id}/jobs/{job_id}/logs` gives it."""
        logs: dict[str, Any] = await self._request(
            "GET", _exec_path(execution_id, f"jobs/{quote(str(job_id), safe='')}/logs"), answer=models.JobLogs
        )
        return logs

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self._request(
            "POST", _exec_path(execution_id, "cancel"), answer=models.ExecutionState
        )
        return state

    async def resume(self, execution_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self._request(
            "POST", _exec_path(execution_id, "resume"), answer=models.ExecutionState
        )
        return state

    async def retry(self, execution_id: str) -> AsyncExecution:
        """A new execution of the same plan; its handle."""
        return self.execution(await self._retry(execution_id))

    async def _retry(self, execution_id: str) -> str:
        return str((await self._request("POST", _exec_path(execution_id, "retry"), answer=models.Accepted))["id"])

    async def estimate(self, plan: Any) -> dict[str, Any]:
        """Cost and time estimate of a plan; nothing is enqueued."""
        answer: dict[str, Any] = await self._request(
            "POST", "/v1/estimate", json=_plan_of(plan), answer=models.Estimate
        )
        return answer

    async def models(self) -> builtins.list[dict[str, Any]]:
        """The model catalog."""
        return list((await self._request("GET", "/v1/models", answer=_ModelEntries))["data"])

    async def usage(self) -> dict[str, Any]:
        """This calendar month's usage of the key's tenant, with its limits."""
        answer: dict[str, Any] = await self._request("GET", "/v1/usage", answer=models.Usage)
        return answer

    async def providers(self) -> dict[str, Any]:
        """Each provider's and model's circuit, recent success rate and limits (`GET /v1/providers`)."""
        answer: dict[str, Any] = await self._request("GET", "/v1/providers", answer=models.ProviderList)
        return answer

    async def stats(self, since: str | None = None) -> dict[str, Any]:
        """The key's tenant's figures (`GET /v1/stats`) since `since`: an ISO 8601 time or a duration such
        as `24h` (the default), `90m`, `7d`."""
        answer: dict[str, Any] = await self._request(
            "GET", "/v1/stats", params={"since": since} if since else None, answer=models.Stats
        )
        return answer

    # events and waiting
    def events(self, execution_id: str, last_event_id: int | str | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """The execution's events (`{seq, type, job, data, created_at}`, `created_at` an ISO 8601 time) in order,
        after `last_event_id`.

        A dropped connection is resumed with `Last-Event-ID`; the iteration ends after the terminal event.
        Leaving early: wrap in `contextlib.aclosing` to close the connection at once."""
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
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last is not None:
                headers["Last-Event-ID"] = last
            try:
                async with self._http.stream(
                    "GET", path, headers=headers, timeout=plan.timeout(self.timeout)
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
                            yield event_view(event)
                            if is_terminal_event(event):
                                return
                        plan.ok(decoder.retry_s)
            except httpx.RequestError as exc:
                await asyncio.sleep(plan.failed(self.base_url, exc, what))
                continue
            if got == 0:  # closed with nothing new: the end when the execution is over, else try again
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
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Executions, newest first, following `next_cursor` across pages (`limit` per page)."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if created_after is not None:
            params["created_after"] = _iso(created_after)
        cursor: str | None = None
        while True:
            page = await self._request(
                "GET",
                "/v1/executions",
                params={**params, **({"cursor": cursor} if cursor else {})},
                answer=models.ExecutionPage,
            )
            for row in page["data"]:
                yield row
            cursor = page.get("next_cursor")
            if not cursor:
                return


class _HTTPBackend:
    """What an `AsyncExecution` handle does on a server."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get(self, execution_id: str) -> dict[str, Any]:
        return await self.client.get(execution_id)

    async def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        return await self.client.wait(execution_id, timeout=timeout, on_update=on_update)

    async def job_logs(self, execution_id: str, job_id: str) -> dict[str, Any]:
        return await self.client.job_logs(execution_id, job_id)

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        return await self.client.cancel(execution_id)

    async def resume(self, execution_id: str) -> dict[str, Any]:
        return await self.client.resume(execution_id)

    async def retry(self, execution_id: str) -> str:
        return await self.client._retry(execution_id)

    def events(self, execution_id: str) -> AsyncGenerator[dict[str, Any], None]:
        return self.client.events(execution_id)


# ------------------------------------------------------------------------------------ blocking client
class _LoopThread:
    """An event loop running in a daemon thread of its own, where the blocking client's calls run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="reelflow-client", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self.loop.is_closed() or threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("the client is closed" if self.loop.is_closed() else "called from its own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """The coroutine's result, the calling thread blocked meanwhile; Ctrl-C there cancels the coroutine."""
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop and close the loop (once); callable from any thread, the loop's own too (garbage collection)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join()
            self.loop.close()


async def _next(stream: AsyncGenerator[T, None]) -> builtins.list[T]:
    """[the next item of `stream`], or [] at its end."""
    try:
        return [await anext(stream)]
    except StopAsyncIteration:
        return []


class Client:
    """A reelflow server, blocking calls. Use as a context manager, or `close()`.

    Each call runs the same call of an `AsyncClient` to completion on this client's own event loop, in a
    thread of its own (so it also works where an event loop already runs), this thread waiting meanwhile."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self._async = AsyncClient(base_url, api_key, timeout=timeout)
        self._loop = _LoopThread()
        self._finalizer = weakref.finalize(self, self._loop.stop)

    @property
    def base_url(self) -> str:
        return self._async.base_url

    @property
    def api_key(self) -> str | None:
        return self._async.api_key

    @property
    def timeout(self) -> float:
        return self._async.timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            self._run(self._async.aclose())
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _iterate(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        """An async generator of the async client, iterated from this thread; closed when left early."""
        try:
            while batch := self._run(_next(stream)):
                yield batch[0]
        finally:
            if not self._loop.loop.is_closed():
                with contextlib.suppress(RuntimeError):  # still running (interrupted): the cancel closes it
                    self._run(stream.aclose())

    # executions
    def execute(self, plan: Any, webhook: str | None = None, idempotency_key: str | None = None) -> Execution:
        """Validate and enqueue a plan (a dict, a `Composition` or a `Step`); return its handle."""
        return self.execution(self._run(self._async._submit(plan, webhook, idempotency_key)))

    def execution(self, execution_id: str) -> Execution:
        """A handle on an existing execution (nothing is fetched until asked)."""
        return Execution(execution_id, _BlockingHTTPBackend(self))

    def get(self, execution_id: str) -> dict[str, Any]:
        """The execution's full state, as `GET /v1/executions/{id}` gives it."""
        return self._run(self._async.get(execution_id))

    def job_logs(self, execution_id: str, job_id: str) -> dict[str, Any]:
        """What the provider logged for one job, as `GET /v1/executions/{id}/jobs/{job_id}/logs` gives it."""
        return self._run(self._async.job_logs(execution_id, job_id))

    def cancel(self, execution_id: str) -> dict[str, Any]:
        return self._run(self._async.cancel(execution_id))

    def resume(self, execution_id: str) -> dict[str, Any]:
        return self._run(self._async.resume(execution_id))

    def retry(self, execution_id: str) -> Execution:
        """A new execution of the same plan; its handle."""
        return self.execution(self._run(self._async._retry(execution_id)))

    def estimate(self, plan: Any) -> dict[str, Any]:
        """Cost and time estimate of a plan; nothing is enqueued."""
        return self._run(self._async.estimate(plan))

    def models(self) -> builtins.list[dict[str, Any]]:
        """The model catalog."""
        return self._run(self._async.models())

    def usage(self) -> dict[str, Any]:
        """This calendar month's usage of the key's tenant, with its limits."""
        return self._run(self._async.usage())

    def stats(self, since: str | None = None) -> dict[str, Any]:
        """The key's tenant's figures (`GET /v1/stats`) since `since`: an ISO 8601 time or a duration such
        as `24h` (the default), `90m`, `7d`."""
        return self._run(self._async.stats(since))

    # events and waiting
    def events(self, execution_id: str, last_event_id: int | str | None = None) -> Iterator[dict[str, Any]]:
        """The execution's events (`{seq, type, job, data, created_at}`, `created_at` an ISO 8601 time) in order,
        after `last_event_id`.

        A dropped connection is resumed with `Last-Event-ID`; the iteration ends after the terminal event.
        """
        return self._iterate(self._async.events(execution_id, last_event_id))

    def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        """Follow the execution to its end (over its events; by polling when they are unavailable).
        `on_update` is called in this thread with each new state."""
        if on_update is None:
            return self._run(self._async.wait(execution_id, timeout=timeout))
        states: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        future = self._loop.submit(self._async.wait(execution_id, timeout=timeout, on_update=states.put))
        future.add_done_callback(lambda _: states.put(None))
        try:
            while (state := states.get()) is not None:
                on_update(state)
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def list(
        self, status: str | None = None, created_after: datetime | str | None = None, limit: int = 50
    ) -> Iterator[dict[str, Any]]:
        """Executions, newest first, following `next_cursor` across pages (`limit` per page)."""
        return self._iterate(self._async.list(status, created_after, limit))


class _BlockingHTTPBackend:
    """What a blocking `Execution` handle does on a server."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, execution_id: str) -> dict[str, Any]:
        return self.client.get(execution_id)

    def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        return self.client.wait(execution_id, timeout=timeout, on_update=on_update)

    def job_logs(self, execution_id: str, job_id: str) -> dict[str, Any]:
        return self.client.job_logs(execution_id, job_id)

    def cancel(self, execution_id: str) -> dict[str, Any]:
        return self.client.cancel(execution_id)

    def resume(self, execution_id: str) -> dict[str, Any]:
        return self.client.resume(execution_id)

    def retry(self, execution_id: str) -> str:
        return self.client._run(self.client._async._retry(execution_id))

    def events(self, execution_id: str) -> Iterator[dict[str, Any]]:
        return self.client.events(execution_id)
