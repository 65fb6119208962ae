"""Outbound webhooks: Standard Webhooks signing and verification, destination safety, and the
delivery loop that sends what the Store queued, retries with backoff for a day, and records every attempt.

The Store writes a delivery in the same transaction as the event that calls for it; this module only
sends. Each delivery keeps one `webhook-id` (its own id) across every attempt; each attempt gets a fresh
timestamp and signature over the stored body, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from . import metrics
from .config import Settings, get_settings
from .logs import bind as bind_log_context
from .net import (
    EgressGuard,
    EgressPolicy,
    UnresolvableDestination,
    UnsafeDestination,
    address_problem,
    check_destination,
    check_url_syntax,
    guarded_client,
)
from .storage import LinkSigner, link_signer
from .store.base import Delivery, Store
from .store.common import dumps

log = logging.getLogger("reelflow.webhooks")

def _version() -> str:
    try:
        return metadata.version("reelflow")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


USER_AGENT = f"reelflow-webhooks/{_version()}"
ERROR_BODY_CHARS = 200
REQUEST_BODY_CHARS = 16384
RESPONSE_BODY_CHARS = 2000
"""How much of a failing receiver's response body goes into the attempt's error text."""


# ---------------------------------------------------------------------------------------- signing
def _utc(at: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken to be UTC already)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def sign(secret: str, msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    return Webhook(secret).sign(msg_id, _utc(timestamp), body)


def headers_for(secret: str, msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """Every header of one attempt: a fresh timestamp (integer seconds) and the signature that covers it."""
    at = _utc(now or datetime.now(UTC))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": sign(secret, msg_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> dict[str, Any]:
    """For receivers: check a webhook's signature and timestamp (5 min tolerance) and return its parsed body.

    Raises WebhookVerificationError when the headers are missing or malformed, the timestamp is too old
    or too new, or no signature matches (a wrong secret, or a body changed on the way).
    """
    webhook = Webhook(secret)  # a malformed secret is the caller's configuration error, raised as such
    try:
        body = webhook.verify(payload, dict(headers.items()))
    except WebhookVerificationError:
        raise
    except ValueError as exc:  # undecodable bytes, a malformed signature header, a body that is not JSON
        raise WebhookVerificationError(f"malformed webhook: {exc}") from exc
    if not isinstance(body, dict):
        raise WebhookVerificationError("the webhook body is not a JSON object")
    return body


# ---------------------------------------------------------------------------------------- destinations
# Judging destinations is the egress guard's work (`reelflow.net`, which every outbound fetch goes
# through); UnsafeDestination, UnresolvableDestination, address_problem, check_url_syntax and
# check_destination stay importable from here.


# ---------------------------------------------------------------------------------------- bodies
def event_body(payload: str) -> dict[str, Any]:
    """A stored webhook body as it is sent, before its links are signed: `created_at` (ISO 8601, like every
    event's) beside `timestamp`, the same instant."""
    body: dict[str, Any] = json.loads(payload)
    if "created_at" not in body and isinstance(body.get("timestamp"), str):
        body["created_at"] = body["timestamp"]
    return body


async def outgoing_body(delivery: Delivery, signer: LinkSigner, store: Store) -> str:
    """What one attempt sends: the stored body with `created_at` and its links to the tenant's artifacts signed
    now (every attempt gets links that open for REELFLOW_LINK_SECONDS from its own time)."""
    body = event_body(delivery.payload)
    signed = await signer.sign_links(body, lambda keys: store.owned_artifacts(delivery.tenant, keys))
    return dumps(signed)


# ---------------------------------------------------------------------------------------- delivery
def backoff_schedule(
    retry: int, *, base_s: float = 5.0, max_s: float = 3600.0, rng: random.Random | None = None
) -> float:
    """Seconds before retry number `retry` (1-based): `base_s * 2**(retry-1)`, capped at `max_s`, times a
    jitter factor drawn from [0.5, 1] — so the first retry comes within `base_s`, and retries of many
    deliveries that failed together spread out."""
    ceiling = min(max_s, base_s * 2.0 ** min(max(retry, 1) - 1, 60))
    return (rng or random).uniform(0.5, 1.0) * ceiling


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


@dataclass
class AttemptResult:
    """How one HTTP attempt went, as recorded in the Store."""

    delivered: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    give_up: bool = False  # never worth retrying (an unsafe destination)
    request_body: str | None = None
    """What was sent (cut after REQUEST_BODY_CHARS), kept with the attempt for the deliveries page."""
    response_body: str | None = None
    """The start of the answer (RESPONSE_BODY_CHARS at most)."""


class WebhookDispatcher:
    """Sends due webhook deliveries from a Store until `stop()`; safe to run many against one database.

    Each delivery is leased (`lease_s`) while its attempt runs, so a dispatcher that dies mid-send only
    delays it: another one takes it over when the lease expires, with the same `webhook-id`.
    """

    def __init__(
        self,
        store: Store,
        *,
        settings: Settings | None = None,
        owner: str,
        client: httpx.AsyncClient | None = None,
        batch: int = 50,
        lease_s: float = 60.0,
        poll_s: float = 0.5,
        timeout_s: float = 30.0,
        base_delay_s: float = 5.0,
        max_delay_s: float = 3600.0,
        give_up_after_s: float = 25 * 3600.0,
        max_in_flight: int = 50,
        rng: random.Random | None = None,
        egress: EgressGuard | None = None,
        executions: Collection[str] | None = None,
    ) -> None:
        if lease_s <= timeout_s:
            raise ValueError(f"lease_s ({lease_s:g}) must exceed timeout_s ({timeout_s:g}): an attempt holds the lease")
        self.store = store
        self.settings = settings or get_settings()
        self.owner = owner
        self.executions = set(executions) if executions is not None else None
        """Deliver only these executions' webhooks (the embedded worker of a wait); None: all."""
        self.batch = max(1, batch)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.give_up_after_s = give_up_after_s
        self.max_in_flight = max(1, max_in_flight)
        self.attempts = 0
        self.delivered = 0
        self._client = client
        self._egress = egress
        """The guard the dispatcher's own client connects through; by default the settings' policy."""
        self._rng = rng or random.Random()
        self._stopping = False
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._signer: LinkSigner | None = None

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop claiming; `run()` returns once the attempts under way have finished."""
        self._stopping = True
        self._wake.set()

    def notify(self) -> None:
        """A delivery may have just been queued: look now instead of at the next poll."""
        self._wake.set()

    async def signer(self) -> LinkSigner:
        """The artifact link signer, the API's (same secret, from REELFLOW_LINK_SECRET or the database)."""
        if self._signer is None:
            s = self.settings
            self._signer = await link_signer(self.store, s.public_url, s.link_seconds, s.link_secret)
        return self._signer

    @property
    def egress(self) -> EgressGuard:
        if self._egress is None:
            self._egress = EgressGuard(EgressPolicy.from_settings(self.settings))
        return self._egress

    def make_client(self) -> httpx.AsyncClient:
        """The dispatcher's own client: every connection made through the egress guard (the address it
        connects to is the one judged public), redirects never followed."""
        return guarded_client(
            self.egress,
            follow_redirects=False,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=20),
        )

    async def run(self) -> None:
        """Claim due deliveries and send them concurrently until `stop()`. The client (its TLS context: 13-34 ms
        of CPU) is made with the first delivery: a worker whose executions subscribe to nothing never needs it."""
        client = self._client
        try:
            while not self._stopping:
                self._wake.clear()
                want = min(self.batch, self.max_in_flight - len(self._in_flight))
                claimed: list[Delivery] = []
                if want > 0:
                    try:
                        claimed = await self.store.claim_deliveries(
                            self.owner, want, self.lease_s, executions=self.executions
                        )
                    except Exception:  # the database may be briefly unavailable; look again at the next poll
                        log.exception("webhook dispatcher %s: claiming deliveries failed", self.owner)
                if claimed and client is None:
                    client = self.make_client()
                for delivery in claimed:
                    assert client is not None  # made above
                    task = asyncio.create_task(self._deliver(delivery, client), name=f"webhook-{delivery.id}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._finished)
                if claimed and len(claimed) == want:
                    await asyncio.sleep(0)  # more may be due: claim again at once
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))
        finally:
            for task in list(self._in_flight):  # only when run() itself is cancelled: leases expire, others retry
                task.cancel()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))
            if self._client is None and client is not None:
                await client.aclose()

    def _finished(self, task: asyncio.Task[None]) -> None:
        full = len(self._in_flight) >= self.max_in_flight
        self._in_flight.discard(task)
        if full:
            self._wake.set()  # a slot is free again

    # ------------------------------------------------------------------ one delivery
    def next_attempt_at(self, created_at: float, retry: int, now: float) -> float | None:
        """When to try again after a failed attempt (`retry` numbers the coming retry, 1-based), or None to
        give up: retries go on until `give_up_after_s` has passed since the delivery was created."""
        if now - created_at >= self.give_up_after_s:
            return None
        return now + backoff_schedule(retry, base_s=self.base_delay_s, max_s=self.max_delay_s, rng=self._rng)

    async def _deliver(self, delivery: Delivery, client: httpx.AsyncClient) -> None:
        bind_log_context(execution_id=delivery.execution_id)  # runs in its own task
        try:
            result = await self.attempt(delivery, client)
        except Exception as exc:  # a bug of ours: record it and retry like any failure
            log.exception("webhook %s: unexpected error", delivery.id)
            result = AttemptResult(False, error=f"internal error: {type(exc).__name__}: {exc}")
        next_at: float | None = None
        error = result.error
        if not result.delivered and not result.give_up:
            window_start = max(delivery.created_at, delivery.retry_from or 0.0)  # a redelivery starts a new window
            next_at = self.next_attempt_at(window_start, delivery.attempts + 1, time.time())
            if next_at is None:
                error = f"{error}; gave up after {_duration(self.give_up_after_s)} of retries"
        self.attempts += 1
        self.delivered += result.delivered
        metrics.webhook_attempt(result.delivered, retrying=next_at is not None)
        try:
            await self.store.record_delivery_attempt(
                delivery.id,
                self.owner,
                delivered=result.delivered,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=error,
                next_attempt_at=next_at,
                request_body=result.request_body,
                response_body=result.response_body,
            )
        except Exception:
            log.exception("webhook %s: recording the attempt failed; it will be tried again", delivery.id)
            return
        what = f"webhook {delivery.id} ({delivery.event_type}) to {delivery.url}"
        if result.delivered:
            log.info("%s delivered: HTTP %s in %.0f ms", what, result.status_code, result.latency_ms or 0.0)
        elif next_at is not None:
            log.warning("%s failed (%s); retry in %.1f s", what, error, next_at - time.time())
        else:
            log.warning("%s failed for good: %s", what, error)

    async def attempt(self, delivery: Delivery, client: httpx.AsyncClient) -> AttemptResult:
        """Send one delivery once: check the URL, sign, POST without following redirects. The addresses
        are judged where the connection is made (the egress guard of `make_client`), after one lookup."""
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return round((time.perf_counter() - started) * 1000, 1)

        try:
            async with asyncio.timeout(self.timeout_s):
                problem = check_url_syntax(delivery.url, policy=self.egress.policy)
                if problem is not None:  # not http(s), or a literal address that is not public: no lookup
                    return AttemptResult(False, error=f"not sent: {problem}", give_up=True)
                body = await outgoing_body(delivery, await self.signer(), self.store)
                request = client.build_request(
                    "POST", delivery.url, content=body.encode(), headers=headers_for(delivery.secret, delivery.id, body)
                )
                started = time.perf_counter()
                response = await client.send(request, stream=True, follow_redirects=False)
        except TimeoutError:
            return AttemptResult(False, latency_ms=elapsed_ms(), error=f"timed out after {self.timeout_s:g} s")
        except UnresolvableDestination as exc:  # maybe temporary: retried
            return AttemptResult(False, error=str(exc))
        except UnsafeDestination as exc:  # the guard refused the connection: nothing was sent
            return AttemptResult(False, error=f"not sent: {exc}", give_up=True)
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return AttemptResult(False, latency_ms=elapsed_ms(), error=_describe(exc))
        latency = elapsed_ms()
        try:
            answer = await _read_text(response)
        finally:
            await response.aclose()
        code = response.status_code
        sent = body if len(body) <= REQUEST_BODY_CHARS else body[:REQUEST_BODY_CHARS] + "…"
        answered = answer[:RESPONSE_BODY_CHARS] + ("…" if len(answer) > RESPONSE_BODY_CHARS else "")
        if 200 <= code < 300:
            return AttemptResult(True, code, latency, request_body=sent, response_body=answered)
        if 300 <= code < 400:
            location = response.headers.get("location")
            target = str(response.url.join(location)) if location else "(no Location header)"
            error = f"HTTP {code}: redirect to {target} not followed"
            return AttemptResult(False, code, latency, error, request_body=sent, response_body=answered)
        snippet = " ".join(answer.split())
        snippet = snippet[:ERROR_BODY_CHARS] + ("…" if len(snippet) > ERROR_BODY_CHARS else "")
        error = f"HTTP {code}: {snippet}" if snippet else f"HTTP {code}"
        return AttemptResult(False, code, latency, error, request_body=sent, response_body=answered)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _read_text(response: httpx.Response) -> str:
    """The start of a response body as text (a few times RESPONSE_BODY_CHARS bytes at most, read for 2 s at
    most), for the attempt's record; never fails."""
    data = bytearray()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) >= 4 * RESPONSE_BODY_CHARS:
                    break
    return data.decode("utf-8", "replace")


__all__ = [
    "USER_AGENT",
    "AttemptResult",
    "UnresolvableDestination",
    "UnsafeDestination",
    "WebhookDispatcher",
    "WebhookVerificationError",
    "address_problem",
    "backoff_schedule",
    "check_destination",
    "check_url_syntax",
    "event_body",
    "headers_for",
    "outgoing_body",
    "sign",
    "verify_webhook",
]
