"""Property-based fuzzing of every operation in the app's own OpenAPI schema: no request may end in a 5xx, and
every answer is one the document lists, with its content type, matching its schema (the typed answers of
`reelflow.models`, problem+json for errors).

The schema is the app's `/openapi.json` document (taken at collection time from an app that touches no
database); the requests go in-process (ASGI) to a second app on a fresh database, with a valid API key so
they get past authentication and reach the handlers. Examples per operation are bounded to keep it short.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from apiserver import server_settings
from reelflow.api.app import create_app
from reelflow.config import Settings
from reelflow.keys import create_key
from reelflow.store.sqlite import SQLiteStore

OFFLINE = Settings(database_url="sqlite://:memory:", storage_url="file:///nonexistent", _env_file=None)
schema = schemathesis.openapi.from_dict(create_app(OFFLINE, deliver_webhooks=False).openapi())


async def _make_key(config: Settings) -> str:
    store = SQLiteStore(config.database_url)
    try:
        await store.migrate()
        return (await create_key(store, "fuzz")).api_key
    finally:
        await store.close()


@pytest.fixture(scope="module")
def fuzz_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """One database for the module, with a valid API key in it."""
    config = server_settings(Path(tmp_path_factory.mktemp("fuzz")))
    return config, asyncio.run(_make_key(config))


@pytest.fixture
def fuzz(fuzz_db: tuple[Settings, str]) -> tuple[FastAPI, str]:
    """A fresh app per operation: schemathesis starts its lifespan on the first call and ends it (closing the
    app's store) when the test item ends, so an app is not reused across items."""
    config, key = fuzz_db
    return create_app(config, workers=0, deliver_webhooks=False), key


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case: schemathesis.Case, fuzz: tuple[FastAPI, str]) -> None:
    app, key = fuzz
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
