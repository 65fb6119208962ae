"""The start-up of the `reelflow` command: median wall and CPU time (user + system, the child's own) of N runs
each of `reelflow --help`, `reelflow run PLAN` (local, no --wait), `reelflow status ID --json` and, against a
`reelflow serve` started here, `reelflow run PLAN --server URL`; with bytecode caching on (this machine's
environment may set PYTHONDONTWRITEBYTECODE=1, which makes every process compile every module: that is not
what a user's installed package does), after one warm-up run of each. The package is the one this script's
checkout holds (`src/` on PYTHONPATH, `python -m reelflow`), on a SQLite database in a scratch directory.

    python bench/startup.py [--runs N] [--no-server] [--python PYTHON] [--src DIR] [--importtime]

--src measures another checkout's package (e.g. the main branch's `src`, for a before/after) with this
checkout's example plan.

With --importtime it also prints the 25 slowest imports (cumulative, by `-X importtime`) of a local `run`.
The figures depend on the machine's load: note `uptime` alongside them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "examples" / "sunset.yaml"
FLOORS = {
    "import typer, pydantic_settings": "typer, pydantic_settings",
    "import the libraries of a run": "typer.main, typer._adapters, pydantic_settings, yaml, sqlite3, asyncio",
}
"""The floor: the libraries alone (typer parses the arguments, its options through pydantic TypeAdapters; the
settings are pydantic-settings; the plan is YAML; the database SQLite, used from asyncio)."""


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its stdout), measured with the children's resource usage around it."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def measure(name: str, cmd: list[str], env: dict[str, str], runs: int) -> str:
    """Print and return the last run's stdout after a warm-up run and `runs` measured ones."""
    stdout = run_child(cmd, env)[2]
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, stdout = run_child(cmd, env)
        walls.append(wall)
        cpus.append(cpu)
    print(
        f"  {name:<34} wall median {statistics.median(walls):.3f} s (min {min(walls):.3f}), "
        f"CPU median {statistics.median(cpus):.3f} s (min {min(cpus):.3f})",
        flush=True,
    )
    return stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-server", action="store_true", help="skip the --server measurement")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the package's parent directory")
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    print(speed_line(), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="reelflow-startup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELFLOW_")}
    env.update(
        PYTHONDONTWRITEBYTECODE="", PYTHONPATH=str(args.src.resolve()), REELFLOW_DATABASE_URL=f"sqlite:///{tmp}/r.db",
        REELFLOW_STORAGE_URL=f"file://{tmp}/artifacts", COLUMNS="100",
    )  # fmt: skip
    cli = [args.python, "-m", "reelflow"]
    where = subprocess.run([*cli[:1], "-c", "import reelflow; print(reelflow.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    print(f"reelflow from {where}; {args.runs} runs each after a warm-up; load: {os.getloadavg()[0]:.2f}")
    subprocess.run([*cli, "migrate"], env=env, capture_output=True, check=True)
    try:
        measure("python -c pass", [args.python, "-c", "pass"], env, args.runs)
        for name, libs in FLOORS.items():
            measure(name, [args.python, "-c", f"import {libs}"], env, args.runs)
        measure("reelflow --help", [*cli, "--help"], env, args.runs)
        execution_id = measure("reelflow run PLAN", [*cli, "run", str(PLAN)], env, args.runs).strip()
        measure("reelflow status ID --json", [*cli, "status", execution_id, "--json"], env, args.runs)
        if not args.no_server:
            measure_remote(cli, env, tmp, args.runs)
        if args.importtime:
            done = subprocess.run([args.python, "-X", "importtime", "-m", "reelflow", "run", str(PLAN)], env=env,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")]
            rows = [r for r in rows if r[1].strip().isdigit()]
            print("slowest imports of `reelflow run PLAN` (cumulative µs, -X importtime):")
            for r in sorted(rows, key=lambda r: -int(r[1]))[:25]:
                print(f"  {int(r[1]):>8} {r[2].rstrip()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


def measure_remote(cli: list[str], env: dict[str, str], tmp: Path, runs: int) -> None:
    """`run PLAN --server` and `status ID --json --server` against a `reelflow serve --workers 0` started here."""
    import json
    import urllib.request

    key = json.loads(subprocess.run([*cli, "keys", "create", "--tenant", "default", "--json"], env=env,
                                    capture_output=True, text=True, check=True).stdout)["api_key"]  # fmt: skip
    port = free_port()
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"the server did not start: {(tmp / 'serve.log').read_text()}") from None
                time.sleep(0.2)
        remote = {**env, "REELFLOW_SERVER": url, "REELFLOW_API_KEY": key}
        execution_id = measure("reelflow run PLAN --server", [*cli, "run", str(PLAN)], remote, runs).strip()
        measure("reelflow status ID --json --server", [*cli, "status", execution_id, "--json"], remote, runs)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
