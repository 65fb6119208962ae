"""The long-running processes (a worker, the HTTP API) and the demo."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import fail, on_local, out

if TYPE_CHECKING:
    from .backend import Local

log = logging.getLogger("reelflow.cli")


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
    from .. import metrics
    from ..config import get_settings
    from ..engine.worker import Worker, tune_gc
    from ..logs import configure_logging

    async def body(local: Local) -> None:
        settings = get_settings()
        configure_logging(settings, service=True)
        exporter = None
        if metrics_port:  # this process's registry only; a taken port: exit 1

            async def render() -> bytes:
                return metrics.exposition()

            sock = metrics.listen(metrics_host, metrics_port)
            exporter = await metrics.serve_listener(sock, render, settings.metrics_token)
            log.info("metrics at http://%s:%d/metrics", metrics_host, metrics_port)
        try:
            rt = local.runtime
            w = Worker(rt.store, settings=rt.settings, concurrency=concurrency)
            w.install_signal_handlers()
            tune_gc()
            log.info("worker %s on %s (concurrency %d)", w.id, rt.settings.database_url, concurrency)
            await w.run()
            log.info("worker %s stopped after %d jobs", w.id, w.finished)
        finally:
            await local.aclose()
            if exporter is not None:
                exporter.close()

    on_local(body)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="Embedded workers in this process (0: API only).")
    ] = 1,
) -> None:
    """Run the HTTP API, with N embedded workers (webhook delivery runs here too)."""
    import uvicorn

    from ..api import create_app
    from ..api.server import server_config
    from ..config import get_settings, public_url_for
    from ..engine.worker import tune_gc
    from ..logs import configure_logging

    settings = public_url_for(host, port, get_settings())
    configure_logging(settings, service=True)  # uvicorn's own lines go through the same handler
    access_log = logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
    try:
        api = create_app(settings, workers=workers)
    except OSError as exc:  # the metrics listener's address is taken
        raise fail(str(exc)) from None
    tune_gc()  # the app made: what is there now lives as long as the process
    config = server_config(api, settings, host=host, port=port, log_config=None, log_level=None, access_log=access_log)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # the port is taken, or the app failed to start: uvicorn logged why
        raise typer.Exit(1)


def demo() -> None:
    """Render the sunset demo on the local provider and print the MP4's path and a timeline."""
    from importlib import resources

    from ..config import get_settings
    from ..display import timeline_table
    from ..logs import configure_logging
    from ..plan import load_plan_text
    from .follow import follow
    from .show import exit_for, summary

    text = (resources.files("reelflow") / "examples" / "sunset.yaml").read_text(encoding="utf-8")
    data = load_plan_text(text, filename="sunset.yaml")

    async def body(local: Local) -> dict[str, Any]:
        configure_logging(get_settings())
        execution_id = await local.submit(data, None)
        out().print(f"demo: execution [bold]{execution_id}[/bold] on {local.runtime.settings.database_url}")
        state = await follow(local, execution_id, as_json=False)
        out().print(timeline_table(state))
        summary(state)
        if state["status"] == "succeeded":
            result = state["result"] or {}
            out().print(
                f"[green]final video:[/green] {result.get('path')}  "
                f"({result.get('duration')} s, {result.get('width')}x{result.get('height')})",
                highlight=False,
                soft_wrap=True,
            )
        return state

    exit_for(on_local(body))
