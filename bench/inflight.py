"""Many jobs in flight: 10,000 `sim` jobs that each wait 30 s, held by one worker process.

Targets (issue 17): makespan at most 1.05x the jobs' latency (31.5 s of 30 s), at most 1.5 CPU-seconds for the
worker process in all, peak RSS at most 150 MB; each is printed with PASS or FAIL. The worker runs as its own
process (`reelflow worker`), so its CPU time and peak RSS are its own. The makespan runs from the worker's start
(its imports included) to the last job's end; "claims spread over" is from the first job's start to the last's.

    python bench/inflight.py [--jobs 10000] [--latency 30] [--database-url sqlite:///path]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures
from reelflow.engine.scheduler import Engine
from reelflow.store import open_store

MAKESPAN_X = 1.05
"""Target: the last job ends within this many times the jobs' latency of the worker's start."""
CPU_S = 1.5
"""Target: the worker's CPU-seconds, user and system, start-up included."""
RSS_MB = 150
"""Target: the worker's peak resident memory."""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


async def main(total: int, latency: float, database_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="reelflow-inflight-"))
    url = database_url or f"sqlite:///{tmp}/bench.db"
    store = open_store(url)
    await store.migrate()
    engine = Engine(store)
    per_plan = 200
    ids = []
    for _ in range(total // per_plan):
        jobs = [{"id": f"j{i}", "type": "generate-video", "model": "sim/video", "params": {"latency_s": latency}}
                for i in range(per_plan)]
        ids.append(await engine.submit({"jobs": jobs}))
    limits = tmp / "limits.yaml"  # one tenant's 10,000 jobs at once: lift the built-in 200 per tenant
    limits.write_text("tenants:\n  default: {max_concurrent: null}\n")
    env = dict(os.environ, REELFLOW_DATABASE_URL=url, REELFLOW_STORAGE_URL=f"file://{tmp}/artifacts",
               REELFLOW_LIMITS_FILE=str(limits))
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "reelflow.cli", "worker", "--concurrency", str(total)],
                            env=env, stderr=subprocess.DEVNULL)
    for eid in ids:
        state = await engine.wait(eid, poll_s=0.5)
        assert state["status"] == "succeeded", state["error"]
    done = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_finish = 0.0
    first_start = float("inf")
    last_start = 0.0
    for eid in ids:
        for e in await store.events(eid):
            if e.type == "job.succeeded":
                last_finish = max(last_finish, e.created_at)
            elif e.type == "job.running":
                first_start = min(first_start, e.created_at)
                last_start = max(last_start, e.created_at)
    makespan = last_finish - t0
    cpu = usage.ru_utime + usage.ru_stime
    rss = usage.ru_maxrss / 1024
    print(f"store: {url.split(':')[0]}  jobs: {total}  latency: {latency:g} s each, one worker process")
    print(f"makespan: {makespan:.2f} s from worker start ({makespan / latency:.3f}x {latency:g} s, target"
          f" <= {MAKESPAN_X:g}x) {verdict(makespan <= MAKESPAN_X * latency)}")
    print(f"  first job started {first_start - t0:.2f} s after worker start; claims spread over"
          f" {last_start - first_start:.2f} s; the last job ended {last_finish - last_start - latency:.2f} s after"
          f" the last start + {latency:g} s; all seen done at {done - t0:.2f} s")
    print(f"worker CPU: {cpu:.2f} s (user {usage.ru_utime:.2f}, sys {usage.ru_stime:.2f}; target <= {CPU_S:g} s)"
          f" {verdict(cpu <= CPU_S)}")
    print(f"worker peak RSS: {rss:.0f} MB (target <= {RSS_MB} MB) {verdict(rss <= RSS_MB)}")
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=30.0)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    print(speed_line(), flush=True)
    asyncio.run(main(args.jobs, args.latency, args.database_url))
