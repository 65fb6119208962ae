"""ffmpeg operations: probe, make local media, merge, concat, captions, overlay, transcode, thumbnail.

Every operation runs ffmpeg as an asyncio subprocess, so the event loop never blocks; a cancelled
operation kills its ffmpeg. Outputs are written to a hidden partial file beside `out` and renamed into
place only on success, so a failed or cancelled operation never leaves a half-written `out`.

Every run works under the caps of `media_limits` (memory, time, slots per worker) and dies with the process
that started it; every input is read through the file protocol as a plain media container, so ffmpeg reads
only the files it is handed. Operations refuse work over the local work budget before ffmpeg starts.

By responsibility: `runner` (running ffmpeg under the caps), `filters` (filtergraph helpers), `probing` (what a
file holds), `synthesis` (local/image, video, audio), `edits` (merge, concat, overlay, transcode, thumbnail) and
`captioning`. The names below are the ones other modules use as `media.<name>`.
"""

from __future__ import annotations

from typing import Any

from .captioning import captions, group_words, parse_srt, spread_text
from .edits import concat, fit_image, merge_video_audio, overlay, thumbnail, transcode
from .filters import FONT_CANDIDATES, find_font
from .probing import ProbeBatcher, indirect_format, kinds_of, looks_like_text, parse_probe, probe, probe_many
from .runner import (
    AUDIO_SUFFIXES,
    CODE_RESIDENT_BYTES,
    CONTENT_TYPES,
    DEFAULT_FPS,
    DEMUXERS,
    ENCODER_THREADS,
    IMAGE_SUFFIXES,
    MANY_INPUTS,
    PROBE_TIME_LIMIT_S,
    PROTOCOLS,
    STDERR_KEEP_BYTES,
    THREAD_STACK_BYTES,
    VIDEO_SUFFIXES,
    X264_PRESET,
    MediaError,
    MediaLimitError,
    command_summary,
    ffmpeg_exe,
    tool_log,
)
from .synthesis import espeak_voice, make_audio, make_image, make_video, speech_available

FFMPEG: str
"""The ffmpeg path (module attribute resolved lazily on first access; see ffmpeg_exe())."""


def __getattr__(name: str) -> Any:
    """Module attribute `FFMPEG`: the ffmpeg path, resolved lazily."""
    if name == "FFMPEG":
        return ffmpeg_exe()
    raise AttributeError(name)


__all__ = [
    "AUDIO_SUFFIXES",
    "CODE_RESIDENT_BYTES",
    "CONTENT_TYPES",
    "DEFAULT_FPS",
    "DEMUXERS",
    "ENCODER_THREADS",
    "FFMPEG",
    "FONT_CANDIDATES",
    "IMAGE_SUFFIXES",
    "MANY_INPUTS",
    "PROBE_TIME_LIMIT_S",
    "PROTOCOLS",
    "STDERR_KEEP_BYTES",
    "THREAD_STACK_BYTES",
    "VIDEO_SUFFIXES",
    "X264_PRESET",
    "MediaError",
    "MediaLimitError",
    "ProbeBatcher",
    "captions",
    "command_summary",
    "concat",
    "espeak_voice",
    "ffmpeg_exe",
    "find_font",
    "fit_image",
    "group_words",
    "indirect_format",
    "kinds_of",
    "looks_like_text",
    "make_audio",
    "make_image",
    "make_video",
    "merge_video_audio",
    "overlay",
    "parse_probe",
    "parse_srt",
    "probe",
    "probe_many",
    "speech_available",
    "spread_text",
    "thumbnail",
    "tool_log",
    "transcode",
]
