"""reelflow.media on real (small) files: every operation's output is probed and decoded."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from mediacheck import FFMPEG, changed_share, decoded_duration, ffmpeg_children, gray_band, mean_abs_diff
from reelflow import media
from reelflow.media import MediaError
from reelflow.media_limits import use_limits

W, H = 320, 180


@dataclass(frozen=True)
class Clips:
    """Small inputs shared by the module's tests (made once)."""

    still: Path  # 320x180 png
    still_jpg: Path  # 160x160 jpg
    silent: Path  # 2.0 s, 320x180, 24 fps, no audio
    moving: Path  # 1.5 s Ken Burns over `still`, 12 fps
    tone_long: Path  # 3.5 s
    tone_short: Path  # 1.0 s
    talkie: Path  # 2.0 s video with an aac track


async def _make_clips(d: Path) -> Clips:
    c = Clips(
        still=d / "still.png",
        still_jpg=d / "still.jpg",
        silent=d / "silent.mp4",
        moving=d / "moving.mp4",
        tone_long=d / "long.m4a",
        tone_short=d / "short.m4a",
        talkie=d / "talkie.mp4",
    )
    await asyncio.gather(
        media.make_image(c.still, prompt="A lighthouse at dusk", width=W, height=H, seed=1),
        media.make_image(c.still_jpg, prompt="square", width=160, height=160),
        media.make_video(c.silent, prompt="slow waves", duration=2.0, width=W, height=H),
        media.make_audio(c.tone_long, duration=3.5),
        media.make_audio(c.tone_short, duration=1.0),
    )
    await asyncio.gather(
        media.make_video(c.moving, image=c.still, duration=1.5, width=W, height=H, fps=12),
        media.merge_video_audio(c.silent, c.tone_long, c.talkie),
    )
    return c


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return asyncio.run(_make_clips(tmp_path_factory.mktemp("clips")))


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def kinds(info: dict[str, object]) -> list[tuple[object, object]]:
    streams = info["streams"]
    assert isinstance(streams, list)
    return [(s["type"], s["codec"]) for s in streams]


# --- probe ---------------------------------------------------------------------------------------


async def test_probe_reports_video_audio_and_still(clips: Clips) -> None:
    talkie = await media.probe(clips.talkie)
    assert talkie["duration"] == pytest.approx(2.0, abs=0.1)
    assert (talkie["width"], talkie["height"], talkie["fps"]) == (W, H, 24.0)
    assert talkie["has_video"] and talkie["has_audio"]
    assert kinds(talkie) == [("video", "h264"), ("audio", "aac")]
    audio = talkie["streams"][1]
    assert (audio["sample_rate"], audio["channels"]) == (44100, 2)
    assert talkie["size"] == clips.talkie.stat().st_size
    assert "mp4" in talkie["format"]

    for still in (clips.still, clips.still_jpg):
        info = await media.probe(still)
        assert info["duration"] is None and info["has_video"] and not info["has_audio"]
    assert (await media.probe(clips.still_jpg))["width"] == 160


async def test_probe_rejects_what_is_not_media(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("just some words, not a video\n")
    with pytest.raises(MediaError, match=r"probe: notes\.mp4 is not a media file"):
        await media.probe(text)
    with pytest.raises(MediaError, match="probe: cannot read"):
        await media.probe(tmp_path / "absent.mp4")


def test_parse_probe_of_ffmpeg_text() -> None:
    stderr = (
        "Input #0, matroska,webm, from 'x.webm':\n"
        "  Metadata:\n    DURATION        : 00:00:09.000000000\n"
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 89 kb/s\n"
        "  Stream #0:0: Video: vp9 (Profile 0), yuv420p(tv, progressive), 640x360, SAR 1:1 DAR 16:9, "
        "29.97 fps, 29.97 tbr, 1k tbn (default)\n"
        "  Stream #0:1(eng): Audio: opus, 48000 Hz, 5.1(side), fltp (default)\n"
    )
    info = media.parse_probe(stderr, 10)
    assert info is not None
    assert info["duration"] == 62.5 and info["format"] == "matroska,webm"
    assert info["streams"] == [
        {"type": "video", "codec": "vp9", "width": 640, "height": 360, "fps": 29.97},
        {"type": "audio", "codec": "opus", "sample_rate": 48000, "channels": 6},
    ]


# --- local/image, local/video, local/audio -------------------------------------------------------


async def test_make_image_is_deterministic_per_prompt_and_seed(tmp_path: Path) -> None:
    a, b, c, d = (tmp_path / f"{n}.png" for n in "abcd")
    await media.make_image(a, prompt="red fox", width=200, height=120, seed=7)
    await media.make_image(b, prompt="red fox", width=200, height=120, seed=7)
    await media.make_image(c, prompt="red fox", width=200, height=120, seed=8)
    await media.make_image(d, prompt="blue fox", width=200, height=120, seed=7)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes() and a.read_bytes() != d.read_bytes()
    info = await media.probe(a)
    assert (info["width"], info["height"], info["duration"]) == (200, 120, None)

    jpg = tmp_path / "e.jpg"
    await media.make_image(jpg, prompt="red fox " * 40, width=W, height=H)  # long prompt: wrapped, cut
    assert kinds(await media.probe(jpg)) == [("video", "mjpeg")]
    with pytest.raises(MediaError, match="unsupported image format"):
        await media.make_image(tmp_path / "x.bmp", prompt="x")


async def test_make_video_from_prompt_lasts_exactly_the_duration(tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    await media.make_video(out, prompt="clouds drifting", duration=2.5, width=W, height=H, fps=24)
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264")]
    assert (info["width"], info["height"], info["fps"]) == (W, H, 24.0)
    assert info["duration"] == pytest.approx(2.5, abs=0.1)
    assert await decoded_duration(out) == pytest.approx(2.5, abs=0.1)
    first = await gray_band(out, at=0.0, top=0.0, bottom=1.0)
    last = await gray_band(out, at=2.4, top=0.0, bottom=1.0)
    assert mean_abs_diff(first, last) > 1.0  # it moves


async def test_make_video_moves_over_an_image(clips: Clips) -> None:
    info = await media.probe(clips.moving)
    assert kinds(info) == [("video", "h264")] and info["fps"] == 12.0
    assert await decoded_duration(clips.moving) == pytest.approx(1.5, abs=0.1)
    first = await gray_band(clips.moving, at=0.0, top=0.0, bottom=1.0)
    last = await gray_band(clips.moving, at=1.4, top=0.0, bottom=1.0)
    assert mean_abs_diff(first, last) > 1.0


async def test_make_video_from_a_non_square_jpg_with_odd_size(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    await media.make_video(out, image=clips.still_jpg, duration=1.0, width=201, height=113, fps=10)
    info = await media.probe(out)
    assert (info["width"], info["height"]) == (200, 112)
    assert await decoded_duration(out) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "text", "duration", "expected", "codec"),
    [
        ("dur.m4a", None, 2.0, 2.0, "aac"),
        ("text.wav", "x" * 40, None, 2.8, "pcm_s16le"),
        ("short.mp3", "hi", None, 1.0, "mp3"),
        ("both.m4a", "a long sentence that would take a while", 1.5, 1.5, "aac"),
    ],
)
async def test_make_audio_tone_bed_has_the_requested_length(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    text: str | None,
    duration: float | None,
    expected: float,
    codec: str,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, whatever the machine has
    out = tmp_path / name
    await media.make_audio(out, text=text, duration=duration)
    info = await media.probe(out)
    assert kinds(info) == [("audio", codec)]
    assert info["duration"] == pytest.approx(expected, abs=0.1)


FAKE_ESPEAK = """#!/bin/sh
# a stand-in for espeak-ng: records its arguments, writes 0.8 s of audio to the -w file
echo "$@" > "$(dirname "$0")/espeak-args"
out=""
while [ $# -gt 0 ]; do
  if [ "$1" = "-w" ]; then out="$2"; fi
  shift
done
exec "{ffmpeg}" -v error -nostdin -y -f lavfi -i "sine=f=300:d=0.8" "$out"
"""


async def test_make_audio_speaks_with_espeak_ng_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    espeak = bindir / "espeak-ng"
    espeak.write_text(FAKE_ESPEAK.replace("{ffmpeg}", FFMPEG))
    espeak.chmod(espeak.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert media.speech_available()

    natural = tmp_path / "natural.m4a"
    await media.make_audio(natural, text="-v not an option", voice="female")
    args = (bindir / "espeak-args").read_text().split()
    assert args[:2] == ["-v", "en+f3"] and "-f" in args  # the text goes by file, never as an option
    assert (await media.probe(natural))["duration"] == pytest.approx(0.8, abs=0.1)

    padded = tmp_path / "padded.m4a"
    await media.make_audio(padded, text="Hello", duration=2.0, voice="Rachel")
    assert (bindir / "espeak-args").read_text().split()[:2] == ["-v", "en"]
    assert await decoded_duration(padded) == pytest.approx(2.0, abs=0.1)


def test_espeak_voice_mapping() -> None:
    assert media.espeak_voice(None) == "en"
    assert media.espeak_voice("en-us") == "en-us"
    assert media.espeak_voice("fr+m3") == "fr+m3"
    assert media.espeak_voice("Male") == "en+m3"
    assert media.espeak_voice("Rachel") == "en"


# --- merge, concat -------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_attr", ["tone_long", "tone_short"])
async def test_merge_keeps_the_video_length(clips: Clips, tmp_path: Path, audio_attr: str) -> None:
    out = tmp_path / "merged.mp4"
    await media.merge_video_audio(clips.silent, getattr(clips, audio_attr), out)
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264"), ("audio", "aac")]
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert await decoded_duration(out, "v") == pytest.approx(2.0, abs=0.1)
    assert await decoded_duration(out, "a") == pytest.approx(2.0, abs=0.1)  # padded or cut


async def test_merge_replaces_an_existing_track_and_refuses_silence(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "again.mp4"
    await media.merge_video_audio(clips.talkie, clips.tone_short, out)
    assert kinds(await media.probe(out)) == [("video", "h264"), ("audio", "aac")]
    with pytest.raises(MediaError, match=r"merge-video-audio: silent\.mp4 has no audio stream"):
        await media.merge_video_audio(clips.silent, clips.silent, tmp_path / "bad.mp4")
    with pytest.raises(MediaError, match="still image"):
        await media.merge_video_audio(clips.still, clips.tone_short, tmp_path / "bad.mp4")
    assert not (tmp_path / "bad.mp4").exists()


async def test_concat_sums_durations_with_one_continuous_audio_track(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "joined.mp4"
    await media.concat([clips.silent, clips.talkie, clips.still_jpg, clips.moving], out, image_duration=1.0)
    expected = 2.0 + 2.0 + 1.0 + 1.5
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264"), ("audio", "aac")]
    assert (info["width"], info["height"], info["fps"]) == (W, H, 24.0)  # the first input's
    assert info["duration"] == pytest.approx(expected, abs=0.1)
    assert await decoded_duration(out, "v") == pytest.approx(expected, abs=0.1)
    assert await decoded_duration(out, "a") == pytest.approx(expected, abs=0.1)


async def test_concat_to_a_given_size_and_fps_without_audio(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "small.mp4"
    await media.concat([clips.moving, clips.silent], out, width=160, height=120, fps=15)
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264")]
    assert (info["width"], info["height"], info["fps"]) == (160, 120, 15.0)
    assert await decoded_duration(out) == pytest.approx(3.5, abs=0.1)
    with pytest.raises(MediaError, match="no video stream"):
        await media.concat([clips.silent, clips.tone_short], tmp_path / "x.mp4")


# --- captions ------------------------------------------------------------------------------------


async def _caption_change(src: Path, out: Path, at: float, top: float, bottom: float) -> float:
    """Share of pixels in a horizontal band of the frame at `at` that captioning changed clearly."""
    before = await gray_band(src, at=at, top=top, bottom=bottom)
    after = await gray_band(out, at=at, top=top, bottom=bottom)
    return changed_share(before, after)


async def test_captions_from_text_burn_the_whole_video(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "cap.mp4"
    await media.captions(clips.talkie, out, text="Every evening the sea keeps its promise.")
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264"), ("audio", "aac")]
    assert await decoded_duration(out) == pytest.approx(2.0, abs=0.1)
    for at in (0.1, 1.9):
        assert await _caption_change(clips.talkie, out, at, 0.7, 1.0) > 0.01  # the caption band changed
    assert await _caption_change(clips.talkie, out, 1.0, 0.0, 0.3) < 0.002  # the rest did not


async def test_captions_from_srt_show_each_block_in_its_time(clips: Clips, tmp_path: Path) -> None:
    srt = (
        "1\r\n00:00:00,000 --> 00:00:00,800\r\n<i>First</i> line\r\n\r\n"
        "2\r\n00:00:01.200 --> 00:00:02,000\r\nSecond\r\n"
    )
    out = tmp_path / "srt.mp4"
    await media.captions(clips.talkie, out, srt=srt, position="top", color="#ffcc00", box=False)
    assert await decoded_duration(out) == pytest.approx(2.0, abs=0.1)
    assert await _caption_change(clips.talkie, out, 0.4, 0.0, 0.3) > 0.01
    assert await _caption_change(clips.talkie, out, 1.0, 0.0, 0.3) < 0.002  # between the blocks
    assert await _caption_change(clips.talkie, out, 1.6, 0.0, 0.3) > 0.01


async def test_captions_from_words_and_segments(clips: Clips, tmp_path: Path) -> None:
    words = [{"word": w, "start": i * 0.2, "end": i * 0.2 + 0.15} for i, w in enumerate("one two three".split())]
    out = tmp_path / "words.mp4"
    await media.captions(clips.silent, out, words=words, font_size=20)
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264")] and info["duration"] == pytest.approx(2.0, abs=0.1)
    assert await _caption_change(clips.silent, out, 0.3, 0.7, 1.0) > 0.01
    assert await _caption_change(clips.silent, out, 1.5, 0.7, 1.0) < 0.002

    seg_out = tmp_path / "segments.mp4"
    await media.captions(
        clips.silent, seg_out, segments=[{"start": 1.0, "end": 2.0, "text": "later"}], position="center", font_size=28
    )
    assert await _caption_change(clips.silent, seg_out, 1.5, 0.35, 0.65) > 0.01
    assert await _caption_change(clips.silent, seg_out, 0.5, 0.35, 0.65) < 0.002


def test_group_words_into_short_lines() -> None:
    words = [{"word": f"w{i}", "start": i * 0.3, "end": i * 0.3 + 0.2} for i in range(14)]
    words[3]["word"] = "end."
    lines = media.group_words(words)
    assert [ln["text"].split()[0] for ln in lines] == ["w0", "w4", "w10"]
    assert all(len(ln["text"].split()) <= 6 and ln["end"] - ln["start"] <= 2.5 for ln in lines)
    assert lines[0] == {"start": 0.0, "end": pytest.approx(1.1), "text": "w0 w1 w2 end."}


def test_long_text_is_spread_over_the_video_in_pages() -> None:
    assert media.spread_text("short", 4.0, per_line=30) == [{"start": 0.0, "end": 4.0, "text": "short"}]
    pages = media.spread_text("word " * 60, 10.0, per_line=20)
    assert len(pages) > 2 and pages[0]["start"] == 0.0 and pages[-1]["end"] == 10.0
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(pages))


async def test_bad_srt_names_the_block(clips: Clips, tmp_path: Path) -> None:
    srt = "1\n00:00:00,000 --> 00:00:01,000\nfine\n\n2\n00:00:01,000 -> 00:00:02,000\nbroken arrow\n"
    with pytest.raises(MediaError, match=r"captions: SRT block 2 \(#2\): expected"):
        await media.captions(clips.silent, tmp_path / "x.mp4", srt=srt)
    with pytest.raises(MediaError, match=r"block 1 .*end .* is not after start"):
        media.parse_srt("1\n00:00:02,000 --> 00:00:01,000\nbackwards\n")
    with pytest.raises(MediaError, match="exactly one of text, segments, srt, words"):
        await media.captions(clips.silent, tmp_path / "x.mp4", text="a", srt="b")
    assert not (tmp_path / "x.mp4").exists()


async def test_text_in_awkward_paths_and_without_any_font(
    clips: Clips, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = tmp_path / "it's a: [weird], dir; 100%"
    odd.mkdir()
    tricky = "Quotes ' \" colons : commas , brackets [x] semicolons ; percent %{pts} backslash \\ done"
    await media.make_image(odd / "img.png", prompt=tricky, width=W, height=H)
    await media.captions(clips.silent, odd / "cap.mp4", text=tricky)
    assert await _caption_change(clips.silent, odd / "cap.mp4", 1.0, 0.7, 1.0) > 0.01

    monkeypatch.setattr(media.filters, "find_font", lambda: None)
    await media.make_image(tmp_path / "plain.png", prompt="no font here", width=W, height=H)
    await media.make_video(tmp_path / "plain.mp4", prompt="no font", duration=1.0, width=W, height=H)
    with pytest.raises(media.MediaError, match=r"no font to draw captions with: install one .*fonts-dejavu-core"):
        await media.captions(clips.silent, tmp_path / "plain-cap.mp4", text="no font")
    assert not (tmp_path / "plain-cap.mp4").exists()


# --- overlay, transcode, thumbnail ---------------------------------------------------------------


async def test_overlay_an_image_in_a_corner_for_a_while(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "logo.mp4"
    await media.overlay(clips.talkie, clips.still_jpg, out, position="top-right", scale=0.25, start=0.5, end=1.5)
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264"), ("audio", "aac")]
    assert await decoded_duration(out) == pytest.approx(2.0, abs=0.1)

    async def corner(at: float) -> float:
        a = await gray_band(clips.talkie, at=at, top=0.0, bottom=0.4, left=0.7, right=1.0)
        b = await gray_band(out, at=at, top=0.0, bottom=0.4, left=0.7, right=1.0)
        return changed_share(a, b, threshold=12)

    assert await corner(1.0) > 0.01
    assert await corner(0.2) < 0.002 and await corner(1.8) < 0.002


async def test_overlay_a_longer_video_keeps_the_base_length(clips: Clips, tmp_path: Path) -> None:
    long_over = tmp_path / "long.mp4"
    await media.make_video(long_over, prompt="pip", duration=3.0, width=160, height=90, fps=24)
    out = tmp_path / "pip.mp4"
    await media.overlay(clips.silent, long_over, out, position="center", opacity=0.5, x=10)
    info = await media.probe(out)
    assert kinds(info) == [("video", "h264")]
    assert await decoded_duration(out) == pytest.approx(2.0, abs=0.1)
    with pytest.raises(MediaError, match="unknown position"):
        await media.overlay(clips.silent, long_over, tmp_path / "x.mp4", position="middle-ish")


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (".mp4", [("video", "h264"), ("audio", "aac")]),
        (".webm", [("video", "vp9"), ("audio", "opus")]),
        (".mov", [("video", "h264"), ("audio", "aac")]),
        (".mkv", [("video", "h264"), ("audio", "aac")]),
        (".gif", [("video", "gif")]),
        (".m4a", [("audio", "aac")]),
        (".mp3", [("audio", "mp3")]),
        (".wav", [("audio", "pcm_s16le")]),
    ],
)
async def test_transcode_picks_codecs_by_suffix(
    clips: Clips, tmp_path: Path, suffix: str, expected: list[tuple[str, str]]
) -> None:
    out = tmp_path / f"out{suffix}"
    await media.transcode(clips.talkie, out, width=160)
    info = await media.probe(out)
    assert kinds(info) == expected
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    if info["has_video"]:
        assert (info["width"], info["height"]) == (160, 90)


async def test_transcode_size_fps_and_bad_requests(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "boxed.mp4"
    await media.transcode(clips.silent, out, width=200, height=200, fps=10, crf=30)
    info = await media.probe(out)
    assert (info["width"], info["height"], info["fps"]) == (200, 200, 10.0)
    assert await decoded_duration(out) == pytest.approx(2.0, abs=0.1)
    with pytest.raises(MediaError, match="has no audio stream"):
        await media.transcode(clips.silent, tmp_path / "x.mp3")
    with pytest.raises(MediaError, match="unsupported output format"):
        await media.transcode(clips.silent, tmp_path / "x.avi")


async def test_thumbnail_grabs_one_frame(clips: Clips, tmp_path: Path) -> None:
    jpg = tmp_path / "thumb.jpg"
    await media.thumbnail(clips.talkie, jpg, width=100)
    info = await media.probe(jpg)
    assert kinds(info) == [("video", "mjpeg")] and info["duration"] is None
    assert (info["width"], info["height"]) == (100, 56)

    png = tmp_path / "late.png"
    await media.thumbnail(clips.talkie, png, at=99.0)  # past the end: the last frames
    assert (await media.probe(png))["width"] == W

    small = tmp_path / "still-thumb.png"
    await media.thumbnail(clips.still, small, width=64)
    assert (await media.probe(small))["width"] == 64


# --- process hygiene -----------------------------------------------------------------------------


async def test_cancelling_an_operation_kills_ffmpeg(tmp_path: Path) -> None:
    out = tmp_path / "endless.mp4"
    task = asyncio.create_task(media.make_video(out, prompt="forever", duration=3600, width=W, height=H))
    for _ in range(200):
        if ffmpeg_children():
            break
        await asyncio.sleep(0.02)
    assert ffmpeg_children(), "ffmpeg never started"
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ffmpeg_children() == []
    assert not out.exists()
    assert names_in(tmp_path) == []  # no partial file left behind


async def test_failure_message_carries_ffmpegs_complaint(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with pytest.raises(MediaError) as caught:
        await media.transcode(broken, tmp_path / "x.webm")
    assert str(caught.value).startswith(("transcode:", "probe:"))
    assert len(str(caught.value)) > 20


async def test_probing_many_files_in_one_run_matches_probing_each(tmp_path: Path) -> None:
    with use_limits(probe_in_process=False):  # ffmpeg runs shared by several files (PyAV needs none)
        await _probing_many_files_in_one_run_matches_probing_each(tmp_path)


async def _probing_many_files_in_one_run_matches_probing_each(tmp_path: Path) -> None:
    video, audio, still, bad = (tmp_path / n for n in ("v.mp4", "a.m4a", "s.png", "bad.mp4"))
    await media.make_video(video, prompt="x", duration=1.5, width=160, height=90)
    await media.make_audio(audio, duration=2.0)
    await media.make_image(still, prompt="x", width=64, height=48)
    bad.write_bytes(b"this is not media")
    paths = [video, audio, still, bad, video, audio]  # a bad file in the middle stops ffmpeg there
    many = await media.probe_many(paths)
    for path, got in zip(paths, many, strict=True):
        if path == bad:
            assert isinstance(got, media.MediaError) and "not a media file" in str(got)
        else:
            assert got == await media.probe(path)
    assert many[0]["duration"] == pytest.approx(1.5, abs=0.05) and many[1]["has_audio"] and not many[1]["has_video"]
    assert many[2]["duration"] is None and many[2]["width"] == 64

    batcher = media.ProbeBatcher(batch=8)
    results = await asyncio.gather(*(batcher.probe(p) for p in [video] * 20 + [audio] * 5), return_exceptions=False)
    assert all(r == many[0] for r in results[:20]) and all(r == many[1] for r in results[20:])
    with pytest.raises(media.MediaError):
        await batcher.probe(bad)
