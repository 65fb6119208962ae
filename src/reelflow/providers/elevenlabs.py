"""`elevenlabs/*`: text to speech on ElevenLabs, with word timings for captions.

Speech is asked of `POST /text-to-speech/{voice_id}/with-timestamps`, which answers JSON: the audio
as `audio_base64` plus a character `alignment` (`characters`, `character_start_times_seconds`,
`character_end_times_seconds`; `normalized_alignment` has the same shape for the normalized text).
The audio is written to the attempt's workdir and the alignment becomes `words`
(`[{"word", "start", "end"}]`), so a `captions` job can take `$voice.words`. The plain endpoint is
not used, not even as a fallback: the timestamped one speaks the same audio for the same characters,
and an answer whose alignment is missing or malformed still delivers its audio (with `words: []`), so
a second, paid call could only repeat the first.

The call is synchronous, so there is no remote id: `submit` checks the request and returns a local
id, and `wait` makes the call. Redoing `wait` simply speaks again. Voices are given by name (the
premade ones from a built-in table, others looked up once with `GET /voices`) or by id. Every
request goes through the shared `HttpAdapter.send` (one pooled client, the provider-wide 429 gate)
to the configured base; the key (`xi-api-key`) never leaves it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import uuid
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from .base import (
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
from .catalog_elevenlabs import DEFAULT_VOICE, MODELS_BY_ID, PREMADE_VOICES
from .http import HttpAdapter, retry_after
from .transcripts import words_from_characters

DEFAULT_BASE_URL = "https://api.elevenlabs.io/v1"
KEY_ENV = "ELEVENLABS_API_KEY"
BASE_URL_ENV = "REELFLOW_ELEVENLABS_BASE_URL"
OUTPUT_FORMAT = "mp3_44100_128"

_MODEL_RE = re.compile(r"^elevenlabs/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
_VOICE_ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")
_FORMAT_RE = re.compile(r"^(mp3|pcm|wav|opus|ulaw|alaw)(_[0-9]+)*$")
_LOCAL_ID_RE = re.compile(r"^tts-[0-9a-f]{32}$")

_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": (".mp3", "audio/mpeg"),
    "wav": (".wav", "audio/wav"),
    "opus": (".opus", "audio/ogg"),
    "pcm": (".pcm", "audio/L16"),
    "ulaw": (".ulaw", "audio/basic"),
    "alaw": (".alaw", "audio/x-alaw-basic"),
}
"""The file suffix and content type of each `output_format` family."""


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    """ElevenLabs' error message as given, and its status or code (`quota_exceeded`, ...) when there is one."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000].strip() or response.reason_phrase, None
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, dict):
        kind = detail.get("status") or detail.get("code") or detail.get("type")
        message = detail.get("message")
        if not isinstance(message, str) or not message:
            message = json.dumps(detail, ensure_ascii=False)
        return message, kind if isinstance(kind, str) else None
    return json.dumps(detail, ensure_ascii=False), None  # 422: a list of {loc, msg, type}


def _classify(response: httpx.Response, doing: str) -> ProviderError:
    """The error for a non-2xx answer: 429, 408 and 5xx are worth another try, the rest is final."""
    status = response.status_code
    message, kind = _detail(response)
    text = f"elevenlabs: {doing} failed: HTTP {status}: {message}" + (f" ({kind})" if kind else "")
    current, most = (response.headers.get(f"{h}-concurrent-requests") for h in ("current", "maximum"))
    if current and most:
        text += f" [{current} concurrent requests, the plan allows {most}]"
    if status == 429 or status >= 500 or status == 408:
        return TransientError(text, retry_after=retry_after(response))
    return PermanentError(text)


def _model_name(model: str | None) -> str:
    found = _MODEL_RE.match(model or "")
    if found is None:
        raise PermanentError(f"not an elevenlabs model id: {model!r} (expected elevenlabs/<model_id>)")
    return found.group(1)


def _format_of(output_format: str) -> tuple[str, str]:
    return _FORMATS[output_format.split("_", 1)[0]]


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def alignment_words(alignment: Any) -> list[dict[str, Any]] | None:
    """Word timings from one ElevenLabs character alignment; None when it is missing or malformed
    (three lists of equal length: one-character strings, and numeric start and end times)."""
    if not isinstance(alignment, dict):
        return None
    chars = alignment.get("characters")
    starts = alignment.get("character_start_times_seconds")
    ends = alignment.get("character_end_times_seconds")
    if not (isinstance(chars, list) and isinstance(starts, list) and isinstance(ends, list)):
        return None
    if not len(chars) == len(starts) == len(ends):
        return None
    if not all(isinstance(c, str) for c in chars) or not all(_is_time(t) for t in (*starts, *ends)):
        return None
    return words_from_characters(chars, starts, ends)


def _decode_audio(data: dict[str, Any]) -> bytes:
    encoded = data.get("audio_base64")
    if not isinstance(encoded, str) or not encoded:
        raise TransientError("elevenlabs: text to speech answered no audio_base64")
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TransientError(f"elevenlabs: text to speech answered undecodable audio_base64: {exc}") from None
    if not audio:
        raise TransientError("elevenlabs: text to speech answered empty audio")
    return audio


class ElevenLabsProvider(HttpAdapter):
    """ElevenLabs text to speech behind the Provider protocol."""

    name = "elevenlabs"
    default_limits: ClassVar[dict[str, float]] = {"max_concurrent": 2}
    """ElevenLabs: concurrency by plan, 2 (free) to 15 for multilingual v2; the lowest is the safe default."""
    default_base_url = DEFAULT_BASE_URL
    key_env = KEY_ENV
    timeout = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=30.0)
    """Long texts take a while to speak; nothing waits forever."""

    def __init__(
        self, key: str | None = None, base_url: str | None = None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        super().__init__(key, base_url, client=client)
        self._voices: dict[str, str] = {}
        """The account's voices (lower-cased name -> id), filled by the first lookup."""
        self._names: list[str] = []
        """The account's voice names as listed (for error messages)."""
        self._lookup: asyncio.Lock | None = None

    def auth_headers(self) -> dict[str, str]:
        return {"xi-api-key": self.key}

    # --- the request -----------------------------------------------------------------------------

    def _speech_request(self, task: Task) -> tuple[str, str, dict[str, Any]]:
        """(voice as given, output format, JSON body) for the task; PermanentError when it cannot be sent."""
        model_id = _model_name(task.model)
        if task.type == "run":
            given = task.params.get("input") or {}
            if not isinstance(given, dict):
                raise PermanentError("elevenlabs: a run job's params.input must be an object")
            body = dict(given)
            voice = body.pop("voice_id", None) or body.pop("voice", None) or DEFAULT_VOICE
            output_format = body.pop("output_format", None) or OUTPUT_FORMAT
            body.setdefault("model_id", model_id)
        else:
            params = task.params
            voice = params.get("voice") or DEFAULT_VOICE
            output_format = OUTPUT_FORMAT
            body = {"text": params.get("text"), "model_id": model_id}
            if params.get("seed") is not None:
                body["seed"] = params["seed"]
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            raise PermanentError("elevenlabs: text to speak is required")
        if not isinstance(voice, str) or not voice.strip():
            raise PermanentError(f"elevenlabs: voice must be a name or a voice id (got {voice!r})")
        if not isinstance(output_format, str) or not _FORMAT_RE.match(output_format):
            raise PermanentError(f"elevenlabs: unsupported output_format {output_format!r}")
        return voice.strip(), output_format, body

    async def _voice_id(self, voice: str) -> str:
        """A voice id for a premade name, an id, or a name among the account's voices."""
        premade = PREMADE_VOICES.get(voice.lower())
        if premade is not None:
            return premade
        if _VOICE_ID_RE.match(voice):
            return voice  # shaped like an id: no lookup (a 404 says when there is no such voice)
        wanted = voice.lower()
        if self._lookup is None:
            self._lookup = asyncio.Lock()
        async with self._lookup:  # jobs starting together share one lookup
            if wanted not in self._voices:
                await self._load_voices()
        found = self._voices.get(wanted)
        if found is not None:
            return found
        known = self._names or [n.title() for n in PREMADE_VOICES]
        names = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise PermanentError(f"elevenlabs: no voice named {voice!r} (voices include {names}, or give a voice id)")

    async def _load_voices(self) -> None:
        response = await self.send("GET", "/voices", doing="looking up voices")
        if not response.is_success:
            raise _classify(response, "looking up voices")
        try:
            listed = response.json().get("voices")
        except (ValueError, AttributeError):
            raise TransientError(f"elevenlabs: voices answered {response.text[:200]!r}") from None
        for entry in listed if isinstance(listed, list) else []:
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("voice_id"), str)
                and isinstance(entry.get("name"), str)
            ):
                if entry["name"] not in self._names:
                    self._names.append(entry["name"])
                name = entry["name"].strip().lower()
                self._voices.setdefault(name, entry["voice_id"])
                self._voices.setdefault(name.split(" - ", 1)[0].strip(), entry["voice_id"])

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        self.auth_headers()  # fail now, before anything waits, when the key is missing
        self._speech_request(task)
        return f"tts-{uuid.uuid4().hex}"

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        if not _LOCAL_ID_RE.match(provider_id):
            raise PermanentError(f"not an elevenlabs request id: {provider_id!r}")
        voice, output_format, body = self._speech_request(task)
        self.auth_headers()
        await _report(report, ProgressUpdate(phase="running", message="speaking"))
        voice_id = await self._voice_id(voice)
        doing = f"text to speech with {task.model}"
        response = await self.send(
            "POST",
            f"/text-to-speech/{quote(voice_id, safe='')}/with-timestamps",
            doing=doing,
            params={"output_format": output_format},
            json=body,
            headers={"Accept": "application/json"},
        )
        if not response.is_success:
            raise _classify(response, doing)
        try:
            data = response.json()
        except ValueError:
            ctype = response.headers.get("content-type", "") or "no content type"
            raise TransientError(f"elevenlabs: text to speech answered no JSON ({ctype})") from None
        if not isinstance(data, dict):
            raise TransientError("elevenlabs: text to speech answered JSON that is not an object")
        audio = _decode_audio(data)
        words = alignment_words(data.get("alignment"))
        if words is None:  # no usable alignment of the text as given: the normalized text's will do
            words = alignment_words(data.get("normalized_alignment"))
        suffix, content_type = _format_of(output_format)
        out = task.workdir / f"speech{suffix}"
        out.write_bytes(audio)
        text: str = body["text"]
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "voice_id": voice_id,
            "characters": len(text),
            "request_id": response.headers.get("request-id"),
            "text": text,
            "words": words or [],
        }
        return ProviderResult(
            outputs=[Output(path=out, content_type=content_type)], fields=fields, cost_usd=self._cost(task, text)
        )

    @staticmethod
    def _cost(task: Task, text: str) -> float | None:
        """Characters times the catalogued price; None for a model the catalog lacks."""
        spec = MODELS_BY_ID.get(task.model or "")
        if spec is None or spec.price.unit != "character":
            return None
        return round(spec.price.usd * len(text), 6)

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Nothing to stop: the work is one synchronous call inside `wait`."""
        return None
