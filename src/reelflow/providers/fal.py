"""`fal/*`: models on fal's queue API.

Submit answers a request id; we keep it with the `<owner>/<app>` that status, result and cancel URLs
are built from. The URLs fal hands back are never followed: every request goes to the configured base
host, so the key (`Authorization: Key ...`) never leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from .base import (
    Output,
    PermanentError,
    ProgressReporter,
    ProgressUpdate,
    ProviderError,
    ProviderResult,
    Task,
    TransientError,
)
from .catalog_fal import to_fal_input
from .http import retry_after

DEFAULT_BASE_URL = "https://queue.fal.run"
POLL_ERROR_RETRIES = 5
"""Consecutive transient errors while polling that `wait` absorbs before raising (the work lives on)."""

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _split_model(model: str | None) -> tuple[str, str, str]:
    """`fal/<owner>/<app>[/<subpath>]` -> (owner, app, subpath or '')."""
    parts = (model or "").split("/")
    if len(parts) < 3 or parts[0] != "fal" or not all(_SEGMENT.match(p) for p in parts[1:]):
        raise PermanentError(f"not a fal model id: {model!r} (expected fal/<owner>/<app>[/<path>])")
    return parts[1], parts[2], "/".join(parts[3:])


def _split_id(provider_id: str) -> tuple[str, str, str]:
    """Our stored id `<owner>/<app>/<request id>` -> its parts."""
    parts = provider_id.split("/")
    if len(parts) != 3 or not all(_SEGMENT.match(p) for p in parts):
        raise PermanentError(f"not a fal request id: {provider_id!r}")
    return parts[0], parts[1], parts[2]


def _detail(response: httpx.Response) -> str:
    """fal's error detail as given (a string, or the list of {loc, msg, type} as JSON)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000].strip() or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, str):
            return detail
        return json.dumps(detail, ensure_ascii=False)
    return json.dumps(body, ensure_ascii=False)


def _classify(response: httpx.Response, doing: str) -> ProviderError:
    """The error for a non-2xx answer."""
    status = response.status_code
    message = f"fal: {doing} failed: HTTP {status}: {_detail(response)}"
    retryable = response.headers.get("x-fal-retryable", "").strip().lower()
    if retryable == "false":
        return PermanentError(message)
    if status == 429:
        return TransientError(message, retry_after=retry_after(response))
    if status >= 500 or status in (408, 409) or retryable == "true":
        return TransientError(message, retry_after=retry_after(response))
    return PermanentError(message)


def _percent(logs: Any) -> float | None:
    """The percentage in the last log message that holds one."""
    if not isinstance(logs, list):
        return None
    for entry in reversed(logs):
        message = entry.get("message") if isinstance(entry, dict) else entry
        if isinstance(message, str):
            found = _PERCENT.findall(message)
            if found:
                return max(0.0, min(100.0, float(found[-1])))
    return None


def _outputs(result: dict[str, Any]) -> list[Output]:
    outputs: list[Output] = []

    def add(item: Any) -> None:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            ctype = item.get("content_type")
            outputs.append(Output(url=item["url"], content_type=ctype if isinstance(ctype, str) else None))
        elif isinstance(item, str) and item.startswith(("http://", "https://")):
            outputs.append(Output(url=item))

    images = result.get("images")
    if isinstance(images, list):
        for image in images:
            add(image)
    for key in ("image", "video", "audio", "audio_file", "audio_url"):
        add(result.get(key))
    return outputs


class FalProvider:
    """fal's queue API behind the Provider protocol."""

    name = "fal"

    def __init__(
        self,
        key: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        poll_initial_s: float = 1.0,
        poll_max_s: float = 15.0,
    ) -> None:
        self._key = key
        self._base_url = base_url
        self._client = client
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return (self._base_url or os.environ.get("REELFLOW_FAL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    def _headers(self) -> dict[str, str]:
        key = self._key or os.environ.get("FAL_KEY")
        if not key:
            raise PermanentError("FAL_KEY is not set")
        return {"Authorization": f"Key {key}", "Accept": "application/json"}

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
        else:
            async with httpx.AsyncClient(timeout=_TIMEOUT) as client:
                yield client

    async def _request(
        self, client: httpx.AsyncClient, method: str, path: str, doing: str, **kwargs: Any
    ) -> httpx.Response:
        """One call to the base host (never anywhere else, never redirected); transport trouble is transient."""
        headers = self._headers()
        try:
            return await client.request(method, self.base_url + path, headers=headers, follow_redirects=False, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransientError(f"fal: {doing} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"fal: {doing} failed: {type(exc).__name__}: {exc}") from None

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        owner, app, subpath = _split_model(task.model)
        if task.type == "run":
            body = task.params.get("input") or {}
            if not isinstance(body, dict):
                raise PermanentError("fal: a run job's params.input must be an object")
        else:
            body = to_fal_input(task.model, task.params)
        path = "/" + "/".join(quote(p, safe="") for p in (owner, app, *filter(None, subpath.split("/"))))
        async with self._http() as client:
            response = await self._request(client, "POST", path, f"submitting to {owner}/{app}", json=body)
        if not response.is_success:
            raise _classify(response, f"submitting to {task.model}")
        try:
            request_id = response.json()["request_id"]
        except (ValueError, KeyError, TypeError):
            raise TransientError(f"fal: submit answered without a request_id: {response.text[:200]!r}") from None
        if not isinstance(request_id, str) or not _SEGMENT.match(request_id):
            raise PermanentError(f"fal: unexpected request_id {request_id!r}")
        return f"{owner}/{app}/{request_id}"

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        owner, app, request_id = _split_id(provider_id)
        base_path = f"/{owner}/{app}/requests/{request_id}"
        interval = self.poll_initial_s
        errors = 0
        async with self._http() as client:
            while True:
                delay = interval
                try:
                    status = await self._status(client, base_path)
                    errors = 0
                except TransientError as exc:
                    errors += 1
                    if errors > POLL_ERROR_RETRIES:
                        raise
                    status = None
                    if exc.retry_after is not None:
                        delay = max(delay, exc.retry_after)
                if status is not None:
                    state = status.get("status")
                    if state == "COMPLETED":
                        return await self._finish(client, base_path, provider_id, status)
                    if state == "IN_QUEUE":
                        position = status.get("queue_position")
                        await _report(
                            report,
                            ProgressUpdate(
                                phase="queued", queue_position=position if isinstance(position, int) else None
                            ),
                        )
                    elif state == "IN_PROGRESS":
                        await _report(report, ProgressUpdate(phase="running", percent=_percent(status.get("logs"))))
                await asyncio.sleep(delay)
                interval = min(self.poll_max_s, interval * 2)

    async def _status(self, client: httpx.AsyncClient, base_path: str) -> dict[str, Any]:
        response = await self._request(
            client, "GET", base_path + "/status", "checking the request", params={"logs": "1"}
        )
        if not response.is_success:
            raise _classify(response, "checking the request")
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"fal: status answered non-JSON: {response.text[:200]!r}") from None
        if not isinstance(body, dict):
            raise TransientError(f"fal: status answered {body!r:.200}")
        return body

    async def _finish(
        self, client: httpx.AsyncClient, base_path: str, provider_id: str, status: dict[str, Any]
    ) -> ProviderResult:
        if status.get("error") or status.get("error_type"):
            kind = status.get("error_type")
            message = status.get("error") or "the request failed"
            if not isinstance(message, str):
                message = json.dumps(message, ensure_ascii=False)
            raise PermanentError(f"fal: {message}" + (f" ({kind})" if kind else ""))
        response = None
        for attempt in range(POLL_ERROR_RETRIES + 1):
            try:
                response = await self._request(client, "GET", base_path, "fetching the result")
            except TransientError:
                if attempt == POLL_ERROR_RETRIES:
                    raise
                await asyncio.sleep(min(self.poll_max_s, self.poll_initial_s * 2**attempt))
                continue
            if response.is_success or not _classify(response, "").transient or attempt == POLL_ERROR_RETRIES:
                break
            await asyncio.sleep(retry_after(response) or min(self.poll_max_s, self.poll_initial_s * 2**attempt))
        assert response is not None
        if not response.is_success:
            raise _classify(response, "fetching the result")
        try:
            result = response.json()
        except ValueError:
            raise TransientError(f"fal: result answered non-JSON: {response.text[:200]!r}") from None
        if not isinstance(result, dict):
            raise PermanentError(f"fal: unexpected result {result!r:.200}")
        outputs = _outputs(result)
        if not outputs:
            raise PermanentError(f"fal: the result holds no output file: {json.dumps(result)[:500]}")
        metrics = status.get("metrics") if isinstance(status.get("metrics"), dict) else {}
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "seed": result.get("seed"),
            "inference_time": (metrics or {}).get("inference_time"),
        }
        return ProviderResult(outputs=outputs, fields=fields)

    async def cancel(self, task: Task, provider_id: str) -> None:
        owner, app, request_id = _split_id(provider_id)
        async with self._http() as client:
            response = await self._request(
                client, "PUT", f"/{owner}/{app}/requests/{request_id}/cancel", "cancelling the request"
            )
        if response.is_success or response.status_code in (400, 404):
            return  # 400 ALREADY_COMPLETED, 404 gone: nothing left to pay for
        raise _classify(response, "cancelling the request")


async def _report(report: ProgressReporter, update: ProgressUpdate) -> None:
    maybe = report(update)
    if maybe is not None:
        await maybe
