"""Waiting on a real provider API: 1,000 Seedance jobs against the Replicate fake, each taking 10 s there,
then 20 s.

Two runs per latency: with callbacks (`reelflow serve --workers 1` with REELFLOW_PUBLIC_URL set, so every
prediction carries a webhook to our API) and with polling only (`reelflow worker`). For each it prints the
provider requests per job (creates, prediction reads, output downloads, everything the fake saw), the makespan
from the first submission to the last job finished (also as a multiple of the provider's time), and the CPU
per job of the reelflow process and of its children (the ffmpeg probes), over the run (start-up excluded).
A summary table ends the output.

Targets (issue 17): with callbacks, makespan at most 1.25x the provider's time (polling only: 1.40x) and at
most 5 ms of reelflow CPU per job, probes included; at most 2 requests per job with callbacks (the create and
the download: the webhook's body is the outcome), 12 polling.
Replicate's documented request rates (600 creates and 3,000 other requests a minute, built in) are lifted
unless `--provider-limits` keeps them (the fake enforces none); 1,000 creates then take at least 100 s.

`--drop-every N` (pay once, issue 13): the fake takes every Nth create and drops its answer (the prediction
runs and is billed; the worker only sees the connection close). Each mode then runs twice, without drops and
with them, and prints the provider creates per job (the worker finds the lost predictions in Replicate's list,
so this must stay 1.00), how many lost creates were adopted, the possible duplicate charges the executions
recorded (none: Replicate can be asked), and the makespan against the run without drops.

    python bench/providers.py [--jobs 1000] [--latency 10 20] [--only callbacks|polling] [--tenant-cap N]
                              [--drop-every N] [--provider-limits]

`--latency` takes one or more provider times in seconds (default: 10, then 20).

The bench submits as one tenant, so it lifts the built-in cap of 200 jobs at once per tenant unless
`--tenant-cap` sets one (then the makespan is at least jobs x latency / cap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.replicate import FakeReplicate
from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures
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


class DroppingReplicate(FakeReplicate):
    """The Replicate fake with the answer of every `drop_every`-th create request dropped after the prediction
    was made (its `accept_then_drop`, armed as that request arrives). Creates answered with a refusal still
    count; under concurrency the armed drop falls on the next create to be taken, so the share stays 1 in N."""

    def __init__(self, *args: Any, drop_every: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop_every = drop_every
        self.create_requests = 0
        self.armed = 0

    @property
    def dropped(self) -> int:
        """Creates whose answer was dropped so far (armed drops not yet used are pending in the fake)."""
        return self.armed - len(self._faults)

    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (
            self.drop_every
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and path.startswith("/v1/")
            and path.endswith("/predictions")
        ):
            self.create_requests += 1
            if self.create_requests % self.drop_every == 0:
                self.armed += 1
                self.accept_then_drop(1)
        await super()._asgi(scope, receive, send)


def process_cpu(pid: int) -> tuple[float, float] | None:
    """(CPU seconds of process `pid` itself, of its children it has waited for), from /proc; None where there
    is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd on (the name may hold spaces)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    tick = os.sysconf("SC_CLK_TCK")
    return (utime + stime) / tick, (cutime + cstime) / tick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Wait until `url` answers 200 (the API is up and its store reachable)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the reelflow process ended at start-up (exit {proc.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the reelflow process did not answer {url} within {timeout_s:g} s")


class Figures:
    """What one run measured, for the summary."""

    def __init__(self, makespan: float, server_ms: float | None, probes_ms: float | None, total_ms: float) -> None:
        self.makespan = makespan
        self.server_ms = server_ms
        """CPU ms per job of the reelflow process itself (None without /proc)."""
        self.probes_ms = probes_ms
        """CPU ms per job of its children (the ffmpeg probes)."""
        self.total_ms = total_ms
        """CPU ms per job of the process and its children, from this process's RUSAGE_CHILDREN (start-up and
        shutdown included)."""


async def run(
    mode: str,
    total: int,
    latency: float,
    tenant_cap: int | None,
    drop_every: int | None = None,
    *,
    provider_limits: bool = False,
) -> Figures:
    """One run of `total` jobs in `mode`; prints its figures and returns them."""
    tmp = Path(tempfile.mkdtemp(prefix=f"reelflow-providers-{mode}-"))
    url = f"sqlite:///{tmp}/bench.db"
    store = open_store(url)
    await store.migrate()
    limits = tmp / "limits.yaml"  # the one tenant's cap and Replicate's rates: none unless asked (see the docstring)
    cap = "null" if tenant_cap is None else tenant_cap
    rates = (
        "" if provider_limits else "providers:\n  replicate: {requests_per_minute: null, creates_per_minute: null}\n"
    )
    limits.write_text(f"{rates}tenants:\n  default: {{max_concurrent: {cap}}}\n")
    fake = DroppingReplicate(latency_s=latency, queue_s=0.0, drop_every=drop_every)
    with fake:
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
        log = (tmp / "reelflow.log").open("wb")  # its warnings, kept with the run's database
        proc = subprocess.Popen([sys.executable, "-m", "reelflow.cli", *cmd], env=env, stderr=log)
        await asyncio.sleep(2.0)  # let the process start (and the API listen) before the clock starts
        if mode == "callbacks":  # on a busy machine the start-up may take longer: its CPU is not the run's
            await ready(f"http://127.0.0.1:{port}/readyz", proc)
            await asyncio.sleep(0.5)
        engine = Engine(store)
        children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = (children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime)
        server_before = process_cpu(proc.pid)
        per_plan = 100
        t0 = time.time()
        ids = []
        for p in range(total // per_plan):
            ids.append(await engine.submit(seedance_plan(p, per_plan)))
        submitted = time.time() - t0
        duplicates = 0
        duplicate_usd = 0.0
        for eid in ids:
            state = await engine.wait(eid, poll_s=0.5, timeout=latency * 10 + 120)
            if state["status"] != "succeeded":
                raise SystemExit(f"{mode}: execution {eid} ended {state['status']}: {state['error']}")
            duplicates += int(state["possible_duplicates"])
            duplicate_usd += float(state["possible_duplicate_charge"])
        last = 0.0
        adopted = lost_answers = 0
        submitted_at: dict[tuple[str, str], float] = {}
        lags: list[float] = []
        for eid in ids:
            for e in await store.events(eid):
                if e.type == "job.submitted":
                    # when the fake took the create (an adopted prediction is submitted long before the
                    # worker learns its id), else when the worker recorded it
                    taken = fake.predictions.get(str(e.data.get("provider_job_id")))
                    submitted_at[(eid, e.job_key or "")] = taken.created if taken is not None else e.created_at
                elif e.type == "job.succeeded":
                    last = max(last, e.created_at)
                    lags.append(e.created_at - submitted_at.get((eid, e.job_key or ""), t0) - latency)
                elif e.type == "job.reconciled":
                    lost_answers += 1
                    adopted += 1 if e.data.get("adopted") else 0
        lags.sort()
        last_submit = max(submitted_at.values()) - t0
        server_after = process_cpu(proc.pid)  # the run's CPU, before the shutdown's
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        worker_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_cpu = resource.getrusage(resource.RUSAGE_SELF)
        cpu_worker = worker_cpu.ru_utime + worker_cpu.ru_stime - cpu_before[0]
        cpu_fake = own_cpu.ru_utime + own_cpu.ru_stime - cpu_before[1]
        makespan = last - t0
        server_ms = probes_ms = None
        if server_before is not None and server_after is not None:
            server_ms = (server_after[0] - server_before[0]) / total * 1000
            probes_ms = (server_after[1] - server_before[1]) / total * 1000
        total_ms = cpu_worker / total * 1000
        requests = len(fake.requests)
        kinds = {
            "creates": fake.creates,
            "reads": fake.gets,
            "lists": fake.lists,
            "downloads": len(fake.requests_to("/files/")),
            "secret": fake.secret_reads,
        }
        print(
            f"{mode:9s}  jobs {total}  latency {latency:g} s  "
            f"{f'drop every {drop_every}  ' if drop_every else ''}requests/job {requests / total:.2f} "
            f"({', '.join(f'{k} {v}' for k, v in kinds.items())}; webhooks sent {fake.webhooks_sent}"
            f"{' answered ' + str(dict(fake.webhook_answers)) if fake.webhook_answers else ''})  "
            f"makespan {makespan:.2f} s ({makespan / latency:.2f}x the provider's time, "
            f"{makespan / latency * 100 - 100:+.1f}%; submitting took {submitted:.2f} s)"
        )
        split = (
            f"the process {server_ms:.2f} ms + its children (ffmpeg probes) {probes_ms:.2f} ms over the run; "
            if server_ms is not None and probes_ms is not None
            else ""
        )
        print(f"{'':9s}  reelflow CPU per job: {split}{total_ms:.2f} ms in all, start-up and shutdown included")
        print(
            f"{'':9s}  last provider submission at {last_submit:.2f} s; finished after the provider's latency: "
            f"p50 {lags[len(lags) // 2]:.2f} s, p99 {lags[int(len(lags) * 0.99)]:.2f} s, max {lags[-1]:.2f} s; "
            f"CPU: reelflow process {cpu_worker:.1f} s (ffmpeg probes included), the fake and this client "
            f"{cpu_fake:.1f} s"
        )
        if drop_every:
            print(
                f"{'':9s}  pay once: create answers dropped {fake.dropped} (of {fake.create_requests} create "
                f"requests); provider creates per job {fake.creates / total:.2f}; reconciliations {lost_answers}, "
                f"adopted {adopted}; possible duplicates recorded {duplicates} (${duplicate_usd:.2f})"
            )
        print(f"{'':9s}  the reelflow process's log: {tmp / 'reelflow.log'}")
    await store.close()
    return Figures(makespan, server_ms, probes_ms, total_ms)


TARGET_X = {"callbacks": 1.25, "polling": 1.40}
"""Issue 17's makespan targets, as multiples of the provider's time."""
TARGET_CPU_MS = 5.0


async def main(
    total: int,
    latencies: list[float],
    only: str | None,
    tenant_cap: int | None,
    drop_every: int | None,
    provider_limits: bool = False,
) -> None:
    rows: list[tuple[str, float, Figures]] = []
    for latency in latencies:
        for mode in ("callbacks", "polling"):
            if only not in (None, mode):
                continue
            clean = await run(mode, total, latency, tenant_cap, provider_limits=provider_limits)
            rows.append((mode, latency, clean))
            if drop_every:
                dropped = (
                    await run(mode, total, latency, tenant_cap, drop_every, provider_limits=provider_limits)
                ).makespan
                print(
                    f"{mode:9s}  makespan with 1 create answer in {drop_every} dropped {dropped:.2f} s, without "
                    f"{clean.makespan:.2f} s ({(dropped / clean.makespan - 1) * 100:+.1f}%)"
                )
    print(f"\n{total} jobs per run; CPU in ms per job (process / its ffmpeg children / all, start-up and shutdown in)")
    print(f"{'mode':9s}  {'provider':>8s}  {'makespan':>8s}  {'x':>5s}  {'target':>6s}  {'CPU':>22s}  target")
    for mode, latency, f in rows:
        cpu = f"{f.server_ms:.2f} / {f.probes_ms:.2f} / " if f.server_ms is not None and f.probes_ms is not None else ""
        print(
            f"{mode:9s}  {latency:7g}s  {f.makespan:7.2f}s  {f.makespan / latency:5.2f}  {TARGET_X[mode]:5.2f}x  "
            f"{cpu + f'{f.total_ms:.2f}':>22s}  {TARGET_CPU_MS:g}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument(
        "--latency", type=float, nargs="+", default=[10.0, 20.0], help="the provider's time per job, in seconds"
    )
    parser.add_argument("--only", choices=["callbacks", "polling"])
    parser.add_argument("--tenant-cap", type=int, default=None, help="the tenant's max_concurrent (default: none)")
    parser.add_argument(
        "--drop-every",
        type=int,
        default=None,
        metavar="N",
        help="also run with the answer of every Nth create dropped after the prediction was made",
    )
    parser.add_argument(
        "--provider-limits",
        action="store_true",
        help="keep Replicate's documented request rates (600 creates, 3,000 other requests a minute)",
    )
    args = parser.parse_args()
    if args.drop_every is not None and args.drop_every < 1:
        parser.error("--drop-every must be 1 or more")
    print(speed_line(), flush=True)
    asyncio.run(main(args.jobs, args.latency, args.only, args.tenant_cap, args.drop_every, args.provider_limits))
