"""Word timings, whatever their source, in one shape: `[{"word", "start", "end"}]` in seconds.

A `transcribe` job's result and ElevenLabs' timestamped speech both end up here, so `captions` can
take `$transcript.words` or `$voice.words` alike. The helpers also write the SRT file a transcription
stores as its output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..media import group_words


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def clean_words(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Words as `{word, start, end}`, in time order, from objects naming the word `word` or `text`;
    entries without text or numeric times are dropped, and an end before its start is clamped."""
    words: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        text = str(item.get("word", item.get("text", "")) or "").strip()
        start, end = _seconds(item.get("start")), _seconds(item.get("end"))
        if not text or start is None or end is None:
            continue
        words.append({"word": text, "start": round(start, 3), "end": round(max(start, end), 3)})
    words.sort(key=lambda w: (w["start"], w["end"]))
    return words


def words_from_characters(
    characters: Sequence[str], starts: Sequence[float], ends: Sequence[float]
) -> list[dict[str, Any]]:
    """Words from a character alignment (ElevenLabs' `alignment`): characters between whitespace form a
    word that starts with its first character and ends with its last."""
    words: list[dict[str, Any]] = []
    current: list[str] = []
    begin = finish = 0.0
    n = min(len(characters), len(starts), len(ends))
    for i in range(n):
        ch = characters[i]
        if ch.isspace():
            if current:
                words.append({"word": "".join(current), "start": begin, "end": finish})
                current = []
            continue
        if not current:
            begin = float(starts[i])
        current.append(ch)
        finish = float(ends[i])
    if current:
        words.append({"word": "".join(current), "start": begin, "end": finish})
    return clean_words(words)


def words_from_segments(segments: Iterable[Any]) -> list[dict[str, Any]]:
    """Words from Whisper-style segments that carry a `words` list each."""
    found: list[Any] = []
    for segment in segments:
        if isinstance(segment, dict) and isinstance(segment.get("words"), list):
            found.extend(segment["words"])
    return clean_words(found)


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def srt_from_words(words: list[dict[str, Any]]) -> str:
    """Short caption lines grouped from the words, as an SRT document."""
    blocks = []
    for i, seg in enumerate(group_words(words), start=1):
        end = max(seg["end"], seg["start"] + 0.001)  # a cue must end after it starts (zero-length words)
        blocks.append(f"{i}\n{_timestamp(seg['start'])} --> {_timestamp(end)}\n{seg['text']}\n")
    return "\n".join(blocks)


def transcript_fields(
    text: str | None, words: list[dict[str, Any]], *, language: str | None = None, duration: float | None = None
) -> dict[str, Any]:
    """The fields a transcription's result carries."""
    joined = text.strip() if isinstance(text, str) and text.strip() else " ".join(w["word"] for w in words)
    fields: dict[str, Any] = {"text": joined, "words": words, "segments": group_words(words)}
    if language:
        fields["language"] = language
    if duration is not None:
        fields["duration"] = duration
    return fields


def write_srt(folder: Path, words: list[dict[str, Any]], name: str = "transcript.srt") -> Path:
    """The words as an SRT file in `folder` (the stored output of a transcription)."""
    path = folder / name
    path.write_text(srt_from_words(words), encoding="utf-8")
    return path
