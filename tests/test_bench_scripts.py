"""The benchmark scripts still run: a small `bench/overhead.py` end to end, with the machine's yardstick first.

The figures themselves are not checked here (they depend on the machine); that every job ran, and that each
line the README quotes is printed in its documented shape, is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELFLOW_")}
    done = subprocess.run(
        [sys.executable, *args], cwd=BENCH.parent, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


MACHINE = re.compile(
    r"machine: \d+ CPUs \(.+\), Python loop (\d+) ms, SQLite inserts (\d+) ms, load \d+\.\d \(lower is faster\)"
)


def test_the_yardstick_times_both_workloads() -> None:
    (line,) = run_bench("bench/machine.py")
    found = MACHINE.fullmatch(line)
    assert found, line
    assert int(found[1]) > 0 and int(found[2]) >= 0, line


def test_overhead_runs_every_job_and_prints_its_figures_after_the_yardstick() -> None:
    lines = run_bench("bench/overhead.py", "--jobs", "400")
    assert MACHINE.fullmatch(lines[0]), lines
    assert lines[1].startswith("store: sqlite  jobs: 400  plans: 2 x 200"), lines
    figures = "\n".join(lines[2:])
    assert re.search(r"^throughput: [\d,]+ jobs/s \(first start to last finish: \d+\.\d\d s\)$", figures, re.M)
    assert re.search(r"^worker CPU: \d+\.\d\d s, \d+ us per job", figures, re.M)
    assert re.search(r"^hand-off \(dependency done -> dependent started\): p50 [\d.]+ ms, p99 [\d.]+ ms", figures, re.M)
