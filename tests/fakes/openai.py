"""A fake of OpenAI's speech, image and transcription APIs: a FastAPI app on 127.0.0.1,
run in a background thread.

    with FakeOpenAI() as oai:
        provider = OpenAIProvider(oai.key, oai.base_url)

- `POST /v1/audio/speech` answers a real 1 s MP3; `POST /v1/images/generations` answers `n` real 64x64
  images as `b64_json` with `usage` (or, with `image_url` set, that URL for each image). `hostile` serves
  any bytes or redirects at `/hostile/<name>`, without credentials.
- The Videos API (`/v1/videos`, Sora) is gone: OpenAI shut it down on 2026-09-24, and here as there its
  paths answer 404.
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

`paid` counts the work done and billed per route (speech, images, transcriptions); `creates` is
their sum. Errors are shaped as OpenAI shapes them (`{"error": {message, type, param, code}}`). Knobs fail,
stall or drop the next N calls of a route before anything is done, or do the work and then lose the answer
(`lose_next_answer`, `accept_then_drop`) or send it late (`accept_then_delay`). `hits` counts calls per
route: speech, images, transcriptions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fakes.hostile import HostileRoutes
from fakes.runner import ThreadedServer
from reelflow import media

_MEDIA: dict[str, bytes] = {}
_MEDIA_LOCK = threading.Lock()

VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}
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


SYNC_CREATES = ("speech", "images", "transcriptions")
"""The routes whose work is done (and billed) within the request."""
CREATES = SYNC_CREATES
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
    if method == "POST":
        return {
            "/v1/audio/speech": "speech",
            "/v1/images/generations": "images",
            "/v1/audio/transcriptions": "transcriptions",
        }.get(path, "other")
    return "other"


@dataclass
class FakeOpenAI:
    key: str = "sk-fake-openai"
    transcript_text: str = DEFAULT_TRANSCRIPT

    hits: Counter[str] = field(default_factory=Counter)
    """Calls per route (see the module docstring)."""
    log: list[LoggedRequest] = field(default_factory=list)
    replays: int = 0
    """Creates answered from the idempotency store (nothing made)."""
    paid: Counter[str] = field(default_factory=Counter)
    """Work done and billed, per create route (a replay is not; work whose answer was lost is)."""
    transcriptions: list[dict[str, Any]] = field(default_factory=list)
    """Each accepted transcription: fields, filename, sha256, size, duration."""
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _drops: Counter[str] = field(default_factory=Counter)
    _lost_answers: Counter[str] = field(default_factory=Counter)
    _stalls: dict[str, list[float]] = field(default_factory=dict)
    _kept: dict[str, KeptAnswer] = field(default_factory=dict)
    """Speech, image and transcription answers by idempotency key."""
    _after_accept: dict[str, list[float | None]] = field(default_factory=dict)
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

    # --- counters --------------------------------------------------------------------------------

    def count(self, route: str) -> int:
        return self.hits[route]

    @property
    def creates(self) -> int:
        """Work actually done and billed: speeches, images and transcriptions answered (an idempotent replay
        does none)."""
        return sum(self.paid.values())

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
