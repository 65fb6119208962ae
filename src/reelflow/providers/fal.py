"""`fal/*`: models on fal's queue API.

Submit answers a request id; we keep it with the `<owner>/<app>` that status, result and cancel URLs
are built from, as the provider id `<owner>/<app>/<request id>`. The URLs fal hands back are never
followed: every request goes to the configured base host through `HttpAdapter.send`, so the key
(`Authorization: Key ...`) never leaves it and a 429 slows every fal job down, not only the one that
drew it.

Callbacks: when `task.callback_url` is set, submit passes it as `?fal_webhook=`; fal POSTs once when
the request ends. `verify_callback` checks fal's Ed25519 signature against the keys of fal's JWKS
(fetched without our key, cached up to 24 h) and names the work by the **bare request id** (the
webhook knows nothing of `<owner>/<app>`): match it against the last segment of the stored id. A verified
webhook that tells how the request ended (OK with its payload, or ERROR) carries that outcome to the waiting
job, which then ends without asking fal (`wait` checks it is about its own request id); with a callback URL,
`wait` sleeps first and looks only every `callback_poll_s`, a fallback for a lost webhook.

Reconciliation: the queue API looks requests up by id only, so a request whose submit answer was lost
cannot be found by what it asked for; `find_submitted` raises CannotReconcile (the worker submits again and
records a possible duplicate charge).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..net import UnsafeDestination
from .base import (
    CallbackEvent,
    CallbackRejected,
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
from .catalog.fal import to_fal_input
from .http import HttpAdapter, retry_after
from .info import BUILTIN_INFO

if TYPE_CHECKING:  # cryptography is imported where a signature is checked: a worker that never does skips it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://queue.fal.run"
DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
JWKS_URL_ENV = "REELFLOW_FAL_JWKS_URL"
JWKS_MAX_AGE_S = 24 * 3600.0
"""How long fetched keys are trusted before they are fetched again."""
JWKS_REFETCH_MIN_S = 60.0
"""A signature no cached key verifies refetches the keys, but at most this often (forged callbacks
cannot make us hammer fal's JWKS endpoint)."""
CALLBACK_MAX_SKEW_S = 300.0
POLL_ERROR_RETRIES = 5
"""Consecutive transient errors while polling that `wait` absorbs before raising (the work lives on)."""

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_HEX_SIGNATURE = re.compile(r"^[0-9a-fA-F]{128}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,9})?$")
_JWKS_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_CALLBACK_HEADERS = ("request-id", "user-id", "timestamp", "signature")


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
    """The error for a non-2xx answer (`X-Fal-Retryable` decides when present)."""
    status = response.status_code
    message = f"fal: {doing} failed: HTTP {status}: {_detail(response)}"
    retryable = response.headers.get("x-fal-retryable", "").strip().lower()
    if retryable == "false":
        return PermanentError(message)
    if status == 429:  # a throttled request was refused before anything ran: a submit started no work
        return TransientError(message, retry_after=retry_after(response), not_sent=True)
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


def finished_request(body: Mapping[str, Any], request_id: str | None = None) -> dict[str, Any] | None:
    """What `wait` needs of a webhook's body (the request's, when `request_id` is given) that tells how the
    request ended: OK with a payload holding output files, or ERROR. None for anything else: another request,
    another status, an OK whose payload fal could not send (`payload_error`) or that names no output file."""
    found = body.get("request_id")
    if not isinstance(found, str) or (request_id is not None and found != request_id):
        return None
    status, payload, error = body.get("status"), body.get("payload"), body.get("error")
    if status == "OK":
        if not isinstance(payload, dict) or body.get("payload_error") or not _outputs(payload):
            return None
        return {"request_id": found, "status": "OK", "payload": payload}
    if status == "ERROR":
        return {
            "request_id": found,
            "status": "ERROR",
            "error": error if isinstance(error, str) else None,
            "payload": payload if isinstance(payload, dict) else None,
        }
    return None


def error_text(error: Any, payload: Any) -> str:
    """A failed request's message from a webhook: its `error`, then the payload's `detail` (a string, or the
    `{loc, msg, type}` items as `msg (type)`)."""
    parts: list[str] = []
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str) and detail:
        parts.append(detail)
    elif isinstance(detail, list):
        for item in detail:
            message = item.get("msg") if isinstance(item, dict) else None
            if isinstance(message, str):
                kind = item.get("type")
                parts.append(message + (f" ({kind})" if isinstance(kind, str) and kind else ""))
    text = "; ".join(parts)
    if isinstance(error, str) and error:
        text = f"{error}: {text}" if text else error
    return text or "the request failed"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_jwks(document: Any) -> list[Ed25519PublicKey]:
    """The Ed25519 keys (`kty: OKP, crv: Ed25519`) of a JWKS document; other keys are skipped."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: list[Ed25519PublicKey] = []
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return keys
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        if not isinstance(x, str):
            continue
        try:
            raw = _b64url(x)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
    return keys


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs: `request_id\\nuser_id\\ntimestamp\\n<hex sha256 of the raw body>`."""
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


class FalProvider(HttpAdapter):
    """fal's queue API behind the Provider protocol, with fal's webhooks as callbacks."""

    info = BUILTIN_INFO["fal"]
    """fal's default limits: none to enforce here; requests beyond the account's concurrency wait in fal's queue."""
    default_base_url = DEFAULT_BASE_URL

    def __init__(
        self,
        key: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        poll_initial_s: float = 1.0,
        poll_max_s: float = 15.0,
        callback_poll_s: float = 60.0,
        jwks_url: str | None = None,
    ) -> None:
        super().__init__(
            key,
            base_url,
            client=client,
            poll_initial_s=poll_initial_s,
            poll_max_s=poll_max_s,
            callback_poll_s=callback_poll_s,
        )
        self._jwks_url = jwks_url
        self._jwks_keys: list[Ed25519PublicKey] = []
        self._jwks_fetched_at: float | None = None
        self._jwks_tried_at: float | None = None
        self._jwks_lock: asyncio.Lock | None = None
        self.jwks_clock: Callable[[], float] = time.monotonic
        """Times the JWKS cache (tests move it on)."""
        self.wall_clock: Callable[[], float] = time.time
        """Judges callback timestamps."""

    # --- plumbing --------------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    @property
    def jwks_url(self) -> str:
        return self._jwks_url or os.environ.get(JWKS_URL_ENV) or DEFAULT_JWKS_URL

    async def _json(self, method: str, path: str, doing: str, **kwargs: Any) -> dict[str, Any]:
        """One request to the base host; its JSON object, or a classified ProviderError."""
        response = await self.send(method, path, doing=doing, headers={"Accept": "application/json"}, **kwargs)
        if not response.is_success:
            raise _classify(response, doing)
        try:
            body = response.json()
        except ValueError:
            raise TransientError(f"fal: {doing} answered non-JSON: {response.text[:200]!r}") from None
        if not isinstance(body, dict):
            raise TransientError(f"fal: {doing} answered {body!r:.200}")
        return body

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        owner, app, subpath = _split_model(task.model)
        if task.type == "run":
            body = task.params.get("input") or {}
            if not isinstance(body, dict):
                raise PermanentError("fal: a run job's params.input must be an object")
        else:
            body = to_fal_input(task.model, task.params, self.model_catalog().fal_inputs(task.model))
        path = "/" + "/".join((owner, app, *filter(None, subpath.split("/"))))
        params = {"fal_webhook": task.callback_url} if task.callback_url else None
        answer = await self._json("POST", path, f"submitting to {task.model}", json=body, params=params, create=True)
        request_id = answer.get("request_id")
        if request_id is None:
            raise TransientError(f"fal: submit answered without a request_id: {json.dumps(answer)[:200]}")
        if not isinstance(request_id, str) or not _SEGMENT.match(request_id):
            raise PermanentError(f"fal: unexpected request_id {request_id!r}")
        return f"{owner}/{app}/{request_id}"

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        """Always CannotReconcile: fal's queue API (status, result, cancel) only knows a request by the id its
        submit answered, so a request whose answer was lost cannot be found by model and input."""
        raise CannotReconcile(
            f"fal: the queue API cannot look up requests by model and input, so whether the lost submit to "
            f"{task.model} started work cannot be told"
        )

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        owner, app, request_id = _split_id(provider_id)
        base_path = f"/{owner}/{app}/requests/{request_id}"
        schedule = self.poll_schedule(task)
        running = False
        errors = 0
        if task.callback_url and not task.resumed:  # just submitted: the webhook will say when it ends
            await task.pause(schedule.next_delay())
        while True:
            told = task.take_callback_outcome(request_id, finished_request, f"fal: request {request_id}")
            if told is not None:
                return self._told_result(provider_id, told)
            percent: float | None = None
            try:
                status = await self._json("GET", base_path + "/status", "checking the request", params={"logs": "1"})
                errors = 0
            except TransientError as exc:
                errors += 1
                if errors > POLL_ERROR_RETRIES:
                    raise
                # a failed look is retried on a backoff of its own (not after the slow callback interval)
                backoff = min(self.poll_max_s, self.poll_initial_s * 2 ** (errors - 1))
                log.info("fal: checking %s failed (%s); again in %.1f s", provider_id, exc.message, backoff)
                await task.pause(max(backoff, exc.retry_after or 0.0))
                continue
            task.log.merge_entries(status.get("logs"))
            state = status.get("status")
            if state == "COMPLETED":
                return await self._finish(task, base_path, provider_id, status)
            if state == "IN_QUEUE":
                position = status.get("queue_position")
                if not isinstance(position, int) or isinstance(position, bool):
                    position = None
                await _report(report, ProgressUpdate(phase="queued", queue_position=position))
            elif state == "IN_PROGRESS":
                percent = _percent(status.get("logs"))
                if not running:
                    # judge the rate of progress from when the run began, not from the time spent queued
                    running, schedule = True, self.poll_schedule(task)
                await _report(report, ProgressUpdate(phase="running", percent=percent))
            else:
                log.warning("fal: request %s has unknown status %r; still waiting", provider_id, state)
            await task.pause(schedule.next_delay(percent=percent))

    async def _finish(self, task: Task, base_path: str, provider_id: str, status: dict[str, Any]) -> ProviderResult:
        if status.get("error") or status.get("error_type"):
            kind = status.get("error_type")
            message = status.get("error") or "the request failed"
            if not isinstance(message, str):
                message = json.dumps(message, ensure_ascii=False)
            raise PermanentError(f"fal: {message}" + (f" ({kind})" if kind else ""))
        result: dict[str, Any] | None = None
        for attempt in range(POLL_ERROR_RETRIES + 1):
            try:
                result = await self._json("GET", base_path, "fetching the result")
                break
            except TransientError as exc:
                if attempt == POLL_ERROR_RETRIES:
                    raise
                delay = min(self.poll_max_s, self.poll_initial_s * 2**attempt)
                await task.pause(max(delay, exc.retry_after or 0.0))
        assert result is not None
        metrics = status.get("metrics") if isinstance(status.get("metrics"), dict) else {}
        return _result(provider_id, result, (metrics or {}).get("inference_time"))

    @staticmethod
    def _told_result(provider_id: str, told: dict[str, Any]) -> ProviderResult:
        """The result of a request a webhook said ended (fal's webhook tells no inference time)."""
        if told["status"] == "ERROR":
            raise PermanentError(f"fal: {error_text(told.get('error'), told.get('payload'))}")
        return _result(provider_id, told["payload"], None)

    async def cancel(self, task: Task, provider_id: str) -> None:
        owner, app, request_id = _split_id(provider_id)
        doing = "cancelling the request"
        response = await self.send("PUT", f"/{owner}/{app}/requests/{request_id}/cancel", doing=doing)
        if response.is_success or response.status_code in (400, 404):
            return  # 400 ALREADY_COMPLETED, 404 gone: nothing left to pay for
        raise _classify(response, doing)

    # --- callbacks -------------------------------------------------------------------------------

    async def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Check a fal webhook; its event names the work by the **bare request id** (not our
        `<owner>/<app>/<request id>`, which the webhook cannot know): compare it with the stored id's
        last segment. Raises CallbackRejected for a missing or bad signature, a timestamp more than
        5 minutes away, a key fal's JWKS does not hold, or a malformed body."""
        given = {k.lower(): v for k, v in headers.items()}
        values: dict[str, str] = {}
        for name in _CALLBACK_HEADERS:
            value = given.get(f"x-fal-webhook-{name}", "").strip()
            if not value:
                raise CallbackRejected(f"fal: the callback has no X-Fal-Webhook-{name.title()} header")
            values[name] = value
        request_id, user_id, stamp, signature = (values[n] for n in _CALLBACK_HEADERS)
        if not _TIMESTAMP.match(stamp):
            raise CallbackRejected(f"fal: the callback timestamp {stamp[:40]!r} is not unix seconds")
        skew = self.wall_clock() - float(stamp)
        if abs(skew) > CALLBACK_MAX_SKEW_S:
            raise CallbackRejected(f"fal: the callback timestamp is {skew:+.0f} s away (more than 300 s)")
        if not _HEX_SIGNATURE.match(signature):
            raise CallbackRejected("fal: the callback signature is not 64 hex-encoded bytes")
        message = signed_message(request_id, user_id, stamp, body)
        if not await self._verify_with_jwks(bytes.fromhex(signature), message):
            raise CallbackRejected("fal: the callback signature matches no key of fal's JWKS")
        try:
            payload = json.loads(body)
        except ValueError:
            raise CallbackRejected("fal: the callback body is not JSON") from None
        if not isinstance(payload, dict):
            raise CallbackRejected("fal: the callback body is not a JSON object")
        if payload.get("request_id") != request_id or not _SEGMENT.match(request_id):
            raise CallbackRejected("fal: the callback body's request_id does not match its header")
        status = payload.get("status")
        if status is not None and not isinstance(status, str):
            raise CallbackRejected(f"fal: the callback status {status!r:.40} is not a string")
        return CallbackEvent(provider_job_id=request_id, status=status, outcome=finished_request(payload))

    async def _verify_with_jwks(self, signature: bytes, message: bytes) -> bool:
        """True when a key of fal's JWKS verifies; fetches the keys when none are cached or they are
        older than a day, and once more (at most once a minute) when no cached key verifies."""
        if self._jwks_lock is None:
            self._jwks_lock = asyncio.Lock()
        async with self._jwks_lock:
            now = self.jwks_clock()
            stale = self._jwks_fetched_at is None or now - self._jwks_fetched_at > JWKS_MAX_AGE_S
            if stale and self._may_fetch(now):
                await self._fetch_jwks(now)
            if _any_verifies(self._jwks_keys, signature, message):
                return True
            if not self._may_fetch(now):
                return False
            await self._fetch_jwks(now)
            return _any_verifies(self._jwks_keys, signature, message)

    def _may_fetch(self, now: float) -> bool:
        return self._jwks_tried_at is None or now - self._jwks_tried_at >= JWKS_REFETCH_MIN_S

    async def _fetch_jwks(self, now: float) -> None:
        """Fetch fal's JWKS (never with our key: a client of its own, no auth header, through the egress guard:
        the configured JWKS host is allowed, a redirect elsewhere is judged). On failure the keys held so far
        stay (even past a day: better than refusing every callback meanwhile)."""
        self._jwks_tried_at = now
        url = self.jwks_url
        client = self.guarded_http(self.egress_policy(url), timeout=_JWKS_TIMEOUT)
        try:
            response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError, UnsafeDestination) as exc:
            log.warning("fal: fetching the JWKS from %s failed: %s", url, exc)
            return
        if not keys:
            log.warning("fal: the JWKS at %s holds no Ed25519 key", url)
            return
        self._jwks_keys = keys
        self._jwks_fetched_at = now


def _result(provider_id: str, result: dict[str, Any], inference_time: Any) -> ProviderResult:
    """A completed request's result (fal's answer to `GET .../requests/{id}`, or a webhook's payload)."""
    outputs = _outputs(result)
    if not outputs:
        raise PermanentError(f"fal: the result holds no output file: {json.dumps(result)[:500]}")
    fields: dict[str, Any] = {"provider_id": provider_id, "seed": result.get("seed"), "inference_time": inference_time}
    return ProviderResult(outputs=outputs, fields=fields)


def _any_verifies(keys: list[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
