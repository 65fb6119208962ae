"""`replicate/*`: models run on Replicate (predictions API).

`submit` creates a prediction and returns its id; `wait` polls `GET {base}/predictions/{id}` with a
growing interval, or, with a webhook, every `callback_poll_s` as a fallback: a verified webhook whose
body is the prediction finished (`finished_prediction`) reaches `wait` as the task's callback outcome,
and the job ends from it without reading the prediction again.

Every request goes to the configured base, with URLs we build ourselves from the prediction id: URLs a
response names (`urls.get`, `urls.cancel`) are never followed, so the token never leaves the base's host.
Output URLs are handed to the worker, which copies them (without our token).

`find_submitted` finds a prediction whose create answer was lost (a read timeout, a reset) in
`GET {base}/predictions?created_after=...` (newest first, `next` pages), so the job adopts it instead of
paying for the same work twice. The only URL from an answer that is ever requested is such a `next`, and
only when it is on the base's own scheme, host, port and path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import logging
import mimetypes
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode, urlsplit

import httpx

from ..logs import add_secret
from ..webhooks import WebhookVerificationError, verify_webhook
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
from .catalog import ModelSpec, params_with_defaults
from .catalog.replicate import AUDIO_PRICES, MODE_PRICES, MODELS_BY_ID, RESOLUTION_PRICES, base_model_id
from .http import HttpAdapter, retry_after
from .info import BUILTIN_INFO
from .transcripts import clean_words, transcript_fields, words_from_segments, write_srt

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
TOKEN_ENV = "REPLICATE_API_TOKEN"
BASE_URL_ENV = "REELFLOW_REPLICATE_BASE_URL"
WEBHOOK_SECRET_ENV = "REPLICATE_WEBHOOK_SECRET"

TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=30.0)
"""Reads allow for `Prefer: wait=5` plus a slow network; nothing waits forever."""
LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=16)
PREFER_WAIT_S = 5
MAX_POLL_FAILURES = 5
"""Consecutive transient failures of a status poll tolerated inside one `wait` before giving up."""
LIST_CLOCK_SKEW_S = 120.0
"""`find_submitted` lists predictions created from this long before `since`: `since` is our clock, `created_at`
Replicate's, and two minutes covers any sane drift between them (a wider window only adds candidates that the
model, input and webhook comparison then rules out)."""
LIST_BATCH_S = 0.25
"""Lookups asking within this long of each other share one walk of the prediction list."""
LIST_MAX_PAGES = 50
"""Pages of the prediction list `find_submitted` reads before it gives up ("cannot tell", transient): 5,000
predictions in the window, far beyond a lost answer's few minutes."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FRACTION_RE = re.compile(r"(\.\d{6})\d+")

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9]{1,128}$")
_PERCENT_RE = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_AVAILABLE_IN_RE = re.compile(r"available in\s+(\d+(?:\.\d+)?)\s*second", re.IGNORECASE)

_TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_OUTCOME_FIELDS = ("id", "status", "output", "error", "logs", "metrics", "created_at", "started_at")
"""What `wait` reads of a finished prediction: a callback's outcome keeps these of the webhook's body."""


def finished_prediction(data: Mapping[str, Any], pid: str | None = None) -> dict[str, Any] | None:
    """The parts of `data` that `wait` reads, when `data` is a prediction (`pid`'s, when given) that ended and
    says all there is to say: succeeded with its output, failed, canceled or aborted. None for anything else:
    still running, an unknown status, a success without output (a webhook may be sent before the output is
    in), another prediction."""
    found = data.get("id")
    if not isinstance(found, str) or (pid is not None and found != pid):
        return None
    status = data.get("status")
    if status not in _TERMINAL or (status == "succeeded" and data.get("output") is None):
        return None
    return {key: data[key] for key in _OUTCOME_FIELDS if key in data}


def parse_percent(logs: Any) -> float | None:
    """The last `NN%` in the logs, clamped to 0..100; None when there is none."""
    if not isinstance(logs, str):
        return None
    found = _PERCENT_RE.findall(logs)
    if not found:
        return None
    return max(0.0, min(100.0, float(found[-1])))


def parse_retry_after(response: httpx.Response, detail: str) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date), else from "Expected available in N seconds"."""
    from_header = retry_after(response)
    if from_header is not None:
        return from_header
    match = _AVAILABLE_IN_RE.search(detail)
    return float(match.group(1)) if match else None


def _problem_detail(response: httpx.Response) -> str:
    """The problem's `detail` (or `title`), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("detail", "title", "error", "message"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if value:
                return str(value)
    text = response.text.strip()
    return text[:500] if text else response.reason_phrase or f"HTTP {response.status_code}"


def classify(response: httpx.Response, what: str) -> ProviderError:
    """The error for a non-2xx answer: 429, 408 and 5xx are transient; other 4xx are permanent."""
    status = response.status_code
    detail = _problem_detail(response)
    message = f"replicate: {what} answered {status}: {detail}"
    if status == 429:  # a throttled request was refused before anything ran: a create started no work
        return TransientError(message, retry_after=parse_retry_after(response, detail), not_sent=True)
    if status >= 500 or status == 408:
        return TransientError(message, retry_after=parse_retry_after(response, ""))
    if 300 <= status < 400:
        return PermanentError(f"replicate: {what} answered a redirect {status} (not followed)")
    return PermanentError(message)


def _check_id(provider_id: str) -> str:
    if not _ID_RE.match(provider_id):
        raise PermanentError(f"replicate: not a prediction id: {provider_id!r}")
    return provider_id


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> float | None:
    """Replicate's `created_at` (ISO 8601, `Z`, up to nanoseconds) as epoch seconds; None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(_FRACTION_RE.sub(r"\1", value.strip()))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _note(task: Task, data: Mapping[str, Any]) -> None:
    """Take what a prediction tells about its run: its logs so far, and once it started, how long it waited in
    Replicate's queue (`started_at - created_at`, both Replicate's clock)."""
    task.log.replace(data.get("logs"))
    if task.provider_queued_s is None:
        created, started = _parse_time(data.get("created_at")), _parse_time(data.get("started_at"))
        if created is not None and started is not None:
            task.provider_queued_s = max(0.0, started - created)


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as JSON: `true` is not `1`, `1` is `1.0`, objects ignore key order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and set(a) == set(b) and all(same_json(value, b[key]) for key, value in a.items())
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple) and len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def _collect_outputs(output: Any) -> list[str]:
    """Every URL (http(s) or data:) in a prediction's output, in order."""
    found: list[str] = []
    if isinstance(output, str):
        if output.startswith(("https://", "http://", "data:")):
            found.append(output)
    elif isinstance(output, list):
        for item in output:
            found += _collect_outputs(item)
    elif isinstance(output, dict):
        for item in output.values():
            found += _collect_outputs(item)
    return found


def _write_data_uri(uri: str, folder: Path, index: int) -> Output:
    """Decode a `data:` URI into a file in `folder`."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise PermanentError("replicate: malformed data: URI in the output")
    meta = header[len("data:") :].split(";")
    content_type = meta[0] or "application/octet-stream"
    try:
        data = base64.b64decode(payload, validate=False) if "base64" in meta[1:] else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise PermanentError(f"replicate: undecodable data: URI in the output: {exc}") from exc
    suffix = mimetypes.guess_extension(content_type) or ".bin"
    path = folder / f"output-{index}{suffix}"
    path.write_bytes(data)
    return Output(path=path, content_type=content_type)


def whisper_words(output: dict[str, Any]) -> list[dict[str, Any]]:
    """Word timings from a Whisper model's output on Replicate: segments with `words`; Hugging Face style
    `chunks` with `timestamp: [start, end]`; or else each segment's words spread evenly over its span."""
    segments = output.get("segments")
    if isinstance(segments, list) and any(isinstance(s, dict) and s.get("words") for s in segments):
        return words_from_segments(segments)
    chunks = output.get("chunks")
    if isinstance(chunks, list):
        found = []
        for chunk in chunks:
            stamp = chunk.get("timestamp") if isinstance(chunk, dict) else None
            if isinstance(stamp, list | tuple) and len(stamp) == 2:
                found.append({"word": chunk.get("text"), "start": stamp[0], "end": stamp[1]})
        return clean_words(found)
    spread: list[dict[str, Any]] = []
    for segment in segments if isinstance(segments, list) else []:
        if not isinstance(segment, dict):
            continue
        tokens = str(segment.get("text") or "").split()
        start, end = segment.get("start"), segment.get("end")
        if not tokens or not isinstance(start, int | float) or not isinstance(end, int | float):
            continue
        step = max(float(end) - float(start), 0.0) / len(tokens)
        for i, token in enumerate(tokens):
            spread.append({"word": token, "start": start + i * step, "end": start + (i + 1) * step})
    return clean_words(spread)


def _content_type(url: str) -> str | None:
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed


@dataclass
class _ListWalk:
    """One walk of the prediction list, shared by the lookups that asked before it began."""

    cutoff: float
    result: asyncio.Future[list[dict[str, Any]]]


class ReplicateProvider(HttpAdapter):
    """Replicate's predictions API behind the Provider protocol."""

    info = BUILTIN_INFO["replicate"]
    """Replicate: 600 prediction creates a minute, 3000 other calls a minute (bursts tolerated)."""
    create_retries_on_429 = 4
    """A throttled create started nothing: send it again (after the gate's hold) this many times in place."""
    list_max_pages = LIST_MAX_PAGES
    _list_batch: _ListWalk | None = None
    default_base_url = DEFAULT_BASE_URL
    timeout = TIMEOUT
    limits = LIMITS

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        poll_initial_s: float = 1.0,
        poll_max_s: float = 15.0,
        callback_poll_s: float = 60.0,
        webhook_secret: str | None = None,
    ) -> None:
        super().__init__(
            token,
            base_url,
            client=client,
            poll_initial_s=poll_initial_s,
            poll_max_s=poll_max_s,
            callback_poll_s=callback_poll_s,
        )
        self._webhook_secret = webhook_secret
        self._secret_fetched_at = 0.0
        self._finished: dict[str, dict[str, Any]] = {}
        """Predictions that came back already finished from their create (read once by `wait`)."""

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self.key

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_throttled: int = 0,
        create: bool = False,
    ) -> dict[str, Any]:
        """One request to `{base}{path}` (`create`: it starts a prediction); the answer's JSON object, or a
        classified ProviderError."""
        what = f"{method} {path}"
        response = await self.send(
            method, path, doing=what, json=body, headers=headers, retry_throttled=retry_throttled, create=create
        )
        if not response.is_success:
            raise classify(response, what)
        try:
            data = response.json()
        except ValueError as exc:
            raise TransientError(f"replicate: {what} answered {response.status_code} with a non-JSON body") from exc
        if not isinstance(data, dict):
            raise TransientError(f"replicate: {what} answered {response.status_code} with no prediction object")
        return data

    # --- callbacks -------------------------------------------------------------------------------

    async def _signing_secret(self, refresh: bool = False) -> str:
        """The account's webhook signing secret: given, from REPLICATE_WEBHOOK_SECRET, or fetched once from
        `GET /webhooks/default/secret` (fetched again at most once a minute when a signature does not verify)."""
        configured = self._webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV)
        if configured and not refresh:
            return configured
        if self._fetched_secret and not refresh:
            return self._fetched_secret
        if self._fetched_secret and time.monotonic() - self._secret_fetched_at < 60:
            return self._fetched_secret
        data = await self._call("GET", "/webhooks/default/secret")
        key = data.get("key")
        if not isinstance(key, str) or not key.startswith("whsec_"):
            raise TransientError("replicate: the webhook secret answer has no whsec_ key")
        add_secret(key)
        self._fetched_secret = key
        self._secret_fetched_at = time.monotonic()
        return key

    _fetched_secret: str | None = None

    @staticmethod
    def _verified(secret: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        try:
            return verify_webhook(body, headers, secret)
        except WebhookVerificationError as exc:
            raise CallbackRejected(f"bad signature: {exc}") from None
        except ValueError as exc:  # a malformed secret
            raise CallbackRejected(f"cannot check the signature: {exc}") from None

    async def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """A Replicate webhook: Standard Webhooks signature over the prediction JSON."""
        wanted = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
        if not {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(wanted):
            raise CallbackRejected("missing webhook-id, webhook-timestamp or webhook-signature header")
        try:
            secret = await self._signing_secret()
        except ProviderError as exc:
            raise CallbackRejected(f"cannot get Replicate's webhook secret to check it: {exc.message}") from None
        try:
            data = self._verified(secret, body, wanted)
        except CallbackRejected:
            if self._webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV):
                raise
            try:  # the account's secret may have been rotated since we fetched it
                fresh = await self._signing_secret(refresh=True)
            except ProviderError:
                raise CallbackRejected("bad signature (or timestamp more than 5 minutes off)") from None
            if fresh == secret:
                raise
            data = self._verified(fresh, body, wanted)
        pid = data.get("id")
        if not isinstance(pid, str) or not _ID_RE.match(pid):
            raise CallbackRejected("the body names no prediction id")
        status = data.get("status")
        return CallbackEvent(
            provider_job_id=pid, status=status if isinstance(status, str) else None, outcome=finished_prediction(data)
        )

    # --- the protocol ----------------------------------------------------------------------------

    def _model_ref(self, model: str | None) -> tuple[str, str, str | None]:
        """`replicate/<owner>/<name>[:<version>]` -> (owner, name, version or None)."""
        model = model or ""
        if not model.startswith(f"{self.name}/"):
            raise PermanentError(f"replicate: not a Replicate model: {model!r}")
        ref = model[len(self.name) + 1 :]
        owner_name, has_version, version = ref.partition(":")
        owner, _, name = owner_name.partition("/")
        if not (_NAME_RE.match(owner) and _NAME_RE.match(name)) or (has_version and not _VERSION_RE.match(version)):
            raise PermanentError(f"replicate: model must be 'replicate/<owner>/<name>[:<version>]' (got {model!r})")
        return owner, name, version if has_version else None

    async def submit(self, task: Task) -> str:
        model = task.model or ""
        owner, name, version = self._model_ref(model)
        body: dict[str, Any] = {"input": self._input(task)}
        if task.callback_url:
            body["webhook"] = task.callback_url
            body["webhook_events_filter"] = ["completed"]
        if version is not None:
            path = "/predictions"
            body["version"] = version
        else:
            path = f"/models/{owner}/{name}/predictions"
        wait = self._makes_images(model) or task.type == "generate-image"
        headers = {"Prefer": f"wait={PREFER_WAIT_S}"} if wait else {}
        data = await self._call(
            "POST", path, body=body, headers=headers, retry_throttled=self.create_retries_on_429, create=True
        )
        pid = data.get("id")
        if not isinstance(pid, str):
            raise TransientError("replicate: the create answer has no prediction id")
        _check_id(pid)
        if data.get("status") in _TERMINAL:
            self._finished[pid] = data
        return pid

    # --- reconciliation --------------------------------------------------------------------------

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        """Predictions created at or after `since` (less LIST_CLOCK_SKEW_S) that are exactly what `submit(task)`
        would create, oldest first: the same official model (`model` is `owner/name`) or pinned `version`, an
        `input` equal as JSON to ours, and, when `task.callback_url` is set, that `webhook` (the list does not
        show webhooks, so each candidate is read with `GET /predictions/{id}`; one that names no webhook is not
        ours). A prediction from the website (`source: web`) is never ours.

        The list is read by `_listed_since`, one walk for all the lookups that start together (many answers
        lost at once, a network blip, cost one walk, not one each). A same-model candidate whose input
        Replicate has already removed (`data_removed`, an hour after an API prediction) cannot be compared:
        with no exact match beside it, CannotReconcile (the worker pays again and records a possible
        duplicate)."""
        owner, name, version = self._model_ref(task.model)
        wanted = json.loads(json.dumps(self._input(task)))  # as the create sends it
        cutoff = since - LIST_CLOCK_SKEW_S
        found: list[tuple[float, str]] = []
        unsure: list[str] = []
        for item in await self._listed_since(cutoff):
            created = _parse_time(item.get("created_at"))
            if created is not None and created < cutoff:
                continue  # the shared walk may reach further back than this lookup needs
            verdict = await self._judge(task, item, owner, name, version, wanted)
            if verdict == "ours":
                found.append((created if created is not None else cutoff, str(item["id"])))
            elif verdict == "unsure":
                unsure.append(str(item["id"]))
        if not found and unsure:
            raise CannotReconcile(
                f"replicate: the input of prediction(s) {', '.join(unsure)} was removed (data_removed); "
                "cannot tell whether one of them is this job's"
            )
        found.sort()
        return [pid for _, pid in found]

    async def _listed_since(self, cutoff: float) -> list[dict[str, Any]]:
        """Every prediction created at or after `cutoff`, newest first, from one walk of the list shared by the
        lookups that ask within LIST_BATCH_S of each other. A walk only serves lookups that asked before it began
        (their lost creates happened before that, so it sees them); later ones start the next walk."""
        batch = self._list_batch
        if batch is None:
            batch = self._list_batch = _ListWalk(cutoff, asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().call_later(
                LIST_BATCH_S, lambda: asyncio.ensure_future(self._walk(batch)), context=contextvars.Context()
            )
        else:
            batch.cutoff = min(batch.cutoff, cutoff)
        return await asyncio.shield(batch.result)

    async def _walk(self, batch: _ListWalk) -> None:
        self._list_batch = None  # lookups from now on wait for a walk of their own
        try:
            batch.result.set_result(await self._list_pages(batch.cutoff))
        except BaseException as exc:  # every lookup of the batch sees the failure
            batch.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _list_pages(self, cutoff: float) -> list[dict[str, Any]]:
        """Pages of `GET /predictions?created_after=` followed through `next` only while it points at our own
        base (same scheme, host, port and `/predictions` path; the token goes nowhere else), at most
        `list_max_pages` of them; otherwise TransientError (cannot tell)."""
        path = "/predictions?" + urlencode({"created_after": _iso(cutoff)})
        items: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for _ in range(self.list_max_pages):
            data = await self._call("GET", path)
            results = data.get("results")
            if not isinstance(results, list):
                raise TransientError("replicate: the prediction list answer has no results list")
            past_window = False
            for item in results:
                if not isinstance(item, dict) or item.get("id") in seen:
                    continue
                seen.add(item.get("id"))
                created = _parse_time(item.get("created_at"))
                if created is not None and created < cutoff:
                    past_window = True  # newest first: the rest is older still
                    continue
                items.append(item)
            following = data.get("next")
            if not following or past_window:
                return items
            own = self._own_list_path(following)
            if own is None:
                raise TransientError(
                    f"replicate: the prediction list's next page is not on {self.base_url} (not followed); "
                    "cannot tell whether the lost create started work"
                )
            path = own
        raise TransientError(
            f"replicate: more than {self.list_max_pages} pages of predictions since {_iso(cutoff)}; "
            "cannot tell whether the lost create started work"
        )

    async def _judge(
        self, task: Task, item: dict[str, Any], owner: str, name: str, version: str | None, wanted: Any
    ) -> str:
        """What one listed prediction is to this task: "ours", "not ours", or "unsure" (same model, input gone)."""
        pid = item.get("id")
        if not isinstance(pid, str) or not _ID_RE.match(pid) or item.get("source") == "web":
            return "not ours"
        if version is not None:
            if item.get("version") != version:
                return "not ours"
        elif item.get("model") != f"{owner}/{name}":
            return "not ours"
        if item.get("data_removed") is True:
            return "unsure"
        full: dict[str, Any] | None = None
        if not isinstance(item.get("input"), dict):
            full = await self._read_prediction(pid)
            if full is None:
                return "not ours"
            if full.get("data_removed") is True or not isinstance(full.get("input"), dict):
                return "unsure"
        if not same_json(wanted, (full or item)["input"]):
            return "not ours"
        if task.callback_url:
            if full is None and "webhook" not in item:
                full = await self._read_prediction(pid)
                if full is None:
                    return "not ours"
            if (full or item).get("webhook") != task.callback_url:
                return "not ours"
        return "ours"

    async def _read_prediction(self, pid: str) -> dict[str, Any] | None:
        """`GET /predictions/{pid}`; None when Replicate no longer knows it (404)."""
        what = f"GET /predictions/{pid}"
        response = await self.send("GET", f"/predictions/{pid}", doing=what)
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise classify(response, what)
        try:
            data = response.json()
        except ValueError:
            raise TransientError(f"replicate: {what} answered {response.status_code} with a non-JSON body") from None
        if not isinstance(data, dict):
            raise TransientError(f"replicate: {what} answered {response.status_code} with no prediction object")
        return data

    def _own_list_path(self, url: Any) -> str | None:
        """`url` as a path under our base when it is our own prediction list (same scheme, host, port, path, no
        credentials or fragment); None for anything else, which is never requested."""
        if not isinstance(url, str):
            return None
        base, got = urlsplit(self.base_url), urlsplit(url)
        try:
            ports = (got.port or _DEFAULT_PORTS.get(got.scheme), base.port or _DEFAULT_PORTS.get(base.scheme))
        except ValueError:
            return None
        if (
            got.scheme != base.scheme
            or got.hostname != base.hostname
            or ports[0] != ports[1]
            or got.username is not None
            or got.password is not None
            or got.fragment
            or got.path != base.path.rstrip("/") + "/predictions"
        ):
            return None
        return "/predictions" + (f"?{got.query}" if got.query else "")

    def _input(self, task: Task) -> dict[str, Any]:
        """The model's `input`: `params.input` as given for `run`, else our params under the model's names."""
        params = task.params
        if task.type == "run":
            given = params.get("input") or {}
            if not isinstance(given, Mapping):
                raise PermanentError("replicate: a run job's params.input must be an object")
            return dict(given)
        model_id = base_model_id(task.model or "")
        spec = self.model_catalog().replicate_spec(model_id)
        if spec is not None:
            params = params_with_defaults(spec.params, params)
        names = self.model_catalog().replicate_inputs(model_id)
        out: dict[str, Any] = {}
        for key, value in params.items():
            if value is None:
                continue
            if key == "input" and isinstance(value, Mapping):
                continue
            out[names.get(key, key)] = value
        extra = params.get("input")
        if isinstance(extra, Mapping):
            out.update(extra)
        return out

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        pid = _check_id(provider_id)
        data = self._finished.pop(pid, None)
        schedule = self.poll_schedule(task)
        failures = 0
        last: tuple[str, float | None] | None = None
        if data is None and not task.resumed:  # just created: nothing to see yet (or a callback will say)
            await task.pause(schedule.next_delay())
        while True:
            if data is None:
                data = task.take_callback_outcome(pid, finished_prediction, f"replicate: prediction {pid}")
            if data is None:
                try:
                    data = await self._call("GET", f"/predictions/{pid}")
                    failures = 0
                except TransientError as exc:
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        raise
                    pause = schedule.next_delay(hint=exc.retry_after)
                    log.info("replicate: polling %s failed (%s); again in %.1f s", pid, exc.message, pause)
                    await task.pause(pause)
                    continue
            _note(task, data)
            status = data.get("status")
            if status == "succeeded":
                return self._result(task, pid, data)
            if status == "failed":
                error = data.get("error")
                raise PermanentError(f"replicate: prediction {pid} failed: {error or 'no error message given'}")
            if status == "canceled":
                raise PermanentError(f"replicate: prediction {pid} was canceled")
            if status == "aborted":
                raise PermanentError(f"replicate: prediction {pid} was aborted before it started (deadline passed)")
            update: ProgressUpdate | None = None
            percent: float | None = None
            if status == "starting":
                update = ProgressUpdate(phase="queued")
            elif status == "processing":
                percent = parse_percent(data.get("logs"))
                update = ProgressUpdate(phase="running", percent=percent)
            else:
                log.warning("replicate: prediction %s has unknown status %r; still waiting", pid, status)
            if update is not None and (update.phase, update.percent) != last:
                last = (update.phase, update.percent)
                await _report(report, update)
            data = None
            await task.pause(schedule.next_delay(percent=percent))

    def _transcript(self, task: Task, pid: str, data: dict[str, Any]) -> ProviderResult:
        """A Whisper prediction's output as word timings, the SRT we store, and the transcript fields."""
        output = data.get("output")
        if not isinstance(output, dict):
            raise PermanentError(f"replicate: prediction {pid} gave no transcript object (got {type(output).__name__})")
        words = whisper_words(output)
        text = output.get("transcription", output.get("text"))
        language = output.get("detected_language", output.get("language"))
        fields = transcript_fields(
            text if isinstance(text, str) else None, words, language=language if isinstance(language, str) else None
        )
        fields["provider_id"] = pid
        srt = write_srt(task.workdir, words)
        return ProviderResult(
            outputs=[Output(path=srt, content_type="application/x-subrip")],
            fields=fields,
            cost_usd=self._cost(task, 1),
        )

    def _result(self, task: Task, pid: str, data: dict[str, Any]) -> ProviderResult:
        if task.type == "transcribe":
            return self._transcript(task, pid, data)
        output = data.get("output")
        outputs: list[Output] = []
        for i, url in enumerate(_collect_outputs(output)):
            if url.startswith("data:"):
                outputs.append(_write_data_uri(url, task.workdir, i))
            else:
                outputs.append(Output(url=url, content_type=_content_type(url)))
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        fields: dict[str, Any] = {"provider_id": pid, "predict_time": (metrics or {}).get("predict_time")}
        if not outputs and output is not None:
            fields["output"] = output
        return ProviderResult(outputs=outputs, fields=fields, cost_usd=self._cost(task, len(outputs)))

    def _makes_images(self, model: str) -> bool:
        """True for catalogued Replicate models that make images (worth a `Prefer: wait`)."""
        spec = self.model_catalog().replicate_spec(model)
        return spec is not None and "generate-image" in spec.types

    def _cost(self, task: Task, n_outputs: int) -> float | None:
        """The run's cost from the catalogued price model; None when it cannot be told."""
        model_id = base_model_id(task.model or "")
        spec: ModelSpec | None = self.model_catalog().replicate_spec(model_id)
        if spec is None:
            return None
        if task.type == "run":
            given = task.params.get("input")
            if not isinstance(given, Mapping):
                return None
            reverse = {v: k for k, v in self.model_catalog().replicate_inputs(model_id).items()}
            params: dict[str, Any] = {reverse.get(str(k), str(k)): v for k, v in given.items()}
        else:
            params = dict(task.params)
        params = params_with_defaults(spec.params, params)
        price = spec.price
        if price.unit == "free":
            return 0.0
        # The per-resolution, mode and audio tables price the built-in model; a model the catalog replaced
        # (a catalog file, a plugin) is priced by its own `price` alone.
        builtin = spec is MODELS_BY_ID.get(model_id)
        by_res = RESOLUTION_PRICES.get(model_id, {}) if builtin else {}
        if price.unit == "run":
            return by_res.get(str(params.get("resolution")), price.usd)
        if price.unit == "image":
            return round(price.usd * max(n_outputs, 1), 6)
        if price.unit == "second":
            duration = params.get("duration")
            if not isinstance(duration, int | float) or isinstance(duration, bool):
                return None
            per_second = price.usd
            by_mode = MODE_PRICES.get(model_id, {}) if builtin else {}
            per_second = by_res.get(str(params.get("resolution")), by_mode.get(str(params.get("mode")), per_second))
            audio = params.get("generate_audio")
            if isinstance(audio, bool) and builtin:
                per_second = AUDIO_PRICES.get(model_id, {}).get(audio, per_second)
            return round(per_second * float(duration), 6)
        return None

    async def cancel(self, task: Task, provider_id: str) -> None:
        if not _ID_RE.match(provider_id):
            return
        self._finished.pop(provider_id, None)
        try:
            await self._call("POST", f"/predictions/{provider_id}/cancel")
        except PermanentError as exc:  # finished, gone or never ours: nothing left to stop
            log.info("replicate: cancel of %s not needed: %s", provider_id, exc.message)
