"""A fake of fal's queue API: a small FastAPI app on 127.0.0.1, run in a background thread.

    with FakeFal(latency_s=0.3) as fal:
        provider = FalProvider(fal.key, fal.base_url)

Requests walk IN_QUEUE (queue_position counting down) -> IN_PROGRESS (logs with a percentage) ->
COMPLETED over `queue_s` + `latency_s`; results point at real tiny media the fake serves. Knobs fail the
next N calls of a route, drop connections, fail requests at completion, or forge the URLs submit answers;
`output_url` makes results name another URL, and `hostile` serves any bytes or redirects at `/hostile/<name>`.

Webhooks: a submission with `?fal_webhook=<url>` gets one signed POST to that URL when it completes
(from a timer thread), signed like fal's (Ed25519 over `request_id\nuser_id\ntimestamp\n<sha256 hex of
the body>`) with a key the fake serves as a JWKS at `jwks_url`. Knobs: `drop_webhooks`, `webhook_delay_s`,
`tamper_webhooks` ("body", "signature", "key", "stale"), `rotate_key()`. Counters: `hits` per route
(submit, status, result, cancel, file, jwks), `creates` (requests really queued: the work that runs and is
billed), `webhooks_sent`, `webhooks_failed`, `webhooks_dropped`. Status answers carry the request's log
entries (every entry so far, each with the time it was logged) only when asked with `?logs=1`.

Apps are `<owner>/<app>/...` with fal's own owner (`fal-ai`) or a partner's (`bytedance`, as
`bytedance/seedance-2.0/image-to-video`); other owners answer 404.

Lost answers: `accept_then_drop(n)` queues the next n submitted requests (they run) and closes the connection
without an answer; `accept_then_delay(n, delay_s)` queues them and answers only after delay_s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fakes.hostile import HostileRoutes
from fakes.runner import ThreadedServer
from reelflow import media

_MEDIA: dict[str, bytes] = {}
_MEDIA_LOCK = threading.Lock()
APP_OWNERS = ("fal-ai", "bytedance")
"""Owners of the apps the fake serves: fal's own and a partner's."""


def tiny_media() -> dict[str, bytes]:
    """A 64x64 PNG and a 1 s 64x64 MP4, made once per process."""
    with _MEDIA_LOCK:
        if not _MEDIA:

            def make() -> None:
                with TemporaryDirectory(prefix="fakefal-") as tmp:
                    image, video = Path(tmp) / "image.png", Path(tmp) / "video.mp4"
                    asyncio.run(media.make_image(image, prompt="fal", width=64, height=64))
                    asyncio.run(media.make_video(video, prompt="fal", duration=1.0, width=64, height=64, fps=12))
                    _MEDIA["image.png"] = image.read_bytes()
                    _MEDIA["video.mp4"] = video.read_bytes()

            worker = threading.Thread(target=make)  # a thread of its own: callers may be inside a running loop
            worker.start()
            worker.join()
        return dict(_MEDIA)


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class FakeRequest:
    request_id: str
    app: str
    """`<owner>/<app>` (what the status, result and cancel URLs carry)."""
    path: str
    """The whole submitted model path, subpath included."""
    input: dict[str, Any]
    created: float
    queue_s: float
    latency_s: float
    canceled: bool = False
    error: tuple[str, str] | None = None
    """(message, error_type) reported at completion instead of a result."""
    status_polls: int = 0
    webhook_url: str | None = None
    """Where the webhook goes when the request completes (the submit's `fal_webhook`)."""
    logs: list[dict[str, Any]] = field(default_factory=list)
    """What the app logged so far (entries keep the time they were logged at), oldest first."""


@dataclass
class LoggedRequest:
    method: str
    path: str
    route: str
    authorization: str | None
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    t: float = field(default_factory=time.monotonic)
    """When the request reached the fake (monotonic seconds)."""
    answer: int | None = None
    """The HTTP status the fake answered."""


@dataclass
class SentWebhook:
    url: str
    request_id: str
    headers: dict[str, str]
    body: bytes
    answer: int | None
    """The receiver's HTTP status; None when it could not be reached."""


def public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


@dataclass
class FakeFal:
    key: str = "fake-id:fake-secret"
    queue_s: float = 0.0
    latency_s: float = 0.2
    queue_start: int = 3
    """The queue position a request starts at; it counts down to 1 over `queue_s`."""
    forge_urls: str | None = None
    output_url: str | None = None
    """When set, every result names this URL as its media (the first image, or the video)."""
    hostile: HostileRoutes = field(default_factory=HostileRoutes)
    """When set (a base URL), submit answers status/response/cancel URLs on that host instead."""
    drop_webhooks: bool = False
    """Never deliver webhooks (each one that would have gone counts in `webhooks_dropped`)."""
    webhook_delay_s: float = 0.0
    """How long after completion the webhook goes out."""
    tamper_webhooks: str | None = None
    """Deliver broken webhooks: "body" (changed after signing), "signature" (one bit flipped), "key"
    (signed by a key the JWKS does not hold), "stale" (timestamp 10 minutes old)."""
    user_id: str = "fake-user-1234"

    requests: dict[str, FakeRequest] = field(default_factory=dict)
    creates: int = 0
    """Requests really queued (each runs and is billed), whether or not their submit was answered."""
    hits: Counter[str] = field(default_factory=Counter)
    """Calls per route: submit, status, result, cancel, file."""
    log: list[LoggedRequest] = field(default_factory=list)
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _drops: Counter[str] = field(default_factory=Counter)
    _errors: list[tuple[str, str]] = field(default_factory=list)
    signing_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    webhooks: list[SentWebhook] = field(default_factory=list)
    webhooks_sent: int = 0
    """Webhooks the receiver answered with a 2xx."""
    webhooks_failed: int = 0
    """Webhooks that could not be delivered (no connection, or a non-2xx answer)."""
    webhooks_dropped: int = 0
    _timers: list[threading.Timer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _faults: list[float | None] = field(default_factory=list)
    """What happens to the next answered submits: None drops the connection, a number delays the answer."""

    # --- knobs -----------------------------------------------------------------------------------

    def fail_next(
        self,
        route: str,
        n: int = 1,
        status: int = 500,
        *,
        detail: Any = "Internal server error",
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        """The next `n` calls of `route` (submit, status, result, cancel, jwks) answer `status` with `detail`."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if retryable is not None:
            headers["X-Fal-Retryable"] = "true" if retryable else "false"
        self._failures.setdefault(route, []).extend(Failure(status, {"detail": detail}, headers) for _ in range(n))

    def drop_next(self, route: str, n: int = 1) -> None:
        """The next `n` calls of `route` lose their connection mid-answer."""
        self._drops[route] += n

    def accept_then_drop(self, n: int = 1) -> None:
        """The next `n` submits are queued (the request runs and is billed) but their connection is closed
        without an answer: the client cannot know the work started."""
        with self._lock:
            self._faults += [None] * n

    def accept_then_delay(self, n: int = 1, delay_s: float = 5.0) -> None:
        """The next `n` submits are queued and answered only after `delay_s` (a client with a shorter read
        timeout gives up on a request that runs anyway)."""
        with self._lock:
            self._faults += [float(delay_s)] * n

    def fail_requests(
        self, n: int = 1, error: str = "Internal error", error_type: str = "internal_server_error"
    ) -> None:
        """The next `n` submitted requests end COMPLETED with this error instead of a result."""
        self._errors.extend((error, error_type) for _ in range(n))

    def rotate_key(self) -> None:
        """Sign with a new key from now on; the JWKS serves only the new one."""
        self.signing_key = Ed25519PrivateKey.generate()

    # --- webhooks --------------------------------------------------------------------------------

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    def sign(
        self,
        body: bytes,
        request_id: str,
        *,
        timestamp: int | None = None,
        key: Ed25519PrivateKey | None = None,
        user_id: str | None = None,
    ) -> dict[str, str]:
        """fal's webhook headers for `body` (signed by `key`, by default the fake's own)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        user = self.user_id if user_id is None else user_id
        message = "\n".join((request_id, user, stamp, hashlib.sha256(body).hexdigest())).encode()
        signature = (key or self.signing_key).sign(message)
        return {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": user,
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": signature.hex(),
        }

    def webhook_body(self, req: FakeRequest) -> bytes:
        """What fal POSTs when `req` ends: the result as `payload`, or the error."""
        state = self._state(req)
        body: dict[str, Any] = {"request_id": req.request_id, "gateway_request_id": req.request_id}
        if "error" in state:
            detail = [{"loc": ["body"], "msg": state["error"], "type": state["error_type"]}]
            body.update(status="ERROR", error="Invalid status code: 422", payload={"detail": detail})
        else:
            body.update(status="OK", payload=self._result(req))
        return json.dumps(body).encode()

    def signed_webhook(self, req: FakeRequest) -> tuple[dict[str, str], bytes]:
        """The headers and body of `req`'s webhook, broken as `tamper_webhooks` says."""
        body = self.webhook_body(req)
        tamper = self.tamper_webhooks
        key = Ed25519PrivateKey.generate() if tamper == "key" else None
        stamp = int(time.time()) - 600 if tamper == "stale" else None
        headers = self.sign(body, req.request_id, timestamp=stamp, key=key)
        if tamper == "body":
            body = body.replace(b'"status": "OK"', b'"status": "ERROR"', 1) if b'"OK"' in body else body + b" "
        elif tamper == "signature":
            sig = bytearray(bytes.fromhex(headers["X-Fal-Webhook-Signature"]))
            sig[0] ^= 1
            headers["X-Fal-Webhook-Signature"] = sig.hex()
        return headers, body

    def _schedule_webhook(self, req: FakeRequest) -> None:
        timer = threading.Timer(req.queue_s + req.latency_s + self.webhook_delay_s, self._deliver, args=(req,))
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _deliver(self, req: FakeRequest) -> None:
        if self.drop_webhooks or req.webhook_url is None:
            with self._lock:
                self.webhooks_dropped += 1
            return
        headers, body = self.signed_webhook(req)
        answer: int | None = None
        try:
            with httpx.Client(timeout=10.0) as client:
                answer = client.post(req.webhook_url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            answer = None
        with self._lock:
            self.webhooks.append(SentWebhook(req.webhook_url, req.request_id, headers, body, answer))
            if answer is not None and 200 <= answer < 300:
                self.webhooks_sent += 1
            else:
                self.webhooks_failed += 1

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FakeFal:
        self.media = tiny_media()
        self.app = self._app()
        self.runner = ThreadedServer(self._asgi, "fal", interface="asgi3").start()
        self.base_url = self.runner.url + ""
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        for timer in timers:
            if timer.is_alive():
                timer.join(timeout=10)
        self.runner.stop()

    def count(self, route: str) -> int:
        return self.hits[route]

    # --- the app ---------------------------------------------------------------------------------

    def _state(self, req: FakeRequest, with_logs: bool = True) -> dict[str, Any]:
        """The request's status; its logs (every entry so far, as fal gives them) only `with_logs` (`?logs=1`)."""
        elapsed = time.time() - req.created
        if req.canceled or elapsed >= req.queue_s + req.latency_s:
            if not req.canceled:
                self._log(req, "Generating: 100%")
            body: dict[str, Any] = {
                "status": "COMPLETED",
                "request_id": req.request_id,
                "metrics": {"inference_time": round(req.latency_s, 3)},
            }
            if with_logs:
                body["logs"] = list(req.logs)
            if req.canceled:
                body["error"], body["error_type"] = "Request was cancelled", "request_cancelled"
            elif req.error:
                body["error"], body["error_type"] = req.error
            return body
        if elapsed < req.queue_s:
            left = 1 - elapsed / req.queue_s
            position = max(0, int(left * self.queue_start + 0.999) - 1)
            return {"status": "IN_QUEUE", "request_id": req.request_id, "queue_position": position}
        pct = int(100 * (elapsed - req.queue_s) / req.latency_s) if req.latency_s else 100
        self._log(req, "Loading model")
        self._log(req, f"Generating: {pct}%")
        body = {"status": "IN_PROGRESS", "request_id": req.request_id}
        if with_logs:
            body["logs"] = list(req.logs)
        return body

    @staticmethod
    def _log(req: FakeRequest, message: str) -> None:
        """The app logs `message` now, unless it is what it logged last (or "Loading model" again)."""
        if req.logs and (req.logs[-1]["message"] == message or message == "Loading model"):
            return
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").removesuffix("+00:00")
        req.logs.append({"timestamp": stamp, "message": message, "level": "INFO", "source": "user"})

    def _result(self, req: FakeRequest) -> dict[str, Any]:
        seed = req.input.get("seed", 42)
        if "video" in req.path:
            size = len(self.media["video.mp4"])
            url = self.output_url or f"{self.base_url}/files/{req.request_id}/video.mp4"
            return {"video": {"url": url, "content_type": "video/mp4", "file_size": size}, "seed": seed}
        n = int(req.input.get("num_images") or 1)
        images = [
            {
                "url": self.output_url or f"{self.base_url}/files/{req.request_id}/image-{i}.png",
                "content_type": "image/png",
                "width": 64,
                "height": 64,
            }
            for i in range(n)
        ]
        return {"images": images, "seed": seed, "has_nsfw_concepts": [False] * n, "prompt": req.input.get("prompt")}

    def _app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        def route_of(request: Request) -> str:
            parts = request.url.path.strip("/").split("/")
            if parts[0] == "files":
                return "file"
            if parts[0] == ".well-known":
                return "jwks"
            if parts[0] == "hostile":
                return "hostile"
            if len(parts) >= 4 and parts[2] == "requests":
                if request.method == "PUT" and parts[-1] == "cancel":
                    return "cancel"
                return "status" if parts[-1] == "status" else "result"
            return "submit" if request.method == "POST" else "other"

        async def respond(route: str, request: Request, call_next: Any) -> Response:
            if route not in ("file", "jwks", "hostile") and request.headers.get("authorization") != f"Key {fake.key}":
                return JSONResponse({"detail": "Invalid or missing credentials"}, status_code=401)
            if fake._drops[route] > 0:
                fake._drops[route] -= 1
                # announce more than is sent: the client sees the connection end mid-body
                return Response(b"{", status_code=200, headers={"Content-Length": "100"})
            pending = fake._failures.get(route)
            if pending:
                failure = pending.pop(0)
                return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
            response: Response = await call_next(request)
            return response

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            route = route_of(request)
            fake.hits[route] += 1
            body: Any = None
            if route == "submit":
                raw = await request.body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
            entry = LoggedRequest(
                request.method,
                request.url.path,
                route,
                request.headers.get("authorization"),
                body,
                dict(request.query_params),
            )
            fake.log.append(entry)
            answer = await respond(route, request, call_next)
            entry.answer = answer.status_code
            return answer

        @app.get("/.well-known/jwks.json")
        async def jwks() -> Response:
            return JSONResponse({"keys": [public_jwk(fake.signing_key)]})

        @app.get("/hostile/{name}")
        async def hostile(name: str) -> Response:
            return fake.hostile.response(name)

        @app.get("/files/{request_id}/{name}")
        async def file(request_id: str, name: str) -> Response:
            if request_id not in fake.requests:
                return JSONResponse({"detail": "Not found"}, status_code=404)
            if name.endswith(".mp4"):
                return Response(fake.media["video.mp4"], media_type="video/mp4")
            return Response(fake.media["image.png"], media_type="image/png")

        @app.get("/{owner}/{app_name}/requests/{request_id}/status")
        async def status(owner: str, app_name: str, request_id: str, request: Request) -> Response:
            req = fake.requests.get(request_id)
            if req is None or req.app != f"{owner}/{app_name}":
                return JSONResponse({"detail": f"Request {request_id} not found"}, status_code=404)
            req.status_polls += 1
            state = fake._state(req, with_logs=request.query_params.get("logs") == "1")
            state["status_url"] = f"{fake.base_url}/{req.app}/requests/{req.request_id}/status"
            state["response_url"] = f"{fake.base_url}/{req.app}/requests/{req.request_id}"
            return JSONResponse(state, status_code=200 if state["status"] == "COMPLETED" else 202)

        @app.get("/{owner}/{app_name}/requests/{request_id}")
        async def result(owner: str, app_name: str, request_id: str) -> Response:
            req = fake.requests.get(request_id)
            if req is None or req.app != f"{owner}/{app_name}":
                return JSONResponse({"detail": f"Request {request_id} not found"}, status_code=404)
            state = fake._state(req)
            if state["status"] != "COMPLETED":
                return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
            if "error" in state:
                detail = [{"loc": ["body"], "msg": state["error"], "type": state["error_type"]}]
                return JSONResponse({"detail": detail}, status_code=422, headers={"X-Fal-Retryable": "false"})
            return JSONResponse(fake._result(req))

        @app.put("/{owner}/{app_name}/requests/{request_id}/cancel")
        async def cancel(owner: str, app_name: str, request_id: str) -> Response:
            req = fake.requests.get(request_id)
            if req is None or req.app != f"{owner}/{app_name}":
                return JSONResponse({"detail": f"Request {request_id} not found"}, status_code=404)
            if req.canceled or fake._state(req)["status"] == "COMPLETED":
                return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
            req.canceled = True
            return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

        @app.post("/{model_path:path}")
        async def submit(model_path: str, request: Request) -> Response:
            parts = model_path.strip("/").split("/")
            if len(parts) < 2 or parts[0] not in APP_OWNERS:
                return JSONResponse({"detail": f"Application '{model_path}' not found"}, status_code=404)
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                detail = [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
                return JSONResponse({"detail": detail}, status_code=422)
            missing = [name for name in fake._required(model_path) if name not in body]
            if missing:
                detail = [{"loc": ["body", name], "msg": "Field required", "type": "missing"} for name in missing]
                return JSONResponse({"detail": detail}, status_code=422)
            webhook = request.query_params.get("fal_webhook")
            if webhook is not None and not webhook.startswith(("http://", "https://")):
                detail = [{"loc": ["query", "fal_webhook"], "msg": "Invalid URL", "type": "url_parsing"}]
                return JSONResponse({"detail": detail}, status_code=422)
            request_id = str(uuid.uuid4())
            app_id = "/".join(parts[:2])
            req = FakeRequest(request_id, app_id, model_path, body, time.time(), fake.queue_s, fake.latency_s)
            req.webhook_url = webhook
            if fake._errors:
                req.error = fake._errors.pop(0)
            with fake._lock:
                fake.requests[request_id] = req
                fake.creates += 1
            if webhook is not None:
                fake._schedule_webhook(req)
            where = fake.forge_urls or fake.base_url
            base = f"{where}/{app_id}/requests/{request_id}"
            return JSONResponse(
                {
                    "request_id": request_id,
                    "gateway_request_id": request_id,
                    "status_url": f"{base}/status",
                    "response_url": base,
                    "cancel_url": f"{base}/cancel",
                    "queue_position": fake.queue_start - 1 if fake.queue_s else 0,
                }
            )

        return app

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The app, behind which a taken submit's answer is dropped or delayed on demand."""
        if scope["type"] != "http" or scope["method"] != "POST" or not self._faults:
            await self.app(scope, receive, send)
            return
        raw_send, dropped = send, False

        async def faulty_send(message: dict[str, Any]) -> None:
            nonlocal dropped
            if dropped:
                return  # the connection is gone: the rest of the answer goes nowhere
            if message["type"] == "http.response.start" and message["status"] == 200:
                with self._lock:
                    fault = self._faults.pop(0) if self._faults else False
                if fault is None:
                    dropped = True
                    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
                    if transport is None:
                        raise RuntimeError("fake fal: dropping the connection")
                    transport.abort()  # uvicorn's transport: closed under the request, no answer
                    return
                if fault:
                    await asyncio.sleep(fault)
            await raw_send(message)

        await self.app(scope, receive, faulty_send)

    @staticmethod
    def _required(model_path: str) -> list[str]:
        if "image-to-video" in model_path:
            return ["prompt", "image_url"]
        return ["prompt"]
