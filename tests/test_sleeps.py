"""providers.sleeps: thousands of sleeps share the loop's timers, end never early, and cancel as asyncio's do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reelflow.providers import sleeps


def timers_set(monkeypatch: pytest.MonkeyPatch, loop: asyncio.AbstractEventLoop) -> list[float]:
    """The times of the timers `loop.call_at` sets from now on, in order."""
    timers: list[float] = []
    real = loop.call_at

    def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return real(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)
    return timers


async def test_sleeps_ending_together_share_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    timers = timers_set(monkeypatch, loop)
    real_time = loop.time
    begun = real_time()
    monkeypatch.setattr(loop, "time", lambda: begun)  # all 1,000 begin at one instant, however loaded the machine
    ends: list[float] = []

    async def one(seconds: float) -> None:
        await sleeps.sleep(seconds)
        ends.append(loop.time() - begun)

    sleepers = [asyncio.ensure_future(one(0.05)) for _ in range(1000)]
    await asyncio.sleep(0)  # each is in sleeps.sleep now
    monkeypatch.setattr(loop, "time", real_time)
    await asyncio.gather(*sleepers)
    assert len(ends) == 1000 and min(ends) >= 0.05
    assert len(timers) == 1  # one slot, one timer


async def test_a_sleep_never_ends_early() -> None:
    loop = asyncio.get_running_loop()
    for seconds in (0.001, 0.0049, 0.0051, 0.013, 0.02):
        begun = loop.time()
        await sleeps.sleep(seconds)
        assert loop.time() - begun >= seconds


async def test_cancelling_a_sleeper_ends_it_at_once_and_spares_its_slot() -> None:
    long = asyncio.ensure_future(sleeps.sleep(60))
    peers = [asyncio.ensure_future(sleeps.sleep(60)) for _ in range(3)]  # the same slot as `long`, or the next
    short = asyncio.ensure_future(sleeps.sleep(0.01))
    await asyncio.sleep(0)
    long.cancel()
    await asyncio.sleep(0)  # one turn of the loop, not the 60 s of its slot
    assert long.cancelled() and not short.done()
    await short
    assert not any(p.done() for p in peers)
    for p in peers:
        p.cancel()
    await asyncio.gather(*peers, return_exceptions=True)


def test_each_event_loop_has_its_own_slots() -> None:
    for _ in range(2):  # a second loop must not wait on timers the first one owned
        asyncio.run(asyncio.wait_for(sleeps.sleep(0.01), timeout=5))


async def test_zero_or_less_yields_once() -> None:
    await sleeps.sleep(0)
    await sleeps.sleep(-1)


def _task() -> Any:
    from pathlib import Path

    from reelflow.providers.base import Task

    return Task("e", "j", "generate-video", "m", {}, 1, Path("/nonexistent"))


async def test_pauses_ending_together_share_one_timer_and_never_end_early(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    timers = timers_set(monkeypatch, loop)
    monkeypatch.setattr(loop, "call_later", lambda *a, **k: pytest.fail("a pause took a timer of its own"))
    real_time = loop.time
    begun = real_time()
    monkeypatch.setattr(loop, "time", lambda: begun)
    tasks = [_task() for _ in range(500)]
    pauses = [asyncio.ensure_future(t.pause(0.05)) for t in tasks]
    await asyncio.sleep(0)
    monkeypatch.setattr(loop, "time", real_time)
    assert await asyncio.gather(*pauses) == [False] * 500  # not woken: the time ran out
    assert real_time() - begun >= 0.05
    assert len(timers) == 1


async def test_a_wake_ends_a_pause_at_once_and_is_taken_by_it() -> None:
    t = _task()
    loop = asyncio.get_running_loop()
    pause = asyncio.ensure_future(t.pause(60))
    await asyncio.sleep(0)
    begun = loop.time()
    t.wake.set()
    assert await asyncio.wait_for(pause, 1) is True
    assert loop.time() - begun < 0.5
    assert not t.wake.is_set()  # taken: the next pause sleeps again
    assert await t.pause(0.01) is False
    t.wake.set()  # set before the pause: it returns at once
    assert await asyncio.wait_for(t.pause(60), 1) is True


async def test_cancelling_a_pause_ends_it_and_a_later_wake_is_kept() -> None:
    t = _task()
    pause = asyncio.ensure_future(t.pause(60))
    await asyncio.sleep(0)
    pause.cancel()
    await asyncio.sleep(0)
    assert pause.cancelled()
    t.wake.set()  # no pause under way: the next one sees it
    assert await asyncio.wait_for(t.pause(60), 1) is True
    assert await asyncio.wait_for(t.pause(float("nan")), 1) is False  # NaN is no time, as before
