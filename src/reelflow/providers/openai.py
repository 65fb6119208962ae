"""`openai/*`: speech, images and transcription (Whisper) on OpenAI.

Speech (`POST /audio/speech`), images (`POST /images/generations`) and transcription
(`POST /audio/transcriptions`) are synchronous: `submit` checks the request and returns a local id,
and `wait` makes the call and writes the files to the attempt's workdir; redoing `wait` simply asks
again. Video is gone: OpenAI shut the Videos API and the Sora 2 models down on 2026-09-24, and a
`sora-*` model is refused with that message (plan validation refuses it first). With no asynchronous
work left there is nothing to poll, cancel or be called back about.

Every request goes to the configured base through the shared rate gate; the key (`Authorization:
Bearer`) never leaves it.

Paying once. Every POST of a job carries `Idempotency-Key: task.idempotency_key`, which names the job's first
unsettled attempt, so every retry after a lost answer (a read timeout, a reset, a crash) sends the same key
as the call that may have been carried out. That key is the only reconciliation OpenAI offers here: nothing
lists past speeches, images or transcriptions. An API that honours such keys answers a repeated request
with the first answer and does the work (and bills it) once. OpenAI does not document that it does: the
header is not in its API reference or OpenAPI description, and its own SDKs send none. So
`find_submitted` raises CannotReconcile: a retry goes out with the same key (free if OpenAI honours it) and
the worker records a possible duplicate charge, rather than this adapter claiming it looked and found
nothing. A 429 is a refusal at the door (`not_sent`): nothing was started.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import httpx

from ..net import EgressPolicy, check_url_syntax, fetch_output
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
from .catalog import is_http_url, retired_message
from .catalog.openai import (
    MODELS_BY_ID,
    TRANSCRIPTION_MAX_BYTES,
    image_price,
    to_image_body,
    to_speech_body,
    transcription_cost,
)
from .http import HttpAdapter, retry_after
from .info import BUILTIN_INFO
from .transcripts import clean_words, transcript_fields, words_from_segments, write_srt

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "REELFLOW_OPENAI_BASE_URL"
ALLOW_PRIVATE_ENV = "REELFLOW_ALLOW_PRIVATE_URLS"

TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=120.0, pool=30.0)
"""High-quality images take a minute or two and uploads may be large; nothing waits forever."""


_MODEL_RE = re.compile(r"^openai/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})$")
_LOCAL_ID_RE = re.compile(r"^oai-[0-9a-f]{32}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$")

_PERMANENT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "account_deactivated"})
"""Codes that may come with a 429 yet no retry can help."""

_AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": (".mp3", "audio/mpeg"),
    "opus": (".opus", "audio/ogg"),
    "aac": (".aac", "audio/aac"),
    "flac": (".flac", "audio/flac"),
    "wav": (".wav", "audio/wav"),
    "pcm": (".pcm", "audio/L16"),
}
_IMAGE_FORMATS: dict[str, tuple[str, str]] = {
    "png": (".png", "image/png"),
    "jpeg": (".jpg", "image/jpeg"),
    "webp": (".webp", "image/webp"),
}
_TRANSCRIBE_TYPES = {
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".mpga": "audio/mpeg",
    ".mpeg": "audio/mpeg",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".wav": "audio/wav",
    ".webm": "video/webm",
}

Kind = Literal["speech", "image", "transcription"]


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    """OpenAI's error message as given, and its code (or type) when there is one."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:2000].strip() or response.reason_phrase, None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, str):
        return error, None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = json.dumps(error, ensure_ascii=False)
        return message, code if isinstance(code, str) else None
    return json.dumps(error, ensure_ascii=False), None


def _classify(response: httpx.Response, doing: str) -> ProviderError:
    """The error for a non-2xx answer: 429 (except no quota), 408, 409 and 5xx are worth another try."""
    status = response.status_code
    message, code = _detail(response)
    text = f"openai: {doing} failed: HTTP {status}: {message}" + (f" ({code})" if code else "")
    if code in _PERMANENT_CODES:
        return PermanentError(text)
    if status == 429:  # a rate limit refuses the request before any work: nothing was started or billed
        return TransientError(text, retry_after=retry_after(response), not_sent=True)
    if status >= 500 or status in (408, 409):
        return TransientError(text, retry_after=retry_after(response))
    if 300 <= status < 400:
        return PermanentError(f"openai: {doing} answered a redirect (HTTP {status}), which is not followed")
    return PermanentError(text)


def _model_name(model: str | None) -> str:
    found = _MODEL_RE.match(model or "")
    if found is None:
        raise PermanentError(f"not an openai model id: {model!r} (expected openai/<model>)")
    return found.group(1)


def _kind(name: str) -> Kind:
    if "tts" in name:
        return "speech"
    if name.startswith(("gpt-image", "dall-e")):
        return "image"
    if name.startswith("whisper"):
        return "transcription"
    retired = retired_message(f"openai/{name}")
    if retired is not None:
        raise PermanentError(f"openai: {retired}")
    raise PermanentError(f"openai: {name} is not a speech, image or transcription (whisper) model, the kinds run here")


def _json_object(response: httpx.Response, doing: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise TransientError(f"openai: {doing} answered non-JSON: {response.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise TransientError(f"openai: {doing} answered {type(data).__name__}, not an object")
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class OpenAIProvider(HttpAdapter):
    """OpenAI speech, images and Whisper transcription behind the Provider protocol."""

    info = BUILTIN_INFO["openai"]
    """OpenAI's default limits: none, they depend on the account's usage tier; set them in the limits file. It
    uploads our artifacts (reference images, audio to transcribe) from local files."""
    default_base_url = DEFAULT_BASE_URL
    timeout = TIMEOUT

    def __init__(
        self,
        key: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        poll_initial_s: float = 1.0,
        poll_max_s: float = 15.0,
        allow_private_urls: bool | None = None,
    ) -> None:
        super().__init__(key, base_url, client=client, poll_initial_s=poll_initial_s, poll_max_s=poll_max_s)
        self._allow_private_urls = allow_private_urls

    # --- settings --------------------------------------------------------------------------------

    @property
    def allow_private_urls(self) -> bool:
        if self._allow_private_urls is not None:
            return self._allow_private_urls
        return _truthy(os.environ.get(ALLOW_PRIVATE_ENV))

    def egress_policy(self, *trusted: str | None) -> EgressPolicy:
        policy = super().egress_policy(*trusted)
        if self._allow_private_urls is not None and policy.allow_private != self._allow_private_urls:
            policy = replace(policy, allow_private=self._allow_private_urls)
        return policy

    # --- the request -----------------------------------------------------------------------------

    def _request(self, task: Task) -> tuple[Kind, dict[str, Any]]:
        """(kind, JSON body or form fields) for the task; PermanentError when it cannot be sent."""
        name = _model_name(task.model)
        kind = _kind(name)
        if kind == "transcription":
            return kind, self._transcription_fields(task, name)
        if task.type == "run":
            given = task.params.get("input") or {}
            if not isinstance(given, dict):
                raise PermanentError("openai: a run job's params.input must be an object")
            body = {**given, "model": name}
        elif kind == "speech":
            body = to_speech_body(name, task.params)
        else:
            body = to_image_body(name, task.params)
        field = "input" if kind == "speech" else "prompt"
        if not isinstance(body.get(field), str) or not body[field].strip():
            raise PermanentError(f"openai: {'text to speak' if kind == 'speech' else 'a prompt'} is required")
        if kind == "speech" and str(body.get("response_format", "mp3")) not in _AUDIO_FORMATS:
            raise PermanentError(f"openai: unsupported response_format {body.get('response_format')!r}")
        if kind == "image" and str(body.get("output_format", "png")) not in _IMAGE_FORMATS:
            raise PermanentError(f"openai: unsupported output_format {body.get('output_format')!r}")
        return kind, body

    def _transcription_fields(self, task: Task, name: str) -> dict[str, Any]:
        if task.type != "transcribe":
            raise PermanentError(f"openai: {name} runs as a transcribe job (it needs the audio as a file)")
        params = task.params
        if params.get("audio") is None and "audio" not in task.inputs:
            raise PermanentError("openai: parameter 'audio' is required")
        fields: dict[str, Any] = {"model": name, "response_format": "verbose_json"}
        language = params.get("language")
        if language is not None:
            if not isinstance(language, str) or not _LANGUAGE_RE.match(language):
                raise PermanentError(f"openai: language must be an ISO-639-1 code such as 'en' (got {language!r})")
            fields["language"] = language
        prompt = params.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise PermanentError("openai: the transcription prompt must be a string")
            fields["prompt"] = prompt
        return fields

    # --- inputs ----------------------------------------------------------------------------------

    async def _input_file(self, task: Task, param: str, *, limit_bytes: int, what: str) -> Path:
        """The file for a URL parameter: our stored artifact when it is one, else downloaded (size-limited,
        through the egress guard: public addresses only, unless allowed)."""
        local = task.inputs.get(param)
        if local is not None:
            path = Path(local)
            size = await asyncio.to_thread(_file_size, path)
            if size is None:
                raise PermanentError(f"openai: input '{param}' is missing from the worker's disk")
            if size > limit_bytes:
                raise PermanentError(f"openai: {what} '{param}' is {size} bytes, over the limit of {limit_bytes}")
            return path
        url = task.params.get(param)
        if not is_http_url(url):
            raise PermanentError(f"openai: parameter '{param}' must be an http(s) URL (got {str(url)[:200]!r})")
        url = str(url)
        policy = self.egress_policy()
        problem = check_url_syntax(url, policy=policy)
        if problem is not None:  # a literal address that is not public, a localhost name: the URL says it all
            raise PermanentError(f"openai: fetching '{param}': {problem}")
        client = self.guarded_http(policy, timeout=self.timeout)
        try:
            path, _ = await fetch_output(client, url, task.workdir / f"input-{param}", limit_bytes=limit_bytes)
        except ProviderError as exc:
            message = exc.message.replace("downloading the output", "downloading").replace("the output", "the file")
            where = "" if message.startswith("refused:") else f" from {url[:200]}"
            raise type(exc)(f"openai: fetching '{param}'{where}: {message}", retry_after=exc.retry_after) from None
        return path

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        self.auth_headers()  # fail now, before anything waits, when the key is missing
        self._request(task)
        return f"oai-{uuid.uuid4().hex}"

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        kind, body = self._request(task)
        if not _LOCAL_ID_RE.match(provider_id):
            raise PermanentError(f"not an openai request id: {provider_id!r}")
        self.auth_headers()  # the key is needed from here on
        if task.resumed or task.unsettled:  # an earlier attempt may have made this very call and lost the answer
            await task.note_possible_duplicate(
                f"openai: the {kind} request of an earlier attempt may have been paid; it is sent again with the same"
                f" Idempotency-Key {task.idempotency_key}, which OpenAI does not document honouring"
            )
        message = {"speech": "speaking", "image": "drawing", "transcription": "transcribing"}[kind]
        await _report(report, ProgressUpdate(phase="running", message=message))
        if kind == "speech":
            return await self._speech(task, provider_id, body)
        if kind == "image":
            return await self._images(task, provider_id, body)
        return await self._transcribe(task, provider_id, body)

    async def find_submitted(self, task: Task, since: float) -> list[str]:
        """OpenAI has no list of past speeches, images or transcriptions to look in; its only safeguard is the
        idempotency key every retry repeats, which it does not document. Always CannotReconcile: the retry goes
        ahead with the same key and the worker counts a possible duplicate charge."""
        kind, _ = self._request(task)
        raise CannotReconcile(
            f"openai: no lookup of earlier {kind} requests; the retry repeats Idempotency-Key "
            f"{task.idempotency_key}, which OpenAI does not document honouring"
        )

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Nothing to stop: every request is answered within its call."""

    # --- synchronous calls -----------------------------------------------------------------------

    async def _post(self, task: Task, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        headers = {"Idempotency-Key": task.idempotency_key}
        response = await self.send("POST", path, doing=doing, headers=headers, create=True, **kwargs)
        if not response.is_success:
            raise _classify(response, doing)
        return response

    async def _speech(self, task: Task, provider_id: str, body: dict[str, Any]) -> ProviderResult:
        response = await self._post(task, "/audio/speech", f"speech with {task.model}", json=body)
        audio = response.content
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not audio or ctype.startswith(("application/json", "text/")):
            raise TransientError(f"openai: speech answered no audio ({ctype or 'no content type'})")
        suffix, content_type = _AUDIO_FORMATS[str(body.get("response_format", "mp3"))]
        out = task.workdir / f"speech{suffix}"
        out.write_bytes(audio)
        text: str = body["input"]
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "voice": body.get("voice"),
            "characters": len(text),
            "request_id": response.headers.get("x-request-id"),
        }
        spec = self.model_catalog().openai_spec(task.model or "")
        cost = round(spec.price.usd * len(text), 6) if spec and spec.price.unit == "character" else None
        return ProviderResult(outputs=[Output(path=out, content_type=content_type)], fields=fields, cost_usd=cost)

    async def _images(self, task: Task, provider_id: str, body: dict[str, Any]) -> ProviderResult:
        doing = f"image generation with {task.model}"
        response = await self._post(task, "/images/generations", doing, json=body)
        answer = _json_object(response, "images")
        data = answer.get("data")
        if not isinstance(data, list) or not data:
            raise PermanentError(f"openai: the answer holds no image: {json.dumps(answer)[:500]}")
        fmt = answer.get("output_format") or body.get("output_format") or "png"
        suffix, content_type = _IMAGE_FORMATS.get(str(fmt), _IMAGE_FORMATS["png"])
        outputs: list[Output] = []
        for i, item in enumerate(data):
            encoded = item.get("b64_json") if isinstance(item, dict) else None
            if isinstance(encoded, str):
                outputs.append(
                    Output(path=_write_b64(task.workdir / f"image-{i}{suffix}", encoded), content_type=content_type)
                )
            elif isinstance(item, dict) and str(item.get("url", "")).startswith(("http://", "https://")):
                outputs.append(Output(url=item["url"]))
        if not outputs:
            raise PermanentError(f"openai: the answer holds no image: {json.dumps(answer)[:500]}")
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "size": answer.get("size"),
            "quality": answer.get("quality"),
            "revised_prompt": next(
                (d.get("revised_prompt") for d in data if isinstance(d, dict) and d.get("revised_prompt")), None
            ),
            "usage": usage,
            "request_id": response.headers.get("x-request-id"),
        }
        cost = None
        spec = self.model_catalog().openai_spec(task.model or "")
        if spec is not None and spec is MODELS_BY_ID.get(spec.id):  # the built-in model: by quality and size
            priced = {
                "quality": answer.get("quality") or body.get("quality"),
                "size": answer.get("size") or body.get("size"),
            }
            cost = round(image_price(priced) * len(outputs), 6)
        elif spec is not None and spec.price.unit == "image":  # a model the catalog replaced or added
            cost = round(spec.price.usd * len(outputs), 6)
        return ProviderResult(outputs=outputs, fields=fields, cost_usd=cost)

    async def _transcribe(self, task: Task, provider_id: str, fields: dict[str, Any]) -> ProviderResult:
        audio = await self._input_file(task, "audio", limit_bytes=TRANSCRIPTION_MAX_BYTES, what="audio")
        suffix = audio.suffix.lower()
        if suffix not in _TRANSCRIBE_TYPES:
            known = ", ".join(s.lstrip(".") for s in _TRANSCRIBE_TYPES)
            raise PermanentError(f"openai: cannot transcribe a {suffix or 'suffix-less'} file (give one of {known})")
        data = await asyncio.to_thread(audio.read_bytes)
        form: list[tuple[str, Any]] = [("file", (f"audio{suffix}", data, _TRANSCRIBE_TYPES[suffix]))]
        form += [(k, (None, str(v))) for k, v in fields.items()]
        form += [("timestamp_granularities[]", (None, "word")), ("timestamp_granularities[]", (None, "segment"))]
        response = await self._post(task, "/audio/transcriptions", f"transcription with {task.model}", files=form)
        answer = _json_object(response, "transcription")
        words = clean_words(answer["words"]) if isinstance(answer.get("words"), list) else []
        if not words and isinstance(answer.get("segments"), list):
            words = words_from_segments(answer["segments"])
        text = answer.get("text") if isinstance(answer.get("text"), str) else None
        if text is None and not words:
            raise PermanentError(f"openai: the transcription holds no text: {json.dumps(answer)[:500]}")
        language = answer.get("language") if isinstance(answer.get("language"), str) else None
        duration = _number(answer.get("duration"))
        out = write_srt(task.workdir, words)
        result_fields = transcript_fields(text, words, language=language, duration=duration)
        result_fields["provider_id"] = provider_id
        result_fields["request_id"] = response.headers.get("x-request-id")
        return ProviderResult(
            outputs=[Output(path=out, content_type="application/x-subrip")],
            fields=result_fields,
            cost_usd=transcription_cost(duration),
        )


def _file_size(path: Path) -> int | None:
    """The size of a regular file, or None when there is none."""
    return path.stat().st_size if path.is_file() else None


def _write_b64(out: Path, encoded: str) -> Path:
    try:
        out.write_bytes(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise TransientError("openai: an image came back as invalid base64") from None
    return out
