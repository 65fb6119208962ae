"""Shared fixtures: a fresh database and artifact folder per test, an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.engine.worker import Worker
from reelflow.providers.base import Provider
from reelflow.providers.registry import Providers
from reelflow.providers.sim import SimProvider
from reelflow.store import open_store
from reelflow.store.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))

# The property tests assert what comes out, never how fast: a slow example on a busy machine (a GC pause, the
# browser tests beside them) is not a failure, and hypothesis's default 200 ms deadline would report it as one.
hypothesis_settings.register_profile("reelflow", deadline=None, print_blob=True)
hypothesis_settings.load_profile("reelflow")


BOTH_STORES = frozenset(
    {
        "test_engine", "test_limits", "test_worker_processes", "test_webhooks", "test_callbacks",
        "test_client", "test_sdk", "test_metrics", "test_tenant_artifacts", "test_pay_once",
        "test_pay_once_providers", "test_mutants", "test_store", "test_pipeline_mixed", "test_states",
        "test_store_interface", "test_failover", "test_provider_logs",
    }
)
"""Test modules whose every test runs twice: on SQLite and on PostgreSQL (skipped, with the reason, when no
PostgreSQL server is reachable; on CI a missing server fails the run)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_kind" in metafunc.fixturenames:
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        kinds = ["sqlite", "postgres"] if module in BOTH_STORES else ["sqlite"]
        if metafunc.definition.get_closest_marker("sqlite_only"):
            kinds = ["sqlite"]
        if metafunc.definition.get_closest_marker("postgres_only"):
            kinds = ["postgres"]
        metafunc.parametrize("db_kind", kinds, scope="function")


@pytest.fixture
def database_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database for the test: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    from pgutil import database_of_kind

    with database_of_kind(db_kind, tmp_path) as url:
        yield url


def fast_settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for tests: this database, artifacts under `tmp_path`, quick retries, leases and polls."""
    return Settings(
        database_url=database_url,
        storage_url=f"file://{tmp_path}/artifacts",
        retry_base_s=0.05,
        retry_max_s=0.5,
        lease_seconds=5,
        poll_interval_s=0.05,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return fast_settings(tmp_path, database_url)


@pytest.fixture
def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a worker subprocess sharing the test's database."""
    env = dict(os.environ)
    env.update(
        REELFLOW_DATABASE_URL=settings.database_url,
        REELFLOW_STORAGE_URL=settings.storage_url,
        REELFLOW_RETRY_BASE_S=str(settings.retry_base_s),
        REELFLOW_RETRY_MAX_S=str(settings.retry_max_s),
        REELFLOW_LEASE_SECONDS=str(settings.lease_seconds),
        REELFLOW_POLL_INTERVAL_S=str(settings.poll_interval_s),
    )
    return env


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SQLiteStore]:
    s = open_store(settings.database_url)
    await s.migrate()
    yield s  # type: ignore[misc]  # a PostgresStore in the PostgreSQL runs: the same protocol
    await s.close()


@pytest.fixture
def engine(store: SQLiteStore, settings: Settings) -> Engine:
    return Engine(store, settings)


@pytest.fixture
def sim() -> SimProvider:
    return SimProvider()


@pytest.fixture
def providers(sim: SimProvider) -> Providers:
    return Providers({"sim": sim})


WorkerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Worker]]


@pytest.fixture
def running_worker(store: SQLiteStore, settings: Settings, providers: Providers) -> WorkerFactory:
    """`async with running_worker(**opts) as w:` runs a worker in this event loop for the block."""

    @contextlib.asynccontextmanager
    async def start(
        *, store_: SQLiteStore | None = None, providers_: dict[str, Provider] | None = None, **opts: Any
    ) -> AsyncIterator[Worker]:
        w = Worker(
            store_ or store,
            settings=settings,
            providers=Providers(providers_) if providers_ is not None else providers,
            **opts,
        )
        task = asyncio.create_task(w.run())
        try:
            yield w
        finally:
            w.stop()
            await asyncio.wait_for(task, timeout=30)

    return start


def sim_job(job_key: str, model: str = "sim/video", **params: Any) -> dict[str, Any]:
    extra = {k: params.pop(k) for k in ("depends_on", "max_attempts", "timeout_s", "start_timeout_s") if k in params}
    return {"id": job_key, "type": "generate-" + model.split("/")[1], "model": model, "params": params, **extra}
