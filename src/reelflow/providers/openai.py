"""`openai/*`: speech (`POST /audio/speech`) and images (`POST /images/generations`) on OpenAI.

Both calls are synchronous: speech answers the audio bytes, images answer base64 (`b64_json`). There
is no remote id, so `submit` checks the request and returns a local id, and `wait` makes the call
and writes the files to the attempt's workdir; redoing `wait` simply asks again. Every request goes
to the configured base; the key (`Authorization: Bearer`) never leaves it. The asynchronous video
API (Sora) is not handled yet.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

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
from .catalog_openai import MODELS_BY_ID, image_price, to_image_body, to_speech_body
from .http import retry_after

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "REELFLOW_OPENAI_BASE_URL"

TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=30.0)
"""High-quality images take a minute or two; nothing waits forever."""

_MODEL_RE = re.compile(r"^openai/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})$")
_LOCAL_ID_RE = re.compile(r"^oai-[0-9a-f]{32}$")

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

Kind = Literal["speech", "image"]


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
    """The error for a non-2xx answer: 429 (except no quota) and 5xx are worth another try."""
    status = response.status_code
    message, code = _detail(response)
    text = f"openai: {doing} failed: HTTP {status}: {message}" + (f" ({code})" if code else "")
    if code in _PERMANENT_CODES:
        return PermanentError(text)
    if status == 429 or status >= 500 or status in (408, 409):
        return TransientError(text, retry_after=retry_after(response))
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
    raise PermanentError(f"openai: {name} is neither a speech nor an image model (only those run here for now)")


class OpenAIProvider:
    """OpenAI speech and images behind the Provider protocol."""

    name = "openai"

    def __init__(
        self, key: str | None = None, base_url: str | None = None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self._key = key
        self._base_url = base_url
        self._client = client

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return (self._base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")

    def _headers(self) -> dict[str, str]:
        key = self._key or os.environ.get(KEY_ENV)
        if not key:
            raise PermanentError(f"{KEY_ENV} is not set")
        return {"Authorization": f"Bearer {key}"}

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
        else:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                yield client

    async def _post(self, path: str, body: dict[str, Any], doing: str) -> httpx.Response:
        """One call to the base host (never redirected); transport trouble is transient."""
        headers = self._headers()
        async with self._http() as client:
            try:
                return await client.post(self.base_url + path, headers=headers, json=body, follow_redirects=False)
            except httpx.TimeoutException as exc:
                raise TransientError(f"openai: {doing} timed out ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise TransientError(f"openai: {doing} failed: {type(exc).__name__}: {exc}") from None

    # --- the request -----------------------------------------------------------------------------

    def _request(self, task: Task) -> tuple[Kind, dict[str, Any]]:
        """(speech or image, JSON body) for the task; PermanentError when it cannot be sent."""
        name = _model_name(task.model)
        kind = _kind(name)
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

    # --- the protocol ----------------------------------------------------------------------------

    async def submit(self, task: Task) -> str:
        self._headers()  # fail now, before anything waits, when the key is missing
        self._request(task)
        return f"oai-{uuid.uuid4().hex}"

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        if not _LOCAL_ID_RE.match(provider_id):
            raise PermanentError(f"not an openai request id: {provider_id!r}")
        kind, body = self._request(task)
        await _report(report, ProgressUpdate(phase="running", message="speaking" if kind == "speech" else "drawing"))
        if kind == "speech":
            return await self._speech(task, provider_id, body)
        return await self._images(task, provider_id, body)

    async def _speech(self, task: Task, provider_id: str, body: dict[str, Any]) -> ProviderResult:
        response = await self._post("/audio/speech", body, f"speech with {task.model}")
        if not response.is_success:
            raise _classify(response, f"speech with {task.model}")
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
        response = await self._post("/images/generations", body, f"image generation with {task.model}")
        if not response.is_success:
            raise _classify(response, f"image generation with {task.model}")
        try:
            answer = response.json()
        except ValueError:
            raise TransientError(f"openai: images answered non-JSON: {response.text[:200]!r}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
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

    async def cancel(self, task: Task, provider_id: str) -> None:
        """Nothing to stop: the work is one synchronous call inside `wait`."""
        return None


def _write_b64(out: Path, encoded: str) -> Path:
    try:
        out.write_bytes(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise TransientError("openai: an image came back as invalid base64") from None
    return out


async def _report(report: ProgressReporter, update: ProgressUpdate) -> None:
    maybe = report(update)
    if maybe is not None:
        await maybe
