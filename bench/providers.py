"""Waiting on a real provider API: 1,000 Seedance jobs against the Replicate fake, each taking 20 s there.

Two runs: with callbacks (`reelflow serve --workers 1` with REELFLOW_PUBLIC_URL set, so every prediction
carries a webhook to our API) and with polling only (`reelflow worker`). For each it prints the provider
requests per job (creates, prediction reads, output downloads, everything the fake saw) and the makespan
from the first submission to the last job finished.

Targets: at most 3 requests per job with callbacks, at most 12 with polling, makespan within 10% of the
latency.

    python bench/providers.py [--jobs 1000] [--latency 20] [--only callbacks|polling] [--tenant-cap N]

The bench submits as one tenant, so it lifts the built-in cap of 200 jobs at once per tenant unless
`--tenant-cap` sets one (then the makespan is at least jobs x latency / cap).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.replicate import FakeReplicate
from reelflow.engine.scheduler import Engine
from reelflow.store import open_store


def seedance_plan(p: int, per_plan: int) -> dict[str, object]:
    """Plan `p` of a run: `per_plan` independent 5 s Seedance clips on Replicate."""
    jobs = [
        {
            "id": f"clip{i}",
            "type": "generate-video",
            "model": "replicate/bytedance/seedance-1-lite",
            "params": {"prompt": f"waves {p}-{i}", "duration": 5},
        }
        for i in range(per_plan)
    ]
    return {"jobs": jobs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run(mode: str, total: int, latency: float, tenant_cap: int | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"reelflow-providers-{mode}-"))
    url = f"sqlite:///{tmp}/bench.db"
    store = open_store(url)
    await store.migrate()
    limits = tmp / "limits.yaml"  # the one tenant's cap: none unless asked (see the docstring)
    limits.write_text(f"tenants:\n  default: {{max_concurrent: {'null' if tenant_cap is None else tenant_cap}}}\n")
    with FakeReplicate(latency_s=latency, queue_s=0.0) as fake:
        env = dict(
            os.environ,
            REELFLOW_DATABASE_URL=url,
            REELFLOW_STORAGE_URL=f"file://{tmp}/artifacts",
            REELFLOW_REPLICATE_BASE_URL=fake.base_url,
            REPLICATE_API_TOKEN=fake.token,
            REELFLOW_LOG_LEVEL="WARNING",
            REELFLOW_LIMITS_FILE=str(limits),
        )
        os.environ["REPLICATE_API_TOKEN"] = fake.token  # the submission checks the key is there
        if mode == "callbacks":
            port = free_port()
            env.update(REELFLOW_PUBLIC_URL=f"http://127.0.0.1:{port}", REPLICATE_WEBHOOK_SECRET=fake.webhook_secret)
            cmd = ["serve", "--port", str(port), "--workers", "1"]
        else:
            env.pop("REELFLOW_PUBLIC_URL", None)
            cmd = ["worker", "--concurrency", str(total)]
        proc = subprocess.Popen([sys.executable, "-m", "reelflow.cli", *cmd], env=env, stderr=subprocess.DEVNULL)
        await asyncio.sleep(2.0)  # let the process start (and the API listen) before the clock starts
        engine = Engine(store)
        children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = (children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime)
        per_plan = 100
        t0 = time.time()
        ids = []
        for p in range(total // per_plan):
            ids.append(await engine.submit(seedance_plan(p, per_plan)))
        submitted = time.time() - t0
        for eid in ids:
            state = await engine.wait(eid, poll_s=0.5, timeout=latency * 10 + 120)
            if state["status"] != "succeeded":
                raise SystemExit(f"{mode}: execution {eid} ended {state['status']}: {state['error']}")
        last = 0.0
        submitted_at: dict[tuple[str, str], float] = {}
        lags: list[float] = []
        for eid in ids:
            for e in await store.events(eid):
                if e.type == "job.submitted":
                    submitted_at[(eid, e.job_id or "")] = e.created_at
                elif e.type == "job.succeeded":
                    last = max(last, e.created_at)
                    lags.append(e.created_at - submitted_at.get((eid, e.job_id or ""), t0) - latency)
        lags.sort()
        last_submit = max(submitted_at.values()) - t0
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        worker_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_cpu = resource.getrusage(resource.RUSAGE_SELF)
        cpu_worker = worker_cpu.ru_utime + worker_cpu.ru_stime - cpu_before[0]
        cpu_fake = own_cpu.ru_utime + own_cpu.ru_stime - cpu_before[1]
        makespan = last - t0
        requests = len(fake.requests)
        kinds = {
            "creates": fake.creates,
            "reads": fake.gets,
            "downloads": len(fake.requests_to("/files/")),
            "secret": fake.secret_reads,
        }
        print(
            f"{mode:9s}  jobs {total}  latency {latency:g} s  requests/job {requests / total:.2f} "
            f"({', '.join(f'{k} {v}' for k, v in kinds.items())}; webhooks sent {fake.webhooks_sent}"
            f"{' answered ' + str(dict(fake.webhook_answers)) if fake.webhook_answers else ''})  "
            f"makespan {makespan:.2f} s ({makespan / latency * 100 - 100:+.1f}% over the latency; "
            f"submitting took {submitted:.2f} s)"
        )
        print(
            f"{'':9s}  last provider submission at {last_submit:.2f} s; finished after the provider's latency: "
            f"p50 {lags[len(lags) // 2]:.2f} s, p99 {lags[int(len(lags) * 0.99)]:.2f} s, max {lags[-1]:.2f} s; "
            f"CPU: reelflow process {cpu_worker:.1f} s (ffmpeg probes included), the fake and this client "
            f"{cpu_fake:.1f} s"
        )
    await store.close()


async def main(total: int, latency: float, only: str | None, tenant_cap: int | None) -> None:
    for mode in ("callbacks", "polling"):
        if only in (None, mode):
            await run(mode, total, latency, tenant_cap)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=20.0)
    parser.add_argument("--only", choices=["callbacks", "polling"])
    parser.add_argument("--tenant-cap", type=int, default=None, help="the tenant's max_concurrent (default: none)")
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.latency, args.only, args.tenant_cap))
