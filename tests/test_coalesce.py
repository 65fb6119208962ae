"""engine/coalesce.py: callers' items written together, each caller answered its own, in order."""

from __future__ import annotations

import asyncio

import pytest

from reelflow.engine.coalesce import Coalesced


class Log:
    """A write that records each batch and answers each item doubled; it fails batches holding `bad`."""

    def __init__(self, bad: int | None = None, pause_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.bad = bad
        self.pause_s = pause_s

    async def write(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(self.pause_s)
        if self.bad in items:
            raise LookupError(f"no row for {self.bad}")
        return [2 * i for i in items]


async def test_callers_of_one_turn_share_one_write_and_each_gets_its_own_answer() -> None:
    log = Log()
    coalesced = Coalesced(log.write)
    answers = await asyncio.gather(*(coalesced(i) for i in range(50)))
    assert answers == [2 * i for i in range(50)]
    assert log.batches == [list(range(50))]
    assert coalesced.writes == 1


async def test_callers_that_come_during_a_write_go_together_in_the_next_in_order() -> None:
    log = Log(pause_s=0.05)
    coalesced = Coalesced(log.write)
    first = asyncio.ensure_future(coalesced(0))
    await asyncio.sleep(0.01)  # the first write is under way
    later = [asyncio.ensure_future(coalesced(i)) for i in range(1, 6)]
    assert await first == 0
    assert [await f for f in later] == [2, 4, 6, 8, 10]
    assert log.batches == [[0], [1, 2, 3, 4, 5]]
    assert await coalesced(7) == 14  # idle again: a caller alone is written at once
    assert log.batches[-1] == [7] and coalesced.writes == 3


async def test_a_failed_write_fails_each_of_its_callers_and_the_next_batch_goes_on() -> None:
    log = Log(bad=3, pause_s=0.02)
    coalesced = Coalesced(log.write)
    first = [asyncio.ensure_future(coalesced(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)  # the first batch is taken
    second = asyncio.ensure_future(coalesced(4))
    results = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(r, LookupError) and "no row for 3" in str(r) for r in results)
    assert await second == 8
    assert log.batches == [[1, 2, 3], [4]]


async def test_a_caller_that_stops_waiting_leaves_the_others_their_answers() -> None:
    log = Log(pause_s=0.05)
    coalesced = Coalesced(log.write)
    gone, kept = asyncio.ensure_future(coalesced(1)), asyncio.ensure_future(coalesced(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await kept == 4
    assert log.batches == [[1, 2]]  # the item was written all the same, as a write of its own would have been


async def test_callers_still_waiting_when_the_writer_is_stopped_are_cancelled_not_left_hanging() -> None:
    log = Log(pause_s=10)
    coalesced = Coalesced(log.write)
    waiting = [asyncio.ensure_future(coalesced(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    writer = coalesced._writer
    assert writer is not None
    writer.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 1)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    log.pause_s = 0
    assert await asyncio.wait_for(coalesced(5), 1) == 10  # the next caller starts a writer again
    assert log.batches == [[0, 1, 2], [5]]
