"""The Python SDK: build plans from steps, run them, follow them.

    still = generate_image(model=image_model("image", "local"), prompt="A sunset over the sea")
    clip = generate_video(model=video_model("video", "local"), image=still, duration=5)
    execution = compose(clip).execute()
    execution.wait(progress=True)
    print(execution.result.url)

Passing a step into another step's parameters makes the reference (`"$id"`) and the dependency.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from .states import TERMINAL_EXECUTION

# The engine (worker, store, media), the settings and the plan's validation load when a plan is executed
# locally, not when the SDK is imported: building steps, or using a `Client`, does not pay for them.
if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .config import Settings
    from .engine.runtime import LocalRuntime
    from .providers.catalog import Catalog

T = TypeVar("T")

_ids = itertools.count(1)

EVENTS_POLL_S = 0.25
"""How often following a local execution's events (`reelflow events --follow`) reads the database."""


@dataclass(frozen=True)
class Model:
    """A model of a provider, e.g. `Model("replicate", "bytedance/seedance-1-pro")`."""

    provider: str
    name: str
    kind: str = ""

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"

    def __str__(self) -> str:
        return self.id


def image_model(name: str, provider: str = "local") -> Model:
    return Model(provider, name, "image")


def video_model(name: str, provider: str = "local") -> Model:
    return Model(provider, name, "video")


def audio_model(name: str, provider: str = "local") -> Model:
    return Model(provider, name, "audio")


@dataclass(frozen=True)
class Ref:
    """A field of a step's result: `step.field("duration")` becomes `"$step.duration"`."""

    step: Step
    path: str | None = None


Models = Model | str | list[Model | str] | tuple[Model | str, ...]
"""A model, or a list [primary, alternative, ...] tried in that order (failover)."""


class Step:
    """One job of a plan, not yet submitted."""

    def __init__(
        self,
        type: str,
        *,
        model: Models | None = None,
        params: dict[str, Any] | None = None,
        id: str | None = None,
        depends_on: list[Step] | None = None,
        **job_options: Any,
    ) -> None:
        self.type = type
        self.model: str | list[str] | None = (
            None if model is None else [str(m) for m in model] if isinstance(model, list | tuple) else str(model)
        )
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.id = id
        self.depends_on = list(depends_on or [])
        self.job_options = {k: v for k, v in job_options.items() if v is not None}
        self._serial = next(_ids)

    def field(self, path: str) -> Ref:
        """A reference to one field of this step's result, e.g. `clip.field("duration")`."""
        return Ref(self, path)

    def __repr__(self) -> str:
        return f"Step({self.type!r}, id={self.id!r}, model={self.model!r})"

    def upstream(self) -> Iterator[Step]:
        """Steps this one references or depends on (direct only)."""
        yield from self.depends_on
        yield from _steps_in(self.params)

    def plan(self) -> dict[str, Any]:
        return compose(self).plan()

    def estimate(self, client: Client | None = None, *, catalog: Catalog | None = None) -> dict[str, Any]:
        return compose(self).estimate(client, catalog=catalog)

    def execute(self, webhook: str | None = None, **kwargs: Any) -> Execution:
        return compose(self).execute(webhook=webhook, **kwargs)

    async def execute_async(self, webhook: str | None = None, **kwargs: Any) -> AsyncExecution:
        return await compose(self).execute_async(webhook=webhook, **kwargs)


def _steps_in(value: Any) -> Iterator[Step]:
    if isinstance(value, Step):
        yield value
    elif isinstance(value, Ref):
        yield value.step
    elif isinstance(value, dict):
        for v in value.values():
            yield from _steps_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _steps_in(v)


def generate_image(*, model: Models, prompt: str, id: str | None = None, **params: Any) -> Step:
    return Step("generate-image", model=model, params={"prompt": prompt, **params}, id=id)


def generate_video(*, model: Models, id: str | None = None, **params: Any) -> Step:
    return Step("generate-video", model=model, params=params, id=id)


def generate_audio(*, model: Models, id: str | None = None, **params: Any) -> Step:
    return Step("generate-audio", model=model, params=params, id=id)


def transcribe(*, model: Models, audio: Step | str, id: str | None = None, **params: Any) -> Step:
    """Speech to text (words with timings): `audio` is an audio or video step, or a URL."""
    return Step("transcribe", model=model, params={"audio": audio, **params}, id=id)


def run_model(*, model: Model | str, input: dict[str, Any], id: str | None = None, **params: Any) -> Step:
    """Any model of an open provider (`replicate/owner/name`), its input passed as given."""
    return Step("run", model=model, params={"input": input, **params}, id=id)


def merge(*, video: Step | str, audio: Step | str, id: str | None = None, **params: Any) -> Step:
    return Step("merge-video-audio", params={"video": video, "audio": audio, **params}, id=id)


def concat(*videos: Step | str, id: str | None = None, **params: Any) -> Step:
    return Step("concat", params={"videos": list(videos), **params}, id=id)


def captions(video: Step | str, *, id: str | None = None, **params: Any) -> Step:
    return Step("captions", params={"video": video, **params}, id=id)


def overlay(video: Step | str, over: Step | str, *, id: str | None = None, **params: Any) -> Step:
    return Step("overlay", params={"video": video, "overlay": over, **params}, id=id)


def transcode(video: Step | str, *, id: str | None = None, **params: Any) -> Step:
    """Convert a video or audio (`format`, `width`, `height`, `fps`, `crf`)."""
    return Step("transcode", params={"input": video, **params}, id=id)


def thumbnail(video: Step | str, *, at: float | None = None, id: str | None = None, **params: Any) -> Step:
    """A still of `video` at second `at` (`width`, `format` jpg or png)."""
    return Step("thumbnail", params={"video": video, "at": at, **params}, id=id)


class Composition:
    """A whole plan made of steps; `.plan()` gives the plain plan, `.execute()` runs it."""

    def __init__(self, *steps: Step, **options: Any) -> None:
        if not steps:
            raise ValueError("compose() needs at least one step")
        self.steps = steps
        self.metadata = options.pop("metadata", None)
        self.webhook = options.pop("webhook", None)
        self.options = {k: v for k, v in options.items() if v is not None}

    def _ordered(self) -> list[Step]:
        seen: dict[int, Step] = {}
        order: list[Step] = []

        def visit(step: Step, stack: tuple[int, ...]) -> None:
            if id(step) in stack:
                raise ValueError(f"steps form a cycle through {step!r}")
            if id(step) in seen:
                return
            for up in step.upstream():
                visit(up, (*stack, id(step)))
            seen[id(step)] = step
            order.append(step)

        for s in self.steps:
            visit(s, ())
        return order

    def plan(self) -> dict[str, Any]:
        steps = self._ordered()
        names = _assign_ids(steps)

        def encode(value: Any) -> Any:
            if isinstance(value, Step):
                return f"${names[id(value)]}"
            if isinstance(value, Ref):
                return f"${names[id(value.step)]}" + (f".{value.path}" if value.path else "")
            if isinstance(value, dict):
                return {k: encode(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [encode(v) for v in value]
            return value

        jobs = []
        for s in steps:
            job: dict[str, Any] = {"id": names[id(s)], "type": s.type}
            if s.model:
                job["model"] = s.model
            job["params"] = encode(s.params)
            if s.depends_on:
                job["depends_on"] = [names[id(d)] for d in s.depends_on]
            job.update(s.job_options)
            jobs.append(job)
        plan: dict[str, Any] = {"jobs": jobs}
        if self.webhook:
            plan["webhook"] = self.webhook
        if self.metadata:
            plan["metadata"] = self.metadata
        if self.options:
            plan["options"] = self.options
        return plan

    def estimate(self, client: Client | None = None, *, catalog: Catalog | None = None) -> dict[str, Any]:
        """The plan's cost (USD) and time (the longest chain of dependencies), per job and in total; nothing is
        enqueued. From the local catalog (`catalog`, the process's default one when None), or from the server
        of `client`. Raises PlanError (locally) or PlanRejected (from a server) for an invalid plan."""
        if client is not None:
            return client.estimate(self)
        from .estimate import estimate_plan

        return estimate_plan(self.plan(), catalog=catalog)

    async def estimate_async(
        self, client: AsyncClient | None = None, *, catalog: Catalog | None = None
    ) -> dict[str, Any]:
        """`estimate`, from the server of an `AsyncClient` when given."""
        if client is not None:
            return await client.estimate(self)
        return self.estimate(catalog=catalog)

    def execute(
        self,
        webhook: str | None = None,
        *,
        settings: Settings | None = None,
        runtime: LocalRuntime | None = None,
        client: Client | None = None,
    ) -> Execution:
        """Validate and enqueue on the local engine (the database of the settings), or on the server of
        `client`; return a handle that works the same either way."""
        if client is not None:
            return client.execute(self, webhook=webhook)
        return asyncio.run(self._submit(webhook, settings, runtime)).sync()

    async def execute_async(
        self,
        webhook: str | None = None,
        *,
        settings: Settings | None = None,
        runtime: LocalRuntime | None = None,
        client: AsyncClient | None = None,
    ) -> AsyncExecution:
        if client is not None:
            return await client.execute(self, webhook=webhook)
        return await self._submit(webhook, settings, runtime)

    async def _submit(
        self, webhook: str | None, settings: Settings | None, runtime: LocalRuntime | None
    ) -> AsyncExecution:
        from .engine.runtime import LocalRuntime
        from .plan import parse_plan

        plan = parse_plan(self.plan())
        rt = runtime or LocalRuntime(settings)
        execution_id = await rt.engine.submit(plan, webhook=webhook)
        return AsyncExecution(execution_id, rt)


def compose(*steps: Step, **options: Any) -> Composition:
    """Gather steps (and everything they reference) into a plan."""
    return Composition(*steps, **options)


def _assign_ids(steps: list[Step]) -> dict[int, str]:
    names: dict[int, str] = {}
    taken = {s.id for s in steps if s.id}
    short = {
        "generate-image": "image",
        "generate-video": "video",
        "generate-audio": "audio",
        "merge-video-audio": "merge",
    }
    for s in steps:
        if s.id:
            names[id(s)] = s.id
            continue
        base = re.sub(r"[^a-z0-9_-]", "-", short.get(s.type, s.type).lower())
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names[id(s)] = name
    return names


class Result(dict[str, Any]):
    """A job's (or execution's) result: a dict that also reads as attributes (`result.url`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


Listener = Callable[[dict[str, Any]], None]


def iso_time(value: Any) -> str | None:
    """An ISO 8601 time (UTC) from epoch seconds; an ISO string is kept as it is."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        from datetime import UTC, datetime

        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the SDK and the CLI give it: `{seq, type, job, data, created_at}`, `created_at` an ISO 8601
    time whether the source gave epoch seconds (the store, older servers' streams) or ISO already."""
    view = dict(event)
    if "job" not in view and "job_id" in view:
        view["job"] = view.pop("job_id")
    view["created_at"] = iso_time(view.get("created_at", view.get("at")))
    view.pop("at", None)
    return view


def outputs_of(state: dict[str, Any] | None) -> list[Result]:
    """Every output of an execution: each succeeded leaf job's result (a job no other depends on) as
    `{job, job_id, type, url, path, duration}` (`path` where the files are local); a state without its jobs gives
    its `outputs` list; else its `result`."""
    if not state:
        return []
    jobs = state.get("jobs") or []
    if not jobs and isinstance(state.get("outputs"), list):
        return [Result({"job": o.get("job_id"), **o}) for o in state["outputs"] if isinstance(o, dict)]
    used = {d for j in jobs for d in j.get("depends_on") or []}
    found = []
    for j in jobs:
        res = j.get("result")
        if j["id"] in used or j.get("status") != "succeeded" or not isinstance(res, dict):
            continue
        if not (res.get("url") or res.get("path")):
            continue
        found.append(Result({"job": j["id"], "job_id": j["id"], "type": j.get("type"), "url": res.get("url"),
                             "path": res.get("path"), "duration": res.get("duration")}))  # fmt: skip
    if not found and isinstance(state.get("result"), dict):
        res = state["result"]
        if res.get("url") or res.get("path"):
            found.append(Result({"url": res.get("url"), "path": res.get("path"), "duration": res.get("duration")}))
    return found


class Status(str):
    """An execution's status, read as an attribute (`execution.status`); calling it (`execution.status()`, the
    older method form) gives the same value, a fresh one for an async handle (`await execution.status()`)."""

    _refresh: Callable[[], Any] | None = None

    def __new__(cls, value: str, refresh: Callable[[], Any] | None = None) -> Status:
        status = super().__new__(cls, value)
        status._refresh = refresh
        return status

    def __call__(self) -> Any:
        return self._refresh() if self._refresh is not None else str(self)


class ExecutionBackend(Protocol):
    """Where an async handle's execution lives: the local engine, or a server (`reelflow.client`)."""

    async def get(self, execution_id: str) -> dict[str, Any]: ...

    async def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]: ...

    async def cancel(self, execution_id: str) -> dict[str, Any]: ...

    async def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]: ...

    async def resume(self, execution_id: str) -> dict[str, Any]: ...

    async def retry(self, execution_id: str) -> str: ...

    def events(self, execution_id: str) -> AsyncIterator[dict[str, Any]]: ...


class SyncExecutionBackend(Protocol):
    """The blocking twin of ExecutionBackend."""

    def get(self, execution_id: str) -> dict[str, Any]: ...

    def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]: ...

    def cancel(self, execution_id: str) -> dict[str, Any]: ...

    def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]: ...

    def resume(self, execution_id: str) -> dict[str, Any]: ...

    def retry(self, execution_id: str) -> str: ...

    def events(self, execution_id: str) -> Iterator[dict[str, Any]]: ...


class LocalBackend:
    """The local engine (the settings' database); waiting runs a worker here when none runs elsewhere."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime

    async def get(self, execution_id: str) -> dict[str, Any]:
        return (await self.runtime.engine.get(execution_id)).model_dump(mode="json")

    async def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        return await self.runtime.wait(execution_id, timeout=timeout, on_update=on_update)

    async def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]:
        return (await self.runtime.engine.job_logs(execution_id, job_key)).model_dump(mode="json")

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        return (await self.runtime.engine.cancel(execution_id)).model_dump(mode="json")

    async def resume(self, execution_id: str) -> dict[str, Any]:
        return (await self.runtime.engine.resume(execution_id)).model_dump(mode="json")

    async def retry(self, execution_id: str) -> str:
        return await self.runtime.engine.retry(execution_id)

    async def events(self, execution_id: str, *, follow: bool = False) -> AsyncIterator[dict[str, Any]]:
        """The events stored so far (locally the execution is not followed: `wait` runs it); with `follow`, then
        the new ones, read every EVENTS_POLL_S, until the execution has ended (its last events are written with
        its final status, so one more read after seeing that status gets them all)."""
        store = self.runtime.store
        await self.get(execution_id)  # unknown: NotFound
        after = 0
        while True:
            ended = not follow or await store.execution_status(execution_id) in TERMINAL_EXECUTION
            while batch := await store.events(execution_id, after=after):
                for e in batch:
                    yield event_view(
                        {"seq": e.seq, "type": e.type, "job": e.job_key, "data": e.data, "created_at": e.created_at}
                    )
                after = batch[-1].seq
            if ended:
                return
            await asyncio.sleep(EVENTS_POLL_S)


class BlockingBackend:
    """A blocking backend over an async one: each call runs to completion in its own event loop."""

    def __init__(self, inner: ExecutionBackend) -> None:
        self.inner = inner

    @staticmethod
    def _run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def get(self, execution_id: str) -> dict[str, Any]:
        return self._run(self.inner.get(execution_id))

    def wait(
        self, execution_id: str, *, timeout: float | None = None, on_update: Listener | None = None
    ) -> dict[str, Any]:
        return self._run(self.inner.wait(execution_id, timeout=timeout, on_update=on_update))

    def job_logs(self, execution_id: str, job_key: str) -> dict[str, Any]:
        return self._run(self.inner.job_logs(execution_id, job_key))

    def cancel(self, execution_id: str) -> dict[str, Any]:
        return self._run(self.inner.cancel(execution_id))

    def resume(self, execution_id: str) -> dict[str, Any]:
        return self._run(self.inner.resume(execution_id))

    def retry(self, execution_id: str) -> str:
        return self._run(self.inner.retry(execution_id))

    def events(self, execution_id: str) -> Iterator[dict[str, Any]]:
        """The events, read to their end in one event loop (locally: those stored so far)."""

        async def read() -> list[dict[str, Any]]:
            return [e async for e in self.inner.events(execution_id)]

        return iter(self._run(read()))


class _Display:
    """What `wait(progress=True)` shows: the live per-job view while waiting (on a terminal), then the timeline.

    Off a terminal (a pipe, a log file) there is no live view, and tables are not cut to 80 columns."""

    def __init__(self) -> None:
        import sys as _sys

        from rich.console import Console
        from rich.live import Live

        tty = _sys.stdout.isatty()
        self.console: Console = Console(width=None if tty else 1000)
        self.live: Live | None = Live(console=self.console, refresh_per_second=8) if tty else None

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, state: dict[str, Any]) -> None:
        from .display import progress_view

        if self.live is not None:
            self.live.update(progress_view(state))

    def timeline(self, state: dict[str, Any]) -> None:
        from .display import timeline_table

        self.console.print(timeline_table(state))


def _result_of(state: dict[str, Any] | None) -> Result | None:
    res = (state or {}).get("result")
    return Result(res) if res is not None else None


def _is_done(state: dict[str, Any] | None) -> bool:
    return bool(state and state["status"] in TERMINAL_EXECUTION)


def _backend_of(backend: ExecutionBackend | LocalRuntime) -> ExecutionBackend:
    """A LocalRuntime wrapped in a LocalBackend, tested without importing the engine: until its module is
    loaded no LocalRuntime exists (a handle on a server's execution stays free of the engine)."""
    module = sys.modules.get("reelflow.engine.runtime")
    if module is not None and isinstance(backend, module.LocalRuntime):
        return LocalBackend(cast("LocalRuntime", backend))
    return cast("ExecutionBackend", backend)


class AsyncExecution:
    """A handle on a submitted execution (async), on the local engine or on a server."""

    def __init__(self, execution_id: str, backend: ExecutionBackend | LocalRuntime) -> None:
        self.id = execution_id
        self.backend: ExecutionBackend = _backend_of(backend)
        self.state: dict[str, Any] | None = None

    def sync(self) -> Execution:
        handle = Execution(self.id, BlockingBackend(self.backend))
        handle.state = self.state
        return handle

    async def refresh(self) -> dict[str, Any]:
        self.state = await self.backend.get(self.id)
        return self.state

    @property
    def status(self) -> Status:
        """The last known status ("unknown" before the first read); `await execution.status()` reads it anew."""

        async def fresh() -> str:
            return str((await self.refresh())["status"])

        return Status(self.state["status"] if self.state else "unknown", fresh)

    @property
    def result(self) -> Result | None:
        return _result_of(self.state)

    @property
    def outputs(self) -> list[Result]:
        """Every output: one per leaf job (`{job, type, url, path, duration}`)."""
        return outputs_of(self.state)

    def events(self) -> AsyncIterator[dict[str, Any]]:
        """The execution's events (`{seq, type, job, data, created_at}`): on a server followed to the end, locally
        those stored so far."""
        return self.backend.events(self.id)

    async def wait(self, progress: bool = False, timeout: float | None = None) -> AsyncExecution:
        """Wait for the end (locally, running a worker here when none runs elsewhere); show progress if asked."""
        if progress:
            with _Display() as display:
                self.state = await self.backend.wait(self.id, timeout=timeout, on_update=display.update)
            display.timeline(self.state)
        else:
            self.state = await self.backend.wait(self.id, timeout=timeout)
        return self

    async def logs(self, job: str) -> dict[str, Any]:
        """What the provider logged for the job `job` (an id of the plan): `text` (the last 64 KiB, every
        attempt), `truncated` and `dropped_chars` when earlier lines were left out, `attempt`, `updated_at`."""
        return await self.backend.job_logs(self.id, job)

    async def cancel(self) -> dict[str, Any]:
        self.state = await self.backend.cancel(self.id)
        return self.state

    async def resume(self) -> dict[str, Any]:
        self.state = await self.backend.resume(self.id)
        return self.state

    async def retry(self) -> AsyncExecution:
        return AsyncExecution(await self.backend.retry(self.id), self.backend)

    @property
    def done(self) -> bool:
        return _is_done(self.state)

    def __repr__(self) -> str:
        status = self.state["status"] if self.state else "?"
        return f"<Execution {self.id} {status}>"


class Execution:
    """A handle on a submitted execution (blocking), on the local engine or on a server."""

    def __init__(self, execution_id: str, backend: SyncExecutionBackend) -> None:
        self.id = execution_id
        self.backend = backend
        self.state: dict[str, Any] | None = None

    @property
    def result(self) -> Result | None:
        return _result_of(self.state)

    @property
    def outputs(self) -> list[Result]:
        """Every output: one per leaf job (`{job, type, url, path, duration}`)."""
        return outputs_of(self.state)

    @property
    def status(self) -> Status:
        """The status, read anew until the execution has ended (`execution.status()` still works)."""
        if not _is_done(self.state):
            self.refresh()
        assert self.state is not None
        return Status(self.state["status"])

    def events(self) -> Iterator[dict[str, Any]]:
        """The execution's events (`{seq, type, job, data, created_at}`): on a server followed to the end, locally
        those stored so far."""
        return self.backend.events(self.id)

    def refresh(self) -> dict[str, Any]:
        self.state = self.backend.get(self.id)
        return self.state

    def wait(self, progress: bool = False, timeout: float | None = None) -> Execution:
        """Wait for the end (locally, running a worker here when none runs elsewhere); show progress if asked."""
        if progress:
            with _Display() as display:
                self.state = self.backend.wait(self.id, timeout=timeout, on_update=display.update)
            display.timeline(self.state)
        else:
            self.state = self.backend.wait(self.id, timeout=timeout)
        return self

    def logs(self, job: str) -> dict[str, Any]:
        """What the provider logged for the job `job` (an id of the plan): `text` (the last 64 KiB, every
        attempt), `truncated` and `dropped_chars` when earlier lines were left out, `attempt`, `updated_at`."""
        return self.backend.job_logs(self.id, job)

    def cancel(self) -> dict[str, Any]:
        self.state = self.backend.cancel(self.id)
        return self.state

    def resume(self) -> dict[str, Any]:
        self.state = self.backend.resume(self.id)
        return self.state

    def retry(self) -> Execution:
        return Execution(self.backend.retry(self.id), self.backend)

    @property
    def done(self) -> bool:
        return _is_done(self.state)

    def __repr__(self) -> str:
        status = self.state["status"] if self.state else "?"
        return f"<Execution {self.id} {status}>"
