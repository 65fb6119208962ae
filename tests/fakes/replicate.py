"""A fake of Replicate's predictions API (FastAPI on 127.0.0.1, in a background thread).

    with FakeReplicate(token="r8_test", latency_s=0.5) as fake:
        provider = ReplicateProvider(fake.token, fake.base_url)

Predictions walk `starting` -> `processing` (logs with percentages) -> `succeeded` over `queue_s` +
`latency_s`; their output is a URL to a real tiny mp4 (video models) or png (image models, as a list)
served by the fake itself. Knobs: `fail_next_creates_with`, `prediction_fails`, `drop_connection_next`,
`accept_then_drop`, `accept_then_delay`, `forge_urls_get`, `forge_list_next`, `remove_data`,
`output_override`, `rate_limit_per_s` (429 with Retry-After past that many API requests a second),
`drop_webhooks`, `tamper_webhooks`, `list_page_size`, `down_models` (503 on every create), `failing_models`
(predictions of a model end failed); counters `creates` (predictions really created: the work that runs and
is billed), `create_calls` (create requests per model), `gets`, `lists`, `cancels`, `secret_reads`,
`webhooks_sent`, `throttled`;
`requests` logs every call. `hostile` serves any bytes or redirects at `/hostile/<name>` (an
`output_override` can name them).

`GET /v1/predictions` lists predictions as Replicate documents it (the HTTP API reference, "List
predictions"): newest first, `created_after` (at or after) and `created_before` (before) in ISO 8601,
`source` (`api` or `web`), pages of `list_page_size` (Replicate: 100) linked by `next` / `previous`, full URLs
carrying a `cursor` and the filters. Each listed prediction has exactly the fields the reference shows:
id, model, version, input, output, error, status, source, data_removed, created_at, started_at,
completed_at, metrics, urls; no logs, no webhook (`GET /v1/predictions/{id}` adds those).

A create with `webhook` gets a Standard Webhooks POST of the whole prediction to that URL when it
ends (`webhook_events_filter` honoured for `completed`), signed with `webhook_secret`, which
`GET /v1/webhooks/default/secret` hands out as Replicate does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from standardwebhooks.webhooks import Webhook

from fakes.hostile import HostileRoutes
from fakes.runner import ThreadedServer
from reelflow import media
from reelflow.net import pooled_transport

_MEDIA: dict[str, bytes] = {}
_MEDIA_LOCK = threading.Lock()

IMAGE_HINTS = ("flux", "ideogram", "image", "sdxl", "imagen", "recraft")

DEFAULT_DETAILS = {
    401: "You did not pass a valid authentication token",
    402: "You have insufficient credit to run this model. Go to https://replicate.com/account/billing to buy more.",
    404: "The requested resource could not be found.",
    422: "- input.duration: duration must be one of the following: 5, 10",
    500: "Internal server error",
    503: "Service temporarily unavailable",
}
TITLES = {
    401: "Unauthenticated",
    402: "Insufficient credit",
    404: "Not found",
    422: "Input validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def sample_media() -> dict[str, bytes]:
    """A real 64x64, 1 s mp4 and a 64x64 png, made once per process."""
    with _MEDIA_LOCK:
        if not _MEDIA:

            async def make(folder: Path) -> None:
                await media.make_video(folder / "v.mp4", prompt="fake", duration=1.0, width=64, height=64)
                await media.make_image(folder / "i.png", prompt="fake", width=64, height=64)

            with tempfile.TemporaryDirectory(prefix="fake-replicate-") as tmp:
                folder = Path(tmp)
                # in a thread of its own: callers may already run inside an event loop
                worker = threading.Thread(target=asyncio.run, args=(make(folder),))
                worker.start()
                worker.join()
                _MEDIA["mp4"] = (folder / "v.mp4").read_bytes()
                _MEDIA["png"] = (folder / "i.png").read_bytes()
    return _MEDIA


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> float:
    """An ISO 8601 date-time (`Z` or an offset; naive means UTC) or date as epoch seconds; ValueError otherwise."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _cursor(kind: str, created: float, pid: str) -> str:
    """An opaque page cursor: `p` (the page after this prediction) or `r` (the page before it)."""
    return base64.urlsafe_b64encode(f"{kind}={created!r}:{pid}".encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[str, tuple[float, str]]:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    kind, _, rest = raw.partition("=")
    created, _, pid = rest.partition(":")
    if kind not in ("p", "r") or not pid:
        raise ValueError(cursor)
    return kind, (float(created), pid)


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "detail": detail, "status": status}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


@dataclass
class FakePrediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: float
    queue_s: float
    latency_s: float
    kind: str
    fail_error: str | None = None
    output_override: Any = None
    canceled_at: float | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    source: str = "api"
    data_removed: bool = False
    log_preamble: str = ""

    def status(self, now: float) -> str:
        if self.canceled_at is not None:
            return "canceled"
        if now < self.created + self.queue_s:
            return "starting"
        if now < self.created + self.queue_s + self.latency_s:
            return "processing"
        return "failed" if self.fail_error else "succeeded"


@dataclass
class FailPlan:
    status: int
    remaining: int
    retry_after: float | None
    detail: str | None


@dataclass
class FakeReplicate:
    """The fake server; a context manager that runs it on a free port."""

    token: str = field(default_factory=lambda: "r8_" + secrets.token_hex(8))
    latency_s: float = 0.5
    queue_s: float = 0.1
    predictions: dict[str, FakePrediction] = field(default_factory=dict)
    creates: int = 0
    """Predictions really created (each runs and is billed), whether or not their create was answered."""
    gets: int = 0
    lists: int = 0
    cancels: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request: t, method, path, authorization, prefer, body (JSON, for creates)."""
    forged_get_url: str | None = None
    output_override: Any = None
    """Predictions created from now on succeed with this as their output (a URL, a list of them...)."""
    hostile: HostileRoutes = field(default_factory=HostileRoutes)
    webhook_secret: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    rate_limit_per_s: float | None = None
    drop_webhooks: bool = False
    tamper_webhooks: bool = False
    secret_reads: int = 0
    webhooks_sent: int = 0
    webhook_failures: int = 0
    throttled: int = 0
    webhook_answers: Counter[int] = field(default_factory=Counter)
    """Status codes our callback route answered the webhooks with."""
    list_page_size: int = 100
    """Predictions per page of `GET /v1/predictions` (Replicate's is 100; tests make it small to page)."""
    forged_list_base: str | None = None
    down_models: set[str] = field(default_factory=set)
    """Models (`owner/name`) whose every create answers 503: a model that is down."""
    failing_models: dict[str, str] = field(default_factory=dict)
    """Models whose predictions end `failed` with this error (a content-policy refusal, say)."""
    create_calls: Counter[str] = field(default_factory=Counter)
    """Create requests per model (`owner/name`), answered or refused."""
    log_preamble: str = ""
    """Printed by the model before its progress lines (predictions created from now on): a model loading its
    weights, say; tests make it long to see the log bounded."""

    def __post_init__(self) -> None:
        self._fail: FailPlan | None = None
        self._fail_error: str | None = None
        self._drops = 0
        self._faults: list[float | None] = []
        """What happens to the next answered creates: None drops the connection, a number delays the answer."""
        self._window: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: httpx.AsyncClient | None = None
        self._sending = asyncio.Semaphore(20)
        """Webhook POSTs beyond the sender's 20 connections wait here, not in httpcore's pool: it walks every queued
        request on each change (a thousand webhooks ending together cost the fake quadratic CPU), and a POST queued
        there past the client's 10 s timeout would be lost (PoolTimeout)."""
        self._lock = threading.Lock()
        self.port = 0
        self.media = sample_media()
        self.app = self._build_app()

    # --- knobs ---------------------------------------------------------------------------------

    def fail_next_creates_with(
        self, status: int, n: int = 1, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        """The next `n` creates answer `status` (429: throttled, with `Retry-After` when given)."""
        self._fail = FailPlan(status, n, retry_after, detail)

    def prediction_fails(self, error: str | None) -> None:
        """Predictions created from now on end `failed` with this `error` (None: succeed again)."""
        self._fail_error = error

    def drop_connection_next(self, n: int = 1) -> None:
        """The next `n` API requests get their connection closed with no answer."""
        self._drops = n

    def accept_then_drop(self, n: int = 1) -> None:
        """The next `n` creates are taken (the prediction exists, runs and is billed) but their connection is
        closed without an answer: the client cannot know the work started."""
        with self._lock:
            self._faults += [None] * n

    def accept_then_delay(self, n: int = 1, delay_s: float = 5.0) -> None:
        """The next `n` creates are taken and their answer is sent only after `delay_s` (a client with a
        shorter read timeout gives up on a prediction that runs anyway)."""
        with self._lock:
            self._faults += [float(delay_s)] * n

    def forge_list_next(self, base_url: str | None) -> None:
        """Prediction list pages name `next` / `previous` on this base (`http://host:port/v1`) instead of
        ours: a client must never send its token there."""
        self.forged_list_base = base_url

    def remove_data(self) -> None:
        """Every prediction so far has its input and output removed, as Replicate does an hour after an API
        prediction (`data_removed: true`)."""
        for p in list(self.predictions.values()):
            p.data_removed = True

    def forge_urls_get(self, url: str | None) -> None:
        """Predictions name this as `urls.get` (`{id}` is filled in): a client must never follow it."""
        self.forged_get_url = url

    # --- addresses -----------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def peak_running(self) -> int:
        """The most predictions that were processing at the same moment."""
        edges: list[tuple[float, int]] = []
        for p in list(self.predictions.values()):
            start = p.created + p.queue_s
            end = p.created + p.queue_s + p.latency_s
            if p.canceled_at is not None:
                end = min(end, p.canceled_at)
            if end > start:
                edges += [(start, 1), (end, -1)]
        peak = running = 0
        for _, step in sorted(edges):  # an end sorts before a start at the same instant
            running += step
            peak = max(peak, running)
        return peak

    def requests_to(self, path_prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith(path_prefix)]

    # --- the app -------------------------------------------------------------------------------

    def _view(self, p: FakePrediction) -> dict[str, Any]:
        now = time.time()
        status = p.status(now)
        started = p.created + p.queue_s if status != "starting" and p.canceled_at is None else None
        done_at = p.created + p.queue_s + p.latency_s
        logs: str | None = None
        if status == "processing":
            pct = int(100 * (now - p.created - p.queue_s) / max(p.latency_s, 1e-6))
            logs = f"{p.log_preamble}Using seed: 42\nGenerating...\n{pct:3d}%|####      | {pct}/100\n"
        elif status in ("succeeded", "failed"):
            logs = f"{p.log_preamble}Using seed: 42\nGenerating...\n100%|##########| 100/100\n"
        output: Any = None
        metrics: dict[str, Any] = {}
        if status == "succeeded":
            if p.output_override is not None:
                output = p.output_override
            elif "audio" in p.input:  # a Whisper model: openai/whisper's output shape (segments without words)
                output = {
                    "transcription": " Every evening the sea keeps its promise.",
                    "segments": [
                        {"id": 0, "start": 0.0, "end": 1.2, "text": " Every evening the sea"},
                        {"id": 1, "start": 1.2, "end": 2.4, "text": " keeps its promise."},
                    ],
                    "detected_language": "english",
                    "translation": None,
                }
            elif p.kind == "png":
                output = [f"{self.origin}/files/{p.id}.png"]
            else:
                output = f"{self.origin}/files/{p.id}.mp4"
            metrics = {"predict_time": p.latency_s, "total_time": p.queue_s + p.latency_s}
        get_url = f"{self.base_url}/predictions/{p.id}"
        if self.forged_get_url:
            get_url = self.forged_get_url.replace("{id}", p.id)
        view: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": {} if p.data_removed else p.input,
            "output": None if p.data_removed else output,
            "logs": logs,
            "error": p.fail_error if status == "failed" else None,
            "status": status,
            "source": p.source,
            "created_at": _iso(p.created),
            "started_at": _iso(started),
            "completed_at": _iso(p.canceled_at or done_at) if status in ("succeeded", "failed", "canceled") else None,
            "data_removed": p.data_removed,
            "metrics": metrics,
            "urls": {
                "get": get_url,
                "cancel": f"{self.base_url}/predictions/{p.id}/cancel",
                "stream": f"{self.origin}/stream/{p.id}",
            },
        }
        if p.webhook is not None:
            view["webhook"] = p.webhook
            view["webhook_events_filter"] = p.webhook_events_filter or ["start", "output", "logs", "completed"]
        return view

    LISTED = (
        "id", "model", "version", "input", "output", "error", "status", "source", "data_removed",
        "created_at", "started_at", "completed_at", "metrics", "urls",
    )  # fmt: skip
    """The fields of a prediction in `GET /v1/predictions`, as Replicate's reference shows them."""

    def _listed(self, p: FakePrediction) -> dict[str, Any]:
        view = self._view(p)
        return {k: view[k] for k in self.LISTED}

    def _list_page(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One page of `GET /v1/predictions` for these query parameters: (status, body)."""
        try:
            after = _parse_iso(query["created_after"]) if "created_after" in query else None
            before = _parse_iso(query["created_before"]) if "created_before" in query else None
        except ValueError:
            return 400, {"detail": "created_after and created_before must be ISO 8601 date-times"}
        source = query.get("source")
        if source is not None and source not in ("api", "web"):
            return 400, {"detail": "source must be one of: web, api"}
        items = [
            p
            for p in list(self.predictions.values())
            if (after is None or p.created >= after)
            and (before is None or p.created < before)
            and (source is None or p.source == source)
        ]
        items.sort(key=lambda p: (p.created, p.id), reverse=True)  # newest first
        size = max(1, self.list_page_size)
        start = 0
        if "cursor" in query:
            try:
                kind, key = _read_cursor(query["cursor"])
            except (ValueError, binascii.Error, UnicodeDecodeError):
                return 400, {"detail": "Invalid cursor"}
            if kind == "p":  # the page after `key` (older ones)
                start = next((i for i, p in enumerate(items) if (p.created, p.id) < key), len(items))
            else:  # the page before `key` (newer ones), the nearest of them
                newer = sum(1 for p in items if (p.created, p.id) > key)
                start = max(0, newer - size)
        page = items[start : start + size]
        filters = {k: v for k, v in query.items() if k in ("created_after", "created_before", "source")}
        base = self.forged_list_base or self.base_url

        def link(kind: str, p: FakePrediction) -> str:
            return f"{base}/predictions?" + urlencode({**filters, "cursor": _cursor(kind, p.created, p.id)})

        return 200, {
            "next": link("p", page[-1]) if page and start + len(page) < len(items) else None,
            "previous": link("r", page[0]) if page and start > 0 else None,
            "results": [self._listed(p) for p in page],
        }

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        def authorized(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {fake.token}"

        def over_limit() -> Response | None:
            """Replicate's throttling: past `rate_limit_per_s` requests in the last second, a 429."""
            if fake.rate_limit_per_s is None:
                return None
            now = time.time()
            with fake._lock:
                fake._window = [t for t in fake._window if t > now - 1.0]
                if len(fake._window) >= fake.rate_limit_per_s:
                    fake.throttled += 1
                    return _problem(429, "Request was throttled. Expected available in 1 second.", {"Retry-After": "1"})
                fake._window.append(now)
            return None

        async def deliver(p: FakePrediction) -> None:
            """POST the finished prediction to its webhook, signed as Replicate signs."""
            while p.status(time.time()) in ("starting", "processing"):  # one sleep to the end, not a busy poll
                await asyncio.sleep(max(0.01, p.created + p.queue_s + p.latency_s - time.time()))
            if fake.drop_webhooks or p.webhook is None:
                return
            body = json.dumps(fake._view(p)).encode()
            msg_id = f"msg_{uuid.uuid4().hex}"
            signed_at = datetime.now(UTC)  # one reading for the signature and its header (two may straddle a second)
            signature = Webhook(fake.webhook_secret).sign(msg_id, signed_at, body.decode())
            if fake.tamper_webhooks:
                body = body.replace(b'"succeeded"', b'"failed"')
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(signed_at.timestamp())),
                "webhook-signature": signature,
                "content-type": "application/json",
            }
            if fake._sender is None:  # one pooled client in the server's loop (a client per POST costs ~30 ms)
                # on reelflow's pooled transport (LeanPool): httpcore's own pool was 31% of the fake's CPU with
                # 1,000 webhooks (its quadratic walk, and anyio's attribute table built to ask a socket if readable)
                limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
                fake._sender = httpx.AsyncClient(timeout=10, transport=pooled_transport(limits=limits))
            try:
                async with fake._sending:  # see __post_init__
                    answer = await fake._sender.post(p.webhook, content=body, headers=headers)
                fake.webhooks_sent += 1
                fake.webhook_answers[answer.status_code] += 1
            except httpx.HTTPError:
                fake.webhook_failures += 1

        async def create(request: Request, model: str | None) -> Response:
            with fake._lock:
                plan = fake._fail
                if plan is not None and plan.remaining > 0:
                    plan.remaining -= 1
                    if plan.remaining == 0:
                        fake._fail = None
                else:
                    plan = None
            if not authorized(request):
                return _problem(401, DEFAULT_DETAILS[401])
            if (throttled := over_limit()) is not None:
                return throttled
            if model is not None:
                with fake._lock:
                    fake.create_calls[model] += 1
                if model in fake.down_models:
                    return _problem(503, DEFAULT_DETAILS[503])
            if plan is not None:
                headers = {"Retry-After": f"{plan.retry_after:g}"} if plan.retry_after is not None else None
                if plan.status == 429:
                    detail = plan.detail or "Request was throttled. Expected available in 3 seconds."
                else:
                    detail = plan.detail or DEFAULT_DETAILS.get(plan.status, "Error")
                return _problem(plan.status, detail, headers)
            try:
                body = await request.json()
            except ValueError:
                return _problem(400, "The request body is not valid JSON")
            if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
                return _problem(422, "- input: Input is required")
            version = "official"
            if model is None:
                version = body.get("version") or ""
                if not isinstance(version, str) or not version:
                    return _problem(422, "- version: Version is required")
                model = "unknown/pinned"
            kind = "png" if any(h in model for h in IMAGE_HINTS) else "mp4"
            p = FakePrediction(
                id=uuid.uuid4().hex[:26],
                model=model,
                version=version,
                input=body["input"],
                created=time.time(),
                queue_s=fake.queue_s,
                latency_s=fake.latency_s,
                kind=kind,
                fail_error=fake.failing_models.get(model, fake._fail_error),
                output_override=fake.output_override,
                log_preamble=fake.log_preamble,
            )
            with fake._lock:
                fake.predictions[p.id] = p
                fake.creates += 1
            hook = body.get("webhook")
            events = body.get("webhook_events_filter")
            if isinstance(hook, str):
                p.webhook = hook
                p.webhook_events_filter = [str(e) for e in events] if isinstance(events, list) else None
            if isinstance(hook, str) and (not isinstance(events, list) or "completed" in events):
                task = asyncio.create_task(deliver(p))
                fake._tasks.add(task)
                task.add_done_callback(fake._tasks.discard)
            prefer = request.headers.get("prefer", "")
            if prefer.startswith("wait"):
                _, _, n = prefer.partition("=")
                hold = min(60.0, max(1.0, float(n))) if n.strip().isdigit() else 60.0
                until = time.time() + hold
                while time.time() < until and p.status(time.time()) in ("starting", "processing"):
                    await asyncio.sleep(0.02)
            return JSONResponse(fake._view(p), status_code=201)

        @app.post("/v1/models/{owner}/{name}/predictions")
        async def create_official(owner: str, name: str, request: Request) -> Response:
            return await create(request, f"{owner}/{name}")

        @app.post("/v1/predictions")
        async def create_pinned(request: Request) -> Response:
            return await create(request, None)

        @app.get("/v1/predictions")
        async def list_predictions(request: Request) -> Response:
            fake.lists += 1
            if not authorized(request):
                return _problem(401, DEFAULT_DETAILS[401])
            if (throttled := over_limit()) is not None:
                return throttled
            status, body = fake._list_page(dict(request.query_params))
            if status != 200:
                return _problem(status, body["detail"])
            return JSONResponse(body)

        @app.get("/v1/predictions/{pid}")
        async def get_prediction(pid: str, request: Request) -> Response:
            fake.gets += 1
            if not authorized(request):
                return _problem(401, DEFAULT_DETAILS[401])
            if (throttled := over_limit()) is not None:
                return throttled
            p = fake.predictions.get(pid)
            if p is None:
                return _problem(404, DEFAULT_DETAILS[404])
            return JSONResponse(fake._view(p))

        @app.post("/v1/predictions/{pid}/cancel")
        async def cancel_prediction(pid: str, request: Request) -> Response:
            fake.cancels += 1
            if not authorized(request):
                return _problem(401, DEFAULT_DETAILS[401])
            p = fake.predictions.get(pid)
            if p is None:
                return _problem(404, DEFAULT_DETAILS[404])
            if p.status(time.time()) in ("starting", "processing"):
                p.canceled_at = time.time()
            return JSONResponse(fake._view(p))

        @app.get("/v1/webhooks/default/secret")
        async def webhook_secret(request: Request) -> Response:
            fake.secret_reads += 1
            if not authorized(request):
                return _problem(401, DEFAULT_DETAILS[401])
            return JSONResponse({"key": fake.webhook_secret})

        @app.get("/hostile/{name}")
        async def hostile(name: str) -> Response:
            return fake.hostile.response(name)

        @app.get("/files/{name}")
        async def files(name: str) -> Response:
            pid, _, ext = name.rpartition(".")
            if pid not in fake.predictions or ext not in fake.media:
                return Response(status_code=404)
            return Response(fake.media[ext], media_type="video/mp4" if ext == "mp4" else "image/png")

        return app

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Logs each request and drops connections on demand, in front of the FastAPI app."""
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            entry: dict[str, Any] = {
                "t": time.time(),
                "method": scope["method"],
                "path": scope["path"],
                "authorization": headers.get("authorization"),
                "prefer": headers.get("prefer"),
                "host": headers.get("host"),
            }
            if scope["method"] == "POST":
                chunks: list[bytes] = []
                more = True
                while more:
                    message = await receive()
                    chunks.append(message.get("body", b""))
                    more = message.get("more_body", False)
                raw = b"".join(chunks)
                entry["raw_body"] = raw
                replayed = False

                async def replay() -> dict[str, Any]:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": raw, "more_body": False}
                    return dict(await receive())

                receive = replay
            self.requests.append(entry)
            if scope["path"].startswith("/v1/") and self._drops > 0:
                self._drops -= 1  # before the app: nothing is created
                await self._drop(send)
                return
            raw_send = send

            async def recording_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    entry["status"] = message["status"]
                await raw_send(message)

            send = recording_send
            path = scope["path"]
            is_create = scope["method"] == "POST" and path.endswith("/predictions") and path.startswith("/v1/")
            if is_create and self._faults:
                send = self._faulty(raw_send, recording_send)
        await self.app(scope, receive, send)

    def _faulty(self, raw_send: Any, send: Any) -> Any:
        """A create's `send` that applies the next fault once the create is taken (answered 201)."""
        dropped = False

        async def faulty_send(message: dict[str, Any]) -> None:
            nonlocal dropped
            if dropped:
                return  # the connection is gone: the rest of the answer goes nowhere
            if message["type"] == "http.response.start" and message["status"] == 201:
                with self._lock:
                    fault = self._faults.pop(0) if self._faults else False
                if fault is None:
                    dropped = True
                    await self._drop(raw_send)
                    return
                if fault:
                    await asyncio.sleep(fault)
            await send(message)

        return faulty_send

    @staticmethod
    async def _drop(send: Any) -> None:
        """Close the connection under the request without answering (uvicorn's transport)."""
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is None:
            raise RuntimeError("fake replicate: dropping the connection")  # uvicorn answers 500 then
        transport.abort()
        await asyncio.sleep(0.05)

    # --- running -------------------------------------------------------------------------------

    def __enter__(self) -> FakeReplicate:
        self._runner = ThreadedServer(self._asgi, "Replicate", interface="asgi3").start()
        self.port = self._runner.port
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()
