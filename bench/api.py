"""HTTP API latency and throughput: `POST /v1/executions` and `GET /v1/executions/{id}` on loopback.

The server is `reelflow serve --workers 1` (SQLite, one embedded worker, so the submitted plans really run)
in its own process; the load comes from 50 concurrent httpx clients (one keep-alive connection each) here.

Phases:
1. submit at a fixed rate (`--rate`, default 200 req/s, for `--seconds`): open loop, request i is due at
   t0 + i/rate whatever happened before; latency is measured from the due time, so a client that falls
   behind shows up in the figures instead of hiding (no coordinated omission);
2. status (`GET /v1/executions/{id}` of the executions just submitted) at the same fixed rate;
3. the maximum sustained rate of each: the 50 clients in a closed loop, as fast as the server answers
   (skipped with --diagnose; marked "client-bound" when this process, not the server, ran out of CPU).

Targets at 200 req/s: submit p99 < 50 ms, status p99 < 20 ms.

    python bench/api.py [--rate 200] [--seconds 10] [--clients 50] [--max-seconds 5] [--profile out.prof]

Large plans: `--jobs 200` submits plans of 200 independent `sim` jobs instead (target: submit p99 < 50 ms) and
measures submission alone (no status phases; with `--workers 0` nothing runs them), e.g.
`python bench/api.py --jobs 200 --workers 0 --rate 10 --clients 10 --max-seconds 0`; `--database-url
postgresql://…/empty_db` runs the server on that (empty) PostgreSQL database instead of a fresh SQLite file.

`--profile FILE` runs the server under cProfile (its main thread, the event loop) and writes the stats there.
`--diagnose` runs the same app (`create_app(workers=N)` under uvicorn, as `reelflow serve` does) with probes
and prints where the time goes: every store call (its wait for the store's single SQLite thread, and its run
time there), garbage-collector pauses, event-loop stalls, and the in-app time of each route; add
`--try-tune-gc` to see the effect of tuning the collector as `reelflow worker` does, `--try-worker-store` to
give the embedded worker a store of its own, or compare with `--worker-process` (the worker in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from machine import speed_line  # bench/machine.py: the yardstick printed beside the figures

PLAN = {
    "jobs": [
        {"id": "still", "type": "generate-image", "model": "sim/image", "params": {"latency_s": 0.5, "cost_usd": 0.01}},
        {"id": "clip", "type": "generate-video", "model": "sim/video",
         "params": {"latency_s": 0.5, "prompt": "$still.url", "cost_usd": 0.02}},
    ],
    "metadata": {"bench": "api"},
}
SUBMIT_P99_MS = 50.0
STATUS_P99_MS = 20.0


def big_plan(jobs: int) -> dict[str, Any]:
    """A plan of `jobs` independent `sim` jobs (a fan-out of shots, say), each with its own prompt."""
    return {
        "jobs": [{"id": f"shot{i:03d}", "type": "generate-video", "model": "sim/video",
                  "params": {"latency_s": 0.5, "prompt": f"shot {i} of the scene", "cost_usd": 0.01}}
                 for i in range(jobs)],
        "metadata": {"bench": "api", "jobs": jobs},
    }  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Server:
    """`reelflow serve --workers 1` on a fresh SQLite database, in its own process."""

    def __init__(
        self, workers: int, profile: str | None, diagnose: bool = False, tune_gc: bool = False,
        worker_process: bool = False, own_store: bool = False, database_url: str | None = None,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="reelflow-bench-api-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            REELFLOW_DATABASE_URL=database_url or f"sqlite:///{self.tmp}/bench.db",
            REELFLOW_STORAGE_URL=f"file://{self.tmp}/artifacts",
            REELFLOW_PUBLIC_URL=self.url,
            REELFLOW_LOG_LEVEL="WARNING",
        )
        self.workers = workers
        self.profile = profile
        self.diagnosis = self.tmp / "diagnosis.json" if diagnose or tune_gc or own_store else None
        self.tune_gc = tune_gc
        self.own_store = own_store
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_process = worker_process
        self.worker: subprocess.Popen[bytes] | None = None
        self.key = ""

    def start(self) -> None:
        made = subprocess.run(
            [sys.executable, "-m", "reelflow.cli", "keys", "create", "--tenant", "bench", "--json"],
            env=self.env, capture_output=True, text=True, check=True, timeout=60,
        )
        self.key = json.loads(made.stdout)["api_key"]
        cmd = [sys.executable]
        if self.profile:
            cmd += ["-m", "cProfile", "-o", self.profile]
        if self.diagnosis is not None:
            cmd += [__file__, "--serve-diagnosed", str(self.port), "--workers", str(self.workers),
                    "--diagnosis", str(self.diagnosis), *(["--try-tune-gc"] if self.tune_gc else []),
                    *(["--try-worker-store"] if self.own_store else [])]
        else:
            cmd += ["-m", "reelflow.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(self.workers)]
        log = (self.tmp / "server.log").open("wb")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        if self.worker_process:
            self.worker = subprocess.Popen([sys.executable, "-m", "reelflow.cli", "worker"], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {(self.tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not answer /healthz within 30 s")

    def cpu(self) -> float:
        """CPU seconds of the server (and of its worker process, when there is one)."""
        return sum(cpu_seconds(p.pid) for p in (self.proc, self.worker) if p is not None)

    def stop(self) -> None:
        for proc in (self.worker, self.proc):
            if proc is None:
                continue
            proc.send_signal(signal.SIGINT)  # both shut down cleanly (and cProfile writes its stats)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, from the due time (open loop) or the send
    lags: list[float] = field(default_factory=list)  # how late each request left the client (open loop)
    service: list[float] = field(default_factory=list)  # send to answer, client lag left out
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def line(self, target_ms: float | None = None) -> str:
        n = len(self.latencies)
        rate = n / self.elapsed if self.elapsed else 0.0
        p50, p99 = pct(self.latencies, 0.5) * 1000, pct(self.latencies, 0.99) * 1000
        verdict = ""
        if target_ms is not None:
            verdict = f"  [{'ok' if p99 < target_ms else 'MISSED'}: p99 target < {target_ms:g} ms]"
        lag = ""
        if self.lags:
            lag = (f", client lag p99 {pct(self.lags, 0.99) * 1000:.1f} ms"
                   f" (send-to-answer p99 {pct(self.service, 0.99) * 1000:.1f} ms)")
        errors = f", errors {self.errors}" if self.errors else ""
        if self.client_cpu / max(self.elapsed, 1e-9) > 0.85:
            errors += " (client-bound: the server could do more)"
        return (
            f"{self.name:<28} {n:>6} ok in {self.elapsed:5.1f} s = {rate:7.1f} req/s | p50 {p50:6.1f} ms"
            f"  p99 {p99:6.1f} ms  max {max(self.latencies, default=0) * 1000:6.1f} ms"
            f" | server CPU {self.server_cpu / max(self.elapsed, 1e-9) * 100:3.0f}%"
            f", client CPU {self.client_cpu / max(self.elapsed, 1e-9) * 100:3.0f}%{lag}{errors}{verdict}"
        )


Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def run_phase(
    server: Server,
    clients: list[httpx.AsyncClient],
    name: str,
    call: Call,
    expect: int,
    *,
    rate: float | None,
    seconds: float,
    on_ok: Callable[[httpx.Response], None] | None = None,
) -> Result:
    """Open loop at `rate` (request i due at t0 + i/rate), or a closed loop as fast as possible (rate None)."""
    result = Result(name)
    total = int(rate * seconds) if rate else None
    next_index = 0
    cpu0, own0 = server.cpu(), own_cpu_seconds()
    t0 = time.perf_counter() + 0.05
    stop_at = t0 + seconds

    async def client_loop(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while True:
            i = next_index
            next_index += 1
            if total is not None:
                if i >= total:
                    return
                due = t0 + i / rate  # type: ignore[operator]
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                due = time.perf_counter()
                if due >= stop_at:
                    return
            sent = time.perf_counter()
            try:
                r = await call(http)
            except httpx.HTTPError as exc:
                result.error(type(exc).__name__)
                continue
            done = time.perf_counter()
            if r.status_code != expect:
                result.error(str(r.status_code))
                continue
            result.latencies.append(done - due)
            result.service.append(done - sent)
            if total is not None:
                result.lags.append(max(0.0, sent - due))
            if on_ok is not None:
                on_ok(r)

    await asyncio.gather(*(client_loop(c) for c in clients))
    result.elapsed = time.perf_counter() - t0
    result.server_cpu = server.cpu() - cpu0
    result.client_cpu = own_cpu_seconds() - own0
    return result


async def bench(args: argparse.Namespace) -> int:
    if args.worker_process:
        args.workers = 0
    server = Server(workers=args.workers, profile=args.profile, diagnose=args.diagnose, tune_gc=args.try_tune_gc,
                    worker_process=args.worker_process, own_store=args.try_worker_store,
                    database_url=args.database_url)
    server.start()
    tried = (", gc tuned" if args.try_tune_gc else "") + (", worker on its own store" if args.try_worker_store else "")
    probes = f" (probed{tried})" if server.diagnosis else ""
    pid = server.proc.pid if server.proc else "?"
    worker = " + `reelflow worker` in its own process" if args.worker_process else ""
    store = "PostgreSQL" if (args.database_url or "").startswith("postgres") else "SQLite"
    plan = big_plan(args.jobs) if args.jobs else PLAN
    print(f"server: reelflow serve --workers {args.workers}{probes}{worker} ({store}) pid {pid}"
          f" at {server.url}; {args.clients} httpx clients on loopback; {os.cpu_count()} CPUs")
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Authorization": f"Bearer {server.key}"}
    clients = [httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits, timeout=30)
               for _ in range(args.clients)]
    ids: list[str] = []
    missed = False
    try:
        body = json.dumps(plan).encode()
        post_headers = {"Content-Type": "application/json"}

        def submit(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
            return http.post("/v1/executions", content=body, headers=post_headers)

        def status(http: httpx.AsyncClient) -> Awaitable[httpx.Response]:
            return http.get(f"/v1/executions/{random.choice(ids)}")

        def keep(r: httpx.Response) -> None:
            ids.append(r.json()["id"])

        # warm up at the paced rate (a closed loop here would skew the server-side diagnosis): connections open,
        # code paths hot, the first ids to read
        await run_phase(server, clients, "warm-up", submit, 202, rate=args.rate, seconds=1.0, on_ok=keep)

        results = []
        sub = await run_phase(server, clients, f"submit{f' {args.jobs} jobs' if args.jobs else ''} @ {args.rate:g}/s",
                              submit, 202, rate=args.rate, seconds=args.seconds, on_ok=keep)
        print(sub.line(SUBMIT_P99_MS))
        results.append((sub, SUBMIT_P99_MS))
        if args.jobs:  # large plans: submission alone
            print(f"executions submitted: {len(ids)} of {args.jobs} jobs each")
            missed |= bool(sub.errors) or pct(sub.latencies, 0.99) * 1000 >= SUBMIT_P99_MS
            return 1 if missed and args.strict else 0
        st = await run_phase(server, clients, f"status @ {args.rate:g}/s", status, 200, rate=args.rate,
                             seconds=args.seconds)
        print(st.line(STATUS_P99_MS))
        results.append((st, STATUS_P99_MS))
        if args.max_seconds > 0 and not server.diagnosis:  # saturation would swamp the diagnosis
            top_sub = await run_phase(server, clients, "submit, max (closed loop)", submit, 202, rate=None,
                                      seconds=args.max_seconds, on_ok=keep)
            print(top_sub.line())
            top_st = await run_phase(server, clients, "status, max (closed loop)", status, 200, rate=None,
                                     seconds=args.max_seconds)
            print(top_st.line())
        for r, target in results:
            missed |= bool(r.errors) or pct(r.latencies, 0.99) * 1000 >= target
        print(f"executions submitted: {len(ids)}")
    finally:
        for c in clients:
            await c.aclose()
        server.stop()
        if server.diagnosis is not None and server.diagnosis.exists():
            print_diagnosis(json.loads(server.diagnosis.read_text()))
        if args.profile:
            print(f"server profile (cProfile, event-loop thread): {args.profile}")
    return 1 if missed and args.strict else 0


# ---------------------------------------------------------------------------------- diagnosis (server side)
def serve_diagnosed(port: int, workers: int, out: Path, tune_gc: bool, own_store: bool) -> None:
    """`reelflow serve` with probes; writes what they saw to `out` when it stops (SIGINT).

    Experiments for a fix: with `tune_gc`, the collector is tuned after start-up as `reelflow worker` does;
    with `own_store`, the embedded workers run in the same event loop but on a store (SQLite connection and
    thread) of their own instead of the API's.
    """
    import gc
    import logging

    import uvicorn

    from reelflow.api import create_app
    from reelflow.store.sqlite import SQLiteStore

    store_calls: dict[str, list[tuple[float, float]]] = {}  # name -> (wait for the thread, run time)
    gc_pauses: list[tuple[int, float]] = []
    loop_lags: list[float] = []
    routes: dict[str, list[float]] = {}
    original_run = SQLiteStore._run

    async def timed_run(self: SQLiteStore, fn: Callable[..., Any], *args: Any) -> Any:
        queued = time.perf_counter()
        seen: dict[str, float] = {}

        def run(*a: Any) -> Any:
            seen["start"] = time.perf_counter()
            try:
                return fn(*a)
            finally:
                seen["end"] = time.perf_counter()

        try:
            return await original_run(self, run, *args)
        finally:
            if "end" in seen:
                name = getattr(fn, "__name__", "?").lstrip("_")
                store_calls.setdefault(name, []).append((seen["start"] - queued, seen["end"] - seen["start"]))

    SQLiteStore._run = timed_run  # type: ignore[method-assign]

    gc_started = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_started
        if phase == "start":
            gc_started = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_started))

    gc.callbacks.append(on_gc)

    app = create_app(workers=0 if own_store else workers)
    inner = app.build_middleware_stack

    def timed_stack() -> Any:
        asgi = inner()

        async def timed(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await asgi(scope, receive, send)
                return
            t0 = time.perf_counter()
            try:
                await asgi(scope, receive, send)
            finally:
                path = scope["path"]
                key = f"{scope['method']} " + ("/v1/executions/{id}" if path.startswith("/v1/executions/") else path)
                routes.setdefault(key, []).append(time.perf_counter() - t0)

        return timed

    app.build_middleware_stack = timed_stack  # type: ignore[method-assign]

    class Probed(uvicorn.Server):
        embedded: list[tuple[Any, asyncio.Task[None]]] = []  # noqa: RUF012

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if own_store:
                from reelflow.config import get_settings
                from reelflow.engine.worker import Worker
                from reelflow.store import open_store

                for _ in range(workers):
                    w = Worker(open_store(get_settings().database_url), settings=get_settings())
                    self.embedded.append((w, asyncio.get_running_loop().create_task(w.run())))
            if tune_gc:
                from reelflow.engine.worker import tune_gc as tune

                tune()
            asyncio.get_running_loop().create_task(self.watch_loop())

        async def shutdown(self, sockets: Any = None) -> None:
            for w, _ in self.embedded:
                w.stop()
            for w, task in self.embedded:
                await task
                await w.store.close()
            await super().shutdown(sockets=sockets)

        async def watch_loop(self) -> None:
            while not self.should_exit:
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                loop_lags.append(time.perf_counter() - t0 - 0.005)

    logging.basicConfig(level=logging.WARNING)
    try:  # uvicorn re-raises the SIGINT it shut down on once it is done
        Probed(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)).run()
    finally:
        out.write_text(json.dumps({"store": store_calls, "gc": gc_pauses, "loop_lag": loop_lags, "routes": routes}))


def print_diagnosis(d: dict[str, object]) -> None:
    def ms(v: float) -> str:
        return f"{v * 1000:7.1f}"

    store = d["store"]
    assert isinstance(store, dict)
    print("\nstore calls (one SQLite thread per process; wait = queued behind other calls, run = on the thread):")
    print(f"  {'call':<22}{'count':>7}{'run p50':>9}{'run p99':>9}{'run max':>9}{'run sum s':>10}"
          f"{'wait p99':>9}{'wait max':>9}")
    rows = sorted(store.items(), key=lambda kv: -sum(r for _, r in kv[1]))
    for name, calls in rows:
        waits = [w for w, _ in calls]
        runs = [r for _, r in calls]
        print(f"  {name:<22}{len(calls):>7}{ms(pct(runs, 0.5)):>9}{ms(pct(runs, 0.99)):>9}{ms(max(runs)):>9}"
              f"{sum(runs):>10.2f}{ms(pct(waits, 0.99)):>9}{ms(max(waits)):>9}")
    pauses = d["gc"]
    assert isinstance(pauses, list)
    for gen in (0, 1, 2):
        p = [t for g, t in pauses if g == gen]
        if p:
            print(f"gc generation {gen}: {len(p)} collections, total {sum(p):.2f} s, p99 {ms(pct(p, 0.99))} ms,"
                  f" max {ms(max(p))} ms")
    lags = d["loop_lag"]
    assert isinstance(lags, list)
    if lags:
        print(f"event-loop lag (5 ms ticker): p50 {ms(pct(lags, 0.5))} ms, p99 {ms(pct(lags, 0.99))} ms,"
              f" max {ms(max(lags))} ms; ticks late > 20 ms: {sum(1 for x in lags if x > 0.02)}")
    routes = d["routes"]
    assert isinstance(routes, dict)
    for route, times in sorted(routes.items(), key=lambda kv: -len(kv[1])):
        if len(times) >= 10:
            print(f"in-app time {route:<26} n={len(times):>6} p50 {ms(pct(times, 0.5))} ms"
                  f"  p99 {ms(pct(times, 0.99))} ms  max {ms(max(times))} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second in the paced phases")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each paced phase")
    parser.add_argument("--clients", type=int, default=50, help="concurrent httpx clients (one connection each)")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="length of each max-rate phase (0: skip)")
    parser.add_argument("--workers", type=int, default=1, help="embedded workers in the server (serve --workers)")
    parser.add_argument("--worker-process", action="store_true",
                        help="compare: `serve --workers 0` plus `reelflow worker` in a process of its own")
    parser.add_argument("--jobs", type=int, default=0,
                        help="submit plans of this many sim jobs instead of the 2-job plan (submission alone)")
    parser.add_argument("--database-url", help="the server's database (an empty PostgreSQL one); default SQLite")
    parser.add_argument("--profile", help="run the server under cProfile and write the stats to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--diagnose", action="store_true", help="probe the server and print where the time goes")
    parser.add_argument("--try-tune-gc", action="store_true",
                        help="with --diagnose: tune the server's garbage collector as `reelflow worker` does")
    parser.add_argument("--try-worker-store", action="store_true",
                        help="with --diagnose: embedded workers get a store (SQLite connection, thread) of their own")
    parser.add_argument("--serve-diagnosed", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--diagnosis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_diagnosed:
        serve_diagnosed(args.serve_diagnosed, args.workers, Path(args.diagnosis), args.try_tune_gc,
                        args.try_worker_store)
        return
    print(speed_line(), flush=True)
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
