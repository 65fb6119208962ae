"""Copying a provider's output into our hands: streamed, size-limited, time-limited, type-checked.

Providers delete outputs within about an hour, so every output URL is fetched before the job completes.
"""

from __future__ import annotations

import asyncio
import mimetypes
import re
from pathlib import Path
from urllib.parse import urlparse

import httpx

from ..providers.base import PermanentError, TransientError

MAX_OUTPUT_BYTES = 2 * 1024**3
DOWNLOAD_TIMEOUT_S = 600.0
MEDIA_TYPES = re.compile(r"^(video|audio|image)/|^application/(octet-stream|mp4|ogg)$")
SUFFIX_FOR = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/ogg": ".ogg",
}


def _suffix(url: str, content_type: str) -> str:
    path_suffix = Path(urlparse(url).path).suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,5}", path_suffix):
        return path_suffix
    return SUFFIX_FOR.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


async def fetch_output(
    client: httpx.AsyncClient,
    url: str,
    dest_stem: Path,
    *,
    limit_bytes: int = MAX_OUTPUT_BYTES,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> tuple[Path, str]:
    """Download `url` to `dest_stem` + a suffix; return (path, content type).

    Network trouble and 5xx are transient (the retry waits on the same remote work, then fetches again);
    a 4xx, a non-media content type or an oversize body are permanent.
    """
    if urlparse(url).scheme not in ("http", "https"):
        raise PermanentError(f"output URL {url[:200]!r} is not http(s)")
    dest_stem.parent.mkdir(parents=True, exist_ok=True)
    try:
        async with asyncio.timeout(timeout_s), client.stream("GET", url) as response:
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientError(f"downloading the output failed: HTTP {response.status_code} from {url[:200]}")
            if response.status_code >= 400:
                raise PermanentError(f"downloading the output failed: HTTP {response.status_code} from {url[:200]}")
            content_type = response.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
            if not MEDIA_TYPES.match(content_type):
                raise PermanentError(f"the output at {url[:200]} is {content_type}, not media")
            path = dest_stem.with_suffix(_suffix(url, content_type))
            await stream_to_file(response, path, limit_bytes, "the output")
    except TimeoutError:
        raise TransientError(f"downloading the output took over {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"downloading the output failed: {type(exc).__name__}: {exc}") from None
    return path, content_type


async def stream_to_file(response: httpx.Response, path: Path, limit_bytes: int, what: str) -> int:
    """Write a streamed response body to `path`, refusing (PermanentError) a declared or actual size over
    `limit_bytes`; returns the bytes written. The disk writes run off the event loop."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise PermanentError(f"{what} is {int(declared)} bytes, over the limit of {limit_bytes}")
    size = 0
    with path.open("wb") as f:
        async for chunk in response.aiter_bytes(1 << 20):
            size += len(chunk)
            if size > limit_bytes:
                raise PermanentError(f"{what} is over the limit of {limit_bytes} bytes")
            await asyncio.to_thread(f.write, chunk)
    return size
