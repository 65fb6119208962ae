"""What a file holds: ffmpeg's probe of its streams, and judging bytes before (and besides) ffmpeg."""

from __future__ import annotations

import asyncio
import importlib
import re
import struct
from pathlib import Path
from typing import Any

from ..media_limits import current_limits
from . import runner
from .runner import (
    DEMUXERS,
    PROTOCOLS,
    MediaError,
    _file_size,
    _input,
    _is_still,
    _probe_limit,
    _tail,
    ffmpeg_exe,
)

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
    return _info(m_input.group(1), duration, streams, size)


def _info(fmt: str, duration: float | None, streams: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """probe()'s dict from a container's format name, its duration and its video and audio streams."""
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


# --------------------------------------------------------------------------------------------------
# in-process probe: PyAV's FFmpeg libraries read the header in this process (a thread of it), saving the
# ~10 ms of CPU an ffmpeg process costs to start. The values are the ones `ffmpeg -i` prints, rounded as it
# prints them, so both ways give the same dict. Whatever PyAV cannot open goes to the ffmpeg run, which
# words the error; without PyAV (or with REELFLOW_PROBE_IN_PROCESS=false) every probe is an ffmpeg run.

_AV_UNLOADED: Any = object()
_av_module: Any = _AV_UNLOADED
_ATTACHED_PIC = 0x0400
"""AV_DISPOSITION_ATTACHED_PIC: cover art, which `ffmpeg -i` marks "(attached pic)" and probe() leaves out."""
_INT64_MAX = 2**63 - 1


def _pyav() -> Any | None:
    """The `av` module when probes may run in this process, else None (imported once, on first use)."""
    global _av_module
    if not current_limits().probe_in_process:
        return None
    if _av_module is _AV_UNLOADED:
        try:
            _av_module = importlib.import_module("av")
        except Exception:  # not installed, or its libraries cannot load: ffmpeg runs it is
            _av_module = None
    return _av_module


async def _pyav_off_loop() -> Any | None:
    """`_pyav()` for the event loop: the first time, PyAV is imported in a thread (its libraries take ~60 ms of
    CPU to load), so neither a worker's start nor its event loop pays for it before a probe needs it. A worker
    whose jobs store no media never loads it: that is ~17 MB of resident memory less."""
    if _av_module is _AV_UNLOADED and current_limits().probe_in_process:
        return await asyncio.to_thread(_pyav)
    return _pyav()


def in_process_available() -> bool:
    """Whether probes run in this process (PyAV installed, REELFLOW_PROBE_IN_PROCESS on)."""
    return _pyav() is not None


def _printed_rate(rate: Any) -> float | None:
    """A stream rate as `ffmpeg -i` prints it ("23.98 fps", "24 tbr", "90k tbn"), read back as probe() reads
    it; None when ffmpeg prints none (a zero numerator or denominator)."""
    if rate is None or not rate.numerator or not rate.denominator:
        return None
    d = rate.numerator / rate.denominator
    v = round(struct.unpack("f", struct.pack("f", d * 100))[0])  # lrintf(d * 100): float, half to even
    if v == 0:
        return float(f"{d:1.4f}")
    if v % 100:
        return float(f"{d:3.2f}")
    if v % (100 * 1000):
        return float(f"{d:1.0f}")
    return float(f"{d / 1000:1.0f}") * 1000


def _printed_duration(us: int | None) -> float | None:
    """A container's duration (microseconds) as `ffmpeg -i` prints it (HH:MM:SS.cc, to the nearest 1/100 s)
    and probe() reads it back; None for N/A (and for a negative one, which probe() does not read)."""
    if us is None:
        return None
    d = us + (5000 if us <= _INT64_MAX - 5000 else 0)
    if d < 0:
        return None
    secs, rest = divmod(d, 1_000_000)
    mins, secs = divmod(secs, 60)
    hours, mins = divmod(mins, 60)
    return hours * 3600 + mins * 60 + float(f"{secs:02d}.{rest * 100 // 1_000_000:02d}")


def _channels(layout_name: str) -> int | None:
    """Channels of an audio stream from its layout's description, as probe() reads `ffmpeg -i`'s."""
    name = layout_name.split("(")[0].strip()
    if name in _CHANNELS:
        return _CHANNELS[name]
    m = re.fullmatch(r"(\d+) channels(?: \(.*\))?", layout_name)
    return int(m.group(1)) if m else None


def _describe(container: Any, size: int) -> dict[str, Any] | None:
    streams: list[dict[str, Any]] = []
    for st in container.streams:
        if st.type not in ("video", "audio") or int(st.disposition) & _ATTACHED_PIC:
            continue
        cc = st.codec_context
        codec = str(cc.codec.canonical_name)  # avcodec_get_name(codec id), as ffmpeg prints it
        if st.type == "video":
            width, height = (int(cc.width), int(cc.height)) if cc.width else (None, None)
            fps = _printed_rate(st.average_rate) or _printed_rate(st.base_rate)
            streams.append({"type": "video", "codec": codec, "width": width, "height": height, "fps": fps})
        else:
            streams.append(
                {
                    "type": "audio",
                    "codec": codec,
                    "sample_rate": int(cc.sample_rate) or None,
                    "channels": _channels(str(cc.layout.name)),
                }
            )
    if not streams:
        return None
    return _info(str(container.format.name), _printed_duration(container.duration), streams, size)


def probe_in_process(path: Path, time_limit_s: float | None = None) -> dict[str, Any] | None:
    """probe()'s dict for `path`, read by PyAV in this process (blocking: run it in a thread); None when PyAV
    is not there or cannot read the file as media (an ffmpeg run then probes it and words the error). The
    file is opened as `ffmpeg -i` opens it: the file protocol only, as one of runner.DEMUXERS."""
    av = _pyav()
    if av is None:
        return None
    try:
        size = _file_size(path)
        options = {"protocol_whitelist": PROTOCOLS, "format_whitelist": DEMUXERS}
        limit = _probe_limit() if time_limit_s is None else time_limit_s
        with av.open(f"file:{Path(path).absolute()}", options=options, timeout=limit) as container:
            return _describe(container, size)
    except Exception:  # PyAV's errors, or a value it did not have: the ffmpeg run decides
        return None


async def probe(path: Path) -> dict[str, Any]:
    """Duration, size, container and streams of a media file (MediaError when it is not media)."""
    if await _pyav_off_loop() is not None and (info := await asyncio.to_thread(probe_in_process, path, _probe_limit())):
        return info
    return await _probe_ffmpeg(path)


async def _probe_ffmpeg(path: Path) -> dict[str, Any]:
    """probe() by an ffmpeg run under the caps."""
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
    if await _pyav_off_loop() is not None:
        return [await _probe_or_error(p) for p in paths]
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
        results.append(info if info is not None else await _probe_or_error(path, ffmpeg=True))
    return results


async def _probe_or_error(path: Path, *, ffmpeg: bool = False) -> dict[str, Any] | MediaError:
    try:
        return await (_probe_ffmpeg(path) if ffmpeg else probe(path))
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

    def quick(self, path: Path) -> dict[str, Any] | None:
        """probe()'s answer when it can be had in this process (blocking: call it from a thread), else None."""
        return probe_in_process(path)

    async def probe(self, path: Path) -> dict[str, Any]:
        if await _pyav_off_loop() is not None:  # no process to share: each file is read at once, in a thread
            return await probe(path)
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
