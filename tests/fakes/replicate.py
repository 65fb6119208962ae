"""A fake of Replicate's predictions API (FastAPI on 127.0.0.1, in a background thread).

    with FakeReplicate(token="r8_test", latency_s=0.5) as fake:
        provider = ReplicateProvider(fake.token, fake.base_url)

Predictions walk `starting` -> `processing` (logs with percentages) -> `succeeded` over `queue_s` +
`latency_s`; their output is a URL to a real tiny mp4 (video models) or png (image models, as a list)
served by the fake itself. Knobs: `fail_next_creates_with`, `prediction_fails`, `drop_connection_next`,
`forge_urls_get`, `output_override`, `rate_limit_per_s` (429 with Retry-After past that many API
requests a second), `drop_webhooks`, `tamper_webhooks`; counters `creates`, `gets`, `cancels`,
`secret_reads`, `webhooks_sent`, `throttled`; `requests` logs every call. `hostile` serves any bytes or
redirects at `/hostile/<name>` (an `output_override` can name them).

A create with `webhook` gets a Standard Webhooks POST of the whole prediction to that URL when it
ends (`webhook_events_filter` honoured for `completed`), signed with `webhook_secret`, which
`GET /v1/webhooks/default/secret` hands out as Replicate does.
"""

from __future__ import annotations

import asyncio
import base64
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

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from standardwebhooks.webhooks import Webhook

from fakes.hostile import HostileRoutes
from fakes.runner import ThreadedServer
from reelflow import media

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
    gets: int = 0
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

    def __post_init__(self) -> None:
        self._fail: FailPlan | None = None
        self._fail_error: str | None = None
        self._drops = 0
        self._window: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: httpx.AsyncClient | None = None
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
            logs = f"Using seed: 42\nGenerating...\n{pct:3d}%|####      | {pct}/100\n"
        elif status in ("succeeded", "failed"):
            logs = "Using seed: 42\nGenerating...\n100%|##########| 100/100\n"
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
        return {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": p.input,
            "output": output,
            "logs": logs,
            "error": p.fail_error if status == "failed" else None,
            "status": status,
            "created_at": _iso(p.created),
            "started_at": _iso(started),
            "completed_at": _iso(p.canceled_at or done_at) if status in ("succeeded", "failed", "canceled") else None,
            "data_removed": False,
            "metrics": metrics,
            "urls": {
                "get": get_url,
                "cancel": f"{self.base_url}/predictions/{p.id}/cancel",
                "stream": f"{self.origin}/stream/{p.id}",
            },
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
            signature = Webhook(fake.webhook_secret).sign(msg_id, datetime.now(UTC), body.decode())
            if fake.tamper_webhooks:
                body = body.replace(b'"succeeded"', b'"failed"')
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": signature,
                "content-type": "application/json",
            }
            if fake._sender is None:  # one pooled client in the server's loop (a client per POST costs ~30 ms)
                fake._sender = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=20))
            try:
                answer = await fake._sender.post(p.webhook, content=body, headers=headers)
                fake.webhooks_sent += 1
                fake.webhook_answers[answer.status_code] += 1
            except httpx.HTTPError:
                fake.webhook_failures += 1

        async def create(request: Request, model: str | None) -> Response:
            with fake._lock:
                fake.creates += 1
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
                fail_error=fake._fail_error,
                output_override=fake.output_override,
            )
            fake.predictions[p.id] = p
            hook = body.get("webhook")
            events = body.get("webhook_events_filter")
            if isinstance(hook, str) and (not isinstance(events, list) or "completed" in events):
                p.webhook = hook
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
                self._drops -= 1
                if scope["method"] == "POST" and "/predictions" in scope["path"] and "cancel" not in scope["path"]:
                    self.creates += 1
                await self._drop(send)
                return
            inner_send = send

            async def recording_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    entry["status"] = message["status"]
                await inner_send(message)

            send = recording_send
        await self.app(scope, receive, send)

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
