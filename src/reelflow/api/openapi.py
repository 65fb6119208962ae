"""The OpenAPI document says what the API really answers: who must send a key, and each error as problem+json.

FastAPI on its own lists no error answer, documents a 422 shaped as its own `HTTPValidationError` in
`application/json` (the API sends RFC 9457 `application/problem+json`, see `problems.py`), and showed the key as
an optional `authorization` header parameter. Here the routes declare their errors with `errors(...)`; the
authentication dependency carries `BEARER`, so FastAPI puts the bearer security scheme on exactly the operations
that need a key; and `install` amends the generated document: those operations get the 401 and 503 that
authentication gives, and FastAPI's own 422 entries go (a route whose parameters can fail validation declares
its problem+json 422 itself).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import PROBLEM

SECURITY_SCHEME = "bearerAuth"
PROBLEM_REF = "#/components/schemas/Problem"
JSON = "application/json"
STREAM = "text/event-stream"
BEARER = HTTPBearer(
    scheme_name=SECURITY_SCHEME,
    description="An API key (`reelflow keys create --tenant NAME`), sent as `Authorization: Bearer <key>`",
    auto_error=False,  # never answers: the API's own dependency checks the header and gives its own 401
)

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error answer (RFC 9457 problem details), sent as application/problem+json.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "Always `about:blank`: the status says what kind of error."},
        "title": {"type": "string", "description": "A short summary of the kind of error."},
        "status": {"type": "integer", "description": "The HTTP status code of this answer."},
        "detail": {"type": "string", "description": "What went wrong with this request, for people."},
        "instance": {"type": "string", "description": "The request's path."},
        "errors": {
            "type": "array",
            "description": "Per-field errors (validation, malformed JSON), each at its place in the request.",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        "description": "Where: `body`, `query`, `header` or `path`, then keys and indexes.",
                    },
                    "msg": {"type": "string"},
                },
            },
        },
    },
}

DESCRIPTIONS = {
    400: "Malformed request: a body that is not JSON, is empty, repeats a key, holds NaN or Infinity, or a bad header",
    401: "No API key, not `Bearer <api key>`, or an invalid or revoked key",
    402: "The tenant's monthly cost budget would be passed",
    403: "A signed link that does not open",
    404: "Unknown, or another tenant's",
    409: "The request conflicts with the resource's state",
    413: "The request body is over 1 MB",
    415: "The request body is not `application/json` (UTF-8)",
    422: "Invalid request: each problem is in `errors`",
    429: "The tenant's monthly execution limit is reached",
    503: "The database is unavailable or busy, or a configuration file went bad: try again after `Retry-After`",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}
_CHALLENGE = {"WWW-Authenticate": {"description": 'Always `Bearer realm="reelflow"`', "schema": {"type": "string"}}}


def problem_answer(status: int, description: str | None = None) -> dict[str, Any]:
    """One documented error answer: problem+json with the Problem schema."""
    answer: dict[str, Any] = {
        "description": description or DESCRIPTIONS[status],
        "content": {PROBLEM: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status == 503:  # every 503 names its wait: 1 s (busy), 5 s (unavailable), 60 s (misconfigured)
        answer["headers"] = _RETRY_AFTER
    return answer


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its error answers, each problem+json (merge `problem_answer(s, "...")` in to
    say what a status means on that route)."""
    return {s: problem_answer(s) for s in statuses}


def _is_fastapi_422(answer: dict[str, Any]) -> bool:
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def amend(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the Problem schema to `doc`; give every operation that needs a key (FastAPI marks it with the
    security scheme of `BEARER`) its 401 and 503; drop FastAPI's own 422 entries (the API never sends that
    shape: a route whose parameters can fail validation declares its problem+json 422 itself)."""
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for item in [*doc.get("paths", {}).values(), *doc.get("webhooks", {}).values()]:
        for operation in item.values():
            answers = operation.setdefault("responses", {})
            for answer in answers.values():  # a stream's `model` schema describes each event, not a JSON answer
                content = answer.get("content", {})
                if STREAM in content and JSON in content:
                    content[STREAM] = content.pop(JSON)
            if "422" in answers and _is_fastapi_422(answers["422"]):
                del answers["422"]
            if {SECURITY_SCHEME: []} in operation.get("security", []):
                answers.setdefault("401", problem_answer(401) | {"headers": _CHALLENGE})
                answers.setdefault("503", problem_answer(503))  # the key is checked against the database
            operation["responses"] = dict(sorted(answers.items()))
    schemas = components["schemas"]
    if not any(_is_fastapi_422(a) for item in doc["paths"].values() for op in item.values() for a in _answers(op)):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return doc


def _answers(operation: Any) -> list[dict[str, Any]]:
    return list(operation.get("responses", {}).values()) if isinstance(operation, dict) else []


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and so /openapi.json and /docs) serve the amended document, built once."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = amend(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_PAGES = frozenset({"/docs", "/redoc"})
DOCS_POLICY = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:"
)
"""What /docs and /redoc may load: this server only. Their scripts come from fastapi-offline's copies; this also
keeps the browser from fetching what those scripts name elsewhere (ReDoc's footer logo on cdn.redoc.ly)."""


class DocsPolicy:
    """Sends DOCS_POLICY as the Content-Security-Policy of the API documentation pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in DOCS_PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", DOCS_POLICY)]
            await send(message)

        await self.app(scope, receive, with_policy)
