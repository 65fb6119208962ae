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
id (`tts-<hex>`), and `wait` makes the call. Voices are given by name (the premade ones from a built-in
table, others looked up once with `GET /voices`) or by id. Every request goes through the shared
`HttpAdapter.send` (one pooled client, the provider-wide 429 gate) to the configured base; the key
(`xi-api-key`) never leaves it.

Paying once. Every speech ElevenLabs makes is billed and kept in the account's history (`GET /history`,
https://elevenlabs.io/docs/api-reference/history/list), unless the request asked for zero retention, which
this adapter never does. So when an earlier attempt may have spoken and lost the answer (a read timeout, a
reset, a crash: `task.resumed` or `task.unsettled`), `wait` first looks for that speech in the history and,
when it is there, downloads its audio (`GET /history/{history_item_id}/audio`) instead of paying again.
An item is the job's speech when its voice id, model id and text are exactly the request's, its voice
settings hold every setting the request gave, its content type is the requested format's, it is a TTS item
(not dialogue), and it was made at or after `task.intent_at` less `HISTORY_SKEW_S`. The history is read
oldest first from that moment (`date_after_unix`, `sort_direction=asc`, filtered by voice and model), at
most `HISTORY_MAX_PAGES` pages. `find_submitted` answers the same items as `tts-history-<history_item_id>`
ids, which `wait` takes too. The history stamps items in whole seconds by ElevenLabs' clock, hence the skew;
an identical speech another job made in that window may be adopted instead, which is the same audio bill-wise
(already paid) and content-wise (same voice, model, text and settings). The history does not keep the seed or
the output format beyond its content type: a speech asked in a format other than MP3 is only found when the
history holds it in that format.

A speech from the history carries the item's alignment when the history kept one (`alignments`, a nullable
field); otherwise the word timings are spread over the audio's probed duration by word length, and
`words_source` says which (`alignment` for a fresh answer, `history` or `estimated` for a found one).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .. import media
from .base import (
    CannotReconcile,
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
from .catalog.elevenlabs import DEFAULT_VOICE, PREMADE_VOICES
from .http import HttpAdapter, retry_after
from .info import BUILTIN_INFO
from .transcripts import words_from_characters

DEFAULT_BASE_URL = "https://api.elevenlabs.io/v1"
KEY_ENV = "ELEVENLABS_API_KEY"
BASE_URL_ENV = "REELFLOW_ELEVENLABS_BASE_URL"
OUTPUT_FORMAT = "mp3_44100_128"

_MODEL_RE = re.compile(r"^elevenlabs/([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
_VOICE_ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")
_FORMAT_RE = re.compile(r"^(mp3|pcm|wav|opus|ulaw|alaw)(_[0-9]+)*$")
_LOCAL_ID_RE = re.compile(r"^tts-[0-9a-f]{32}$")
_HISTORY_ID_RE = re.compile(r"^tts-history-([A-Za-z0-9]{1,64})$")
"""A speech found in the history: `wait` downloads that item's audio instead of speaking."""

HISTORY_SKEW_S = 30.0
"""History items are stamped in whole seconds by ElevenLabs' clock: one made this long before the job's first
unsettled attempt began still counts as possibly its own (clock drift between us and them, the lost fraction)."""
HISTORY_PAGE_SIZE = 100
HISTORY_MAX_PAGES = 5
"""Pages of the history read per lookup; the job's speech is among the first items after its intent anyway."""
HISTORY_PROCESSING_WAIT_S = 180.0
"""How long `wait` watches a found item that is still `processing` (the earlier call still speaking) before
giving the attempt up (it is tried again later, and looks again)."""

log = logging.getLogger(__name__)

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
    if status == 429:  # refused at the door (rate or concurrency): nothing was made, nothing billed
        return TransientError(text, retry_after=retry_after(response), not_sent=True)
    if status >= 500 or status == 408:
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


def estimated_words(text: str, duration: float) -> list[dict[str, Any]]:
    """Word timings for `text` spoken over `duration` seconds, when no alignment is known: each word (with the
    space after it) takes a share of the time by its length. Rough, but in order and within the audio."""
    tokens = text.split()
    if not tokens or not (math.isfinite(duration) and duration > 0):
        return []
    total = sum(len(t) + 1 for t in tokens)
    words: list[dict[str, Any]] = []
    at = 0.0
    for token in tokens:
        span = duration * (len(token) + 1) / total
        words.append({"word": token, "start": round(at, 3), "end": round(at + span * len(token) / (len(token) + 1), 3)})
        at += span
    return words


def _content_type(value: Any) -> str:
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else ""


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

    info = BUILTIN_INFO["elevenlabs"]
    """ElevenLabs: concurrency by plan, 2 (free) to 15 for multilingual v2; the lowest is the safe default."""
    default_base_url = DEFAULT_BASE_URL
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
        found = _HISTORY_ID_RE.match(provider_id)
        if found is None and not _LOCAL_ID_RE.match(provider_id):
            raise PermanentError(f"not an elevenlabs request id: {provider_id!r}")
        voice, output_format, body = self._speech_request(task)
        self.auth_headers()
        voice_id = await self._voice_id(voice)
        if found is not None:  # adopted by the worker from find_submitted
            item = await self._history_item(found.group(1))
            if not self._is_request(item, voice_id, output_format, body):
                raise TransientError(
                    f"elevenlabs: history item {found.group(1)} is not this job's speech; speaking anew", resubmit=True
                )
            return await self._from_history(task, provider_id, item, voice_id, output_format, body, report)
        if (task.resumed or task.unsettled) and task.intent_at is not None:
            # an earlier attempt may have spoken and lost the answer: it is in the history then, paid for
            try:
                items = await self._speeches_since(voice_id, output_format, body, task.intent_at)
            except CannotReconcile as exc:
                log.warning("elevenlabs: %s; speaking again (a possible duplicate charge)", exc)
                await task.note_possible_duplicate(str(exc))
                items = []
            if items:
                item = items[0]
                log.info(
                    "elevenlabs: job %s/%s: the speech an earlier attempt made is history item %s; not speaking again",
                    task.execution_id,
                    task.job_id,
                    item.get("history_item_id"),
                )
                return await self._from_history(task, provider_id, item, voice_id, output_format, body, report)
        await _report(report, ProgressUpdate(phase="running", message="speaking"))
        doing = f"text to speech with {task.model}"
        response = await self.send(
            "POST",
            f"/text-to-speech/{quote(voice_id, safe='')}/with-timestamps",
            doing=doing,
            params={"output_format": output_format},
            json=body,
            headers={"Accept": "application/json"},
            create=True,
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
            "words_source": "alignment" if words else "none",
        }
        return ProviderResult(
            outputs=[Output(path=out, content_type=content_type)], fields=fields, cost_usd=self._cost(task, text)
        )

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        """The history items made at or after `since` (less HISTORY_SKEW_S) that are exactly this task's speech,
        oldest first, as ids `wait` takes (`tts-history-<history_item_id>`)."""
        voice, output_format, body = self._speech_request(task)
        self.auth_headers()
        voice_id = await self._voice_id(voice)
        items = await self._speeches_since(voice_id, output_format, body, since)
        return [f"tts-history-{item['history_item_id']}" for item in items]

    # --- the history -----------------------------------------------------------------------------

    @staticmethod
    def _is_request(item: Any, voice_id: str, output_format: str, body: dict[str, Any]) -> bool:
        """Whether a history item is the speech `body` asks for (its age aside)."""
        if not isinstance(item, dict) or not isinstance(item.get("history_item_id"), str):
            return False
        if not _HISTORY_ID_RE.match(f"tts-history-{item['history_item_id']}"):
            return False
        if item.get("source") not in (None, "TTS") or item.get("dialogue"):
            return False
        if item.get("state") not in ("created", "processing"):
            return False
        model_id = body.get("model_id")
        if item.get("voice_id") != voice_id or item.get("model_id") != model_id or item.get("text") != body["text"]:
            return False
        if _content_type(item.get("content_type")) != _format_of(output_format)[1]:
            return False
        wanted = body.get("voice_settings")
        if isinstance(wanted, dict) and wanted:
            kept = item.get("settings")
            if not isinstance(kept, dict) or any(kept.get(k) != v for k, v in wanted.items()):
                return False
        return True

    async def _history_get(self, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        """A history request: 429, 5xx and transport failures are TransientError; an answer that says the
        history cannot be read (no permission, no such parameter) is CannotReconcile."""
        response = await self.send("GET", path, doing=doing, **kwargs)
        if response.is_success:
            return response
        error = _classify(response, doing)
        if isinstance(error, TransientError):
            raise error
        raise CannotReconcile(error.message)

    async def _speeches_since(
        self, voice_id: str, output_format: str, body: dict[str, Any], since: float
    ) -> list[dict[str, Any]]:
        """The history items made from `since` (less the skew) that are this speech, oldest first."""
        cutoff = math.floor(since - HISTORY_SKEW_S)
        params: dict[str, Any] = {
            "page_size": HISTORY_PAGE_SIZE,
            "voice_id": voice_id,
            "model_id": body.get("model_id"),
            "date_after_unix": cutoff,
            "sort_direction": "asc",
            "source": "TTS",
        }
        doing = "looking up the speech history"
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(HISTORY_MAX_PAGES):
            response = await self._history_get("/history", doing, params=params)
            try:
                page = response.json()
            except ValueError:
                raise TransientError(f"elevenlabs: the history answered {response.text[:200]!r}") from None
            items = page.get("history") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise TransientError("elevenlabs: the history answered no list of items")
            for item in items:
                when = item.get("date_unix") if isinstance(item, dict) else None
                if not isinstance(when, int | float) or not _is_time(when) or when < cutoff:
                    continue  # the date filter is ours to check too, not only theirs
                if self._is_request(item, voice_id, output_format, body) and item["history_item_id"] not in seen:
                    seen.add(item["history_item_id"])
                    found.append(item)
            last = page.get("last_history_item_id")
            if not isinstance(last, str) and items and isinstance(items[-1], dict):
                last = items[-1].get("history_item_id")
            if page.get("has_more") is not True or not isinstance(last, str) or not items:
                break
            params["start_after_history_item_id"] = last
        else:
            log.warning("elevenlabs: the history lookup stopped after %d pages", HISTORY_MAX_PAGES)
        found.sort(key=lambda item: item["date_unix"])  # stable: the history's own order within a second
        return found

    async def _history_item(self, history_item_id: str) -> dict[str, Any]:
        doing = f"reading history item {history_item_id}"
        response = await self.send("GET", f"/history/{quote(history_item_id, safe='')}", doing=doing)
        if response.status_code == 404:
            raise TransientError(f"elevenlabs: history item {history_item_id} is gone; speaking anew", resubmit=True)
        if not response.is_success:
            raise _classify(response, doing)
        try:
            item = response.json()
        except ValueError:
            raise TransientError(f"elevenlabs: {doing} answered {response.text[:200]!r}") from None
        if not isinstance(item, dict):
            raise TransientError(f"elevenlabs: {doing} answered JSON that is not an object")
        return item

    async def _from_history(
        self,
        task: Task,
        provider_id: str,
        item: dict[str, Any],
        voice_id: str,
        output_format: str,
        body: dict[str, Any],
        report: ProgressReporter,
    ) -> ProviderResult:
        """The result of a speech found in the history: its audio downloaded, its timings as well as known."""
        history_item_id: str = item["history_item_id"]
        await _report(report, ProgressUpdate(phase="running", message="fetching the speech from the history"))
        item = await self._until_created(task, item)
        doing = f"downloading history item {history_item_id}"
        response = await self.send("GET", f"/history/{quote(history_item_id, safe='')}/audio", doing=doing)
        if response.status_code == 404:
            raise TransientError(f"elevenlabs: history item {history_item_id} is gone; speaking anew", resubmit=True)
        if not response.is_success:
            raise _classify(response, doing)
        audio = response.content
        ctype = _content_type(response.headers.get("content-type"))
        if not audio or ctype.startswith(("application/json", "text/")):
            raise TransientError(f"elevenlabs: {doing} answered no audio ({ctype or 'no content type'})")
        suffix, content_type = _format_of(output_format)
        out = task.workdir / f"speech{suffix}"
        out.write_bytes(audio)
        text: str = body["text"]
        kept = item.get("alignments")
        alignments: dict[str, Any] = kept if isinstance(kept, dict) else {}
        words = alignment_words(alignments.get("alignment")) or alignment_words(alignments.get("normalized_alignment"))
        source = "history"
        if not words:  # the history kept no alignment: spread the words over the audio, and say so
            words, source = await self._estimate(out, text), "estimated"
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "voice_id": voice_id,
            "characters": len(text),
            "request_id": item.get("request_id"),
            "text": text,
            "words": words,
            "words_source": source if words else "none",
            "history_item_id": history_item_id,
        }
        return ProviderResult(
            outputs=[Output(path=out, content_type=content_type)], fields=fields, cost_usd=self._cost(task, text)
        )

    async def _until_created(self, task: Task, item: dict[str, Any]) -> dict[str, Any]:
        """The item once it is `created`: one still `processing` is the earlier call still speaking."""
        history_item_id: str = item["history_item_id"]
        deadline = time.monotonic() + HISTORY_PROCESSING_WAIT_S
        schedule = self.poll_schedule(None)
        while item.get("state") == "processing":
            if time.monotonic() >= deadline:
                raise TransientError(f"elevenlabs: history item {history_item_id} is still processing")
            await task.pause(schedule.next_delay())
            item = await self._history_item(history_item_id)
        if item.get("state") != "created":
            raise TransientError(
                f"elevenlabs: history item {history_item_id} is {item.get('state')!r}; speaking anew", resubmit=True
            )
        return item

    @staticmethod
    async def _estimate(audio: Path, text: str) -> list[dict[str, Any]]:
        try:
            info = await media.probe(audio)
        except media.MediaError as exc:
            log.warning("elevenlabs: cannot time the words of a speech from the history: %s", exc)
            return []
        return estimated_words(text, float(info.get("duration") or 0.0))

    def _cost(self, task: Task, text: str) -> float | None:
        """Characters times the catalogued price; None for a model the catalog lacks."""
        spec = self.model_catalog().elevenlabs_spec(task.model or "")
        if spec is None or spec.price.unit != "character":
            return None
        return round(spec.price.usd * len(text), 6)

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Nothing to stop: the work is one synchronous call inside `wait`."""
        return None
