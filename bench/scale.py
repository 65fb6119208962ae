"""Scale-out: 20,000 zero-latency `sim` jobs (100 plans of 100 roots + 100 dependents) run by 1, 2 and 4
`reelflow worker` processes on one database (PostgreSQL by default). For each: jobs per second from the first
start to the last finish, and the hand-off from a dependency's completion to its dependent's start (p50, p99).

Targets: at least 6,000 jobs/s, more workers never slower, hand-off p99 under 20 ms.

With --rate R, plans arrive while the workers run, R jobs/s in all: the hand-off below saturation.
With --hold-snapshot, each run is made twice: as above, then with another session holding a REPEATABLE READ
snapshot open for the whole run (a long report, a forgotten psql): the dead rows of every claim and finish
cannot be cleaned up while it lives, and the claim must not slow down to a crawl because of them.

The one tenant runs without the built-in cap of 200 jobs at once per tenant, as in `bench/overhead.py` (a
limit, not an overhead). `--tenant-cap N` sets one: a tenant's cap is kept exact across the workers, so their
claims and hand-offs of that tenant's jobs take its lock one at a time, and with a single tenant more workers
then gain nothing.

With `--database-url sqlite`, the workers share a new SQLite file instead (in WAL mode, one writer at a time):
`--workers 1 --rate R` is SQLite's hand-off below saturation.

    python bench/scale.py [--jobs 20000] [--workers 1,2,4] [--hold-snapshot] [--rate R] [--tenant-cap N]
                          [--database-url postgresql://…/test | sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import psycopg

from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures
from pgbench_db import fresh_database, postgres_cpu
from reelflow.engine.scheduler import Engine
from reelflow.states import TERMINAL_EXECUTION
from reelflow.store import open_store


def plan(pairs: int, tag: str) -> dict[str, object]:
    roots = [{"id": f"r{i}", "type": "generate-video", "model": "sim/video", "params": {"latency_s": 0}}
             for i in range(pairs)]
    deps = [{"id": f"d{i}", "type": "generate-video", "model": "sim/video",
             "params": {"latency_s": 0, "prompt": f"$r{i}"}} for i in range(pairs)]
    return {"jobs": roots + deps, "options": {"cache": False}, "metadata": {"run": tag}}


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(
    admin_url: str, total: int, workers: int, hold: bool = False, rate: float | None = None,
    tenant_cap: int | None = None,
) -> None:  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="reelflow-scale-"))
    on_sqlite = admin_url.startswith("sqlite")
    try:
        name = "reelflow_scale"
        database = nullcontext(f"sqlite:///{tmp}/{name}.db") if on_sqlite else fresh_database(admin_url, name)
        with database as url:
            await measure(url, tmp, workers, hold, rate, tenant_cap, total, on_sqlite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def measure(
    url: str, tmp: Path, workers: int, hold: bool, rate: float | None, tenant_cap: int | None, total: int,
    on_sqlite: bool,
) -> None:  # fmt: skip
    store = open_store(url)
    await store.migrate()
    engine = Engine(store)
    pairs = 100
    plans = max(1, total // (2 * pairs))
    ids = [] if rate else [await engine.submit(plan(pairs, str(p))) for p in range(plans)]
    snapshot = None
    if hold:  # pins the cleanup horizon before the first claim: every dead row of the run stays
        snapshot = await psycopg.AsyncConnection.connect(url)
        await snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await snapshot.execute("SELECT count(*) FROM jobs")
    limits = tmp / "limits.yaml"
    limits.write_text(f"tenants:\n  default: {{max_concurrent: {'null' if tenant_cap is None else tenant_cap}}}\n")
    env = dict(os.environ, REELFLOW_DATABASE_URL=url, REELFLOW_STORAGE_URL=f"file://{tmp}/artifacts",
               REELFLOW_LOG_LEVEL="WARNING", REELFLOW_LIMITS_FILE=str(limits))
    server0 = None if on_sqlite else postgres_cpu()
    procs = [subprocess.Popen([sys.executable, "-m", "reelflow.cli", "worker", "--concurrency", "1000"],
                              env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
             for _ in range(workers)]
    try:
        if rate:  # an offered load below capacity: plans arrive one by one while the workers run
            await asyncio.sleep(2.0)  # the workers are up
            for p in range(plans):
                ids.append(await engine.submit(plan(pairs, str(p))))
                await asyncio.sleep(2 * pairs / rate)
        # Waiting reads each execution's status alone, one small query a poll: reading whole states here (as
        # Engine.wait does, 200 jobs each) took half a core from the workers and the database on 2 cores.
        deadline = time.monotonic() + 600
        for eid in ids:
            while (status := await store.execution_status(eid)) not in TERMINAL_EXECUTION:
                assert time.monotonic() < deadline, f"{eid} still {status} after 600 s"
                await asyncio.sleep(0.2)
        server1 = None if server0 is None else postgres_cpu()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    starts, ends, handoffs = [], [], []
    for eid in ids:
        state = (await engine.get(eid)).model_dump(mode="json")
        assert state["status"] == "succeeded", state["error"]
        by_id = {j["id"]: j for j in state["jobs"]}
        for j in state["jobs"]:
            starts.append(ts(j["started_at"]))
            ends.append(ts(j["finished_at"]))
            if j["depends_on"]:
                handoffs.append(ts(j["started_at"]) - ts(by_id[j["depends_on"][0]]["finished_at"]))
    span = max(ends) - min(starts)
    if snapshot is not None:
        await snapshot.close()
    label = f"workers {workers}" + (" (snapshot held)" if hold else "")
    label += f" at {rate:,.0f} jobs/s offered" if rate else ""
    print(f"{label}: {(len(starts) - 1) / span:,.0f} jobs/s ({len(starts)} jobs in {span:.2f} s);"
          f" hand-off p50 {statistics.median(handoffs) * 1000:.1f} ms, p99 {pct(handoffs, 0.99) * 1000:.1f} ms"
          + ("" if server0 is None or server1 is None else
             f"; PostgreSQL CPU {(server1 - server0) / len(starts) * 1e6:.0f} us per job"))
    await store.close()


async def main(
    admin_url: str, total: int, counts: list[int], hold: bool, rate: float | None, tenant_cap: int | None
) -> None:
    store = "sqlite" if admin_url.startswith("sqlite") else "postgresql"
    if hold and store == "sqlite":
        raise SystemExit("--hold-snapshot is for PostgreSQL")
    print(f"store: {store}  jobs: {total} per run  tenant cap: {'none' if tenant_cap is None else tenant_cap}")
    for n in counts:
        for held in (False, True) if hold else (False,):
            started = time.monotonic()
            await run(admin_url, total, n, held, rate, tenant_cap)
            print(f"  (run took {time.monotonic() - started:.0f} s with set-up)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--hold-snapshot", action="store_true", help="also run with a REPEATABLE READ snapshot held")
    parser.add_argument("--rate", type=float, help="submit plans while the workers run, at this many jobs/s in all"
                        " (the hand-off below saturation; the throughput printed is then the offered rate)")
    parser.add_argument("--tenant-cap", type=int, help="the tenant's max_concurrent (default: none)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a database to create the benchmark's own database from; `sqlite`: a new file")
    args = parser.parse_args()
    print(speed_line(), flush=True)
    counts = [int(n) for n in args.workers.split(",")]
    asyncio.run(main(args.database_url, args.jobs, counts, args.hold_snapshot, args.rate, args.tenant_cap))
