"""The worker's download slots are shared fairly between tenants (FairSlots)."""

from __future__ import annotations

import asyncio

import pytest

from reelflow.engine.fairslots import FairSlots
from reelflow.engine.worker import DOWNLOADS_IN_FLIGHT, Worker


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_tenants_fifty_queued_downloads_do_not_hold_back_anothers_single_one() -> None:
    slots = FairSlots(DOWNLOADS_IN_FLIGHT)
    order: list[str] = []
    release: dict[str, asyncio.Event] = {}

    async def download(tenant: str, name: str) -> None:
        async with slots.slot(tenant):
            order.append(name)
            release[name] = asyncio.Event()
            await release[name].wait()

    flood = [asyncio.create_task(download("a", f"a{i}")) for i in range(16 + 50)]
    await settle()
    assert order == [f"a{i}" for i in range(16)] and slots.free == 0 and slots.waiting("a") == 50
    single = asyncio.create_task(download("b", "b0"))
    await settle()
    assert "b0" not in order and slots.waiting("b") == 1

    release["a0"].set()  # the next slot that frees is b's, though a's 50 waited longer
    await settle()
    assert order[16:] == ["b0"] and slots.held("b") == 1 and slots.held("a") == 15
    release["b0"].set()  # b waits no more: a's own in their order
    await single
    await settle()
    assert order[17:] == ["a16"]
    release["a1"].set()
    release["a2"].set()
    await settle()
    assert order[17:] == ["a16", "a17", "a18"]
    for name in list(release):
        release[name].set()
    while not all(t.done() for t in flood):
        for name in list(release):
            release[name].set()
        await settle()
    assert order[16:] == ["b0", *(f"a{i}" for i in range(16, 66))]
    assert slots.free == DOWNLOADS_IN_FLIGHT and slots.waiting() == 0 and slots.held("a") == 0


async def test_a_freed_slot_goes_to_the_waiting_tenant_holding_fewest_then_in_turn() -> None:
    slots = FairSlots(4)
    for _ in range(3):
        await slots.acquire("a")
    await slots.acquire("b")
    got: list[str] = []

    async def wait(tenant: str) -> None:
        await slots.acquire(tenant)
        got.append(tenant)

    tasks = [asyncio.create_task(wait(t)) for t in ("a", "a", "b", "b", "c", "c")]
    await settle()
    slots.release("a")  # holds a 2, b 1, c 0: c
    await settle()
    slots.release("a")  # a 1, b 1, c 1: a, first in turn (c was just served)
    await settle()
    slots.release("b")  # a 2, b 0, c 1: b
    await settle()
    assert got == ["c", "a", "b"]
    slots.release("a")  # a 1, b 1, c 1: c, served longest ago of the three
    await settle()
    slots.release("a")  # a 0, b 1: a
    await settle()
    slots.release("c")  # b, the last one waiting
    await settle()
    assert got == ["c", "a", "b", "c", "a", "b"]
    await asyncio.gather(*tasks)
    assert slots.free == 0 and (slots.held("a"), slots.held("b"), slots.held("c")) == (1, 2, 1)


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    slots = FairSlots(1)
    await slots.acquire("a")
    waiting = asyncio.create_task(slots.acquire("b"))
    await settle()
    waiting.cancel()  # cancelled while it waits: forgotten
    await settle()
    assert slots.waiting() == 0
    granted = asyncio.create_task(slots.acquire("c"))
    await settle()
    slots.release("a")  # handed to c ...
    granted.cancel()  # ... which is cancelled before it runs: the slot goes back
    with pytest.raises(asyncio.CancelledError):
        await granted
    assert slots.free == 1 and slots.held("c") == 0
    async with slots.slot("d"):
        assert slots.free == 0
    assert slots.free == 1


def test_the_worker_shares_its_download_slots_between_tenants() -> None:
    from reelflow.store.sqlite import SQLiteStore

    worker = Worker(SQLiteStore("sqlite:///:memory:"), deliver_webhooks=False)
    assert isinstance(worker._download_slots, FairSlots)
    assert worker._download_slots.size == DOWNLOADS_IN_FLIGHT == 16
