"""Probing in the worker's process with PyAV gives what an ffmpeg run gives, on real files of many kinds.

The in-process probe must not change a single value that reelflow stores or judges by (duration, size, format,
streams, codecs, sizes, rates, channels): each file here is probed both ways and the dicts compared whole.
Files PyAV cannot read go to the ffmpeg run, which words the error as before.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from reelflow import media
from reelflow.config import Settings
from reelflow.media import probing
from reelflow.media_limits import use_limits

HAVE_AV = importlib.util.find_spec("av") is not None
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV (package av) is not installed")


def _ffmpeg(out: Path, *args: str) -> Path:
    subprocess.run([media.ffmpeg_exe(), "-y", "-v", "error", *args, str(out)], check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files: what the local provider's media code makes, and other containers, codecs and layouts."""
    d = tmp_path_factory.mktemp("probe-files")

    async def local() -> None:
        await asyncio.gather(
            media.make_video(d / "local.mp4", prompt="waves", duration=1.0, width=64, height=64),
            media.make_image(d / "local.png", prompt="a still", width=40, height=30),
            media.make_audio(d / "local.m4a", duration=0.5),
        )
        await media.merge_video_audio(d / "local.mp4", d / "local.m4a", d / "talkie.mp4")

    asyncio.run(local())
    lavfi = ("-f", "lavfi", "-i")
    made = {
        "ntsc.mp4": ("testsrc=s=64x48:r=30000/1001:d=1.3", "-c:v", "libx264"),
        "vp9.webm": ("testsrc=s=32x32:r=25:d=0.5", *lavfi, "sine=r=48000:d=0.5",
                     "-c:v", "libvpx-vp9", "-c:a", "libopus"),
        "mono.mp3": ("sine=r=22050:d=0.7", "-ac", "1"),
        "tone.wav": ("sine=r=8000:d=0.25",),
        "still.jpg": ("testsrc=s=40x30", "-frames:v", "1"),
        "anim.gif": ("testsrc=s=40x30:r=10:d=0.5",),
        "film.mkv": ("testsrc=s=64x64:r=24000/1001:d=0.6", *lavfi, "anullsrc=cl=5.1:r=44100", "-t", "0.6",
                     "-c:v", "libx264", "-c:a", "aac"),
        "mjpeg.mov": ("testsrc=s=48x32:r=60:d=0.3", "-c:v", "mjpeg"),
        "quad.ogg": ("anullsrc=cl=quad:r=16000", "-t", "0.3", "-c:a", "libvorbis"),
        "odd.wav": ("anullsrc=cl=3.1:r=8000", "-t", "0.2"),
        "long.mp4": ("testsrc=s=32x32:r=1:d=3725", "-c:v", "libx264", "-preset", "ultrafast"),
    }  # fmt: skip
    out = {p.name: p for p in d.iterdir()}
    for name, args in made.items():
        out[name] = _ffmpeg(d / name, *lavfi, *args)
    # an audio file with cover art (an attached picture: left out of the streams by both ways)
    out["cover.mp3"] = _ffmpeg(
        d / "cover.mp3", "-i", str(out["mono.mp3"]), "-i", str(out["still.jpg"]), "-map", "0", "-map", "1",
        "-c", "copy", "-disposition:v", "attached_pic",
    )  # fmt: skip
    return out


async def _by_ffmpeg(path: Path) -> dict[str, Any]:
    with use_limits(probe_in_process=False):
        return await media.probe(path)


@needs_av
async def test_every_value_is_the_one_an_ffmpeg_run_gives(files: dict[str, Path]) -> None:
    for name, path in sorted(files.items()):
        mine = await asyncio.to_thread(probing.probe_in_process, path)
        assert mine is not None, name
        assert mine == await _by_ffmpeg(path), name
        assert mine == await media.probe(path), name  # probe() takes the in-process way when it can
    talkie = await media.probe(files["talkie.mp4"])
    assert [(s["type"], s["codec"]) for s in talkie["streams"]] == [("video", "h264"), ("audio", "aac")]
    assert talkie["duration"] == pytest.approx(1.0, abs=0.05) and talkie["width"] == 64
    assert (await media.probe(files["ntsc.mp4"]))["fps"] == 29.97
    assert (await media.probe(files["film.mkv"]))["streams"][1]["channels"] == 6
    assert (await media.probe(files["quad.ogg"]))["streams"][0] == {
        "type": "audio", "codec": "vorbis", "sample_rate": 16000, "channels": 4,
    }  # fmt: skip
    assert (await media.probe(files["long.mp4"]))["duration"] == 3725.0  # past an hour: 01:02:05.00
    still = await media.probe(files["local.png"])
    assert still["duration"] is None and still["fps"] is None and media.kinds_of(still) == frozenset({"image"})
    cover = await media.probe(files["cover.mp3"])
    assert [s["type"] for s in cover["streams"]] == ["audio"] and not cover["has_video"]


@needs_av
async def test_what_pyav_cannot_read_is_refused_in_ffmpeg_s_words(files: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "output-0.mp4"
    junk.write_bytes(b"\x00" * 300)
    playlist = tmp_path / "list.m3u8"  # an HLS playlist naming a local file: read as hls, it would be followed
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://{files['talkie.mp4']}\n"
        "#EXT-X-ENDLIST\n"
    )
    av: Any = importlib.import_module("av")
    with av.open(str(playlist), options={"protocol_whitelist": "file"}) as opened:  # PyAV left to itself
        assert opened.format.name == "hls"
    for path in (junk, playlist, tmp_path / "absent.mp4"):
        assert probing.probe_in_process(path) is None
    with pytest.raises(media.MediaError, match=r"^probe: output-0\.mp4 is not a media file: "):
        await media.probe(junk)
    with pytest.raises(media.MediaError, match=r"^probe: list\.m3u8 is not a media file: its format is not one"):
        await media.probe(playlist)
    with pytest.raises(media.MediaError, match=r"^probe: cannot read absent\.mp4"):
        await media.probe(tmp_path / "absent.mp4")


@needs_av
async def test_in_process_probes_start_no_process_and_the_switch_turns_them_off(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []
    real = media.runner._exec

    async def counting(op: str, cmd: Any, **kwargs: Any) -> tuple[int, str]:
        runs.append(op)
        return await real(op, cmd, **kwargs)

    monkeypatch.setattr(media.runner, "_exec", counting)
    batcher = media.ProbeBatcher()
    paths = [files["talkie.mp4"], files["tone.wav"], files["local.png"]]
    got = await asyncio.gather(*(batcher.probe(p) for p in paths))
    assert [g["has_video"] for g in got] == [True, False, True] and runs == []
    assert probing.in_process_available()
    with use_limits(probe_in_process=False):
        assert not probing.in_process_available()
        assert probing.probe_in_process(paths[0]) is None
        assert await asyncio.gather(*(batcher.probe(p) for p in paths)) == got
    assert runs == ["probe"]  # the three files in one shared ffmpeg run


async def test_without_pyav_every_probe_is_an_ffmpeg_run(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probing, "_av_module", None)  # as after a failed `import av`
    assert not probing.in_process_available() and probing.probe_in_process(files["talkie.mp4"]) is None
    info = await media.probe(files["talkie.mp4"])
    assert info["has_audio"] and info["streams"][0]["codec"] == "h264"


def test_the_setting_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().probe_in_process is True
    monkeypatch.setenv("REELFLOW_PROBE_IN_PROCESS", "false")
    assert Settings().probe_in_process is False
    monkeypatch.setenv("REELFLOW_PROBE_IN_PROCESS", "maybe")
    with pytest.raises(ValueError, match="probe_in_process"):
        Settings()


def test_rates_and_durations_are_rounded_as_ffmpeg_prints_them() -> None:
    rate = probing._printed_rate
    assert rate(Fraction(30000, 1001)) == 29.97  # "29.97 fps"
    assert rate(Fraction(24000, 1001)) == 23.98
    assert rate(Fraction(24, 1)) == 24.0  # "24 fps"
    assert rate(Fraction(12288, 1)) == 12288.0  # "12288 tbn"
    assert rate(Fraction(90000, 1)) == 90000.0  # "90k tbn"
    assert rate(Fraction(1, 3)) == 0.33
    assert rate(Fraction(1, 100000)) == 0.0  # "0.0000 fps"
    assert rate(Fraction(0, 1)) is None and rate(None) is None
    duration = probing._printed_duration
    assert duration(1_000_000) == 1.0
    assert duration(1_235_000) == 1.24  # 5 ms added, then cut to hundredths: "00:00:01.24"
    assert duration(1_234_999) == 1.23
    assert duration(3_599_996_000) == 3600.0  # "01:00:00.00"
    assert duration(None) is None and duration(-10_000) is None
    assert probing._channels("5.1(side)") == 6 and probing._channels("3 channels") == 3
    assert probing._channels("hexagonal") is None  # probe() reads no count from a layout it does not know


@needs_av
async def test_judging_probes_in_the_thread_that_sniffs_and_only_what_may_be_media(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from reelflow.engine.outputs import judge
    from reelflow.providers.base import PermanentError

    asked: list[str] = []
    batcher = media.ProbeBatcher()

    def quick(path: Path) -> dict[str, Any] | None:
        asked.append(path.name)
        return batcher.quick(path)

    async def no_probe(path: Path) -> dict[str, Any]:
        raise AssertionError(f"the quick probe answered for {path.name}: probe() is not needed")

    video = await judge(files["talkie.mp4"], "generate-video", None, no_probe, quick_probe=quick)
    assert video == await _by_ffmpeg(files["talkie.mp4"]) and asked == ["talkie.mp4"]
    with pytest.raises(PermanentError, match=r"^the output is not a video: it is audio"):
        await judge(files["tone.wav"], "generate-video", None, no_probe, quick_probe=quick)
    playlist = tmp_path / "out.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-VERSION:3\n")
    text = tmp_path / "out.srt"
    text.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    with pytest.raises(PermanentError, match="it is an HLS playlist"):
        await judge(playlist, "generate-video", None, no_probe, quick_probe=quick)
    assert (await judge(text, "transcribe", None, no_probe, quick_probe=quick)) == {"size_bytes": text.stat().st_size}
    assert asked == ["talkie.mp4", "tone.wav"]  # neither the playlist nor the text reached a demuxer
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\xff" * 500)  # binary (a NUL byte), and no container
    with pytest.raises(PermanentError, match="ffmpeg cannot read it as media"):  # PyAV gave up: ffmpeg words it
        await judge(junk, "generate-video", None, batcher.probe, quick_probe=quick)


@needs_av
async def test_a_passed_output_is_kept_in_the_thread_that_judged_it_and_a_refused_one_never(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import threading

    from reelflow.engine.outputs import judge_then
    from reelflow.providers.base import PermanentError

    batcher = media.ProbeBatcher()
    threads: list[tuple[str, str]] = []

    def quick(path: Path) -> dict[str, Any] | None:
        threads.append(("look", threading.current_thread().name))
        return batcher.quick(path)

    def keeper(name: str) -> Callable[[], str]:
        def keep() -> str:
            threads.append(("keep", threading.current_thread().name))
            return f"stored {name}"

        return keep

    video = files["talkie.mp4"]
    info, kept = await judge_then(video, "generate-video", None, batcher.probe, keeper("v"), quick_probe=quick)
    assert kept == "stored v" and info == await _by_ffmpeg(video)
    assert [what for what, _ in threads] == ["look", "keep"] and threads[0][1] == threads[1][1]  # one trip

    threads.clear()  # the quick probe cannot answer: probe() decides, then it is kept in a trip of its own
    info, kept = await judge_then(video, "generate-video", None, batcher.probe, keeper("w"), quick_probe=None)
    assert kept == "stored w" and info == await _by_ffmpeg(video) and threads == [("keep", ANY)]

    threads.clear()  # the wrong kind, a playlist: refused, nothing kept
    with pytest.raises(PermanentError, match=r"^the output is not a video: it is audio"):
        await judge_then(files["tone.wav"], "generate-video", None, batcher.probe, keeper("a"), quick_probe=quick)
    playlist = tmp_path / "out.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-VERSION:3\n")
    with pytest.raises(PermanentError, match="it is an HLS playlist"):
        await judge_then(playlist, "generate-video", None, batcher.probe, keeper("p"), quick_probe=quick)
    assert [what for what, _ in threads] == ["look"]


@needs_av
async def test_pyav_loads_on_the_first_probe_off_the_event_loop(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's probe batcher does not load PyAV when it is made (~17 MB of memory for workers whose jobs
    store no media): the first probe does, in a thread, not on the event loop."""
    import threading

    monkeypatch.setattr(probing, "_av_module", probing._AV_UNLOADED)
    loaded_in: list[threading.Thread] = []
    real = importlib.import_module

    def importing(name: str, package: str | None = None) -> Any:
        loaded_in.append(threading.current_thread())
        return real(name, package)

    monkeypatch.setattr(probing.importlib, "import_module", importing)
    batcher = media.ProbeBatcher()
    assert probing._av_module is probing._AV_UNLOADED and loaded_in == []
    info = await batcher.probe(files["talkie.mp4"])
    assert info["has_audio"] and probing._av_module is not probing._AV_UNLOADED
    assert len(loaded_in) == 1 and loaded_in[0] is not threading.main_thread()
    await batcher.probe(files["tone.wav"])
    assert len(loaded_in) == 1
