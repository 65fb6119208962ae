"""The HTTP API (FastAPI). Handlers stay thin: validate, call the engine, shape the answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Security
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from .. import __version__, metrics
from ..circuits import provider_circuits
from ..config import Settings, get_settings, split_host_port
from ..engine.scheduler import Engine
from ..engine.worker import Worker
from ..errors import ErrorItem
from ..estimate import estimate_plan
from ..keys import authenticate
from ..limits import get_limits
from ..logs import RequestLogContext
from ..logs import bind as bind_log_context
from ..models import (
    Accepted,
    CallbackReceipt,
    Delivery,
    DeliveryList,
    Estimate,
    Event,
    ExecutionPage,
    ExecutionState,
    Health,
    JobLogs,
    Links,
    ModelList,
    PlanSchema,
    ProviderList,
    Stats,
    Usage,
    WebhookEvent,
)
from ..plan import JOB_ID_PATTERN, parse_plan, plan_json_schema
from ..providers.base import CallbackRejected, is_callback_provider
from ..providers.catalog import Catalog, load_extensions
from ..providers.registry import Providers
from ..states import EXECUTION_STATUSES, TERMINAL_EXECUTION
from ..storage import BadKey, LinkRefused, LinkSigner, Storage, check_key, link_signer, open_storage
from ..store import Store, open_store
from ..store.common import CALLBACK_OUTCOME_MAX_BYTES, BadCursor, iso, strip_paths
from ..store.stats import parse_since
from . import openapi, problems, ui
from .openapi import errors, problem_answer
from .problems import Problem

log = logging.getLogger("reelflow.api")

SSE_POLL_S = 0.25
SSE_KEEPALIVE_S = 15.0
ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
T = TypeVar("T")


class Services:
    """What the handlers need, built once per app."""

    def __init__(
        self, settings: Settings, store: Store, providers: Providers | None = None, catalog: Catalog | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers or Providers(catalog=catalog)
        self.storage: Storage = open_storage(settings.storage_url, settings.public_url)
        self.engine = Engine(store, settings, storage=self.storage, catalog=catalog)
        self._keys: dict[str, tuple[str | None, float]] = {}
        self._signer: LinkSigner | None = None

    async def signer(self) -> LinkSigner:
        """The artifact link signer (its secret read from the database once, unless REELFLOW_LINK_SECRET)."""
        if self._signer is None:
            s = self.settings
            self._signer = await link_signer(self.store, s.public_url, s.link_seconds, s.link_secret)
        return self._signer

    async def signed(self, who: str, value: T) -> T:
        """`value` (an answer) with its links to the tenant's artifacts signed now: they open without a key."""
        signer = await self.signer()
        return await signer.sign_links(value, lambda keys: self.store.owned_artifacts(who, keys))

    async def tenant_for(self, raw: str) -> str | None:
        """Authenticate a key, remembering the answer for 5 s (revocation shows within that)."""
        hit = self._keys.get(raw)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        tenant = await authenticate(self.store, raw)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[raw] = (tenant, now + 5.0)
        return tenant


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def tenant(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(openapi.BEARER)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The caller's tenant, from `Authorization: Bearer <api key>`.

    The header is read and checked here, with this API's own 401 answers; `_declared` (which never refuses and
    is not used) only makes the OpenAPI document show the bearer security scheme on every route that needs a key.
    """
    challenge = {"WWW-Authenticate": 'Bearer realm="reelflow"'}
    if not authorization:
        raise Problem(401, "missing Authorization header: send 'Authorization: Bearer <api key>'", headers=challenge)
    scheme, _, raw = authorization.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise Problem(401, "Authorization must be 'Bearer <api key>'", headers=challenge)
    found = await (await services(request)).tenant_for(raw.strip())
    if found is None:
        raise Problem(401, "invalid or revoked API key", headers=challenge)
    return found


Tenant = Annotated[str, Depends(tenant)]
Svc = Annotated[Services, Depends(services)]


def links(execution_id: str) -> Links:
    base = f"/v1/executions/{execution_id}"
    return Links(
        self_=base, events=f"{base}/events", cancel=f"{base}/cancel", resume=f"{base}/resume", retry=f"{base}/retry"
    )


def accepted(execution_id: str, status: str) -> JSONResponse:
    answer = Accepted(id=execution_id, status=status, links=links(execution_id))
    return JSONResponse(
        answer.model_dump(mode="json", by_alias=True),
        status_code=202,
        headers={"Location": f"/v1/executions/{execution_id}"},
    )


JSON_MEDIA_TYPE = "application/json"


def check_json_content_type(request: Request) -> None:
    """A JSON body must say so: `Content-Type: application/json` (UTF-8, the only charset JSON has)."""
    raw = request.headers.get("content-type", "")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media != JSON_MEDIA_TYPE:
        got = f"'{media[:100]}'" if media else "no Content-Type"
        detail = f"the request body must be {JSON_MEDIA_TYPE} (got {got})"
        raise Problem(415, detail, headers={"Accept": JSON_MEDIA_TYPE})
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Problem(415, f"an application/json body is UTF-8 (got charset {value.strip()[:50]!r})")


async def json_body(request: Request) -> Any:
    check_json_content_type(request)
    raw = await request.body()
    if not raw.strip():
        raise Problem(400, "the request body is empty: send a plan as JSON")
    try:
        data = json.loads(raw, object_pairs_hook=_JsonObject.of, parse_constant=_NonFinite)
    except UnicodeDecodeError:
        raise Problem(400, "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Problem(400, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a number of thousands of digits, absurd nesting
        raise Problem(400, f"the JSON body cannot be read: {str(exc)[:200]}") from None
    check_shape(data, raw)
    return data


class _JsonObject(dict[str, Any]):
    """A JSON object that repeated a key (json.loads would silently keep the last value)."""

    duplicate: str = ""

    @classmethod
    def of(cls, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        marked, seen = cls(obj), set()
        for key, _ in pairs:
            if key in seen:
                marked.duplicate = key
                break
            seen.add(key)
        return marked


class _NonFinite:
    """NaN, Infinity or -Infinity, which JSON does not have (json.loads would take them)."""

    def __init__(self, text: str) -> None:
        self.text = text


MAX_NESTING = 32


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
"""A JSON escape of a UTF-16 surrogate (\\uD800 to \\uDFFF): in UTF-8 text, the only way to a lone one."""


def check_shape(data: Any, raw: bytes | None = None) -> None:
    """Refuse nesting deeper than MAX_NESTING, text that is not valid Unicode (lone surrogates), repeated keys
    and numbers that are not finite (NaN, Infinity, 1e999); each problem is named by its place.

    With the `raw` body it was parsed from, strings are checked only when that body is UTF-8 holding a
    surrogate escape: strict UTF-8 decoding cannot give a lone surrogate otherwise."""
    strings = raw is None or json.detect_encoding(raw) != "utf-8" or _SURROGATE_ESCAPE.search(raw) is not None
    suspect = False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            values: Iterable[Any] = value.values()
            suspect = suspect or type(value) is _JsonObject
            if strings:
                for key in value:
                    _check_text(key)
        elif isinstance(value, list):
            values = value
        else:  # only the top level can be a scalar here
            values = (value,)
            depth = 0
        for item in values:
            if isinstance(item, dict | list):
                if depth >= MAX_NESTING:
                    raise Problem(400, f"the JSON body is nested deeper than {MAX_NESTING} levels")
                stack.append((item, depth + 1))
            elif isinstance(item, str):
                if strings:
                    _check_text(item)
            elif isinstance(item, float):
                suspect = suspect or not math.isfinite(item)
            elif isinstance(item, _NonFinite):
                suspect = True
    if suspect:
        problems = _json_problems(data)
        detail = "; ".join(str(p) for p in problems[:5])
        if len(problems) > 5:
            detail += f" (and {len(problems) - 5} more)"
        raise Problem(400, detail, errors=[p.as_dict() for p in problems])


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(400, "the JSON body contains invalid Unicode (a lone surrogate)") from None


def _json_problems(data: Any) -> list[ErrorItem]:
    """Each repeated key and number that is not finite, in document order, with its place (`body.metadata.a`)."""
    problems: list[ErrorItem] = []
    stack: list[tuple[Any, list[str | int]]] = [(data, ["body"])]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, dict | list):
            if isinstance(value, _JsonObject):
                problems.append(ErrorItem([*loc, value.duplicate], "duplicate key"))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, [*loc, k]) for k, v in reversed(list(items)))
        elif isinstance(value, _NonFinite):
            problems.append(ErrorItem(loc, f"{value.text} is not a finite number (JSON has no NaN or Infinity)"))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(ErrorItem(loc, "number too large (beyond a 64-bit float: not finite)"))
    return problems


def check_path_id(value: str, what: str = "execution") -> str:
    if not re.match(ID_PATTERN, value):
        raise Problem(404, f"{what} {value[:100]!r} not found")
    return value


PLAN_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "description": "A plan: /v1/schema/plan"}}},
    }
}

READY_503 = {
    "description": "The database cannot be reached (this answer is plain JSON, like the 200 one)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["status", "detail"],
                "properties": {"status": {"const": "unavailable"}, "detail": {"type": "string"}},
            }
        }
    },
}

router = APIRouter(prefix="/v1")


@router.post(
    "/executions",
    status_code=202,
    response_model=Accepted,
    openapi_extra=PLAN_BODY,
    tags=["executions"],
    responses={
        **errors(400, 402, 413, 415, 422, 429),
        409: problem_answer(409, "The Idempotency-Key was used with a different request"),
    },
)
async def submit(
    request: Request,
    svc: Svc,
    who: Tenant,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Validate and enqueue a plan (or a single job); 202 with the execution id at once."""
    if idempotency_key is not None and not idempotency_key.strip():
        msg = "must not be empty: send a key, or no header"
        raise Problem(400, f"Idempotency-Key {msg}", errors=[{"loc": ["header", "idempotency-key"], "msg": msg}])
    data = await json_body(request)
    plan = parse_plan(data, catalog=svc.engine.catalog)
    execution_id = await svc.engine.submit(plan, tenant=who, idempotency_key=idempotency_key)
    bind_log_context(execution_id=execution_id)  # the rest of this request (its access log line) names it
    if idempotency_key is None:
        return accepted(execution_id, "queued")
    state = await svc.engine.get(execution_id, who)  # a replay answers with the first execution's status
    return accepted(execution_id, state.status)


@router.get("/executions", response_model=ExecutionPage, tags=["executions"], responses=errors(422))
async def list_executions(
    svc: Svc,
    who: Tenant,
    status: Annotated[Literal["queued", "running", "succeeded", "failed", "canceled"] | None, Query()] = None,
    created_after: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ExecutionPage:
    """Executions, newest first; `next_cursor` fetches the next page."""
    assert status is None or status in EXECUTION_STATUSES
    try:
        after = created_after.timestamp() if created_after else None
    except (OverflowError, ValueError, OSError):
        msg = "created_after is out of range"
        raise Problem(422, msg, errors=[{"loc": ["query", "created_after"], "msg": msg}]) from None
    try:
        return await svc.store.list_executions(
            who,
            status=status,
            created_after=after,
            limit=limit,
            cursor=cursor,
        )
    except BadCursor as exc:
        raise Problem(422, str(exc), errors=[{"loc": ["query", "cursor"], "msg": str(exc)}]) from None


@router.get("/executions/{execution_id}", response_model=ExecutionState, tags=["executions"], responses=errors(404))
async def get_execution(execution_id: str, svc: Svc, who: Tenant) -> ExecutionState:
    """The full state: status, progress, jobs, result, error, cost, timestamps, metadata."""
    return await svc.signed(who, strip_paths(await svc.engine.get(check_path_id(execution_id), who)))


@router.get(
    "/executions/{execution_id}/jobs/{job_id}/logs",
    response_model=JobLogs,
    tags=["executions"],
    responses=errors(404),
)
async def get_job_logs(execution_id: str, job_id: str, svc: Svc, who: Tenant) -> JobLogs:
    """What the provider logged for one job (the last 64 KiB, every attempt), and whether earlier lines were
    left out."""
    check_path_id(execution_id)
    if not re.match(JOB_ID_PATTERN, job_id):
        raise Problem(404, f"job {job_id[:100]!r} not found in execution {execution_id!r}")
    return await svc.engine.job_logs(execution_id, job_id, who)


@router.get(
    "/executions/{execution_id}/events",
    tags=["executions"],
    response_class=StreamingResponse,
    responses=errors(404)
    | {
        200: {
            "model": Event,  # openapi.amend moves its schema under text/event-stream
            "description": "Server-sent events: `id:` the event's number, `event:` its type, `data:` the event",
            "content": {"text/event-stream": {}},
        },
        400: problem_answer(400, "Last-Event-ID is not an event number"),
    },
)
async def stream_events(
    execution_id: str,
    request: Request,
    svc: Svc,
    who: Tenant,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events of the execution's log; `Last-Event-ID` resumes after that event."""
    await svc.engine.get(check_path_id(execution_id), who)
    try:
        after = int(last_event_id) if last_event_id else 0
        if not 0 <= after < 2**63:
            raise ValueError
    except ValueError:
        raise Problem(400, f"Last-Event-ID must be an event number, got {str(last_event_id)[:50]!r}") from None
    return StreamingResponse(
        sse(svc, execution_id, who, after, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def event_view(seq: int, kind: str, job: str | None, data: dict[str, Any], at: float) -> dict[str, Any]:
    """One event as the API shows it: `created_at` ISO 8601 like every time in the API, `created_at_unix` the
    same instant in Unix seconds (what `created_at` held before)."""
    return {"seq": seq, "type": kind, "job": job, "data": data, "created_at": iso(at), "created_at_unix": at}


async def sse(svc: Services, execution_id: str, who: str, after: int, request: Request) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    idle_since = time.monotonic()
    while True:
        batch = await svc.store.events(execution_id, after=after, limit=500)
        if batch:  # one write per batch: a client gone mid-batch costs one failed send, not hundreds
            lines = []
            signed = await svc.signed(who, [strip_paths(e.data) for e in batch])
            for e, details in zip(batch, signed, strict=True):
                data = event_view(e.seq, e.type, e.job_key, details, e.created_at)
                lines.append(f"id: {e.seq}\nevent: {e.type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n")
            yield "".join(lines)
            after = batch[-1].seq
            await asyncio.sleep(0)  # the transport reports a lost connection here: the stream ends before more
        if batch:
            idle_since = time.monotonic()
            if len(batch) == 500:
                continue
            if batch[-1].type.removeprefix("execution.") in TERMINAL_EXECUTION:
                return
        else:
            status = await svc.store.execution_status(execution_id, who)  # the status only: not the whole state
            if status is None or status in TERMINAL_EXECUTION:
                return
            if time.monotonic() - idle_since >= SSE_KEEPALIVE_S:
                idle_since = time.monotonic()
                yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(SSE_POLL_S)


@router.post(
    "/executions/{execution_id}/cancel",
    response_model=ExecutionState,
    tags=["executions"],
    responses=errors(404) | {409: problem_answer(409, "The execution has already finished")},
)
async def cancel(execution_id: str, svc: Svc, who: Tenant) -> ExecutionState:
    """Cancel: queued jobs canceled, running ones stopped at their provider."""
    return await svc.signed(who, strip_paths(await svc.engine.cancel(check_path_id(execution_id), who)))


@router.post(
    "/executions/{execution_id}/resume",
    response_model=ExecutionState,
    tags=["executions"],
    responses=errors(404) | {409: problem_answer(409, "The execution has not finished, or it succeeded")},
)
async def resume(execution_id: str, svc: Svc, who: Tenant) -> ExecutionState:
    """Re-run only the failed, canceled and skipped jobs; succeeded ones keep their results."""
    return await svc.signed(who, strip_paths(await svc.engine.resume(check_path_id(execution_id), who)))


@router.post(
    "/executions/{execution_id}/retry",
    status_code=202,
    response_model=Accepted,
    tags=["executions"],
    responses=errors(402, 404, 422, 429),
)
async def retry(execution_id: str, svc: Svc, who: Tenant) -> JSONResponse:
    """A new execution of the same plan."""
    new_id = await svc.engine.retry(check_path_id(execution_id), who)
    return accepted(new_id, "queued")


@router.post(
    "/estimate",
    response_model=Estimate,
    openapi_extra=PLAN_BODY,
    tags=["plans"],
    responses=errors(400, 413, 415, 422),
)
async def estimate(request: Request, svc: Svc, who: Tenant) -> dict[str, Any]:
    """Cost and time estimate of a plan; nothing is enqueued."""
    return estimate_plan(await json_body(request), catalog=svc.engine.catalog)


@router.get("/usage", response_model=Usage, tags=["usage"])
async def usage(svc: Svc, who: Tenant) -> Usage:
    """The caller's tenant this calendar month: executions, settled and reserved cost, cache hits, limits; and
    its jobs running now (`jobs_running`, against `limits.max_concurrent`)."""
    return await svc.engine.usage(who)


@router.get("/stats", response_model=Stats, tags=["usage"], responses=errors(422))
async def stats(
    svc: Svc,
    who: Tenant,
    since: Annotated[
        str | None,
        Query(max_length=64, description="An ISO 8601 time, or a duration back from now (24h, 90m, 7d); default 24h."),
    ] = None,
) -> Stats:
    """The caller's tenant since `since`: executions by status with success rate and p50/p95 time, queue depth,
    jobs by status, per-provider success and p50 time, webhook deliveries, spend this month, workers."""
    try:
        start = parse_since(since, time.time())
    except ValueError as exc:
        raise Problem(422, str(exc), errors=[{"loc": ["query", "since"], "msg": str(exc)}]) from None
    return await svc.store.stats(who, start)


@router.get("/providers", response_model=ProviderList, tags=["providers"])
async def provider_list(svc: Svc, who: Tenant) -> dict[str, Any]:
    """Each provider's and model's circuit (closed, open, half-open; shared by every worker), recent success
    rate and limits."""
    return {"data": provider_circuits(await svc.store.circuits(), get_limits(svc.settings), time.time())}


@router.get("/models", response_model=ModelList, tags=["plans"])
async def models(svc: Svc, who: Tenant) -> dict[str, Any]:
    """The model catalog: provider, job types, parameters, price."""
    return {"data": [m.model_dump(mode="json") for m in svc.engine.catalog.models()]}


@router.get("/schema/plan", response_model=PlanSchema, tags=["plans"])
async def schema() -> dict[str, Any]:
    """The JSON Schema of a plan (for editors and programs that write plans)."""
    return plan_json_schema()


@router.get(
    "/artifacts/{key:path}",
    tags=["artifacts"],
    response_class=FileResponse,
    openapi_extra={"security": [{}]},  # added to the key's entry: a key, or none (a signed link)
    responses=errors(404)
    | {
        200: {
            "description": "The file (its media type), or 307 to a signed URL on object storage",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        403: problem_answer(403, "A signed link that is malformed, does not match, or has expired (`detail` says why)"),
    },
)
async def artifact(
    key: str,
    request: Request,
    svc: Svc,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(openapi.BEARER)],
    exp: Annotated[str | None, Query(description="A signed link's expiry (Unix seconds); no key needed")] = None,
    sig: Annotated[str | None, Query(description="A signed link's signature")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """A stored output; ranges supported so players can seek. On object storage: a redirect to a fresh
    signed URL. Opens with an API key (`Authorization`, the artifact must be the tenant's), or without one
    through the signed link (`?exp=&sig=`) that states, events and webhooks carry; with a key, the query is
    not looked at."""
    keyed = authorization or (exp is None and sig is None)
    who = await tenant(request, _declared, authorization) if keyed else None
    try:
        check_key(key)
    except BadKey:
        raise Problem(404, f"artifact {key[:100]!r} not found") from None
    if who is not None:
        if not await svc.store.owns_artifact(who, key):
            raise Problem(404, f"artifact {key!r} not found")
    else:
        try:
            (await svc.signer()).check(key, exp, sig)
        except LinkRefused as exc:
            raise Problem(403, f"artifact link refused: {exc}") from None
    path = svc.storage.local_path(key)
    if path is None:
        return RedirectResponse(await asyncio.to_thread(svc.storage.url, key), status_code=307)
    from ..media import CONTENT_TYPES

    return FileResponse(path, media_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"))


@router.get("/webhook-deliveries", response_model=DeliveryList, tags=["webhooks"], responses=errors(422))
async def deliveries(
    svc: Svc,
    who: Tenant,
    execution_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Webhook deliveries with every attempt (status code, latency, error)."""
    return await svc.store.list_deliveries(who, execution_id, limit)


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver", response_model=Delivery, tags=["webhooks"], responses=errors(404)
)
async def redeliver(delivery_id: str, svc: Svc, who: Tenant) -> Delivery:
    """Send a delivery again (same webhook-id)."""
    return await svc.store.redeliver(check_path_id(delivery_id, "webhook delivery"), who)


@router.post(
    "/providers/{provider}/callback",
    response_model=CallbackReceipt,
    tags=["providers"],
    responses={
        **errors(413, 422, 503),
        401: problem_answer(401, "The provider's signature does not verify"),
        404: problem_answer(404, "This provider sends no callbacks"),
    },
)
async def provider_callback(
    provider: str,
    request: Request,
    svc: Svc,
    execution: Annotated[str | None, Query(max_length=64)] = None,
    job: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Inbound provider webhooks. The provider's signature is the authentication: a request that does not
    verify answers 401 and changes nothing. A verified one wakes the job's worker. When its body tells how the
    work ended (and is not too big to keep), that outcome goes with the wake-up and the worker finishes the job
    from it if it is about the work the job waits on; otherwise the worker asks the provider.

    An embedded worker of this process that holds the job and waits on that work is woken here, outcome in
    hand, and nothing is written. Otherwise the database decides (`wake_job`: the job runs, it waits on this
    work) and keeps the mark, with the outcome, for the worker that holds the job, which reads it within 0.5 s;
    when that worker is one of this process's, it is woken here at once instead, and the outcome is not kept."""
    adapter = svc.providers.get(provider)
    if adapter is None or provider in ("local", "sim") or not is_callback_provider(adapter):
        raise Problem(404, f"no callbacks are accepted for provider {provider[:50]!r}")
    body = await request.body()
    try:
        event = await adapter.verify_callback(request.headers, body)
    except CallbackRejected as exc:
        log.warning("callback from %s refused: %s", provider, exc)
        raise Problem(401, f"callback signature not verified: {exc}") from None
    told = kept_outcome(event.outcome)
    # One walk over the embedded workers: one that holds the job and waits on this work is handed the outcome
    # here, and nothing is written (the job is leased to it: no other worker would read a mark; a worker that
    # resumes the job after a crash looks at the work at once anyway). The first that holds it otherwise is
    # woken after the database's checks.
    local: tuple[Worker, int] | None = None
    for worker in getattr(request.app.state, "workers", []):
        held, waits = worker.callback_target(provider, event.provider_job_id, execution, job)
        if held is None:
            continue
        if waits:
            worker.wake(held, event.outcome if told else None)
            log.info("callback from %s about %s: woken", provider, event.provider_job_id)
            return {"received": True, "job": "woken"}
        if local is None:
            local = (worker, held)
    outcome = await svc.store.wake_job(provider, event.provider_job_id, execution, job, None if local else told)
    if outcome == "woken" and local is not None:
        local[0].wake(local[1], event.outcome if told else None)
    log.info("callback from %s about %s: %s", provider, event.provider_job_id, outcome)
    return {"received": True, "job": outcome}


def kept_outcome(outcome: dict[str, Any] | None) -> str | None:
    """A verified callback's outcome as the JSON kept with the wake-up; None when there is none or it is bigger
    than CALLBACK_OUTCOME_MAX_BYTES (the worker then asks the provider)."""
    if outcome is None:
        return None
    # ASCII: a NUL or a lone surrogate in the body stays an escape (PostgreSQL's text takes neither as such)
    text = json.dumps(outcome, separators=(",", ":"))
    if len(text) > CALLBACK_OUTCOME_MAX_BYTES:
        log.info("a callback's outcome of %d bytes is too big to keep; the worker asks the provider", len(text))
        return None
    return text


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    workers: int = 0,
    deliver_webhooks: bool = True,
    providers: Providers | None = None,
    catalog: Catalog | None = None,
) -> FastAPI:
    """The API app. With `workers`, that many embedded workers run in the app's event loop. Plans are checked
    against `catalog` (the process's default catalog when None, built here)."""
    settings = settings or get_settings()
    if catalog is None:
        load_extensions(settings)  # a bad catalog file stops the server here, with its problems listed
    get_limits(settings)  # so does a bad limits file
    own_store = store is None
    the_store = store or open_store(settings.database_url, pool_size=settings.database_pool_size)
    gauges = metrics.StoreGauges(the_store)  # this app's database gauges, next to the process's metrics
    gauge_registry = CollectorRegistry()
    gauge_registry.register(gauges)

    async def render_metrics() -> bytes:
        await gauges.refresh()
        return metrics.exposition(gauge_registry)

    metrics_socket = None
    if settings.metrics_addr:  # bound now, so a taken address stops `serve` before it starts
        metrics_socket = metrics.listen(*split_host_port(settings.metrics_addr))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await the_store.migrate()
        table = providers or Providers(catalog=catalog)
        app.state.services = Services(settings, the_store, table, catalog)
        running: list[tuple[Any, asyncio.Task[None]]] = []
        for _ in range(workers):
            w = Worker(
                the_store, settings=settings, providers=table, deliver_webhooks=deliver_webhooks, catalog=catalog
            )
            running.append((w, asyncio.create_task(w.run())))
        app.state.workers = [w for w, _ in running]
        listener = None
        if metrics_socket is not None:
            listener = await metrics.serve_listener(metrics_socket, render_metrics, settings.metrics_token)
            log.info("metrics at http://%s/metrics", settings.metrics_addr)
        if deliver_webhooks and workers == 0:
            from ..webhooks import WebhookDispatcher

            d = WebhookDispatcher(the_store, settings=settings, owner=f"api-{id(app):x}")
            running.append((d, asyncio.create_task(d.run())))
        try:
            yield
        finally:
            if listener is not None:
                listener.close()
            for runner, _ in running:
                runner.stop()
            for _, task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if own_store:
                await the_store.close()

    app = FastAPIOffline(  # /docs and /redoc with Swagger UI and ReDoc served from the package: no CDN
        title="reelflow",
        version=__version__,
        description="Run AI video pipelines: plans of generation jobs on a durable queue.",
        lifespan=lifespan,
    )
    problems.install(app)
    openapi.install(app)
    app.add_middleware(problems.BodyLimit)
    app.add_middleware(problems.HeadLimit)
    app.add_middleware(openapi.DocsPolicy)
    app.add_middleware(RequestLogContext)
    app.include_router(router)
    ui.install(app)  # GET /ui: the dashboard (static files, outside the OpenAPI schema)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: READY_503})
    async def readyz(request: Request) -> JSONResponse:
        try:
            await (await services(request)).store.live_workers(within_s=60)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.webhooks.post(
        "execution-event",
        tags=["webhooks"],
        response_class=Response,
        responses={200: {"description": "Any 2xx acknowledges the delivery; anything else is tried again later"}},
    )
    async def execution_event(
        body: WebhookEvent,
        webhook_id: Annotated[str, Header(description="The same on every try of one event")],
        webhook_timestamp: Annotated[int, Header(description="Unix seconds when this try was signed")],
        webhook_signature: Annotated[
            str, Header(description='`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the tenant\'s secret')
        ],
    ) -> None:
        """What reelflow POSTs to a plan's `webhook` (Standard Webhooks): the execution's end, and on request
        (`options.webhook_events`) its job events and progress. Only documented here: the API serves no such path."""

    if metrics_socket is None:  # with REELFLOW_METRICS_ADDR, /metrics is on that listener only

        @app.get("/metrics", tags=["health"], include_in_schema=False)
        async def prometheus_metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
            """Prometheus metrics (text format): this process's counters and histograms (its embedded workers'
            included) and gauges read from the database now."""
            token = settings.metrics_token
            if token is not None and not metrics.token_matches(authorization, token):
                challenge = {"WWW-Authenticate": 'Bearer realm="reelflow metrics"'}
                raise Problem(401, "send 'Authorization: Bearer <REELFLOW_METRICS_TOKEN>'", headers=challenge)
            return Response(await render_metrics(), media_type=metrics.CONTENT_TYPE)

    if own_store:
        app.state.store = the_store
    return app
