"""Waiting on the local database (`run --wait`, `status --wait`, the SDK's `wait()`): a wait runs a worker of
its own whenever none is alive elsewhere, and looks again while it waits, so a worker that died mid-wait is
replaced within about one lease instead of leaving the wait hanging. That worker runs only the waited
execution's jobs and webhooks, and a wait that ends early hands its jobs back at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reelflow.config import Settings
from reelflow.engine.runtime import LocalRuntime
from reelflow.engine.worker import Worker
from reelflow.store.sqlite import SQLiteStore

LEASE_S = 1.0


def quick_job() -> dict[str, object]:
    return {"type": "generate-video", "model": "sim/video", "params": {"prompt": "waves", "latency_s": 0.1}}


@pytest.fixture
def runtime(settings: Settings, store: SQLiteStore) -> LocalRuntime:
    return LocalRuntime(settings.model_copy(update={"lease_seconds": LEASE_S}), store=store)


@contextlib.asynccontextmanager
async def heartbeats(store: SQLiteStore, worker_id: str, every_s: float = 0.1) -> AsyncIterator[None]:
    """A worker elsewhere that is alive (its heartbeat fresh) for the block, and runs nothing."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            await store.register_worker(worker_id, {"pid": 0, "host": "elsewhere", "concurrency": 1})

    await store.register_worker(worker_id, {"pid": 0, "host": "elsewhere", "concurrency": 1})
    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_with_no_worker_alive_the_wait_runs_the_job_itself(runtime: LocalRuntime) -> None:
    eid = await runtime.engine.submit(quick_job())
    started = time.monotonic()
    state = await runtime.wait(eid, timeout=10)
    assert state["status"] == "succeeded"
    assert time.monotonic() - started < LEASE_S  # at once: nothing to wait for


async def test_a_worker_that_dies_mid_wait_is_replaced_within_a_lease(
    runtime: LocalRuntime, store: SQLiteStore
) -> None:
    """The worker registered elsewhere stops beating (killed) just after the wait starts: the wait notices its
    heartbeat going stale and runs the job itself, within about one lease."""
    eid = await runtime.engine.submit(quick_job())
    async with heartbeats(store, "w-killed"):
        assert await runtime.workers_running()
        waiting = asyncio.create_task(runtime.wait(eid, timeout=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # a live worker elsewhere: the wait leaves the job to it
    died = time.monotonic()
    state = await waiting
    replaced_after = time.monotonic() - died
    assert state["status"] == "succeeded"
    assert LEASE_S * 0.5 < replaced_after < LEASE_S + 2.0, replaced_after


async def test_while_a_worker_elsewhere_is_alive_the_wait_runs_nothing(
    runtime: LocalRuntime, store: SQLiteStore
) -> None:
    eid = await runtime.engine.submit(quick_job())
    async with heartbeats(store, "w-alive"):
        with pytest.raises(TimeoutError):
            await runtime.wait(eid, timeout=2.5)  # over two leases: the live worker keeps the job
    assert (await runtime.engine.get(eid)).status == "queued"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records the bodies it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def executions(self) -> set[str]:
        return {json.loads(body)["data"]["id"] for body in self.bodies}


async def test_the_embedded_worker_runs_only_the_waited_executions_jobs_and_webhooks(
    settings: Settings, store: SQLiteStore
) -> None:
    """Executions A and B queued (and C ended earlier, its webhook not yet delivered), no worker alive: a wait
    for A runs A's jobs and sends A's webhook; B stays queued, unclaimed, and C's webhook stays pending."""
    receiver = Receiver()
    try:
        rt = LocalRuntime(settings.model_copy(update={"lease_seconds": LEASE_S, "allow_private_urls": True}), store)
        c = await rt.engine.submit(quick_job(), webhook=receiver.url)
        finisher = Worker(store, settings=rt.settings, executions=[c], deliver_webhooks=False)
        running = asyncio.create_task(finisher.run())
        await rt.engine.wait(c, timeout=10, poll_s=0.05)
        finisher.stop()
        await running
        a = await rt.engine.submit(quick_job(), webhook=receiver.url)
        b = await rt.engine.submit(quick_job(), webhook=receiver.url)

        state = await rt.wait(a, timeout=10)

        assert state["status"] == "succeeded"
        other = await rt.engine.get(b)
        assert other.status == "queued"
        assert [(j.status, j.attempts, j.provider_job_id) for j in other.jobs] == [("queued", 0, None)]
        assert receiver.executions() == {a}
        (pending,) = (await store.list_deliveries(None, c)).data
        assert (pending.status, pending.attempts) == ("pending", [])
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


async def test_a_wait_does_not_count_another_waits_worker_as_its_own(settings: Settings, store: SQLiteStore) -> None:
    slow = {"type": "generate-video", "model": "sim/video", "params": {"prompt": "long", "latency_s": 8.0}}
    rt_a = LocalRuntime(settings.model_copy(update={"lease_seconds": LEASE_S}), store=store)
    rt_b = LocalRuntime(settings.model_copy(update={"lease_seconds": LEASE_S}), store=store)
    a = await rt_a.engine.submit(slow)
    waiting_a = asyncio.create_task(rt_a.wait(a, timeout=20))
    try:
        for _ in range(100):  # until A's embedded worker is registered and running A
            if (await rt_a.engine.get(a)).status == "running":
                break
            await asyncio.sleep(0.05)
        b = await rt_b.engine.submit(quick_job())
        state = await rt_b.wait(b, timeout=3)  # long before A ends
        assert state["status"] == "succeeded"
    finally:
        waiting_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting_a


async def test_a_wait_that_ends_early_hands_its_jobs_back_at_once_with_their_provider_ids(
    runtime: LocalRuntime, store: SQLiteStore
) -> None:
    """Its timeout passes while the embedded worker waits on the provider: the job goes back to the queue within
    about a second (not after the worker's 30 s drain), keeping the provider's id for the next worker to resume."""
    slow = {"type": "generate-video", "model": "sim/video", "params": {"prompt": "long", "latency_s": 30.0}}
    eid = await runtime.engine.submit(slow)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await runtime.wait(eid, timeout=1.0)
    assert time.monotonic() - started < 1.0 + 1.5
    (job,) = (await runtime.engine.get(eid)).jobs
    assert (job.status, job.attempts) == ("queued", 0)
    assert job.provider_job_id and job.provider_job_id.startswith("sim-")
    assert await store.live_workers(within_s=LEASE_S) == 0  # the embedded worker is gone
