"""Many coroutines' small writes to the store, made as one: each caller waits for its own answer.

A worker starting a thousand jobs looks each up in the result cache, and asks the circuits twice for each create
(may it go out? what came back?). One trip to the store each was thousands of thread hand-offs and commits;
coalesced, the requests made while one batch is being written go together in the next.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalesced(Generic[Item, Answer]):
    """`await coalesced(item)` is `write([item])[0]`, with the items of every caller that comes while a write is
    under way written together by the next one, in the order they came (`write` must answer one result per
    item, in order, and apply them as if one after another). A write that fails fails each of its callers."""

    def __init__(self, write: Callable[[list[Item]], Awaitable[Sequence[Answer]]]) -> None:
        self._write = write
        self._queue: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0
        """Writes made so far (one per batch)."""

    async def __call__(self, item: Item) -> Answer:
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._writer is None:  # it starts on the loop's next turn: callers of this turn join the first batch
            # in a fresh context: a batch serves many callers, its log lines belong to none of them
            self._writer = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await fut

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Answer]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                self.writes += 1
                try:
                    results = await self._write([item for item, _ in batch])
                except Exception as exc:  # each caller hears it, as from a write of its own
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
            batch = []
        finally:
            self._writer = None
            for _, fut in [*batch, *self._queue]:  # stopped mid-write (the loop ends): nobody waits for ever
                fut.cancel()
            self._queue = []


__all__ = ["Coalesced"]
