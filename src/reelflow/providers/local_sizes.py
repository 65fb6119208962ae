"""The sizes of the local provider's generated images and videos: here, not in `local`, so that a plan's check
(`local_limits`) reads them without loading the provider and the media helpers it runs jobs with."""

from __future__ import annotations

import re

from ..errors import PermanentError

LONG_SIDE = 1280
"""Long side of a generated image when neither width nor height is given."""

RESOLUTIONS = {"480p": 480, "720p": 720, "1080p": 1080}


def _ratio(aspect_ratio: str | None) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", aspect_ratio or "16:9")
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise PermanentError(f"bad aspect_ratio {aspect_ratio!r} (e.g. 16:9)")
    return int(m.group(1)), int(m.group(2))


def _even(n: float) -> int:
    return max(2, round(n / 2) * 2)


def image_size(width: int | None, height: int | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Image dimensions: as given; one given plus the ratio; else the ratio with a long side of 1280."""
    rw, rh = _ratio(aspect_ratio)
    if width and height:
        return width, height
    if width:
        return width, max(1, round(width * rh / rw))
    if height:
        return max(1, round(height * rw / rh)), height
    if rw >= rh:
        return LONG_SIDE, _even(LONG_SIDE * rh / rw)
    return _even(LONG_SIDE * rw / rh), LONG_SIDE


def video_size(
    aspect_ratio: str | None, resolution: str | None, width: int | None = None, height: int | None = None
) -> tuple[int, int]:
    """Even video dimensions: the short side from `resolution` (default 720p), the other from the ratio."""
    rw, rh = _ratio(aspect_ratio)
    if width and height:
        return _even(width), _even(height)
    if width:
        return _even(width), _even(width * rh / rw)
    if height:
        return _even(height * rw / rh), _even(height)
    short = RESOLUTIONS[resolution or "720p"]
    if rw >= rh:
        return _even(short * rw / rh), _even(short)
    return _even(short), _even(short * rh / rw)
