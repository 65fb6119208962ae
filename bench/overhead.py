"""Engine overhead: 20,000 zero-latency `sim` jobs through the whole path on one worker.

Submits 100 plans of 200 jobs (100 roots, each with one dependent) from a separate connection
(validation, estimate and the insert, timed on their own), then starts one worker and reads the
timings back from the database once every execution has ended:
- jobs/s from the first job's start to the last job's finish;
- p50/p99 hand-off: a dependency's completion to its dependent's start.

The one tenant runs without the built-in cap of 200 jobs at once per tenant (that is a limit, not an
overhead); `--tenant-cap N` sets one: 1000 (the worker's slots, so it never binds) measures what counting it
costs, 200 what the built-in cap does to a single tenant's zero-latency jobs.

On PostgreSQL (`--database-url postgresql://…/test`) the run gets a new database of its own, made through
that URL and dropped at the end, and the server's own CPU over the run is printed beside the worker's when
the server runs on this machine: both share its cores.

    python bench/overhead.py [--jobs 20000] [--database-url sqlite:///path | postgresql://…/test] [--tenant-cap N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures
from pgbench_db import fresh_database, postgres_cpu
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.engine.worker import Worker, tune_gc
from reelflow.providers.registry import Providers
from reelflow.providers.sim import SimProvider
from reelflow.store import open_store


def plan(pairs: int, cache: bool = False) -> dict[str, object]:
    jobs: list[dict[str, object]] = []
    for i in range(pairs):
        jobs.append({"id": f"r{i}", "type": "generate-video", "model": "sim/video", "params": {}})
    for i in range(pairs):
        jobs.append(
            {"id": f"d{i}", "type": "generate-video", "model": "sim/video", "params": {}, "depends_on": [f"r{i}"]}
        )
    # Without the result cache by default: with it, every job after the first is a cache hit (identical params),
    # which is a lookup and an event more than a job that runs (--cache measures that path).
    return {"jobs": jobs, "options": {"cache": cache}}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(
    total: int, database_url: str | None, concurrency: int, batch: int, tenant_cap: int | None, cache: bool
) -> None:
    on_postgres = bool(database_url) and not str(database_url).startswith("sqlite")
    with fresh_database(str(database_url), "reelflow_overhead") if on_postgres else nullcontext(database_url) as url:
        await run(total, url, concurrency, batch, tenant_cap, cache, on_postgres)


async def run(
    total: int, database_url: str | None, concurrency: int, batch: int, tenant_cap: int | None, cache: bool,
    on_postgres: bool,
) -> None:  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="reelflow-bench-"))
    limits = tmp / "limits.yaml"
    limits.write_text(f"tenants:\n  default: {{max_concurrent: {'null' if tenant_cap is None else tenant_cap}}}\n")
    settings = Settings(
        database_url=database_url or f"sqlite:///{tmp}/bench.db",
        storage_url=f"file://{tmp}/artifacts",
        limits_file=str(limits),
        _env_file=None,  # type: ignore[call-arg]
    )
    pairs = 100
    plans = max(1, total // (2 * pairs))
    worker_store = open_store(settings.database_url)
    await worker_store.migrate()
    client_store = open_store(settings.database_url)
    engine = Engine(client_store)
    worker = Worker(worker_store, settings=settings, providers=Providers({"sim": SimProvider()}),
                    concurrency=concurrency, batch_size=batch)
    t0 = time.perf_counter()
    ids = [await engine.submit(plan(pairs, cache)) for _ in range(plans)]
    submit_s = time.perf_counter() - t0
    tune_gc()  # as `reelflow worker` does
    server0 = postgres_cpu() if on_postgres else None
    cpu0 = time.process_time()
    runner = asyncio.create_task(worker.run())
    while worker.finished < plans * 2 * pairs:  # cheap: reading the database here would steal the loop
        await asyncio.sleep(0.1)
    worker_cpu = time.process_time() - cpu0  # this process: the worker's loop and its store thread
    server1 = postgres_cpu() if server0 is not None else None
    for eid in ids:
        await engine.wait(eid, poll_s=0.05)
    worker.stop()
    await runner
    starts: list[float] = []
    ends: list[float] = []
    handoffs: list[float] = []
    for eid in ids:
        state = (await engine.get(eid)).model_dump(mode="json")
        by_id = {j["id"]: j for j in state["jobs"]}
        assert state["status"] == "succeeded", state["error"]
        for j in state["jobs"]:
            starts.append(_ts(j["started_at"]))
            ends.append(_ts(j["finished_at"]))
            if j["depends_on"]:
                handoffs.append(_ts(j["started_at"]) - _ts(by_id[j["depends_on"][0]]["finished_at"]))
    n = len(starts)
    span = max(ends) - min(starts)
    print(f"store: {settings.database_url.split(':')[0]}  jobs: {n}  plans: {plans} x {2 * pairs}"
          f"  tenant cap: {'none' if tenant_cap is None else tenant_cap}  result cache: {'on' if cache else 'off'}")
    print(f"submit: {plans} plans in {submit_s:.2f} s ({n / submit_s:,.0f} jobs/s enqueued)")
    print(f"throughput: {(n - 1) / span:,.0f} jobs/s (first start to last finish: {span:.2f} s)")
    print(f"worker CPU: {worker_cpu:.2f} s, {worker_cpu / n * 1e6:.0f} us per job (the process, store thread included)")
    if server0 is not None and server1 is not None:
        server_cpu = server1 - server0
        print(f"PostgreSQL CPU: {server_cpu:.2f} s, {server_cpu / n * 1e6:.0f} us per job (the server's processes,"
              " on this machine's cores too)")
    print(f"hand-off (dependency done -> dependent started): p50 {statistics.median(handoffs) * 1000:.1f} ms,"
          f" p99 {pct(handoffs, 0.99) * 1000:.1f} ms, max {max(handoffs) * 1000:.1f} ms")
    await worker_store.close()
    await client_store.close()


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--database-url")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="jobs claimed per round trip")
    parser.add_argument("--tenant-cap", type=int, help="the tenant's max_concurrent (default: none)")
    parser.add_argument("--cache", action="store_true", help="plans with the result cache on (all but one job hit it)")
    args = parser.parse_args()
    print(speed_line(), flush=True)
    asyncio.run(main(args.jobs, args.database_url, args.concurrency, args.batch, args.tenant_cap, args.cache))
