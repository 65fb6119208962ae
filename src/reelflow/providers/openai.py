"""`openai/*`: speech, images, video (Sora) and transcription (Whisper) on OpenAI.

Speech (`POST /audio/speech`), images (`POST /images/generations`) and transcription
(`POST /audio/transcriptions`) are synchronous: `submit` checks the request and returns a local id,
and `wait` makes the call and writes the files to the attempt's workdir; redoing `wait` simply asks
again. Video is asynchronous: `submit` creates it (`POST /videos`, multipart) and returns OpenAI's
video id; `wait` polls `GET /videos/{id}` (honouring `openai-poll-after-ms`) and downloads
`GET /videos/{id}/content` when it is done; `cancel` deletes it.

Every request goes to the configured base through the shared rate gate; the key (`Authorization:
Bearer`) never leaves it. OpenAI's webhooks are account-wide (Standard Webhooks, secret in
`OPENAI_WEBHOOK_SECRET`): `verify_callback` checks them, and only when a secret is configured does `wait`
slow its polling down while it expects one.

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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .. import media
from ..net import EgressPolicy, check_url_syntax, fetch_output, stream_to_file
from .base import (
    CallbackEvent,
    CallbackRejected,
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
from .catalog import is_http_url
from .catalog.openai import (
    MODELS_BY_ID,
    TRANSCRIPTION_MAX_BYTES,
    image_price,
    to_image_body,
    to_speech_body,
    to_video_form,
    transcription_cost,
    video_price,
)
from .http import HttpAdapter, PollSchedule, retry_after
from .info import ProviderInfo
from .transcripts import clean_words, transcript_fields, words_from_segments, write_srt

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "REELFLOW_OPENAI_BASE_URL"
WEBHOOK_SECRET_ENV = "OPENAI_WEBHOOK_SECRET"
ALLOW_PRIVATE_ENV = "REELFLOW_ALLOW_PRIVATE_URLS"

TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=120.0, pool=30.0)
"""High-quality images take a minute or two and uploads may be large; nothing waits forever."""

MAX_VIDEO_BYTES = 2 * 1024**3
MAX_IMAGE_INPUT_BYTES = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 600.0
MAX_POLL_FAILURES = 5
"""Consecutive transient failures of a status poll tolerated inside one `wait` before giving up."""
CREATE_RESENDS = 2
"""How often a video create whose answer was lost is sent again (same Idempotency-Key) inside `submit`."""

_MODEL_RE = re.compile(r"^openai/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})$")
_LOCAL_ID_RE = re.compile(r"^oai-[0-9a-f]{32}$")
_VIDEO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
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
_REFERENCE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
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

Kind = Literal["speech", "image", "video", "transcription"]


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
    if name.startswith("sora"):
        return "video"
    if name.startswith("whisper"):
        return "transcription"
    raise PermanentError(
        f"openai: {name} is not a speech, image, video (sora) or transcription (whisper) model, the kinds run here"
    )


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
    """OpenAI speech, images, Sora video and Whisper transcription behind the Provider protocol."""

    info = ProviderInfo(
        name="openai",
        key_env=KEY_ENV,
        default_limits={},
        reads_local_files=True,
        paid=True,
        catalog="reelflow.providers.catalog.openai",
    )
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
        callback_poll_s: float = 60.0,
        webhook_secret: str | None = None,
        allow_private_urls: bool | None = None,
    ) -> None:
        super().__init__(
            key,
            base_url,
            client=client,
            poll_initial_s=poll_initial_s,
            poll_max_s=poll_max_s,
            callback_poll_s=callback_poll_s,
        )
        self._webhook_secret = webhook_secret
        self._allow_private_urls = allow_private_urls

    # --- settings --------------------------------------------------------------------------------

    @property
    def webhook_secret(self) -> str | None:
        """The account's webhook signing secret (`whsec_...`), read at call time; None when unset."""
        return self._webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV) or None

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

    def poll_schedule(self, task: Any) -> PollSchedule:
        """Slow polling only while a callback can really come: OpenAI's webhooks are set up account-wide,
        so a callback URL on the task means nothing unless we hold the secret to verify them."""
        callback = getattr(task, "callback_url", None) and self.webhook_secret
        return PollSchedule(self.poll_initial_s, self.poll_max_s, callback_s=self.callback_poll_s if callback else None)

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
            if kind == "video":
                if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
                    raise PermanentError("openai: a prompt is required")
                bad = [k for k, v in body.items() if isinstance(v, dict | list)]
                if bad:
                    raise PermanentError(f"openai: video form fields must be plain values (got objects for {bad})")
                body = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items() if v is not None}
                return kind, body
        elif kind == "speech":
            body = to_speech_body(name, task.params)
        elif kind == "image":
            body = to_image_body(name, task.params)
        else:
            try:
                return kind, to_video_form(name, task.params)
            except ValueError as exc:
                raise PermanentError(f"openai: {exc}") from None
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

    async def _reference_image(self, task: Task, size: str) -> tuple[str, bytes, str]:
        """`input_reference` for a video: the job's image, scaled and cropped to the video's size (OpenAI
        asks for a reference of exactly that size)."""
        source = await self._input_file(task, "image", limit_bytes=MAX_IMAGE_INPUT_BYTES, what="image")
        width, height = (int(n) for n in size.split("x"))
        try:
            info = await media.probe(source)
        except media.MediaError as exc:
            raise PermanentError(f"openai: the image is not readable: {exc}") from None
        if not info["has_video"] or info["duration"] is not None:
            raise PermanentError("openai: parameter 'image' must be a still image")
        suffix = source.suffix.lower()
        if (info["width"], info["height"]) == (width, height) and suffix in _REFERENCE_TYPES:
            data = await asyncio.to_thread(source.read_bytes)
            return f"reference{suffix}", data, _REFERENCE_TYPES[suffix]
        fitted = task.workdir / f"reference-{width}x{height}.png"
        await _fit_image(source, fitted, width, height)
        return fitted.name, await asyncio.to_thread(fitted.read_bytes), "image/png"

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        self.auth_headers()  # fail now, before anything waits, when the key is missing
        kind, body = self._request(task)
        if kind != "video":
            return f"oai-{uuid.uuid4().hex}"
        files: list[tuple[str, Any]] = [(k, (None, str(v))) for k, v in body.items()]
        if task.type != "run" and (task.params.get("image") is not None or "image" in task.inputs):
            filename, data, content_type = await self._reference_image(task, body["size"])
            files.append(("input_reference", (filename, data, content_type)))
        doing = f"creating a video with {task.model}"
        headers = {"Idempotency-Key": task.idempotency_key}
        attempt = 0
        while True:
            try:
                response = await self.send("POST", "/videos", doing=doing, headers=headers, files=files)
                break
            except TransientError:
                # the answer may be lost after OpenAI made the video: the same key gets the same video back
                attempt += 1
                if attempt > CREATE_RESENDS:
                    raise
                await asyncio.sleep(min(self.poll_initial_s, 1.0) * attempt)
        if not response.is_success:
            raise _classify(response, doing)
        video = _json_object(response, doing)
        vid = video.get("id")
        if not isinstance(vid, str) or not _VIDEO_ID_RE.match(vid):
            raise TransientError(f"openai: the create answer has no usable video id: {json.dumps(video)[:300]}")
        return vid

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        kind, body = self._request(task)
        if kind == "video":
            if not _VIDEO_ID_RE.match(provider_id) or _LOCAL_ID_RE.match(provider_id):
                raise PermanentError(f"not an openai video id: {provider_id!r}")
            return await self._wait_video(task, provider_id, report)
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
        idempotency key every retry repeats, which it does not document. Videos are listed, but that path is
        being retired and keeps relying on the key too. Always CannotReconcile: the retry goes ahead with the
        same key and the worker counts a possible duplicate charge."""
        kind, _ = self._request(task)
        raise CannotReconcile(
            f"openai: no lookup of earlier {kind} requests; the retry repeats Idempotency-Key "
            f"{task.idempotency_key}, which OpenAI does not document honouring"
        )

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Delete the video so it stops costing; speech, images and transcriptions have nothing to stop."""
        if _LOCAL_ID_RE.match(provider_id) or not _VIDEO_ID_RE.match(provider_id):
            return
        doing = f"deleting video {provider_id}"
        response = await self.send("DELETE", f"/videos/{provider_id}", doing=doing)
        if response.is_success:
            return
        error = _classify(response, doing)
        if isinstance(error, TransientError):
            raise error
        log.info("openai: %s not needed: %s", doing, error.message)  # finished, gone or never ours

    async def verify_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackEvent:
        """Check a Standard Webhooks signature with the account's secret; name the video it is about."""
        secret = self.webhook_secret
        if not secret:
            raise CallbackRejected(f"openai: {WEBHOOK_SECRET_ENV} is not set, so no webhook can be verified")
        try:
            hook = Webhook(secret)
        except Exception:
            raise CallbackRejected(f"openai: {WEBHOOK_SECRET_ENV} is not a valid whsec_ secret") from None
        plain = {str(k).lower(): str(v) for k, v in headers.items()}
        try:
            payload = hook.verify(body, plain)
        except WebhookVerificationError as exc:
            raise CallbackRejected(f"openai: webhook rejected: {exc}") from None
        except (ValueError, TypeError):  # malformed signature entries, bad base64, undecodable or non-JSON body
            raise CallbackRejected("openai: webhook rejected: malformed signature header or body") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        vid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(vid, str) or not _VIDEO_ID_RE.match(vid):
            raise CallbackRejected("openai: webhook rejected: the event names no object (data.id)")
        event_type = payload.get("type")
        status: str | None = None
        if isinstance(event_type, str):
            status = event_type.removeprefix("video.") if event_type.startswith("video.") else event_type
        return CallbackEvent(provider_job_id=vid, status=status)

    # --- video -----------------------------------------------------------------------------------

    async def _wait_video(self, task: Task, vid: str, report: ProgressReporter) -> ProviderResult:
        schedule = self.poll_schedule(task)
        doing = f"polling video {vid}"
        failures = 0
        last: tuple[str, float | None] | None = None
        while True:
            hint: float | None = None
            try:
                response = await self.send("GET", f"/videos/{vid}", doing=doing)
                if not response.is_success:
                    raise _classify(response, doing)
                video = _json_object(response, doing)
                failures = 0
            except TransientError as exc:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                log.info("openai: %s failed (%s); trying again", doing, exc.message)
                await task.pause(schedule.next_delay(hint=exc.retry_after))
                continue
            hint = _poll_after(response)
            status = video.get("status")
            progress = _number(video.get("progress"))
            percent = None if progress is None else max(0.0, min(100.0, progress))
            if status == "completed":
                return await self._video_result(task, vid, video)
            if status == "failed":
                error: dict[str, Any] = video["error"] if isinstance(video.get("error"), dict) else {}
                message = error.get("message") or "no error message given"
                code = error.get("code")
                raise PermanentError(f"openai: video {vid} failed: {message}" + (f" ({code})" if code else ""))
            update: ProgressUpdate | None = None
            if status == "queued":
                update = ProgressUpdate(phase="queued", percent=percent)
            elif status == "in_progress":
                update = ProgressUpdate(phase="running", percent=percent)
            else:
                log.warning("openai: video %s has unknown status %r; still waiting", vid, status)
            if update is not None and (update.phase, update.percent) != last:
                last = (update.phase, update.percent)
                await _report(report, update)
            running = status == "in_progress"
            await task.pause(schedule.next_delay(percent=percent if running else None, hint=hint))

    async def _video_result(self, task: Task, vid: str, video: dict[str, Any]) -> ProviderResult:
        path = await self._download_content(task, vid)
        model_name = str(video.get("model") or _model_name(task.model))
        size = str(video.get("size") or "")
        try:
            seconds = float(video.get("seconds") or 0) or None
        except (TypeError, ValueError):
            seconds = None
        fields: dict[str, Any] = {
            "provider_id": vid,
            "seconds": seconds,
            "size": size or None,
            "expires_at": video.get("expires_at"),
        }
        cost = round(video_price(model_name, size) * seconds, 6) if seconds is not None else None
        return ProviderResult(outputs=[Output(path=path, content_type="video/mp4")], fields=fields, cost_usd=cost)

    async def _download_content(self, task: Task, vid: str) -> Path:
        """`GET /videos/{id}/content` streamed to the workdir, through the rate gate, size- and time-limited."""
        doing = f"downloading video {vid}"
        out = task.workdir / "video.mp4"
        await self.gate.acquire()
        try:
            async with (
                asyncio.timeout(DOWNLOAD_TIMEOUT_S),
                self.http().stream(
                    "GET",
                    f"{self.base_url}/videos/{vid}/content",
                    params={"variant": "video"},
                    headers=self.auth_headers(),
                    follow_redirects=False,
                ) as response,
            ):
                if response.status_code == 429:
                    self.gate.on_throttled(retry_after(response))
                else:
                    self.gate.on_success()
                if not response.is_success:
                    await response.aread()
                    raise _classify(response, doing)
                ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if ctype.startswith(("application/json", "text/")):
                    raise TransientError(f"openai: {doing} answered {ctype}, not a video")
                size = await stream_to_file(response, out, MAX_VIDEO_BYTES, f"openai: video {vid}")
        except TimeoutError:
            raise TransientError(f"openai: {doing} took over {DOWNLOAD_TIMEOUT_S:g} s") from None
        except httpx.TimeoutException as exc:
            raise TransientError(f"openai: {doing} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"openai: {doing} failed: {type(exc).__name__}: {exc}") from None
        if size == 0:
            raise TransientError(f"openai: {doing} answered no bytes")
        return out

    # --- synchronous calls -----------------------------------------------------------------------

    async def _post(self, task: Task, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        headers = {"Idempotency-Key": task.idempotency_key}
        response = await self.send("POST", path, doing=doing, headers=headers, **kwargs)
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
        spec = MODELS_BY_ID.get(task.model or "")
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
        if task.model in MODELS_BY_ID:
            priced = {
                "quality": answer.get("quality") or body.get("quality"),
                "size": answer.get("size") or body.get("size"),
            }
            cost = round(image_price(priced) * len(outputs), 6)
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


def _poll_after(response: httpx.Response) -> float | None:
    """OpenAI's suggested wait before the next poll (`openai-poll-after-ms`), in seconds."""
    raw = response.headers.get("openai-poll-after-ms")
    try:
        ms = float(raw) if raw is not None else None
    except ValueError:
        return None
    if ms is None or ms != ms or ms < 0:
        return None
    return min(ms / 1000.0, 300.0)


async def _fit_image(source: Path, out: Path, width: int, height: int) -> None:
    """Scale and centre-crop `source` to exactly width x height as PNG (ffmpeg, under media's caps)."""
    try:
        await media.fit_image(source, out, width, height)
    except media.MediaError as exc:
        raise PermanentError(f"openai: cannot fit the image to {width}x{height}: {exc}") from None


def _file_size(path: Path) -> int | None:
    """The size of a regular file, or None when there is none."""
    return path.stat().st_size if path.is_file() else None


def _write_b64(out: Path, encoded: str) -> Path:
    try:
        out.write_bytes(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise TransientError("openai: an image came back as invalid base64") from None
    return out
