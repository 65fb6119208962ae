"""Slots shared fairly between tenants: a worker's output downloads, for one.

A plain semaphore hands a freed slot to whoever has waited longest, so a tenant that queued 500 downloads
keeps every slot until they are all done and another tenant's single download waits behind them.
`FairSlots` hands a freed slot to the waiting tenant that holds the fewest slots (ties in turn, round
robin), each tenant's own waiters first come, first served: a tenant that starts waiting gets the next
slot that frees unless a tenant holding still fewer waits too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class FairSlots:
    """`size` slots; `async with slots.slot(tenant):` holds one for the block."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("FairSlots needs at least one slot")
        self.size = size
        self._free = size
        self._held: dict[str, int] = {}
        """Slots each tenant holds now (tenants holding none are left out)."""
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        """Each tenant's waiters, oldest first; only tenants with waiters appear, in turn order."""

    @property
    def free(self) -> int:
        return self._free

    def held(self, tenant: str) -> int:
        return self._held.get(tenant, 0)

    def waiting(self, tenant: str | None = None) -> int:
        """Waiters of `tenant` (of every tenant when None)."""
        if tenant is not None:
            return len(self._waiting.get(tenant, ()))
        return sum(len(q) for q in self._waiting.values())

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release(tenant)

    async def acquire(self, tenant: str) -> None:
        """Wait for a slot for `tenant` (at once while one is free: then nobody waits)."""
        if self._free > 0:
            self._free -= 1
            self._held[tenant] = self._held.get(tenant, 0) + 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted as the waiter was cancelled: pass the slot on
                self.release(tenant)
            else:
                self._forget(tenant, fut)
            raise

    def release(self, tenant: str) -> None:
        """`tenant` gives a slot back: to the waiting tenant holding the fewest, else to the free ones."""
        left = self._held.get(tenant, 0) - 1
        if left > 0:
            self._held[tenant] = left
        else:
            self._held.pop(tenant, None)
        while self._waiting:
            # The first of the fewest: the dict keeps turn order, and a served tenant goes to the back.
            nxt = min(self._waiting, key=lambda t: self._held.get(t, 0))
            queue = self._waiting.pop(nxt)
            fut = queue.popleft()
            if queue:
                self._waiting[nxt] = queue
            if not fut.done():
                self._held[nxt] = self._held.get(nxt, 0) + 1
                fut.set_result(None)
                return
        self._free += 1

    def _forget(self, tenant: str, fut: asyncio.Future[None]) -> None:
        queue = self._waiting.get(tenant)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(fut)
        if not queue:
            del self._waiting[tenant]
