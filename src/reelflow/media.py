"""ffmpeg operations: probe, make local media, merge, concat, captions, overlay, transcode, thumbnail.

Every operation runs ffmpeg as an asyncio subprocess, so the event loop never blocks; a cancelled
operation kills its ffmpeg. Outputs are written to a hidden partial file beside `out` and renamed into
place only on success, so a failed or cancelled operation never leaves a half-written `out`.

Every run works under the caps of `media_limits` (memory, time, slots per worker) and dies with the process
that started it; every input is read through the file protocol as a plain media container, so ffmpeg reads
only the files it is handed. Operations refuse work over the local work budget before ffmpeg starts.
"""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .media_limits import MediaLimits, caption_problems, concat_count_problem, current_limits, work_message

log = logging.getLogger(__name__)

X264_PRESET = "veryfast"
"""libx264 speed preset for every H.264 encode (small machines: keep it fast)."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm"})
AUDIO_SUFFIXES = frozenset({".m4a", ".mp3", ".wav", ".ogg", ".opus"})

CONTENT_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".gif": "image/gif",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".srt": "application/x-subrip",
    ".json": "application/json",
}

FONT_CANDIDATES: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/gnu-free/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
)
"""Fonts tried in order for drawn text; without any of them, text is left out (never an error)."""

_STDERR_TAIL_LINES = 6
_CHAR_WIDTH_EM = 0.6  # a generous average glyph width of a sans font, in font sizes


class MediaError(Exception):
    """An ffmpeg operation failed; the message names the operation and ffmpeg's complaint."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped by imageio-ffmpeg (resolved once, on first use)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


FFMPEG: str
"""The ffmpeg path (module attribute resolved lazily on first access; see ffmpeg_exe())."""


def __getattr__(name: str) -> Any:
    """Module attribute `FFMPEG`: the ffmpeg path, resolved lazily."""
    if name == "FFMPEG":
        return ffmpeg_exe()
    raise AttributeError(name)


def find_font() -> str | None:
    """The first existing font of FONT_CANDIDATES, or None."""
    for candidate in FONT_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    return None


# --------------------------------------------------------------------------------------------------
# running processes
#
# Every run works under caps (see media_limits): a memory cap (RLIMIT_DATA: the private memory a process may
# map, heap and thread stacks; RLIMIT_AS would also count the 170 MB binary, its libraries and the 64 MB
# malloc arenas it only reserves, and refuses ordinary 1080p encodes at 1 GiB), a time limit, and death with
# the process that started it (PR_SET_PDEATHSIG, SIGKILL included). Runs that make an output take one of the
# worker's ffmpeg slots; probes do not (they are short, and the worker's hand-off of remote outputs must not
# wait behind long encodes).

PROBE_TIME_LIMIT_S = 60.0
"""Longest one probe run may take (a probe reads headers only)."""
THREAD_STACK_BYTES = 512 * 1024
"""Stack size of each thread of a child (its RLIMIT_STACK, which glibc uses for new threads). Stacks count
against the memory cap as reserved, and ffmpeg starts a dozen threads, plus about three per input: at the
usual 8 MB each a 200-input concat would reserve 5 GB of them. x264, libvpx and the decoders run with 128 KB."""
ENCODER_THREADS = max(1, min(os.cpu_count() or 1, 4))
"""Threads of one video encoder. x264's memory grows by ~40 MB per thread at 1080p and it would start 1.5 per
core; parallel work comes from several runs (REELFLOW_FFMPEG_CONCURRENCY) instead."""
CODE_RESIDENT_BYTES = 32 * 1024 * 1024
"""Part of the memory cap left for ffmpeg's own code and libraries, resident but not private (25-30 MB): the
private memory is capped at the rest, so the resident size stays within the cap."""
MANY_INPUTS = 4
"""Above this many inputs in one run, each decoder gets one thread (every input has its own decoder)."""
STDERR_KEEP_BYTES = 1024 * 1024
"""Most of a child's stderr kept in memory (its start, where a probe's headers are, and its last lines)."""

PROTOCOLS = "file"
"""The only protocol an input may use: ffmpeg reads no URL, and nothing but the file named."""
DEMUXERS = ",".join(
    [
        "mov", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "ogg", "mp3", "wav", "w64", "flac", "aac",
        "image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif", "gif_pipe", "bmp_pipe", "tiff_pipe", "ivf",
    ]
)  # fmt: skip
"""The containers an input may be read as (ffmpeg's demuxer names). Left out: every demuxer that opens other
files or URLs (hls, dash, concat, sdp, rtsp, imf, avisynth, ...) and everything else we never read."""

_MEMORY_FAILURE_RE = re.compile(
    r"cannot allocate memory|malloc of size \d+ failed|out of memory|bad_alloc|"
    r"pthread_create\(\) failed",
    re.IGNORECASE,
)


class MediaLimitError(MediaError):
    """An ffmpeg run was stopped by a limit (memory cap, time limit, work budget): a retry cannot help."""


def _input(path: Path, *, threads: int | None = None) -> list[str]:
    """`-i` for a file of ours: read with the file protocol only, as one of DEMUXERS (never a playlist)."""
    opts = ["-protocol_whitelist", PROTOCOLS, "-format_whitelist", DEMUXERS]
    if threads is not None:
        opts += ["-threads", str(threads)]
    return [*opts, "-i", f"file:{Path(path).absolute()}"]


class _Libc:
    """prctl from the C library, resolved once in the parent (the child between fork and exec may not import)."""

    prctl: Any = None

    @classmethod
    def load(cls) -> Any:
        if cls.prctl is None and sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                cls.prctl = libc.prctl
                cls.prctl.restype = ctypes.c_int
                cls.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        return cls.prctl


_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int, data_bytes: int, stack_bytes: int, prctl: Any) -> None:
    """Runs in the child between fork and exec: caps, then die with the parent. Touches nothing shared (no
    imports, no logging, no locks); the values were computed in the parent."""
    resource.setrlimit(resource.RLIMIT_STACK, (stack_bytes, stack_bytes))
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: nobody waits for this run
            os._exit(111)


def _preexec(limits: MediaLimits) -> Callable[[], None]:
    stack_hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    stack = THREAD_STACK_BYTES if stack_hard == resource.RLIM_INFINITY else min(THREAD_STACK_BYTES, stack_hard)
    cap = limits.ffmpeg_memory_mb * 1024 * 1024
    data = cap - min(CODE_RESIDENT_BYTES, cap // 4)
    data_hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if data_hard != resource.RLIM_INFINITY:
        data = min(data, data_hard)
    return functools.partial(_child_setup, os.getpid(), data, stack, _Libc.load())


_slots_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _slots(limits: MediaLimits) -> asyncio.Semaphore:
    """This event loop's ffmpeg slots (one loop per worker process; tests run several loops one after another)."""
    loop = asyncio.get_running_loop()
    held = _slots_by_loop.get(loop)
    if held is None or held[0] != limits.ffmpeg_concurrency:
        held = (limits.ffmpeg_concurrency, asyncio.Semaphore(limits.ffmpeg_concurrency))
        _slots_by_loop[loop] = held
    return held[1]


async def _read_bounded(stream: asyncio.StreamReader) -> str:
    """A child's stderr: all of it up to STDERR_KEEP_BYTES, else its start and its end."""
    head = bytearray()
    tail = bytearray()
    dropped = 0
    while chunk := await stream.read(65536):
        room = STDERR_KEEP_BYTES - len(head)
        if room > 0:
            head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            tail += chunk
            if len(tail) > 65536:
                dropped += len(tail) - 65536
                del tail[: len(tail) - 65536]
    text = head.decode("utf-8", "replace")
    if tail:
        gap = f"\n[... {dropped} bytes left out ...]\n" if dropped else ""
        text += gap + tail.decode("utf-8", "replace")
    return text


async def _exec(
    op: str, cmd: Sequence[str], *, check: bool = True, slot: bool = True, time_limit_s: float | None = None
) -> tuple[int, str]:
    """Run `cmd` under the caps, return (exit code, stderr); kill it if the awaiting task is cancelled.

    A run over its time limit is killed; one that failed for want of memory under its cap raises
    MediaLimitError naming the limit. `slot`: wait for one of the worker's ffmpeg slots first.
    """
    limits = current_limits()
    limit_s = time_limit_s if time_limit_s is not None else limits.ffmpeg_timeout_s
    async with _slots(limits) if slot else contextlib.nullcontext():
        try:
            # spawned from the event loop's thread: PDEATHSIG fires when the thread that forked the child ends
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_preexec(limits),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise MediaError(f"{op}: cannot run {_tool(cmd[0])}: {exc}") from exc
        assert proc.stderr is not None
        timed_out = False
        try:
            try:
                async with asyncio.timeout(limit_s):
                    text, _ = await asyncio.gather(_read_bounded(proc.stderr), proc.wait())
            except TimeoutError:
                timed_out = True
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(BaseException):
                    await asyncio.shield(proc.wait())
    tool = _tool(cmd[0])
    if timed_out:
        variable = "REELFLOW_FFMPEG_TIMEOUT_S" if time_limit_s is None else "a probe's limit"
        raise MediaLimitError(f"{op}: stopped: {tool} ran longer than its time limit of {limit_s:g} s ({variable})")
    code = proc.returncode if proc.returncode is not None else -1
    if code != 0 and _MEMORY_FAILURE_RE.search(text):
        raise MediaLimitError(f"{op}: stopped: {tool} went over its {_memory_cap(limits)}")
    if code < 0 and -code in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
        name = signal.Signals(-code).name
        raise MediaLimitError(f"{op}: stopped: {tool} crashed ({name}), most likely at its {_memory_cap(limits)}")
    if check and code != 0:
        raise MediaError(f"{op}: {tool} failed (exit {code}): {_tail(text)}")
    return code, text


def _probe_limit() -> float:
    return min(PROBE_TIME_LIMIT_S, current_limits().ffmpeg_timeout_s)


def _memory_cap(limits: MediaLimits) -> str:
    return f"memory cap of {limits.ffmpeg_memory_mb} MB (REELFLOW_FFMPEG_MEMORY_MB)"


DEFAULT_FPS = 25.0
"""Frame rate assumed for a video whose rate ffmpeg does not report (ffmpeg's own default)."""


def _frames(info: dict[str, Any], *, still_s: float = 0.0, fps: float | None = None) -> float:
    """Frames a decoder reads from a probed input: a still once (or `still_s` x `fps` when looped)."""
    if _is_still(info):
        return max(1.0, still_s * (fps or DEFAULT_FPS))
    return float(info["duration"] or 0.0) * float(fps or info["fps"] or DEFAULT_FPS)


def _pixels(info: dict[str, Any]) -> float:
    return float(info["width"] or 0) * float(info["height"] or 0)


def _check_work(op: str, param: str, *, encode: float, decode: float, shape: str) -> None:
    """Refuse (MediaLimitError, before ffmpeg starts) an operation whose work is over the local budget."""
    limits = current_limits()
    for what, amount in ((f"the output ({shape})", encode), ("decoding its inputs", decode)):
        if (message := work_message(what, amount, limits)) is not None:
            raise MediaLimitError(f"{op}: {param}: {message}")


def _tool(exe: str) -> str:
    name = Path(exe).name
    return "ffmpeg" if name.startswith("ffmpeg") else name


def _tail(stderr: str, lines: int = _STDERR_TAIL_LINES) -> str:
    """The last few meaningful lines of a tool's stderr, joined on one line (pointers dropped)."""
    stderr = re.sub(r" @ 0x[0-9a-f]+\]", "]", stderr)
    kept = [ln.strip() for ln in re.split(r"[\r\n]+", stderr) if ln.strip()]
    return " | ".join(kept[-lines:]) or "no error output"


async def _ffmpeg(op: str, args: Sequence[str], out: Path) -> None:
    """Run ffmpeg with `args` writing to a partial file, then move it onto `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.part{out.suffix}")
    cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error", *args, str(partial)]
    try:
        await _exec(op, cmd)
        if not _nonempty(partial):
            raise MediaError(f"{op}: ffmpeg produced no output")
        os.replace(partial, out)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


# --------------------------------------------------------------------------------------------------
# filtergraph helpers


def _esc(value: object) -> str:
    """Escape a filter option value for both levels (option, then filtergraph): taken literally."""
    v = str(value).replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    v = v.replace("\\", "\\\\")
    for ch in "'[],;":
        v = v.replace(ch, "\\" + ch)
    return v


def _filter(name: str, **opts: object) -> str:
    """`name=k=v:k=v` with every value escaped; None values are left out."""
    parts = [f"{k}={_esc(v)}" for k, v in opts.items() if v is not None]
    return f"{name}={':'.join(parts)}" if parts else name


def _num(x: float) -> str:
    """A float short and plain for ffmpeg expressions."""
    return f"{x:.6f}".rstrip("0").rstrip(".") or "0"


def _even(n: float) -> int:
    """Round down to an even number of at least 2 (H.264 wants even dimensions)."""
    return max(2, int(n) - int(n) % 2)


def _chars_per_line(box_width: float, font_size: int) -> int:
    return max(6, int(box_width / (font_size * _CHAR_WIDTH_EM)))


def _wrap(text: str, *, box_width: float, font_size: int, max_lines: int | None = None) -> str:
    """Wrap `text` to lines that fit `box_width` pixels at `font_size`, keeping its own line breaks."""
    per_line = _chars_per_line(box_width, font_size)
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(para, per_line, break_long_words=True) or ([""] if para else []))
    lines = [ln for ln in lines if ln.strip()] if len(lines) > 1 else lines
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, per_line - 1)].rstrip() + "…"
    return "\n".join(lines)


def _file_size(path: Path) -> int:
    return path.stat().st_size


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _drawtext(
    textfile: Path,
    *,
    font: str,
    font_size: int,
    color: str = "white",
    x: str = "(w-text_w)/2",
    y: str = "(h-text_h)/2",
    box: bool = True,
    box_color: str = "black@0.45",
    enable: str | None = None,
    alpha: str | None = None,
) -> str:
    """A drawtext filter reading its text from a file (no escaping of user text needed)."""
    return _filter(
        "drawtext",
        fontfile=font,
        textfile=str(textfile),
        expansion="none",
        fontsize=font_size,
        fontcolor=color,
        line_spacing=max(2, font_size // 5),
        text_align="C",
        x=x,
        y=y,
        borderw=0 if box else max(1, font_size // 16),
        bordercolor="black",
        box=1 if box else 0,
        boxcolor=box_color,
        boxborderw=max(4, font_size // 3),
        alpha=alpha,
        enable=enable,
    )


def _seeded(prompt: str, seed: int | None) -> bytes:
    """Bytes that depend only on (prompt, seed): the source of every 'random' choice."""
    return hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()


def _palette(digest: bytes, n: int) -> list[str]:
    """`n` harmonious colours (0xRRGGBB) derived from `digest`."""
    hue = digest[0] / 255
    spread = 0.12 + digest[1] / 255 * 0.3
    colours = []
    for i in range(n):
        h = (hue + i * spread) % 1.0
        s = 0.45 + digest[2 + i] / 255 * 0.4
        v = 0.45 + digest[6 + i] / 255 * 0.45
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        colours.append(f"0x{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return colours


def _gradient_source(digest: bytes, width: int, height: int, *, fps: int, speed: float | None = None) -> str:
    """A `gradients` source filter whose colours, geometry and type derive from `digest`."""
    n = 2 + digest[10] % 2
    colours = _palette(digest, n)
    kind = ("linear", "radial", "linear", "circular")[digest[11] % 4]
    x0 = digest[12] * width // 255
    y0 = digest[13] * height // 255
    opts: dict[str, object] = {f"c{i}": c for i, c in enumerate(colours)}
    return _filter(
        "gradients",
        s=f"{width}x{height}",
        r=fps,
        n=n,
        **opts,
        x0=x0,
        y0=y0,
        x1=width - x0,
        y1=height - y0,
        type=kind,
        speed=_num(speed) if speed is not None else 0,
        seed=int.from_bytes(digest[14:18], "big"),
    )


def _prompt_text_filter(prompt: str, tmp: Path, width: int, height: int, *, fade_in: bool = False) -> str | None:
    """drawtext for a prompt centred on a width x height frame, or None without a font or text."""
    font = find_font()
    if font is None or not prompt.strip():
        if font is None:
            log.warning("no font found; drawing no text")
        return None
    size = max(10, min(width, height) // 9)
    text = _wrap(prompt.strip(), box_width=width * 0.82, font_size=size)
    while size > 10 and len(text.splitlines()) * size * 1.3 > height * 0.7:
        size = max(10, int(size * 0.85))
        text = _wrap(prompt.strip(), box_width=width * 0.82, font_size=size)
    max_lines = max(1, int(height * 0.7 / (size * 1.3)))
    text = _wrap(prompt.strip(), box_width=width * 0.82, font_size=size, max_lines=max_lines)
    textfile = _write_text(tmp / "prompt.txt", text)
    return _drawtext(
        textfile,
        font=font,
        font_size=size,
        box_color="black@0.35",
        alpha="min(1,t/0.8)" if fade_in else None,
    )


def _video_codec_args(op: str, out: Path, *, crf: int | None = None) -> list[str]:
    """Video encoder options chosen by the output's suffix."""
    suffix = out.suffix.lower()
    if suffix == ".webm":
        quality = ["-crf", str(crf if crf is not None else 33), "-b:v", "0"]
        speed = "-deadline realtime -cpu-used 8 -row-mt 1 -pix_fmt yuv420p".split()
        return ["-c:v", "libvpx-vp9", *quality, *speed, "-threads", str(ENCODER_THREADS)]
    if suffix in (".mp4", ".mov", ".mkv"):
        quality = ["-crf", str(crf if crf is not None else 23)]
        args = ["-c:v", "libx264", "-preset", X264_PRESET, *quality, "-pix_fmt", "yuv420p"]
        args += ["-threads", str(ENCODER_THREADS)]
        if suffix != ".mkv":
            args += ["-movflags", "+faststart"]
        return args
    raise MediaError(f"{op}: unsupported video output format {suffix or '(none)'!r}")


def _audio_codec_args(op: str, out: Path, *, bitrate: str | None = None) -> list[str]:
    """Audio encoder options chosen by the output's suffix."""
    suffix = out.suffix.lower()
    if suffix in (".mp4", ".mov", ".mkv", ".m4a"):
        return ["-c:a", "aac", "-b:a", bitrate or "160k"]
    if suffix in (".webm", ".ogg", ".opus"):
        return ["-c:a", "libopus", "-b:a", bitrate or "128k"]
    if suffix == ".mp3":
        return ["-c:a", "libmp3lame", *(["-b:a", bitrate] if bitrate else ["-q:a", "4"])]
    if suffix == ".wav":
        return ["-c:a", "pcm_s16le"]
    raise MediaError(f"{op}: unsupported audio output format {suffix or '(none)'!r}")


def _copyable_audio(codec: str | None, out: Path) -> bool:
    """Whether an audio stream of `codec` can be copied as is into `out`'s container."""
    suffix = out.suffix.lower()
    if suffix in (".mp4", ".mov", ".m4a"):
        return codec in ("aac", "mp3", "alac")
    if suffix == ".mkv":
        return codec in ("aac", "mp3", "opus", "vorbis", "flac", "pcm_s16le")
    if suffix == ".webm":
        return codec in ("opus", "vorbis")
    return False


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
    _, stderr = await _exec("probe", cmd, check=False, slot=False, time_limit_s=_probe_limit())
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
    _, stderr = await _exec("probe", args, check=False, slot=False, time_limit_s=_probe_limit())
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


def _first(info: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((s for s in info["streams"] if s["type"] == kind), None)


def _is_still(info: dict[str, Any]) -> bool:
    return bool(info["has_video"]) and info["duration"] is None


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


# --------------------------------------------------------------------------------------------------
# local/image, local/video, local/audio


async def make_image(out: Path, *, prompt: str, width: int = 1280, height: int = 720, seed: int | None = None) -> None:
    """A still drawn from the prompt: a gradient seeded by (prompt, seed) with the prompt over it."""
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise MediaError(f"make-image: unsupported image format {out.suffix!r} (use .png or .jpg)")
    width, height = _check_size("make-image", width, height)
    digest = _seeded(prompt, seed)
    with tempfile.TemporaryDirectory(prefix="reelflow-") as tmp:
        chain = [_gradient_source(digest, width, height, fps=1)]
        text = _prompt_text_filter(prompt, Path(tmp), width, height)
        if text:
            chain.append(text)
        args = ["-f", "lavfi", "-i", ",".join(chain), "-frames:v", "1", "-update", "1"]
        if out.suffix.lower() != ".png":
            args += ["-q:v", "3"]
        await _ffmpeg("make-image", args, out)


async def make_video(
    out: Path,
    *,
    prompt: str | None = None,
    image: Path | None = None,
    duration: float = 5.0,
    width: int = 1280,
    height: int = 720,
    fps: int = 24,
    seed: int | None = None,
) -> None:
    """A clip of exactly `duration` s: a Ken Burns move over `image`, else a moving gradient + prompt.

    With an image the prompt is not drawn (it describes the motion for AI models). H.264 MP4, no audio.
    """
    if duration <= 0:
        raise MediaError("make-video: duration must be positive")
    if fps <= 0:
        raise MediaError("make-video: fps must be positive")
    width, height = _even(width), _even(height)
    width, height = _check_size("make-video", width, height)
    frames = max(1, round(duration * fps))
    shape = f"{width}x{height} at {fps} fps for {_num(duration)} s"
    _check_work("make-video", "duration", encode=width * height * frames, decode=0.0, shape=shape)
    digest = _seeded(prompt or (image.name if image else ""), seed)
    codec = _video_codec_args("make-video", out)
    with tempfile.TemporaryDirectory(prefix="reelflow-") as tmp:
        if image is not None:
            info = await probe(image)
            if not info["has_video"]:
                raise MediaError(f"make-video: {image.name} is not an image")
            graph = _ken_burns(digest, width, height, fps, frames)
            args = [*_input(image), "-filter_complex", graph, "-map", "[v]"]
        else:
            chain = [_gradient_source(digest, width, height, fps=fps, speed=0.006 + digest[20] / 255 * 0.02)]
            text = _prompt_text_filter(prompt or "", Path(tmp), width, height, fade_in=True)
            if text:
                chain.append(text)
            chain.append("format=yuv420p")
            args = ["-f", "lavfi", "-i", ",".join(chain)]
        args += ["-frames:v", str(frames), "-r", str(fps), "-an", *codec]
        await _ffmpeg("make-video", args, out)


def _ken_burns(digest: bytes, width: int, height: int, fps: int, frames: int) -> str:
    """A filtergraph: cover-crop the image, then zoom and pan slowly over it (zoompan)."""
    big_w, big_h = width * 2, height * 2  # zoompan rounds its crop; a larger canvas hides the jitter
    zoom_in = digest[21] % 2 == 0
    z0, z1 = (1.0, 1.22) if zoom_in else (1.22, 1.0)
    fx0, fx1 = digest[22] / 255, digest[23] / 255
    fy0, fy1 = 0.3 + digest[24] / 255 * 0.4, 0.3 + digest[25] / 255 * 0.4
    span = max(1, frames - 1)
    p = f"(0.5-0.5*cos(PI*on/{span}))"  # eased progress 0 -> 1
    zoom = f"{_num(z0)}+({_num(z1 - z0)})*{p}"
    x = f"(iw-iw/zoom)*({_num(fx0)}+({_num(fx1 - fx0)})*{p})"
    y = f"(ih-ih/zoom)*({_num(fy0)}+({_num(fy1 - fy0)})*{p})"
    return ",".join(
        [
            "[0:v:0]" + _filter("scale", w=big_w, h=big_h, force_original_aspect_ratio="increase", out_range="tv"),
            _filter("crop", w=big_w, h=big_h),
            _filter("zoompan", z=zoom, x=x, y=y, d=frames, s=f"{width}x{height}", fps=fps),
            "setsar=1,format=yuv420p[v]",
        ]
    )


def _check_size(op: str, width: int, height: int) -> tuple[int, int]:
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise MediaError(f"{op}: size {width}x{height} is out of range (1..8192)")
    return int(width), int(height)


_VOICE_ALIASES = {"female": "en+f3", "woman": "en+f3", "male": "en+m3", "man": "en+m3"}
_CHORDS = (
    (261.63, 329.63, 392.00, 493.88),  # Cmaj7
    (220.00, 261.63, 329.63, 392.00),  # Am7
    (174.61, 220.00, 261.63, 329.63),  # Fmaj7
    (196.00, 246.94, 293.66, 369.99),  # Gmaj7
)


def speech_available() -> bool:
    """Whether make_audio can speak (espeak-ng is on PATH); otherwise it makes a tone bed."""
    return shutil.which("espeak-ng") is not None


def espeak_voice(voice: str | None) -> str:
    """Map a requested voice to an espeak-ng voice: an espeak name as given, 'female'/'male', else 'en'."""
    if not voice:
        return "en"
    v = voice.strip().lower()
    if v in _VOICE_ALIASES:
        return _VOICE_ALIASES[v]
    if re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})*(\+[a-z0-9]{1,10})?", v):
        return v
    return "en"


def _tone_bed(duration: float, text: str) -> str:
    """A lavfi source: a soft chord of sine tones, gently breathing, faded in and out."""
    chord = _CHORDS[hashlib.sha256(text.encode()).digest()[0] % len(_CHORDS)]
    gains = (0.10, 0.07, 0.06, 0.04)

    def channel(detune: float) -> str:
        tones = "+".join(f"{g}*sin(2*PI*{_num(f * detune)}*t)" for g, f in zip(gains, chord, strict=True))
        return f"({tones})*(0.85+0.15*sin(2*PI*0.2*t))"

    fade = min(1.0, duration / 4)
    return ",".join(
        [
            _filter("aevalsrc", exprs=f"{channel(1.0)}|{channel(1.003)}", s=44100, d=_num(duration)),
            _filter("afade", t="in", d=_num(fade)),
            _filter("afade", t="out", st=_num(max(0.0, duration - fade)), d=_num(fade)),
        ]
    )


async def make_audio(
    out: Path, *, text: str | None = None, duration: float | None = None, voice: str | None = None
) -> None:
    """Speech with espeak-ng when installed, else a tone bed; AAC .m4a (or .wav/.mp3 by suffix).

    Length: `duration` when given (speech padded or cut to it); otherwise speech keeps its natural
    length and a tone bed lasts ~0.07 s per character of `text` (at least 1 s; 5 s without text).
    """
    if duration is not None and duration <= 0:
        raise MediaError("make-audio: duration must be positive")
    codec = _audio_codec_args("make-audio", out)
    espeak = shutil.which("espeak-ng")
    words = (text or "").strip()
    if espeak and words:
        with tempfile.TemporaryDirectory(prefix="reelflow-") as tmp:
            speech = Path(tmp) / "speech.wav"
            textfile = _write_text(Path(tmp) / "speech.txt", words)
            await _speak(espeak, espeak_voice(voice), textfile, speech)
            fit = ["-af", "apad", "-t", _num(duration)] if duration is not None else []
            await _ffmpeg("make-audio", [*_input(speech), *fit, "-ar", "44100", "-ac", "2", *codec], out)
        return
    length = duration if duration is not None else (max(1.0, 0.07 * len(words)) if words else 5.0)
    tone = ["-f", "lavfi", "-i", _tone_bed(length, words), "-t", _num(length)]
    await _ffmpeg("make-audio", [*tone, *codec], out)


async def _speak(espeak: str, voice: str, textfile: Path, wav: Path) -> None:
    """espeak-ng reads `textfile` into `wav`; an unknown voice falls back to English once."""
    try:
        await _exec("make-audio", [espeak, "-v", voice, "-w", str(wav), "-f", str(textfile)])
    except MediaError:
        if voice == "en":
            raise
        await _exec("make-audio", [espeak, "-v", "en", "-w", str(wav), "-f", str(textfile)])
    if not _nonempty(wav):
        raise MediaError("make-audio: espeak-ng produced no audio")


# --------------------------------------------------------------------------------------------------
# merge, concat


async def merge_video_audio(video: Path, audio: Path, out: Path) -> None:
    """Put `audio` under `video`: the video's length wins (audio padded with silence or cut)."""
    op = "merge-video-audio"
    vinfo, ainfo = await asyncio.gather(probe(video), probe(audio))
    vstream = _first(vinfo, "video")
    if vstream is None:
        raise MediaError(f"{op}: {video.name} has no video stream")
    if _is_still(vinfo) or not vinfo["duration"]:
        raise MediaError(f"{op}: {video.name} is a still image, not a video")
    if not ainfo["has_audio"]:
        raise MediaError(f"{op}: {audio.name} has no audio stream")
    suffix = out.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise MediaError(f"{op}: unsupported output format {suffix!r}")
    copy_ok = (vstream["codec"] == "h264" and suffix in (".mp4", ".mov", ".mkv")) or (
        vstream["codec"] in ("vp8", "vp9", "av1") and suffix in (".webm", ".mkv")
    )
    if not copy_ok:
        frames = _frames(vinfo)
        shape = f"{vstream['width']}x{vstream['height']} for {_num(vinfo['duration'])} s"
        _check_work(op, "video", encode=_pixels(vinfo) * frames, decode=_pixels(vinfo) * frames, shape=shape)
    vcodec = ["-c:v", "copy"] if copy_ok else _video_codec_args(op, out)
    faststart = ["-movflags", "+faststart"] if copy_ok and suffix in (".mp4", ".mov") else []
    args = [
        *_input(video), *_input(audio),
        "-map", "0:v:0", "-map", "1:a:0",
        *vcodec, *faststart,
        "-af", "apad", *_audio_codec_args(op, out),
        "-t", _num(vinfo["duration"]),
    ]  # fmt: skip
    await _ffmpeg(op, args, out)


async def concat(
    inputs: list[Path],
    out: Path,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: int | None = None,
    image_duration: float = 3.0,
) -> None:
    """Join clips (or stills, shown `image_duration` s each) into one MP4, re-encoded.

    Every input is scaled and letterboxed to a common size (default: the first input's) and fps
    (default: the first video's, else 24). When any input has audio, the others get silence, so the
    result has one continuous audio track; each part lasts its input's duration.
    """
    op = "concat"
    if not inputs:
        raise MediaError(f"{op}: no inputs")
    if image_duration <= 0:
        raise MediaError(f"{op}: image_duration must be positive")
    if (too_many := concat_count_problem(len(inputs), current_limits())) is not None:
        raise MediaLimitError(f"{op}: {too_many}")
    infos = await asyncio.gather(*(probe(p) for p in inputs))
    for path, info in zip(inputs, infos, strict=True):
        if not info["has_video"]:
            raise MediaError(f"{op}: {path.name} has no video stream")
    first = infos[0]
    w, h = _fit_size(first["width"], first["height"], width, height)
    rate = fps or next((round(i["fps"], 3) for i in infos if i["fps"] and not _is_still(i)), 24)
    any_audio = any(i["has_audio"] for i in infos)
    total_s = sum(image_duration if _is_still(i) else float(i["duration"] or image_duration) for i in infos)
    decoded = sum(_pixels(i) * _frames(i, still_s=image_duration, fps=rate) for i in infos)
    shape = f"{w}x{h} at {_num(rate)} fps for {_num(total_s)} s"
    _check_work(op, "videos", encode=w * h * total_s * rate, decode=decoded, shape=shape)
    args: list[str] = []
    chains: list[str] = []
    labels: list[str] = []
    for idx, (path, info) in enumerate(zip(inputs, infos, strict=True)):
        still = _is_still(info)
        dur = image_duration if still else float(info["duration"] or image_duration)
        if still:
            args += ["-loop", "1", "-framerate", _num(rate), "-t", _num(dur)]
        args += _input(path, threads=1 if len(inputs) > MANY_INPUTS else None)
        chains.append(
            f"[{idx}:v:0]"
            + ",".join(
                [
                    _filter("scale", w=w, h=h, force_original_aspect_ratio="decrease"),
                    _filter("pad", w=w, h=h, x="(ow-iw)/2", y="(oh-ih)/2", color="black"),
                    "setsar=1",
                    _filter("fps", fps=_num(rate)),
                    "format=yuv420p",
                    _filter("tpad", stop_mode="clone", stop_duration=1),
                    _filter("trim", duration=_num(dur)),
                    "setpts=PTS-STARTPTS",
                ]
            )
            + f"[v{idx}]"
        )
        labels.append(f"[v{idx}]")
        if any_audio:
            if info["has_audio"]:
                source = f"[{idx}:a:0]aresample=44100,"
            else:
                source = _filter("anullsrc", r=44100, cl="stereo") + ","
            chains.append(
                source
                + ",".join(
                    [
                        _filter("aformat", sample_fmts="fltp", sample_rates=44100, channel_layouts="stereo"),
                        "apad",
                        _filter("atrim", duration=_num(dur)),
                        "asetpts=PTS-STARTPTS",
                    ]
                )
                + f"[a{idx}]"
            )
            labels.append(f"[a{idx}]")
    n = len(inputs)
    outputs = "[v][a]" if any_audio else "[v]"
    chains.append("".join(labels) + f"concat=n={n}:v=1:a={1 if any_audio else 0}{outputs}")
    args += ["-filter_complex", ";".join(chains), "-map", "[v]"]
    if any_audio:
        args += ["-map", "[a]", *_audio_codec_args(op, out)]
    args += _video_codec_args(op, out)
    await _ffmpeg(op, args, out)


def _fit_size(src_w: int | None, src_h: int | None, width: int | None, height: int | None) -> tuple[int, int]:
    """Even output dimensions: both given, one given (aspect kept), or the source's."""
    sw, sh = src_w or 1280, src_h or 720
    if width and height:
        return _even(width), _even(height)
    if width:
        return _even(width), _even(round(width * sh / sw))
    if height:
        return _even(round(height * sw / sh)), _even(height)
    return _even(sw), _even(sh)


# --------------------------------------------------------------------------------------------------
# captions

_SRT_TIME = r"(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})"
_SRT_TIMING_RE = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s.*)?$")
_TAG_RE = re.compile(r"<[^>]+>|\{\\[^}]*\}")
_COLOR_RE = re.compile(r"[A-Za-z]+(@[0-9.]+)?|(#|0x)[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?(@[0-9.]+)?")


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
    font = find_font()
    if font is None:
        log.warning("captions: no font found; the video is re-encoded without captions")

    def write_graph(tmp: Path) -> Path:
        """One drawtext per cue, each reading its text from a file; the filtergraph script. Thousands of cues
        are thousands of files: written off the event loop."""
        filters: list[str] = []
        for i, seg in enumerate(segs if font else []):
            body = _wrap(seg["text"], box_width=w * 0.88, font_size=size, max_lines=4)
            if not body.strip():
                continue
            textfile = _write_text(tmp / f"seg{i}.txt", body)
            whole = seg["start"] <= 0 and (not duration or seg["end"] >= duration)
            filters.append(
                _drawtext(
                    textfile,
                    font=font or "",
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


# --------------------------------------------------------------------------------------------------
# overlay, transcode, thumbnail

_OVERLAY_POSITIONS = {
    "top-left": ("{m}", "{m}"),
    "top-right": ("main_w-overlay_w-{m}", "{m}"),
    "bottom-left": ("{m}", "main_h-overlay_h-{m}"),
    "bottom-right": ("main_w-overlay_w-{m}", "main_h-overlay_h-{m}"),
    "center": ("(main_w-overlay_w)/2", "(main_h-overlay_h)/2"),
}


async def overlay(
    base: Path,
    over: Path,
    out: Path,
    *,
    position: str = "top-right",
    x: int | None = None,
    y: int | None = None,
    scale: float | None = None,
    start: float = 0.0,
    end: float | None = None,
    opacity: float = 1.0,
    margin: int = 16,
) -> None:
    """Lay an image or video over `base` between `start` and `end`; base duration and audio kept.

    `scale` is the overlay's width as a fraction of the base width; `x`/`y` override `position`.
    A video overlay starts playing at `start` and disappears when it ends; an image stays.
    """
    op = "overlay"
    key = position.replace("_", "-").lower()
    if key not in _OVERLAY_POSITIONS:
        raise MediaError(f"{op}: unknown position {position!r} ({', '.join(_OVERLAY_POSITIONS)})")
    if not 0.0 <= opacity <= 1.0:
        raise MediaError(f"{op}: opacity must be between 0 and 1")
    if scale is not None and not 0.0 < scale <= 4.0:
        raise MediaError(f"{op}: scale must be in (0, 4]")
    if start < 0 or (end is not None and end <= start):
        raise MediaError(f"{op}: need 0 <= start < end")
    binfo, oinfo = await asyncio.gather(probe(base), probe(over))
    bstream = _first(binfo, "video")
    if bstream is None or _is_still(binfo):
        raise MediaError(f"{op}: base {base.name} is not a video")
    if not oinfo["has_video"]:
        raise MediaError(f"{op}: {over.name} is neither an image nor a video")
    still = _is_still(oinfo)
    bw = int(bstream["width"] or 1280)
    base_frames = _frames(binfo)
    over_frames = 1.0 if still else min(_frames(oinfo), base_frames)
    _check_work(
        op,
        "video",
        encode=_pixels(binfo) * base_frames,
        decode=_pixels(binfo) * base_frames + _pixels(oinfo) * over_frames,
        shape=f"{bstream['width']}x{bstream['height']} for {_num(binfo['duration'] or 0)} s",
    )
    ochain = ["format=rgba"]
    if not still:
        ochain.append(f"setpts=PTS-STARTPTS+{_num(start)}/TB")
    if scale is not None:
        ochain.append(_filter("scale", w=max(2, round(bw * scale)), h=-1))
    if opacity < 1.0:
        ochain.append(_filter("colorchannelmixer", aa=_num(opacity)))
    px, py = _OVERLAY_POSITIONS[key]
    enable = f"between(t,{_num(start)},{_num(end)})" if end is not None else f"gte(t,{_num(start)})"
    ov = _filter(
        "overlay",
        x=str(x) if x is not None else px.format(m=margin),
        y=str(y) if y is not None else py.format(m=margin),
        eof_action="repeat" if still else "pass",
        enable=None if (start <= 0 and end is None) else enable,
    )
    graph = f"[1:v:0]{','.join(ochain)}[ov];[0:v:0][ov]{ov},format=yuv420p[v]"
    args = [*_input(base), *_input(over), "-filter_complex", graph, "-map", "[v]", "-map", "0:a:0?"]
    audio = _first(binfo, "audio")
    if audio and _copyable_audio(audio["codec"], out):
        args += ["-c:a", "copy"]
    elif audio:
        args += _audio_codec_args(op, out)
    args += _video_codec_args(op, out, crf=20)
    if binfo["duration"]:
        args += ["-t", _num(binfo["duration"])]
    await _ffmpeg(op, args, out)


async def transcode(
    input: Path,
    out: Path,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: int | None = None,
    crf: int | None = None,
    audio_bitrate: str | None = None,
) -> None:
    """Re-encode to the format of `out`'s suffix (.mp4/.mov/.mkv h264+aac, .webm vp9+opus, .gif,
    .m4a, .mp3, .wav); one of width/height keeps the aspect ratio; both letterbox to that size."""
    op = "transcode"
    suffix = out.suffix.lower()
    info = await probe(input)
    if audio_bitrate is not None and not re.fullmatch(r"\d{1,4}k?", audio_bitrate):
        raise MediaError(f"{op}: bad audio_bitrate {audio_bitrate!r} (e.g. 128k)")
    if crf is not None and not 0 <= crf <= 63:
        raise MediaError(f"{op}: crf must be between 0 and 63")
    if suffix in AUDIO_SUFFIXES:
        if not info["has_audio"]:
            raise MediaError(f"{op}: {input.name} has no audio stream")
        args = [*_input(input), "-map", "0:a:0", "-vn", *_audio_codec_args(op, out, bitrate=audio_bitrate)]
        await _ffmpeg(op, args, out)
        return
    if suffix not in VIDEO_SUFFIXES and suffix != ".gif":
        raise MediaError(f"{op}: unsupported output format {suffix or '(none)'!r}")
    if not info["has_video"]:
        raise MediaError(f"{op}: {input.name} has no video stream")
    out_w, out_h = _fit_size(info["width"], info["height"], width, height)
    out_fps = fps or (min(12, round(info["fps"] or 12)) if suffix == ".gif" else info["fps"] or DEFAULT_FPS)
    seconds = float(info["duration"] or 0.0)
    _check_work(
        op,
        "input",
        encode=out_w * out_h * max(1.0, seconds * out_fps),
        decode=_pixels(info) * max(1.0, _frames(info)),
        shape=f"{out_w}x{out_h} at {_num(out_fps)} fps for {_num(seconds)} s",
    )
    chain: list[str] = []
    if fps or suffix == ".gif":
        chain.append(_filter("fps", fps=fps or min(12, round(info["fps"] or 12))))
    if width and height:
        w, h = (_even(width), _even(height)) if suffix != ".gif" else (width, height)
        chain += [
            _filter("scale", w=w, h=h, force_original_aspect_ratio="decrease"),
            _filter("pad", w=w, h=h, x="(ow-iw)/2", y="(oh-ih)/2"),
        ]
    elif width or height:
        chain.append(_filter("scale", w=width or -2, h=height or -2, flags="lanczos"))
    elif suffix != ".gif":
        chain.append(_filter("scale", w="trunc(iw/2)*2", h="trunc(ih/2)*2"))
    chain.append("setsar=1")
    if suffix == ".gif":
        graph = (
            f"[0:v:0]{','.join(chain)},split[a][b];[a]palettegen=stats_mode=diff[p];"
            "[b][p]paletteuse=dither=bayer:bayer_scale=4[v]"
        )
        await _ffmpeg(op, [*_input(input), "-filter_complex", graph, "-map", "[v]", "-loop", "0"], out)
        return
    chain.append("format=yuv420p")
    args = [*_input(input), "-filter_complex", f"[0:v:0]{','.join(chain)}[v]", "-map", "[v]"]
    if info["has_audio"]:
        args += ["-map", "0:a:0", *_audio_codec_args(op, out, bitrate=audio_bitrate)]
    args += _video_codec_args(op, out, crf=crf)
    await _ffmpeg(op, args, out)


async def fit_image(source: Path, out: Path, width: int, height: int) -> None:
    """Scale and centre-crop an image (or a video's first frame) to exactly width x height."""
    _check_size("fit-image", width, height)
    graph = ",".join(
        [
            _filter("scale", w=width, h=height, force_original_aspect_ratio="increase"),
            _filter("crop", w=width, h=height),
            "setsar=1",
        ]
    )
    await _ffmpeg("fit-image", [*_input(source), "-vf", graph, "-frames:v", "1", "-update", "1"], out)


async def thumbnail(video: Path, out: Path, *, at: float | None = None, width: int | None = None) -> None:
    """One frame as JPEG or PNG, at `at` s (default a third of the way in; 0 for clips under 1 s)."""
    op = "thumbnail"
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise MediaError(f"{op}: unsupported image format {out.suffix!r} (use .jpg or .png)")
    if width is not None and not 1 <= width <= 8192:
        raise MediaError(f"{op}: width must be between 1 and 8192")
    info = await probe(video)
    if not info["has_video"]:
        raise MediaError(f"{op}: {video.name} has no video stream")
    duration = info["duration"]
    if not duration or _is_still(info):
        when = 0.0
    else:
        when = (duration / 3 if duration >= 1.0 else 0.0) if at is None else at
        if when < 0:
            raise MediaError(f"{op}: at must not be negative")
        frame = 1 / (info["fps"] or 25)
        when = max(0.0, min(when, duration - 2 * frame))
    args = ["-ss", _num(when), *_input(video), "-map", "0:v:0", "-frames:v", "1", "-update", "1"]
    if width:
        args += ["-vf", _filter("scale", w=width, h=-2 if width % 2 == 0 else -1)]
    if out.suffix.lower() != ".png":
        args += ["-q:v", "2"]
    await _ffmpeg(op, args, out)
