"""A fake of OpenAI's speech, image, video (Sora) and transcription APIs: a FastAPI app on 127.0.0.1,
run in a background thread.

    with FakeOpenAI() as oai:
        provider = OpenAIProvider(oai.key, oai.base_url)

- `POST /v1/audio/speech` answers a real 1 s MP3; `POST /v1/images/generations` answers `n` real 64x64
  images as `b64_json` with `usage` (or, with `image_url` set, that URL for each image). `hostile` serves
  any bytes or redirects at `/hostile/<name>`, without credentials.
- `POST /v1/videos` (multipart: `prompt`, `model`, `seconds`, `size`, `input_reference`) makes a video
  that is `queued` for `queue_s`, then `in_progress` with `progress` rising to 100 over
  `video_latency_s`, then `completed` (or `failed` with `error.code`/`message`, see `videos_fail`).
  `Idempotency-Key` is honoured for 24 h: the same key answers the same video and creates nothing.
  `GET /v1/videos/{id}` answers it with an `openai-poll-after-ms` header while unfinished;
  `GET /v1/videos/{id}/content` a real MP4 (with sound) of the video's length; `DELETE` deletes it.
  With `webhook_url` and `webhook_secret` set, a Standard Webhooks event (`video.completed` /
  `video.failed`) is POSTed there when a video ends (unless `drop_webhooks`).
- `POST /v1/audio/transcriptions` probes the uploaded file and answers `verbose_json` whose words (from
  `transcript_text`) are spread evenly over the file's duration.
- Speech, images and transcriptions honour `Idempotency-Key` for 24 h as well: the first request with a key
  that succeeds is kept, and the same key with the same request (same path, same JSON, or the same form
  fields and file bytes, whatever the multipart boundary) answers that first answer again without doing or
  billing the work (`replays`); the same key with a different request answers 400 `idempotency_key_mismatch`;
  the same key while the first is still being worked on answers 409 `idempotency_key_in_use`. A request that
  fails is not kept (its key stays free). OpenAI's API reference does not document the header nor these
  answers (its OpenAPI description, openai/openai-openapi, has no idempotency at all, and its SDKs send no
  key): the fake follows the usual convention of APIs that do (Stripe's), which is what the adapter hopes for.

`paid` counts the work done and billed per route (speech, images, transcriptions, video_create); `creates` is
their sum. Errors are shaped as OpenAI shapes them (`{"error": {message, type, param, code}}`). Knobs fail,
stall or drop the next N calls of a route before anything is done, or do the work and then lose the answer
(`lose_next_answer`, `accept_then_drop`) or send it late (`accept_then_delay`). `hits` counts calls per
route: speech, images, transcriptions, video_create, video_get, video_content, video_delete.
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
from email import policy
from email.parser import BytesParser
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook

from fakes.hostile import HostileRoutes
from fakes.runner import ThreadedServer
from reelflow import media

_MEDIA: dict[str, bytes] = {}
_MEDIA_LOCK = threading.Lock()
_VIDEOS: dict[int, bytes] = {}
_VIDEOS_LOCK = threading.Lock()

VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
VIDEO_MODELS = {
    "sora-2": ["720x1280", "1280x720"],
    "sora-2-pro": ["720x1280", "1280x720", "1024x1792", "1792x1024"],
}
VIDEO_SECONDS = ("4", "8", "12")
REFERENCE_TYPES = {"image/jpeg", "image/png", "image/webp"}
AUDIO_FORMATS = ["flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"]
LANGUAGES = {"en": "english", "fr": "french", "de": "german", "es": "spanish"}
DEFAULT_TRANSCRIPT = "Every evening the sea keeps its promise."


def _in_thread(make: Any) -> None:
    """Run `make()` (which may call asyncio.run) in a thread of its own: callers may be inside a running loop."""
    worker = threading.Thread(target=make)
    worker.start()
    worker.join()


def tiny_media() -> dict[str, bytes]:
    """A 1 s MP3, a 64x64 PNG and the same as JPEG, made once per process."""
    with _MEDIA_LOCK:
        if not _MEDIA:

            def make() -> None:
                with TemporaryDirectory(prefix="fakeopenai-") as tmp:
                    mp3, png, jpg = Path(tmp) / "speech.mp3", Path(tmp) / "image.png", Path(tmp) / "image.jpg"
                    asyncio.run(media.make_audio(mp3, duration=1.0))
                    asyncio.run(media.make_image(png, prompt="openai", width=64, height=64))
                    asyncio.run(media.make_image(jpg, prompt="openai", width=64, height=64))
                    _MEDIA.update(mp3=mp3.read_bytes(), png=png.read_bytes(), jpeg=jpg.read_bytes())

            _in_thread(make)
        return dict(_MEDIA)


def video_media(seconds: int) -> bytes:
    """A real 64x36 H.264 + AAC MP4 of `seconds` s, made once per length per process."""
    with _VIDEOS_LOCK:
        if seconds not in _VIDEOS:

            async def build(folder: Path) -> bytes:
                silent, sound, out = folder / "v.mp4", folder / "a.m4a", folder / "out.mp4"
                await media.make_video(silent, prompt="sora", duration=seconds, width=64, height=36, fps=8)
                await media.make_audio(sound, duration=float(seconds))
                await media.merge_video_audio(silent, sound, out)
                return out.read_bytes()

            def make() -> None:
                with TemporaryDirectory(prefix="fakeopenai-video-") as tmp:
                    _VIDEOS[seconds] = asyncio.run(build(Path(tmp)))

            _in_thread(make)
        return _VIDEOS[seconds]


def error(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _bad(message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> JSONResponse:
    return JSONResponse(error(message, param=param, code=code), status_code=status)


@dataclass
class UploadedFile:
    filename: str | None
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def parse_form(content_type: str, raw: bytes) -> tuple[dict[str, list[str]], dict[str, UploadedFile]]:
    """A multipart/form-data body as (fields, files); ValueError when it is not one."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("not multipart/form-data")
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        raise ValueError("not multipart")
    fields: dict[str, list[str]] = {}
    files: dict[str, UploadedFile] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a part without a name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = UploadedFile(filename, part.get_content_type(), data)
        else:
            fields.setdefault(name, []).append(data.decode("utf-8"))
    return fields, files


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class LoggedRequest:
    method: str
    path: str
    route: str
    authorization: str | None
    body: Any = None
    """JSON bodies as parsed; multipart bodies as {name: value or [values]}."""
    idempotency_key: str | None = None
    content_type: str | None = None
    files: dict[str, UploadedFile] = field(default_factory=dict)


@dataclass
class FakeVideo:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    created: float
    queue_s: float
    latency_s: float
    failure: tuple[str, str] | None = None
    reference: UploadedFile | None = None
    idempotency_key: str | None = None
    deleted: bool = False

    @property
    def ends_at(self) -> float:
        return self.created + self.queue_s + self.latency_s

    def status(self, now: float) -> str:
        if now < self.created + self.queue_s:
            return "queued"
        if now < self.ends_at:
            return "in_progress"
        return "failed" if self.failure else "completed"

    def progress(self, now: float) -> int:
        status = self.status(now)
        if status == "queued":
            return 0
        if status == "in_progress":
            return max(0, min(99, int(100 * (now - self.created - self.queue_s) / max(self.latency_s, 1e-6))))
        return 100

    def view(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        done = status in ("completed", "failed")
        return {
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": status,
            "progress": self.progress(now),
            "created_at": int(self.created),
            "completed_at": int(self.ends_at) if done else None,
            "expires_at": int(self.ends_at) + 3600 if status == "completed" else None,
            "prompt": self.prompt,
            "seconds": self.seconds,
            "size": self.size,
            "quality": "standard",
            "remixed_from_video_id": None,
            "error": {"code": self.failure[0], "message": self.failure[1]} if status == "failed" else None,
        }


SYNC_CREATES = ("speech", "images", "transcriptions")
"""The routes whose work is done (and billed) within the request."""
CREATES = (*SYNC_CREATES, "video_create")
IDEMPOTENCY_TTL_S = 86400.0


@dataclass
class KeptAnswer:
    """What a request with an idempotency key was, and (once done) what it answered."""

    fingerprint: str
    at: float
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def request_fingerprint(path: str, content_type: str, raw: bytes) -> str:
    """What makes two requests the same one: the path and the body's meaning (JSON as parsed; a form as its
    fields and files, not its random boundary)."""
    described: Any
    try:
        if content_type.lower().startswith("multipart/form-data"):
            fields, files = parse_form(content_type, raw)
            described = {
                "fields": sorted((k, v) for k, vs in fields.items() for v in vs),
                "files": sorted((k, f.filename, f.content_type, f.sha256) for k, f in files.items()),
            }
        else:
            described = json.loads(raw) if raw else None
    except ValueError:
        described = hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(json.dumps([path, described], sort_keys=True, default=str).encode()).hexdigest()


def _route(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if method == "POST":
        return {
            "/v1/audio/speech": "speech",
            "/v1/images/generations": "images",
            "/v1/audio/transcriptions": "transcriptions",
            "/v1/videos": "video_create",
        }.get(path, "other")
    if len(parts) == 3 and parts[:2] == ["v1", "videos"]:
        return {"GET": "video_get", "DELETE": "video_delete"}.get(method, "other")
    if len(parts) == 4 and parts[:2] == ["v1", "videos"] and parts[3] == "content" and method == "GET":
        return "video_content"
    return "other"


@dataclass
class FakeOpenAI:
    key: str = "sk-fake-openai"
    video_latency_s: float = 0.6
    """Seconds a video spends `in_progress` (its progress rises 0 -> 100 over them)."""
    queue_s: float = 0.1
    """Seconds a video spends `queued` first."""
    poll_after_ms: int | None = 50
    """The `openai-poll-after-ms` header on unfinished videos (None: no header)."""
    webhook_url: str | None = None
    webhook_secret: str | None = None
    drop_webhooks: bool = False
    """Events are made but never sent (a lost webhook)."""
    transcript_text: str = DEFAULT_TRANSCRIPT

    hits: Counter[str] = field(default_factory=Counter)
    """Calls per route (see the module docstring)."""
    log: list[LoggedRequest] = field(default_factory=list)
    videos: dict[str, FakeVideo] = field(default_factory=dict)
    """Every video made, deleted ones included."""
    replays: int = 0
    """Creates answered from the idempotency store (nothing made)."""
    paid: Counter[str] = field(default_factory=Counter)
    """Work done and billed, per create route (a replay is not; work whose answer was lost is)."""
    webhooks_sent: list[dict[str, Any]] = field(default_factory=list)
    """Each delivered event: url, headers, body (bytes), status (or error)."""
    webhooks_dropped: list[dict[str, Any]] = field(default_factory=list)
    transcriptions: list[dict[str, Any]] = field(default_factory=list)
    """Each accepted transcription: fields, filename, sha256, size, duration."""
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _drops: Counter[str] = field(default_factory=Counter)
    _lost_answers: Counter[str] = field(default_factory=Counter)
    _stalls: dict[str, list[float]] = field(default_factory=dict)
    _video_failure: tuple[str, str] | None = None
    _idempotency: dict[str, tuple[str, float]] = field(default_factory=dict)
    _kept: dict[str, KeptAnswer] = field(default_factory=dict)
    """Speech, image and transcription answers by idempotency key."""
    _after_accept: dict[str, list[float | None]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    corrupt_images: int = 0
    """The next N image answers carry invalid base64."""
    image_url: str | None = None
    """When set, image answers name this URL (`{"url": ...}`) instead of carrying the image."""
    hostile: HostileRoutes = field(default_factory=HostileRoutes)

    # --- knobs -----------------------------------------------------------------------------------

    def fail_next(
        self,
        route: str,
        n: int = 1,
        status: int = 500,
        *,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        """The next `n` calls of `route` answer `status` with `body` (an OpenAI error)."""
        if body is None:
            body = error("The server had an error while processing your request.", "server_error")
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._failures.setdefault(route, []).extend(Failure(status, body, headers) for _ in range(n))

    def drop_next(self, route: str, n: int = 1) -> None:
        """The next `n` calls of `route` lose their connection before anything is done."""
        self._drops[route] += n

    def lose_next_answer(self, route: str, n: int = 1) -> None:
        """The next `n` calls of `route` are carried out, then their answer is lost mid-body."""
        self._lost_answers[route] += n

    def stall_next(self, route: str, seconds: float, n: int = 1) -> None:
        """The next `n` calls of `route` wait `seconds` before being answered (client timeouts)."""
        self._stalls.setdefault(route, []).extend([seconds] * n)

    def accept_then_drop(self, n: int = 1, *, route: str | None = None) -> None:
        """The next `n` creates (of `route`, or of any create route) are done and billed, then the connection
        closes before the answer is complete."""
        self._after_accept.setdefault(route or "*", []).extend([None] * n)

    def accept_then_delay(self, n: int = 1, delay_s: float = 2.0, *, route: str | None = None) -> None:
        """The next `n` creates (of `route`, or of any create route) are done and billed, and answered only
        after `delay_s` (a client whose read timeout is shorter gives up first)."""
        self._after_accept.setdefault(route or "*", []).extend([delay_s] * n)

    def _take_after_accept(self, route: str) -> tuple[bool, float | None]:
        for name in (route, "*"):
            pending = self._after_accept.get(name)
            if pending:
                return True, pending.pop(0)
        return False, None

    def videos_fail(self, code: str | None, message: str = "") -> None:
        """Videos created from now end `failed` with this error (None: succeed again)."""
        self._video_failure = (code, message) if code is not None else None

    # --- counters --------------------------------------------------------------------------------

    def count(self, route: str) -> int:
        return self.hits[route]

    @property
    def creates(self) -> int:
        """Work actually done and billed: videos made, speeches, images and transcriptions answered (an
        idempotent replay does none)."""
        return sum(self.paid.values())

    @property
    def gets(self) -> int:
        return self.hits["video_get"]

    @property
    def content_downloads(self) -> int:
        return self.hits["video_content"]

    @property
    def deletes(self) -> int:
        return self.hits["video_delete"]

    # --- webhooks --------------------------------------------------------------------------------

    def signed_event(
        self,
        video_id: str,
        event_type: str = "video.completed",
        *,
        secret: str | None = None,
        at: datetime | None = None,
        body: bytes | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(headers, body) of a Standard Webhooks event as OpenAI sends it, signed with `secret`."""
        when = at or datetime.now(UTC)
        if body is None:
            event = {
                "id": f"evt_{uuid.uuid4().hex}",
                "object": "event",
                "created_at": int(when.timestamp()),
                "type": event_type,
                "data": {"id": video_id},
            }
            body = json.dumps(event).encode()
        msg_id = f"wh_{uuid.uuid4().hex}"
        signature = Webhook(secret or self.webhook_secret or "").sign(msg_id, when, body.decode())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
        }
        return headers, body

    async def _notify_when_done(self, video: FakeVideo) -> None:
        await asyncio.sleep(max(0.0, video.ends_at - time.time()) + 0.01)
        if video.deleted or not (self.webhook_url and self.webhook_secret):
            return
        event_type = "video.failed" if video.failure else "video.completed"
        headers, body = self.signed_event(video.id, event_type)
        record: dict[str, Any] = {"url": self.webhook_url, "headers": headers, "body": body, "video": video.id}
        if self.drop_webhooks:
            self.webhooks_dropped.append(record)
            return
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                answer = await client.post(self.webhook_url, content=body, headers=headers)
            record["status"] = answer.status_code
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        self.webhooks_sent.append(record)

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        self.media = tiny_media()
        self.runner = ThreadedServer(self._app(), "openai").start()
        self.base_url = self.runner.url + "/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()

    # --- the app ---------------------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            route = _route(request.method, request.url.path)
            fake.hits[route] += 1
            raw = await request.body()
            ctype = request.headers.get("content-type", "")
            body: Any = None
            files: dict[str, UploadedFile] = {}
            if ctype.startswith("multipart/form-data"):
                try:
                    fields, files = parse_form(ctype, raw)
                    body = {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
                except ValueError:
                    body = raw.decode(errors="replace")
            elif raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
            fake.log.append(
                LoggedRequest(
                    request.method,
                    request.url.path,
                    route,
                    request.headers.get("authorization"),
                    body,
                    request.headers.get("idempotency-key"),
                    ctype or None,
                    files,
                )
            )
            if request.url.path.startswith("/hostile/"):
                hostile: Response = await call_next(request)
                return hostile
            if request.headers.get("authorization") != f"Bearer {fake.key}":
                body = error("Incorrect API key provided.", code="invalid_api_key")
                return JSONResponse(body, status_code=401)
            if fake._drops[route] > 0:
                fake._drops[route] -= 1
                # announce more than is sent: the client sees the connection end mid-body
                return Response(b"{", status_code=200, headers={"Content-Length": "100"})
            stalls = fake._stalls.get(route)
            if stalls:
                await asyncio.sleep(stalls.pop(0))
            pending = fake._failures.get(route)
            if pending:
                failure = pending.pop(0)
                return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
            key = request.headers.get("idempotency-key") if route in SYNC_CREATES else None
            kept: KeptAnswer | None = None
            if key:
                fingerprint = request_fingerprint(request.url.path, ctype, raw)
                kept = fake._kept.get(key)
                if kept is not None and time.time() - kept.at < IDEMPOTENCY_TTL_S:
                    return replay(key, kept, fingerprint)
                kept = fake._kept[key] = KeptAnswer(fingerprint, time.time())
            response: Response = await call_next(request)
            if route in CREATES:
                chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
                content = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
                headers = dict(response.headers)
                response = Response(content, status_code=response.status_code, headers=headers)
                done = 200 <= response.status_code < 300
                if route in SYNC_CREATES and done:
                    fake.paid[route] += 1
                if kept is not None and key:
                    if done:
                        kept.status, kept.body, kept.headers = response.status_code, content, headers
                    else:
                        fake._kept.pop(key, None)  # a refused or failed request keeps nothing: the key stays free
                taken, delay_s = fake._take_after_accept(route) if done else (False, None)
                if taken and delay_s is not None:
                    await asyncio.sleep(delay_s)
                elif taken:
                    # announce more than is sent: the client sees the connection end mid-body
                    return Response(b"{", status_code=200, headers={"Content-Length": "100"})
            if fake._lost_answers[route] > 0:
                fake._lost_answers[route] -= 1
                if hasattr(response, "body_iterator"):
                    async for _ in response.body_iterator:
                        pass  # the work is done; only the answer goes missing
                return Response(b"{", status_code=200, headers={"Content-Length": "100"})
            return response

        def replay(key: str, kept: KeptAnswer, fingerprint: str) -> Response:
            if kept.fingerprint != fingerprint:
                message = (
                    f"The idempotency key '{key}' was first used with a different request; a key names one "
                    "request only. Send a new key for a new request."
                )
                return _bad(message, param="Idempotency-Key", code="idempotency_key_mismatch")
            if kept.status is None:
                message = f"A request with the idempotency key '{key}' is still being processed; retry it later."
                return _bad(message, param="Idempotency-Key", code="idempotency_key_in_use", status=409)
            fake.replays += 1
            return Response(kept.body, status_code=kept.status, headers=kept.headers)

        async def json_body(request: Request) -> dict[str, Any] | None:
            try:
                body = await request.json()
            except ValueError:
                return None
            return body if isinstance(body, dict) else None

        async def form_body(request: Request) -> tuple[dict[str, list[str]], dict[str, UploadedFile]] | None:
            try:
                return parse_form(request.headers.get("content-type", ""), await request.body())
            except ValueError:
                return None

        async def probe_upload(upload: UploadedFile) -> dict[str, Any] | None:
            suffix = Path(upload.filename or "").suffix or ".bin"
            with TemporaryDirectory(prefix="fakeopenai-upload-") as tmp:
                path = Path(tmp) / f"upload{suffix}"
                path.write_bytes(upload.data)
                try:
                    return await media.probe(path)
                except media.MediaError:
                    return None

        @app.get("/hostile/{name}")
        async def hostile_file(name: str) -> Response:
            return fake.hostile.response(name)

        @app.post("/v1/audio/speech")
        async def speech(request: Request) -> Response:
            body = await json_body(request)
            if body is None or not isinstance(body.get("input"), str):
                return JSONResponse(error("Missing required parameter: 'input'.", param="input"), status_code=400)
            if len(body["input"]) > 4096:
                message = f"'{body['input'][:20]}...' is too long - 'input': at most 4096 characters."
                return JSONResponse(error(message, param="input", code="string_above_max_length"), status_code=400)
            if body.get("voice") not in VOICES:
                message = f"Invalid value: '{body.get('voice')}'. Supported values are: {', '.join(sorted(VOICES))}."
                return JSONResponse(error(message, param="voice", code="invalid_value"), status_code=400)
            if body.get("response_format", "mp3") != "mp3":
                return JSONResponse(error("This fake speaks mp3 only.", param="response_format"), status_code=400)
            headers = {"x-request-id": f"req_speech_{fake.hits['speech']}"}
            return Response(fake.media["mp3"], media_type="audio/mpeg", headers=headers)

        @app.post("/v1/images/generations")
        async def images(request: Request) -> Response:
            body = await json_body(request)
            if body is None or not isinstance(body.get("prompt"), str):
                return JSONResponse(error("Missing required parameter: 'prompt'.", param="prompt"), status_code=400)
            if "forbidden" in body["prompt"]:
                message = "Your request was rejected as a result of our safety system."
                return JSONResponse(error(message, param=None, code="moderation_blocked"), status_code=400)
            n = body.get("n", 1)
            fmt = body.get("output_format", "png")
            if not isinstance(n, int) or not 1 <= n <= 10 or fmt not in ("png", "jpeg"):
                return JSONResponse(error("Invalid n or output_format.", param="n"), status_code=400)
            encoded = base64.b64encode(fake.media[fmt]).decode()
            if fake.corrupt_images > 0:
                fake.corrupt_images -= 1
                encoded = "not base64!"
            answer = {
                "created": int(time.time()),
                "data": [{"url": fake.image_url} if fake.image_url else {"b64_json": encoded} for _ in range(n)],
                "background": body.get("background", "opaque"),
                "output_format": fmt,
                "size": body.get("size") if body.get("size") not in (None, "auto") else "1024x1024",
                "quality": body.get("quality") if body.get("quality") not in (None, "auto") else "medium",
                "usage": {"input_tokens": 12, "output_tokens": 1056 * n, "total_tokens": 12 + 1056 * n},
            }
            return JSONResponse(answer, headers={"x-request-id": f"req_images_{fake.hits['images']}"})

        # --- videos ------------------------------------------------------------------------------

        def video_answer(video: FakeVideo) -> JSONResponse:
            now = time.time()
            headers = {"x-request-id": f"req_video_{uuid.uuid4().hex[:12]}"}
            if video.status(now) in ("queued", "in_progress") and fake.poll_after_ms is not None:
                headers["openai-poll-after-ms"] = str(fake.poll_after_ms)
            return JSONResponse(video.view(now), headers=headers)

        def find(video_id: str) -> FakeVideo | None:
            video = fake.videos.get(video_id)
            return None if video is None or video.deleted else video

        def not_found(video_id: str) -> JSONResponse:
            return _bad(f"Video with id '{video_id}' not found.", param="video_id", status=404)

        @app.post("/v1/videos")
        async def create_video(request: Request) -> Response:
            key = request.headers.get("idempotency-key")
            if key and key in fake._idempotency:
                video_id, at = fake._idempotency[key]
                if time.time() - at < 86400 and video_id in fake.videos:
                    fake.replays += 1
                    return video_answer(fake.videos[video_id])
            form = await form_body(request)
            if form is None:
                return _bad("Expected a multipart/form-data body.")
            fields, files = form
            prompt = (fields.get("prompt") or [""])[0]
            model = (fields.get("model") or ["sora-2"])[0]
            seconds = (fields.get("seconds") or ["4"])[0]
            size = (fields.get("size") or ["720x1280"])[0]
            if not prompt.strip():
                return _bad("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
            if len(prompt) > 32000:
                return _bad("Prompt is too long (at most 32000 characters).", param="prompt")
            if model not in VIDEO_MODELS:
                message = f"Invalid value: '{model}'. Supported values are: 'sora-2' and 'sora-2-pro'."
                return _bad(message, param="model", code="invalid_value")
            if seconds not in VIDEO_SECONDS:
                message = f"Invalid value: '{seconds}'. Supported values are: '4', '8', and '12'."
                return _bad(message, param="seconds", code="invalid_value")
            if size not in VIDEO_MODELS[model]:
                message = f"Invalid value: '{size}'. Supported values are: {', '.join(VIDEO_MODELS[model])}."
                return _bad(message, param="size", code="invalid_value")
            if "forbidden" in prompt:
                message = "Your request was blocked by our moderation system."
                return _bad(message, code="moderation_blocked")
            reference = files.get("input_reference")
            if reference is not None:
                if reference.content_type not in REFERENCE_TYPES:
                    message = (
                        f"Invalid file type '{reference.content_type}'. Supported: image/jpeg, image/png, image/webp."
                    )
                    return _bad(message, param="input_reference", code="invalid_value")
                info = await probe_upload(reference)
                if info is None or f"{info['width']}x{info['height']}" != size:
                    message = "Inpaint image must match the requested width and height"
                    return _bad(message, param="input_reference", code="invalid_value")
            video = FakeVideo(
                id=f"video_{uuid.uuid4().hex}",
                model=model,
                prompt=prompt,
                seconds=seconds,
                size=size,
                created=time.time(),
                queue_s=fake.queue_s,
                latency_s=fake.video_latency_s,
                failure=fake._video_failure,
                reference=reference,
                idempotency_key=key,
            )
            fake.videos[video.id] = video
            fake.paid["video_create"] += 1
            if key:
                fake._idempotency[key] = (video.id, time.time())
            notify = asyncio.get_running_loop().create_task(fake._notify_when_done(video))
            fake._tasks.add(notify)
            notify.add_done_callback(fake._tasks.discard)
            return video_answer(video)

        @app.get("/v1/videos/{video_id}")
        async def get_video(video_id: str) -> Response:
            video = find(video_id)
            return not_found(video_id) if video is None else video_answer(video)

        @app.delete("/v1/videos/{video_id}")
        async def delete_video(video_id: str) -> Response:
            video = find(video_id)
            if video is None:
                return not_found(video_id)
            video.deleted = True
            return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

        @app.get("/v1/videos/{video_id}/content")
        async def video_content(video_id: str, variant: str = "video") -> Response:
            video = find(video_id)
            if video is None:
                return not_found(video_id)
            if variant not in ("video", "thumbnail", "spritesheet"):
                message = f"Invalid value: '{variant}'. Supported values are: 'video', 'thumbnail', and 'spritesheet'."
                return _bad(message, param="variant", code="invalid_value")
            status = video.status(time.time())
            if status != "completed":
                message = f"Video is not ready yet (status {status}); its content is available once it is completed."
                return _bad(message, param="video_id", status=404 if status == "failed" else 400)
            if variant == "thumbnail":
                return Response(fake.media["png"], media_type="image/png")
            if variant == "spritesheet":
                return Response(fake.media["jpeg"], media_type="image/jpeg")
            data = await asyncio.to_thread(video_media, int(video.seconds))
            return Response(data, media_type="video/mp4")

        # --- transcriptions ----------------------------------------------------------------------

        @app.post("/v1/audio/transcriptions")
        async def transcriptions(request: Request) -> Response:
            form = await form_body(request)
            if form is None:
                return _bad("Expected a multipart/form-data body.")
            fields, files = form
            upload = files.get("file")
            if upload is None:
                return _bad("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
            model = (fields.get("model") or [""])[0]
            if model != "whisper-1":
                return _bad(f"Invalid model '{model}' for transcription with timestamps.", param="model")
            fmt = (fields.get("response_format") or ["json"])[0]
            granularities = fields.get("timestamp_granularities[]", [])
            if granularities and fmt != "verbose_json":
                message = "timestamp_granularities is only supported with response_format=verbose_json."
                return _bad(message, param="timestamp_granularities")
            if any(g not in ("word", "segment") for g in granularities):
                return _bad("Invalid timestamp_granularities.", param="timestamp_granularities")
            suffix = Path(upload.filename or "").suffix.lstrip(".").lower()
            if suffix not in AUDIO_FORMATS:
                return _bad(f"Invalid file format. Supported formats: {AUDIO_FORMATS}", param="file")
            if len(upload.data) > 25 * 1024 * 1024:
                return _bad("Maximum content size limit (26214400) exceeded.", param="file", status=413)
            info = await probe_upload(upload)
            if info is None or not info["has_audio"] or not info["duration"]:
                return _bad("Audio file might be corrupted or unsupported", param="file", code="invalid_value")
            duration = round(float(info["duration"]), 2)
            language = (fields.get("language") or ["en"])[0]
            tokens = fake.transcript_text.split()
            span = max(duration - 0.2, 0.1) / max(len(tokens), 1)
            words = [
                {"word": w.strip(".,!?"), "start": round(0.1 + i * span, 2), "end": round(0.1 + (i + 0.8) * span, 2)}
                for i, w in enumerate(tokens)
            ]
            segments = []
            for n, at in enumerate(range(0, len(words), 6)):
                chunk = words[at : at + 6]
                segments.append(
                    {
                        "id": n,
                        "seek": 0,
                        "start": chunk[0]["start"],
                        "end": chunk[-1]["end"],
                        "text": " " + " ".join(tokens[at : at + 6]),
                        "tokens": [50364 + i for i in range(len(chunk))],
                        "temperature": 0.0,
                        "avg_logprob": -0.21,
                        "compression_ratio": 1.1,
                        "no_speech_prob": 0.01,
                    }
                )
            fake.transcriptions.append(
                {
                    "fields": fields,
                    "filename": upload.filename,
                    "content_type": upload.content_type,
                    "sha256": upload.sha256,
                    "size": len(upload.data),
                    "duration": duration,
                    "words": words,
                }
            )
            headers = {"x-request-id": f"req_transcription_{len(fake.transcriptions)}"}
            if fmt == "text":
                return Response(fake.transcript_text + "\n", media_type="text/plain", headers=headers)
            if fmt != "verbose_json":
                return JSONResponse({"text": fake.transcript_text}, headers=headers)
            answer: dict[str, Any] = {
                "task": "transcribe",
                "language": LANGUAGES.get(language, language),
                "duration": duration,
                "text": fake.transcript_text,
            }
            if "word" in granularities:
                answer["words"] = words
            if "segment" in granularities or not granularities:
                answer["segments"] = segments
            return JSONResponse(answer, headers=headers)

        return app
