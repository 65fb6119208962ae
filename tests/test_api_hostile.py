"""Malformed and hostile requests: each gets the right 4xx problem+json, nothing is stored, nothing crashes.

Every row goes through a real server (uvicorn on loopback) with no worker, so the database only changes if a
request wrongly stores something: the row counts of `executions`, `jobs` and `events` are compared around each
request, the hostile tenant's own list must stay empty, and no error may be logged by the server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from apiserver import ApiServer, module_database, server_settings

PROBLEM = "application/problem+json"
V = {"type": "generate-video", "model": "sim/video"}
ONE = {"jobs": [{"id": "a", **V, "params": {}}]}
LIMIT = 1_000_000
HAS_WEBHOOKS = importlib.util.find_spec("reelflow.webhooks") is not None


@dataclass
class World:
    api: ApiServer
    keys: dict[str, str]
    own: str  # an execution of tenant "owner" (queued forever: no worker runs)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    with (
        module_database(request.param, root) as url,
        ApiServer(server_settings(root, database_url=url), workers=0) as api,
    ):
        owner = api.new_key("owner").api_key
        mallory = api.new_key("mallory").api_key
        revoked = api.new_key("mallory")
        assert api.revoke(revoked.key_id)
        with api.client(owner) as http:
            r = http.post("/v1/executions", json=ONE)
            assert r.status_code == 202, r.text
        yield World(api, {"owner": owner, "mallory": mallory, "revoked": revoked.api_key}, r.json()["id"])


@dataclass
class Case:
    """One hostile request and the answer it must get."""

    id: str
    method: str
    path: str  # "{own}" stands for the owner's execution id
    status: int | tuple[int, ...]
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    json_body: Any = None
    headers: dict[str, str | bytes] = field(default_factory=dict)
    auth: str | bytes | None = "mallory"  # a key name from World.keys, None (no header) or a raw header value
    raw: bool = False  # send `path` byte for byte as the request target (no client-side normalisation)
    loc: list[str | int] | None = None  # an `errors[].loc` that must be present
    detail: str | None = None  # a substring of `detail` (case-insensitive)
    title: str | None = None
    needs_webhooks: bool = False
    content_type: str | None = "application/json"  # sent with any body; None: no Content-Type header


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def chunked(body: bytes, size: int = 64 * 1024) -> Callable[[], Iterator[bytes]]:
    """A body sent with `Transfer-Encoding: chunked` (no Content-Length)."""

    def gen() -> Iterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    return gen


def job(**over: Any) -> dict[str, Any]:
    return {"id": "a", **V, "params": {}, **over}


HUGE = b'{"jobs": "' + b"x" * (LIMIT + 100) + b'"}'

# ------------------------------------------------------------------ bodies, sent to both plan endpoints
BODIES: list[tuple[str, int | tuple[int, ...], bytes | Callable[[], Iterator[bytes]] | None, Any, dict[str, Any]]] = [
    # (id, status, raw content, JSON body, expectations)
    ("bad-json", 400, b'{"jobs": [', None, {"detail": "malformed JSON"}),
    ("bad-json-trailing-garbage", 400, b'{"jobs": []} trailing', None, {"detail": "malformed JSON"}),
    ("bad-json-single-quotes", 400, b"{'jobs': []}", None, {"detail": "malformed JSON"}),
    ("not-utf8", 400, b'{"jobs": "\xff\xfe"}', None, {"detail": "UTF-8"}),
    ("empty-body", 400, b"", None, {"detail": "empty"}),
    ("blank-body", 400, b"  \r\n\t ", None, {"detail": "empty"}),
    ("json-list", 422, None, [], {"loc": []}),
    ("json-list-of-jobs", 422, None, [job()], {"loc": []}),
    ("json-string", 422, None, "jobs", {"loc": []}),
    ("json-number", 422, b"42", None, {"loc": []}),
    ("json-null", 422, b"null", None, {"loc": []}),
    ("json-true", 422, b"true", None, {"loc": []}),
    ("jobs-not-a-list", 422, None, {"jobs": "a"}, {"loc": ["jobs"]}),
    ("job-not-an-object", 422, None, {"jobs": [1]}, {"loc": ["jobs", 0]}),
    ("job-id-not-a-string", 422, None, {"jobs": [job(id=5)]}, {"loc": ["jobs", 0, "id"]}),
    ("params-not-an-object", 422, None, {"jobs": [job(params="x")]}, {"loc": ["jobs", 0, "params"]}),
    (
        "param-wrong-type",
        422,
        None,
        {"jobs": [job(params={"latency_s": "slow"})]},
        {"loc": ["jobs", 0, "params", "latency_s"]},
    ),
    (
        "param-out-of-range",
        422,
        None,
        {"jobs": [job(params={"duration": 10_000})]},
        {"loc": ["jobs", 0, "params", "duration"]},
    ),
    (
        "param-nan",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video", "params": {"cost_usd": NaN}}]}',
        None,
        {"loc": ["body", "jobs", 0, "params", "cost_usd"], "detail": "body.jobs[0].params.cost_usd: NaN is not"},
    ),
    (
        "param-infinity",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video", "params": {"latency_s": 1e999}}]}',
        None,
        {"loc": ["body", "jobs", 0, "params", "latency_s"], "detail": "latency_s: number too large"},
    ),
    (
        "metadata-nan",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video"}], "metadata": {"a": [1, NaN]}}',
        None,
        {"loc": ["body", "metadata", "a", 1], "detail": "body.metadata.a[1]: NaN"},
    ),
    (
        "metadata-infinity",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video"}], "metadata": {"x": Infinity}}',
        None,
        {"loc": ["body", "metadata", "x"], "detail": "Infinity"},
    ),
    (
        "metadata-minus-infinity",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video"}], "metadata": {"x": -Infinity}}',
        None,
        {"loc": ["body", "metadata", "x"], "detail": "-Infinity"},
    ),
    (
        "duplicate-top-level-key",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video"}], "jobs": []}',
        None,
        {"loc": ["body", "jobs"], "detail": "body.jobs: duplicate key"},
    ),
    (
        "duplicate-metadata-key",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video"}], "metadata": {"a": 1, "a": 2}}',
        None,
        {"loc": ["body", "metadata", "a"], "detail": "body.metadata.a: duplicate key"},
    ),
    (
        "duplicate-param-key",
        400,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video",'
        b' "params": {"cost_usd": 0, "cost_usd": 5}}]}',
        None,
        {"loc": ["body", "jobs", 0, "params", "cost_usd"]},
    ),
    (
        "sim-cost-over-1000",
        422,
        None,
        {"jobs": [job(params={"cost_usd": 1000.01})]},
        {"loc": ["jobs", 0, "params", "cost_usd"], "detail": "at most 1000"},
    ),
    (
        "sim-cost-1e308",
        422,
        None,
        {"jobs": [job(params={"cost_usd": 1e308}), job(id="b", params={"cost_usd": 1e308})]},
        {"loc": ["jobs", 0, "params", "cost_usd"]},
    ),
    (
        "sim-billed-1e308",
        422,
        None,
        {"jobs": [job(params={"billed_usd": 1e308})]},
        {"loc": ["jobs", 0, "params", "billed_usd"]},
    ),
    (
        "sim-retry-after-1e308",
        422,
        None,
        {"jobs": [job(params={"fail_times": 1, "retry_after_s": 1e308})]},
        {"loc": ["jobs", 0, "params", "retry_after_s"]},
    ),
    ("job-timeout-1e308", 422, None, {"jobs": [job(timeout_s=1e308)]}, {"loc": ["jobs", 0, "timeout_s"]}),
    ("start-timeout-1e308", 422, None, {"jobs": [job(start_timeout_s=1e308)]}, {"loc": ["jobs", 0, "start_timeout_s"]}),
    ("plan-timeout-1e308", 422, None, {**ONE, "options": {"timeout_s": 1e308}}, {"loc": ["options", "timeout_s"]}),
    (
        "param-huge-integer",
        422,
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video",'
        b' "params": {"latency_s": 1' + b"0" * 400 + b"}}]}",
        None,
        {"loc": ["jobs", 0, "params", "latency_s"]},
    ),
    ("depends-on-not-a-list", 422, None, {"jobs": [job(depends_on="b")]}, {"loc": ["jobs", 0, "depends_on"]}),
    ("priority-not-an-int", 422, None, {**ONE, "options": {"priority": "high"}}, {"loc": ["options", "priority"]}),
    ("priority-huge", 422, None, {**ONE, "options": {"priority": 10**30}}, {"loc": ["options", "priority"]}),
    ("metadata-not-an-object", 422, None, {**ONE, "metadata": [1]}, {"loc": ["metadata"]}),
    ("webhook-not-a-string", 422, None, {**ONE, "webhook": 5}, {"loc": ["webhook"]}),
    ("webhook-not-http", 422, None, {**ONE, "webhook": "javascript:alert(1)"}, {"loc": ["webhook"]}),
    ("missing-jobs", 422, None, {}, {"loc": ["jobs"]}),
    ("no-jobs", 422, None, {"jobs": []}, {"loc": ["jobs"]}),
    ("missing-id", 422, None, {"jobs": [{**V, "params": {}}]}, {"loc": ["jobs", 0, "id"]}),
    ("missing-type", 422, None, {"jobs": [{"id": "a", "model": "sim/video"}]}, {"loc": ["jobs", 0, "type"]}),
    ("missing-model", 422, None, {"jobs": [{"id": "a", "type": "generate-video"}]}, {"loc": ["jobs", 0, "model"]}),
    (
        "missing-required-param",
        422,
        None,
        {"jobs": [{"id": "a", "type": "generate-image", "model": "local/image", "params": {}}]},
        {"loc": ["jobs", 0, "params", "prompt"]},
    ),
    ("unknown-top-level-field", 422, None, {**ONE, "bogus": 1}, {"loc": ["bogus"]}),
    ("unknown-job-field", 422, None, {"jobs": [job(bogus=1)]}, {"loc": ["jobs", 0, "bogus"]}),
    ("unknown-option", 422, None, {**ONE, "options": {"bogus": 1}}, {"loc": ["options", "bogus"]}),
    (
        "unknown-param",
        422,
        None,
        {
            "jobs": [
                {"id": "a", "type": "generate-image", "model": "local/image", "params": {"prompt": "x", "bogus": 1}}
            ]
        },
        {"loc": ["jobs", 0, "params", "bogus"]},
    ),
    ("unknown-type", 422, None, {"jobs": [job(type="explode")]}, {"loc": ["jobs", 0, "type"]}),
    ("unknown-model", 422, None, {"jobs": [job(model="nope/x")]}, {"loc": ["jobs", 0, "model"]}),
    ("bad-job-id", 422, None, {"jobs": [job(id="Bad Id!")]}, {"loc": ["jobs", 0, "id"]}),
    ("duplicate-job-ids", 422, None, {"jobs": [job(), job()]}, {"loc": ["jobs", 1, "id"]}),
    (
        "unknown-reference",
        422,
        None,
        {"jobs": [job(params={"prompt": "$nope"})]},
        {"loc": ["jobs", 0, "params", "prompt"], "detail": "nope"},
    ),
    (
        "cycle",
        422,
        None,
        {"jobs": [job(id="a", params={"x": "$b"}), job(id="b", params={"x": "$a"})]},
        {"detail": "a -> b -> a"},
    ),
    ("201-jobs", 422, None, {"jobs": [job(id=f"j{i}") for i in range(201)]}, {"loc": ["jobs"], "detail": "200"}),
    ("deeply-nested-json", (400, 422), b"[" * 100_000 + b"]" * 100_000, None, {}),
    ("deeply-nested-plan", (400, 422), b'{"jobs": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", None, {}),
    ("deeply-nested-param", (400, 422), None, {"jobs": [job(params={"echo": nested(900)})]}, {}),
    (
        "lone-surrogate",
        (400, 422),
        b'{"jobs": [{"id": "a", "type": "generate-video", "model": "sim/video", "params": {"prompt": "\\ud800"}}]}',
        None,
        {},
    ),
    ("huge-body-content-length", 413, HUGE, None, {"title": "Request too large"}),
    ("huge-body-chunked", 413, chunked(HUGE), None, {"title": "Request too large"}),
]

PLAN_CASES = [
    Case(
        f"{endpoint.rsplit('/', 1)[-1]}:{name}",
        "POST",
        endpoint,
        status,
        content=content,
        json_body=body,
        loc=want.get("loc"),
        detail=want.get("detail"),
        title=want.get("title") or ("Invalid plan" if status == 422 else None),
    )
    for endpoint in ("/v1/executions", "/v1/estimate")
    for name, status, content, body, want in BODIES
]

MEDIA_TYPES: list[tuple[str, str | None]] = [
    ("text-plain", "text/plain"),
    ("no-content-type", None),
    ("form", "application/x-www-form-urlencoded"),
    ("multipart", "multipart/form-data; boundary=x"),
    ("json-lookalike", "application/jsonx"),
    ("json-in-latin-1", "application/json; charset=iso-8859-1"),
]
MEDIA_TYPE_CASES = [
    Case(
        f"{endpoint.rsplit('/', 1)[-1]}:content-type:{name}",
        "POST",
        endpoint,
        415,
        json_body=ONE,
        content_type=media,
        title="Unsupported Media Type",
        detail="application/json",
    )
    for endpoint in ("/v1/executions", "/v1/estimate")
    for name, media in MEDIA_TYPES
]

PRIVATE_WEBHOOKS = [
    "http://127.0.0.1/hook",
    "http://10.0.0.1/hook",
    "http://192.168.1.1:8080/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://localhost/hook",
]
WEBHOOK_CASES = [
    Case(
        f"webhook:{url}",
        "POST",
        "/v1/executions",
        422,
        json_body={**ONE, "webhook": url},
        loc=["webhook"],
        detail="not allowed",
        needs_webhooks=True,
    )
    for url in PRIVATE_WEBHOOKS
]

# ------------------------------------------------------------------ paths
EXECUTION_ENDPOINTS = [
    ("GET", "/v1/executions/{id}"),
    ("GET", "/v1/executions/{id}/events"),
    ("POST", "/v1/executions/{id}/cancel"),
    ("POST", "/v1/executions/{id}/resume"),
    ("POST", "/v1/executions/{id}/retry"),
    ("POST", "/v1/webhook-deliveries/{id}/redeliver"),
]
BAD_IDS = [
    ("dotdot-encoded", "%2e%2e"),
    ("traversal-encoded", "..%2F..%2Fetc%2Fpasswd"),
    ("sql", "%27%20OR%201%3D1%20--"),
    ("sql-semicolon", "x%27%3B%20DROP%20TABLE%20executions%3B%20--"),
    ("very-long", "a" * 5_000),
    ("extremely-long", "b" * 60_000),  # under the request-target limit (64 KiB): 404, however the bytes arrive
    ("nul", "a%00b"),
    ("unicode", "%C3%A9x%E2%80%AE"),
    ("unknown", "ex_0000000000000000000000000"),
]
PATH_CASES = [
    Case(f"{method} {template}:{name}", method, template.format(id=bad), 404, raw=True)
    for method, template in EXECUTION_ENDPOINTS
    for name, bad in BAD_IDS
] + [
    Case("traversal-raw", "GET", "/v1/executions/../../etc/passwd", 404, raw=True),
    Case("traversal-raw-events", "GET", "/v1/executions/../../../etc/passwd/events", 404, raw=True),
]

BAD_KEYS = [
    ("raw-traversal", "../../etc/passwd"),
    ("raw-traversal-deep", "ab/../../../../../../etc/passwd"),
    ("encoded-traversal", "%2e%2e/%2e%2e/etc/passwd"),
    ("encoded-slashes", "..%2F..%2F..%2Fetc%2Fpasswd"),
    ("absolute", "/etc/passwd"),
    ("backslashes", "..%5C..%5Cetc%5Cpasswd"),
    ("nul", "ab/x%00.png"),
    ("unknown-but-well-formed", "ab/" + "a" * 64 + ".png"),
    ("db-file", "../reelflow.db"),
    ("very-long", "a" * 5_000),
]
ARTIFACT_CASES = [Case(f"artifact:{name}", "GET", f"/v1/artifacts/{key}", 404, raw=True) for name, key in BAD_KEYS]

# ------------------------------------------------------------------ authentication
PROTECTED = [
    ("GET", "/v1/executions"),
    ("POST", "/v1/executions"),
    ("GET", "/v1/executions/{own}"),
    ("GET", "/v1/executions/{own}/events"),
    ("POST", "/v1/executions/{own}/cancel"),
    ("POST", "/v1/executions/{own}/resume"),
    ("POST", "/v1/executions/{own}/retry"),
    ("POST", "/v1/estimate"),
    ("GET", "/v1/models"),
    ("GET", "/v1/artifacts/ab/" + "a" * 64 + ".png"),
    ("GET", "/v1/webhook-deliveries"),
    ("POST", "/v1/webhook-deliveries/msg_x/redeliver"),
]
BAD_AUTH: list[tuple[str, str | bytes | None]] = [
    ("none", None),
    ("basic", "Basic dXNlcjpwYXNz"),
    ("bearer-without-key", "Bearer"),
    ("malformed-key", "Bearer not-a-key"),
    ("sql-key", "Bearer rf_' OR 1=1 --"),
    ("unknown-key", "Bearer rf_000000000000_" + "A" * 43),
    ("latin1-garbage", b"Bearer \xff\xfe\xfd"),
    ("very-long-key", "Bearer " + "a" * 8_000),
    ("revoked", "revoked"),
]
AUTH_CASES = [
    Case(
        f"{method} {path}:{name}",
        method,
        path,
        401,
        json_body=ONE if method == "POST" else None,
        auth=auth,
        title="Unauthorized",
    )
    for method, path in PROTECTED
    for name, auth in BAD_AUTH
] + [
    Case("wrong-scheme-with-a-valid-key", "GET", "/v1/executions", 401, auth="Token <mallory>", title="Unauthorized"),
    Case("key-without-scheme", "GET", "/v1/executions", 401, auth="<mallory>", title="Unauthorized"),
    Case("valid-key-with-suffix", "GET", "/v1/executions", 401, auth="Bearer <mallory>x", title="Unauthorized"),
]

# ------------------------------------------------------------------ routes and methods
ROUTE_CASES = [
    Case("unknown-route", "GET", "/v1/nope", 404, title="Not Found"),
    Case("unknown-version", "GET", "/v2/executions", 404, title="Not Found"),
    Case("root", "GET", "/", 404, title="Not Found"),
    Case("unknown-action", "POST", "/v1/executions/{own}/explode", 404, title="Not Found"),
    Case("unauthenticated-unknown-route", "GET", "/v1/nope", 404, auth=None, title="Not Found"),
    Case("delete-executions", "DELETE", "/v1/executions", 405, title="Method Not Allowed"),
    Case("put-execution", "PUT", "/v1/executions/{own}", 405, json_body=ONE, title="Method Not Allowed"),
    Case("patch-execution", "PATCH", "/v1/executions/{own}", 405, json_body=ONE, title="Method Not Allowed"),
    Case("delete-execution", "DELETE", "/v1/executions/{own}", 405, title="Method Not Allowed"),
    Case("get-cancel", "GET", "/v1/executions/{own}/cancel", 405, title="Method Not Allowed"),
    Case("get-estimate", "GET", "/v1/estimate", 405, title="Method Not Allowed"),
    Case("post-models", "POST", "/v1/models", 405, json_body=ONE, title="Method Not Allowed"),
    Case("get-redeliver", "GET", "/v1/webhook-deliveries/msg_x/redeliver", 405, title="Method Not Allowed"),
]

# ------------------------------------------------------------------ query strings and headers
QUERY_CASES = [
    Case(f"query:{q}", "GET", f"/v1/executions?{q}", 422, loc=["query", name], raw=True)
    for q, name in [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=", "limit"),
        ("status=bogus", "status"),
        ("status=QUEUED", "status"),
        ("status=%27%20OR%201%3D1", "status"),
        ("cursor=garbage!!", "cursor"),
        ("cursor=eHw", "cursor"),  # base64 of "x|": decodes, but names no execution
        ("cursor=bmFufGE", "cursor"),  # base64 of "nan|a": no cursor this server issues
        ("cursor=aW5mfGE", "cursor"),  # base64 of "inf|a"
        ("cursor=" + "A" * 600, "cursor"),
        ("cursor=%00", "cursor"),
        ("cursor=eHw%00", "cursor"),
        ("cursor=MS4wfGEAYg", "cursor"),  # base64 of "1.0|a<NUL>b": PostgreSQL refuses a NUL in text
        ("cursor=MS4wfGV4XyUyNw", "cursor"),  # base64 of "1.0|ex_%27"
        ("cursor=MS4wfGEAYg%0A", "cursor"),
        ("created_after=yesterday", "created_after"),
        ("created_after=2026-13-45", "created_after"),
        ("created_after=2026-01-01T25:00:00Z", "created_after"),
        ("created_after=0001-01-01T00:00:00", "created_after"),
    ]
] + [
    Case("deliveries:limit=0", "GET", "/v1/webhook-deliveries?limit=0", 422, loc=["query", "limit"], raw=True),
    Case("deliveries:limit=abc", "GET", "/v1/webhook-deliveries?limit=abc", 422, loc=["query", "limit"], raw=True),
    Case(
        "deliveries:sql-execution-id",
        "GET",
        "/v1/webhook-deliveries?execution_id=%27%20OR%201%3D1%20--",
        422,
        loc=["query", "execution_id"],
        raw=True,
    ),
    Case(
        "idempotency-key-empty",
        "POST",
        "/v1/executions",
        400,
        json_body=ONE,
        headers={"Idempotency-Key": ""},
        loc=["header", "idempotency-key"],
        detail="Idempotency-Key must not be empty",
    ),
    Case(
        "idempotency-key-too-long",
        "POST",
        "/v1/executions",
        422,
        json_body=ONE,
        headers={"Idempotency-Key": "k" * 300},
        loc=["header", "idempotency-key"],
    ),
]
BAD_LAST_EVENT_IDS: list[str | bytes] = ["abc", "1e3", "1.5", "0x10", "-1", "99999999999999999999999", b"\xff\xfe"]
LAST_EVENT_ID_CASES = [
    Case(
        f"last-event-id:{value!r}",
        "GET",
        "/v1/executions/{own}/events",
        400,
        headers={"Last-Event-ID": value},
        auth="owner",
        detail="Last-Event-ID",
    )
    for value in BAD_LAST_EVENT_IDS
]

CASES = [
    *PLAN_CASES,
    *MEDIA_TYPE_CASES,
    *WEBHOOK_CASES,
    *PATH_CASES,
    *ARTIFACT_CASES,
    *AUTH_CASES,
    *ROUTE_CASES,
    *QUERY_CASES,
    *LAST_EVENT_ID_CASES,
]


def authorization(case: Case, keys: dict[str, str]) -> str | bytes | None:
    if case.auth is None or isinstance(case.auth, bytes):
        return case.auth
    if case.auth in keys:
        return f"Bearer {keys[case.auth]}"
    value = case.auth
    for name, key in keys.items():
        value = value.replace(f"<{name}>", key)
    return value


def send(world: World, case: Case) -> tuple[httpx.Response, bytes]:
    """Send the case's request on a fresh connection.

    An event stream (a wrong answer here) is read for at most a second, so an error the server hits while
    streaming surfaces in this case rather than in the next one."""
    fields: dict[str, str | bytes] = dict(case.headers)
    auth = authorization(case, world.keys)
    if auth is not None:
        fields["Authorization"] = auth
    path = case.path.replace("{own}", world.own)
    content = case.content() if callable(case.content) else case.content
    if case.json_body is not None:
        content = json.dumps(case.json_body).encode()
    if content is not None and case.content_type is not None:
        fields.setdefault("Content-Type", case.content_type)
    headers = [(k.encode(), v if isinstance(v, bytes) else v.encode("latin-1")) for k, v in fields.items()]
    with world.api.client(timeout=httpx.Timeout(30.0, read=1.0)) as http:
        if case.raw:
            request = http.build_request(case.method, "/", content=content, headers=headers)
            request.extensions["target"] = path.encode()
        else:
            request = http.build_request(case.method, path, content=content, headers=headers)
        response = http.send(request, stream=True)
        try:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                with contextlib.suppress(httpx.ReadTimeout, httpx.RemoteProtocolError):
                    for _ in response.iter_raw():
                        pass
                return response, b""
            return response, response.read()
        finally:
            response.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id[:120] for c in CASES])
def test_hostile_request(world: World, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    if case.needs_webhooks and not HAS_WEBHOOKS:
        pytest.skip("reelflow.webhooks (destination checks) is not there yet")
    caplog.set_level(logging.WARNING)
    before = world.api.counts()

    response, raw = send(world, case)

    text = raw.decode("utf-8", "replace")
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert response.status_code in expected, f"{case.method} {case.path[:200]}: {response.status_code} {text[:500]}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    assert "Traceback" not in text and 'File "' not in text
    problem = json.loads(raw)
    assert problem["status"] == response.status_code
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    if case.title is not None:
        assert problem["title"] == case.title
    if case.detail is not None:
        assert case.detail.lower() in problem["detail"].lower(), problem["detail"]
    if "errors" in problem or case.loc is not None:
        errors = problem["errors"]
        assert errors and all(isinstance(e["loc"], list) and isinstance(e["msg"], str) and e["msg"] for e in errors)
        if case.loc is not None:
            assert case.loc in [e["loc"] for e in errors], errors
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if response.status_code == 405:
        assert response.headers["allow"]

    assert world.api.counts() == before, "a refused request stored something"
    with world.api.client(world.keys["mallory"]) as http:
        assert http.get("/v1/executions").json()["data"] == []
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not logged, logged


def test_the_server_still_answers_after_the_barrage(world: World) -> None:
    with world.api.client(world.keys["owner"]) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get(f"/v1/executions/{world.own}").json()["status"] == "queued"
        assert [e["id"] for e in http.get("/v1/executions").json()["data"]] == [world.own]
