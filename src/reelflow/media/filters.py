"""Filtergraph helpers shared by the operations: escaping, drawn text and its font, gradients, codec arguments."""

from __future__ import annotations

import colorsys
import hashlib
import os
import textwrap
from pathlib import Path

from .runner import ENCODER_THREADS, X264_PRESET, MediaError, log

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
"""Fonts tried in order for drawn text; without any of them, a prompt is left out of a generated image or video,
and a captions job fails (NO_FONT)."""

NO_FONT = (
    "no font to draw captions with: install one (Debian/Ubuntu: apt-get install fonts-dejavu-core; Fedora: "
    "dejavu-sans-fonts; Alpine: font-dejavu) so that one of the files in reelflow.media.FONT_CANDIDATES exists, "
    "e.g. /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
)
"""Why a captions job fails on a machine without a usable font (permanently: retrying cannot help)."""

_CHAR_WIDTH_EM = 0.6  # a generous average glyph width of a sans font, in font sizes


def find_font() -> str | None:
    """The first existing font of FONT_CANDIDATES, or None."""
    for candidate in FONT_CANDIDATES:
        if os.path.isfile(candidate):
            return candidate
    return None


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
    """A `gradients` source filter whose colours, geometry and type derive from `digest`.

    A `circular` (conic) gradient runs its colours once around the centre (x0, y0) and jumps from the last back
    to the first along one ray: a hard seam line with a colour break, running to the frame's edge (the right
    edge when x0 lies near it). Its palette is therefore closed (the first colour again at the end), so both
    sides of that ray have the same colour."""
    n = 2 + digest[10] % 2
    colours = _palette(digest, n)
    kind = ("linear", "radial", "linear", "circular")[digest[11] % 4]
    if kind == "circular":
        colours.append(colours[0])
        n += 1
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
