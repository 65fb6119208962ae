"""A provider concurrency limit held across worker processes: 2,000 Seedance jobs against the Replicate fake
(5 s each there), 3 `reelflow worker` processes, `max_concurrent: 50` for replicate in the limits file.

Prints the peak of predictions running at once at the fake (target: never above 50) and the makespan against
the ideal of jobs / limit x latency (2,000 / 50 x 5 s = 200 s; target: within 10%).

    python bench/limits.py [--jobs 2000] [--limit 50] [--latency 5] [--workers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.replicate import FakeReplicate
from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures
from providers import seedance_plan  # bench/providers.py: the same plans
from reelflow.engine.scheduler import Engine
from reelflow.store import open_store


async def main(total: int, limit: int, latency: float, n_workers: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="reelflow-limits-"))
    url = f"sqlite:///{tmp}/bench.db"
    limits = tmp / "limits.yaml"
    limits.write_text(f"providers:\n  replicate: {{max_concurrent: {limit}}}\n")
    store = open_store(url)
    await store.migrate()
    with FakeReplicate(latency_s=latency, queue_s=0.0) as fake:
        os.environ["REPLICATE_API_TOKEN"] = fake.token
        env = dict(
            os.environ,
            REELFLOW_DATABASE_URL=url,
            REELFLOW_STORAGE_URL=f"file://{tmp}/artifacts",
            REELFLOW_REPLICATE_BASE_URL=fake.base_url,
            REELFLOW_LIMITS_FILE=str(limits),
            REELFLOW_LOG_LEVEL="WARNING",
        )
        engine = Engine(store)
        ids = []
        per_plan = 100
        for p in range(total // per_plan):
            ids.append(await engine.submit(seedance_plan(p, per_plan)))
        t0 = time.time()
        procs = [
            subprocess.Popen([sys.executable, "-m", "reelflow.cli", "worker"], env=env, stderr=subprocess.DEVNULL)
            for _ in range(n_workers)
        ]
        try:
            for eid in ids:
                state = await engine.wait(eid, poll_s=1.0, timeout=total / limit * latency * 5 + 120)
                if state["status"] != "succeeded":
                    raise SystemExit(f"execution {eid} ended {state['status']}: {state['error']}")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
        last = 0.0
        owners: set[str] = set()
        for eid in ids:
            for e in await store.events(eid):
                if e.type == "job.succeeded":
                    last = max(last, e.created_at)
                elif e.type == "job.running":
                    owners.add(str(e.data.get("worker")))
        makespan = last - t0
        ideal = total / limit * latency
        print(
            f"jobs {total}  workers {n_workers} (all took jobs: {len(owners) == n_workers})  limit {limit}  "
            f"latency {latency:g} s\npeak running at the provider: {fake.peak_running()} (limit {limit}); "
            f"creates {fake.creates}\nmakespan {makespan:.1f} s, ideal {ideal:.0f} s "
            f"({makespan / ideal * 100 - 100:+.1f}%)"
        )
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    print(speed_line(), flush=True)
    asyncio.run(main(args.jobs, args.limit, args.latency, args.workers))
