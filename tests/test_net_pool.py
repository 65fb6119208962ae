"""The provider clients' pool on QuickNetwork: connections are reused, and one the server closed while idle is
noticed before it is handed out again (the check whose socket lookup QuickNetwork keeps)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import certifi
import httpcore
import httpx
import pytest

from reelflow.net import (
    EgressPolicy,
    LeanPool,
    QuickNetwork,
    QuietCookies,
    guarded_client,
    pooled_transport,
    quiet_cookies,
    verifying_context,
)

BODY = b'{"ok": true}'


class Server:
    """A tiny HTTP/1.1 server: keep-alive answers; with `close_after`, it closes each connection after that
    many answers, without saying so (no `Connection: close`)."""

    def __init__(self, close_after: int | None = None) -> None:
        self.close_after = close_after
        self.connections = 0
        self.open = 0
        self.peak = 0
        """The most connections open at once."""
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                self.requests += 1
                answered += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(BODY)}\r\n\r\n".encode()
                    + BODY
                )
                await writer.drain()
                if self.close_after is not None and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.open -= 1
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_pooled_connection_is_reused() -> None:
    server = Server()
    async with server as url:
        transport = pooled_transport(limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(5):
                response = await client.get(f"{url}/x")
                assert response.json() == {"ok": True}
    assert server.requests == 5 and server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced_not_used() -> None:
    server = Server(close_after=1)
    async with server as url:
        transport = pooled_transport(limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(4):
                response = await client.get(f"{url}/x")
                assert response.status_code == 200
                await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
    assert server.requests == 4 and server.connections == 4  # each closed one was seen readable and dropped


async def test_the_stream_answers_with_the_socket_it_looked_up_once() -> None:
    server = Server()
    async with server as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await QuickNetwork().connect_tcp("127.0.0.1", port)
        try:
            sock = stream.get_extra_info("socket")
            assert sock.getpeername() == ("127.0.0.1", port) and sock.fileno() > 0
            assert stream.get_extra_info("socket") is sock
            assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)  # others: the inner stream's
            assert stream.get_extra_info("is_readable") is False  # nothing sent, nothing to read
            await stream.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            for _ in range(50):
                if stream.get_extra_info("is_readable"):
                    break
                await asyncio.sleep(0.01)
            assert stream.get_extra_info("is_readable") is True
            assert (await stream.read(65536)).startswith(b"HTTP/1.1 200 OK")
        finally:
            await stream.aclose()


def test_clients_share_one_verifying_tls_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA bundle is loaded once per process, not once per client; SSL_CERT_FILE still counts."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    def context_of(transport: httpx.AsyncHTTPTransport) -> ssl.SSLContext:
        pool = transport._pool
        assert isinstance(pool, httpcore.AsyncConnectionPool)
        assert pool._ssl_context is not None
        return pool._ssl_context

    limits = httpx.Limits(max_connections=2)
    first, second = pooled_transport(limits=limits), pooled_transport(limits=limits)
    assert context_of(first) is context_of(second) is verifying_context()
    assert context_of(first).verify_mode == ssl.CERT_REQUIRED and context_of(first).check_hostname
    guarded = guarded_client(EgressPolicy())._transport
    assert isinstance(guarded, httpx.AsyncHTTPTransport)
    assert context_of(guarded) is verifying_context(trust_env=False)
    own = ssl.create_default_context()
    assert context_of(pooled_transport(limits=limits, verify=own)) is own  # a context given is kept

    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert context_of(pooled_transport(limits=limits)) is not context_of(first)


async def test_cookies_a_response_sets_are_kept_and_the_others_cost_no_cookie_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    real = httpx.Cookies.extract_cookies

    def counting(self: httpx.Cookies, response: httpx.Response) -> None:
        seen.append(str(response.url))
        real(self, response)

    monkeypatch.setattr(httpx.Cookies, "extract_cookies", counting)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"})
        return httpx.Response(200, json={"cookie": request.headers.get("cookie")})

    client = quiet_cookies(httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://api.test"))
    assert isinstance(client.cookies, QuietCookies)
    async with client:
        assert (await client.get("/plain")).json() == {"cookie": None}
        assert seen == []  # no Set-Cookie: the jar was not consulted
        await client.get("/login")
        assert seen == ["http://api.test/login"] and client.cookies.get("session") == "abc"
        assert (await client.get("/plain")).json() == {"cookie": "session=abc"}  # sent back as before
    assert isinstance(guarded_client(EgressPolicy()).cookies, QuietCookies)


def pool_of(transport: httpx.AsyncHTTPTransport) -> httpcore.AsyncConnectionPool:
    pool = transport._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    return pool


async def burst(client: httpx.AsyncClient, url: str, n: int) -> None:
    answers = await asyncio.gather(*(client.get(f"{url}/x") for _ in range(n)))
    assert [a.status_code for a in answers] == [200] * n


def test_provider_and_guarded_clients_pool_with_the_lean_pool() -> None:
    assert type(pool_of(pooled_transport(limits=httpx.Limits(max_connections=2)))) is LeanPool
    guarded = guarded_client(EgressPolicy())._transport
    assert isinstance(guarded, httpx.AsyncHTTPTransport) and type(pool_of(guarded)) is LeanPool


@pytest.mark.parametrize(("max_connections", "keepalive"), [(4, 4), (4, 2), (3, 1), (2, 0)])
async def test_the_lean_pool_keeps_connections_within_the_limits_as_httpcore_does(
    max_connections: int, keepalive: int
) -> None:
    """Bursts beyond `max_connections`, then quiet: every request answered, never more than `max_connections`
    open, and as many kept afterwards as httpcore's own pool keeps."""
    seen: dict[str, tuple[int, int]] = {}
    for kind in ("httpcore", "lean"):
        server = Server()
        async with server as url:
            limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive)
            transport = pooled_transport(limits=limits) if kind == "lean" else httpx.AsyncHTTPTransport(limits=limits)
            assert (type(pool_of(transport)) is LeanPool) == (kind == "lean")
            async with httpx.AsyncClient(transport=transport) as client:
                await burst(client, url, 10)
                kept = len(pool_of(transport).connections)
                await burst(client, url, 3)
                seen[kind] = (server.requests, kept)
                assert server.peak <= max_connections
    assert seen["lean"] == seen["httpcore"] == (13, min(keepalive, max_connections)), seen


class Calls:
    """How many times a patched method was called (`count_calls`)."""

    n = 0


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> Calls:
    """Count the calls of `owner.name` (a coroutine method too: its coroutine is counted when it is made)."""
    calls = Calls()
    real = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.n += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


async def test_a_burst_on_idle_connections_takes_each_connection_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection promised to a request that has not started on it yet is not handed to the next one too (which
    would find it taken, and ask the pool again): each request of a burst is sent on the first connection it gets."""
    tries = count_calls(monkeypatch, httpcore.AsyncHTTPConnection, "handle_async_request")
    server = Server()
    async with server as url:
        transport = pooled_transport(limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
        async with httpx.AsyncClient(transport=transport) as client:
            await burst(client, url, 8)
            tries.n = 0
            for _ in range(5):
                await burst(client, url, 8)
            assert tries.n == 40
            await burst(client, url, 20)  # more than the connections: the rest wait their turn
    assert server.requests == 68 and server.connections == 8 and server.peak == 8


async def test_the_lean_pool_never_hands_out_a_connection_the_server_closed_between_sweeps() -> None:
    server = Server(close_after=1)
    async with server as url:
        transport = pooled_transport(limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))
        async with httpx.AsyncClient(transport=transport) as client:
            await burst(client, url, 4)
            await asyncio.sleep(0.05)  # the server closed all four while they were idle
            for _ in range(6):  # well within one sweep: each is looked at as it is handed out
                assert (await client.get(f"{url}/x")).status_code == 200
                await asyncio.sleep(0.02)
    assert server.requests == 10 and server.connections == 10


async def test_the_lean_pool_looks_at_each_connection_a_few_times_per_request_not_once_per_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpcore counted its connections once per idle connection on every request (16 idle: 256 looks, twice a
    request); the lean pool's walk is linear in the connections."""
    looks = count_calls(monkeypatch, httpcore.AsyncHTTPConnection, "is_idle")
    server = Server()
    async with server as url:
        transport = pooled_transport(limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
        async with httpx.AsyncClient(transport=transport) as client:
            await burst(client, url, 16)
            assert len(pool_of(transport).connections) == 16
            looks.n = 0
            for _ in range(10):
                assert (await client.get(f"{url}/x")).status_code == 200
    assert server.connections == 16
    assert looks.n <= 10 * 2 * 2 * 16, looks.n  # two walks a request, at most two looks a connection in each


class _StubConnection:
    """An idle HTTP/1.1 connection as the pool sees it (no socket)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def is_closed(self) -> bool:
        return False

    def has_expired(self) -> bool:
        return False

    def is_idle(self) -> bool:
        return True

    def is_available(self) -> bool:
        return True

    def can_handle_request(self, origin: object) -> bool:
        return True


class _StubRequest:
    def __init__(self, connection: _StubConnection | None = None) -> None:
        self.connection = connection
        self.request = httpcore.Request("GET", "http://127.0.0.1:9/x")

    def assign_to_connection(self, connection: _StubConnection) -> None:
        self.connection = connection


def test_a_connection_handed_to_a_request_not_yet_started_is_neither_closed_nor_handed_again() -> None:
    """It still looks idle until its request starts on it: httpcore 1.0.9 may close it as a surplus keep-alive
    (the request then waits for its read timeout, encode/httpcore#1110) or hand it to the next request too."""
    pool = LeanPool(max_connections=4, max_keepalive_connections=1)
    promised, spare = _StubConnection("promised"), _StubConnection("spare")
    waiting, new = _StubRequest(promised), _StubRequest()
    pool._connections = [promised, spare]  # type: ignore[list-item]
    pool._requests = [waiting, new]  # type: ignore[list-item]
    closing = pool._assign_requests_to_connections()
    assert promised not in closing and promised in pool._connections  # type: ignore[comparison-overlap]
    assert waiting.connection is promised
    # two idle connections over a keep-alive bound of one: the spare one goes, and the new request gets a new one
    assert closing == [spare]  # type: ignore[comparison-overlap]
    assert new.connection is not None and new.connection not in (promised, spare)
