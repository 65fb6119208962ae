"""The `reelflow` command line (typer + rich). Exit status: 0 ok, 1 failed or refused, 2 bad usage."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ErrorItem, PlanError, ReelflowError
from .states import ACTIVE_JOB, TERMINAL_EXECUTION

# Start-up stays cheap (`reelflow --help`): the engine, the settings (pydantic), the catalog, the metrics
# (prometheus_client) and httpx are imported by the commands that use them, not here.
if TYPE_CHECKING:
    from .client import APIError, Client
    from .engine.runtime import LocalRuntime

log = logging.getLogger("reelflow.cli")
app = typer.Typer(
    name="reelflow",
    help="Run AI video pipelines: plans of generation jobs on a durable queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (the API's execution state).")]
ServerOpt = Annotated[
    str | None, typer.Option("--server", envvar="REELFLOW_SERVER", help="Talk to a reelflow server at this URL.")
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="REELFLOW_API_KEY", help="The API key for --server.", show_default=False),
]


class Refused(Exception):
    """Ends a command with exit status 1 after the message was shown."""


class Interrupted(Exception):
    """Ends a command with exit status 130 after Ctrl-C, once where things stand was shown."""


def _configuration_errors() -> tuple[type[Exception], ...]:
    """SettingsError, LimitsFileError and CatalogFileError: a bad configuration, bad usage (exit 2).

    Only those of modules already loaded: a module never imported cannot have raised its error, and is not
    imported just to say so (e.g. while `--help` exits)."""
    found: list[type[Exception]] = []
    for module, name in (
        ("reelflow.config", "SettingsError"),
        ("reelflow.limits", "LimitsFileError"),
        ("reelflow.providers.catalog", "CatalogFileError"),
    ):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, Exception):
            found.append(error)
    return tuple(found)


def _local_runtime() -> LocalRuntime:
    """A local runtime; its import loads the engine, paid for only by the commands that use it."""
    from .engine.runtime import LocalRuntime

    return LocalRuntime()


def configuration_problem() -> str | None:
    """What is wrong with the settings, the limits file or the catalog file (file:line), or None.

    Reads each once: the limits and the catalog stay loaded for the command that follows."""
    from .config import SettingsError, get_settings
    from .limits import LimitsFileError, get_limits
    from .providers.catalog import CatalogFileError, load_extensions

    try:
        settings = get_settings()
        get_limits(settings)
        load_extensions(settings)
    except (SettingsError, LimitsFileError, CatalogFileError) as exc:
        return str(exc)
    return None


@app.callback()
def check_configuration(ctx: typer.Context) -> None:
    """Every command starts by checking the configuration: a problem is bad usage (exit 2), before anything
    is done. `--help` still works on a broken configuration."""
    if ctx.resilient_parsing or any(a in ("--help", "-h") for a in sys.argv[1:]):
        return
    problem = configuration_problem()
    if problem is not None:
        err.print(f"[red]error:[/red] {escape(problem)}", highlight=False)
        raise typer.Exit(2)


def command(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body; turn every expected failure into a message and an exit status."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        import asyncio

        try:
            return asyncio.run(fn(*args, **kwargs))
        except _configuration_errors() as exc:  # bad configuration: bad usage
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except PlanError as exc:
            err.print(f"[red]refused:[/red] {exc}", highlight=False)
        except (ReelflowError, ValueError, OSError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
        except Refused:
            pass
        except Interrupted:
            raise typer.Exit(130) from None
        except (KeyboardInterrupt, asyncio.CancelledError):  # a Ctrl-C outside a wait
            err.print("interrupted")
            raise typer.Exit(130) from None
        raise typer.Exit(1)

    return wrapper


def _client(server: str, api_key: str | None) -> Client:
    """A client for --server; a missing key or a malformed URL is bad usage (2)."""
    from .client import Client

    if not api_key:
        err.print("[red]error:[/red] --server needs an API key: set REELFLOW_API_KEY or pass --api-key")
        raise typer.Exit(2)
    try:
        return Client(server, api_key)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _refused(exc: APIError) -> None:
    """A problem answer: its detail, then each `loc: msg` the detail does not already say."""
    err.print(f"[red]refused:[/red] {exc.detail}", highlight=False)
    for item in exc.errors:
        loc = item.get("loc")
        line = str(ErrorItem(list(loc) if isinstance(loc, list) else [], str(item.get("msg", ""))))
        if line not in exc.detail:
            err.print(f"  {line}", highlight=False)


def remote(server: str, api_key: str | None, body: Callable[[Client], T]) -> T:
    """Run a command body against a server; its failures become a message and exit status 1."""
    from .client import APIConnectionError, APIError

    client = _client(server, api_key)
    try:
        with client:
            return body(client)
    except APIError as exc:
        _refused(exc)
    except APIConnectionError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
    except TimeoutError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    raise typer.Exit(1)


def _read_plan(path: Path) -> Any:
    """The plan's data; a missing file is bad usage (2), unparsable text a refusal (1)."""
    from .plan import load_plan_text

    if str(path) != "-" and not path.is_file():
        err.print(f"[red]error:[/red] plan file {str(path)!r} not found")
        raise typer.Exit(2)
    try:
        if str(path) == "-":
            return load_plan_text(sys.stdin.read(), filename="<stdin>")
        return load_plan_text(path.read_text(encoding="utf-8"), filename=str(path))
    except PlanError as exc:
        err.print(f"[red]refused:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] cannot read {str(path)!r}: {exc}", highlight=False)
        raise typer.Exit(2) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


STATE_READ_S = 0.5
"""How long Ctrl-C waits to read the execution's state for the line it prints."""


class _CtrlC:
    """SIGINT while a command waits on the local database. The first cancels the wait (the runtime then hands
    its embedded worker's jobs back to the queue within about a second, provider ids kept); a second one
    exits at once, whatever the first is still doing."""

    def __init__(self) -> None:
        import asyncio

        self.count = 0
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            if self.task is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)
            return
        # no rich here: the first interrupt may be printing; one write of plain bytes is safe in a handler
        os.write(2, b"interrupted again: exiting now (jobs still held return to the queue when their leases end)\n")
        os._exit(130)

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Iterator[_CtrlC]:
        handler = cls()
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background: SIGINT stays ignored
            yield handler
            return
        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: Ctrl-C stays asyncio's
            yield handler
            return
        try:
            yield handler
        finally:
            if not handler.count:  # after an interrupt the handler stays: a second Ctrl-C exits at once
                signal.signal(signal.SIGINT, previous)


def _where_it_stands(state: dict[str, Any]) -> str:
    """The line printed when Ctrl-C ends a wait: what still runs, how to follow it, how to stop it."""
    eid = state["id"]
    if state["status"] in TERMINAL_EXECUTION:
        return f"execution {eid} {state['status']}. Show it: reelflow status {eid}"
    active = [j for j in state["jobs"] if j["status"] in ACTIVE_JOB]
    # the local provider's work ran in this process: it stopped with it and runs again from the queue
    remote = [j for j in active if j.get("provider_job_id") and not str(j.get("model") or "").startswith("local/")]
    at_provider = len(remote)
    in_worker = sum(1 for j in active if j["status"] == "running" and j not in remote)
    parts = [f"{len(active) - at_provider - in_worker} queued", f"{at_provider} running at the provider"]
    if in_worker:
        parts.append(f"{in_worker} running in a worker")
    return (
        f"execution {eid} continues: {', '.join(parts)}. "
        f"Follow: reelflow status {eid} --wait. Stop: reelflow cancel {eid}"
    )


async def _follow(rt: LocalRuntime, execution_id: str, *, as_json: bool) -> dict[str, Any]:
    """Wait for the execution, with a live per-job display unless JSON was asked for. Ctrl-C leaves the
    execution running (see `_CtrlC`) and ends the command with 130 and a line saying where things stand."""
    import asyncio

    with _CtrlC.installed() as ctrl_c:
        try:
            if as_json or not out.is_terminal:
                return await rt.wait(execution_id)
            from rich.live import Live

            from .display import progress_view

            with Live(console=out, refresh_per_second=8, transient=False) as live:

                def show(state: dict[str, Any]) -> None:
                    live.update(progress_view(state))

                return await rt.wait(execution_id, on_update=show)
        except asyncio.CancelledError:
            if not ctrl_c.count:
                raise
            if (task := asyncio.current_task()) is not None:
                task.uncancel()  # the cancel was ours and is handled: later timeouts in this task work as usual
            try:
                line = _where_it_stands(await asyncio.wait_for(rt.engine.get(execution_id), STATE_READ_S))
            except Exception:  # the database is busy or away: say what to do without the counts
                line = (
                    f"execution {execution_id} continues (its state could not be read just now). "
                    f"Follow: reelflow status {execution_id} --wait. Stop: reelflow cancel {execution_id}"
                )
            err.print(line, highlight=False, soft_wrap=True)  # now, before the database is closed
            raise Interrupted from None


def _summary(state: dict[str, Any]) -> None:
    style = {"succeeded": "green", "failed": "red", "canceled": "magenta"}.get(state["status"], "yellow")
    out.print(f"execution [bold]{state['id']}[/bold] [{style}]{state['status']}[/{style}]", highlight=False)
    if state.get("error"):
        out.print(f"  error: {state['error']}", highlight=False)
    result = state.get("result") or {}
    if result.get("path") or result.get("url"):
        out.print(f"  output: {result.get('path') or result.get('url')}", highlight=False, soft_wrap=True)
    if n := state.get("possible_duplicates"):
        jobs = ", ".join(j["id"] for j in state.get("jobs", []) if j.get("possible_duplicates"))
        out.print(
            f"  [red]possible duplicate charge[/red]: about ${state.get('possible_duplicate_charge') or 0:.4f}"
            f" ({n} {'retry' if n == 1 else 'retries'} of {jobs} went ahead where the provider could not be asked"
            " whether it took the earlier attempt)",
            highlight=False,
            soft_wrap=True,
        )


def _exit_for(state: dict[str, Any]) -> None:
    if state["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def run(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML or JSON), or - for standard input.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the end, showing progress.")] = False,
    webhook: Annotated[str | None, typer.Option("--webhook", help="Deliver the final state to this URL.")] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate and enqueue a plan; with --wait, follow it to the end."""
    data = _read_plan(plan)
    if server:
        state = remote(server, api_key, lambda client: _run_remote(client, data, wait, webhook, as_json))
    else:
        state = _run(data, wait, webhook, as_json)
    if wait:
        _exit_for(state)


def _show_final(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(state)
    else:
        from .display import timeline_table

        out.print(timeline_table(state))
        _summary(state)


def _show_accepted(execution_id: str, state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json({"id": execution_id, "status": state["status"]})
    else:
        out.print(f"accepted: execution [bold]{execution_id}[/bold] ({len(state['jobs'])} jobs queued)")


def _follow_remote(client: Client, execution_id: str, *, as_json: bool) -> dict[str, Any]:
    """`_follow` on a server: its event stream drives the same live display."""
    if as_json or not out.is_terminal:
        return client.wait(execution_id)
    from rich.live import Live

    from .display import progress_view

    with Live(console=out, refresh_per_second=8, transient=False) as live:
        return client.wait(execution_id, on_update=lambda state: live.update(progress_view(state)))


def _run_remote(client: Client, data: Any, wait: bool, webhook: str | None, as_json: bool) -> dict[str, Any]:
    execution_id = client.execute(data, webhook=webhook).id
    if wait:
        state = _follow_remote(client, execution_id, as_json=as_json)
        _show_final(state, as_json)
        return state
    state = client.get(execution_id)
    _show_accepted(execution_id, state, as_json)
    return state


@command
async def _run(data: Any, wait: bool, webhook: str | None, as_json: bool) -> dict[str, Any]:
    rt = _local_runtime()
    try:
        execution_id = await rt.engine.submit(data, webhook=webhook)
        if wait:
            state = await _follow(rt, execution_id, as_json=as_json)
            _show_final(state, as_json)
            return state
        state = await rt.engine.get(execution_id)
        _show_accepted(execution_id, state, as_json)
        return state
    finally:
        await rt.close()


@app.command()
def status(
    execution_id: Annotated[str, typer.Argument(metavar="ID")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the end, showing progress.")] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an execution's state."""
    if server:

        def body(client: Client) -> dict[str, Any]:
            state = _follow_remote(client, execution_id, as_json=as_json) if wait else client.get(execution_id)
            _show_state(state, as_json)
            return state

        state = remote(server, api_key, body)
    else:
        state = _status(execution_id, wait, as_json)
    if wait:
        _exit_for(state)


def _show_state(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(state)
    else:
        from .display import progress_view

        out.print(progress_view(state))
        _summary(state)


@command
async def _status(execution_id: str, wait: bool, as_json: bool) -> dict[str, Any]:
    rt = _local_runtime()
    try:
        state = await (_follow(rt, execution_id, as_json=as_json) if wait else rt.engine.get(execution_id))
        _show_state(state, as_json)
        return state
    finally:
        await rt.close()


@app.command()
def events(
    execution_id: Annotated[str, typer.Argument(metavar="ID")], server: ServerOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Print an execution's event log, one JSON object per line (with --server: followed to the end)."""
    if server:

        def body(client: Client) -> None:
            for e in client.events(execution_id):
                sys.stdout.write(json.dumps({k: e.get(k) for k in ("seq", "type", "job", "data")}) + "\n")
                sys.stdout.flush()

        remote(server, api_key, body)
    else:
        _events(execution_id)


@command
async def _events(execution_id: str) -> None:
    rt = _local_runtime()
    try:
        await rt.engine.get(execution_id)
        after = 0
        while batch := await rt.store.events(execution_id, after=after):
            for e in batch:
                sys.stdout.write(json.dumps({"seq": e.seq, "type": e.type, "job": e.job_id, "data": e.data}) + "\n")
            after = batch[-1].seq
    finally:
        await rt.close()


def _lifecycle(
    name: str, call: Callable[[LocalRuntime, str], Awaitable[Any]], call_remote: Callable[[Client, str], Any]
) -> Callable[..., None]:
    """A command that acts on an execution (the result is its state, or the id of a new one) and shows the
    state; with --wait it then follows the execution to its end like `status --wait` (output, exit status)."""

    def cmd(
        execution_id: Annotated[str, typer.Argument(metavar="ID")],
        wait: Annotated[bool, typer.Option("--wait", help="Then wait for the end, showing progress.")] = False,
        server: ServerOpt = None,
        api_key: ApiKeyOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        if server:

            def on_server(client: Client) -> dict[str, Any]:
                result = call_remote(client, execution_id)
                if wait:
                    state = _follow_remote(client, result if isinstance(result, str) else execution_id, as_json=as_json)
                    _show_state(state, as_json)
                    return state
                state = result if isinstance(result, dict) else client.get(result)
                if as_json:
                    _print_json(state)
                else:
                    _summary(state)
                return state

            state = remote(server, api_key, on_server)
        else:

            @command
            async def body() -> dict[str, Any]:
                rt = _local_runtime()
                try:
                    result = await call(rt, execution_id)
                    target = result if isinstance(result, str) else execution_id
                    if wait:
                        state = await _follow(rt, target, as_json=as_json)
                        _show_state(state, as_json)
                        return state
                    state = result if isinstance(result, dict) else await rt.engine.get(result)
                    if as_json:
                        _print_json(state)
                    else:
                        _summary(state)
                    return state
                finally:
                    await rt.close()

            state = body()
        if wait:
            _exit_for(state)

    cmd.__name__ = name
    return cmd


app.command("cancel", help="Cancel an execution: queued jobs are canceled, running ones stopped.")(
    _lifecycle("cancel", lambda rt, i: rt.engine.cancel(i), lambda c, i: c.cancel(i))
)
app.command("resume", help="Re-run only the failed, canceled and skipped jobs of an execution.")(
    _lifecycle("resume", lambda rt, i: rt.engine.resume(i), lambda c, i: c.resume(i))
)
app.command("retry", help="Start a new execution of the same plan (--wait follows the new one).")(
    _lifecycle("retry", lambda rt, i: rt.engine.retry(i), lambda c, i: c.retry(i).id)
)


@app.command()
def estimate(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML or JSON), or - for standard input.")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Estimate a plan's cost and time (the longest chain of dependencies); nothing is enqueued."""
    from .estimate import estimate_plan

    data = _read_plan(plan)
    if server:
        answer = remote(server, api_key, lambda client: client.estimate(data))
    else:
        try:
            answer = estimate_plan(data)
        except PlanError as exc:
            err.print(f"[red]refused:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    if as_json:
        _print_json(answer)
        return
    table = Table(title="estimate")
    table.add_column("job")
    table.add_column("cost", justify="right")
    table.add_column("time", justify="right")
    for job in answer["jobs"]:
        table.add_row(job["id"], f"${job['cost_usd']:.4f}", f"{job['seconds']:.1f}s")
    out.print(table)
    out.print(f"total: ${answer['cost_usd']:.4f}, about {answer['seconds']:.1f}s", highlight=False)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Jobs held at once.")] = 1000,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            envvar="REELFLOW_METRICS_PORT",
            help="Serve this worker's Prometheus metrics at http://HOST:PORT/metrics (0: off).",
        ),
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", envvar="REELFLOW_METRICS_HOST", help="Address for --metrics-port.")
    ] = "0.0.0.0",
) -> None:
    """Run a worker until SIGTERM/SIGINT: claims jobs from the database and runs them."""
    _worker(concurrency, metrics_port, metrics_host)


@command
async def _worker(concurrency: int, metrics_port: int = 0, metrics_host: str = "0.0.0.0") -> None:
    from . import metrics
    from .config import get_settings
    from .engine.worker import Worker, tune_gc
    from .logs import configure_logging

    settings = get_settings()
    configure_logging(settings, service=True)
    exporter = None
    if metrics_port:  # this process's registry only; a taken port: exit 1

        async def render() -> bytes:
            return metrics.exposition()

        sock = metrics.listen(metrics_host, metrics_port)
        exporter = await metrics.serve_listener(sock, render, settings.metrics_token)
        log.info("metrics at http://%s:%d/metrics", metrics_host, metrics_port)
    rt = _local_runtime()
    try:
        w = Worker(rt.store, settings=rt.settings, concurrency=concurrency)
        w.install_signal_handlers()
        tune_gc()
        log.info("worker %s on %s (concurrency %d)", w.id, rt.settings.database_url, concurrency)
        await w.run()
        log.info("worker %s stopped after %d jobs", w.id, w.finished)
    finally:
        await rt.close()
        if exporter is not None:
            exporter.close()


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="Embedded workers in this process (0: API only).")
    ] = 1,
) -> None:
    """Run the HTTP API, with N embedded workers (webhook delivery runs here too)."""
    import uvicorn

    from .api import create_app
    from .api.server import server_config
    from .config import get_settings, public_url_for
    from .engine.worker import tune_gc
    from .logs import configure_logging

    settings = public_url_for(host, port, get_settings())
    configure_logging(settings, service=True)  # uvicorn's own lines go through the same handler
    tune_gc()
    access_log = logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
    try:
        api = create_app(settings, workers=workers)
    except OSError as exc:  # the metrics listener's address is taken
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    config = server_config(
        api, settings, host=host, port=port, log_config=None, log_level=None, access_log=access_log
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # the port is taken, or the app failed to start: uvicorn logged why
        raise typer.Exit(1)


keys_app = typer.Typer(help="Manage API keys (each belongs to one tenant).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant_name: Annotated[str, typer.Option("--tenant", help="The tenant the key acts for (created if new).")],
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; prints it once, with the tenant's webhook secret."""
    _keys_create(tenant_name, as_json)


@command
async def _keys_create(tenant_name: str, as_json: bool) -> None:
    from .keys import create_key

    rt = _local_runtime()
    try:
        new = await create_key(rt.store, tenant_name)
    finally:
        await rt.close()
    if as_json:
        _print_json(
            {"api_key": new.api_key, "webhook_secret": new.webhook_secret, "tenant": new.tenant, "key_id": new.key_id}
        )
    else:
        out.print(f"tenant:         {new.tenant}", highlight=False)
        out.print(f"api_key:        {new.api_key}", highlight=False, soft_wrap=True)
        out.print(f"webhook_secret: {new.webhook_secret}", highlight=False, soft_wrap=True)
        out.print("[dim]The key is shown only now; it is stored as a hash.[/dim]")


@keys_app.command("list")
def keys_list(tenant_name: Annotated[str | None, typer.Option("--tenant")] = None, as_json: JsonOpt = False) -> None:
    """List API keys (ids and tenants; the keys themselves are never stored)."""
    _keys_list(tenant_name, as_json)


@command
async def _keys_list(tenant_name: str | None, as_json: bool) -> None:
    from .store.common import iso

    rt = _local_runtime()
    try:
        keys = await rt.store.list_api_keys(tenant_name)
    finally:
        await rt.close()
    rows = [
        {"key_id": k.id, "tenant": k.tenant, "created_at": iso(k.created_at), "revoked_at": iso(k.revoked_at)}
        for k in keys
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(title="API keys")
    for col in ("key_id", "tenant", "created_at", "revoked_at"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c] or "") for c in ("key_id", "tenant", "created_at", "revoked_at")))
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (the part after rf_), or the key.")]) -> None:
    """Revoke an API key at once."""
    _keys_revoke(key_id)


@command
async def _keys_revoke(key_id: str) -> None:
    from .keys import KEY_RE

    m = KEY_RE.match(key_id)
    rt = _local_runtime()
    try:
        done = await rt.store.revoke_api_key(m.group(1) if m else key_id)
    finally:
        await rt.close()
    if not done:
        err.print(f"[red]error:[/red] no active key {key_id!r}", highlight=False)
        raise Refused
    out.print(f"revoked {key_id}")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    _migrate()


@command
async def _migrate() -> None:
    rt = _local_runtime()
    try:
        version = await rt.store.migrate()
        out.print(f"database {rt.settings.database_url} at schema version {version}")
    finally:
        await rt.close()


@app.command()
def models(server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False) -> None:
    """List the model catalog."""
    if server:
        specs = remote(server, api_key, lambda client: client.models())
    else:
        from .providers.catalog import list_models

        specs = [m.model_dump(mode="json") for m in list_models()]
    if as_json:
        _print_json(specs)
        return
    table = Table(title="models")
    for col in ("model", "types", "parameters", "price"):
        table.add_column(col)
    for m in specs:
        price = "free" if m["price"]["unit"] == "free" else f"${m['price']['usd']:g} / {m['price']['unit']}"
        table.add_row(m["id"], ", ".join(m["types"]), ", ".join(m["params"]), price)
    out.print(table)


SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Window of the figures: an ISO 8601 time or a duration back (24h, 90m, 7d)."),
]


@app.command()
def stats(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, as_json: JsonOpt = False, since: SinceOpt = None
) -> None:
    """Usage this month (executions, cost, cache hits) against the limits, the queue by provider, and the
    figures of the window (24 h unless --since): success rate, p50/p95 execution time, queue depth,
    per-provider success and latency, webhook deliveries, spend this month. Locally: every tenant."""
    from .store.stats import parse_since

    try:
        start = parse_since(since, time.time())
    except ValueError as exc:
        err.print(f"[red]error:[/red] --since: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    data: dict[str, Any]
    if server:
        data = remote(server, api_key, lambda client: {"usage": [client.usage()], "stats": client.stats(since)})
    else:
        data = _stats(start)
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"usage, {data['usage'][0]['month']}" if data["usage"] else "usage")
    for col in ("tenant", "executions", "cost (settled)", "reserved", "cache hits", "running", "limits"):
        table.add_column(col)
    for u in data["usage"]:
        limits = u.get("limits") or {}
        shown = ", ".join(f"{k} {v:g}" for k, v in limits.items() if v is not None) or "none"
        cap = limits.get("max_concurrent")
        running = str(u.get("jobs_running", "?")) + (f" of {cap}" if cap is not None else "")
        table.add_row(
            u["tenant"],
            str(u["executions"]),
            f"${u['cost_usd']:.4f}",
            f"${u['reserved_usd']:.4f}",
            str(u["cache_hits"]),
            running,
            shown,
        )
    out.print(table)
    if "queue" in data:
        q = data["queue"]
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(q["jobs"].items())) or "none"
        out.print(f"jobs: {jobs}")
        for label, key in (("running", "running_by_provider"), ("queued", "queued_by_provider")):
            if q[key]:
                out.print(f"{label} by provider: " + ", ".join(f"{k} {v}" for k, v in sorted(q[key].items())))
        caps = data["limits"]["providers"]
        lines = [f"{p}: {', '.join(f'{k} {v:g}' for k, v in lim.items() if v is not None)}" for p, lim in caps.items()]
        out.print("provider limits: " + ("; ".join(ln for ln in lines if not ln.endswith(": ")) or "none"))
    _show_stats(data["stats"])


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _show_stats(s: dict[str, Any]) -> None:
    """The window's figures for a person (the same as `GET /v1/stats`)."""
    ex = s["executions"]
    who = "every tenant" if s["tenant"] is None else f"tenant {s['tenant']}"
    out.print(f"since {s['since']} ({who}):", highlight=False)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(ex["by_status"].items())) or "none"
    out.print(f"executions: {counts}", highlight=False)
    out.print(
        f"success rate: {_pct(ex['success_rate'])}, execution time p50 {_secs(ex['p50_s'])}, p95 {_secs(ex['p95_s'])}",
        highlight=False,
    )
    w = s["workers"]
    out.print(
        f"queue depth: {s['queue_depth']}; workers live {w['live']}, slots in use {w['slots_in_use']}", highlight=False
    )
    if s["providers"]:
        table = Table(title="providers")
        for col in ("provider", "jobs", "succeeded", "failed", "success rate", "p50"):
            table.add_column(col)
        for p in s["providers"]:
            table.add_row(
                p["provider"], str(p["requests"]), str(p["succeeded"]), str(p["failed"]),
                _pct(p["success_rate"]), _secs(p["p50_s"]),
            )  # fmt: skip
        out.print(table)
    h = s["webhooks"]
    out.print(
        f"webhooks: delivered {h['delivered']}, failed {h['failed']}, pending {h['pending']}"
        f" (delivery rate {_pct(h['success_rate'])})",
        highlight=False,
    )
    out.print(f"spend this month: ${s['spend_usd_month']:.4f}", highlight=False)


@command
async def _stats(since: float) -> dict[str, Any]:
    from .limits import get_limits

    rt = _local_runtime()
    try:
        queue = await rt.store.queue_stats()
        keys = {k.tenant for k in await rt.store.list_api_keys()}
        tenants = sorted(keys | set(queue["active_by_tenant"]) | {"default"})  # those with jobs under way too
        return {
            "usage": [await rt.engine.usage(t) for t in tenants],
            "queue": queue,
            "limits": get_limits(rt.settings).as_dict(),
            "stats": await rt.store.stats(None, since),
        }
    finally:
        await rt.close()


_AGE = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age_seconds(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s`, `2w` (or plain seconds) as seconds; bad usage otherwise."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _AGE else "s"
    number = value[:-1] if value[-1:] in _AGE else value
    try:
        seconds = float(number) * _AGE[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        err.print(f"[red]error:[/red] --older-than: not an age like 30d, 12h or 90m: {text!r}", highlight=False)
        raise typer.Exit(2)
    return seconds


@app.command()
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of finished executions to delete: 30d, 12h, 90m, 2w.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Delete executions that ended longer ago than --older-than, with their jobs, events and deliveries
    (stored artifacts stay)."""
    removed = _prune(time.time() - _age_seconds(older_than))
    if as_json:
        _print_json(removed)
    else:
        out.print(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in removed.items()) + " deleted")


@command
async def _prune(cutoff: float) -> dict[str, int]:
    rt = _local_runtime()
    try:
        await rt.store.migrate()
        return await rt.store.prune(cutoff)
    finally:
        await rt.close()


@app.command()
def demo() -> None:
    """Render the sunset demo on the local provider and print the MP4's path and a timeline."""
    from importlib import resources

    from .plan import load_plan_text

    text = (resources.files("reelflow") / "examples" / "sunset.yaml").read_text(encoding="utf-8")
    state = _demo(load_plan_text(text, filename="sunset.yaml"))
    _exit_for(state)


@command
async def _demo(data: Any) -> dict[str, Any]:
    from .config import get_settings
    from .display import timeline_table
    from .logs import configure_logging

    configure_logging(get_settings())
    rt = _local_runtime()
    try:
        execution_id = await rt.engine.submit(data)
        out.print(f"demo: execution [bold]{execution_id}[/bold] on {rt.settings.database_url}")
        state = await _follow(rt, execution_id, as_json=False)
        out.print(timeline_table(state))
        _summary(state)
        if state["status"] == "succeeded":
            result = state["result"] or {}
            out.print(
                f"[green]final video:[/green] {result.get('path')}  "
                f"({result.get('duration')} s, {result.get('width')}x{result.get('height')})",
                highlight=False,
                soft_wrap=True,
            )
        return state
    finally:
        await rt.close()


def main() -> None:
    try:
        app()
    except _configuration_errors() as exc:  # outside an async command (serve)
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
