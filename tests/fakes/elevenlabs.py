"""A fake of ElevenLabs' text-to-speech API: a small FastAPI app on 127.0.0.1, run in a background thread.

    with FakeElevenLabs() as eleven:
        provider = ElevenLabsProvider(eleven.key, eleven.base_url)

`POST /v1/text-to-speech/{voice_id}` answers a real MP3 whose length follows the text (1 s at least);
`POST /v1/text-to-speech/{voice_id}/with-timestamps` answers JSON with the same audio as `audio_base64`,
a character `alignment` of the text (times spread over the audio, ends meeting the next start, as
ElevenLabs gives them) and a `normalized_alignment` of the text with its whitespace collapsed.
`GET /v1/voices` lists three premade voices plus one custom voice. Only `mp3_*` output formats are made.

Every speech made is billed (`creates`, `characters_used`) and kept in the account's history, as
ElevenLabs documents it (https://elevenlabs.io/docs/api-reference/history/list and the `speech-history`
paths of its OpenAPI description, elevenlabs/elevenlabs-docs fern/apis/api/openapi.json):

- `GET /v1/history` with `page_size` (1-1000, default 100), `start_after_history_item_id`, `voice_id`,
  `model_id`, `date_after_unix` (inclusive), `date_before_unix` (exclusive), `sort_direction` (`asc` or
  `desc`, the default: newest first), `search` (which needs `source`) and `source` (`TTS` or `STS`); it answers
  `{history, has_more, last_history_item_id, scanned_until}`, each item with `history_item_id`, `request_id`,
  `voice_id`, `voice_name`, `voice_category`, `model_id`, `text`, `date_unix` (whole seconds),
  `character_count_change_from` / `_to`, `content_type`, `state`, `settings`, `feedback`, `share_link_id`,
  `source`, `alignments` and `dialogue`;
- `GET /v1/history/{history_item_id}` (one item) and `GET /v1/history/{history_item_id}/audio` (its audio).

Speech answers carry the headers the docs name: `request-id` (the item's `request_id`) and `character-cost`.
A request with `enable_logging=false` (zero retention) is billed but leaves no history. The docs do not say
whether the history keeps the alignment of timestamped speech (the field is nullable): `history_alignments`
decides, off by default.

Errors are shaped as ElevenLabs shapes them: `{"detail": {"status", "message"}}`, or in the newer style
`{"detail": {"type", "code", "message", "status", "request_id", "param"}}`; 422 as a list of
`{loc, msg, type}`. Knobs fail the next N calls of a route, throttle (429 `rate_limit_exceeded` /
`concurrent_limit_exceeded` with the concurrency headers), enforce a concurrency limit, slow the speech
down, or drop connections, before anything is made; `accept_then_drop` / `accept_then_delay` make (and bill)
the next speeches and then lose or hold back their answers. Routes: `tts` (both speech endpoints;
`fail_next("tts-timestamps")` and `fail_next("tts-plain")` pick one of them), `voices`, `history` (the list),
`history-item` and `history-audio`. `hits` counts calls per route (and per endpoint as `tts-timestamps` /
`tts-plain`); `log` keeps every request with its arrival time (`time.monotonic()`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import secrets
import string
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

_AUDIO: dict[float, bytes] = {}
_AUDIO_LOCK = threading.Lock()

PREMADE = {"Rachel": "21m00Tcm4TlvDq8ikWAM", "Adam": "pNInz6obpgDQGcFmaJgB", "Sarah": "EXAVITQu4vr4xnSDxMaL"}
CUSTOM_NAME, CUSTOM_ID = "Narrator Nell - warm, calm", "c0ffee0c0ffee0c0ffee"
MAX_CHARACTERS = {"eleven_multilingual_v2": 10000, "eleven_flash_v2_5": 40000}
SECONDS_PER_CHARACTER = 0.06
"""About 15 characters a second, the pace of calm narration."""
LEAD_IN_S, TAIL_S = 0.05, 0.1
"""Silence before the first character and after the last one."""


def speech_seconds(text: str) -> float:
    """How long the fake's audio for `text` lasts: ~0.06 s a character in quarter seconds, 1 s to 120 s."""
    return min(120.0, max(1.0, math.ceil(len(text) * SECONDS_PER_CHARACTER * 4) / 4))


def _mp3(seconds: float) -> bytes:
    """A real MP3 of `seconds`, made once per process and length."""
    with _AUDIO_LOCK:
        if seconds not in _AUDIO:

            def make() -> None:
                with TemporaryDirectory(prefix="fakeeleven-") as tmp:
                    out = Path(tmp) / "speech.mp3"
                    asyncio.run(media.make_audio(out, duration=seconds))
                    _AUDIO[seconds] = out.read_bytes()

            worker = threading.Thread(target=make)  # a thread of its own: callers may be inside a running loop
            worker.start()
            worker.join()
        return _AUDIO[seconds]


def tiny_mp3() -> bytes:
    """A 1 s MP3 (what any text of up to 16 characters sounds like)."""
    return _mp3(1.0)


def audio_for(text: str) -> bytes:
    """The MP3 the fake answers for `text`."""
    return _mp3(speech_seconds(text))


def _weight(ch: str) -> float:
    if ch.isspace():
        return 0.5
    if ch in ".!?;:,":
        return 2.0  # a pause after a clause
    return 1.0


def character_alignment(text: str, duration: float) -> dict[str, list[Any]]:
    """ElevenLabs-style alignment of `text`: one entry per character, spread over `duration` by weight
    (letters 1, spaces 0.5, punctuation 2), each end equal to the next start, all within the audio."""
    chars = list(text)
    span = max(0.0, duration - LEAD_IN_S - TAIL_S)
    total = sum(_weight(c) for c in chars) or 1.0
    starts: list[float] = []
    ends: list[float] = []
    at = LEAD_IN_S
    for ch in chars:
        starts.append(round(at, 3))
        at += span * _weight(ch) / total
        ends.append(round(at, 3))
    return {"characters": chars, "character_start_times_seconds": starts, "character_end_times_seconds": ends}


_ID_CHARS = string.ascii_letters + string.digits
DEFAULT_SETTINGS = {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0, "use_speaker_boost": True, "speed": 1.0}
"""The voice settings a speech is made with when the request gives none (the history shows the ones used)."""


def _item_id() -> str:
    """An id shaped like ElevenLabs' history item and request ids (20 letters and digits)."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(20))


@dataclass
class HistoryItem:
    """One generation in the account's history."""

    history_item_id: str
    request_id: str
    voice_id: str
    voice_name: str | None
    voice_category: str | None
    model_id: str
    text: str
    date_unix: int
    character_count_change_from: int
    character_count_change_to: int
    audio: bytes
    settings: dict[str, Any] | None = None
    content_type: str = "audio/mpeg"
    source: str = "TTS"
    alignments: dict[str, Any] | None = None
    deleted: bool = False
    ready_at: float = 0.0
    """`time.time()` from which the item is `created`; `processing` before."""
    seq: int = 0
    """Order of making (items of the same second keep it)."""

    @property
    def state(self) -> str:
        if self.deleted:
            return "deleted"
        return "created" if time.time() >= self.ready_at else "processing"

    def view(self) -> dict[str, Any]:
        return {
            "history_item_id": self.history_item_id,
            "request_id": self.request_id,
            "voice_id": self.voice_id,
            "model_id": self.model_id,
            "voice_name": self.voice_name,
            "voice_category": self.voice_category,
            "text": self.text,
            "date_unix": self.date_unix,
            "character_count_change_from": self.character_count_change_from,
            "character_count_change_to": self.character_count_change_to,
            "content_type": self.content_type,
            "state": self.state,
            "settings": self.settings,
            "feedback": None,
            "share_link_id": None,
            "source": self.source,
            "alignments": self.alignments,
            "dialogue": None,
        }


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
    t: float = 0.0
    """Arrival time, `time.monotonic()` (the test's clock too)."""
    status: int = 0
    """The status the fake answered."""
    peer: int | None = None
    """The client's port: one per connection, so a pooled client shows the same one again."""


@dataclass
class FakeElevenLabs:
    key: str = "sk_fake_eleven"
    latency_s: float = 0.0
    """How long speaking takes (lets requests overlap, for the concurrency limit)."""
    max_concurrent: int | None = None
    """Speech requests allowed at once; more answer 429 `concurrent_limit_exceeded` (None: no limit)."""
    audio_override: bytes | None = None
    """When set, speech answers these bytes as its audio (a playlist, text...), alignment as usual."""
    speech_redirect: str | None = None
    """When set, speech calls answer 302 to this URL (after being counted as made)."""
    history_alignments: bool = False
    """Whether history items of timestamped speech keep its `alignments` (the docs leave it open)."""
    history_processing_s: float = 0.0
    """How long a new history item stays `processing` before it is `created`."""

    history: list[HistoryItem] = field(default_factory=list)
    """The account's history, oldest first (deleted items too)."""
    creates: int = 0
    """Speeches made and billed (a lost or late answer was billed all the same)."""
    characters_used: int = 0

    hits: Counter[str] = field(default_factory=Counter)
    """Calls per route: tts (and tts-timestamps / tts-plain), voices, other."""
    log: list[LoggedRequest] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _drops: Counter[str] = field(default_factory=Counter)
    _after_accept: list[float | None] = field(default_factory=list)
    """What happens to the next speeches' answers once made: None drops it, a number delays it so long."""

    # --- knobs -----------------------------------------------------------------------------------

    def fail_next(
        self,
        route: str,
        n: int = 1,
        status: int = 500,
        *,
        detail: Any = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `n` calls of `route` (tts, tts-timestamps, tts-plain, voices) answer `status` with
        `{"detail": detail}`."""
        if detail is None:
            detail = {"status": "internal_error", "message": "An internal error occurred."}
        sent = dict(headers or {})
        if retry_after is not None:
            sent["Retry-After"] = f"{retry_after:g}"
        self._failures.setdefault(route, []).extend(Failure(status, {"detail": detail}, sent) for _ in range(n))

    def throttle_next(
        self, n: int = 1, *, code: str = "rate_limit_exceeded", retry_after: float | None = None, route: str = "tts"
    ) -> None:
        """The next `n` speech calls answer 429 in ElevenLabs' newer error style: `rate_limit_exceeded`
        or `concurrent_limit_exceeded` (the latter with the concurrency headers)."""
        headers = {}
        if code == "concurrent_limit_exceeded":
            headers = {"current-concurrent-requests": "3", "maximum-concurrent-requests": "2"}
        detail = _new_style(code, _THROTTLE_MESSAGES[code])
        self.fail_next(route, n, 429, detail=detail, retry_after=retry_after, headers=headers)

    def drop_next(self, route: str, n: int = 1) -> None:
        """The next `n` calls of `route` lose their connection mid-answer, before anything is made."""
        self._drops[route] += n

    def accept_then_drop(self, n: int = 1) -> None:
        """The next `n` speeches are made, billed and kept in the history, then the connection closes before
        the answer is complete (the client sees a broken response)."""
        self._after_accept.extend([None] * n)

    def accept_then_delay(self, n: int = 1, delay_s: float = 2.0) -> None:
        """The next `n` speeches are made, billed and kept in the history, and answered only after `delay_s`
        (a client whose read timeout is shorter gives up first)."""
        self._after_accept.extend([delay_s] * n)

    def add_history(
        self,
        text: str,
        *,
        voice_id: str = PREMADE["Rachel"],
        model_id: str = "eleven_multilingual_v2",
        date_unix: int | None = None,
        settings: dict[str, Any] | None = None,
        source: str = "TTS",
        content_type: str = "audio/mpeg",
        audio: bytes | None = None,
    ) -> HistoryItem:
        """An item in the history that some other request made (another job, the dashboard, long ago)."""
        return self._remember(
            text,
            voice_id=voice_id,
            model_id=model_id,
            date_unix=date_unix,
            settings=settings if settings is not None else dict(DEFAULT_SETTINGS),
            source=source,
            content_type=content_type,
            audio=audio if audio is not None else tiny_mp3(),
        )

    def _remember(
        self,
        text: str,
        *,
        voice_id: str,
        model_id: str,
        settings: dict[str, Any] | None,
        audio: bytes,
        date_unix: int | None = None,
        source: str = "TTS",
        content_type: str = "audio/mpeg",
        alignments: dict[str, Any] | None = None,
    ) -> HistoryItem:
        names = {vid: name for name, vid in PREMADE.items()} | {CUSTOM_ID: CUSTOM_NAME}
        item = HistoryItem(
            history_item_id=_item_id(),
            request_id=_item_id(),
            voice_id=voice_id,
            voice_name=names.get(voice_id),
            voice_category="cloned" if voice_id == CUSTOM_ID else "premade",
            model_id=model_id,
            text=text,
            date_unix=int(time.time()) if date_unix is None else date_unix,
            character_count_change_from=self.characters_used,
            character_count_change_to=self.characters_used + len(text),
            audio=audio,
            settings=settings,
            content_type=content_type,
            source=source,
            alignments=alignments,
            ready_at=time.time() + self.history_processing_s,
            seq=len(self.history),
        )
        self.characters_used += len(text)
        self.history.append(item)
        return item

    def history_item(self, history_item_id: str) -> HistoryItem | None:
        return next((i for i in self.history if i.history_item_id == history_item_id and not i.deleted), None)

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

    def requests_to(self, route: str) -> list[LoggedRequest]:
        return [entry for entry in self.log if entry.route == route]

    def voices(self) -> list[dict[str, Any]]:
        listed = [{"voice_id": vid, "name": name, "category": "premade"} for name, vid in PREMADE.items()]
        return [*listed, {"voice_id": CUSTOM_ID, "name": CUSTOM_NAME, "category": "cloned"}]

    # --- the app ---------------------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        def route_of(request: Request) -> tuple[str, str | None]:
            parts = request.url.path.strip("/").split("/")
            if parts[:2] == ["v1", "text-to-speech"] and request.method == "POST":
                if len(parts) == 4 and parts[3] == "with-timestamps":
                    return "tts", "tts-timestamps"
                return "tts", "tts-plain"
            if parts == ["v1", "voices"] and request.method == "GET":
                return "voices", None
            if parts[:2] == ["v1", "history"] and request.method == "GET":
                if len(parts) == 2:
                    return "history", None
                if len(parts) == 3:
                    return "history-item", None
                if len(parts) == 4 and parts[3] == "audio":
                    return "history-audio", None
            return "other", None

        def take_failure(*routes: str | None) -> Failure | None:
            for route in routes:
                pending = fake._failures.get(route or "")
                if pending:
                    return pending.pop(0)
            return None

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            route, endpoint = route_of(request)
            arrived = time.monotonic()
            fake.hits[route] += 1
            if endpoint:
                fake.hits[endpoint] += 1
            body: Any = None
            if route == "tts":
                raw = await request.body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
            entry = LoggedRequest(
                request.method,
                request.url.path,
                route,
                request.headers.get("xi-api-key"),
                dict(request.query_params),
                dict(request.headers),
                body,
                arrived,
                peer=request.client.port if request.client else None,
            )
            fake.log.append(entry)
            response = await answer(request, route, endpoint, call_next)
            entry.status = response.status_code
            if route == "tts" and 200 <= response.status_code < 300 and fake._after_accept:
                return await after_accept(response, fake._after_accept.pop(0))
            return response

        async def after_accept(response: Response, delay_s: float | None) -> Response:
            """The speech is made (and billed, and in the history): lose its answer, or hold it back."""
            if delay_s is not None:
                await asyncio.sleep(delay_s)
                return response
            async for _ in response.body_iterator:  # type: ignore[attr-defined]
                pass
            # announce more than is sent: the client sees the connection end mid-body
            return Response(b"{", status_code=200, headers={"Content-Length": "100"})

        async def answer(request: Request, route: str, endpoint: str | None, call_next: Any) -> Response:
            if request.headers.get("xi-api-key") != fake.key:
                detail = {"status": "invalid_api_key", "message": "Invalid API key"}
                return JSONResponse({"detail": detail}, status_code=401)
            for name in (endpoint, route):
                if name and fake._drops[name] > 0:
                    fake._drops[name] -= 1
                    # announce more than is sent: the client sees the connection end mid-body
                    return Response(b"ID3", status_code=200, headers={"Content-Length": "100"})
            failure = take_failure(endpoint, route)
            if failure is not None:
                return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)
            if route != "tts":
                response: Response = await call_next(request)
                return response
            if fake.speech_redirect is not None:
                return Response(status_code=302, headers={"location": fake.speech_redirect})
            if fake.max_concurrent is not None and fake.in_flight >= fake.max_concurrent:
                message = f"Too many concurrent requests: the limit of your plan is {fake.max_concurrent}."
                headers = {
                    "current-concurrent-requests": str(fake.in_flight + 1),
                    "maximum-concurrent-requests": str(fake.max_concurrent),
                }
                detail = _new_style("concurrent_limit_exceeded", message)
                return JSONResponse({"detail": detail}, status_code=429, headers=headers)
            fake.in_flight += 1
            fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
            try:
                if fake.latency_s:
                    await asyncio.sleep(fake.latency_s)
                response = await call_next(request)
                return response
            finally:
                fake.in_flight -= 1

        return self._routes(app)

    def _routes(self, app: FastAPI) -> FastAPI:
        fake = self

        async def speech_request(voice_id: str, request: Request) -> tuple[dict[str, Any], str] | Response:
            """The checked body and output format of a speech call, or ElevenLabs' refusal."""
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
                missing = [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]
                return JSONResponse({"detail": missing}, status_code=422)
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
            return body, fmt

        def made(
            voice_id: str, request: Request, body: dict[str, Any], audio: bytes, alignments: dict[str, Any] | None
        ) -> dict[str, str]:
            """Bill the speech and keep it in the history (unless zero retention was asked); its answer headers."""
            text: str = body["text"]
            fake.creates += 1
            settings = dict(DEFAULT_SETTINGS)
            if isinstance(body.get("voice_settings"), dict):
                settings.update(body["voice_settings"])
            request_id = _item_id()
            if request.query_params.get("enable_logging", "true").lower() != "false":
                item = fake._remember(
                    text,
                    voice_id=voice_id,
                    model_id=body.get("model_id", "eleven_multilingual_v2"),
                    settings=settings,
                    audio=audio,
                    alignments=alignments if fake.history_alignments else None,
                )
                request_id = item.request_id
            else:
                fake.characters_used += len(text)
            return {"request-id": request_id, "character-cost": str(len(text))}

        @app.get("/v1/voices")
        async def voices() -> Response:
            return JSONResponse({"voices": fake.voices()})

        @app.post("/v1/text-to-speech/{voice_id}")
        async def tts(voice_id: str, request: Request) -> Response:
            checked = await speech_request(voice_id, request)
            if isinstance(checked, Response):
                return checked
            body, _ = checked
            audio = fake.audio_override or await asyncio.to_thread(audio_for, body["text"])
            return Response(audio, media_type="audio/mpeg", headers=made(voice_id, request, body, audio, None))

        @app.post("/v1/text-to-speech/{voice_id}/with-timestamps")
        async def tts_with_timestamps(voice_id: str, request: Request) -> Response:
            checked = await speech_request(voice_id, request)
            if isinstance(checked, Response):
                return checked
            body, _ = checked
            text: str = body["text"]
            seconds = speech_seconds(text)
            audio = fake.audio_override or await asyncio.to_thread(audio_for, text)
            alignments = {
                "alignment": character_alignment(text, seconds),
                "normalized_alignment": character_alignment(" ".join(text.split()), seconds),
            }
            answer = {"audio_base64": base64.b64encode(audio).decode("ascii"), **alignments}
            return JSONResponse(answer, headers=made(voice_id, request, body, audio, alignments))

        # --- history -----------------------------------------------------------------------------

        def invalid(name: str, message: str, kind: str = "value_error") -> JSONResponse:
            return JSONResponse({"detail": [{"loc": ["query", name], "msg": message, "type": kind}]}, status_code=422)

        def not_found(history_item_id: str) -> JSONResponse:
            detail = {
                "status": "history_item_not_found",
                "message": f"History item with id {history_item_id} was not found.",
            }
            return JSONResponse({"detail": detail}, status_code=404)

        @app.get("/v1/history")
        async def history(request: Request) -> Response:
            q = request.query_params
            numbers: dict[str, int | None] = {}
            for name in ("page_size", "date_after_unix", "date_before_unix"):
                raw = q.get(name)
                try:
                    numbers[name] = None if raw is None or raw == "" else int(raw)
                except ValueError:
                    return invalid(name, "Input should be a valid integer", "int_parsing")
            page_size = numbers["page_size"] if numbers["page_size"] is not None else 100
            if not 1 <= page_size <= 1000:
                return invalid("page_size", "page_size can not exceed 1000 and must be at least 1")
            direction = q.get("sort_direction") or "desc"
            if direction not in ("asc", "desc"):
                return invalid("sort_direction", "Input should be 'asc' or 'desc'", "enum")
            source = q.get("source") or None
            if source not in (None, "TTS", "STS"):
                return invalid("source", "Input should be 'TTS' or 'STS'", "enum")
            search = q.get("search") or None
            if search is not None and source is None:
                return invalid("source", "source is required when search is given", "missing")
            ordered = sorted(
                (i for i in fake.history if not i.deleted),
                key=lambda i: (i.date_unix, i.seq),
                reverse=direction == "desc",
            )
            after = q.get("start_after_history_item_id") or None
            if after is not None:
                at = next((n for n, i in enumerate(ordered) if i.history_item_id == after), None)
                if at is None:
                    return not_found(after)
                ordered = ordered[at + 1 :]
            after_unix, before_unix = numbers["date_after_unix"], numbers["date_before_unix"]
            chosen = [
                i
                for i in ordered
                if (q.get("voice_id") in (None, "", i.voice_id))
                and (q.get("model_id") in (None, "", i.model_id))
                and (after_unix is None or i.date_unix >= after_unix)
                and (before_unix is None or i.date_unix < before_unix)
                and (source is None or i.source == source)
                and (search is None or search.lower() in i.text.lower())
            ]
            page = chosen[:page_size]
            return JSONResponse(
                {
                    "history": [i.view() for i in page],
                    "has_more": len(chosen) > page_size,
                    "last_history_item_id": page[-1].history_item_id if page else None,
                    "scanned_until": page[-1].date_unix if page else None,
                }
            )

        @app.get("/v1/history/{history_item_id}")
        async def history_item(history_item_id: str) -> Response:
            item = fake.history_item(history_item_id)
            return not_found(history_item_id) if item is None else JSONResponse(item.view())

        @app.get("/v1/history/{history_item_id}/audio")
        async def history_audio(history_item_id: str) -> Response:
            item = fake.history_item(history_item_id)
            if item is None:
                return not_found(history_item_id)
            if item.state != "created":
                detail = {"status": "history_item_processing", "message": "The audio of this item is not ready."}
                return JSONResponse({"detail": detail}, status_code=400)
            return Response(item.audio, media_type=item.content_type)

        return app


_THROTTLE_MESSAGES = {
    "rate_limit_exceeded": "You have exceeded the rate limit. Please slow down.",
    "concurrent_limit_exceeded": "Too many concurrent requests for your subscription.",
    "system_busy": "We are experiencing heavy traffic. Please try again.",
}


def _new_style(code: str, message: str, *, kind: str = "rate_limit_error") -> dict[str, Any]:
    """An error detail in ElevenLabs' newer shape."""
    return {"type": kind, "code": code, "message": message, "status": code, "request_id": "req-fake", "param": None}
