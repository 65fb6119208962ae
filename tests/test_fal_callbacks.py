"""fal's webhooks as callbacks (Ed25519 signatures checked against fal's JWKS), waiting that a callback
cuts short, and the provider-wide 429 gate — at the adapter level, against the fake fal."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request, Response

from fakes.fal import FakeFal
from fakes.runner import ThreadedServer
from reelflow.providers.base import (
    CallbackEvent,
    CallbackRejected,
    PermanentError,
    ProgressUpdate,
    Task,
    TransientError,
)
from reelflow.providers.fal import DEFAULT_JWKS_URL, JWKS_MAX_AGE_S, FalProvider

SCHNELL = "fal/fal-ai/flux/schnell"


@dataclass
class Sink:
    """Where the fake delivers webhooks: records each POST (headers, body, query)."""

    answer: int = 200
    received: list[tuple[dict[str, str], bytes, dict[str, list[str]]]] = field(default_factory=list)

    def __enter__(self) -> Sink:
        app = FastAPI()

        @app.post("/v1/providers/fal/callback")
        async def callback(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body(), parse_qs(request.url.query)))
            return Response(status_code=self.answer)

        self.runner = ThreadedServer(app, "sink").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()

    def url(self, job: str = "job1") -> str:
        return f"{self.runner.url}/v1/providers/fal/callback?execution=ex1&job={job}"

    async def next(self, timeout: float = 5.0) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while not self.received:
            assert time.monotonic() < deadline, "no webhook arrived"
            await asyncio.sleep(0.01)
        headers, body, _ = self.received.pop(0)
        return headers, body


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    with FakeFal(latency_s=0.2) as fake:
        yield fake


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


def provider_for(fal: FakeFal, **kw: Any) -> FalProvider:
    kw.setdefault("poll_initial_s", 0.02)
    kw.setdefault("poll_max_s", 0.1)
    return FalProvider(fal.key, fal.base_url, jwks_url=fal.jwks_url, **kw)


def task(tmp_path: Path, callback_url: str | None = None, job: str = "job1") -> Task:
    return Task("ex1", job, "generate-image", SCHNELL, {"prompt": "x"}, 1, tmp_path / job, callback_url=callback_url)


def webhook(
    fal: FakeFal, request_id: str = "0a1b2c3d", status: str = "OK", **sign: Any
) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"request_id": request_id, "gateway_request_id": request_id, "status": status}).encode()
    return fal.sign(body, request_id, **sign), body


def status_reads(fal: FakeFal, after: float = 0.0) -> int:
    return sum(1 for e in fal.log if e.route == "status" and e.t >= after)


def ignore(update: ProgressUpdate) -> None:
    return None


# --- signatures ------------------------------------------------------------------------------------


async def test_a_good_signature_is_accepted_and_names_the_bare_request_id(fal: FakeFal) -> None:
    provider = provider_for(fal)
    headers, body = webhook(fal, "req-42", "ERROR")
    event = await provider.verify_callback(headers, body)
    told = {"request_id": "req-42", "status": "ERROR", "error": None, "payload": None}
    assert event == CallbackEvent(provider_job_id="req-42", status="ERROR", outcome=told)
    # header names are matched case-insensitively (the API route hands over lower-cased ones)
    event = await provider.verify_callback({k.lower(): v for k, v in headers.items()}, body)
    assert event.provider_job_id == "req-42"
    [jwks] = [e for e in fal.log if e.route == "jwks"]
    assert jwks.authorization is None  # our FAL_KEY never goes to the JWKS URL


def tampered_cases() -> list[Any]:
    def body_changed(fal: FakeFal) -> tuple[dict[str, str], bytes]:
        headers, body = webhook(fal, status="ERROR")
        return headers, body.replace(b"ERROR", b"OK")

    def signature_flipped(fal: FakeFal) -> tuple[dict[str, str], bytes]:
        headers, body = webhook(fal)
        sig = bytearray(bytes.fromhex(headers["X-Fal-Webhook-Signature"]))
        sig[-1] ^= 0x80
        return {**headers, "X-Fal-Webhook-Signature": sig.hex()}, body

    def header_changed(name: str, value: str) -> Any:
        def make(fal: FakeFal) -> tuple[dict[str, str], bytes]:
            headers, body = webhook(fal)
            return {**headers, name: value}, body

        return make

    return [
        pytest.param(body_changed, "matches no key", id="tampered-body"),
        pytest.param(signature_flipped, "matches no key", id="flipped-signature"),
        pytest.param(lambda f: webhook(f, key=Ed25519PrivateKey.generate()), "matches no key", id="unknown-key"),
        pytest.param(header_changed("X-Fal-Webhook-User-Id", "someone-else"), "matches no key", id="other-user-id"),
        pytest.param(lambda f: webhook(f, timestamp=int(time.time()) - 400), "away", id="stale"),
        pytest.param(lambda f: webhook(f, timestamp=int(time.time()) + 400), "away", id="from-the-future"),
        pytest.param(header_changed("X-Fal-Webhook-Timestamp", "nan"), "unix seconds", id="timestamp-nan"),
        pytest.param(header_changed("X-Fal-Webhook-Signature", "zz" * 64), "hex", id="signature-not-hex"),
        pytest.param(header_changed("X-Fal-Webhook-Signature", "ab" * 32), "hex", id="signature-short"),
        pytest.param(header_changed("X-Fal-Webhook-Request-Id", "another"), "matches no key", id="other-request-id"),
    ]


@pytest.mark.parametrize(("make", "reason"), tampered_cases())
async def test_a_bad_callback_is_rejected(fal: FakeFal, make: Any, reason: str) -> None:
    headers, body = make(fal)
    with pytest.raises(CallbackRejected, match=reason):
        await provider_for(fal).verify_callback(headers, body)


async def test_a_timestamp_just_inside_five_minutes_is_accepted(fal: FakeFal) -> None:
    provider = provider_for(fal)
    for skew in (-290, 290):
        headers, body = webhook(fal, timestamp=int(time.time()) + skew)
        assert (await provider.verify_callback(headers, body)).status == "OK"


@pytest.mark.parametrize(
    "missing",
    ["X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp", "X-Fal-Webhook-Signature"],
)
async def test_a_missing_header_is_rejected(fal: FakeFal, missing: str) -> None:
    headers, body = webhook(fal)
    del headers[missing]
    with pytest.raises(CallbackRejected, match=missing.split("-")[-1]):
        await provider_for(fal).verify_callback(headers, body)
    with pytest.raises(CallbackRejected):
        await provider_for(fal).verify_callback({**headers, missing: "  "}, body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'["a list"]', "not a JSON object"),
        (b'{"request_id": "someone-elses", "status": "OK"}', "does not match"),
        (b'{"status": "OK"}', "does not match"),
        (b'{"request_id": "0a1b2c3d", "status": 7}', "not a string"),
    ],
)
async def test_a_signed_but_malformed_body_is_rejected(fal: FakeFal, body: bytes, reason: str) -> None:
    headers = fal.sign(body, "0a1b2c3d")
    with pytest.raises(CallbackRejected, match=reason):
        await provider_for(fal).verify_callback(headers, body)


# --- the JWKS ----------------------------------------------------------------------------------------


async def test_the_jwks_is_fetched_once_for_many_verifications(fal: FakeFal) -> None:
    provider = provider_for(fal)
    signed = [webhook(fal, f"req-{i}") for i in range(20)]
    events = await asyncio.gather(*(provider.verify_callback(h, b) for h, b in signed[:10]))
    for h, b in signed[10:]:
        events.append(await provider.verify_callback(h, b))
    assert [e.provider_job_id for e in events] == [f"req-{i}" for i in range(20)]
    assert fal.count("jwks") == 1


async def test_unknown_keys_refetch_the_jwks_at_most_once_a_minute(fal: FakeFal) -> None:
    provider = provider_for(fal)
    now = [1000.0]
    provider.jwks_clock = lambda: now[0]
    await provider.verify_callback(*webhook(fal))
    assert fal.count("jwks") == 1
    forged = webhook(fal, key=Ed25519PrivateKey.generate())
    with pytest.raises(CallbackRejected):
        await provider.verify_callback(*forged)
    assert fal.count("jwks") == 1  # the keys are seconds old: no refetch
    now[0] += 60
    for _ in range(5):  # a flood of forged callbacks within a minute costs one refetch
        with pytest.raises(CallbackRejected):
            await provider.verify_callback(*forged)
        now[0] += 1
    assert fal.count("jwks") == 2
    fal.rotate_key()  # fal rotates its key: the new one verifies after the next allowed refetch
    rotated = webhook(fal, "after-rotation")
    with pytest.raises(CallbackRejected):
        await provider.verify_callback(*rotated)  # still inside the minute: no fetch
    assert fal.count("jwks") == 2
    now[0] += 60
    assert (await provider.verify_callback(*rotated)).provider_job_id == "after-rotation"
    assert fal.count("jwks") == 3
    assert (await provider.verify_callback(*webhook(fal, "cached"))).provider_job_id == "cached"
    assert fal.count("jwks") == 3


async def test_cached_keys_are_fetched_again_after_a_day(fal: FakeFal) -> None:
    provider = provider_for(fal)
    now = [0.0]
    provider.jwks_clock = lambda: now[0]
    await provider.verify_callback(*webhook(fal))
    now[0] += JWKS_MAX_AGE_S - 1
    await provider.verify_callback(*webhook(fal))
    assert fal.count("jwks") == 1
    now[0] += 2
    await provider.verify_callback(*webhook(fal))
    assert fal.count("jwks") == 2
    # the JWKS endpoint failing after a day: the keys held so far still verify
    now[0] += JWKS_MAX_AGE_S + 1
    fal.fail_next("jwks", 1, 503)
    assert (await provider.verify_callback(*webhook(fal, "still-fine"))).provider_job_id == "still-fine"
    assert fal.count("jwks") == 3


async def test_an_unreachable_jwks_rejects_the_callback(fal: FakeFal) -> None:
    provider = provider_for(fal)
    fal.fail_next("jwks", 1, 500)
    with pytest.raises(CallbackRejected, match="matches no key"):
        await provider.verify_callback(*webhook(fal))
    assert fal.count("jwks") == 1


async def test_the_jwks_url_comes_from_the_environment_or_the_default(
    fal: FakeFal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REELFLOW_FAL_JWKS_URL", raising=False)
    assert FalProvider(fal.key, fal.base_url).jwks_url == DEFAULT_JWKS_URL
    monkeypatch.setenv("REELFLOW_FAL_JWKS_URL", fal.jwks_url)
    provider = FalProvider(fal.key, fal.base_url)
    assert provider.jwks_url == fal.jwks_url
    assert (await provider.verify_callback(*webhook(fal, "via-env"))).provider_job_id == "via-env"
    assert fal.count("jwks") == 1
    assert FalProvider(jwks_url="https://jwks.example/keys").jwks_url == "https://jwks.example/keys"


# --- submit and wait with callbacks -------------------------------------------------------------------


async def test_without_a_callback_url_submit_sends_no_webhook(fal: FakeFal, tmp_path: Path) -> None:
    provider = provider_for(fal)
    t = task(tmp_path)
    await provider.wait(t, await provider.submit(t), ignore)
    [submit] = [e for e in fal.log if e.route == "submit"]
    assert submit.query == {}
    assert fal.webhooks == [] and fal.webhooks_dropped == 0


async def test_a_webhook_arrives_verifies_and_its_outcome_finishes_without_asking_fal(
    fal: FakeFal, sink: Sink, tmp_path: Path
) -> None:
    provider = provider_for(fal, callback_poll_s=30)
    callback = sink.url()
    t = task(tmp_path, callback)
    pid = await provider.submit(t)
    [submit] = [e for e in fal.log if e.route == "submit"]
    assert submit.query == {"fal_webhook": callback}  # the whole URL, its own query intact
    waiting = asyncio.ensure_future(provider.wait(t, pid, ignore))
    headers, body = await sink.next()
    event = await provider.verify_callback(headers, body)
    assert event.provider_job_id == pid.split("/")[-1] and event.status == "OK"
    payload = json.loads(body)["payload"]
    assert payload["images"][0]["content_type"] == "image/png"
    assert event.outcome == {"request_id": event.provider_job_id, "status": "OK", "payload": payload}
    assert fal.webhooks_sent == 1 and fal.webhooks_failed == 0
    assert parse_qs(urlsplit(fal.webhooks[0].url).query) == {"execution": ["ex1"], "job": ["job1"]}
    woken_at = time.monotonic()
    t.callback_outcome = event.outcome  # what the worker does with a woken job's outcome
    t.wake.set()
    result = await asyncio.wait_for(waiting, 3)
    assert time.monotonic() - woken_at < 1.0
    # no look at all: the wait slept from the submit on (a webhook will come) and the webhook told the result
    assert status_reads(fal) == 0 and fal.count("result") == 0 and fal.count("submit") == 1
    assert result.fields == {"provider_id": pid, "seed": payload["seed"], "inference_time": None}
    assert [(o.url, o.content_type) for o in result.outputs] == [(payload["images"][0]["url"], "image/png")]


async def test_an_outcome_about_another_request_is_not_believed(fal: FakeFal, sink: Sink, tmp_path: Path) -> None:
    """A verified webhook of an earlier attempt (another request id), replayed to this job: the wait asks fal about
    its own request instead (once), and finishes from that."""
    provider = provider_for(fal, callback_poll_s=30)
    earlier = task(tmp_path, sink.url(), job="earlier")
    await provider.submit(earlier)
    stale = await provider.verify_callback(*await sink.next())
    assert stale.outcome is not None and stale.outcome["status"] == "OK"
    t = task(tmp_path, sink.url())
    pid = await provider.submit(t)
    await asyncio.sleep(0.4)  # its own work ends meanwhile
    before = status_reads(fal)
    t.callback_outcome = stale.outcome
    t.wake.set()
    result = await asyncio.wait_for(provider.wait(t, pid, ignore), 3)
    assert result.fields["provider_id"] == pid and result.fields["inference_time"] is not None
    assert status_reads(fal) - before == 1 and fal.count("result") == 1


@pytest.mark.parametrize(
    "body",
    [
        {"status": "OK", "payload": None, "payload_error": "payload too large"},
        {"status": "OK", "payload": {"seed": 1}},  # no output file in it
        {"status": "OK"},
        {"status": "IN_PROGRESS", "payload": {"images": [{"url": "https://x.example/1.png"}]}},
        {"status": None},
    ],
    ids=["payload-error", "no-output", "no-payload", "not-ended", "no-status"],
)
async def test_a_webhook_that_does_not_tell_a_result_carries_no_outcome(fal: FakeFal, body: dict[str, Any]) -> None:
    raw = json.dumps({"request_id": "req-7", **body}).encode()
    event = await provider_for(fal).verify_callback(fal.sign(raw, "req-7"), raw)
    assert event.provider_job_id == "req-7" and event.outcome is None


async def test_a_wake_cuts_a_long_pause_short_with_exactly_one_read(tmp_path: Path, sink: Sink) -> None:
    with FakeFal(latency_s=0.3, drop_webhooks=True) as fal:
        provider = provider_for(fal, callback_poll_s=60)
        t = task(tmp_path, sink.url())
        waiting = asyncio.ensure_future(provider.wait(t, await provider.submit(t), ignore))
        await asyncio.sleep(0.8)  # the work ends meanwhile; the wait sleeps on (60 s), since the submit
        assert not waiting.done() and status_reads(fal) == 0
        woken_at = time.monotonic()
        t.wake.set()
        result = await asyncio.wait_for(waiting, 3)
        assert time.monotonic() - woken_at < 1.0
        assert status_reads(fal, after=woken_at) == 1 and fal.count("result") == 1
        assert result.outputs
    assert fal.webhooks_dropped == 1 and fal.webhooks_sent == 0 and sink.received == []


async def test_a_failed_confirming_read_is_retried_soon_not_after_the_callback_interval(
    tmp_path: Path, sink: Sink
) -> None:
    with FakeFal(latency_s=0.2, drop_webhooks=True) as fal:
        provider = provider_for(fal, callback_poll_s=60)
        t = task(tmp_path, sink.url())
        waiting = asyncio.ensure_future(provider.wait(t, await provider.submit(t), ignore))
        await asyncio.sleep(0.5)
        fal.fail_next("status", 1, 503)
        woken_at = time.monotonic()
        t.wake.set()
        result = await asyncio.wait_for(waiting, 3)
        assert result.outputs and time.monotonic() - woken_at < 1.0
        assert status_reads(fal, after=woken_at) == 2


async def test_a_lost_webhook_is_covered_by_slow_polling(tmp_path: Path, sink: Sink) -> None:
    with FakeFal(latency_s=0.5, drop_webhooks=True) as fal:
        provider = provider_for(fal, callback_poll_s=0.4)
        t = task(tmp_path, sink.url())
        started = time.monotonic()
        result = await asyncio.wait_for(provider.wait(t, await provider.submit(t), ignore), 5)
        elapsed = time.monotonic() - started
    assert result.outputs and 0.4 <= elapsed < 2.0
    # looks every 0.4 s (not the 0.02 s fast schedule): at 0, 0.4 and 0.8 s
    assert 2 <= status_reads(fal) <= 4
    assert fal.webhooks_dropped == 1


async def test_an_error_webhook_verifies_and_the_wait_fails(tmp_path: Path, sink: Sink) -> None:
    with FakeFal(latency_s=0.2) as fal:
        fal.fail_requests(1, "flagged", "content_policy_violation")
        provider = provider_for(fal, callback_poll_s=30)
        t = task(tmp_path, sink.url())
        pid = await provider.submit(t)
        waiting = asyncio.ensure_future(provider.wait(t, pid, ignore))
        event = await provider.verify_callback(*await sink.next())
        assert event.provider_job_id == pid.split("/")[-1] and event.status == "ERROR"
        t.callback_outcome = event.outcome
        t.wake.set()
        told = r"^fal: Invalid status code: 422: flagged \(content_policy_violation\)$"
        with pytest.raises(PermanentError, match=told):
            await asyncio.wait_for(waiting, 3)
        assert status_reads(fal) == 0 and fal.count("result") == 0  # failed from the webhook's body alone
        # woken without the outcome, the wait asks fal, which says the same
        t = task(tmp_path, sink.url(), job="job2")
        fal.fail_requests(1, "flagged", "content_policy_violation")
        waiting = asyncio.ensure_future(provider.wait(t, await provider.submit(t), ignore))
        await sink.next()
        t.wake.set()
        with pytest.raises(PermanentError, match=r"flagged.*content_policy_violation"):
            await asyncio.wait_for(waiting, 3)
        assert status_reads(fal) == 1


@pytest.mark.parametrize("tamper", ["body", "signature", "key", "stale"])
async def test_a_tampered_delivered_webhook_is_rejected(tmp_path: Path, sink: Sink, tamper: str) -> None:
    with FakeFal(latency_s=0.1, tamper_webhooks=tamper) as fal:
        provider = provider_for(fal, callback_poll_s=30)
        t = task(tmp_path, sink.url())
        await provider.submit(t)
        headers, body = await sink.next()
        with pytest.raises(CallbackRejected):
            await provider.verify_callback(headers, body)


async def test_an_unreachable_receiver_is_counted(tmp_path: Path) -> None:
    with Sink(answer=503) as sink, FakeFal(latency_s=0.1, webhook_delay_s=0.1) as fal:
        provider = provider_for(fal, callback_poll_s=0.1)
        t = task(tmp_path, sink.url())
        await provider.wait(t, await provider.submit(t), ignore)
        await sink.next()
        deadline = time.monotonic() + 5
        while not fal.webhooks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    assert fal.webhooks_failed == 1 and fal.webhooks_sent == 0 and fal.webhooks[0].answer == 503


# --- one pooled client, one rate gate ----------------------------------------------------------------


async def test_every_request_goes_through_the_one_pooled_client(fal: FakeFal, tmp_path: Path) -> None:
    seen: list[str] = []

    async def count(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as client:
        provider = FalProvider(fal.key, fal.base_url, client=client, poll_initial_s=0.02, poll_max_s=0.1)
        first, second = task(tmp_path, job="a"), task(tmp_path, job="b")
        pids = [await provider.submit(first), await provider.submit(second)]
        await asyncio.gather(provider.wait(first, pids[0], ignore), provider.wait(second, pids[1], ignore))
        await provider.cancel(first, pids[0])
        assert provider.http() is client
    api = [e.path for e in fal.log if e.route != "jwks"]
    # the same requests, in any order: two jobs poll at once, so the fake may log them in another order
    assert sorted(seen) == sorted(api) and len(seen) >= 7


async def test_a_429_holds_the_other_jobs_requests_for_its_retry_after(tmp_path: Path) -> None:
    with FakeFal(latency_s=2.0) as fal:
        provider = provider_for(fal)
        first, second = task(tmp_path, job="a"), task(tmp_path, job="b")
        pids = [await provider.submit(first), await provider.submit(second)]
        waits = asyncio.gather(provider.wait(first, pids[0], ignore), provider.wait(second, pids[1], ignore))
        await asyncio.sleep(0.4)
        fal.fail_next("status", 1, 429, retry_after=0.6, detail="Rate limited")
        results = await asyncio.wait_for(waits, 10)
        assert all(r.outputs for r in results)
        log = list(fal.log)
    [throttled] = [e for e in log if e.answer == 429]
    hit = next(pid for pid in pids if throttled.path.endswith(pid.split("/")[-1] + "/status"))
    other = next(pid for pid in pids if pid != hit).split("/")[-1]
    in_flight = 0.05  # a request already on its way when the 429 was answered cannot be held back
    before = [e for e in log if other in e.path and e.t < throttled.t]
    after = [e for e in log if other in e.path and e.t > throttled.t + in_flight]
    assert len(before) >= 3  # the other job was polling fast (every 0.1 s at most) ...
    assert after and after[0].t - throttled.t >= 0.55  # ... and then waited out the Retry-After
    assert all(e.t - throttled.t >= 0.55 for e in log if e.t > throttled.t + in_flight)
    assert provider.gate.throttled == 1


async def test_x_fal_retryable_decides_over_the_status(fal: FakeFal, tmp_path: Path) -> None:
    provider = provider_for(fal)
    fal.fail_next("submit", 1, 400, detail="try again", retryable=True)
    with pytest.raises(TransientError, match="HTTP 400: try again"):
        await provider.submit(task(tmp_path))
    assert fal.count("submit") == 1
