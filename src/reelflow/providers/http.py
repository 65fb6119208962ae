"""Small helpers every HTTP adapter shares."""

from __future__ import annotations

import email.utils
import time

import httpx

MAX_RETRY_AFTER_S = 3600.0


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the provider asks us to wait (`Retry-After` as seconds or an HTTP date), capped at an hour."""
    header = response.headers.get("retry-after")
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))
