"""local/image, local/video, local/audio: media drawn with ffmpeg (and spoken by espeak-ng where installed)."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from pathlib import Path

from . import runner
from .filters import (
    _audio_codec_args,
    _even,
    _filter,
    _gradient_source,
    _num,
    _prompt_text_filter,
    _seeded,
    _video_codec_args,
    _write_text,
)
from .probing import probe
from .runner import IMAGE_SUFFIXES, MediaError, _check_work, _ffmpeg, _input, _nonempty

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
        await runner._exec("make-audio", [espeak, "-v", voice, "-w", str(wav), "-f", str(textfile)])
    except MediaError:
        if voice == "en":
            raise
        await runner._exec("make-audio", [espeak, "-v", "en", "-w", str(wav), "-f", str(textfile)])
    if not _nonempty(wav):
        raise MediaError("make-audio: espeak-ng produced no audio")
