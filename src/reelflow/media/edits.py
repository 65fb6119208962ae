"""Operations on existing media: merge, concat, overlay, transcode, fit an image, thumbnail."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from ..media_limits import concat_count_problem, current_limits
from .filters import _audio_codec_args, _copyable_audio, _even, _filter, _num, _video_codec_args
from .probing import probe
from .runner import (
    AUDIO_SUFFIXES,
    DEFAULT_FPS,
    IMAGE_SUFFIXES,
    MANY_INPUTS,
    VIDEO_SUFFIXES,
    MediaError,
    MediaLimitError,
    _check_work,
    _ffmpeg,
    _first,
    _frames,
    _input,
    _is_still,
    _pixels,
)
from .synthesis import _check_size

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
