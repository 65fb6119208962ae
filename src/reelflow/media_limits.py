"""Limits for local media work: the caps every ffmpeg run works under, and the size of one local operation.

Values come from the settings (`REELFLOW_FFMPEG_*`, `REELFLOW_LOCAL_*`, `REELFLOW_CONCAT_MAX_INPUTS`,
`REELFLOW_CAPTION_MAX_*`); `use_limits` overrides them for the code run inside it (tests, embedding).
Pure: no I/O beyond reading the settings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from .config import Settings, get_settings

MEGA = 1_000_000


@dataclass(frozen=True)
class MediaLimits:
    """Every limit of local media work, with its default."""

    ffmpeg_memory_mb: int = 1024
    """Memory cap of each ffmpeg (or espeak-ng) process: its private memory (heap, thread stacks), RLIMIT_DATA."""
    ffmpeg_timeout_s: float = 1800.0
    """Longest one ffmpeg run may take."""
    ffmpeg_concurrency: int = max(1, os.cpu_count() or 1)
    """ffmpeg operations (runs that make an output) at once in one worker process; probes are not counted."""
    local_work_mpx: float = 40_000.0
    """Megapixel-frames one local operation may decode, and may encode (width x height x frames / 10^6)."""
    concat_max_inputs: int = 200
    caption_max_cues: int = 5000
    caption_max_bytes: int = 1_000_000
    probe_in_process: bool = True
    """Probe with PyAV inside the process when it is installed (see media/probing.py), else an ffmpeg run."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(
            ffmpeg_memory_mb=settings.ffmpeg_memory_mb,
            ffmpeg_timeout_s=settings.ffmpeg_timeout_s,
            ffmpeg_concurrency=settings.ffmpeg_concurrency or max(1, os.cpu_count() or 1),
            local_work_mpx=settings.local_work_budget,
            concat_max_inputs=settings.concat_max_inputs,
            caption_max_cues=settings.caption_max_cues,
            caption_max_bytes=settings.caption_max_bytes,
            probe_in_process=settings.probe_in_process,
        )

    def with_(self, **changes: Any) -> MediaLimits:
        return replace(self, **changes)


_override: ContextVar[MediaLimits | None] = ContextVar("reelflow_media_limits", default=None)
_from_settings: dict[int, tuple[Settings, MediaLimits]] = {}


def current_limits() -> MediaLimits:
    """The limits in force here: an override of `use_limits`, else those of the process's settings."""
    override = _override.get()
    if override is not None:
        return override
    settings = get_settings()
    cached = _from_settings.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, MediaLimits.from_settings(settings))
        _from_settings.clear()
        _from_settings[id(settings)] = cached
    return cached[1]


@contextlib.contextmanager
def use_limits(limits: MediaLimits | None = None, /, **changes: Any) -> Iterator[MediaLimits]:
    """Run the block (and every task started in it) under `limits`, or the current ones with `changes`."""
    chosen = (limits or current_limits()).with_(**changes)
    token = _override.set(chosen)
    try:
        yield chosen
    finally:
        _override.reset(token)


def mpx(pixels: float) -> str:
    """A count of megapixel-frames for messages: 40,000 or 5,308,416."""
    value = pixels / MEGA
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2f}"


def work_message(what: str, pixel_frames: float, limits: MediaLimits) -> str | None:
    """A refusal when `pixel_frames` of work is over the budget, else None. `what` says which work."""
    if pixel_frames <= limits.local_work_mpx * MEGA:
        return None
    return (
        f"{what} is {mpx(pixel_frames)} megapixel-frames, over the work budget of "
        f"{mpx(limits.local_work_mpx * MEGA)} per local operation (REELFLOW_LOCAL_WORK_BUDGET)"
    )


def count_srt_cues(srt: str) -> int:
    """How many cues an SRT text holds: its blocks separated by blank lines (what parse_srt reads)."""
    count = 0
    in_block = False
    for line in srt.splitlines():
        if line.strip():
            if not in_block:
                count += 1
                in_block = True
        else:
            in_block = False
    return count


def caption_problems(
    *, srt: Any = None, text: Any = None, segments: Any = None, words: Any = None, limits: MediaLimits
) -> list[tuple[str, str]]:
    """(parameter, message) for caption sources over the cue or text limits; values not yet known are skipped."""
    problems: list[tuple[str, str]] = []
    max_cues, max_bytes = limits.caption_max_cues, limits.caption_max_bytes

    def over_bytes(name: str, size: int) -> None:
        if size > max_bytes:
            problems.append(
                (
                    name,
                    f"{name} holds {size:,} bytes of caption text, over the limit of {max_bytes:,} "
                    "(REELFLOW_CAPTION_MAX_BYTES)",
                )
            )

    def over_cues(name: str, cues: int) -> None:
        if cues > max_cues:
            problems.append(
                (
                    name,
                    f"{name} makes {cues:,} caption cues, over the limit of {max_cues:,} (REELFLOW_CAPTION_MAX_CUES)",
                )
            )

    if isinstance(srt, str):
        size = len(srt.encode("utf-8", "replace"))
        over_bytes("srt", size)
        if size <= max_bytes:  # counting a huge text is work of its own: the byte limit said enough
            over_cues("srt", count_srt_cues(srt))
    if isinstance(text, str):
        over_bytes("text", len(text.encode("utf-8", "replace")))
    if isinstance(segments, list):
        over_cues("segments", len(segments))
        if len(segments) <= max_cues:
            over_bytes("segments", sum(len(str(s.get("text", "")).encode()) for s in segments if isinstance(s, dict)))
    if isinstance(words, dict):
        words = words.get("words")
    if isinstance(words, list):
        texts = [str(w.get("word", w.get("text", ""))) for w in words if isinstance(w, dict)]
        over_bytes("words", sum(len(t.encode()) + 1 for t in texts))
        # words are grouped into lines of up to 6; more than 6 x the cue limit is over for certain
        if len(words) > 6 * max_cues:
            over_cues("words", -(-len(words) // 6))
    return problems


def concat_count_problem(count: int, limits: MediaLimits) -> str | None:
    if count > limits.concat_max_inputs:
        return (
            f"videos has {count:,} inputs, over the limit of {limits.concat_max_inputs:,} per concat "
            "(REELFLOW_CONCAT_MAX_INPUTS)"
        )
    return None


def limits_of(settings: Settings) -> contextlib.AbstractContextManager[MediaLimits]:
    """`use_limits` with the limits of `settings` (a worker's own), unless an override is already in force."""
    override = _override.get()
    if override is not None:
        return contextlib.nullcontext(override)
    return use_limits(MediaLimits.from_settings(settings))
