"""The local runtime: a Store from the settings, an Engine on it, and an embedded worker on demand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..config import Settings, get_settings
from ..providers.catalog import Catalog
from ..store import Store, open_store
from .scheduler import Engine, Listener

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("reelflow.runtime")

HAND_BACK_S = 1.0
"""How long a wait that ends early (Ctrl-C, its timeout) gives its embedded worker to hand the jobs back before
leaving them to their leases: a person pressing Ctrl-C expects the prompt back at once."""


class LocalRuntime:
    """Everything the CLI and SDK need to work on the local database without a server."""

    def __init__(
        self, settings: Settings | None = None, store: Store | None = None, *, catalog: Catalog | None = None
    ) -> None:
        self.settings = settings or get_settings()
        self.store = store or open_store(self.settings.database_url, pool_size=self.settings.database_pool_size)
        self.catalog = catalog
        """The catalog handed to the engine and embedded workers (None: the process's default one)."""
        self.engine = Engine(self.store, self.settings, catalog=catalog)

    async def close(self) -> None:
        await self.store.close()

    async def workers_running(self, execution_id: str | None = None) -> bool:
        """A worker is alive (one that would run `execution_id`'s jobs, when named: another wait's embedded
        worker runs only its own execution's)."""
        return await self.store.live_workers(within_s=self.settings.lease_seconds, serving=execution_id) > 0

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
        is dead), so a worker that dies mid-wait is replaced within about one lease. That worker claims only this
        execution's jobs and delivers only its webhooks: other executions wait for a worker of their own.

        A wait that does not see the end (cancelled by Ctrl-C, its timeout passed) hands its worker's jobs back
        to the queue at once, provider ids kept: the work goes on at the provider and any worker later resumes
        waiting on it; nothing is cancelled or submitted again."""
        waiting = asyncio.ensure_future(
            self.engine.wait(execution_id, on_update=on_update, timeout=timeout, poll_s=poll_s)
        )
        worker: Worker | None = None
        running: asyncio.Task[None] | None = None
        ended = False
        recheck_s = max(0.2, min(5.0, self.settings.lease_seconds / 4))
        try:
            while True:
                if running is None and embedded_worker is not False:
                    if embedded_worker or not await self.workers_running(execution_id):
                        from .worker import Worker  # only a wait runs one: submitting never loads the worker

                        # only this execution's jobs and webhooks: a wait runs nobody else's work
                        worker = Worker(
                            self.store, settings=self.settings, executions=[execution_id], catalog=self.catalog
                        )
                        running = asyncio.create_task(worker.run())
                watching = running is None and embedded_worker is None  # another process's worker: look again
                done, _ = await asyncio.wait({waiting}, timeout=recheck_s if watching else None)
                if done:
                    break
            state = waiting.result()
            ended = True
            if running is not None:
                await self._let_webhooks_out(execution_id)
            return state
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            if worker is not None and running is not None:
                if ended:
                    worker.stop()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
                else:
                    await self._hand_back(worker, running)

    @staticmethod
    async def _hand_back(worker: Worker, running: asyncio.Task[None]) -> None:
        """Stop the embedded worker without draining: its jobs are released to the queue with their provider ids
        (the worker writes ids before it releases). Past HAND_BACK_S the worker is abandoned: what it still held
        returns to the queue when its leases run out, as after a crash."""
        worker.drain_timeout_s = 0.0
        worker.stop()
        done, _ = await asyncio.wait({running}, timeout=HAND_BACK_S)
        if not done:
            log.warning("worker %s did not hand its jobs back within %.1f s; its leases will", worker.id, HAND_BACK_S)
            running.cancel()
            await asyncio.wait({running}, timeout=HAND_BACK_S / 4)
        if running.done() and not running.cancelled() and (exc := running.exception()) is not None:
            log.warning("worker %s failed while handing its jobs back: %s", worker.id, exc)

    async def _let_webhooks_out(self, execution_id: str, patience_s: float = 10.0) -> None:
        """Give the embedded worker's dispatcher a moment for the execution's first delivery attempts,
        so `run --wait --webhook` sends its event before exiting (later retries fall to any worker)."""
        deadline = asyncio.get_running_loop().time() + patience_s
        while asyncio.get_running_loop().time() < deadline:
            pending = [
                d for d in (await self.store.list_deliveries(None, execution_id)).data
                if d.status == "pending" and not d.attempts
            ]
            if not pending:
                return
            await asyncio.sleep(0.05)
