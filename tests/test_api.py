"""The HTTP API end to end over real HTTP (uvicorn on loopback, httpx), as the README describes it."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from apiserver import ApiServer, module_database, server_settings
from conftest import sim_job
from reelflow.errors import Conflict, NotFound

TERMINAL = {"succeeded", "failed", "canceled"}
DEAD_HOOK = "http://127.0.0.1:9/hook"  # nothing listens there: deliveries are recorded, never received
JOB_FIELDS = {"id", "type", "status", "attempts", "progress", "result", "error", "cost", "started_at", "finished_at"}
STATE_FIELDS = {"id", "status", "progress", "jobs", "result", "error", "cost", "created_at", "finished_at", "metadata"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One server (one embedded worker) for the module, on each store; every test works as its own tenant."""
    root = tmp_path_factory.mktemp("api")
    with module_database(request.param, root) as url:
        settings = server_settings(root, allow_private_urls=True, database_url=url)  # webhooks to 127.0.0.1
        with ApiServer(settings, workers=1) as server:
            yield server


def new_tenant(api: ApiServer) -> tuple[str, httpx.Client]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    return name, api.client(api.new_key(name).api_key)


@pytest.fixture
def reaper(api: ApiServer) -> Iterator[list[str]]:
    """Executions to cancel after the test, pass or fail (the worker drains running jobs before it stops)."""
    ids: list[str] = []
    yield ids
    for execution_id in ids:
        with contextlib.suppress(Conflict, NotFound):
            api.call(api.store.cancel_execution(execution_id))


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    """A client authenticated as a fresh tenant."""
    _, client = new_tenant(api)
    with client:
        yield client


# --------------------------------------------------------------------------- helpers
def plan(*jobs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"jobs": list(jobs), **extra}


def submit(http: httpx.Client, body: dict[str, Any], **headers: str) -> str:
    r = http.post("/v1/executions", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def state_of(http: httpx.Client, execution_id: str) -> dict[str, Any]:
    r = http.get(f"/v1/executions/{execution_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_for(http: httpx.Client, execution_id: str, statuses: set[str], timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        state = state_of(http, execution_id)
        if state["status"] in statuses:
            return state
        assert time.monotonic() < deadline, f"{execution_id} still {state['status']}, wanted {statuses}"
        time.sleep(0.05)


def wait_job_running(http: httpx.Client, execution_id: str, job: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = {j["id"]: j for j in state_of(http, execution_id)["jobs"]}
        if jobs[job]["status"] == "running":
            return
        assert time.monotonic() < deadline, f"job {job} never started: {jobs[job]}"
        time.sleep(0.05)


def read_sse(
    http: httpx.Client, path: str, headers: dict[str, str] | None = None, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """Read a `text/event-stream` to its end: the server must close it (the deadline fails the test)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    with http.stream("GET", path, headers=headers or {}) as r:
        assert r.status_code == 200, r.read().decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers.get("cache-control") == "no-cache"
        for line in r.iter_lines():
            assert time.monotonic() < deadline, f"the stream {path} did not end within {timeout_s} s"
            if line == "":
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):  # comments (keep-alives) carry nothing
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "data" and "data" in current:  # multi-line data joins with newlines
                    value = f"{current['data']}\n{value}"
                current[field] = value
    for e in events:  # an event the stream cut off before its blank line is dropped, as EventSource does
        e["id"] = int(e["id"])
        e["payload"] = json.loads(e["data"])
    return events


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


# --------------------------------------------------------------------------- submit, follow, inspect
def test_submit_stream_events_and_full_state(http: httpx.Client) -> None:
    body = plan(
        sim_job("still", "sim/image", latency_s=0.2, cost_usd=0.5),
        sim_job("clip", "sim/video", latency_s=0.2, cost_usd=0.25, prompt="$still.url"),
        metadata={"order": 1234, "who": "api-test"},
    )
    r = http.post("/v1/executions", json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    execution_id = accepted["id"]
    assert set(accepted) == {"id", "status", "links"}
    assert accepted["status"] in ("queued", "running")
    assert accepted["links"]["self"] == f"/v1/executions/{execution_id}"
    assert accepted["links"]["events"] == f"/v1/executions/{execution_id}/events"
    assert {"cancel", "resume", "retry"} <= set(accepted["links"])
    assert r.headers["location"] == f"/v1/executions/{execution_id}"

    events = read_sse(http, f"/v1/executions/{execution_id}/events")
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), f"event ids must increase strictly: {ids}"
    types = [e["event"] for e in events]
    assert types[0] == "execution.created"
    assert types[-1] == "execution.succeeded", types
    assert types.count("execution.succeeded") == 1
    assert {"job.running", "job.succeeded"} <= set(types)
    for e in events:
        assert e["payload"]["seq"] == e["id"] and e["payload"]["type"] == e["event"]
    assert [e["payload"]["job"] for e in events if e["event"] == "job.succeeded"] == ["still", "clip"]

    # Last-Event-ID resumes strictly after the given event, and the stream still ends at the terminal event
    middle = ids[len(ids) // 2]
    resumed = read_sse(http, f"/v1/executions/{execution_id}/events", headers={"Last-Event-ID": str(middle)})
    assert [e["id"] for e in resumed] == [i for i in ids if i > middle]
    assert resumed[-1]["event"] == "execution.succeeded"
    assert read_sse(http, f"/v1/executions/{execution_id}/events", headers={"Last-Event-ID": str(ids[-1])}) == []

    state = state_of(http, execution_id)
    assert STATE_FIELDS <= set(state)
    assert state["id"] == execution_id
    assert state["status"] == "succeeded"
    assert state["progress"] == 100
    assert state["error"] is None
    assert state["metadata"] == {"order": 1234, "who": "api-test"}
    assert state["cost"] == {"estimated": pytest.approx(0.75), "actual": pytest.approx(0.75)}
    created = datetime.fromisoformat(state["created_at"])
    finished = datetime.fromisoformat(state["finished_at"])
    assert created <= finished
    assert state["result"]["url"].startswith("https://sim.invalid/")  # the last job's primary output
    assert [j["id"] for j in state["jobs"]] == ["still", "clip"]
    for job, cost in zip(state["jobs"], (0.5, 0.25), strict=True):
        assert JOB_FIELDS <= set(job)
        assert job["status"] == "succeeded"
        assert job["attempts"] == 1
        assert job["progress"] == 100
        assert job["error"] is None
        assert job["result"]["url"].startswith("https://sim.invalid/")
        assert job["cost"] == {"estimated": pytest.approx(cost), "actual": pytest.approx(cost)}
        assert datetime.fromisoformat(job["started_at"]) <= datetime.fromisoformat(job["finished_at"])
    assert state["jobs"][1]["type"] == "generate-video"


def test_events_of_a_failed_execution_end_with_the_failure(http: httpx.Client) -> None:
    execution_id = submit(http, plan(sim_job("boom", fail="permanent")))
    events = read_sse(http, f"/v1/executions/{execution_id}/events")
    assert events[-1]["event"] == "execution.failed"
    assert "job.failed" in [e["event"] for e in events]
    state = state_of(http, execution_id)
    assert state["status"] == "failed"
    assert "boom" in state["error"]
    assert state["jobs"][0]["error"]


def test_local_plan_makes_a_real_artifact_with_ranges(http: httpx.Client) -> None:
    body = plan(
        {"id": "still", "type": "generate-image", "model": "local/image",
         "params": {"prompt": "a red square", "width": 64, "height": 64}},
        {"id": "thumb", "type": "thumbnail", "params": {"video": "$still", "width": 64}},
        {"id": "movie", "type": "transcode", "params": {"input": "$still", "format": "mp4"}},
    )
    execution_id = submit(http, body)
    events = read_sse(http, f"/v1/executions/{execution_id}/events")
    assert events[-1]["event"] == "execution.succeeded", events[-1]
    state = state_of(http, execution_id)
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["thumb"]["depends_on"] == ["still"]
    # the server's file system stays private: no local paths in the state or the event stream
    assert all("path" not in j["result"] for j in state["jobs"])
    assert "/artifacts/" not in json.dumps([e["data"] for e in events]).replace("/v1/artifacts/", "")

    for job, content_type, magic in (("thumb", "image/jpeg", b"\xff\xd8\xff"), ("still", "image/png", b"\x89PNG")):
        key = jobs[job]["result"]["key"]
        url = jobs[job]["result"]["url"]  # a signed link: it opens without a key (tests/test_links.py)
        assert url.startswith(f"http://127.0.0.1:8000/v1/artifacts/{key}?exp=") and "&sig=" in url
        full = http.get(f"/v1/artifacts/{key}")
        assert full.status_code == 200, full.text
        assert full.headers["content-type"].startswith(content_type)
        assert full.content.startswith(magic)
        size = len(full.content)
        assert size == int(full.headers["content-length"]) == jobs[job]["result"]["size"]
        assert size > 100
        assert full.headers.get("accept-ranges") == "bytes"

        part = http.get(f"/v1/artifacts/{key}", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206, part.text
        assert part.content == full.content[:100]
        assert len(part.content) == 100
        assert part.headers["content-range"] == f"bytes 0-99/{size}"

        tail = http.get(f"/v1/artifacts/{key}", headers={"Range": f"bytes={size - 10}-"})
        assert tail.status_code == 206
        assert tail.content == full.content[-10:]

    movie = http.get(f"/v1/artifacts/{jobs['movie']['result']['key']}")
    assert movie.status_code == 200
    assert movie.headers["content-type"].startswith("video/mp4")
    assert movie.content[4:8] == b"ftyp"


# --------------------------------------------------------------------------- idempotency
def test_idempotency_key(api: ApiServer, http: httpx.Client) -> None:
    key = f"order-{uuid.uuid4().hex}"
    body = plan(sim_job("a", latency_s=0.0))
    first = http.post("/v1/executions", json=body, headers={"Idempotency-Key": key})
    second = http.post("/v1/executions", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert api.query("SELECT count(*) FROM executions WHERE idempotency_key = ?", key) == [(1,)]
    assert [e["id"] for e in http.get("/v1/executions").json()["data"]] == [first.json()["id"]]

    clash = http.post("/v1/executions", json=plan(sim_job("a", latency_s=1.0)), headers={"Idempotency-Key": key})
    problem = assert_problem(clash, 409)
    assert key in problem["detail"]
    assert api.query("SELECT count(*) FROM executions WHERE idempotency_key = ?", key) == [(1,)]

    # without the key, the same body is a new execution; another tenant's key space is its own
    assert submit(http, body) != first.json()["id"]
    _, other = new_tenant(api)
    with other:
        theirs = other.post("/v1/executions", json=body, headers={"Idempotency-Key": key})
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


# --------------------------------------------------------------------------- isolation
def test_tenants_are_isolated_on_every_endpoint(api: ApiServer, reaper: list[str]) -> None:
    tenant_a, a = new_tenant(api)
    _, b = new_tenant(api)
    with a, b:
        slow = submit(a, plan(sim_job("slow", latency_s=60)))
        reaper.append(slow)
        done = submit(
            a,
            plan({"id": "still", "type": "generate-image", "model": "local/image",
                  "params": {"prompt": f"tenant {tenant_a}", "width": 64, "height": 64}}),
        )
        hooked = submit(a, plan(sim_job("h"), webhook=DEAD_HOOK))
        wait_job_running(a, slow, "slow")
        artifact = wait_for(a, done, TERMINAL)["jobs"][0]["result"]["key"]
        wait_for(a, hooked, TERMINAL)
        mine = a.get("/v1/webhook-deliveries").json()["data"]
        assert [d["execution_id"] for d in mine] == [hooked]
        delivery = mine[0]["id"]
        assert a.get(f"/v1/artifacts/{artifact}").status_code == 200

        unknown = assert_problem(b.get("/v1/executions/ex_doesnotexist0000000000"), 404)
        for execution_id in (slow, done, hooked):
            base = f"/v1/executions/{execution_id}"
            for method, path, headers in (
                ("GET", base, {}),
                ("GET", f"{base}/events", {}),
                ("GET", f"{base}/events", {"Last-Event-ID": "1"}),
                ("POST", f"{base}/cancel", {}),
                ("POST", f"{base}/resume", {}),
                ("POST", f"{base}/retry", {}),
            ):
                problem = assert_problem(b.request(method, path, headers=headers), 404)
                assert problem["title"] == unknown["title"]
                assert tenant_a not in problem["detail"]
        assert_problem(b.get(f"/v1/artifacts/{artifact}"), 404)
        assert b.get("/v1/webhook-deliveries").json()["data"] == []
        assert b.get("/v1/webhook-deliveries", params={"execution_id": hooked}).json()["data"] == []
        assert_problem(b.post(f"/v1/webhook-deliveries/{delivery}/redeliver"), 404)
        assert b.get("/v1/executions").json() == {"data": [], "next_cursor": None}

        # nothing B did touched A's executions
        assert state_of(a, slow)["status"] == "running"
        assert {e["id"] for e in a.get("/v1/executions").json()["data"]} == {slow, done, hooked}
        assert a.post(f"/v1/webhook-deliveries/{delivery}/redeliver").status_code == 200
        assert a.post(f"/v1/executions/{slow}/cancel").json()["status"] == "canceled"


# --------------------------------------------------------------------------- listing
def test_list_pagination_and_filters(http: httpx.Client, reaper: list[str]) -> None:
    ids: list[str] = []
    middle = 0.0
    for i in range(7):
        ids.append(submit(http, plan(sim_job("a", latency_s=0.0))))
        if i == 2:
            time.sleep(0.02)
            middle = time.time()
            time.sleep(0.02)
    for execution_id in ids:
        wait_for(http, execution_id, {"succeeded"})
    failing = submit(http, plan(sim_job("a", fail="permanent")))
    wait_for(http, failing, {"failed"})
    slow = submit(http, plan(sim_job("a", latency_s=60)))
    reaper.append(slow)
    assert http.post(f"/v1/executions/{slow}/cancel").status_code == 200
    newest_first = [slow, failing, *reversed(ids)]

    def pages(**params: Any) -> list[list[str]]:
        out: list[list[str]] = []
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            r = http.get("/v1/executions", params=query)
            assert r.status_code == 200, r.text
            body = r.json()
            out.append([e["id"] for e in body["data"]])
            cursor = body["next_cursor"]
            if cursor is None:
                return out
            assert len(out) < 20, "pagination does not end"

    assert pages(limit=3) == [newest_first[0:3], newest_first[3:6], newest_first[6:9]]
    assert pages(limit=4) == [newest_first[0:4], newest_first[4:8], newest_first[8:9]]
    assert pages() == [newest_first]
    assert pages(limit=200) == [newest_first]
    listed = http.get("/v1/executions", params={"limit": 1}).json()["data"][0]
    assert listed["id"] == slow and listed["status"] == "canceled"
    assert {"id", "status", "progress", "cost", "created_at", "finished_at", "metadata"} <= set(listed)

    assert pages(status="succeeded", limit=5) == [list(reversed(ids))[:5], list(reversed(ids))[5:]]
    assert pages(status="failed") == [[failing]]
    assert pages(status="canceled") == [[slow]]
    assert pages(status="running") == [[]]
    assert pages(status="queued") == [[]]

    after = datetime.fromtimestamp(middle, UTC).isoformat()
    later = [slow, failing, *reversed(ids[3:])]
    assert pages(created_after=after) == [later]
    assert pages(created_after=after, limit=2) == [later[0:2], later[2:4], later[4:6]]
    assert pages(created_after=after.replace("+00:00", "Z"), status="succeeded") == [list(reversed(ids[3:]))]
    assert pages(created_after=datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()) == [[]]


# --------------------------------------------------------------------------- cancel, resume, retry
def test_cancel_resume_retry(http: httpx.Client, reaper: list[str]) -> None:
    execution_id = submit(http, plan(sim_job("slow", latency_s=60), sim_job("after", depends_on=["slow"])))
    reaper.append(execution_id)
    wait_job_running(http, execution_id, "slow")
    base = f"/v1/executions/{execution_id}"

    running = assert_problem(http.post(f"{base}/resume"), 409)
    assert "running" in running["detail"]

    r = http.post(f"{base}/cancel")
    assert r.status_code == 200, r.text
    canceled = r.json()
    assert canceled["id"] == execution_id and canceled["status"] == "canceled"
    assert {j["status"] for j in canceled["jobs"]} <= {"canceled", "skipped"}
    assert state_of(http, execution_id)["status"] == "canceled"
    assert_problem(http.post(f"{base}/cancel"), 409)
    assert read_sse(http, f"{base}/events")[-1]["event"] == "execution.canceled"

    r = http.post(f"{base}/resume")
    assert r.status_code == 200, r.text
    resumed = r.json()
    assert resumed["status"] in ("queued", "running")
    assert {j["id"]: j["status"] for j in resumed["jobs"]}["after"] == "waiting"
    wait_job_running(http, execution_id, "slow")
    assert_problem(http.post(f"{base}/resume"), 409)
    assert http.post(f"{base}/cancel").json()["status"] == "canceled"

    r = http.post(f"{base}/retry")
    assert r.status_code == 202, r.text
    again = r.json()
    reaper.append(again["id"])
    assert set(again) == {"id", "status", "links"} and again["id"] != execution_id
    assert r.headers["location"] == f"/v1/executions/{again['id']}"
    fresh = state_of(http, again["id"])
    assert fresh["retry_of"] == execution_id
    assert [j["id"] for j in fresh["jobs"]] == ["slow", "after"]
    assert http.post(f"/v1/executions/{again['id']}/cancel").status_code == 200
    assert state_of(http, execution_id)["status"] == "canceled", "retry leaves the old execution as it was"


def test_resume_reruns_only_what_did_not_succeed(http: httpx.Client) -> None:
    execution_id = submit(http, plan(sim_job("good"), sim_job("bad", fail="permanent", depends_on=["good"])))
    first = wait_for(http, execution_id, TERMINAL)
    assert first["status"] == "failed"
    good_result = first["jobs"][0]["result"]
    r = http.post(f"/v1/executions/{execution_id}/resume")
    assert r.status_code == 200, r.text
    second = wait_for(http, execution_id, TERMINAL)
    assert second["status"] == "failed"
    assert second["jobs"][0]["result"] == good_result, "a succeeded job keeps its result"
    assert second["jobs"][1]["status"] == "failed"

    done = submit(http, plan(sim_job("ok")))
    wait_for(http, done, {"succeeded"})
    assert_problem(http.post(f"/v1/executions/{done}/resume"), 409)
    assert_problem(http.post(f"/v1/executions/{done}/cancel"), 409)
    retried = http.post(f"/v1/executions/{done}/retry")
    assert retried.status_code == 202
    assert wait_for(http, retried.json()["id"], TERMINAL)["status"] == "succeeded"


# --------------------------------------------------------------------------- plans: estimate, models, schema
def test_estimate_sums_cost_and_takes_the_critical_path(api: ApiServer, http: httpx.Client) -> None:
    body = plan(
        sim_job("a", "sim/video", latency_s=2, cost_usd=0.5),
        sim_job("b", "sim/image", latency_s=3, cost_usd=0.25, depends_on=["a"]),
        sim_job("c", "sim/audio", latency_s=4, cost_usd=1.0),
    )
    before = api.counts()
    r = http.post("/v1/estimate", json=body)
    assert r.status_code == 200, r.text
    estimate = r.json()
    assert estimate["cost_usd"] == pytest.approx(1.75)
    assert estimate["seconds"] == pytest.approx(5.0)  # a then b (2 + 3) runs alongside c (4)
    assert {j["id"]: j["cost_usd"] for j in estimate["jobs"]} == {"a": 0.5, "b": 0.25, "c": 1.0}
    assert {j["id"]: j["seconds"] for j in estimate["jobs"]} == {"a": 2, "b": 3, "c": 4}
    assert api.counts() == before, "an estimate enqueues nothing"
    assert http.get("/v1/executions").json()["data"] == []

    shorthand = http.post("/v1/estimate", json={"type": "generate-video", "model": "sim/video",
                                                 "params": {"latency_s": 1.5, "cost_usd": 0.1}})
    assert shorthand.status_code == 200, shorthand.text
    assert shorthand.json()["cost_usd"] == pytest.approx(0.1)
    assert shorthand.json()["seconds"] == pytest.approx(1.5)
    assert_problem(http.post("/v1/estimate", json=plan(sim_job("a", latency_s="slow"))), 422)
    assert api.counts() == before


def test_models_catalog(http: httpx.Client) -> None:
    r = http.get("/v1/models")
    assert r.status_code == 200, r.text
    models = {m["id"]: m for m in r.json()["data"]}
    assert {"local/image", "local/video", "local/audio", "sim/image", "sim/video", "sim/audio"} <= set(models)
    for m in models.values():
        assert {"id", "provider", "types", "params", "price"} <= set(m)
        assert m["id"].startswith(m["provider"] + "/")
    assert "latency_s" in models["sim/video"]["params"]
    assert "generate-video" in models["sim/video"]["types"]
    assert models["local/image"]["price"]["unit"] == "free"


def test_plan_schema(http: httpx.Client) -> None:
    r = http.get("/v1/schema/plan")
    assert r.status_code == 200, r.text
    schema = r.json()
    assert schema["type"] == "object"
    assert "jobs" in schema["properties"]
    assert "jobs" in schema.get("required", []) or "anyOf" in schema or "oneOf" in schema
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.validator_for(schema)
    good = plan(sim_job("a", latency_s=1), sim_job("b", depends_on=["a"]), metadata={"k": 1})
    assert validator.is_valid(good)
    assert not validator.is_valid({"jobs": [{"id": "a", "type": "generate-video", "bogus": 1}]})


def test_health_and_readiness(api: ApiServer) -> None:
    with api.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        r = anonymous.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert anonymous.get("/openapi.json").json()["paths"]["/v1/executions"]


# --------------------------------------------------------------------------- latency
def test_submit_answers_well_under_50_ms(http: httpx.Client) -> None:
    body = plan(sim_job("a", latency_s=0.0))
    for _ in range(3):  # warm the connection and the code paths
        submit(http, body)
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        r = http.post("/v1/executions", json=body)
        samples.append(time.perf_counter() - t0)
        assert r.status_code == 202
    median_ms = statistics.median(samples) * 1000
    assert median_ms < 50, f"median submit latency {median_ms:.1f} ms (samples: {sorted(samples)})"
