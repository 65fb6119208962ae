"""The local runtime: a Store from the settings, an Engine on it, and an embedded worker on demand."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..config import Settings, get_settings
from ..store import Store, open_store
from .scheduler import Engine, Listener
from .worker import Worker


class LocalRuntime:
    """Everything the CLI and SDK need to work on the local database without a server."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = store or open_store(self.settings.database_url, pool_size=self.settings.database_pool_size)
        self.engine = Engine(self.store, self.settings)

    async def close(self) -> None:
        await self.store.close()

    async def workers_running(self) -> bool:
        return await self.store.live_workers(within_s=self.settings.lease_seconds) > 0

    async def wait(
        self,
        execution_id: str,
        *,
        on_update: Listener | None = None,
        timeout: float | None = None,
        embedded_worker: bool | None = None,
        poll_s: float = 0.2,
    ) -> dict[str, Any]:
        """Wait for an execution to end. With `embedded_worker` None, run a worker here whenever none is alive
        elsewhere: liveness is looked at again while waiting (a worker whose heartbeat is older than the lease
        is dead), so a worker that dies mid-wait is replaced within about one lease."""
        waiting = asyncio.ensure_future(
            self.engine.wait(execution_id, on_update=on_update, timeout=timeout, poll_s=poll_s)
        )
        worker: Worker | None = None
        running: asyncio.Task[None] | None = None
        recheck_s = max(0.2, min(5.0, self.settings.lease_seconds / 4))
        try:
            while True:
                if running is None and embedded_worker is not False:
                    if embedded_worker or not await self.workers_running():
                        worker = Worker(self.store, settings=self.settings)
                        running = asyncio.create_task(worker.run())
                watching = running is None and embedded_worker is None  # another process's worker: look again
                done, _ = await asyncio.wait({waiting}, timeout=recheck_s if watching else None)
                if done:
                    break
            state = waiting.result()
            if running is not None:
                await self._let_webhooks_out(execution_id)
            return state
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            if worker is not None and running is not None:
                worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    async def _let_webhooks_out(self, execution_id: str, patience_s: float = 10.0) -> None:
        """Give the embedded worker's dispatcher a moment for the execution's first delivery attempts,
        so `run --wait --webhook` sends its event before exiting (later retries fall to any worker)."""
        deadline = asyncio.get_running_loop().time() + patience_s
        while asyncio.get_running_loop().time() < deadline:
            pending = [
                d for d in await self.store.list_deliveries(None, execution_id)
                if d["status"] == "pending" and not d["attempts"]
            ]
            if not pending:
                return
            await asyncio.sleep(0.05)
