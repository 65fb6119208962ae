"""The client reads every answer with the API's model of it (`reelflow.models`): an answer that does not match
raises `InvalidAnswer` naming the operation and each field's path, at once (not a KeyError later); one that matches
is returned as it came, the same dict as the model's dump of it."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from apiserver import ApiServer
from conftest import sim_job
from reelflow import models
from reelflow.client import APIError, AsyncClient, Client, InvalidAnswer
from reelflow.config import Settings

DEAD_HOOK = "http://127.0.0.1:9/hook"  # nothing listens there: each delivery attempt fails, and is recorded


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id, "type": "generate-video", "model": "sim/video", "models": None, "failover": [],
        "params": {"prompt": "sea"}, "resolved_params": {"prompt": "sea"}, "status": "succeeded", "attempts": 1,
        "max_attempts": 3, "progress": 100.0, "queue_position": None, "depends_on": [], "provider_job_id": "sim-1",
        "result": {"url": "https://sim.invalid/outputs/1.mp4", "sim_id": "1"}, "error": None,
        "cost": {"estimated": 0.25, "actual": 0.25}, "cache_hit": False, "possible_duplicate_charge": 0.0,
        "possible_duplicates": 0, "queued_at": "2026-01-31T12:00:00.000Z", "started_at": "2026-01-31T12:00:00.100Z",
        "finished_at": "2026-01-31T12:00:01.000Z", "provider_phase": None, "provider_submitted_at": None,
        "provider_started_at": None, "provider_queued_s": None, **fields,
    }  # fmt: skip


def state(**fields: Any) -> dict[str, Any]:
    """A well-formed execution state (as a server writes it)."""
    return {
        "id": "ex_1", "status": "succeeded", "progress": 100.0, "error": None,
        "cost": {"estimated": 0.25, "actual": 0.25}, "metadata": {"order": 7}, "retry_of": None,
        "created_at": "2026-01-31T12:00:00.000Z", "started_at": "2026-01-31T12:00:00.100Z",
        "finished_at": "2026-01-31T12:00:01.000Z",
        "result": {"url": "https://sim.invalid/outputs/1.mp4", "outputs": {"clip": {"url": "x"}}},
        "jobs": [job("clip")],
        "outputs": [{"job_id": "clip", "type": "generate-video", "url": "x", "content_type": None, "duration": 2}],
        "possible_duplicate_charge": 0.0, "possible_duplicates": 0, "webhook": None, "options": {},
        **fields,
    }  # fmt: skip


def logs(**fields: Any) -> dict[str, Any]:
    return {
        "execution_id": "ex_1", "job_id": "clip", "status": "failed", "provider": "sim", "provider_job_id": None,
        "attempt": 1, "text": "", "truncated": False, "dropped_chars": 0, "updated_at": None, **fields,
    }  # fmt: skip


def without(value: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key}


@pytest.fixture
def fake() -> Iterator[Callable[[Any], Client]]:
    """A Client whose server answers every request with the given JSON (200), through httpx's MockTransport."""
    made: list[Client] = []

    def make(answer: Any) -> Client:
        client = Client("http://reelflow.test", "key")
        made.append(client)
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
        client._async._http = httpx.AsyncClient(transport=transport, base_url=client.base_url)
        return client

    yield make
    for client in made:
        client.close()


@pytest.mark.parametrize(
    ("answer", "where", "said"),
    [
        (state(status="exploded"), "status", "Input should be 'queued', 'running', 'succeeded', 'failed' or"),
        (without(state(), "jobs"), "jobs", "Field required"),
        (state(jobs=[job("clip", status="done")]), "jobs.0.status", "Input should be 'waiting'"),
        (state(jobs=[without(job("clip"), "cost")]), "jobs.0.cost", "Field required"),
        (state(progress="half"), "progress", "Input should be a valid number"),
        ([state()], "(the answer)", "Input should be a valid dictionary or instance of ExecutionState"),
    ],
)
def test_a_state_that_does_not_match_raises_invalid_answer_naming_the_field(
    fake: Callable[[Any], Client], answer: Any, where: str, said: str
) -> None:
    client = fake(answer)
    with pytest.raises(InvalidAnswer) as caught:
        client.get("ex_1")
    error = caught.value
    assert isinstance(error, APIError) and error.status == 200 and error.title == "Invalid answer"
    assert error.detail.startswith("the answer to GET /v1/executions/ex_1 is not a valid ExecutionState: ")
    assert f"{where}: {said}" in error.detail, error.detail
    assert [".".join(map(str, e["loc"])) or "(the answer)" for e in error.errors] == [where]


def test_every_problem_is_named_at_once(fake: Callable[[Any], Client]) -> None:
    with pytest.raises(InvalidAnswer) as caught:
        fake(without(state(status="exploded"), "jobs")).get("ex_1")
    assert "status: Input should be" in caught.value.detail and "jobs: Field required" in caught.value.detail
    assert len(caught.value.errors) == 2


def test_the_other_answers_are_checked_too(fake: Callable[[Any], Client]) -> None:
    with pytest.raises(InvalidAnswer, match=r"POST /v1/executions/ex_1/cancel is not a valid ExecutionState: jobs"):
        fake(without(state(), "jobs")).cancel("ex_1")
    with pytest.raises(InvalidAnswer, match=r"GET /v1/executions/ex_1/jobs/clip/logs is not a valid JobLogs: text"):
        fake(logs(text=None)).job_logs("ex_1", "clip")
    with pytest.raises(InvalidAnswer, match=r"GET /v1/executions is not a valid ExecutionPage: data.0.status"):
        list(fake({"data": [state(status="exploded")], "next_cursor": None}).list())
    with pytest.raises(InvalidAnswer, match=r"POST /v1/executions is not a valid Accepted: links: Field required"):
        fake({"id": "ex_1", "status": "queued"}).execute({"jobs": [sim_job("a")]})
    with pytest.raises(InvalidAnswer, match=r"GET /v1/usage is not a valid Usage"):
        fake({"tenant": "acme"}).usage()


def test_a_well_formed_state_is_returned_as_it_came(fake: Callable[[Any], Client]) -> None:
    answer = state(jobs=[job("clip", failover=[{"model": "sim/image", "reason": "down"}], models=["a/b", "c/d"])])
    got = fake(answer).get("ex_1")
    assert got == answer and json.dumps(got) == json.dumps(answer)
    assert models.ExecutionState.model_validate(got).model_dump(mode="json") == answer


async def test_the_async_client_raises_it_too() -> None:
    async with AsyncClient("http://reelflow.test", "key") as client:
        await client._http.aclose()
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=state(status="exploded")))
        client._http = httpx.AsyncClient(transport=transport, base_url=client.base_url)
        with pytest.raises(InvalidAnswer, match="status: Input should be"):
            await client.get("ex_1")


# ------------------------------------------------------------------------------- against a real server
@pytest.fixture
def server(settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(settings.model_copy(update={"allow_private_urls": True}), workers=1, deliver_webhooks=True) as api:
        yield api


def test_what_a_server_answers_parses_and_dumps_to_the_same_json(server: ApiServer) -> None:
    """A state with jobs (a cache hit, a failure, a skip), its events and webhook deliveries tried: each answer the
    client reads is the JSON the server sent, and the model's dump of it is that JSON again, key for key."""
    key = server.new_key("acme").api_key
    plan = {
        "jobs": [
            sim_job("still", "sim/image", prompt="sea", cost_usd=0.5),
            sim_job("clip", "sim/video", prompt="$still.url", latency_s=0.05, cost_usd=0.25),
            sim_job("boom", "sim/audio", fail="permanent", cost_usd=0.125),
            sim_job("after", "sim/video", prompt="$boom", cost_usd=1),
        ],
        "webhook": DEAD_HOOK,
        "metadata": {"order": 1234, "nested": {"a": [1, 2.5, None, "é"]}},
        "options": {"on_failure": "continue", "webhook_events": ["job.*"]},
    }
    with Client(server.url, key) as client, server.client(key) as http:
        execution = client.execute(plan)
        events = list(client.events(execution.id))
        assert {"execution.created", "job.succeeded", "job.failed", "execution.failed"} <= {e["type"] for e in events}
        deadline = time.monotonic() + 30
        while not all(d["attempts"] for d in http.get("/v1/webhook-deliveries").json()["data"]):
            assert time.monotonic() < deadline, "the webhook deliveries were not tried"
            time.sleep(0.1)
        path = f"/v1/executions/{execution.id}"
        answers: list[tuple[type[models.Answer], Any, Any]] = [
            (models.ExecutionState, client.get(execution.id), http.get(path).json()),
            (models.JobLogs, client.job_logs(execution.id, "boom"), http.get(f"{path}/jobs/boom/logs").json()),
            (models.ExecutionPage, {"data": [*client.list()], "next_cursor": None}, http.get("/v1/executions").json()),
            (models.Usage, client.usage(), http.get("/v1/usage").json()),
            (models.Stats, client.stats("7d"), http.get("/v1/stats?since=7d").json()),
            (models.DeliveryList, http.get("/v1/webhook-deliveries").json(), None),
        ]
        for model, got, sent in answers:
            if model is models.Stats:  # `since` is counted back from each call's now: compare the rest
                assert {**got, "since": None} == {**sent, "since": None}
            elif sent is not None:
                assert got == sent, model
            dumped = model.model_validate(got).model_dump(mode="json")
            assert json.dumps(dumped) == json.dumps(got), model
        state = answers[0][1]
        assert state["status"] == "failed" and len(state["jobs"]) == 4 and state["webhook"] == DEAD_HOOK
        assert len(answers[-1][1]["data"]) >= 4  # the job events and the end, each tried
        resumed = client.resume(execution.id)
        assert models.ExecutionState.model_validate(resumed).model_dump(mode="json") == resumed


def test_the_model_catalog_of_a_newer_server_is_read_not_refused(fake: Callable[[Any], Client]) -> None:
    """A server that knows a job type this client does not still lists its models; a catalog that is not a list
    of objects is refused."""
    entry = {"id": "x/y", "provider": "x", "name": "y", "types": ["generate-hologram"], "params": {}}
    assert fake({"data": [entry]}).models() == [entry]
    with pytest.raises(InvalidAnswer, match="GET /v1/models"):
        fake({"data": "everything"}).models()


def test_a_plain_http_server_costs_no_ca_bundle_and_https_still_verifies() -> None:
    """The CA bundle is loaded only for an https server (it is most of a CLI command's client start-up); the
    plain-http client's TLS context trusts nothing, so it could never accept a certificate."""
    plain, secure = AsyncClient("http://127.0.0.1:8000"), AsyncClient("https://reelflow.test")
    contexts = [c._http._transport._pool._ssl_context for c in (plain, secure)]  # type: ignore[attr-defined]
    assert contexts[0].cert_store_stats()["x509_ca"] == 0
    assert contexts[1].cert_store_stats()["x509_ca"] > 0
    assert all(c.verify_mode == ssl.CERT_REQUIRED and c.check_hostname for c in contexts)
