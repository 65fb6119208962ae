"""The README's quick-start commands, run as a newcomer copies them: one shell, in the repository, one line
after the other (the execution id kept in $EX). Only the long-running ones (`worker`, `serve`) and the
`cancel|resume|retry` shorthand are left out; every other line must exit 0 and print what its comment says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = ("reelflow worker", "reelflow serve", "cancel|resume|retry")


def quick_start_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Your own plan.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README: no quick-start block after 'Your own plan'"
    lines = []
    for raw in block.group(1).splitlines():
        command = re.sub(r"\s+#.*$", "", raw).strip()
        if command and not any(s in command for s in SKIPPED):
            lines.append(command)
    return lines


def test_the_readme_quick_start_runs_as_written(worker_env: dict[str, str], tmp_path: Path) -> None:
    lines = quick_start_lines()
    assert len(lines) >= 12, lines
    assert all(".venv/bin/reelflow" in line for line in lines), lines
    # each command's output is kept apart: stdout in out.N, stderr in err.N
    script = ["set -o pipefail"]
    for n, line in enumerate(lines):
        command = line.replace(".venv/bin/reelflow", f"{sys.executable} -m reelflow.cli")
        if command.startswith("EX="):
            script.append(f"{command} 2>{tmp_path}/err.{n} || exit {100 + n}; echo \"$EX\" >{tmp_path}/out.{n}")
        else:
            script.append(f"{command} >{tmp_path}/out.{n} 2>{tmp_path}/err.{n} || exit {100 + n}")
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=worker_env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    failed = proc.returncode - 100
    assert proc.returncode == 0, (
        lines[failed] if 0 <= failed < len(lines) else proc.stderr,
        (tmp_path / f"err.{failed}").read_text() if 0 <= failed < len(lines) else "",
    )

    def output(prefix: str) -> str:
        n = next(i for i, line in enumerate(lines) if line.startswith(prefix))
        return (tmp_path / f"out.{n}").read_text()

    execution = output("EX=").strip()
    assert re.fullmatch(r"ex_[0-9a-f]+", execution), execution
    state = json.loads(output(".venv/bin/reelflow status $EX --json"))
    assert (state["id"], state["status"]) == (execution, "succeeded")
    assert output(".venv/bin/reelflow list --status failed") == "no failed executions\n"
    # $EX ran the plan the line before it ran: every job a cache hit, nothing run; its log is its origin's
    n = next(i for i, line in enumerate(lines) if line.startswith(".venv/bin/reelflow logs $EX final"))
    served = (tmp_path / f"out.{n}").read_text().splitlines()
    assert re.fullmatch(r"\[served from the cache: the output and this log are those of job 'final' of execution "
                        r"ex_[0-9a-f]+\]", served[0]), served[:2]  # fmt: skip
    assert served[1].startswith("$ ffmpeg "), served[:3]
    events = [json.loads(e) for e in output(".venv/bin/reelflow events $EX").splitlines()]
    assert events[0]["type"] == "execution.created" and events[-1]["type"] == "execution.succeeded"
    assert "seedance" in output(".venv/bin/reelflow models --provider replicate")
    assert "font_size" in output(".venv/bin/reelflow ops captions")
    assert "total:" in output(".venv/bin/reelflow estimate")
    assert "api_key:" in output(".venv/bin/reelflow keys create")
