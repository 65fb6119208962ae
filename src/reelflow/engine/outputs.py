"""Outputs judged by their bytes: a job's output is stored only when it is the kind of media its job makes.

What a provider says about an output (its URL's suffix, its content type) decides nothing. The bytes are
sniffed first: playlists and other formats whose reader opens other files or URLs (HLS, DASH, ffconcat, SDP,
IMF, ...) are refused whatever their name. Text is accepted only where the job's model declares text (a
transcription); anything else must probe, with ffmpeg reading only that file as a plain container, as the
kind of its job: generate-image an image, generate-video a video, generate-audio audio, `run` what the
model's catalog entry declares (any media when the model is not catalogued).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import json
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_to_bytes

from .. import media
from ..providers.base import PermanentError
from ..providers.catalog import default_catalog

if TYPE_CHECKING:
    from ..providers.catalog import Catalog

MEDIA = frozenset({"image", "video", "audio"})
JOB_KINDS: dict[str, frozenset[str]] = {
    "generate-image": frozenset({"image"}),
    "generate-video": frozenset({"video"}),
    "generate-audio": frozenset({"audio"}),
    "transcribe": frozenset({"text"}),
    "merge-video-audio": frozenset({"video"}),
    "concat": frozenset({"video"}),
    "captions": frozenset({"video"}),
    "overlay": frozenset({"video"}),
    "transcode": frozenset({"video", "audio"}),
    "thumbnail": frozenset({"image"}),
}
"""The kinds of output each job type makes."""
NOUNS = {"image": "an image", "video": "a video", "audio": "audio", "text": "text"}
SNIFF_BYTES = 65536
MAX_TEXT_BYTES = 64 * 1024 * 1024
"""The largest text output (a transcript of many hours is a few MB; a JSON one is read whole to be checked)."""
MAX_DATA_URL_BYTES = 64 * 1024 * 1024
"""The largest output accepted inline as a `data:` URL (it came in a provider's JSON answer already)."""

Prober = Callable[[Path], Awaitable[dict[str, Any]]]
QuickProber = Callable[[Path], dict[str, Any] | None]
T = TypeVar("T")


def expected_kinds(job_type: str, model: str | None, catalog: Catalog | None = None) -> frozenset[str]:
    """What a job's outputs may be: by its type, or for `run` by the types its model declares in `catalog`
    (the process's default catalog when None)."""
    if job_type != "run":
        return JOB_KINDS.get(job_type, MEDIA)
    spec = (catalog or default_catalog()).get(model) if model else None
    declared = frozenset().union(*(JOB_KINDS.get(t, frozenset()) for t in spec.types)) if spec else frozenset()
    return declared or MEDIA


def describe(kinds: frozenset[str]) -> str:
    """'a video', 'an image or a video', 'media'."""
    if kinds >= MEDIA and "text" not in kinds:
        return "media"
    return " or ".join(NOUNS[k] for k in sorted(kinds)) or "media"


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


def _checked_text(path: Path) -> int:
    """The size of a text output, after checking all of it is UTF-8 without NUL (and JSON for a .json)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise ValueError(f"it is text over {MAX_TEXT_BYTES:,} bytes")
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            if b"\x00" in chunk:
                raise ValueError("it holds NUL bytes")
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    if path.suffix.lower() == ".json":
        with path.open("rb") as f:
            try:
                json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"it is not valid JSON ({exc})") from None
    return size


def _first_look(
    path: Path, kinds: frozenset[str], quick_probe: QuickProber | None, keep: Callable[[], T] | None = None
) -> tuple[bytes, dict[str, Any] | None, tuple[T] | None]:
    """The file's first bytes, and when they may be the media the job makes, `quick_probe`'s answer (None
    when there is none): both in one trip off the event loop. When that answer shows the file is what the job
    makes (judge's verdict is then that answer), `keep()` runs too, still in that trip: `(its result,)`."""
    head = _head(path)
    if quick_probe is None or not kinds & MEDIA or media.indirect_format(head) is not None:
        return head, None, None
    if media.looks_like_text(head):
        return head, None, None
    quick = quick_probe(path)
    if keep is not None and quick is not None and media.kinds_of(quick) & kinds:
        return head, quick, (keep(),)
    return head, quick, None


async def judge(
    path: Path,
    job_type: str,
    model: str | None,
    probe: Prober,
    *,
    quick_probe: QuickProber | None = None,
    catalog: Catalog | None = None,
) -> dict[str, Any]:
    """What the output at `path` is (probe() fields, or its size for text) when it is what the job makes;
    otherwise PermanentError: "the output is not a video: it is ...". `quick_probe` (blocking, run in the
    thread that reads the file's first bytes) may answer for `probe`; when it gives None, `probe` decides.
    A `run` job's model is looked up in `catalog` (the worker's; the process's default when None)."""
    info, _ = await _judge(path, job_type, model, probe, quick_probe, catalog, None)
    return info


async def judge_then(
    path: Path,
    job_type: str,
    model: str | None,
    probe: Prober,
    keep: Callable[[], T],
    *,
    quick_probe: QuickProber | None = None,
    catalog: Catalog | None = None,
) -> tuple[dict[str, Any], T]:
    """judge(), then `keep()` (blocking: storing the file) once the output passed: in the thread trip of the
    first look when the quick probe settles the verdict (the usual case: one trip for both), otherwise in a
    trip of its own. Nothing is kept when judge() refuses the output."""
    info, kept = await _judge(path, job_type, model, probe, quick_probe, catalog, keep)
    if kept is not None:
        return info, kept[0]
    return info, await asyncio.to_thread(keep)


async def _judge(
    path: Path,
    job_type: str,
    model: str | None,
    probe: Prober,
    quick_probe: QuickProber | None,
    catalog: Catalog | None,
    keep: Callable[[], T] | None,
) -> tuple[dict[str, Any], tuple[T] | None]:
    kinds = expected_kinds(job_type, model, catalog)
    wanted = describe(kinds)
    head, quick, kept = await asyncio.to_thread(_first_look, path, kinds, quick_probe, keep)
    if (indirect := media.indirect_format(head)) is not None:
        raise PermanentError(
            f"the output is not {wanted}: it is {indirect}, a format that makes a reader open other files "
            "or URLs; refused"
        )
    if media.looks_like_text(head):
        if "text" not in kinds:
            raise PermanentError(f"the output is not {wanted}: it is text ({len(head):,}+ bytes)")
        try:
            size = await asyncio.to_thread(_checked_text, path)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PermanentError(f"the output is not {wanted}: {exc}") from None
        return {"size_bytes": size}, None
    if not kinds & MEDIA:
        raise PermanentError(f"the output is not {wanted}: it is binary data")
    try:
        info = quick if quick is not None else await probe(path)
    except media.MediaLimitError as exc:
        raise PermanentError(f"the output could not be checked: {exc}") from exc
    except media.MediaError as exc:
        raise PermanentError(f"the output is not {wanted}: ffmpeg cannot read it as media ({exc})") from exc
    found = media.kinds_of(info)
    if not found & kinds:
        what = describe(found) if found else "no picture or sound"
        raise PermanentError(f"the output is not {wanted}: it is {what} ({info.get('format')})")
    return info, kept


def write_data_url(url: str, stem: Path) -> tuple[Path, str]:
    """Decode a `data:` URL output into `stem` + a suffix of its declared type; (path, content type).
    Its bytes are judged like any other output's afterwards."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise PermanentError("the output is a malformed data: URL")
    meta = header[len("data:") :].split(";")
    content_type = (meta[0] or "application/octet-stream").strip().lower()
    if len(payload) > MAX_DATA_URL_BYTES * 4 // 3 + 4:
        raise PermanentError(f"the output is a data: URL over {MAX_DATA_URL_BYTES:,} bytes")
    try:
        data = base64.b64decode(payload, validate=False) if "base64" in meta[1:] else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise PermanentError(f"the output is an undecodable data: URL: {exc}") from None
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_suffix(mimetypes.guess_extension(content_type) or ".bin")
    path.write_bytes(data)
    return path, content_type
