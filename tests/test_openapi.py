"""The OpenAPI document tells the truth about errors and authentication.

It declares the bearer security scheme on exactly the operations that need a key, documents every error answer
as `application/problem+json` with the Problem schema (never FastAPI's own `HTTPValidationError`), and what it
documents is what the server sends: requests that cause each error are made and their answers compared with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apiserver import ApiServer, server_settings
from conftest import sim_job

PROBLEM = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}
PUBLIC = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/schema/plan"),
    ("post", "/v1/providers/{provider}/callback"),
}
"""The operations that take no API key (the dashboard, docs and /metrics are outside the document)."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with no worker (submitted executions stay queued); tenant `capped` may run no execution and
    tenant `broke` may spend $0.50, so 429 and 402 can be caused."""
    root = tmp_path_factory.mktemp("openapi")
    limits = root / "limits.yaml"
    limits.write_text("tenants:\n  capped: {monthly_executions: 1}\n  broke: {monthly_cost_usd: 0.5}\n")
    with ApiServer(server_settings(Path(root), limits_file=str(limits))) as server:
        yield server


@pytest.fixture(scope="module")
def doc(api: ApiServer) -> dict[str, Any]:
    with httpx.Client(base_url=api.url) as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def errors_of(doc: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(s) for s in doc["paths"][path][method]["responses"] if int(s) >= 400}


def client(api: ApiServer, tenant: str | None = None) -> httpx.Client:
    return api.client(api.new_key(tenant or f"t-{uuid.uuid4().hex[:10]}").api_key)


def test_the_bearer_scheme_is_declared(doc: dict[str, Any]) -> None:
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth"}
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_every_operation_that_needs_a_key_says_so_and_no_other(doc: dict[str, Any]) -> None:
    secured = {(m, p) for m, p, op in operations(doc) if op.get("security") == [{"bearerAuth": []}]}
    unsecured = {(m, p) for m, p, op in operations(doc) if "security" not in op}
    either = {(m, p) for m, p, op in operations(doc) if op.get("security") == [{"bearerAuth": []}, {}]}
    assert unsecured == PUBLIC
    assert either == {("get", "/v1/artifacts/{key}")}  # a key, or a signed link (`?exp=&sig=`) without one
    assert 403 in errors_of(doc, "get", "/v1/artifacts/{key}")
    assert len(secured) == 15 and secured | unsecured | either == {(m, p) for m, p, _ in operations(doc)}
    for method, path in secured | either:  # the key is a security scheme, no longer an optional header parameter
        params = doc["paths"][path][method].get("parameters", [])
        assert "authorization" not in {p["name"].lower() for p in params}, (method, path)
        assert {401, 503} <= errors_of(doc, method, path), (method, path)
        challenge = doc["paths"][path][method]["responses"]["401"]["headers"]
        assert "WWW-Authenticate" in challenge


def test_every_error_answer_is_problem_json(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail"}
    assert set(doc["components"]["schemas"]["Problem"]["properties"]) == {
        "type", "title", "status", "detail", "instance", "errors",
    }  # fmt: skip
    counted = 0
    for method, path, operation in operations(doc):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or (method, path) == ("get", "/readyz"):  # readyz's 503 is its plain JSON
                continue
            assert answer["content"] == {PROBLEM: {"schema": {"$ref": PROBLEM_REF}}}, (method, path, status)
            counted += 1
    assert counted >= 60
    ready = doc["paths"]["/readyz"]["get"]["responses"]["503"]["content"]
    assert set(ready) == {"application/json"}


def test_each_operation_lists_the_errors_it_can_give(doc: dict[str, Any]) -> None:
    assert errors_of(doc, "post", "/v1/executions") == {400, 401, 402, 409, 413, 415, 422, 429, 503}
    assert errors_of(doc, "get", "/v1/executions/{execution_id}") == {401, 404, 503}
    assert errors_of(doc, "get", "/v1/executions") == {401, 422, 503}
    assert errors_of(doc, "post", "/v1/executions/{execution_id}/resume") == {401, 404, 409, 503}
    assert errors_of(doc, "post", "/v1/executions/{execution_id}/retry") == {401, 402, 404, 422, 429, 503}
    assert errors_of(doc, "get", "/v1/executions/{execution_id}/events") == {400, 401, 404, 503}
    assert errors_of(doc, "post", "/v1/estimate") == {400, 401, 413, 415, 422, 503}
    assert errors_of(doc, "post", "/v1/providers/{provider}/callback") == {401, 404, 413, 422, 503}
    assert errors_of(doc, "get", "/v1/schema/plan") == set()
    assert errors_of(doc, "get", "/healthz") == set()
    retry_after = doc["paths"]["/v1/usage"]["get"]["responses"]["503"]["headers"]
    assert "Retry-After" in retry_after


def test_the_secured_operations_are_the_ones_that_refuse_a_request_without_a_key(
    api: ApiServer, doc: dict[str, Any]
) -> None:
    refused = set()
    with httpx.Client(base_url=api.url) as anonymous:
        for method, path, _ in operations(doc):
            answer = anonymous.request(method, path.replace("{", "").replace("}", ""))  # {id} -> id
            if answer.status_code == 401 and "Bearer" in answer.headers.get("www-authenticate", ""):
                documented(doc, method, path, answer)
                refused.add((method, path))
    assert refused == {(m, p) for m, p, op in operations(doc) if "security" in op}
    assert len(refused) == 16


def documented(doc: dict[str, Any], method: str, path: str, answer: httpx.Response) -> int:
    """The answer's status is one the operation lists, with the content type the document gives it."""
    responses = doc["paths"][path][method]["responses"]
    assert str(answer.status_code) in responses, (method, path, answer.status_code, answer.text)
    sent = answer.headers["content-type"].split(";")[0]
    assert set(responses[str(answer.status_code)]["content"]) == {sent}, (method, path, answer.status_code)
    body = answer.json()
    assert body["status"] == answer.status_code and body["type"] == "about:blank" and body["detail"]
    return answer.status_code


def test_the_document_matches_what_the_server_sends(api: ApiServer, doc: dict[str, Any]) -> None:
    plan = {"jobs": [sim_job("a", duration=1)]}
    seen: list[int] = []
    with httpx.Client(base_url=api.url) as anonymous:
        seen.append(documented(doc, "get", "/v1/executions/{execution_id}", anonymous.get("/v1/executions/x")))
        seen.append(
            documented(doc, "post", "/v1/providers/{provider}/callback", anonymous.post("/v1/providers/nope/callback"))
        )
    with client(api) as http:
        seen.append(documented(doc, "get", "/v1/executions/{execution_id}", http.get("/v1/executions/nope")))
        seen.append(documented(doc, "get", "/v1/executions", http.get("/v1/executions", params={"limit": 0})))
        seen.append(documented(doc, "post", "/v1/executions", http.post("/v1/executions", content=b"{", headers=JSON)))
        seen.append(documented(doc, "post", "/v1/executions", http.post("/v1/executions", content=b"{}", headers=TEXT)))
        seen.append(documented(doc, "post", "/v1/executions", http.post("/v1/executions", json={"jobs": "no"})))
        big = b"[" + b"1," * 600_000 + b"1]"
        seen.append(documented(doc, "post", "/v1/estimate", http.post("/v1/estimate", content=big, headers=JSON)))
        execution_id = http.post("/v1/executions", json=plan, headers={"Idempotency-Key": "k"}).json()["id"]
        other = {"jobs": [sim_job("b", duration=1)]}
        conflict = http.post("/v1/executions", json=other, headers={"Idempotency-Key": "k"})
        seen.append(documented(doc, "post", "/v1/executions", conflict))
        resume = http.post(f"/v1/executions/{execution_id}/resume")  # queued: nothing to resume yet
        seen.append(documented(doc, "post", "/v1/executions/{execution_id}/resume", resume))
        events = http.get(f"/v1/executions/{execution_id}/events", headers={"Last-Event-ID": "x"})
        seen.append(documented(doc, "get", "/v1/executions/{execution_id}/events", events))
    with client(api, "capped") as http:
        assert http.post("/v1/executions", json=plan).status_code == 202
        seen.append(documented(doc, "post", "/v1/executions", http.post("/v1/executions", json=plan)))
    with client(api, "broke") as http:
        costly = {"jobs": [sim_job("a", duration=1, cost_usd=1.0)]}
        seen.append(documented(doc, "post", "/v1/executions", http.post("/v1/executions", json=costly)))
    assert seen == [401, 404, 404, 422, 400, 415, 422, 413, 409, 409, 400, 429, 402]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = doc["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
    return found


NOT_JSON = {
    ("get", "/v1/executions/{execution_id}/events"): "text/event-stream",
    ("get", "/v1/artifacts/{key}"): "application/octet-stream",
}
"""The answers that are not JSON: the event stream (its schema describes each event) and stored files."""


def test_every_answer_has_a_schema_with_its_fields(doc: dict[str, Any]) -> None:
    """No operation answers an empty or any-shaped 2xx: each names its fields, with types (models.py)."""
    for method, path, operation in operations(doc):
        ok = {s: a for s, a in operation["responses"].items() if s.startswith("2")}
        assert len(ok) == 1, (method, path, ok)
        (answer,) = ok.values()
        media = NOT_JSON.get((method, path), "application/json")
        assert set(answer["content"]) == {media}, (method, path)
        if media == "application/octet-stream":
            assert answer["content"][media]["schema"] == {"type": "string", "format": "binary"}
            continue
        schema = resolve(doc, answer["content"][media]["schema"])
        assert schema["type"] == "object" and schema["properties"], (method, path, schema)
        assert schema.get("description") or answer["description"], (method, path)
        for name, field in schema["properties"].items():  # typed, not `Any`
            assert {"type", "$ref", "anyOf", "enum", "const"} & set(field), (method, path, name, field)


def test_every_field_of_an_answer_is_described(doc: dict[str, Any]) -> None:
    from reelflow import models

    described = 0
    for name in set(models.__all__) & set(doc["components"]["schemas"]):
        schema = doc["components"]["schemas"][name]
        assert schema.get("description"), name
        for field, spec in schema["properties"].items():
            assert spec.get("description"), (name, field)
            described += 1
    assert described >= 100


def test_the_state_of_an_execution_names_the_spec_fields(doc: dict[str, Any]) -> None:
    answer = doc["paths"]["/v1/executions/{execution_id}"]["get"]["responses"]["200"]
    state = resolve(doc, answer["content"]["application/json"]["schema"])
    assert {
        "id",
        "status",
        "progress",
        "jobs",
        "result",
        "error",
        "cost",
        "created_at",
        "finished_at",
        "metadata",
    } <= set(state["required"])
    assert state["properties"]["status"]["enum"] == ["queued", "running", "succeeded", "failed", "canceled"]
    assert state["properties"]["progress"]["type"] == "number"
    cost = resolve(doc, state["properties"]["cost"])
    assert set(cost["properties"]) == {"estimated", "actual"}
    job = resolve(doc, state["properties"]["jobs"]["items"])
    assert {
        "id", "type", "model", "status", "attempts", "progress", "result", "error", "cost", "cache_hit",
        "possible_duplicate_charge", "started_at", "finished_at",
    } <= set(job["required"])  # fmt: skip
    assert "waiting" in job["properties"]["status"]["enum"] and "skipped" in job["properties"]["status"]["enum"]
    assert job["properties"]["cache_hit"]["type"] == "boolean"
    assert state["properties"]["created_at"]["format"] == "date-time"
    for path, method in (
        ("/v1/executions/{execution_id}/cancel", "post"),
        ("/v1/executions/{execution_id}/resume", "post"),
    ):
        assert doc["paths"][path][method]["responses"]["200"] == answer | {"description": "Successful Response"}
    listing = doc["paths"]["/v1/executions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(resolve(doc, listing)["properties"]) == {"data", "next_cursor"}
    event = doc["paths"]["/v1/executions/{execution_id}/events"]["get"]["responses"]["200"]["content"]
    event_schema = resolve(doc, event["text/event-stream"]["schema"])
    assert set(event_schema["properties"]) == {
        "seq", "type", "job", "data", "created_at", "created_at_unix",
    }  # fmt: skip
    assert event_schema["properties"]["created_at"]["format"] == "date-time"  # ISO 8601, like every time
