"""Independent checks of media files for tests: decode with ffmpeg itself, read pixels, find children.

These do not use reelflow.media's probe, so a test can tell a wrong header from a wrong file.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


async def _run(*args: str) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err.decode("utf-8", "replace")


async def decoded_duration(path: Path, stream: str | None = None) -> float:
    """Seconds of media found by decoding the whole file (`stream` "v" or "a" decodes only that one)."""
    select = ["-map", f"0:{stream}:0"] if stream else []
    code, _, err = await _run("-i", str(path), *select, "-f", "null", "-")
    times = re.findall(r"time=\s*(\d+):(\d+):(\d+(?:\.\d+)?)", err)
    if code != 0 or not times:
        raise AssertionError(f"could not decode {path}: {err[-500:]}")
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


async def gray_band(
    path: Path, *, at: float, top: float, bottom: float, left: float = 0.0, right: float = 1.0
) -> bytes:
    """Gray pixels of one frame at `at` s, inside the box given as fractions of the frame."""
    crop = (
        f"crop=w=trunc(iw*{right - left}):h=trunc(ih*{bottom - top}):x=trunc(iw*{left}):y=trunc(ih*{top}),format=gray"
    )
    code, out, err = await _run("-ss", str(at), "-i", str(path), "-frames:v", "1", "-vf", crop, "-f", "rawvideo", "-")
    if code != 0 or not out:
        raise AssertionError(f"could not read a frame of {path} at {at}: {err[-500:]}")
    return out


def mean_abs_diff(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two equally sized gray images (0..255)."""
    assert len(a) == len(b), (len(a), len(b))
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def changed_share(a: bytes, b: bytes, *, threshold: int = 48) -> float:
    """Share of pixels (0..1) whose gray level differs by more than `threshold` between two images."""
    assert len(a) == len(b), (len(a), len(b))
    return sum(1 for x, y in zip(a, b, strict=True) if abs(x - y) > threshold) / len(a)


def ffmpeg_children(parent: int | None = None) -> list[int]:
    """Pids of ffmpeg processes (running or unreaped) whose parent is this test process (or `parent`)."""
    me = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        ppid = int(fields[1])
        if ppid == me and "ffmpeg" in comm:
            found.append(int(entry))
    return found


def proc_status(pid: int) -> dict[str, str]:
    """The fields of /proc/<pid>/status (empty when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            return {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}
    except OSError:
        return {}


def kib(field: str | None) -> int:
    """'123456 kB' -> 123456 (0 for a missing field)."""
    return int(field.split()[0]) if field else 0
