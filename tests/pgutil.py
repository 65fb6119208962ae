"""PostgreSQL for tests: is a server reachable, and a fresh database per test (created and dropped here).

`REELFLOW_TEST_POSTGRES_URL` names a database the tests may connect to and create databases from
(default: postgresql://postgres@127.0.0.1:5432/test, trust auth).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

PG_URL = os.environ.get("REELFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SKIP_REASON = (
    "PostgreSQL not reachable on 127.0.0.1:5432: start it (pg_ctlcluster ... main start)"
    " or set REELFLOW_TEST_POSTGRES_URL"
)


def reachable() -> bool:
    """Whether the test server answers now."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


PG_AVAILABLE = reachable()
if not PG_AVAILABLE and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    # on CI the PostgreSQL tests must run: a server that is not there fails the run instead of skipping
    raise RuntimeError(f"CI is set but {SKIP_REASON}; .ci/run starts it before the tests")
requires_postgres = pytest.mark.skipif(not PG_AVAILABLE, reason=SKIP_REASON)


def database_url(name: str) -> str:
    """`PG_URL` pointing at database `name` instead (same server, user and options)."""
    parts = urlsplit(PG_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new empty database, dropped (connections and all) when the block ends."""
    name = f"reelflow_t_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database_sync() -> Iterator[str]:
    """`fresh_database` for synchronous fixtures."""
    name = f"reelflow_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database_of_kind(kind: str, root: Path) -> Iterator[str]:
    """A fresh database of `kind`: a SQLite file under `root`, or a new PostgreSQL database dropped
    afterwards (the test is skipped with the reason when no server is reachable)."""
    if kind == "sqlite":
        yield f"sqlite:///{root}/reelflow.db"
        return
    if not PG_AVAILABLE:
        pytest.skip(SKIP_REASON)
    with fresh_database_sync() as url:
        yield url
