"""Many jobs in flight: 10,000 `sim` jobs that each wait 30 s, held by one worker process.

Targets: makespan within 10% of 30 s, peak memory under 300 MB, under 10 CPU-seconds in all.
The worker runs as its own process (`reelflow worker`), so its CPU time and peak RSS are its own.

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

from reelflow.engine.scheduler import Engine
from reelflow.store import open_store


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
    for eid in ids:
        for e in await store.events(eid):
            if e.type == "job.succeeded":
                last_finish = max(last_finish, e.created_at)
            elif e.type == "job.running":
                first_start = min(first_start, e.created_at)
    makespan = last_finish - t0
    print(f"store: {url.split(':')[0]}  jobs: {total}  latency: {latency:g} s each, one worker process")
    print(f"makespan: {makespan:.2f} s from worker start ({makespan / latency * 100 - 100:+.1f}% over {latency:g} s);"
          f" first job started {first_start - t0:.2f} s after worker start; all seen done at {done - t0:.2f} s")
    print(f"worker CPU: {usage.ru_utime + usage.ru_stime:.2f} s (user {usage.ru_utime:.2f}, sys {usage.ru_stime:.2f})")
    print(f"worker peak RSS: {usage.ru_maxrss / 1024:.0f} MB")
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=30.0)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.latency, args.database_url))
