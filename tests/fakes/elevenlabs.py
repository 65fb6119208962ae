"""A fake of ElevenLabs' text-to-speech API: a small FastAPI app on 127.0.0.1, run in a background thread.

    with FakeElevenLabs() as eleven:
        provider = ElevenLabsProvider(eleven.key, eleven.base_url)

`POST /v1/text-to-speech/{voice_id}` answers a real 1 s MP3; `GET /v1/voices` lists the premade voices
plus one custom voice. Errors are shaped as ElevenLabs shapes them (`{"detail": {"status", "message"}}`,
422 as a list of `{loc, msg, type}`). Knobs fail the next N calls of a route or drop connections.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fakes.runner import ThreadedServer
from reelflow import media

_AUDIO: dict[str, bytes] = {}
_AUDIO_LOCK = threading.Lock()

PREMADE = {"Rachel": "21m00Tcm4TlvDq8ikWAM", "Adam": "pNInz6obpgDQGcFmaJgB", "Sarah": "EXAVITQu4vr4xnSDxMaL"}
CUSTOM_NAME, CUSTOM_ID = "Narrator Nell - warm, calm", "c0ffee0c0ffee0c0ffee"
MAX_CHARACTERS = {"eleven_multilingual_v2": 10000, "eleven_flash_v2_5": 40000}


def tiny_mp3() -> bytes:
    """A 1 s MP3, made once per process."""
    with _AUDIO_LOCK:
        if not _AUDIO:

            def make() -> None:
                with TemporaryDirectory(prefix="fakeeleven-") as tmp:
                    out = Path(tmp) / "speech.mp3"
                    asyncio.run(media.make_audio(out, duration=1.0))
                    _AUDIO["mp3"] = out.read_bytes()

            worker = threading.Thread(target=make)  # a thread of its own: callers may be inside a running loop
            worker.start()
            worker.join()
        return _AUDIO["mp3"]


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
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeElevenLabs:
    key: str = "sk_fake_eleven"

    hits: Counter[str] = field(default_factory=Counter)
    """Calls per route: tts, voices."""
    log: list[LoggedRequest] = field(default_factory=list)
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _drops: Counter[str] = field(default_factory=Counter)

    # --- knobs -----------------------------------------------------------------------------------

    def fail_next(
        self,
        route: str,
        n: int = 1,
        status: int = 500,
        *,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        """The next `n` calls of `route` (tts, voices) answer `status` with `{"detail": detail}`."""
        if detail is None:
            detail = {"status": "internal_error", "message": "An internal error occurred."}
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        self._failures.setdefault(route, []).extend(Failure(status, {"detail": detail}, headers) for _ in range(n))

    def drop_next(self, route: str, n: int = 1) -> None:
        """The next `n` calls of `route` lose their connection mid-answer."""
        self._drops[route] += n

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> FakeElevenLabs:
        self.audio = tiny_mp3()
        self.runner = ThreadedServer(self._app(), "elevenlabs").start()
        self.base_url = self.runner.url + "/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()

    def count(self, route: str) -> int:
        return self.hits[route]

    def voices(self) -> list[dict[str, Any]]:
        listed = [{"voice_id": vid, "name": name, "category": "premade"} for name, vid in PREMADE.items()]
        return [*listed, {"voice_id": CUSTOM_ID, "name": CUSTOM_NAME, "category": "cloned"}]

    # --- the app ---------------------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        def route_of(request: Request) -> str:
            parts = request.url.path.strip("/").split("/")
            if parts[:2] == ["v1", "text-to-speech"] and request.method == "POST":
                return "tts"
            if parts == ["v1", "voices"] and request.method == "GET":
                return "voices"
            return "other"

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            route = route_of(request)
            fake.hits[route] += 1
            body: Any = None
            if route == "tts":
                raw = await request.body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
            fake.log.append(
                LoggedRequest(
                    request.method,
                    request.url.path,
                    route,
                    request.headers.get("xi-api-key"),
                    dict(request.query_params),
                    dict(request.headers),
                    body,
                )
            )
            if request.headers.get("xi-api-key") != fake.key:
                detail = {"status": "invalid_api_key", "message": "Invalid API key"}
                return JSONResponse({"detail": detail}, status_code=401)
            if fake._drops[route] > 0:
                fake._drops[route] -= 1
                # announce more than is sent: the client sees the connection end mid-body
                return Response(b"ID3", status_code=200, headers={"Content-Length": "100"})
            pending = fake._failures.get(route)
            if pending:
                failure = pending.pop(0)
                return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
            response: Response = await call_next(request)
            return response

        @app.get("/v1/voices")
        async def voices() -> Response:
            return JSONResponse({"voices": fake.voices()})

        @app.post("/v1/text-to-speech/{voice_id}")
        async def tts(voice_id: str, request: Request) -> Response:
            if voice_id not in {v["voice_id"] for v in fake.voices()}:
                detail = {"status": "voice_not_found", "message": f"A voice with voice_id {voice_id} was not found."}
                return JSONResponse({"detail": detail}, status_code=404)
            fmt = request.query_params.get("output_format", "mp3_44100_128")
            if not fmt.startswith("mp3_"):
                detail = {"status": "invalid_output_format", "message": f"Output format {fmt} is not supported."}
                return JSONResponse({"detail": detail}, status_code=400)
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                detail = [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]
                return JSONResponse({"detail": detail}, status_code=422)
            model_id = body.get("model_id", "eleven_multilingual_v2")
            limit = MAX_CHARACTERS.get(model_id)
            if limit is None:
                detail = {"status": "model_not_found", "message": f"Model {model_id} does not exist."}
                return JSONResponse({"detail": detail}, status_code=400)
            if len(body["text"]) > limit:
                detail = {
                    "status": "max_character_limit_exceeded",
                    "message": f"Text is {len(body['text'])} characters; the limit is {limit}.",
                }
                return JSONResponse({"detail": detail}, status_code=400)
            headers = {"request-id": f"req-{fake.hits['tts']}", "character-cost": str(len(body["text"]))}
            return Response(fake.audio, media_type="audio/mpeg", headers=headers)

        return app
