"""Sleeps of thousands of coroutines at once on one event loop, sharing its timers.

`asyncio.sleep` puts one timer per sleeper in the loop's heap: with 10,000 jobs waiting in one worker, each
wake-up pops that heap (about 2 x log2(10,000) comparisons, each a Python-level `TimerHandle.__lt__`), ~20% of
the worker's CPU while they finish. Here sleepers whose end falls in the same GRAIN_S slot share one timer: a
future each, one `call_at` per slot. A sleep ends at most GRAIN_S late, never early; cancelling the sleeping
task cancels its future at once, as with `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import math
import weakref

GRAIN_S = 0.005
"""Sleeps ending within one slot this long share a timer; each ends at its slot's end."""


class _Slots:
    """One loop's sleepers, by slot number. It holds no reference to its loop (the loop keys it weakly)."""

    __slots__ = ("due",)

    def __init__(self) -> None:
        self.due: dict[int, list[asyncio.Future[None]]] = {}

    def ring(self, slot: int) -> None:
        for fut in self.due.pop(slot, ()):
            if not fut.done():  # a cancelled sleeper's future is done already
                fut.set_result(None)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


async def sleep(seconds: float) -> None:
    """Like `asyncio.sleep(seconds)`, sharing the loop's timer with the other sleeps ending in the same slot."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    ring_later(loop, fut, seconds)
    await fut


def ring_later(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None], seconds: float) -> None:
    """Set `fut`'s result (None) once `seconds` passed, at the end of their slot, unless it is done by then
    (something else may set it sooner: a sleep that a wake-up cuts short, see `Task.pause`). The slot keeps
    `fut` until it rings."""
    slots = _loops.get(loop)
    if slots is None:
        slots = _loops[loop] = _Slots()
    slot = math.ceil((loop.time() + max(0.0, seconds)) / GRAIN_S)
    waiting = slots.due.get(slot)
    if waiting is None:
        waiting = slots.due[slot] = []
        loop.call_at(slot * GRAIN_S, slots.ring, slot)
    waiting.append(fut)


__all__ = ["GRAIN_S", "ring_later", "sleep"]
