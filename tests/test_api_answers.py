"""The typed answers (`reelflow.models`) change nothing on the wire.

A model would silently drop a field it does not declare (or turn an int into a float). So, for a rich execution
(a cache hit, a failure, a skipped job, a webhook, costs, metadata), each answer is compared byte for byte with the
dict the store builds (its state and a job's log as the store's views make them, before they become models; the
other answers as the models the store and engine return dump them), rendered as the API rendered it before the
models (FastAPI's answer for a `dict[str, Any]` return type): on both stores.
"""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

from apiserver import ApiServer, module_database, server_settings
from conftest import sim_job
from reelflow import models
from reelflow.api.app import router
from reelflow.estimate import estimate_plan
from reelflow.plan import plan_json_schema
from reelflow.providers.catalog import list_models
from reelflow.states import EXECUTION_STATUSES, JOB_STATUSES
from reelflow.store.common import execution_view, log_view, strip_paths
from reelflow.store.manager import StoreManager
from reelflow.store.stats import parse_since
from reelflow.webhooks import event_body

DEAD_HOOK = "http://127.0.0.1:9/hook"  # nothing listens there: each delivery attempt fails, and is recorded
TENANT = "rich"
BEFORE = TypeAdapter(dict[str, Any])
"""How the API wrote an answer before the models: FastAPI's rendering of a `dict[str, Any]` return value."""


def rendered(value: dict[str, Any]) -> bytes:
    return BEFORE.dump_json(BEFORE.validate_python(value))


async def raw_state(store: StoreManager, execution_id: str) -> dict[str, Any]:
    """The state as the store's view builds it (`execution_view`), before `get_execution` makes it a model."""

    async def read(tx: Any) -> dict[str, Any]:
        row = await tx.one(store.sql.execution, (execution_id,))
        jobs = await tx.all(store.sql.execution_jobs, (execution_id,))
        return execution_view(dict(row), [dict(j) for j in jobs])

    return await store._in_snapshot(read)


async def raw_logs(store: StoreManager, execution_id: str, job_key: str) -> dict[str, Any]:
    """A job's log as the store's view builds it (`log_view`), before `job_logs` makes it a model."""

    async def read(tx: Any) -> dict[str, Any]:
        job = await tx.one(store.sql.job_of_execution, (execution_id, job_key))
        row = await tx.one(store.sql.job_log, (job["id"],))
        return log_view(execution_id, dict(job), None if row is None else dict(row))

    return await store._in_snapshot(read)


async def dumped(answer: Coroutine[Any, Any, BaseModel]) -> dict[str, Any]:
    return (await answer).model_dump(mode="json")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("answers")
    limits = root / "limits.yaml"
    limits.write_text(f"tenants:\n  {TENANT}: {{monthly_executions: 100, monthly_cost_usd: 50, max_concurrent: 4}}\n")
    with module_database(request.param, root) as url:
        settings = server_settings(root, allow_private_urls=True, database_url=url, limits_file=str(limits))
        with ApiServer(settings, workers=1, deliver_webhooks=True) as server:
            yield server


@pytest.fixture(scope="module")
def tenant(api: ApiServer) -> tuple[str, str]:
    return TENANT, api.new_key(TENANT).api_key


@pytest.fixture(scope="module")
def rich(api: ApiServer, tenant: tuple[str, str]) -> str:
    """A finished execution with a cache hit, a paid job, a failure, a skipped job, a webhook and metadata."""
    with api.client(tenant[1]) as http:
        first = http.post("/v1/executions", json={"jobs": [sim_job("still", "sim/image", prompt="sea", cost_usd=0.5)]})
        wait(http, first.json()["id"])
        plan = {
            "jobs": [
                sim_job("still", "sim/image", prompt="sea", cost_usd=0.5),  # the same job: a cache hit
                sim_job("clip", "sim/video", prompt="$still.url", latency_s=0.05, cost_usd=0.25),
                sim_job("boom", "sim/audio", fail="permanent", cost_usd=0.125),
                sim_job("after", "sim/video", prompt="$boom", cost_usd=1),
            ],
            "webhook": DEAD_HOOK,
            "metadata": {"order": 1234, "nested": {"a": [1, 2.5, None, "é"]}},
            "options": {"on_failure": "continue", "webhook_events": ["job.*"], "priority": 3},
        }
        r = http.post("/v1/executions", json=plan, headers={"Idempotency-Key": "rich"})
        assert r.status_code == 202, r.text
        execution_id: str = r.json()["id"]
        state = wait(http, execution_id)
        deadline = time.monotonic() + 30
        while not all(d["attempts"] for d in http.get("/v1/webhook-deliveries").json()["data"]):
            assert time.monotonic() < deadline, "the webhook deliveries were not tried"
            time.sleep(0.1)
    assert state["status"] == "failed"
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["still"]["cache_hit"] and jobs["clip"]["status"] == "succeeded"
    assert jobs["boom"]["status"] == "failed" and jobs["after"]["status"] == "skipped"
    return execution_id


def wait(http: httpx.Client, execution_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        state: dict[str, Any] = http.get(f"/v1/executions/{execution_id}").json()
        if state["status"] in ("succeeded", "failed", "canceled"):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def same(
    api: ApiServer, http: httpx.Client, path: str, expected: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
) -> bytes:
    """The answer to GET `path` is the bytes of what `expected()` returns (tried a few times: a worker may change
    the data between the two reads)."""
    for _ in range(5):
        before = rendered(api.call(expected()))
        answer = http.get(path)
        assert answer.status_code == 200, answer.text
        if answer.content == before:
            return answer.content
        time.sleep(0.2)
    assert answer.json() == BEFORE.validate_json(before)  # a readable diff of the values
    assert answer.content == before  # else: key order, or an int written as a float
    raise AssertionError("unreachable")


def test_the_state_of_an_execution_is_unchanged(api: ApiServer, tenant: tuple[str, str], rich: str) -> None:
    who, key = tenant
    svc = api.app.state.services

    async def state() -> dict[str, Any]:  # its artifact links signed as the answer is written (exp: this second)
        signed: dict[str, Any] = await svc.signed(who, strip_paths(await raw_state(svc.store, rich)))
        return signed

    with api.client(key) as http:
        body = same(api, http, f"/v1/executions/{rich}", state)
        logs = same(api, http, f"/v1/executions/{rich}/jobs/boom/logs", lambda: raw_logs(svc.store, rich, "boom"))
    assert b'"webhook":"http://127.0.0.1:9/hook"' in body and b'"cache_hit":true' in body
    assert b'"provider_queued_s":null' in body and b'"job_id":"boom","status":"failed"' in logs


def test_listings_usage_stats_and_deliveries_are_unchanged(api: ApiServer, tenant: tuple[str, str], rich: str) -> None:
    who, key = tenant
    svc = api.app.state.services
    since = "2020-01-01T00:00:00Z"

    async def page() -> dict[str, Any]:
        return await dumped(svc.store.list_executions(who, limit=1))

    async def stats() -> dict[str, Any]:
        return await dumped(svc.store.stats(who, parse_since(since, time.time())))

    async def deliveries() -> dict[str, Any]:
        return await dumped(svc.store.list_deliveries(who, rich, 100))

    with api.client(key) as http:
        assert b'"next_cursor":null' not in same(api, http, "/v1/executions?limit=1", page)
        same(api, http, "/v1/usage", lambda: dumped(svc.engine.usage(who)))
        body = same(api, http, f"/v1/stats?since={since}", stats)
        assert b'"providers":[{' in body
        body = same(api, http, f"/v1/webhook-deliveries?execution_id={rich}", deliveries)
        assert body.count(b'"event_type"') >= 5 and b'"latency_ms"' in body  # job events and the final one, tried
        assert b'"monthly_cost_usd":50.0,' in same(api, http, "/v1/usage", lambda: dumped(svc.engine.usage(who)))


def test_estimate_models_schema_and_health_are_unchanged(api: ApiServer, tenant: tuple[str, str]) -> None:
    plan = {"jobs": [sim_job("a", "sim/video", latency_s=2, cost_usd=0.5), sim_job("b", latency_s=1.5, cost_usd=1)]}
    with api.client(tenant[1]) as http:
        assert http.post("/v1/estimate", json=plan).content == rendered(estimate_plan(plan))
        listed = {"data": [m.model_dump(mode="json") for m in list_models()]}
        assert http.get("/v1/models").content == rendered(listed)
        assert http.get("/v1/schema/plan").content == rendered(plan_json_schema())
        assert http.get("/healthz").content == rendered({"status": "ok"})
        assert http.get("/readyz").content == rendered({"status": "ok"})


def response_field(method: str, path: str) -> Any:
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in route.methods:
            return route.response_field
    raise LookupError(path)


def through(field: Any, value: Any) -> bytes:
    """`value` passed through a route's response model, as FastAPI does with a handler's return value."""
    checked, errors = field.validate(value, {}, loc=("response",))
    assert not errors, errors
    answer: bytes = field.serialize_json(checked, by_alias=True)
    return answer


def test_cancel_resume_and_redeliver_answers_are_unchanged(api: ApiServer, tenant: tuple[str, str], rich: str) -> None:
    """These change the data, so the engine's answer cannot be read again: it is passed through the route's
    model (what FastAPI does with it) and compared; and each route answers over HTTP with the same fields."""
    who, key = tenant
    svc = api.app.state.services
    model = strip_paths(api.call(svc.engine.get(rich, who)))  # what the routes return now: the store's model
    state = strip_paths(api.call(raw_state(svc.store, rich)))  # the store's dict, as the routes returned it before
    answer = api.call(svc.store.list_deliveries(who, rich, 1)).data[0]
    delivery = answer.model_dump(mode="json")
    for path in ("/v1/executions/{execution_id}/cancel", "/v1/executions/{execution_id}/resume"):
        assert through(response_field("POST", path), model) == rendered(state)
    field = response_field("POST", "/v1/webhook-deliveries/{delivery_id}/redeliver")
    assert through(field, answer) == rendered(delivery)
    with api.client(key) as http:
        again = http.post(f"/v1/webhook-deliveries/{delivery['id']}/redeliver")
        assert again.status_code == 200, again.text
        assert list(again.json()) == list(delivery)
        resumed = http.post(f"/v1/executions/{rich}/resume")
        assert resumed.status_code == 200, resumed.text
        assert list(resumed.json()) == list(state)
        assert [list(j) for j in resumed.json()["jobs"]] == [list(j) for j in state["jobs"]]
        wait(http, rich)


def test_the_statuses_of_the_models_are_the_state_machines() -> None:
    assert typing.get_args(models.ExecutionStatus) == EXECUTION_STATUSES
    assert typing.get_args(models.JobStatus) == JOB_STATUSES


def test_the_webhook_bodies_are_what_the_document_describes(api: ApiServer, rich: str) -> None:
    bodies = [  # as sent: with `created_at` (and links signed, which changes no key)
        event_body(p) for (p,) in api.query("SELECT payload FROM webhook_deliveries WHERE execution_id = ?", rich)
    ]
    assert {b["type"] for b in bodies} >= {"job.succeeded", "job.failed", "execution.failed"}
    for body in bodies:
        parsed = models.WebhookEvent.model_validate(body)
        assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == body
        assert (parsed.data.event is None) == body["type"].startswith("execution.")


def test_the_state_dumped_is_the_dict_the_store_built(api: ApiServer, tenant: tuple[str, str], rich: str) -> None:
    """What the SDK and the CLI show locally (`ExecutionState.model_dump(mode="json")`) is the store's own view,
    artifact paths included: the same keys in the same order, the same values of the same types."""
    svc = api.app.state.services
    raw = api.call(raw_state(svc.store, rich))
    state = api.call(svc.store.get_execution(rich))
    assert state is not None
    dumped_state = state.model_dump(mode="json")
    assert json.dumps(dumped_state) == json.dumps(raw)
    assert api.call(svc.engine.get(rich, tenant[0])).model_dump(mode="json") == raw
    used = api.call(svc.store.usage(tenant[0]))  # the store's part of the usage, the engine adds the limits
    usage = api.call(svc.engine.usage(tenant[0])).model_dump(mode="json")
    assert json.dumps(without(usage, "limits")) == json.dumps(used)
    assert usage["limits"] == {"monthly_executions": 100, "monthly_cost_usd": 50.0, "max_concurrent": 4}


def without(value: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key}
