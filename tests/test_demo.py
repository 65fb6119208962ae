"""The demo end to end: `reelflow demo` renders a real MP4 from the sunset plan on the local provider."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from mediacheck import decoded_duration
from reelflow import media


def test_demo_renders_a_captioned_video_with_narration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "reelflow.cli", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"final video: (\S+\.mp4)", proc.stdout)
    assert match, proc.stdout
    final = Path(match.group(1))
    assert final.is_file()
    assert final.resolve().is_relative_to((tmp_path / ".reelflow" / "artifacts").resolve())
    info = asyncio.run(media.probe(final))
    assert abs(info["duration"] - 5.0) <= 0.1
    assert info["has_video"] and info["has_audio"]
    assert (info["width"], info["height"]) == (1280, 720)
    assert abs(asyncio.run(decoded_duration(final)) - 5.0) <= 0.1
    # the timeline names every job of the plan, each succeeded
    for job in ("still", "clip", "voice", "merged", "final"):
        assert re.search(rf"{job}\s.*succeeded", proc.stdout), job
