"""A real reelflow API server for tests: `create_app(...)` under uvicorn on a free loopback port.

    with ApiServer(settings, workers=1) as api:
        key = api.new_key("acme")
        with api.client(key.api_key) as http:
            http.post("/v1/executions", json=plan)

The server runs in a background thread with its own event loop; `start()` returns once `/healthz`
answers, `stop()` shuts uvicorn down (lifespan included) and joins the thread. `call()` runs a
coroutine in the server's loop, so tests can use the app's own store (keys, revocation) without a
second connection racing it. `counts()` reads row counts straight from the SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from reelflow.api.app import create_app
from reelflow.api.server import server_config
from reelflow.config import Settings
from reelflow.keys import NewKey, create_key
from reelflow.store.sqlite import sqlite_path

T = TypeVar("T")

TABLES = ("executions", "jobs", "events")


class _Server(uvicorn.Server):
    """uvicorn's server, remembering the loop it runs in."""

    loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)


class ApiServer:
    """`create_app(settings, workers=…, deliver_webhooks=…)` served on 127.0.0.1:<free port>."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 0,
        deliver_webhooks: bool = False,
        app: FastAPI | None = None,
        startup_timeout_s: float = 20.0,
    ) -> None:
        self.settings = settings
        self.app = app or create_app(settings, workers=workers, deliver_webhooks=deliver_webhooks)
        self.startup_timeout_s = startup_timeout_s
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port in between
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = server_config(  # the protocol `reelflow serve` runs: its read deadline and request limits
            self.app,
            self.settings,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_config=None,  # leave the test process's logging alone (pytest's caplog sees server errors)
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._run, name=f"apiserver-{self.port}", daemon=True)
        self._thread.start()
        self._wait_ready()
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # surfaced by start()/stop(), never swallowed
            self._error = exc

    def _wait_ready(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout_s
        last: Exception | None = None
        with httpx.Client(base_url=self.url, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not self._thread.is_alive():
                    self._close_socket()
                    raise RuntimeError(f"the API server stopped during startup: {self._error!r}")
                if self._server.started:
                    try:
                        if http.get("/healthz").status_code == 200:
                            return
                    except httpx.HTTPError as exc:
                        last = exc
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"the API server did not answer /healthz within {self.startup_timeout_s} s: {last!r}")

    def stop(self, timeout_s: float = 45.0) -> None:
        """Shut down; embedded workers drain their running jobs first (up to 30 s), so cancel long ones."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout_s)
        if thread.is_alive():  # connections that will not close (an SSE stream left open)
            server.force_exit = True
            thread.join(timeout_s)
        self._close_socket()
        self._server = self._thread = None
        if thread.is_alive():
            raise RuntimeError("the API server did not stop")
        if self._error is not None and not isinstance(self._error, SystemExit | KeyboardInterrupt):
            raise RuntimeError("the API server thread failed") from self._error

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run `coro` in the server's event loop (where the app's store lives) and return its result."""
        loop = self._server.loop if self._server is not None else None
        if loop is None:
            coro.close()
            raise RuntimeError("the API server is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    @property
    def store(self) -> Any:
        return self.app.state.services.store

    def new_key(self, tenant: str) -> NewKey:
        """A fresh API key for `tenant` (created if new)."""
        return self.call(create_key(self.store, tenant))

    def revoke(self, key_id: str) -> bool:
        return self.call(self.store.revoke_api_key(key_id))

    def client(self, api_key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}))
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    @property
    def db_path(self) -> Path:
        return Path(sqlite_path(self.settings.database_url))

    def counts(self, tables: tuple[str, ...] = TABLES) -> dict[str, int]:
        """Row counts read from the database (a separate connection)."""
        return {t: int(self.query(f"SELECT count(*) FROM {t}")[0][0]) for t in tables}

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of `sql` (`?` placeholders) read on a separate connection, SQLite file or PostgreSQL."""
        url = self.settings.database_url
        if url.startswith("postgres"):
            import psycopg

            with psycopg.connect(url, autocommit=True) as pg:
                return [tuple(r) for r in pg.execute(sql.replace("?", "%s"), args).fetchall()]
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()


def server_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for a server whose database and artifacts live under `root` (fast retries and polling)."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{root}/reelflow.db",
        "storage_url": f"file://{root}/artifacts",
        "public_url": "http://127.0.0.1:8000",
        "retry_base_s": 0.05,
        "retry_max_s": 0.5,
        "lease_seconds": 5,
        "poll_interval_s": 0.05,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def api_server(settings: Settings) -> Iterator[ApiServer]:
    """A server with one embedded worker on the test's own database (function scope)."""
    with ApiServer(settings, workers=1) as server:
        yield server


def module_database(kind: str, root: Path) -> contextlib.AbstractContextManager[str]:
    """A database for a module-scoped server (see `pgutil.database_of_kind`)."""
    from pgutil import database_of_kind

    return database_of_kind(kind, root)
