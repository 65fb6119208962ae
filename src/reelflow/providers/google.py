"""`google/*`: Veo video models on the Gemini API (long-running operations).

`submit` sends `POST {base}/models/{model}:predictLongRunning` (`instances[0]`: prompt and inline images;
`parameters`: aspect ratio, resolution, duration...) and returns the operation's `name`
(`models/{model}/operations/{id}`), which the worker saves before `wait`. `wait` polls `GET {base}/{name}` with a
growing interval until `done`, then downloads `response.generateVideoResponse.generatedSamples[0].video.uri`.
Google keeps generated videos for a short time only (days): the worker stores our copy at once.

The key (`x-goog-api-key`, from GEMINI_API_KEY) goes only to the configured base's origin: the video URI is
requested with it only when it is on that same scheme, host and port (anything else is refused, permanently),
and a redirect from there is followed without it, through the egress guard. The key is never put in a URL.

Errors are `{"error": {"code", "message", "status", "details"}}`: RESOURCE_EXHAUSTED (429) is a refusal at the
door (`not_sent`), retried after its `RetryInfo.retryDelay` (or Retry-After); 5xx, UNAVAILABLE and the like are
transient; INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION and other 4xx are permanent. An operation
that ends with `error` is classified by its code (a transient one submits anew: that work is gone). An answer
whose samples were all removed by Google's safety filters (`raiMediaFilteredCount`, `raiMediaFilteredReasons`)
fails at once with the reasons.

Paying once. The Gemini API documents no way to list Veo operations nor an idempotency key for
`predictLongRunning`, so `find_submitted` raises CannotReconcile (the worker records a possible duplicate charge
when it must submit again after a lost answer). Nor does it document cancelling a Veo operation: `cancel` only
logs; the operation runs to its end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ..net import check_url_syntax, fetch_output, stream_to_file
from .base import (
    CannotReconcile,
    Output,
    PermanentError,
    ProgressReporter,
    ProgressUpdate,
    ProviderError,
    ProviderResult,
    Task,
    TransientError,
)
from .base import (
    report_progress as _report,
)
from .catalog import is_http_url, params_with_defaults
from .catalog.google import IMAGE_PARAMS, INPUT_MAP, LONG_ONLY_RESOLUTIONS, MODELS_BY_ID, price_per_second, split_params
from .http import HttpAdapter, retry_after
from .info import BUILTIN_INFO

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
KEY_ENV = "GEMINI_API_KEY"
BASE_URL_ENV = "REELFLOW_GOOGLE_BASE_URL"

TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0)
MAX_VIDEO_BYTES = 2 * 1024**3
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Inline data in a Gemini API request may not exceed 20 MB."""
DOWNLOAD_TIMEOUT_S = 600.0
MAX_POLL_FAILURES = 5
"""Consecutive transient failures of a status poll tolerated inside one `wait` before giving up."""

_MODEL_RE = re.compile(r"^google/([a-z0-9][a-z0-9.-]{0,127})$")
_OPERATION_RE = re.compile(r"^models/[a-z0-9][a-z0-9.-]{0,127}/operations/[A-Za-z0-9_-]{1,256}$")
_DELAY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}

_TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"})
_TRANSIENT_CODES = frozenset({4, 8, 10, 13, 14})
"""google.rpc.Code numbers of the statuses above: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL,
UNAVAILABLE."""


def retry_delay(details: Any) -> float | None:
    """Seconds from a `google.rpc.RetryInfo` in an error's `details` (`"retryDelay": "17s"`); None without one."""
    if not isinstance(details, list):
        return None
    for item in details:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and (found := _DELAY_RE.match(delay)):
            return min(float(found.group(1)), 3600.0)
    return None


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def classify(response: httpx.Response, doing: str) -> ProviderError:
    """The error for a non-2xx answer, from its HTTP status and the `error.status` Google names."""
    status = response.status_code
    error = _error_body(response)
    rpc = str(error.get("status") or "")
    message = str(error.get("message") or response.text[:300].strip() or response.reason_phrase)
    text = f"google: {doing} failed: HTTP {status}" + (f" {rpc}" if rpc else "") + f": {message}"
    if status == 429 or rpc == "RESOURCE_EXHAUSTED":  # a quota refuses the request before any work
        wait = retry_delay(error.get("details"))
        return TransientError(text, retry_after=wait if wait is not None else retry_after(response), not_sent=True)
    if status >= 500 or status == 408 or rpc in _TRANSIENT_STATUSES:
        return TransientError(text, retry_after=retry_after(response))
    if 300 <= status < 400:
        return PermanentError(f"google: {doing} answered a redirect (HTTP {status}), which is not followed")
    return PermanentError(text)


def operation_error(name: str, error: dict[str, Any]) -> ProviderError:
    """The error for an operation that ended with a `google.rpc.Status`: transient codes submit anew."""
    code = error.get("code")
    message = str(error.get("message") or "no error message given")
    text = f"google: operation {name} failed: {message}" + (f" (code {code})" if code is not None else "")
    if code in _TRANSIENT_CODES:
        return TransientError(text, retry_after=retry_delay(error.get("details")), resubmit=True)
    return PermanentError(text)


def _model_name(model: str | None) -> str:
    found = _MODEL_RE.match(model or "")
    if found is None:
        raise PermanentError(f"not a google model id: {model!r} (expected google/<model>)")
    return found.group(1)


def _json_object(response: httpx.Response, doing: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise TransientError(f"google: {doing} answered non-JSON: {response.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise TransientError(f"google: {doing} answered {type(data).__name__}, not an object")
    return data


def _origin(url: str) -> tuple[str, str | None, int | None] | None:
    """(scheme, host, port) of an http(s) URL without credentials; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname.lower(), port


def _image_type(data: bytes) -> str | None:
    """The MIME type of a JPEG, PNG or WebP image, from its first bytes (whatever its name or server says);
    None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class GoogleProvider(HttpAdapter):
    """Veo on the Gemini API behind the Provider protocol."""

    info = BUILTIN_INFO["google"]
    """Default limits: none built in. Veo quotas on the Gemini API are per project and depend on its tier
    (requests per minute and per day, creates only); an operator sets `max_concurrent` in the limits file. A 429
    slows the gate meanwhile. It sends our artifacts (reference images) inline, read from local files."""
    default_base_url = DEFAULT_BASE_URL
    timeout = TIMEOUT

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.key}

    # --- the request -----------------------------------------------------------------------------

    def _params(self, task: Task) -> dict[str, Any]:
        spec = self.model_catalog().google_spec(task.model or "")
        return params_with_defaults(spec.params, task.params) if spec is not None else dict(task.params)

    async def _body(self, task: Task) -> dict[str, Any]:
        """The `predictLongRunning` body for our params; PermanentError for a request Veo would refuse."""
        if task.type != "generate-video":
            raise PermanentError(f"google: {task.model} runs generate-video jobs (got {task.type})")
        params = self._params(task)
        unknown = sorted(k for k, v in params.items() if v is not None and k not in INPUT_MAP)
        if unknown:
            raise PermanentError(f"google: {task.model} takes no parameter {', '.join(unknown)}")
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise PermanentError("google: a prompt is required")
        resolution, duration = params.get("resolution"), params.get("duration")
        if resolution in LONG_ONLY_RESOLUTIONS and duration != 8:
            raise PermanentError(f"google: Veo makes {resolution} only for 8 s clips (got duration {duration})")
        if params.get("last_frame") is not None and params.get("image") is None and "image" not in task.inputs:
            raise PermanentError("google: last_frame needs image (the first frame) too")
        instance, parameters = split_params(params)
        for param in sorted(IMAGE_PARAMS):
            if params.get(param) is not None or param in task.inputs:
                instance[INPUT_MAP[param][1]] = await self._image(task, param)
        return {"instances": [instance], "parameters": parameters}

    async def _image(self, task: Task, param: str) -> dict[str, str]:
        """An image parameter inline: our stored artifact when it is one, else downloaded through the egress
        guard (public addresses only, unless allowed), size-limited, as base64 with its MIME type."""
        local = task.inputs.get(param)
        if local is not None:
            path = Path(local)
        else:
            url = task.params.get(param)
            if not is_http_url(url):
                raise PermanentError(f"google: parameter '{param}' must be an http(s) URL (got {str(url)[:200]!r})")
            policy = self.egress_policy()
            problem = check_url_syntax(str(url), policy=policy)
            if problem is not None:
                raise PermanentError(f"google: fetching '{param}': {problem}")
            client = self.guarded_http(policy, timeout=self.timeout)
            try:
                path, _ = await fetch_output(
                    client, str(url), task.workdir / f"input-{param}", limit_bytes=MAX_IMAGE_BYTES
                )
            except ProviderError as exc:
                message = exc.message.replace("the output", "the image")
                raise type(exc)(f"google: fetching '{param}': {message}", retry_after=exc.retry_after) from None
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
            if size > MAX_IMAGE_BYTES:
                raise PermanentError(f"google: image '{param}' is {size} bytes, over the limit of {MAX_IMAGE_BYTES}")
            data = await asyncio.to_thread(path.read_bytes)
        except OSError:
            raise PermanentError(f"google: input '{param}' is missing from the worker's disk") from None
        mime = _image_type(data)
        if mime is None:
            raise PermanentError(f"google: image '{param}' must be jpeg, png or webp (its bytes are none of these)")
        return {"bytesBase64Encoded": base64.b64encode(data).decode("ascii"), "mimeType": mime}

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        self.auth_headers()  # fail now, before anything waits, when the key is missing
        model = _model_name(task.model)
        body = await self._body(task)
        doing = f"creating a video with {task.model}"
        response = await self.send("POST", f"/models/{model}:predictLongRunning", doing=doing, json=body, create=True)
        if not response.is_success:
            error = classify(response, doing)
            if response.status_code == 429 and error.retry_after and retry_after(response) is None:
                # the delay is in the body, which the gate did not read: hold this process's creates as long
                self.gate.hold_until = max(self.gate.hold_until, time.monotonic() + error.retry_after)
            raise error
        operation = _json_object(response, doing)
        name = operation.get("name")
        if not isinstance(name, str) or not _OPERATION_RE.match(name):
            raise TransientError(
                f"google: the create answer has no usable operation name: {json.dumps(operation)[:300]}"
            )
        return name

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        if not _OPERATION_RE.match(provider_id):
            raise PermanentError(f"not a google operation name: {provider_id!r}")
        schedule = self.poll_schedule(task)
        doing = f"polling operation {provider_id}"
        failures = 0
        reported = False
        if not task.resumed:  # just created: nothing to see yet
            await task.pause(schedule.next_delay())
        while True:
            try:
                response = await self.send("GET", f"/{provider_id}", doing=doing)
                if response.status_code == 404:
                    raise PermanentError(f"google: operation {provider_id} is not known (expired or never made)")
                if not response.is_success:
                    raise classify(response, doing)
                operation = _json_object(response, doing)
                failures = 0
            except TransientError as exc:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                log.info("google: %s failed (%s); trying again", doing, exc.message)
                await task.pause(schedule.next_delay(hint=exc.retry_after))
                continue
            if operation.get("done") is True:
                return await self._result(task, provider_id, operation)
            if not reported:
                reported = True
                await _report(report, ProgressUpdate(phase="running", message="generating"))
            await task.pause(schedule.next_delay(hint=retry_after(response)))

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        """The Gemini API documents no list of Veo operations nor an idempotency key: CannotReconcile, and the
        worker records a possible duplicate charge when it submits again."""
        raise CannotReconcile("google: the Gemini API offers no lookup of earlier Veo operations")

    async def cancel(self, task: Task, provider_id: str) -> None:
        """The Gemini API documents no way to cancel a Veo operation: it runs to its end (and is billed if it
        makes a video). Logged, never raises."""
        log.info("google: operation %s cannot be cancelled (the Gemini API offers no cancel); it runs on", provider_id)

    # --- the outcome -----------------------------------------------------------------------------

    async def _result(self, task: Task, name: str, operation: dict[str, Any]) -> ProviderResult:
        error = operation.get("error")
        if isinstance(error, dict):
            raise operation_error(name, error)
        response = operation.get("response")
        answer = response.get("generateVideoResponse") if isinstance(response, dict) else None
        if not isinstance(answer, dict):
            raise PermanentError(f"google: operation {name} ended with no generateVideoResponse")
        samples = answer.get("generatedSamples")
        uri: Any = None
        if isinstance(samples, list) and samples and isinstance(samples[0], dict):
            video = samples[0].get("video")
            uri = video.get("uri") if isinstance(video, dict) else None
        if not isinstance(uri, str) or not uri:
            filtered = answer.get("raiMediaFilteredCount")
            reasons = answer.get("raiMediaFilteredReasons")
            if filtered or reasons:
                why = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) and reasons else "no reason given"
                raise PermanentError(f"google: Veo's safety filters blocked the video: {why}")
            raise PermanentError(f"google: operation {name} ended with no video")
        path = await self._download(task, name, uri)
        params = self._params(task)
        duration, resolution = params.get("duration"), params.get("resolution")
        spec = self.model_catalog().google_spec(task.model or "")
        if spec is not None and spec is not MODELS_BY_ID.get(spec.id):  # replaced in the catalog: its own price
            per_second = spec.price.usd if spec.price.unit == "second" else None
        else:  # the built-in model: by resolution
            per_second = price_per_second(task.model or "", resolution)
        cost = None
        if per_second is not None and isinstance(duration, int | float) and not isinstance(duration, bool):
            cost = round(per_second * float(duration), 6)
        fields: dict[str, Any] = {
            "provider_id": name,
            "seconds": duration,
            "resolution": resolution,
            "aspect_ratio": params.get("aspect_ratio"),
        }
        return ProviderResult(outputs=[Output(path=path, content_type="video/mp4")], fields=fields, cost_usd=cost)

    async def _download(self, task: Task, name: str, uri: str) -> Path:
        """The video, with the key only when `uri` is on the base's own origin; a redirect from there is
        followed without the key through the egress guard. Streamed to the workdir, size- and time-limited."""
        shown = _origin(uri)
        if shown is None or shown != _origin(self.base_url):
            where = f"{shown[0]}://{shown[1]}:{shown[2]}" if shown else "a URL that is not plain http(s)"
            raise PermanentError(
                f"google: operation {name} names its video on {where}, not on the API's origin; "
                "it is not fetched (the key goes nowhere else)"
            )
        doing = f"downloading the video of {name}"
        out = task.workdir / "video.mp4"
        location: str | None = None
        await self.gate.acquire()
        try:
            async with (
                asyncio.timeout(DOWNLOAD_TIMEOUT_S),
                self.http().stream("GET", uri, headers=self.auth_headers(), follow_redirects=False) as response,
            ):
                if response.status_code == 429:
                    self.gate.on_throttled(retry_after(response))
                else:
                    self.gate.on_success()
                if response.is_redirect and response.headers.get("location"):
                    location = urljoin(uri, response.headers["location"])
                elif not response.is_success:
                    await response.aread()
                    raise classify(response, doing)
                else:
                    ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                    if ctype.startswith(("application/json", "text/")):
                        raise TransientError(f"google: {doing} answered {ctype}, not a video")
                    size = await stream_to_file(response, out, MAX_VIDEO_BYTES, f"google: the video of {name}")
                    if size == 0:
                        raise TransientError(f"google: {doing} answered no bytes")
                    return out
        except TimeoutError:
            raise TransientError(f"google: {doing} took over {DOWNLOAD_TIMEOUT_S:g} s") from None
        except httpx.TimeoutException as exc:
            raise TransientError(f"google: {doing} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"google: {doing} failed: {type(exc).__name__}: {exc}") from None
        assert location is not None
        client = self.guarded_http(self.egress_policy(), timeout=self.timeout)
        try:
            path, _ = await fetch_output(client, location, task.workdir / "video", limit_bytes=MAX_VIDEO_BYTES)
        except ProviderError as exc:
            raise type(exc)(f"google: {doing}: {exc.message}", retry_after=exc.retry_after) from None
        return path
