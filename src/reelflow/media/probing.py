"""What a file holds: ffmpeg's probe of its streams, and judging bytes before (and besides) ffmpeg."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from . import runner
from .runner import MediaError, _file_size, _input, _is_still, _probe_limit, _tail, ffmpeg_exe

# --------------------------------------------------------------------------------------------------
# probe

_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"^\s*Duration: (?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)", re.M)
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*?: (Video|Audio): (.*)$", re.M)
_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def _split_top(desc: str) -> list[str]:
    """Split a stream description on commas outside parentheses and brackets."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in desc:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _rate(parts: list[str], unit: str) -> float | None:
    for p in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(k?) " + unit, p)
        if m:
            return float(m.group(1)) * (1000 if m.group(2) else 1)
    return None


def _parse_stream(kind: str, desc: str) -> dict[str, Any] | None:
    """One `Stream #0:N: Video|Audio: ...` description as a dict (None for cover art)."""
    if "(attached pic)" in desc:
        return None
    parts = _split_top(desc)
    codec = parts[0].split()[0] if parts else "unknown"
    if kind == "Video":
        width = height = None
        for p in parts[1:]:
            m = re.match(r"(\d+)x(\d+)(?:\s|$)", p)
            if m:
                width, height = int(m.group(1)), int(m.group(2))
                break
        fps = _rate(parts, "fps") or _rate(parts, "tbr")
        return {"type": "video", "codec": codec, "width": width, "height": height, "fps": fps}
    sample_rate = _rate(parts, "Hz")
    channels = None
    for p in parts[1:]:
        layout = p.split("(")[0].strip()
        if layout in _CHANNELS:
            channels = _CHANNELS[layout]
            break
        m = re.fullmatch(r"(\d+) channels(?: \(.*\))?", p)
        if m:
            channels = int(m.group(1))
            break
    return {
        "type": "audio",
        "codec": codec,
        "sample_rate": int(sample_rate) if sample_rate else None,
        "channels": channels,
    }


def parse_probe(stderr: str, size: int) -> dict[str, Any] | None:
    """Parse the stderr of `ffmpeg -i FILE` into probe()'s dict; None when it shows no media."""
    m_input = _INPUT_RE.search(stderr)
    if not m_input:
        return None
    header = stderr[m_input.start() :]
    streams = [s for kind, desc in _STREAM_RE.findall(header) if (s := _parse_stream(kind, desc))]
    if not streams:
        return None
    m_dur = _DURATION_RE.search(header)
    duration = None
    if m_dur and m_dur.group(1) is not None:
        duration = int(m_dur.group(1)) * 3600 + int(m_dur.group(2)) * 60 + float(m_dur.group(3))
    fmt = m_input.group(1)
    video = next((s for s in streams if s["type"] == "video"), None)
    if video is not None and (duration is None or fmt == "image2" or fmt.endswith("_pipe")):
        duration = None  # a still image (the image2 demuxer reports one frame's duration)
        video["fps"] = None
    return {
        "duration": duration,
        "size": size,
        "format": fmt,
        "width": video["width"] if video else None,
        "height": video["height"] if video else None,
        "fps": video["fps"] if video else None,
        "streams": streams,
        "has_video": video is not None,
        "has_audio": any(s["type"] == "audio" for s in streams),
    }


async def probe(path: Path) -> dict[str, Any]:
    """Duration, size, container and streams of a media file (MediaError when it is not media)."""
    try:
        size = _file_size(path)
    except OSError as exc:
        raise MediaError(f"probe: cannot read {path.name}: {exc.strerror or exc}") from exc
    cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", *_input(path)]
    _, stderr = await runner._exec("probe", cmd, check=False, slot=False, time_limit_s=_probe_limit())
    info = parse_probe(stderr, size)
    if info is None:
        lines = [ln for ln in stderr.splitlines() if "output file" not in ln]
        why = _why_not_media(lines).replace(f"file:{path}", path.name).replace(str(path), path.name)
        raise MediaError(f"probe: {path.name} is not a media file: {why}")  # no worker paths in job errors
    return info


def _why_not_media(lines: list[str]) -> str:
    if any("not on whitelist" in line for line in lines):
        return (
            "its format is not one of the containers reelflow reads (playlists and other formats that "
            "open further files or URLs are refused)"
        )
    return _tail("\n".join(lines), 2)


_INPUT_SPLIT_RE = re.compile(r"^Input #(\d+), ", re.MULTILINE)


async def probe_many(paths: list[Path]) -> list[dict[str, Any] | MediaError]:
    """`probe` for several files with one ffmpeg run (each run costs ~10 ms of start-up alone): ffmpeg
    opens every input and prints each one's header. A file it cannot open stops it there; that file and
    the ones after it are probed alone."""
    if len(paths) <= 1:
        return [await _probe_or_error(p) for p in paths]
    args = [ffmpeg_exe(), "-y", "-hide_banner", "-nostdin"]
    for path in paths:
        args += _input(path)
    _, stderr = await runner._exec("probe", args, check=False, slot=False, time_limit_s=_probe_limit())
    marks = list(_INPUT_SPLIT_RE.finditer(stderr))
    sections: dict[int, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(stderr)
        n = int(mark.group(1))  # renumbered as input 0, the form parse_probe reads
        sections[n] = re.sub(rf"^(\s*)(Input|Stream) #{n}([,:])", r"\1\2 #0\3", stderr[mark.start() : end], flags=re.M)
    results: list[dict[str, Any] | MediaError] = []
    for i, path in enumerate(paths):
        info = None
        if i in sections and (i + 1 in sections or i == len(paths) - 1):  # a complete header
            try:
                info = parse_probe(sections[i], _file_size(path))
            except OSError:
                info = None
        results.append(info if info is not None else await _probe_or_error(path))
    return results


async def _probe_or_error(path: Path) -> dict[str, Any] | MediaError:
    try:
        return await probe(path)
    except MediaError as exc:
        return exc


class ProbeBatcher:
    """Probes files that many coroutines ask about at once in shared ffmpeg runs (up to `batch` files each,
    `parallel` runs at a time). A lone request waits at most `linger_s` for company."""

    def __init__(self, batch: int = 32, parallel: int = 2, linger_s: float = 0.005) -> None:
        self.batch = batch
        self.linger_s = linger_s
        self._pending: list[tuple[Path, asyncio.Future[dict[str, Any]]]] = []
        self._runs = asyncio.Semaphore(parallel)
        self._flushing = False

    async def probe(self, path: Path) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((path, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_later(self.linger_s, self._start_flush)
        return await fut

    def _start_flush(self) -> None:
        self._flushing = False
        while self._pending:
            group, self._pending = self._pending[: self.batch], self._pending[self.batch :]
            task = asyncio.ensure_future(self._run(group))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _run(self, group: list[tuple[Path, asyncio.Future[dict[str, Any]]]]) -> None:
        async with self._runs:
            try:
                results = await probe_many([p for p, _ in group])
            except Exception as exc:  # ffmpeg could not even start: every caller hears it
                results = [MediaError(f"probe: {exc}") for _ in group]
        for (_, fut), result in zip(group, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, MediaError):
                fut.set_exception(result)
            else:
                fut.set_result(result)


# --------------------------------------------------------------------------------------------------
# judging bytes: what a file is, before (and besides) what ffmpeg makes of it

_XML_START = rb"\A(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<(?:\w+:)?"
_INDIRECT: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"\A#EXTM3U"), "an HLS playlist (#EXTM3U)"),
    (re.compile(rb"\A#EXT-X-"), "an HLS playlist (#EXT-X-)"),
    (re.compile(rb"\Affconcat version", re.I), "an ffconcat list"),
    (re.compile(rb"\Av=0\s*[\r\n]"), "an SDP session description"),
    (re.compile(rb"\A(?:RTSP|RTP)/\d", re.I), "an RTSP/RTP message"),
    (re.compile(rb"\A\[playlist\]", re.I), "a PLS playlist"),
    (re.compile(_XML_START + rb"MPD\b", re.S), "a DASH manifest (MPD)"),
    (re.compile(_XML_START + rb"(?:CompositionPlaylist|AssetMap)\b", re.S), "an IMF composition playlist"),
    (re.compile(_XML_START + rb"(?:smil|asx|playlist)\b", re.S | re.I), "a playlist (SMIL, ASX or XSPF)"),
    (re.compile(rb"\A(?:#\s*)?(?:Import|LoadPlugin|AviSource|DirectShowSource|FFmpegSource\w*)\s*\(", re.I),
     "an AviSynth script"),
)  # fmt: skip
"""Formats whose reader opens other files or URLs (ffmpeg's hls, dash, concat, sdp, rtsp, imf, avisynth
demuxers and the playlists of other players), recognised by their first bytes whatever the name says."""


def indirect_format(head: bytes) -> str | None:
    """What `head` (a file's first bytes) is when it is a playlist or another indirect format, else None."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16: look at it as ASCII
        text = text[2:].replace(b"\x00", b"").lstrip()
    for pattern, name in _INDIRECT:
        if pattern.match(text, 0, 65536):
            return name
    return None


def looks_like_text(head: bytes) -> bool:
    """Whether a file starting with `head` is text (UTF-8, no NUL byte); media containers are binary."""
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample is fine
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def kinds_of(info: dict[str, Any]) -> frozenset[str]:
    """What a probed file is: {'image'}, {'video'}, {'audio'}; a GIF is both an image and a video."""
    if info["has_video"]:
        if _is_still(info):
            return frozenset({"image"})
        if str(info.get("format") or "").split(",")[0] in ("gif", "gif_pipe", "webp_pipe"):
            return frozenset({"image", "video"})
        return frozenset({"video"})
    if info["has_audio"]:
        return frozenset({"audio"})
    return frozenset()
