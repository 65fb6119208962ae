"""Waiting on the local database (`run --wait`, `status --wait`, the SDK's `wait()`): a wait runs a worker of
its own whenever none is alive elsewhere, and looks again while it waits, so a worker that died mid-wait is
replaced within about one lease instead of leaving the wait hanging."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from reelflow.config import Settings
from reelflow.engine.runtime import LocalRuntime
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
    assert (await runtime.engine.get(eid))["status"] == "queued"
