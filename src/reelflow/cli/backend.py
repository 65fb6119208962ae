"""Where a command's executions live: the local database, through a runtime built here and only here, or a
reelflow server (`--server`), through the HTTP client. The commands are written once, against `Backend`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .common import err
from .follow import CtrlC

if TYPE_CHECKING:
    from ..client import AsyncClient
    from ..engine.runtime import LocalRuntime

Listener = Callable[[dict[str, Any]], None]
EVENT_FIELDS = ("seq", "type", "job", "data", "created_at")


class Submitted(NamedTuple):
    """A submission as `reelflow run` shows it: the execution's id, its status now, and how many jobs it has."""

    id: str
    status: str
    jobs: int


class Backend(Protocol):
    """What a command asks of the place its executions live; states are the API's execution state."""

    async def submit(self, plan: Any, webhook: str | None) -> str: ...

    async def accept(self, plan: Any, webhook: str | None) -> Submitted:
        """Submit, and say what was accepted."""
        ...

    async def get(self, execution_id: str) -> dict[str, Any]: ...

    async def wait(self, execution_id: str, on_update: Listener | None = None) -> dict[str, Any]: ...

    async def cancel(self, execution_id: str) -> dict[str, Any]: ...

    async def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]:
        """What the provider logged for one job (the API's `GET .../jobs/{job_id}/logs` answer)."""
        ...

    async def resume(self, execution_id: str) -> dict[str, Any]: ...

    async def retry(self, execution_id: str) -> str:
        """A new execution of the same plan: its id."""
        ...

    def events(self, execution_id: str, follow: bool = False) -> AsyncIterator[dict[str, Any]]:
        """The execution's events as `{seq, type, job, data, created_at}` (an ISO 8601 time); with `follow`,
        new ones as they come, until the execution has ended."""
        ...

    async def list_executions(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` executions (summaries, without jobs), newest first."""
        ...

    async def estimate(self, plan: Any) -> dict[str, Any]: ...

    async def models(self) -> list[dict[str, Any]]: ...

    async def stats(self, since: str | None, start: float) -> dict[str, Any]:
        """`usage` (a list, one per tenant), `stats` (the window's figures) and, locally, `queue` and `limits`."""
        ...

    def interruptible(self) -> contextlib.AbstractContextManager[CtrlC | None]:
        """Around a wait: the Ctrl-C handling that leaves the execution running (None: Ctrl-C interrupts)."""
        ...

    async def aclose(self) -> None: ...


class Local:
    """The local database (the settings'); waiting runs an embedded worker when none runs elsewhere."""

    def __init__(self) -> None:
        self._runtime: LocalRuntime | None = None

    @property
    def runtime(self) -> LocalRuntime:
        """The runtime, built on first use: its import loads the engine, paid for only by commands that use it."""
        if self._runtime is None:
            from ..engine.runtime import LocalRuntime

            self._runtime = LocalRuntime()
        return self._runtime

    async def aclose(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.close()

    async def submit(self, plan: Any, webhook: str | None) -> str:
        return await self.runtime.engine.submit(plan, webhook=webhook)

    async def accept(self, plan: Any, webhook: str | None) -> Submitted:
        """Without building the execution's state: its status and the parsed plan's jobs say what was accepted
        (the state's model, and its import, are for the commands that show one)."""
        from ..plan import parse_plan

        engine = self.runtime.engine
        parsed = parse_plan(plan, catalog=engine.catalog)
        execution_id = await engine.submit(parsed, webhook=webhook)
        status = await self.runtime.store.execution_status(execution_id)
        return Submitted(execution_id, status or "queued", len(parsed.jobs))

    async def get(self, execution_id: str) -> dict[str, Any]:
        return (await self.runtime.engine.get(execution_id)).model_dump(mode="json")

    async def wait(self, execution_id: str, on_update: Listener | None = None) -> dict[str, Any]:
        return await self.runtime.wait(execution_id, on_update=on_update)

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        return (await self.runtime.engine.cancel(execution_id)).model_dump(mode="json")

    async def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]:
        return (await self.runtime.engine.job_logs(execution_id, job_key)).model_dump(mode="json")

    async def resume(self, execution_id: str) -> dict[str, Any]:
        return (await self.runtime.engine.resume(execution_id)).model_dump(mode="json")

    async def retry(self, execution_id: str) -> str:
        return await self.runtime.engine.retry(execution_id)

    async def events(self, execution_id: str, follow: bool = False) -> AsyncIterator[dict[str, Any]]:
        """The events stored so far; with `follow`, then the new ones until the execution has ended."""
        from ..sdk import LocalBackend

        async for e in LocalBackend(self.runtime).events(execution_id, follow=follow):
            yield e

    async def list_executions(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Every tenant's executions (the local database is the operator's)."""
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(rows) < limit:
            page = await self.runtime.store.list_executions(
                None, status=status, limit=min(200, limit - len(rows)), cursor=cursor
            )
            rows.extend(row.model_dump(mode="json") for row in page.data)
            cursor = page.next_cursor
            if not cursor or not page.data:
                break
        return rows[:limit]

    async def estimate(self, plan: Any) -> dict[str, Any]:
        from ..estimate import estimate_plan

        return estimate_plan(plan)

    async def models(self) -> list[dict[str, Any]]:
        from ..providers.catalog import list_models

        return [m.model_dump(mode="json") for m in list_models()]

    async def stats(self, since: str | None, start: float) -> dict[str, Any]:
        """Every tenant's usage (those with keys, with jobs under way, and `default`), the queue, the limits."""
        from ..circuits import provider_circuits
        from ..limits import get_limits

        rt = self.runtime
        queue = await rt.store.queue_stats()
        keys = {k.tenant for k in await rt.store.list_api_keys()}
        tenants = sorted(keys | set(queue["active_by_tenant"]) | {"default"})
        return {
            "usage": [(await rt.engine.usage(t)).model_dump(mode="json") for t in tenants],
            "queue": queue,
            "limits": get_limits(rt.settings).as_dict(),
            "stats": (await rt.store.stats(None, start)).model_dump(mode="json"),
            "circuits": provider_circuits(await rt.store.circuits(), get_limits(rt.settings), time.time()),
        }

    def interruptible(self) -> contextlib.AbstractContextManager[CtrlC | None]:
        return CtrlC.installed()


class Remote:
    """A reelflow server: every call is an HTTP request; waits follow the server-sent events."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def aclose(self) -> None:
        await self.client.aclose()

    async def submit(self, plan: Any, webhook: str | None) -> str:
        return (await self.client.execute(plan, webhook=webhook)).id

    async def accept(self, plan: Any, webhook: str | None) -> Submitted:
        execution_id = await self.submit(plan, webhook)
        state = await self.client.get(execution_id)
        return Submitted(execution_id, state["status"], len(state["jobs"]))

    async def get(self, execution_id: str) -> dict[str, Any]:
        return await self.client.get(execution_id)

    async def wait(self, execution_id: str, on_update: Listener | None = None) -> dict[str, Any]:
        return await self.client.wait(execution_id, on_update=on_update)

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        return await self.client.cancel(execution_id)

    async def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]:
        return await self.client.job_logs(execution_id, job_key)

    async def resume(self, execution_id: str) -> dict[str, Any]:
        return await self.client.resume(execution_id)

    async def retry(self, execution_id: str) -> str:
        return (await self.client.retry(execution_id)).id

    async def events(self, execution_id: str, follow: bool = False) -> AsyncIterator[dict[str, Any]]:
        """The events, followed to the end of the execution (the server's stream does, `follow` or not)."""
        from ..sdk import event_view

        async with contextlib.aclosing(self.client.events(execution_id)) as stream:
            async for e in stream:
                yield event_view({k: e.get(k) for k in EVENT_FIELDS})

    async def list_executions(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        async with contextlib.aclosing(self.client.list(status, limit=min(200, limit))) as pages:
            async for row in pages:
                rows.append(row)
                if len(rows) >= limit:
                    break
        return rows

    async def estimate(self, plan: Any) -> dict[str, Any]:
        return await self.client.estimate(plan)

    async def models(self) -> list[dict[str, Any]]:
        return await self.client.models()

    async def stats(self, since: str | None, start: float) -> dict[str, Any]:
        """The key's tenant's usage and figures."""
        return {
            "usage": [await self.client.usage()],
            "stats": await self.client.stats(since),
            "circuits": (await self.client.providers())["data"],
        }

    def interruptible(self) -> contextlib.AbstractContextManager[CtrlC | None]:
        return contextlib.nullcontext()


def open_backend(server: str | None, api_key: str | None) -> Backend:
    """The server's backend with --server (a missing key or a malformed URL: bad usage, 2), else the local one."""
    if not server:
        return Local()
    from ..client import AsyncClient

    if not api_key:
        err().print("[red]error:[/red] --server needs an API key: set REELFLOW_API_KEY or pass --api-key")
        raise SystemExit(2)
    try:
        return Remote(AsyncClient(server, api_key))
    except ValueError as exc:
        err().print(f"[red]error:[/red] {exc}", highlight=False)
        raise SystemExit(2) from None
