"""The HTTP client (`reelflow.Client`, `AsyncClient`) and `reelflow --server`, against the real app under uvicorn."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

import reelflow
from apiserver import ApiServer
from reelflow import (
    APIConnectionError,
    AsyncClient,
    AsyncExecution,
    Client,
    Composition,
    ConflictError,
    Execution,
    NotFoundError,
    PayloadTooLarge,
    PlanRejected,
    Unauthorized,
    compose,
    generate_image,
    generate_video,
)
from reelflow.client import SSEDecoder
from reelflow.config import Settings
from reelflow.errors import NotFound
from reelflow.webhooks import WebhookVerificationError

CLI = [sys.executable, "-m", "reelflow.cli"]
TWO_JOBS = {
    "jobs": [
        {"id": "a", "type": "generate-image", "model": "sim/image", "params": {"latency_s": 0.1}},
        {"id": "b", "type": "generate-video", "model": "sim/video", "params": {"image": "$a", "latency_s": 0.1}},
    ]
}


@pytest.fixture
def server(settings: Settings) -> Iterator[ApiServer]:
    """The app with one embedded worker, on the test's database."""
    with ApiServer(settings, workers=1) as api:
        yield api


@pytest.fixture
def api_key(server: ApiServer) -> str:
    return server.new_key("acme").api_key


@pytest.fixture
def client(server: ApiServer, api_key: str) -> Iterator[Client]:
    with Client(server.url, api_key) as c:
        yield c


def count_requests(client: Client) -> list[str]:
    """Every request the client sends from now on, as 'METHOD /path'."""
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    client._async._http.event_hooks["request"].append(record)  # the blocking client runs the async one
    return seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------------ executions
def test_execute_and_wait_follow_the_event_stream_to_succeeded(client: Client) -> None:
    seen = count_requests(client)
    still = generate_image(model="sim/image", prompt="a sunset", latency_s=0.2)
    clip = generate_video(model="sim/video", image=still, latency_s=0.2)
    execution = client.execute(compose(clip, metadata={"order": 7}))
    assert type(execution) is Execution
    assert re.fullmatch(r"ex_[0-9a-f]+", execution.id)
    assert execution.state is None and not execution.done
    assert execution.wait(timeout=30) is execution
    assert execution.done
    assert execution.state is not None and execution.state["status"] == "succeeded"
    assert execution.state["metadata"] == {"order": 7}
    assert [j["status"] for j in execution.state["jobs"]] == ["succeeded", "succeeded"]
    assert execution.result is not None
    assert re.fullmatch(r"https://sim\.invalid/outputs/[0-9a-f]+\.mp4", execution.result.url)
    assert execution.result == execution.state["result"]
    # followed over the event stream: one stream, a state before and after it, no polling
    assert seen.count(f"GET /v1/executions/{execution.id}/events") == 1
    assert seen.count(f"GET /v1/executions/{execution.id}") == 2
    assert execution.status() == "succeeded"


def test_wait_with_progress_refreshes_the_state_on_events_and_shows_the_timeline(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = {"jobs": [dict(job, params={**job["params"], "latency_s": 0.6}) for job in TWO_JOBS["jobs"]]}
    execution = client.execute(slow)
    states: list[dict[str, Any]] = []
    final = client.wait(execution.id, timeout=30, on_update=states.append)
    assert final["status"] == "succeeded"
    assert states[0]["status"] in ("queued", "running") and states[-1] == final
    assert any(s["status"] == "running" for s in states), [s["status"] for s in states]
    assert len(states) >= 3

    again = client.retry(execution.id)
    again.wait(progress=True, timeout=30)
    shown = capsys.readouterr().out
    assert f"execution {again.id} — succeeded" in shown
    assert "generate-video" in shown and "succeeded" in shown


def test_a_result_url_points_to_the_stored_artifact(server: ApiServer, client: Client, api_key: str) -> None:
    execution = client.execute({"type": "generate-video", "model": "sim/video", "params": {"media": True}})
    execution.wait(timeout=60)
    assert execution.status() == "succeeded"
    assert execution.result is not None
    path = urlsplit(execution.result.url).path
    assert path.startswith("/v1/artifacts/") and path.endswith(".mp4")
    with server.client(api_key) as http:
        media = http.get(path)
    assert media.status_code == 200
    assert media.headers["content-type"] == "video/mp4"
    assert media.content[4:8] == b"ftyp"


def user_code(execute: Callable[[Composition], Execution]) -> dict[str, Any]:
    """What a user writes, whatever runs it; returns what the user would see."""
    flaky = compose(generate_video(model="sim/video", latency_s=0.05, fail_times=1))
    broken = compose(generate_video(model="sim/video", fail="permanent"))
    slow = compose(generate_video(model="sim/video", latency_s=0.3))
    seen: dict[str, Any] = {}

    ok = execute(flaky)
    seen["first status"] = ok.status() in ("queued", "running")  # a server's worker may have started it
    ok.wait(timeout=30)
    seen["ok"] = (ok.status(), ok.done, ok.state["jobs"][0]["attempts"] if ok.state else None, type(ok).__name__)

    bad = execute(broken)
    bad.wait(timeout=30)
    assert bad.state is not None
    seen["bad"] = (bad.state["status"], "fail: permanent" in (bad.state["error"] or ""), bad.result)
    again = bad.retry()
    again.wait(timeout=30)
    assert again.state is not None
    seen["retry"] = (again.state["status"], again.state["retry_of"] == bad.id, again.id != bad.id)

    stopped = execute(slow)
    stopped.cancel()
    stopped.wait(timeout=30)
    seen["canceled"] = stopped.status()
    resumed = stopped.resume()
    seen["resumed"] = resumed["status"] in ("queued", "running")
    stopped.wait(timeout=30)
    seen["after resume"] = stopped.status()
    return seen


def test_the_same_user_code_gives_the_same_statuses_locally_and_on_a_server(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    local_settings = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/local.db"})
    local = user_code(lambda c: c.execute(settings=local_settings))
    remote = user_code(lambda c: c.execute(client=client))
    assert remote == local
    assert local == {
        "first status": True,
        "ok": ("succeeded", True, 2, "Execution"),
        "bad": ("failed", True, None),
        "retry": ("failed", True, True),
        "canceled": "canceled",
        "resumed": True,
        "after resume": "succeeded",
    }


def test_list_follows_the_cursor_across_pages(client: Client) -> None:
    ids = [client.execute({"type": "generate-image", "model": "sim/image"}).id for _ in range(7)]
    for i in ids:
        client.wait(i, timeout=30)
    seen = count_requests(client)
    listed = list(client.list(limit=3))
    assert [e["id"] for e in listed] == ids[::-1]  # newest first
    assert seen == ["GET /v1/executions"] * 3
    assert {e["status"] for e in listed} == {"succeeded"}
    assert list(client.list(status="failed")) == []
    created = [datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")) for e in listed]
    cut = created[3] + (created[2] - created[3]) / 2
    assert [e["id"] for e in client.list(created_after=cut, limit=2)] == ids[::-1][:3]


def test_idempotency_key_same_body_same_execution_other_body_conflict(client: Client) -> None:
    first = client.execute(TWO_JOBS, idempotency_key="order-1234")
    assert client.execute(TWO_JOBS, idempotency_key="order-1234").id == first.id
    assert client.execute(TWO_JOBS, idempotency_key="order-5678").id != first.id
    other = {"type": "generate-image", "model": "sim/image"}
    with pytest.raises(ConflictError) as caught:
        client.execute(other, idempotency_key="order-1234")
    assert caught.value.status == 409
    assert caught.value.title == "Idempotency-Key reused"
    assert len(list(client.list())) == 2


def test_execute_with_a_webhook_delivers_a_signed_final_state(settings: Settings) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.rfile.read(int(self.headers["content-length"])), dict(self.headers.items())))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        loopback_ok = settings.model_copy(update={"allow_private_urls": True})
        with ApiServer(loopback_ok, workers=1, deliver_webhooks=True) as api:
            key = api.new_key("acme")
            with Client(api.url, key.api_key) as client:
                step = generate_video(model="sim/video", latency_s=0.05)
                execution = client.execute(step, webhook=f"http://127.0.0.1:{hook.server_port}/hook")
                execution.wait(timeout=30)
                deadline = time.monotonic() + 20
                while not received and time.monotonic() < deadline:
                    time.sleep(0.05)
    finally:
        hook.shutdown()
    assert received, "no webhook arrived"
    body, headers = received[0]
    event = reelflow.verify_webhook(body, headers, key.webhook_secret)
    assert event["type"] == "execution.succeeded"
    assert event["data"]["id"] == execution.id and event["data"]["status"] == "succeeded"
    with pytest.raises(WebhookVerificationError):
        reelflow.verify_webhook(body.replace(b"succeeded", b"failed"), headers, key.webhook_secret)


# ------------------------------------------------------------------------------------------ events
def test_events_yield_every_event_in_order_and_resume_after_last_event_id(
    server: ApiServer, client: Client
) -> None:
    execution = client.execute(TWO_JOBS)
    events = list(client.events(execution.id))
    stored = server.query("SELECT seq, type FROM events WHERE execution_id = ? ORDER BY seq", execution.id)
    assert [(e["seq"], e["type"]) for e in events] == stored
    assert events[0]["type"] == "execution.created" and events[-1]["type"] == "execution.succeeded"
    assert all(set(e) == {"seq", "type", "job", "data", "created_at", "created_at_unix"} for e in events)
    assert [e["type"] for e in events if e["job"] == "b"][-1] == "job.succeeded"
    cut = events[3]["seq"]
    assert list(client.events(execution.id, last_event_id=cut)) == events[4:]
    assert list(client.events(execution.id, last_event_id=events[-1]["seq"])) == []  # over: ends at once
    with pytest.raises(NotFoundError):
        list(client.events("ex_unknown"))


class CuttingProxy:
    """A TCP proxy that drops the first event stream right after its first event, mid-response."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stream_requests: list[str] = []
        self._cut_done = False
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._open += [conn, upstream]
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                conn.close()
                upstream.close()
                return
            head += chunk
        upstream.sendall(head)
        text = head.decode("latin-1")
        cut = "/events" in text.split("\r\n", 1)[0] and not self._cut_done
        if "/events" in text.split("\r\n", 1)[0]:
            self.stream_requests.append(text)
        if cut:
            self._cut_done = True
        threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()
        seen = b""
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                if cut:
                    seen += chunk
                    m = re.search(rb"data: [^\n]*\n\n", seen)
                    if m:
                        conn.sendall(chunk[: len(chunk) - (len(seen) - m.end())])
                        break
                conn.sendall(chunk)
        for s in (conn, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)

    def close(self) -> None:
        self.listener.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()


def test_events_reconnect_with_last_event_id_when_the_stream_drops(server: ApiServer, api_key: str) -> None:
    proxy = CuttingProxy(server.port)
    try:
        with Client(server.url, api_key) as direct, Client(f"http://127.0.0.1:{proxy.port}", api_key) as via:
            execution = direct.execute(TWO_JOBS)
            events = list(via.events(execution.id))
            expected = list(direct.events(execution.id))
    finally:
        proxy.close()
    assert [e["seq"] for e in events] == [e["seq"] for e in expected]  # each once, in order
    assert events == expected and events[-1]["type"] == "execution.succeeded"
    assert len(proxy.stream_requests) == 2
    assert "last-event-id" not in proxy.stream_requests[0].lower()
    assert f"last-event-id: {events[0]['seq']}\r\n" in proxy.stream_requests[1].lower()


def test_the_sse_decoder_handles_split_lines_comments_and_crlf() -> None:
    decoder = SSEDecoder()
    stream = b"retry: 1500\r\n\r\n: keep-alive\n\n"
    stream += b'id: 7\nevent: job.progress\ndata: {"seq":7,"type":"job.progress"}\r\n\r\n'
    stream += b"id: 8\ndata: plain\ndata: text\n\n"
    out: list[dict[str, Any]] = []
    for i in range(len(stream)):  # one byte at a time: every split point
        out += decoder.feed(stream[i : i + 1])
    assert out == [
        {"seq": 7, "type": "job.progress"},
        {"seq": 8, "type": "message", "job": None, "data": "plain\ntext", "created_at": None},
    ]
    assert decoder.retry_s == 1.5 and decoder.last_id == "8"


def test_wait_falls_back_to_polling_when_the_event_stream_is_unavailable(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        raise APIConnectionError("no event stream here")
        yield {}

    monkeypatch.setattr(client._async, "_events", unavailable)
    seen = count_requests(client)
    execution = client.execute({"type": "generate-video", "model": "sim/video", "params": {"latency_s": 0.8}})
    assert execution.wait(timeout=30).status() == "succeeded"
    assert seen.count(f"GET /v1/executions/{execution.id}") >= 3  # polled


def test_on_update_runs_in_the_calling_thread_and_may_call_the_client(client: Client) -> None:
    """The blocking client runs the async one on a loop of its own; the states come back to this thread."""
    execution = client.execute(TWO_JOBS)
    seen: list[tuple[bool, str]] = []

    def on_update(state: dict[str, Any]) -> None:
        seen.append((threading.current_thread() is threading.main_thread(), client.get(state["id"])["id"]))

    assert client.wait(execution.id, timeout=30, on_update=on_update)["status"] == "succeeded"
    assert seen and set(seen) == {(True, execution.id)}


async def test_the_blocking_client_works_inside_a_running_event_loop(server: ApiServer, api_key: str) -> None:
    with Client(server.url, api_key) as blocking:
        execution = blocking.execute(TWO_JOBS)
        assert execution.wait(timeout=30).status() == "succeeded"
        assert [e["type"] for e in blocking.events(execution.id)][-1] == "execution.succeeded"
    with pytest.raises(RuntimeError, match="closed"):
        blocking.get(execution.id)


def test_wait_timeout_raises_timeout_error(client: Client) -> None:
    execution = client.execute({"type": "generate-video", "model": "sim/video", "params": {"latency_s": 30}})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"execution {execution.id} still"):
        execution.wait(timeout=0.5)
    assert time.monotonic() - started < 5
    assert execution.cancel()["id"] == execution.id


# ------------------------------------------------------------------------------------------ errors
def test_each_error_class_from_real_answers(server: ApiServer, client: Client, api_key: str) -> None:
    with Client(server.url, "rf_000000000000_" + "x" * 30) as bad_key, pytest.raises(Unauthorized) as no:
        bad_key.get("ex_anything")
    assert no.value.status == 401 and no.value.detail == "invalid or revoked API key"
    with Client(server.url, api_key="") as no_key, pytest.raises(Unauthorized, match="missing Authorization"):
        list(no_key.list())

    with pytest.raises(NotFoundError) as missing:
        client.get("ex_unknown")
    assert missing.value.status == 404 and "ex_unknown" in missing.value.detail
    assert isinstance(missing.value, NotFound)  # the same `except` as locally
    with pytest.raises(NotFoundError):
        client.cancel("ex_unknown")

    bad = {"jobs": [{"id": "clip", "type": "generate-video", "model": "local/video",
                     "params": {"prompt": "x", "duration": 90}}]}
    with pytest.raises(PlanRejected) as rejected:
        client.execute(bad)
    assert rejected.value.status == 422 and rejected.value.title == "Invalid plan"
    assert rejected.value.errors == [
        {"loc": ["jobs", 0, "params", "duration"], "msg": "job 'clip': duration must be at most 60 (got 90)"}
    ]
    assert isinstance(rejected.value, reelflow.BadRequest) and isinstance(rejected.value, reelflow.APIError)

    running = client.execute({"type": "generate-video", "model": "sim/video", "params": {"latency_s": 30}})
    for event in client.events(running.id):
        if event["type"] == "execution.running":
            break
    with pytest.raises(ConflictError, match="only a finished execution can be resumed") as conflict:
        running.resume()
    assert conflict.value.status == 409
    running.cancel()

    huge = {"type": "generate-image", "model": "sim/image", "params": {"prompt": "x" * 1_100_000}}
    with pytest.raises(PayloadTooLarge) as too_big:
        client.execute(huge)
    assert too_big.value.status == 413 and "1000000 bytes" in too_big.value.detail
    assert server.counts()["executions"] == 1


def test_a_server_that_is_down_raises_api_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Client(url, "rf_key", timeout=5) as down:
        for call in (lambda: down.get("ex_1"), lambda: down.execute(TWO_JOBS), lambda: list(down.events("ex_1"))):
            with pytest.raises(APIConnectionError, match=f"cannot reach the reelflow server at {url}") as caught:
                call()
            assert isinstance(caught.value, ConnectionError)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="http"):
        Client("localhost:8000")


def test_the_api_key_defaults_to_the_environment(
    server: ApiServer, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REELFLOW_API_KEY", api_key)
    with Client(server.url + "/v1/") as c:
        assert c.models()[0]["id"] == "local/image"
        assert c.estimate(compose(generate_video(model="sim/video", latency_s=2, cost_usd=0.5)))["cost_usd"] == 0.5


# ---------------------------------------------------------------------------------------- async
async def test_the_async_client(server: ApiServer, api_key: str) -> None:
    async with AsyncClient(server.url, api_key) as client:
        step = generate_video(model="sim/video", latency_s=0.05, fail_times=1)
        execution = await compose(step).execute_async(client=client)
        assert type(execution) is AsyncExecution
        await execution.wait(timeout=30)
        assert execution.done and await execution.status() == "succeeded"
        assert execution.state is not None and execution.state["jobs"][0]["attempts"] == 2
        events = [e async for e in client.events(execution.id)]
        assert events[0]["type"] == "execution.created" and events[-1]["type"] == "execution.succeeded"
        assert [e async for e in client.events(execution.id, last_event_id=events[1]["seq"])] == events[2:]
        again = await execution.retry()
        await again.wait(timeout=30)
        assert again.state is not None and again.state["retry_of"] == execution.id
        assert [e["id"] async for e in client.list(limit=1)] == [again.id, execution.id]
        with pytest.raises(NotFoundError):
            await client.get("ex_unknown")
        with pytest.raises(ConflictError):
            await execution.resume()
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", "rf_key") as down:
        with pytest.raises(APIConnectionError):
            await down.get("ex_1")


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def cli(tmp_path: Path, worker_env: dict[str, str], server: ApiServer, api_key: str) -> Any:
    """`reelflow ...` in a subprocess, pointed at the server; its local database is a different, empty one."""
    env = dict(worker_env, REELFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/cli-local.db", REELFLOW_API_KEY=api_key)
    env.pop("REELFLOW_SERVER", None)

    def run(*args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env={**env, **overrides}, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    return run


def write_plan(tmp_path: Path, plan: dict[str, Any], name: str = "plan.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def test_cli_server_run_status_events_and_exit_codes(cli: Any, server: ApiServer, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, TWO_JOBS)
    accepted = cli("run", plan, "--server", server.url, "--json")
    assert accepted.returncode == 0, accepted.stderr
    body = json.loads(accepted.stdout)
    assert body["status"] in ("queued", "running") and set(body) == {"id", "status"}
    assert server.query("SELECT status FROM executions WHERE id = ?", body["id"])  # on the server's database

    done = cli("status", body["id"], "--wait", "--json", REELFLOW_SERVER=server.url)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["id"] == body["id"] and state["status"] == "succeeded"
    assert [j["status"] for j in state["jobs"]] == ["succeeded", "succeeded"]

    text = cli("status", body["id"], "--server", server.url)
    assert text.returncode == 0 and f"execution {body['id']} succeeded" in text.stdout

    events = cli("events", body["id"], "--server", server.url)
    assert events.returncode == 0, events.stderr
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert lines[0]["type"] == "execution.created" and lines[-1]["type"] == "execution.succeeded"
    assert set(lines[0]) == {"seq", "type", "job", "data", "created_at"}
    listed = cli("list", "--json", "--server", server.url)
    assert listed.returncode == 0 and body["id"] in [r["id"] for r in json.loads(listed.stdout)]
    assert all(datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")) for e in lines)  # ISO, whatever the API

    failing = write_plan(tmp_path, {"type": "generate-video", "model": "sim/video", "params": {"fail": "permanent"}},
                         "fail.yaml")
    failed = cli("run", failing, "--wait", "--json", "--server", server.url)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["status"] == "failed"

    waited = cli("run", plan, "--wait", "--server", server.url)
    assert waited.returncode == 0, waited.stderr
    assert "succeeded" in waited.stdout and "https://sim.invalid/outputs/" in waited.stdout


def test_cli_server_cancel_resume_retry(cli: Any, server: ApiServer, tmp_path: Path) -> None:
    slow = write_plan(tmp_path, {"type": "generate-video", "model": "sim/video", "params": {"latency_s": 30}})
    eid = json.loads(cli("run", slow, "--server", server.url, "--json").stdout)["id"]
    canceled = cli("cancel", eid, "--server", server.url, "--json")
    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["id"] == eid
    final = cli("status", eid, "--wait", "--json", "--server", server.url)
    assert final.returncode == 1  # canceled is not success
    assert json.loads(final.stdout)["status"] == "canceled"

    again = cli("cancel", eid, "--server", server.url)
    assert again.returncode == 1
    assert "refused:" in again.stderr and "nothing to cancel" in again.stderr and "Traceback" not in again.stderr

    retried = cli("retry", eid, "--server", server.url, "--json")
    assert retried.returncode == 0, retried.stderr
    new = json.loads(retried.stdout)
    assert new["retry_of"] == eid and new["id"] != eid
    assert cli("cancel", new["id"], "--server", server.url).returncode == 0

    resumed = cli("resume", eid, "--server", server.url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] in ("queued", "running")
    assert cli("cancel", eid, "--server", server.url).returncode == 0


def test_cli_server_refusals_and_usage(cli: Any, server: ApiServer, tmp_path: Path) -> None:
    bad = write_plan(tmp_path, {"jobs": [
        {"id": "clip", "type": "generate-video", "model": "local/video", "params": {"prompt": "x", "duration": 90}},
        {"id": "b", "type": "generate-video", "model": "sim/video", "params": {"image": "$nope"}},
    ]})
    refused = cli("run", bad, "--server", server.url)
    assert refused.returncode == 1
    assert refused.stderr.startswith("refused: invalid plan (2 problems)")
    assert "jobs[0].params.duration: job 'clip': duration must be at most 60 (got 90)" in refused.stderr
    assert "jobs[1].params.image:" in refused.stderr and "Traceback" not in refused.stderr
    assert server.counts()["executions"] == 0

    missing = cli("status", "ex_unknown", "--server", server.url)
    assert missing.returncode == 1 and "refused: execution 'ex_unknown' not found" in missing.stderr

    wrong_key = cli("status", "ex_unknown", "--server", server.url, "--api-key", "rf_nope")
    assert wrong_key.returncode == 1 and "refused: invalid or revoked API key" in wrong_key.stderr

    no_key = cli("status", "ex_unknown", "--server", server.url, REELFLOW_API_KEY="")
    assert no_key.returncode == 2 and "REELFLOW_API_KEY" in no_key.stderr

    down_url = f"http://127.0.0.1:{free_port()}"
    down = cli("run", write_plan(tmp_path, TWO_JOBS, "ok.yaml"), "--server", down_url)
    assert down.returncode == 1
    assert f"cannot reach the reelflow server at {down_url}" in down.stderr and "Traceback" not in down.stderr

    assert cli("status", "ex_1", "--server", "not a url").returncode == 2


def test_cli_estimate_locally_and_on_the_server_agree(cli: Any, server: ApiServer, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"jobs": [
        {"id": "a", "type": "generate-image", "model": "sim/image", "params": {"latency_s": 2, "cost_usd": 0.25}},
        {"id": "b", "type": "generate-video", "model": "sim/video", "params": {"latency_s": 3, "cost_usd": 0.5}},
        {"id": "c", "type": "generate-video", "model": "sim/video",
         "params": {"image": "$a", "latency_s": 4, "cost_usd": 1}},
    ]})
    local = cli("estimate", plan, "--json")
    remote = cli("estimate", plan, "--json", "--server", server.url)
    assert local.returncode == 0 and remote.returncode == 0, (local.stderr, remote.stderr)
    assert json.loads(local.stdout) == json.loads(remote.stdout)
    assert json.loads(local.stdout) == {
        "jobs": [
            {"id": "a", "cost_usd": 0.25, "seconds": 2.0},
            {"id": "b", "cost_usd": 0.5, "seconds": 3.0},
            {"id": "c", "cost_usd": 1.0, "seconds": 4.0},
        ],
        "cost_usd": 1.75,
        "seconds": 6.0,  # a then c; b runs alongside
    }
    text = cli("estimate", plan)
    assert text.returncode == 0 and "total: $1.7500, about 6.0s" in text.stdout
    bad = cli("estimate", write_plan(tmp_path, {"type": "generate-video", "model": "nope/x"}, "bad.yaml"))
    assert bad.returncode == 1 and bad.stderr.startswith("refused:")
    assert server.counts()["executions"] == 0



def test_a_server_handle_has_status_events_outputs_and_estimates(client: Client) -> None:
    from reelflow import generate_audio

    steps = compose(generate_video(model="sim/video", latency_s=0.05), generate_audio(model="sim/audio"))
    estimate = steps.estimate(client=client)
    assert [j["id"] for j in estimate["jobs"]] == ["video", "audio"]
    assert estimate == steps.estimate()  # the same catalog here and on the server
    execution = client.execute(steps)
    assert execution.status in ("queued", "running")  # an attribute, read from the server
    execution.wait(timeout=30)
    assert execution.status == "succeeded" and execution.status() == "succeeded"
    assert [(o.job, o.type) for o in execution.outputs] == [("video", "generate-video"), ("audio", "generate-audio")]
    events = list(execution.events())
    assert events[-1]["type"] == "execution.succeeded"
    assert all(datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")) for e in events)
