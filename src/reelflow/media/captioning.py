"""Captions: SRT parsing, word grouping, text spread over a video, and burning them in with drawtext."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from ..media_limits import caption_problems, current_limits
from ..providers.catalog.builtin import COLOR_PATTERN
from . import filters
from .filters import (
    NO_FONT,
    _audio_codec_args,
    _chars_per_line,
    _copyable_audio,
    _drawtext,
    _num,
    _video_codec_args,
    _wrap,
    _write_text,
)
from .probing import probe
from .runner import MediaError, MediaLimitError, _check_work, _ffmpeg, _first, _frames, _input, _pixels

# --------------------------------------------------------------------------------------------------
# captions

_SRT_TIME = r"(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})"
_SRT_TIMING_RE = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s.*)?$")
_TAG_RE = re.compile(r"<[^>]+>|\{\\[^}]*\}")
_COLOR_RE = re.compile(COLOR_PATTERN)


def parse_srt(srt: str) -> list[dict[str, Any]]:
    """Segments of an SRT text; MediaError naming the first bad block."""
    text = srt.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    segments: list[dict[str, Any]] = []
    for number, block in enumerate(blocks, start=1):
        lines = [ln for ln in block.split("\n")]
        label = f"block {number}"
        if lines and re.fullmatch(r"\s*\d+\s*", lines[0]) and len(lines) > 1:
            label = f"block {number} (#{lines[0].strip()})"
            lines = lines[1:]
        m = _SRT_TIMING_RE.match(lines[0]) if lines else None
        if not m:
            shown = lines[0].strip()[:60] if lines else ""
            expected = "'HH:MM:SS,mmm --> HH:MM:SS,mmm'"
            raise MediaError(f"captions: SRT {label}: expected {expected}, got {shown!r}")
        g = m.groups()
        start = int(g[0]) * 3600 + int(g[1]) * 60 + int(g[2]) + int(g[3].ljust(3, "0")) / 1000
        end = int(g[4]) * 3600 + int(g[5]) * 60 + int(g[6]) + int(g[7].ljust(3, "0")) / 1000
        if end <= start:
            raise MediaError(f"captions: SRT {label}: end {end:.3f}s is not after start {start:.3f}s")
        body = _TAG_RE.sub("", "\n".join(ln.strip() for ln in lines[1:])).strip()
        if not body:
            raise MediaError(f"captions: SRT {label}: no text")
        segments.append({"start": start, "end": end, "text": body})
    if not segments:
        raise MediaError("captions: SRT has no blocks")
    return segments


def group_words(
    words: list[dict[str, Any]], *, max_words: int = 6, max_span: float = 2.5, max_gap: float = 1.0
) -> list[dict[str, Any]]:
    """Group word timings into short caption lines shown during their words' span."""
    segments: list[dict[str, Any]] = []
    group: list[tuple[str, float, float]] = []

    def flush() -> None:
        if group:
            line = " ".join(w for w, _, _ in group)
            segments.append({"start": group[0][1], "end": group[-1][2], "text": line})
            group.clear()

    for i, item in enumerate(words):
        if not isinstance(item, dict):
            raise MediaError(f"captions: words[{i}] must be an object with word, start, end")
        word = str(item.get("word", item.get("text", ""))).strip()
        try:
            start, end = float(item["start"]), float(item["end"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MediaError(f"captions: words[{i}] needs numeric start and end") from exc
        if not word:
            continue
        end = max(end, start)
        if group and (
            len(group) >= max_words
            or end - group[0][1] > max_span
            or start - group[-1][2] > max_gap
            or group[-1][0][-1:] in ".!?"
        ):
            flush()
        group.append((word, start, end))
    flush()
    return segments


def spread_text(text: str, duration: float, *, per_line: int, page_lines: int = 2) -> list[dict[str, Any]]:
    """Text shown for the whole video; text too long for one screen becomes pages of `page_lines`
    lines, each shown for a share of the duration proportional to its length."""
    lines = [ln for para in text.splitlines() for ln in textwrap.wrap(para, per_line, break_long_words=True)]
    end = max(duration, 0.001)
    if not lines:
        return []
    if len(lines) <= page_lines + 1:
        return [{"start": 0.0, "end": end, "text": "\n".join(lines)}]
    pages = ["\n".join(lines[i : i + page_lines]) for i in range(0, len(lines), page_lines)]
    total = sum(len(p) for p in pages)
    segments, start = [], 0.0
    for page in pages:
        stop = start + end * len(page) / total
        segments.append({"start": start, "end": stop, "text": page})
        start = stop
    segments[-1]["end"] = end
    return segments


def _caption_segments(
    text: str | None,
    segments: list[dict[str, Any]] | None,
    srt: str | None,
    words: list[dict[str, Any]] | None,
    duration: float,
    per_line: int,
) -> list[dict[str, Any]]:
    """Every kind of caption source as [{start, end, text}] (exactly one source allowed)."""
    given = [
        name for name, v in (("text", text), ("segments", segments), ("srt", srt), ("words", words)) if v is not None
    ]
    if len(given) != 1:
        raise MediaError(f"captions: give exactly one of text, segments, srt, words (got {given or 'none'})")
    if text is not None:
        return spread_text(text, duration, per_line=per_line)
    if srt is not None:
        return parse_srt(srt)
    if words is not None:
        return group_words(words)
    out = []
    for i, seg in enumerate(segments or []):
        try:
            start, end, body = float(seg["start"]), float(seg["end"]), str(seg["text"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MediaError(f"captions: segments[{i}] needs start, end and text") from exc
        if end <= start:
            raise MediaError(f"captions: segments[{i}]: end is not after start")
        out.append({"start": start, "end": end, "text": body})
    return out


async def captions(
    video: Path,
    out: Path,
    *,
    text: str | None = None,
    segments: list[dict[str, Any]] | None = None,
    srt: str | None = None,
    words: list[dict[str, Any]] | None = None,
    position: str = "bottom",
    font_size: int | None = None,
    color: str = "white",
    box: bool = True,
) -> None:
    """Burn text onto a video (drawtext per segment); audio copied, duration unchanged.

    Exactly one source: `text` (whole video), `segments`, `srt` (the file's text) or `words`
    (word timings, grouped into short lines). `position` is bottom, top or center.
    """
    op = "captions"
    positions = {"bottom": "h-text_h-{m}", "top": "{m}", "center": "(h-text_h)/2", "middle": "(h-text_h)/2"}
    if position not in positions:
        raise MediaError(f"{op}: unknown position {position!r} (bottom, top, center)")
    if font_size is not None and not 4 <= font_size <= 400:
        raise MediaError(f"{op}: font_size must be between 4 and 400")
    if not _COLOR_RE.fullmatch(color):
        raise MediaError(f"{op}: bad color {color!r} (a name such as white, or #RRGGBB)")
    font = filters.find_font()
    if font is None:
        raise MediaError(f"{op}: {NO_FONT}")
    limits = current_limits()
    for _, problem in caption_problems(srt=srt, text=text, segments=segments, words=words, limits=limits):
        raise MediaLimitError(f"{op}: {problem}")
    info = await probe(video)
    vstream = _first(info, "video")
    if vstream is None:
        raise MediaError(f"{op}: {video.name} has no video stream")
    duration = float(info["duration"] or 0.0)
    w, h = int(vstream["width"] or 1280), int(vstream["height"] or 720)
    work = _pixels(info) * _frames(info)
    _check_work(op, "video", encode=work, decode=work, shape=f"{w}x{h} for {_num(duration)} s")
    size = font_size or max(10, round(h / 16))
    segs = _caption_segments(text, segments, srt, words, duration, _chars_per_line(w * 0.88, size))
    if len(segs) > limits.caption_max_cues:
        given = (("text", text), ("segments", segments), ("srt", srt), ("words", words))
        source = next(name for name, value in given if value is not None)
        raise MediaLimitError(
            f"{op}: {source} makes {len(segs):,} caption cues, over the limit of "
            f"{limits.caption_max_cues:,} (REELFLOW_CAPTION_MAX_CUES)"
        )
    margin = max(4, round(h / 18))

    def write_graph(tmp: Path) -> Path:
        """One drawtext per cue, each reading its text from a file; the filtergraph script. Thousands of cues
        are thousands of files: written off the event loop."""
        filters: list[str] = []
        for i, seg in enumerate(segs):
            body = _wrap(seg["text"], box_width=w * 0.88, font_size=size, max_lines=4)
            if not body.strip():
                continue
            textfile = _write_text(tmp / f"seg{i}.txt", body)
            whole = seg["start"] <= 0 and (not duration or seg["end"] >= duration)
            filters.append(
                _drawtext(
                    textfile,
                    font=font,
                    font_size=size,
                    color=color,
                    y=positions[position].format(m=margin),
                    box=box,
                    box_color="black@0.55",
                    enable=None if whole else f"gte(t,{_num(seg['start'])})*lt(t,{_num(seg['end'])})",
                )
            )
        graph = "[0:v:0]" + ",".join([*filters, "format=yuv420p"]) + "[v]"
        return _write_text(tmp / "graph.txt", graph)

    tmp = Path(tempfile.mkdtemp(prefix="reelflow-"))
    try:
        script = await asyncio.to_thread(write_graph, tmp)
        args = [*_input(video), "-/filter_complex", str(script), "-map", "[v]", "-map", "0:a:0?"]
        audio = _first(info, "audio")
        if audio and _copyable_audio(audio["codec"], out):
            args += ["-c:a", "copy"]
        elif audio:
            args += _audio_codec_args(op, out)
        args += _video_codec_args(op, out, crf=20)
        await _ffmpeg(op, args, out)
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, tmp, True))
