"""Outbound webhooks over real HTTP on 127.0.0.1: signing, retries, redirects, subscriptions, durability,
destination safety, redelivery, giving up, and verification on the receiver's side."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from conftest import WorkerFactory, sim_job
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.store.base import Delivery
from reelflow.store.sqlite import SQLiteStore
from reelflow.webhooks import (
    USER_AGENT,
    UnsafeDestination,
    WebhookDispatcher,
    WebhookVerificationError,
    backoff_schedule,
    check_destination,
    check_url_syntax,
    headers_for,
    verify_webhook,
)

# ---------------------------------------------------------------------------------------- a receiver


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request; it can fail, redirect, or be down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[Hit] = []
        self.fail_first = 0  # answer 500 to this many requests first
        self.always_status: int | None = None
        self.redirect_to: str | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.hits.append(
                        Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    n = len(receiver.hits)
                if receiver.redirect_to is not None and self.path == "/hook":
                    self.send_response(302)
                    self.send_header("location", receiver.redirect_to)
                elif n <= receiver.fail_first:
                    self.send_response(500)
                else:
                    self.send_response(receiver.always_status or 200)
                reply = b'{"ok": false}' if receiver.always_status or n <= receiver.fail_first else b"{}"
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def at(self, path: str = "/hook") -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receivers listen on loopback: allow private destinations here (one test turns it off again)."""
    return settings.model_copy(update={"allow_private_urls": True})


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def deliveries(store: SQLiteStore, execution_id: str) -> list[dict[str, Any]]:
    """The execution's deliveries as the API's JSON."""
    return [d.model_dump(mode="json") for d in (await store.list_deliveries("default", execution_id)).data]


async def finished_execution(
    engine: Engine, running_worker: WorkerFactory, url: str, webhook_events: list[str] | None = None
) -> str:
    """Run a one-job execution to its end with a worker that does not deliver webhooks; return its id."""
    plan: dict[str, Any] = {"jobs": [sim_job("clip", latency_s=0)], "webhook": url}
    if webhook_events is not None:
        plan["options"] = {"webhook_events": webhook_events}
    eid = await engine.submit(plan)
    async with running_worker(deliver_webhooks=False):
        state = await engine.wait(eid, timeout=10, poll_s=0.05)
    assert state["status"] == "succeeded"
    return eid


@pytest.fixture
async def dispatch(store: SQLiteStore, settings: Settings) -> AsyncIterator[Callable[..., WebhookDispatcher]]:
    """`dispatch(**opts)` starts a fast dispatcher in this event loop; all are stopped after the test."""
    running: list[tuple[WebhookDispatcher, asyncio.Task[None]]] = []

    def start(**opts: Any) -> WebhookDispatcher:
        opts = {"poll_s": 0.02, "base_delay_s": 0.1, "settings": settings, **opts}
        d = WebhookDispatcher(store, owner=f"test-{len(running)}", **opts)
        running.append((d, asyncio.create_task(d.run())))
        return d

    yield start
    for d, _ in running:
        d.stop()
    await asyncio.wait_for(asyncio.gather(*(t for _, t in running)), timeout=10)


# ---------------------------------------------------------------------------------------- end to end


async def test_a_succeeded_execution_sends_one_signed_event(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory, receiver: Receiver
) -> None:
    secret = await store.ensure_tenant("default")
    eid = await engine.submit({"jobs": [sim_job("clip", latency_s=0.05)], "webhook": receiver.url})
    async with running_worker():
        await engine.wait(eid, timeout=10, poll_s=0.05)
        await eventually(lambda: len(receiver.at()) >= 1, what="the webhook")
        await eventually(lambda: _status(store, eid, "delivered"), timeout=5, what="delivery recorded as delivered")
        await asyncio.sleep(0.6)  # more than one poll of the dispatcher: nothing else may come
    [hit] = receiver.at()
    event = Webhook(secret).verify(hit.body, hit.headers)
    assert event["type"] == "execution.succeeded"
    assert set(event) == {"type", "timestamp", "data", "created_at"}
    assert event["created_at"] == event["timestamp"]  # ISO 8601, as every event carries it
    assert event["data"]["id"] == eid
    assert event["data"]["status"] == "succeeded"
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["user-agent"] == USER_AGENT
    assert hit.headers["webhook-timestamp"].isdigit()
    assert abs(int(hit.headers["webhook-timestamp"]) - hit.at) < 5
    [delivery] = await deliveries(store, eid)
    assert hit.headers["webhook-id"] == delivery["id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert delivery["attempts"][0]["latency_ms"] is not None and delivery["attempts"][0]["error"] is None


async def _status(store: SQLiteStore, eid: str, status: str) -> bool:
    found = await deliveries(store, eid)
    return bool(found) and all(d["status"] == status for d in found)


async def test_failed_attempts_are_retried_with_backoff_under_one_webhook_id(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    dispatch: Callable[..., WebhookDispatcher],
) -> None:
    receiver.fail_first = 2
    secret = await store.ensure_tenant("default")
    eid = await finished_execution(engine, running_worker, receiver.url)
    dispatch(base_delay_s=0.1)
    await eventually(lambda: _status(store, eid, "delivered"), what="delivered after two failures")
    await asyncio.sleep(0.5)  # several polls and more than the backoff: no request after success
    hits = receiver.at()
    assert len(hits) == 3
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    for h in hits:
        Webhook(secret).verify(h.body, h.headers)
    assert hits[0].body == hits[1].body == hits[2].body
    first_gap, second_gap = hits[1].at - hits[0].at, hits[2].at - hits[1].at
    assert 0.05 <= first_gap < 2, first_gap  # retry 1 waits 0.05–0.1 s
    assert 0.1 <= second_gap < 2, second_gap  # retry 2 waits 0.1–0.2 s
    [delivery] = await deliveries(store, eid)
    assert delivery["id"] == hits[0].headers["webhook-id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    assert delivery["attempts"][0]["error"].startswith("HTTP 500")
    assert delivery["attempts"][2]["error"] is None
    assert delivery["delivered_at"] is not None
    # each attempt keeps what it sent and what came back (the deliveries page shows both)
    assert [a["request_body"] for a in delivery["attempts"]] == [h.body.decode() for h in hits]
    assert [a["response_body"] for a in delivery["attempts"]] == ['{"ok": false}', '{"ok": false}', "{}"]


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    dispatch: Callable[..., WebhookDispatcher],
) -> None:
    elsewhere = f"http://127.0.0.1:{receiver.port}/elsewhere"
    receiver.redirect_to = elsewhere
    eid = await finished_execution(engine, running_worker, receiver.url)
    dispatch(base_delay_s=60)
    await eventually(lambda: _attempts(store, eid, 1), what="one attempt recorded")
    await asyncio.sleep(0.2)
    [delivery] = await deliveries(store, eid)
    assert delivery["status"] == "pending"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 302
    assert attempt["error"] == f"HTTP 302: redirect to {elsewhere} not followed"
    assert len(receiver.at("/hook")) == 1
    assert receiver.at("/elsewhere") == []


async def _attempts(store: SQLiteStore, eid: str, n: int) -> bool:
    found = await deliveries(store, eid)
    return bool(found) and sum(len(d["attempts"]) for d in found) >= n


@pytest.mark.parametrize(
    ("subscribed", "expected"),
    [
        (None, ["execution.succeeded"]),
        (["job.succeeded"], ["job.succeeded", "job.succeeded", "execution.succeeded"]),
    ],
)
async def test_job_events_are_sent_only_when_the_plan_asks(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    subscribed: list[str] | None,
    expected: list[str],
) -> None:
    plan: dict[str, Any] = {
        "jobs": [sim_job("a", latency_s=0), sim_job("b", latency_s=0, depends_on=["a"])],
        "webhook": receiver.url,
    }
    if subscribed is not None:
        plan["options"] = {"webhook_events": subscribed}
    eid = await engine.submit(plan)
    async with running_worker():
        await engine.wait(eid, timeout=10, poll_s=0.05)
        await eventually(lambda: len(receiver.at()) >= len(expected), what=f"{len(expected)} webhooks")
        await eventually(lambda: _status(store, eid, "delivered"), what="all delivered")
        await asyncio.sleep(0.3)
    events = [h.event for h in receiver.at()]
    assert sorted(e["type"] for e in events) == sorted(expected)
    job_events = [e for e in events if e["type"].startswith("job.")]
    assert sorted(e["data"]["event"]["job"] for e in job_events) == (["a", "b"] if job_events else [])
    assert all(e["data"]["id"] == eid for e in events)
    assert len({h.headers["webhook-id"] for h in receiver.at()}) == len(expected)
    assert len(await deliveries(store, eid)) == len(expected)


async def test_an_event_survives_a_worker_restart_and_keeps_its_webhook_id(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory
) -> None:
    receiver = Receiver()  # its port is chosen but nothing listens yet
    eid = await engine.submit({"jobs": [sim_job("clip", latency_s=0)], "webhook": receiver.url})
    async with running_worker():
        await engine.wait(eid, timeout=10, poll_s=0.05)
        await eventually(lambda: _attempts(store, eid, 1), what="a failed attempt")
    [before] = await deliveries(store, eid)
    assert before["status"] == "pending"
    assert before["attempts"][0]["status_code"] is None
    assert "ConnectError" in before["attempts"][0]["error"]
    receiver.start()
    try:
        async with running_worker():
            # the first retry is due 2.5–5 s after the failure (the default schedule)
            await eventually(lambda: len(receiver.at()) == 1, timeout=10, what="the event after the restart")
            await eventually(lambda: _status(store, eid, "delivered"), what="delivered")
    finally:
        receiver.stop()
    [hit] = receiver.hits
    assert hit.headers["webhook-id"] == before["id"]
    assert hit.event["data"]["id"] == eid
    [after] = await deliveries(store, eid)
    assert after["attempts"][-1]["status_code"] == 200
    assert len(after["attempts"]) == len(before["attempts"]) + 1


async def test_an_event_survives_a_sigkilled_worker_while_the_receiver_is_down(
    engine: Engine, store: SQLiteStore, running_worker: WorkerFactory, worker_env: dict[str, str], tmp_path: Any
) -> None:
    """The receiver is down, the worker process that ran the execution dies hard; the event still arrives."""
    receiver = Receiver()  # its port is chosen but nothing listens yet
    eid = await engine.submit({"jobs": [sim_job("clip", latency_s=0)], "webhook": receiver.url})
    log = (tmp_path / "victim.log").open("wb")
    victim = subprocess.Popen(
        [sys.executable, "-m", "reelflow.cli", "worker"],
        env=worker_env | {"REELFLOW_ALLOW_PRIVATE_URLS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await eventually(lambda: _attempts(store, eid, 1), timeout=20, what="a failed attempt by the victim")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert (await engine.get(eid)).status == "succeeded"
    [before] = await deliveries(store, eid)
    assert before["status"] == "pending" and "ConnectError" in before["attempts"][0]["error"]
    receiver.start()
    try:
        async with running_worker():
            await eventually(lambda: _status(store, eid, "delivered"), timeout=15, what="delivered after the crash")
    finally:
        receiver.stop()
    assert [h.headers["webhook-id"] for h in receiver.hits] == [before["id"]]
    assert receiver.hits[0].event["type"] == "execution.succeeded"


# ---------------------------------------------------------------------------------------- destinations


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[::1]/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "is a loopback address (127.0.0.1 embedded in IPv6)"),
        ("http://0.0.0.0:8000/", "0.0.0.0 is an unspecified address"),
        ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
        ("http://127.1/", "127.0.0.1 is a loopback address"),
        ("http://localhost/", "localhost resolves to "),
        ("ftp://example.com/", "scheme 'ftp' is not http or https"),
        ("https:///nohost", "the URL has no host"),
    ],
)
async def test_unsafe_destinations_are_refused_with_the_reason(url: str, named: str) -> None:
    with pytest.raises(UnsafeDestination) as refused:
        await check_destination(url, allow_private=False)
    message = str(refused.value)
    assert named in message
    assert repr(url) in message
    if "resolves" in named:
        assert "127.0.0.1, a loopback address" in message or "::1, a loopback address" in message
    allowed = "ftp" not in url and "nohost" not in url
    if allowed:
        await check_destination(url, allow_private=True)  # raises nothing
    else:
        with pytest.raises(UnsafeDestination):
            await check_destination(url, allow_private=True)


async def test_a_public_address_is_allowed() -> None:
    await check_destination("https://93.184.216.34:8443/hooks?x=1", allow_private=False)
    assert check_url_syntax("https://hooks.example.com/x") is None


def test_the_syntax_check_refuses_literal_private_hosts_without_dns() -> None:
    assert check_url_syntax("http://10.1.2.3/") == (
        "'http://10.1.2.3/' is not allowed: 10.1.2.3 is a private address"
        " (set REELFLOW_ALLOW_PRIVATE_URLS=1 to allow private destinations)"
    )
    assert "loopback host name" in (check_url_syntax("http://api.localhost:9000/") or "")
    assert "scheme 'file'" in (check_url_syntax("file:///etc/passwd") or "")
    assert "not a valid URL" in (check_url_syntax("http://example.com:99999/") or "")
    assert check_url_syntax("http://10.1.2.3/", allow_private=True) is None
    assert check_url_syntax("http://localhost:9000/", allow_private=True) is None


async def test_a_private_destination_is_given_up_at_send_time_and_nothing_is_sent(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    settings: Settings,
    dispatch: Callable[..., WebhookDispatcher],
) -> None:
    eid = await finished_execution(engine, running_worker, receiver.url)
    dispatch(settings=settings.model_copy(update={"allow_private_urls": False}))
    await eventually(lambda: _status(store, eid, "failed"), what="the delivery given up")
    await asyncio.sleep(0.3)
    [delivery] = await deliveries(store, eid)
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"] == (
        f"not sent: {receiver.url!r} is not allowed: 127.0.0.1 is a loopback address"
        " (set REELFLOW_ALLOW_PRIVATE_URLS=1 to allow private destinations)"
    )
    assert receiver.hits == []


# ---------------------------------------------------------------------------------------- redelivery, giving up


async def test_redeliver_sends_the_same_event_again_with_the_same_id(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    dispatch: Callable[..., WebhookDispatcher],
) -> None:
    secret = await store.ensure_tenant("default")
    eid = await finished_execution(engine, running_worker, receiver.url)
    dispatch()
    await eventually(lambda: _status(store, eid, "delivered"), what="first delivery")
    [delivery] = await deliveries(store, eid)
    again = await store.redeliver(delivery["id"], "default")
    assert again.status == "pending"
    await eventually(lambda: len(receiver.at()) == 2, what="the redelivery")
    await eventually(lambda: _status(store, eid, "delivered"), what="delivered again")
    await asyncio.sleep(0.2)
    first, second = receiver.at()
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["id"]
    assert first.body == second.body
    for hit in (first, second):
        Webhook(secret).verify(hit.body, hit.headers)
    [after] = await deliveries(store, eid)
    assert [a["status_code"] for a in after["attempts"]] == [200, 200]


async def test_a_delivery_that_keeps_failing_is_given_up_after_the_window(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    dispatch: Callable[..., WebhookDispatcher],
) -> None:
    receiver.always_status = 503
    eid = await finished_execution(engine, running_worker, receiver.url)
    [pending] = await deliveries(store, eid)
    created = datetime.fromisoformat(pending["created_at"].replace("Z", "+00:00")).timestamp()
    dispatch(base_delay_s=0.05, max_delay_s=0.1, give_up_after_s=0.5)
    await eventually(lambda: _status(store, eid, "failed"), what="the delivery given up")
    await asyncio.sleep(0.3)
    [delivery] = await deliveries(store, eid)
    attempts = delivery["attempts"]
    assert len(attempts) >= 3
    assert len(receiver.at()) == len(attempts)  # nothing sent after giving up
    assert all(a["status_code"] == 503 for a in attempts)
    assert attempts[-1]["error"] == 'HTTP 503: {"ok": false}; gave up after 0.5 s of retries'
    assert all("gave up" not in a["error"] for a in attempts[:-1])
    last = datetime.fromisoformat(attempts[-1]["at"].replace("Z", "+00:00")).timestamp()
    assert last - created >= 0.5  # retried for the whole window
    assert delivery["next_attempt_at"] is None


def test_the_default_schedule_retries_for_at_least_a_day() -> None:
    d = WebhookDispatcher(cast(Any, None), owner="x", settings=cast(Any, None), rng=random.Random(7))
    created = now = 1_000_000.0
    retry = 0
    while (at := d.next_attempt_at(created, retry + 1, now)) is not None:
        retry += 1
        assert at > now
        now = at
    assert now - created >= 24 * 3600
    assert 25 <= retry <= 60  # about an hour apart once capped
    first = [backoff_schedule(1, rng=random.Random(i)) for i in range(200)]
    assert max(first) <= 5 and min(first) >= 2.5
    assert max(backoff_schedule(n, rng=random.Random(n)) for n in range(1, 100)) <= 3600
    assert backoff_schedule(10_000) <= 3600


# ---------------------------------------------------------------------------------------- verification


def test_verify_webhook_round_trip_and_tampering() -> None:
    from reelflow.store.common import new_webhook_secret

    secret = new_webhook_secret()
    body = json.dumps({"type": "execution.succeeded", "timestamp": "2030-01-01T00:00:00.000Z", "data": {"id": "x"}})
    headers = headers_for(secret, "msg_1", body)
    assert verify_webhook(body.encode(), headers, secret)["data"] == {"id": "x"}
    assert verify_webhook(body, {k.title(): v for k, v in headers.items()}, secret)["type"] == "execution.succeeded"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.replace('"x"', '"y"'), headers, secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, new_webhook_secret())
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, {**headers, "webhook-id": "msg_2"}, secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, {**headers, "webhook-signature": "garbage"}, secret)
    stale = headers_for(secret, "msg_1", body, now=datetime(2020, 1, 1, tzinfo=UTC))
    assert stale["webhook-timestamp"] == "1577836800"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, stale, secret)


async def test_a_caller_supplied_client_that_follows_redirects_still_does_not(
    store: SQLiteStore, settings: Settings
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/hook":
            return httpx.Response(307, headers={"location": "/moved"})
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True) as client:
        d = WebhookDispatcher(store, owner="x", settings=settings, client=client)
        delivery = Delivery(
            id="msg_1",
            execution_id="ex_1",
            tenant="default",
            url="https://hooks.example/hook",
            event_type="execution.succeeded",
            payload="{}",
            attempts=0,
            created_at=time.time(),
            secret=await store.ensure_tenant("default"),
        )
        result = await d.attempt(delivery, client)
    assert seen == ["https://hooks.example/hook"]
    assert not result.delivered
    assert result.error == "HTTP 307: redirect to https://hooks.example/moved not followed"


async def test_a_redelivery_after_the_window_gets_a_window_of_its_own(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    dispatch: Callable[..., WebhookDispatcher],
) -> None:
    receiver.always_status = 503
    eid = await finished_execution(engine, running_worker, receiver.url)
    dispatch(base_delay_s=0.05, max_delay_s=0.1, give_up_after_s=0.5)
    await eventually(lambda: _status(store, eid, "failed"), what="the delivery given up")
    [failed] = await deliveries(store, eid)
    given_up = len(failed["attempts"])
    await asyncio.sleep(0.6)  # the first window is long over
    await store.redeliver(failed["id"], "default")
    # retried again for a whole new window, not given up after one attempt
    await eventually(lambda: _status(store, eid, "failed"), what="the redelivery given up")
    [after] = await deliveries(store, eid)
    retried = after["attempts"][given_up:]
    assert len(retried) >= 3, retried
    assert all("gave up" not in a["error"] for a in retried[:-1])
    assert retried[-1]["error"].endswith("gave up after 0.5 s of retries")


async def test_the_client_is_made_with_the_first_delivery_and_not_before(
    engine: Engine,
    store: SQLiteStore,
    running_worker: WorkerFactory,
    receiver: Receiver,
    dispatch: Callable[..., WebhookDispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[httpx.AsyncClient] = []
    real = WebhookDispatcher.make_client

    def counted(self: WebhookDispatcher) -> httpx.AsyncClient:
        made.append(real(self))
        return made[-1]

    monkeypatch.setattr(WebhookDispatcher, "make_client", counted)
    dispatch()
    await asyncio.sleep(0.1)  # a few polls that find nothing: no client (its TLS context cost 13-34 ms)
    assert made == []
    await store.ensure_tenant("default")
    await finished_execution(engine, running_worker, receiver.url)
    await eventually(lambda: len(receiver.at()) >= 1, what="the webhook")
    assert len(made) == 1
