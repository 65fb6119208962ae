"""HTTP hygiene of `reelflow serve`: slow clients are closed, connections are bounded, an oversized or
malformed request is answered problem+json without a reset, an aborted upload is
not an error, bodies are JSON only, `OPTIONS` tells every method, an event stream stops writing when its
client is gone, `/metrics` can be private, and a configuration that goes bad answers 503, never 500.

The slow-client and connection tests run a real `reelflow serve` process (the protocol it runs under is
what they test) with a 1 s read deadline; the others run the app in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from apiserver import ApiServer
from conftest import WorkerFactory, sim_job
from reelflow.api.app import create_app
from reelflow.api.server import guarded_protocol
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.keys import create_key
from reelflow.limits import reset_limits
from reelflow.store.sqlite import SQLiteStore

CLI = [sys.executable, "-m", "reelflow.cli"]
READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ a real `reelflow serve`


@dataclass
class Served:
    url: str
    port: int
    key: str
    log: Path

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def wait_for_log(self, needle: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in self.log_entries() if needle in e["message"]]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serve")
    env = dict(os.environ) | {
        "REELFLOW_DATABASE_URL": f"sqlite:///{root}/reelflow.db",
        "REELFLOW_STORAGE_URL": f"file://{root}/artifacts",
        "REELFLOW_POLL_INTERVAL_S": "0.05",
        "REELFLOW_HTTP_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "REELFLOW_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "REELFLOW_LOG_FORMAT": "json",
        "REELFLOW_LOG_LEVEL": "INFO",
    }
    made = subprocess.run([*CLI, "keys", "create", "--tenant", "acme", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = root / "serve.log"
    with log.open("w") as errlog:
        proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=errlog)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Served(url, port, json.loads(made.stdout)["api_key"], log)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    errors = [e for e in Served(url, port, "", log).log_entries() if e["level"] in ("ERROR", "CRITICAL")]
    assert not errors, errors


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when (seconds from now)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit_s} s; it sent {data[:200]!r}")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def trickle(sock: socket.socket, data: bytes, every_s: float, stop_s: float) -> tuple[bytes, float]:
    """Send `data` one byte every `every_s` until the server closes the connection; what it answered, and
    after how long. Fails if the connection is still open after `stop_s`."""
    started = time.monotonic()
    sock.settimeout(every_s)
    answer = b""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            chunk = None
        except ConnectionResetError:
            break
        if chunk == b"":
            break
        if chunk:
            answer += chunk
        assert time.monotonic() - started < stop_s, f"still open after {stop_s} s"
    else:
        pytest.fail("the whole request was sent: trickle more bytes")
    return answer, time.monotonic() - started


def test_a_client_trickling_its_headers_is_answered_408_and_closed(served: Served) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 500 + b"\r\n\r\n"
    with served.connect() as sock:
        answer, elapsed = trickle(sock, request, every_s=0.05, stop_s=READ_TIMEOUT_S + 2)
    assert READ_TIMEOUT_S - 0.1 <= elapsed < READ_TIMEOUT_S + 1.0, elapsed
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert served.wait_for_log("no whole request within 1 s")


def test_a_client_trickling_its_body_is_answered_408_and_closed(served: Served) -> None:
    body = json.dumps({"jobs": [sim_job("a")], "metadata": {"pad": "x" * 400}}).encode()
    head = (
        f"POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with served.connect() as sock:
        sock.sendall(head)  # the headers at once: the body is what trickles
        answer, elapsed = trickle(sock, body, every_s=0.05, stop_s=READ_TIMEOUT_S + 2)
    assert elapsed < READ_TIMEOUT_S + 1.0, elapsed
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.key}"}) as http:
        assert http.get("/v1/executions").json()["data"] == []  # nothing was stored


def test_an_idle_connection_is_closed_and_a_patient_keep_alive_client_is_not(served: Served) -> None:
    with served.connect() as sock:  # connects, sends nothing
        answer, elapsed = read_until_closed(sock, READ_TIMEOUT_S + 3)
    assert READ_TIMEOUT_S - 0.1 <= elapsed < READ_TIMEOUT_S + 1.0
    assert answer.startswith(b"HTTP/1.1 408")

    # three requests on one connection, 0.6 s apart: 1.8 s in all, longer than the read deadline, but each
    # request arrives whole within it
    with served.connect() as sock:
        sock.settimeout(5)
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            time.sleep(0.6)


def test_an_event_stream_outlives_the_read_deadline(served: Served) -> None:
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.key}"}, timeout=10) as http:
        accepted = http.post("/v1/executions", json={"jobs": [sim_job("slow", latency_s=READ_TIMEOUT_S * 2.5)]})
        assert accepted.status_code == 202, accepted.text
        started = time.monotonic()
        with http.stream("GET", f"/v1/executions/{accepted.json()['id']}/events") as stream:
            text = "".join(stream.iter_text())
    assert time.monotonic() - started >= READ_TIMEOUT_S * 2
    assert "event: execution.succeeded" in text


def test_connections_beyond_the_bound_are_answered_503_at_once(served: Served) -> None:
    held = [served.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.1)  # the server has accepted them all
        started = time.monotonic()
        with served.connect() as extra:
            answer, _ = read_until_closed(extra, 2)
        assert time.monotonic() - started < 0.5
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"too many open connections" in answer
        held.pop().close()
        time.sleep(0.1)
        with served.connect() as sock:  # one slot free again
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer, _ = read_until_closed(sock, 2)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for sock in held:
            sock.close()
    assert len(served.wait_for_log("refusing connections: 6 open")) == 1


def send_in_pieces(sock: socket.socket, pieces: list[bytes], pause_s: float = 0.02) -> int:
    """Send each piece on its own (paused between, so the server reads them apart) until the server stops
    reading; how many pieces went out."""
    for sent, piece in enumerate(pieces):
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        time.sleep(pause_s)
    return len(pieces)


def answer_of(sock: socket.socket, limit_s: float = 5.0) -> tuple[int, dict[str, Any]]:
    """The status and problem+json body of the server's answer, read to the server's end of the connection.
    A reset fails the test: the client must be able to read the answer."""
    sock.settimeout(limit_s)
    data = b""
    while chunk := sock.recv(65536):  # ConnectionResetError propagates
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), data[:500]
    return int(head.split(b" ", 2)[1]), json.loads(body)


WHOLE_HEAD_END = b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("name", "pieces", "status"),
    [
        ("a path growing past 128 KiB", [b"GET /v1/executions/" + b"b" * 16_000] * 20, 414),
        (
            "headers growing past 128 KiB",
            [b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] + [b"X-Pad: " + b"p" * 16_000 + b"\r\n"] * 20,
            431,
        ),
        ("a 100 KB path in one write", [b"GET /v1/executions/" + b"b" * 100_000 + WHOLE_HEAD_END], 414),
        ("a 60 KB path in pieces, routed", [b"GET /v1/executions/", *[b"b" * 15_000] * 4, WHOLE_HEAD_END], 401),
        ("a malformed request line", [b"GET\x00 / HTTP/1.1\r\n\r\n"], 400),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_an_oversized_or_malformed_request_is_answered_problem_json_and_never_reset(
    served: Served, name: str, pieces: list[bytes], status: int
) -> None:
    """However the bytes of a request too big to read are split on the way, the answer is the same, and the
    client reads it even while it is still sending: the server drops the rest instead of resetting."""
    with served.connect() as sock:
        send_in_pieces(sock, pieces)
        code, problem = answer_of(sock)
    assert code == status and problem["status"] == status, (code, problem)
    assert problem["detail"], problem
    with httpx.Client(base_url=served.url) as http:  # the server is unharmed
        assert http.get("/healthz").status_code == 200


def test_an_aborted_upload_is_one_info_line_without_a_traceback(served: Served) -> None:
    body = json.dumps({"jobs": [sim_job("a")]}).encode()
    with served.connect() as sock:
        sock.sendall(
            f"POST /v1/estimate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n".encode() + body
        )
        time.sleep(0.2)  # the handler waits for the rest of the body; the client leaves instead
    [line] = served.wait_for_log("POST /v1/estimate: the client disconnected before sending its whole request")
    assert line["level"] == "INFO" and line["logger"] == "reelflow.api" and "exc_info" not in line
    assert not [e for e in served.log_entries() if "ClientDisconnect" in json.dumps(e)]


# ------------------------------------------------------------------ in-process


@pytest.fixture
def api(settings: Settings) -> Iterator[ApiServer]:
    with ApiServer(settings, workers=1) as server:
        yield server


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client(api.new_key("acme").api_key) as client:
        yield client


def test_json_bodies_must_say_so_and_may_name_utf_8(http: httpx.Client) -> None:
    plan = json.dumps({"jobs": [sim_job("a")]})
    for media in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        assert http.post("/v1/estimate", content=plan, headers={"Content-Type": media}).status_code == 200, media
    refused = http.post("/v1/executions", content=plan, headers={"Content-Type": "text/plain"})
    assert refused.status_code == 415
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["detail"] == "the request body must be application/json (got 'text/plain')"
    assert refused.headers["accept"] == "application/json"
    assert http.get("/v1/executions").json()["data"] == []


def test_options_and_405_name_every_method_of_the_path(http: httpx.Client) -> None:
    options = http.options("/v1/executions")
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, POST, OPTIONS"
    assert http.options("/v1/executions/ex_x/cancel").headers["allow"] == "POST, OPTIONS"
    deleted = http.delete("/v1/executions")
    assert deleted.status_code == 405 and deleted.headers["allow"] == "GET, POST"
    assert http.options("/v1/nope").status_code == 404


def test_a_reference_with_a_trailing_newline_is_plain_text(http: httpx.Client, api: ApiServer) -> None:
    plan = {
        "jobs": [
            sim_job("a"),
            sim_job("b", echo="$a.sim_id\n"),  # `$` in the pattern matched before a final newline
            sim_job("c", echo="$a.sim_id"),
        ]
    }
    accepted = http.post("/v1/executions", json=plan)
    assert accepted.status_code == 202, accepted.text
    eid = accepted.json()["id"]
    deadline = time.monotonic() + 20
    while (state := http.get(f"/v1/executions/{eid}").json())["status"] != "succeeded":
        assert state["status"] in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.05)
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["b"]["depends_on"] == [] and jobs["b"]["result"]["echo"] == "$a.sim_id\n"
    assert jobs["c"]["depends_on"] == ["a"] and jobs["c"]["result"]["echo"] == jobs["a"]["result"]["sim_id"]
    # where only a URL or a reference will do, the near-reference is refused at submission
    refused = http.post(
        "/v1/executions",
        json={"jobs": [sim_job("a", model="sim/image"), {"id": "v", "type": "generate-video",
                                                          "model": "local/video",
                                                          "params": {"prompt": "x", "image": "$a\n"}}]},
    )  # fmt: skip
    assert refused.status_code == 422
    assert ["jobs", 1, "params", "image"] in [e["loc"] for e in refused.json()["errors"]]


def test_a_limits_file_gone_bad_at_run_time_answers_503_and_is_logged_once(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text("tenants:\n  default: {monthly_executions: 10}\n")
    settings.limits_file = str(limits)
    reset_limits()
    try:
        with ApiServer(settings, workers=0) as api, api.client(api.new_key("acme").api_key) as http:
            limits.write_text("tenants:\n  default: {max_cocurrent: 10}\n")
            reset_limits()  # as if the server read the file again
            caplog.set_level(logging.INFO)
            answers = [http.post("/v1/executions", json={"jobs": [sim_job("a")]}) for _ in range(3)]
            usage = http.get("/v1/usage")
    finally:
        reset_limits()
    for answer in [*answers, usage]:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert f"{limits}:2: tenants.default.max_cocurrent: unknown field" in answer.json()["detail"]
    logged = [r for r in caplog.records if "configuration problem" in r.getMessage()]
    assert len(logged) == 1 and not logged[0].exc_info
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]


def test_a_bad_limits_file_stops_the_app_before_it_serves(settings: Settings, tmp_path: Path) -> None:
    from reelflow.limits import LimitsFileError

    limits = tmp_path / "limits.yaml"
    limits.write_text("providers:\n  fal: {max_concurrent: 0}\n")
    reset_limits()
    try:
        with pytest.raises(LimitsFileError, match=r"limits\.yaml:2: providers\.fal\.max_concurrent: must be at least"):
            create_app(settings.model_copy(update={"limits_file": str(limits)}))
    finally:
        reset_limits()


# ------------------------------------------------------------------ /metrics


def test_metrics_on_a_listener_of_their_own_and_not_on_the_api_port(settings: Settings) -> None:
    port = free_port()
    private = settings.model_copy(update={"metrics_addr": f"127.0.0.1:{port}"})
    with ApiServer(private, workers=0) as api, httpx.Client(timeout=5) as http:
        assert http.get(f"{api.url}/metrics").status_code == 404
        scraped = http.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "reelflow_queue_depth" in scraped.text and "process_cpu_seconds_total" in scraped.text
        assert http.get(f"http://127.0.0.1:{port}/").status_code == 404
        assert http.post(f"http://127.0.0.1:{port}/metrics").status_code == 405
    with pytest.raises(httpx.ConnectError):  # the listener stops with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_token_on_the_api_port_and_on_the_listener(settings: Settings) -> None:
    token = "mt-" + "k" * 30
    guarded = settings.model_copy(update={"metrics_token": token})
    with ApiServer(guarded, workers=0) as api, httpx.Client(base_url=api.url, timeout=5) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
            refused = http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "reelflow_" not in refused.text
        assert "reelflow_queue_depth" in http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
    port = free_port()
    both = guarded.model_copy(update={"metrics_addr": f"127.0.0.1:{port}"})
    with ApiServer(both, workers=0), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        refused = http.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and "reelflow_" not in refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "reelflow_queue_depth" in http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).text


def test_a_bad_metrics_address_is_a_settings_error() -> None:
    from pydantic import ValidationError

    for bad in ("9100", "host:port", "127.0.0.1:70000", "::1:9100"):
        with pytest.raises(ValidationError, match="metrics_addr"):
            Settings(metrics_addr=bad, _env_file=None)  # type: ignore[call-arg]
    assert Settings(metrics_addr=" ", _env_file=None).metrics_addr is None  # type: ignore[call-arg]


# ------------------------------------------------------------------ an event stream whose client leaves


class LeavingClient(asyncio.Transport):
    """The server side of a connection whose client reads the first events, then resets it.

    Like asyncio's socket transport: the first write after the reset fails and reports the connection lost
    (the protocol hears of it on the next turn of the loop), and every write after that is dropped, counted
    here; asyncio logs "socket.send() raised exception." for each of them from the fifth on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.protocol: asyncio.Protocol | None = None
        self.received = bytearray()
        self.gone = False
        self.writes_after_loss = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.gone:
            self.writes_after_loss += 1
        elif b"event: " in self.received:  # it has read some events and left
            self.gone = True
            assert self.protocol is not None
            self.loop.call_soon(self.protocol.connection_lost, ConnectionResetError("reset by peer"))
        else:
            self.received += data

    def is_closing(self) -> bool:
        return self.gone

    def close(self) -> None:
        self.gone = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_an_event_stream_stops_writing_at_the_first_failed_send(
    engine: Engine, store: SQLiteStore, settings: Settings, running_worker: WorkerFactory
) -> None:
    eid = await engine.submit({"jobs": [sim_job(f"j{i}") for i in range(200)]})
    async with running_worker(concurrency=200):
        assert (await engine.wait(eid, timeout=60))["status"] == "succeeded"
    assert len(await store.events(eid, after=0, limit=2000)) > 600  # more than one batch of 500
    key = (await create_key(store, "default")).api_key

    app = create_app(settings, store=store, deliver_webhooks=False)
    async with app.router.lifespan_context(app):
        config = uvicorn.Config(app, lifespan="off", log_config=None)
        config.load()
        state = ServerState()
        protocol = guarded_protocol(settings)(config, state, app_state={}, _loop=asyncio.get_running_loop())
        transport = LeavingClient(asyncio.get_running_loop())
        transport.protocol = protocol
        protocol.connection_made(transport)
        protocol.data_received(
            f"GET /v1/executions/{eid}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        deadline = time.monotonic() + 10
        while state.tasks or not transport.gone:
            assert time.monotonic() < deadline, "the stream did not end"
            await asyncio.sleep(0.01)
    assert b"event: execution.created" in transport.received
    assert transport.writes_after_loss == 0


def test_a_worker_metrics_port_asks_for_the_token_too(worker_env: dict[str, str], tmp_path: Path) -> None:
    port, token = free_port(), "wt-" + "z" * 30
    env = worker_env | {"REELFLOW_METRICS_TOKEN": token}
    proc = subprocess.Popen([*CLI, "worker", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                refused = httpx.get(url, timeout=1)
                break
            except httpx.ConnectError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert refused.status_code == 401 and "reelflow_" not in refused.text
        scraped = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert scraped.status_code == 200 and "process_cpu_seconds_total" in scraped.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert token not in stderr
