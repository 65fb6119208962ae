"""A fake of OpenAI's speech and image APIs: a small FastAPI app on 127.0.0.1, run in a background thread.

    with FakeOpenAI() as oai:
        provider = OpenAIProvider(oai.key, oai.base_url)

`POST /v1/audio/speech` answers a real 1 s MP3; `POST /v1/images/generations` answers `n` real 64x64
images as `b64_json` with `usage`. Errors are shaped as OpenAI shapes them (`{"error": {message, type,
param, code}}`). Knobs fail the next N calls of a route or drop connections.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fakes.runner import ThreadedServer
from reelflow import media

_MEDIA: dict[str, bytes] = {}
_MEDIA_LOCK = threading.Lock()

VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse"}


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

            worker = threading.Thread(target=make)  # a thread of its own: callers may be inside a running loop
            worker.start()
            worker.join()
        return dict(_MEDIA)


def error(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


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


@dataclass
class FakeOpenAI:
    key: str = "sk-fake-openai"

    hits: Counter[str] = field(default_factory=Counter)
    """Calls per route: speech, images."""
    log: list[LoggedRequest] = field(default_factory=list)
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _drops: Counter[str] = field(default_factory=Counter)
    corrupt_images: int = 0
    """The next N image answers carry invalid base64."""

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
        """The next `n` calls of `route` (speech, images) answer `status` with `body` (an OpenAI error)."""
        if body is None:
            body = error("The server had an error while processing your request.", "server_error")
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._failures.setdefault(route, []).extend(Failure(status, body, headers) for _ in range(n))

    def drop_next(self, route: str, n: int = 1) -> None:
        """The next `n` calls of `route` lose their connection mid-answer."""
        self._drops[route] += n

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAI:
        self.media = tiny_media()
        self.runner = ThreadedServer(self._app(), "openai").start()
        self.base_url = self.runner.url + "/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()

    def count(self, route: str) -> int:
        return self.hits[route]

    # --- the app ---------------------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI()
        fake = self
        routes = {"/v1/audio/speech": "speech", "/v1/images/generations": "images"}

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            route = routes.get(request.url.path, "other") if request.method == "POST" else "other"
            fake.hits[route] += 1
            raw = await request.body()
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            fake.log.append(
                LoggedRequest(request.method, request.url.path, route, request.headers.get("authorization"), body)
            )
            if request.headers.get("authorization") != f"Bearer {fake.key}":
                body = error("Incorrect API key provided.", code="invalid_api_key")
                return JSONResponse(body, status_code=401)
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

        async def json_body(request: Request) -> dict[str, Any] | None:
            try:
                body = await request.json()
            except ValueError:
                return None
            return body if isinstance(body, dict) else None

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
                "data": [{"b64_json": encoded} for _ in range(n)],
                "background": body.get("background", "opaque"),
                "output_format": fmt,
                "size": body.get("size") if body.get("size") not in (None, "auto") else "1024x1024",
                "quality": body.get("quality") if body.get("quality") not in (None, "auto") else "medium",
                "usage": {"input_tokens": 12, "output_tokens": 1056 * n, "total_tokens": 12 + 1056 * n},
            }
            return JSONResponse(answer, headers={"x-request-id": f"req_images_{fake.hits['images']}"})

        return app
