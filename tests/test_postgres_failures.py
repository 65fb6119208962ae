"""The failure modes of a queue on PostgreSQL, each provoked for real: the server restarting under load, two
webhook delivery loops racing, a worker whose event loop stalls, a long transaction pinning the cleanup horizon,
and a database that does not come back (the API answers 503, no traceback).

The LISTEN connection being killed is in test_store.py; crashed workers and caps across processes in
test_worker_processes.py and test_limits.py, which run on both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from apiserver import ApiServer
from conftest import WorkerFactory, sim_job
from fakes.replicate import FakeReplicate
from pgutil import PG_URL, reachable
from reelflow.api.app import create_app
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.errors import StoreBusy
from reelflow.providers.base import ProgressReporter, ProviderResult, Task
from reelflow.providers.sim import SimProvider
from reelflow.store import open_store
from reelflow.store.postgres import PostgresStore
from reelflow.webhooks import WebhookDispatcher
from test_webhooks import Receiver
from test_worker_processes import start_worker

pytestmark = pytest.mark.postgres_only

@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Webhook receivers listen on loopback."""
    return settings.model_copy(update={"allow_private_urls": True})


async def wait_for(predicate: Any, timeout: float = 20.0, every: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


# ------------------------------------------------------------------------------------------ the server restarts
def cluster() -> list[str] | None:
    """`pg_ctlcluster <version> main` when this machine runs the test server with Debian's tools, as root."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions or "127.0.0.1" not in PG_URL:
        return None
    name = os.environ.get("REELFLOW_TEST_POSTGRES_CLUSTER", "main")  # another cluster keeps restarts to itself
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], name]


def ctl(action: str, *args: str) -> None:
    """Stop or start the cluster. Call it off the test's event loop (`asyncio.to_thread`): a connection the test's own
    pool had begun to open when the server began to stop would otherwise wait, with the loop, for the stop, and the
    stop for it (PostgreSQL waits up to `authentication_timeout`, 60 s, for its startup packet)."""
    command = cluster()
    assert command is not None
    subprocess.run([*command, action, *args], check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(
    cluster() is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="restarting PostgreSQL needs Debian's pg_ctlcluster, root, and the server on 127.0.0.1",
)
async def test_the_database_restarting_mid_run_loses_nothing(
    settings: Settings, engine: Engine, store: PostgresStore, worker_env: dict[str, str], tmp_path: Path
) -> None:
    assert cluster() is not None, "CI runs this test: pg_ctlcluster, root and a local server are required"
    # An API server (no embedded worker) and a worker process, both on this test's database.
    api = ApiServer(settings, workers=0).start()
    # Leases of 60 s, as in production (the suite's 5 s could run out while the pool reconnects after the 3 s
    # outage, and the worker would then rightly take its own expired jobs again).
    env = {**worker_env, "REELFLOW_LEASE_SECONDS": "60"}
    worker = start_worker(env, tmp_path, "worker", "--concurrency", "50")
    try:
        key = api.new_key("default").api_key
        http = api.client(key)
        ids = []
        for n in range(12):  # chains of three with a fan-in, each step taking a moment
            plan = {
                "jobs": [
                    sim_job("a", latency_s=0.4 + 0.05 * (n % 4)),
                    sim_job("b", latency_s=0.5, prompt="$a"),
                    sim_job("c", latency_s=0.3),
                    sim_job("d", latency_s=0.2, depends_on=["b", "c"]),
                ],
                "options": {"cache": False},
            }
            r = http.post("/v1/executions", json=plan)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])

        async def working() -> bool:
            state = await engine.get(ids[-1])
            return any(j.status == "running" for j in state.jobs)

        await wait_for(working, what="jobs running before the restart")
        try:
            await asyncio.to_thread(ctl, "stop", "-m", "fast")  # every connection is cut; nothing answers on 5432
            assert not reachable()
            down_for = 3.0
            # A request made while the database is away waits for it, then answers normally.
            pending = asyncio.ensure_future(asyncio.to_thread(http.get, f"/v1/executions/{ids[0]}", timeout=60))
            await asyncio.sleep(down_for)
        finally:
            await asyncio.to_thread(ctl, "start")
        answer = await pending
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == ids[0]

        for eid in ids:
            state = await engine.wait(eid, timeout=60, poll_s=0.2)
            assert state["status"] == "succeeded", (eid, state["error"])
            events = await store.events(eid)
            done = Counter(e.job_key for e in events if e.type == "job.succeeded")
            assert done == {"a": 1, "b": 1, "c": 1, "d": 1}, done  # each job finished exactly once
            assert [e.type for e in events].count("execution.succeeded") == 1
            # Leases (60 s) outlived the outage: nothing was taken over or run a second time.
            assert {j["attempts"] for j in state["jobs"]} == {1}
        assert worker.poll() is None, "the worker process survived the outage"
        r = http.get("/v1/executions", params={"limit": 100})
        assert r.status_code == 200 and len(r.json()["data"]) == len(ids)
    finally:
        if not reachable():
            await asyncio.to_thread(ctl, "start")
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 30)
        api.stop()
    log = (tmp_path / "worker.log").read_text()
    print(log)
    assert "PostgreSQL unreachable" in log  # the worker did meet the outage, and rode it out


@pytest.mark.skipif(
    cluster() is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="restarting PostgreSQL needs Debian's pg_ctlcluster, root, and the server on 127.0.0.1",
)
async def test_a_database_restart_pays_each_replicate_prediction_once(
    settings: Settings,
    engine: Engine,
    store: PostgresStore,
    worker_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paid work across a 3 s restart: 24 Seedance jobs on the Replicate fake, a worker process polling them
    while PostgreSQL stops and starts. Each job creates exactly one prediction and succeeds on its first
    attempt: the worker kept its jobs (leases outlive the outage), kept waiting on Replicate, and wrote the
    provider ids and outcomes once the database was back."""
    assert cluster() is not None, "CI runs this test: pg_ctlcluster, root and a local server are required"
    with FakeReplicate(latency_s=2.5, queue_s=0.0) as fake:
        env = {
            **worker_env,
            "REELFLOW_LEASE_SECONDS": "60",
            "REELFLOW_REPLICATE_BASE_URL": fake.base_url,
            "REPLICATE_API_TOKEN": fake.token,
        }
        monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)  # submission checks the key is configured
        worker = start_worker(env, tmp_path, "worker", "--concurrency", "50")
        try:
            ids = []
            for n in range(6):
                plan = {
                    "jobs": [
                        {
                            "id": f"clip{i}",
                            "type": "generate-video",
                            "model": "replicate/bytedance/seedance-1-lite",
                            "params": {"prompt": f"waves {n}-{i}", "duration": 5},
                        }
                        for i in range(4)
                    ],
                    "options": {"cache": False},
                }
                ids.append(await engine.submit(plan))

            async def all_created() -> bool:
                return fake.creates >= 24

            await wait_for(all_created, what="every prediction created before the restart")
            try:
                await asyncio.to_thread(ctl, "stop", "-m", "fast")
                await asyncio.sleep(3.0)  # the predictions end at Replicate while the database is away
            finally:
                await asyncio.to_thread(ctl, "start")
            for eid in ids:
                state = await engine.wait(eid, timeout=60, poll_s=0.2)
                assert state["status"] == "succeeded", (eid, state["error"])
                assert {j["attempts"] for j in state["jobs"]} == {1}
                assert all(j["provider_job_id"] in fake.predictions for j in state["jobs"])
            assert fake.creates == 24, f"{fake.creates} predictions created for 24 jobs"
            assert worker.poll() is None
        finally:
            if not reachable():
                await asyncio.to_thread(ctl, "start")
            worker.send_signal(signal.SIGTERM)
            await asyncio.to_thread(worker.wait, 30)
    assert "PostgreSQL unreachable" in (tmp_path / "worker.log").read_text()


class Cuttable:
    """A TCP relay to the PostgreSQL server that can be cut: open connections are dropped and new ones
    refused, as when the database host goes away."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone would not
        self.listener.close()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


async def test_a_database_that_stays_away_gets_503_problems_not_tracebacks(settings: Settings) -> None:
    parts = urlsplit(settings.database_url)
    relay = Cuttable((parts.hostname or "127.0.0.1", parts.port or 5432))
    url = urlunsplit((parts.scheme, f"{parts.username}@127.0.0.1:{relay.port}", parts.path, parts.query, ""))
    store = PostgresStore(url, outage_s=1.0)
    api = ApiServer(settings, app=create_app(settings, store=store, workers=0)).start()
    try:
        key = api.new_key("default").api_key
        http = api.client(key)
        assert http.get("/v1/executions").status_code == 200
        assert http.get("/readyz").status_code == 200
        relay.cut()
        started = time.monotonic()
        r = http.get("/v1/executions")
        waited = time.monotonic() - started
        assert r.status_code == 503, (waited, r.text[:300])
        assert 1.0 <= waited < 10  # it retried for outage_s before giving up
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"] == "5"
        body = r.json()
        assert body["status"] == 503 and body["title"] == "Database unavailable"
        assert "unreachable" in body["detail"] and "Traceback" not in r.text
        r = http.post("/v1/executions", json={"jobs": [sim_job("a")]})
        assert r.status_code == 503 and r.json()["title"] == "Database unavailable"
        assert http.get("/readyz").status_code == 503
    finally:
        api.call(store.close())  # the store lives in the server's event loop
        api.stop()


# ------------------------------------------------------------------------------------ two delivery loops race
async def test_two_delivery_loops_deliver_each_event_exactly_once(
    settings: Settings, engine: Engine, store: PostgresStore, running_worker: WorkerFactory
) -> None:
    receiver = Receiver()
    receiver.start()
    # Two processes' worth of delivery loops: separate stores (own pools), separate owners.
    stores = [open_store(settings.database_url), open_store(settings.database_url)]
    loops = [
        WebhookDispatcher(s, settings=settings, owner=f"loop-{i}", poll_s=0.01, batch=5)
        for i, s in enumerate(stores)
    ]
    tasks = [asyncio.create_task(d.run()) for d in loops]
    try:
        ids = []
        for _ in range(25):
            plan = {
                "jobs": [sim_job("a", latency_s=0), sim_job("b", latency_s=0, prompt="$a")],
                "webhook": receiver.url,
                "options": {"webhook_events": ["execution.succeeded", "job.succeeded"], "cache": False},
            }
            ids.append(await engine.submit(plan))
        async with running_worker(deliver_webhooks=False):
            for eid in ids:
                assert (await engine.wait(eid, timeout=30, poll_s=0.05))["status"] == "succeeded"
        expected = 25 * 3  # job.succeeded twice, execution.succeeded once

        async def all_delivered() -> bool:
            return len(receiver.at()) >= expected

        await wait_for(all_delivered, timeout=30, what=f"{expected} deliveries")
        await asyncio.sleep(0.5)  # a duplicate, if any, would arrive now
        hits = receiver.at()
        ids_seen = Counter(h.headers["webhook-id"] for h in hits)
        assert len(hits) == expected, f"{len(hits)} requests for {expected} events"
        assert set(ids_seen.values()) == {1}, [k for k, v in ids_seen.items() if v > 1]
        for eid in ids:
            for d in (await store.list_deliveries("default", eid)).data:
                assert d.status == "delivered" and len(d.attempts) == 1
        types = Counter(h.event["type"] for h in hits)
        assert types == {"job.succeeded": 50, "execution.succeeded": 25}
    finally:
        for d in loops:
            d.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        for s in stores:
            await s.close()
        receiver.stop()


# ------------------------------------------------------------------------------------- a stalled event loop
class StallingSim(SimProvider):
    """The sim provider, but its wait blocks the whole event loop for `stall_s` first (CPU-bound work in the
    loop, a synchronous library call, a long GC pause: the worker is alive but its loop does not turn)."""

    def __init__(self, stall_s: float) -> None:
        super().__init__()
        self.stall_s = stall_s

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        await asyncio.sleep(0.3)  # the test sees the job held, and its provider id gets written
        time.sleep(self.stall_s)  # deliberately blocking
        return await super().wait(task, provider_id, report)


@pytest.mark.parametrize(("lease_s", "stall_s", "kept"), [(4.0, 2.5, True), (1.5, 4.0, False)])
async def test_a_stalled_event_loop_keeps_its_leases_while_shorter_than_the_lease(
    settings: Settings, engine: Engine, store: PostgresStore, worker_env: dict[str, str], tmp_path: Path,
    running_worker: WorkerFactory, lease_s: float, stall_s: float, kept: bool,
) -> None:
    settings.lease_seconds = lease_s
    eid = await engine.submit({"jobs": [sim_job("slow", latency_s=0.5)], "options": {"cache": False}})
    other: subprocess.Popen[bytes] | None = None
    async with running_worker(providers_={"sim": StallingSim(stall_s)}) as stalled:
        async def held() -> bool:
            return bool(stalled.held)

        await wait_for(held, what="the first worker holds the job")
        # A second worker process polls for work all along (with the same lease) while the first one stalls.
        other = start_worker(worker_env | {"REELFLOW_LEASE_SECONDS": str(lease_s)}, tmp_path, "other")
        state = await engine.wait(eid, timeout=30, poll_s=0.1)
    other.send_signal(signal.SIGTERM)
    await asyncio.to_thread(other.wait, 30)
    job = state["jobs"][0]
    assert state["status"] == "succeeded" and job["status"] == "succeeded"
    runners = [e.data["worker"] for e in await store.events(eid) if e.type == "job.running"]
    succeeded = [e for e in await store.events(eid) if e.type == "job.succeeded"]
    assert len(succeeded) == 1  # never finished twice
    if kept:  # the heartbeat after the stall came in time: nobody else touched the job
        assert job["attempts"] == 1 and runners == [stalled.id]
    else:  # past its lease the job went to the other worker; the stalled one's late result was refused
        assert job["attempts"] == 2 and runners[0] == stalled.id and runners[1] != stalled.id
        requeued = [e for e in await store.events(eid) if e.type == "job.requeued"]
        assert len(requeued) == 1


# ------------------------------------------------------------------------ a long transaction pins the horizon
async def test_claims_go_on_while_a_repeatable_read_transaction_pins_the_cleanup_horizon(
    settings: Settings, engine: Engine, store: PostgresStore, running_worker: WorkerFactory
) -> None:
    # bench/scale.py --hold-snapshot measures the throughput; here: every job still runs, exactly once.
    async with await psycopg.AsyncConnection.connect(settings.database_url) as reader:
        await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await reader.execute("SELECT count(*) FROM jobs")  # the snapshot is taken: dead rows stay from now on
        horizon = "SELECT backend_xmin FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        before = await (await reader.execute(horizon)).fetchone()
        assert before is not None and before[0] is not None  # it really holds a horizon
        plan = {"jobs": [sim_job(f"j{i}", latency_s=0) for i in range(100)], "options": {"cache": False}}
        ids = [await engine.submit(plan) for _ in range(10)]
        async with running_worker():
            for eid in ids:
                state = await engine.wait(eid, timeout=60, poll_s=0.05)
                assert state["status"] == "succeeded"
                assert {j["attempts"] for j in state["jobs"]} == {1}
        dead = await (await reader.execute("SELECT count(*) FROM jobs")).fetchone()
        assert dead is not None and dead[0] == 0  # still its old snapshot: it saw none of the 1,000 jobs
        await reader.execute("ROLLBACK")


# ------------------------------------------------------------------------------------ a full pool is busy, not away
async def test_a_full_pool_answers_busy_at_once_and_is_never_logged_as_an_outage(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(settings.database_url, max_connections=2, pool_wait_s=0.3)
    await store.migrate()
    try:
        # both pooled connections held by long transactions
        hold = [asyncio.create_task(store._tx(lambda cur: cur.execute("SELECT pg_sleep(2)"))) for _ in range(2)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="busy: all 2 pooled connections"):
            await store.list_executions("default")
        waited = time.monotonic() - started
        assert waited < 1.5, waited  # the pool's wait, not the 30 s outage retry
        await asyncio.gather(*hold)
        assert (await store.list_executions("default")).data == []  # and it serves again once freed
    finally:
        await store.close()
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


# ------------------------------------------------------------------------------------ a COMMIT whose answer was lost
async def test_a_submission_run_again_after_its_commit_finds_itself_stored(store: PostgresStore) -> None:
    """When the connection dies during COMMIT, the store runs the transaction again; if the COMMIT had happened,
    the submission must find itself and answer it, not fail on its own id nor store a second copy."""
    from reelflow.engine.scheduler import build_execution
    from reelflow.plan import parse_plan

    ex = build_execution(parse_plan({"jobs": [sim_job("a"), sim_job("b", depends_on=["a"])]}), tenant="default")
    first = await store._in_tx(lambda tx: store._create_execution(tx, ex))
    again = await store._in_tx(lambda tx: store._create_execution(tx, ex))  # as the retry after a lost COMMIT
    assert first == again == ex.id
    state = await store.get_execution(ex.id)
    assert state is not None and [j.id for j in state.jobs] == ["a", "b"]
    created = [e for e in await store.events(ex.id) if e.type == "execution.created"]
    assert len(created) == 1
