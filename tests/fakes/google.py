"""A fake of the Gemini API's Veo video generation (FastAPI on 127.0.0.1, in a background thread).

    with FakeGoogle(latency_s=0.5) as fake:
        provider = GoogleProvider(fake.key, fake.base_url)

- `POST /v1beta/models/{model}:predictLongRunning` checks the request as the Gemini API does (one instance with
  a `prompt`, inline images as `{bytesBase64Encoded, mimeType}`, `parameters` among aspectRatio, resolution,
  durationSeconds, negativePrompt, personGeneration, sampleCount, with the values each model takes; 1080p and 4k
  only for 8 s; an unknown field, `seed` among them, is refused) and answers a long-running operation `{"name":
  "models/{model}/operations/{id}"}`.
- `GET /v1beta/models/{model}/operations/{id}` answers `{"name", "done": false}` for `latency_s`, then `done:
  true` with `response.generateVideoResponse.generatedSamples[0].video.uri`, or with `error` (see
  `operations_fail`), or with `raiMediaFilteredCount` / `raiMediaFilteredReasons` and no samples (see
  `safety_block`).
- `GET /v1beta/files/{id}:download?alt=media` (the video URI, on the fake's own origin) needs the key as every
  route does, and answers a real H.264 + AAC MP4 of the requested duration; with `redirect_downloads` it answers
  302 to a signed `/signed/{id}` URL that needs no key, as a storage host would.
- Errors are shaped as Google shapes them: `{"error": {"code", "message", "status", "details"}}`, a 429
  RESOURCE_EXHAUSTED carrying a `google.rpc.RetryInfo` with `retryDelay` ("17s").

Knobs: `fail_next_creates_with`, `fail_next_gets_with`, `operations_fail`, `safety_block`, `video_uri_origin`
(the video URI names another origin), `video_uri_override` (it names this URL, e.g. one of the `hostile` routes,
which serve any bytes or redirects at `/hostile/<name>`), `redirect_downloads`, `drop_connection_next`,
`accept_then_drop`, `accept_then_delay`.
Counters: `creates` (operations really started: the work that runs and is billed), `gets`, `downloads`;
`requests` logs every call (method, path, query, the key header).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from fakes.hostile import HostileRoutes
from fakes.runner import ThreadedServer
from reelflow import media

_VIDEOS: dict[int, bytes] = {}
_VIDEOS_LOCK = threading.Lock()

MODELS: dict[str, dict[str, list[Any]]] = {
    "veo-3.1-generate-preview": {"resolution": ["720p", "1080p", "4k"], "durationSeconds": [4, 6, 8]},
    "veo-3.1-fast-generate-preview": {"resolution": ["720p", "1080p", "4k"], "durationSeconds": [4, 6, 8]},
    "veo-3.1-lite-generate-preview": {"resolution": ["720p", "1080p"], "durationSeconds": [4, 6, 8]},
    "veo-3.0-generate-001": {"resolution": ["720p", "1080p"], "durationSeconds": [8]},
    "veo-3.0-fast-generate-001": {"resolution": ["720p", "1080p"], "durationSeconds": [8]},
}
INSTANCE_FIELDS = {"prompt", "image", "lastFrame", "referenceImages"}
PARAMETER_FIELDS = {"aspectRatio", "resolution", "durationSeconds", "negativePrompt", "personGeneration", "sampleCount"}
"""As the Gemini API takes them for Veo (no seed, fps, generateAudio: Vertex AI only)."""
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
CODES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
CODES |= {500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def video_media(seconds: int) -> bytes:
    """A real 64x36 H.264 + AAC MP4 of `seconds` s, made once per length per process."""
    with _VIDEOS_LOCK:
        if seconds not in _VIDEOS:

            async def build(folder: Path) -> bytes:
                silent, sound, out = folder / "v.mp4", folder / "a.m4a", folder / "out.mp4"
                await media.make_video(silent, prompt="veo", duration=seconds, width=64, height=36, fps=8)
                await media.make_audio(sound, duration=float(seconds))
                await media.merge_video_audio(silent, sound, out)
                return out.read_bytes()

            def make() -> None:
                with tempfile.TemporaryDirectory(prefix="fakegoogle-") as tmp:
                    _VIDEOS[seconds] = asyncio.run(build(Path(tmp)))

            # in a thread of its own: callers may already run inside an event loop
            worker = threading.Thread(target=make)
            worker.start()
            worker.join()
        return _VIDEOS[seconds]


def error(code: int, message: str, status: str | None = None, details: list[Any] | None = None) -> JSONResponse:
    """An answer shaped as the Gemini API shapes its errors."""
    body: dict[str, Any] = {"code": code, "message": message, "status": status or CODES.get(code, "UNKNOWN")}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=code)


def retry_info(seconds: float) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds:g}s"}


@dataclass
class FakeOperation:
    name: str
    model: str
    request: dict[str, Any]
    created: float
    latency_s: float
    seconds: int
    file_id: str
    error: dict[str, Any] | None = None
    filtered: list[str] | None = None

    def done(self, now: float) -> bool:
        return now >= self.created + self.latency_s


@dataclass
class FailPlan:
    status: int
    remaining: int
    retry_delay: float | None
    retry_after: float | None
    message: str | None
    rpc_status: str | None


@dataclass
class FakeGoogle:
    """The fake server; a context manager that runs it on a free port."""

    key: str = field(default_factory=lambda: "AIza" + secrets.token_hex(16))
    latency_s: float = 0.5
    operations: dict[str, FakeOperation] = field(default_factory=dict)
    creates: int = 0
    """Operations really started (each runs and is billed), whether or not their create was answered."""
    gets: int = 0
    downloads: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request: t, method, path, query, key (the x-goog-api-key header), status."""
    video_uri_origin: str | None = None
    """Operations name their video on this origin (`http://host:port`) instead of the fake's own."""
    redirect_downloads: bool = False
    """The video URI answers 302 to a signed URL on the fake's origin that needs no key."""
    video_uri_override: str | None = None
    """Operations name this as their video URI (e.g. a `/hostile/<name>` route of the fake)."""
    hostile: HostileRoutes = field(default_factory=HostileRoutes)

    def __post_init__(self) -> None:
        self._create_fail: FailPlan | None = None
        self._get_fail: FailPlan | None = None
        self._op_error: dict[str, Any] | None = None
        self._filtered: list[str] | None = None
        self._drops = 0
        self._faults: list[float | None] = []
        """What happens to the next answered creates: None drops the connection, a number delays the answer."""
        self._signed: dict[str, str] = {}
        self._lock = threading.Lock()
        self.port = 0
        self.app = self._build_app()

    # --- knobs ---------------------------------------------------------------------------------

    def fail_next_creates_with(
        self,
        status: int,
        n: int = 1,
        *,
        retry_delay: float | None = None,
        retry_after: float | None = None,
        message: str | None = None,
        rpc_status: str | None = None,
    ) -> None:
        """The next `n` creates answer `status`, starting nothing (429: with a RetryInfo `retryDelay` when given,
        and a `Retry-After` header when given)."""
        self._create_fail = FailPlan(status, n, retry_delay, retry_after, message, rpc_status)

    def fail_next_gets_with(self, status: int, n: int = 1, *, message: str | None = None) -> None:
        """The next `n` operation polls answer `status`."""
        self._get_fail = FailPlan(status, n, None, None, message, None)

    def operations_fail(self, error: dict[str, Any] | None) -> None:
        """Operations created from now on end `done` with this `google.rpc.Status` (None: succeed again)."""
        self._op_error = error

    def safety_block(self, reasons: list[str] | None) -> None:
        """Operations created from now on end with every sample removed by the safety filters, for `reasons`."""
        self._filtered = reasons

    def drop_connection_next(self, n: int = 1) -> None:
        """The next `n` API requests get their connection closed with no answer (nothing is done)."""
        self._drops = n

    def accept_then_drop(self, n: int = 1) -> None:
        """The next `n` creates start their operation (it runs and is billed) but the connection is closed
        without an answer: the client cannot know the work started."""
        with self._lock:
            self._faults += [None] * n

    def accept_then_delay(self, n: int = 1, delay_s: float = 5.0) -> None:
        """The next `n` creates start their operation and answer only after `delay_s`."""
        with self._lock:
            self._faults += [float(delay_s)] * n

    # --- addresses -----------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1beta"

    def requests_to(self, path_prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith(path_prefix)]

    # --- the app -------------------------------------------------------------------------------

    @staticmethod
    def _take(plan: FailPlan | None) -> tuple[FailPlan | None, FailPlan | None]:
        """(the plan to apply now, the plan left)."""
        if plan is None or plan.remaining <= 0:
            return None, None
        plan.remaining -= 1
        return plan, plan if plan.remaining > 0 else None

    def _auth(self, request: Request) -> Response | None:
        given = request.headers.get("x-goog-api-key")
        if not given:
            return error(403, "Method doesn't allow unregistered callers. Please use an API Key.")
        if given != self.key:
            return error(400, "API key not valid. Please pass a valid API key.")
        return None

    def _check(self, model: str, body: Any) -> str | tuple[int, dict[str, Any]]:
        """An error message for a request the Gemini API refuses, else (seconds, the parsed parameters)."""
        if model not in MODELS:
            return f"models/{model} is not found for API version v1beta, or is not supported for predictLongRunning."
        if not isinstance(body, dict) or set(body) - {"instances", "parameters"}:
            return "Invalid JSON payload received."
        instances, params = body.get("instances"), body.get("parameters", {})
        if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
            return "Exactly one instance is supported."
        if not isinstance(params, dict):
            return "Invalid JSON payload received: parameters must be an object."
        instance = instances[0]
        unknown = sorted((set(instance) - INSTANCE_FIELDS) | (set(params) - PARAMETER_FIELDS))
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        if not isinstance(instance.get("prompt"), str) or not instance["prompt"].strip():
            return "A prompt is required."
        for name in ("image", "lastFrame"):
            image = instance.get(name)
            if image is None:
                continue
            if not isinstance(image, dict) or image.get("mimeType") not in IMAGE_TYPES:
                return f"{name}: mimeType must be image/jpeg, image/png or image/webp."
            try:
                base64.b64decode(str(image.get("bytesBase64Encoded", "")), validate=True)
            except (binascii.Error, ValueError):
                return f"{name}: bytesBase64Encoded is not valid base64."
        if instance.get("lastFrame") is not None and instance.get("image") is None:
            return "lastFrame requires image."
        allowed = MODELS[model]
        seconds = params.get("durationSeconds", 8)
        resolution = params.get("resolution", "720p")
        if params.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
            return "aspectRatio must be 16:9 or 9:16."
        if resolution not in allowed["resolution"]:
            return f"resolution {resolution} is not supported by {model}."
        if seconds not in allowed["durationSeconds"]:
            return f"durationSeconds {seconds} is out of bounds for {model}."
        if resolution in ("1080p", "4k") and seconds != 8:
            return f"{resolution} is only supported with durationSeconds 8."
        return int(seconds), params

    def _operation_view(self, op: FakeOperation) -> dict[str, Any]:
        if not op.done(time.time()):
            return {"name": op.name, "done": False}
        if op.error is not None:
            return {"name": op.name, "done": True, "error": op.error}
        answer: dict[str, Any]
        if op.filtered is not None:
            answer = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": op.filtered}
        else:
            origin = self.video_uri_origin or self.origin
            uri = self.video_uri_override or f"{origin}/v1beta/files/{op.file_id}:download?alt=media"
            answer = {"generatedSamples": [{"video": {"uri": uri}}]}
        response = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
            "generateVideoResponse": answer,
        }
        return {"name": op.name, "done": True, "response": response}

    def _build_app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        @app.post("/v1beta/models/{model_call}")
        async def create(model_call: str, request: Request) -> Response:
            model, _, method = model_call.partition(":")
            if method != "predictLongRunning":
                return error(404, f"Method {method or 'none'} is not found.")
            if (refused := fake._auth(request)) is not None:
                return refused
            with fake._lock:
                plan, fake._create_fail = fake._take(fake._create_fail)
            if plan is not None:
                headers = {"Retry-After": f"{plan.retry_after:g}"} if plan.retry_after is not None else None
                details = [retry_info(plan.retry_delay)] if plan.retry_delay is not None else None
                if plan.status == 429:
                    message = plan.message or "Resource has been exhausted (e.g. check quota)."
                else:
                    message = plan.message or "The service is currently unavailable."
                answer = error(plan.status, message, plan.rpc_status, details)
                answer.headers.update(headers or {})
                return answer
            try:
                body = await request.json()
            except ValueError:
                return error(400, "Invalid JSON payload received.")
            checked = fake._check(model, body)
            if isinstance(checked, str):
                return error(404 if "is not found" in checked else 400, checked)
            seconds, _ = checked
            op = FakeOperation(
                name=f"models/{model}/operations/{uuid.uuid4().hex[:12]}",
                model=model,
                request=body,
                created=time.time(),
                latency_s=fake.latency_s,
                seconds=seconds,
                file_id=uuid.uuid4().hex[:16],
                error=fake._op_error,
                filtered=fake._filtered,
            )
            with fake._lock:
                fake.operations[op.name] = op
                fake.creates += 1
            return JSONResponse({"name": op.name})

        @app.get("/v1beta/models/{model}/operations/{oid}")
        async def get_operation(model: str, oid: str, request: Request) -> Response:
            fake.gets += 1
            if (refused := fake._auth(request)) is not None:
                return refused
            with fake._lock:
                plan, fake._get_fail = fake._take(fake._get_fail)
            if plan is not None:
                return error(plan.status, plan.message or "The service is currently unavailable.")
            op = fake.operations.get(f"models/{model}/operations/{oid}")
            if op is None:
                return error(404, "Operation not found.")
            return JSONResponse(fake._operation_view(op))

        @app.get("/v1beta/files/{file_call}")
        async def download(file_call: str, request: Request) -> Response:
            file_id, _, method = file_call.partition(":")
            if method != "download":
                return error(404, "Method not found.")
            if (refused := fake._auth(request)) is not None:
                return refused
            op = next((o for o in list(fake.operations.values()) if o.file_id == file_id), None)
            if op is None or not op.done(time.time()) or op.error is not None or op.filtered is not None:
                return error(404, "File not found.")
            if fake.redirect_downloads:
                sig = secrets.token_hex(8)
                fake._signed[sig] = file_id
                return Response(status_code=302, headers={"location": f"{fake.origin}/signed/{file_id}?sig={sig}"})
            fake.downloads += 1
            return Response(video_media(op.seconds), media_type="video/mp4")

        @app.get("/signed/{file_id}")
        async def signed(file_id: str, sig: str = "") -> Response:
            op = next((o for o in list(fake.operations.values()) if o.file_id == file_id), None)
            if op is None or fake._signed.get(sig) != file_id:
                return Response(b"forbidden", status_code=403, media_type="text/plain")
            fake.downloads += 1
            return Response(video_media(op.seconds), media_type="video/mp4")

        @app.get("/hostile/{name}")
        async def hostile(name: str) -> Response:
            return fake.hostile.response(name)

        return app

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Logs each request and drops or delays answers on demand, in front of the FastAPI app."""
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            entry: dict[str, Any] = {
                "t": time.time(),
                "method": scope["method"],
                "path": scope["path"],
                "query": scope.get("query_string", b"").decode(),
                "key": headers.get("x-goog-api-key"),
            }
            self.requests.append(entry)
            if scope["path"].startswith("/v1beta/") and self._drops > 0:
                self._drops -= 1  # before the app: nothing is created
                await self._drop(send)
                return
            raw_send = send

            async def recording_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    entry["status"] = message["status"]
                await raw_send(message)

            send = recording_send
            if scope["method"] == "POST" and scope["path"].endswith(":predictLongRunning") and self._faults:
                send = self._faulty(raw_send, recording_send)
        await self.app(scope, receive, send)

    def _faulty(self, raw_send: Any, send: Any) -> Any:
        """A create's `send` that applies the next fault once the create is taken (answered 200)."""
        dropped = False

        async def faulty_send(message: dict[str, Any]) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] == "http.response.start" and message["status"] == 200:
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
            raise RuntimeError("fake google: dropping the connection")
        transport.abort()
        await asyncio.sleep(0.05)

    # --- running -------------------------------------------------------------------------------

    def __enter__(self) -> FakeGoogle:
        self._runner = ThreadedServer(self._asgi, "Google", interface="asgi3").start()
        self.port = self._runner.port
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.stop()
