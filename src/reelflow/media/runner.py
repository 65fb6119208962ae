"""Running ffmpeg (and espeak-ng) under the caps of `media_limits`: memory, time, slots, death with the parent.

Outputs are written to a hidden partial file beside `out` and renamed into place only on success, so a failed or
cancelled run never leaves a half-written `out`. Every input is read through the file protocol as a plain media
container, so ffmpeg reads only the files it is handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import functools
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..media_limits import MediaLimits, current_limits, work_message

log = logging.getLogger(__package__)

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


_STDERR_TAIL_LINES = 6

tool_log: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "reelflow_tool_log", default=None
)
"""Where the runs of this context are told, when set (the local provider sets it to the job's log): each
command, shortened, then how it ended, with the last lines of its stderr when it failed."""
LOG_TAIL_LINES = 20
_ARG_KEEP = 160
_COMMAND_KEEP = 1200


def command_summary(cmd: Sequence[str]) -> str:
    """A command as one readable line: paths by their file name, long arguments (filter graphs) shortened."""
    parts: list[str] = []
    for i, arg in enumerate(cmd):
        scheme, _, rest = arg.partition(":") if arg.startswith("file:") else ("", "", arg)
        if i == 0:
            text = _tool(arg)
        elif rest.startswith("/") and "\n" not in rest:  # a file: its name is enough (and hides our folders)
            text = f"{scheme}:{Path(rest).name}" if scheme else Path(rest).name
        else:
            text = arg
        if len(text) > _ARG_KEEP:
            text = f"{text[:_ARG_KEEP]}…[{len(text) - _ARG_KEEP} more chars]"
        parts.append(text if text and not re.search(r"[\s'\"]", text) else repr(text))
    line = " ".join(parts)
    return line if len(line) <= _COMMAND_KEEP else f"{line[:_COMMAND_KEEP]}…[{len(line) - _COMMAND_KEEP} more chars]"


def _tell(line: str) -> None:
    sink = tool_log.get()
    if sink is not None:
        sink(line)


class MediaError(Exception):
    """An ffmpeg operation failed; the message names the operation and ffmpeg's complaint."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped by imageio-ffmpeg (resolved once, on first use)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _first(info: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((s for s in info["streams"] if s["type"] == kind), None)


def _is_still(info: dict[str, Any]) -> bool:
    return bool(info["has_video"]) and info["duration"] is None


def _file_size(path: Path) -> int:
    return path.stat().st_size


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


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
    told = check and tool_log.get() is not None  # probes (check=False) fail by design: not worth a line
    if told:
        _tell(f"$ {command_summary(cmd)}")
    began = time.monotonic()
    try:
        code, text = await _run_capped(op, cmd, limits, limit_s, slot=slot, time_limit_s=time_limit_s)
    except MediaError as exc:
        if told:
            _tell(f"{_tool(cmd[0])}: {exc}")
        raise
    if not told:
        pass
    elif code != 0:
        kept = [ln.rstrip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
        tail = kept[-LOG_TAIL_LINES:]
        omitted = f" ({len(kept) - len(tail)} earlier lines not shown)" if len(kept) > len(tail) else ""
        _tell(f"{_tool(cmd[0])} exited with {code} after {time.monotonic() - began:.2f} s; stderr{omitted}:")
        for ln in tail:
            _tell(f"  {ln}")
    else:
        _tell(f"{_tool(cmd[0])} done in {time.monotonic() - began:.2f} s")
    if check and code != 0:
        raise MediaError(f"{op}: {_tool(cmd[0])} failed (exit {code}): {_tail(text)}")
    return code, text


async def _run_capped(
    op: str, cmd: Sequence[str], limits: MediaLimits, limit_s: float, *, slot: bool, time_limit_s: float | None
) -> tuple[int, str]:
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
