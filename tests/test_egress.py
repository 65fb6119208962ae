"""The egress guard (issue 12): no outbound fetch reaches an address that is not public, however it is spelled,
resolved, rebound or redirected to; downloads and webhooks alike. And each provider fake's hostile outputs:
the job fails for good, nothing is stored, the internal server sees nothing, one paid create happened."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import WorkerFactory
from fakes.elevenlabs import FakeElevenLabs
from fakes.fal import FakeFal
from fakes.hostile import HostileRoutes, playlist_naming
from fakes.openai import FakeOpenAI
from fakes.replicate import FakeReplicate
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.engine.worker import Worker
from reelflow.net import (
    MAX_REDIRECTS,
    EgressGuard,
    EgressPolicy,
    UnsafeDestination,
    fetch_output,
    guarded_client,
    parse_allowed_hosts,
    refusal,
)
from reelflow.providers import catalog
from reelflow.providers.base import PermanentError, Provider, Task
from reelflow.providers.catalog import elevenlabs as catalog_elevenlabs
from reelflow.providers.catalog import fal as catalog_fal
from reelflow.providers.catalog import openai as catalog_openai
from reelflow.providers.catalog import register_model
from reelflow.providers.catalog import replicate as catalog_replicate
from reelflow.providers.elevenlabs import ElevenLabsProvider
from reelflow.providers.fal import FalProvider
from reelflow.providers.openai import OpenAIProvider
from reelflow.providers.registry import Providers
from reelflow.providers.replicate import ReplicateProvider
from reelflow.store.base import Delivery
from reelflow.webhooks import WebhookDispatcher

# ---------------------------------------------------------------------------------------- servers


class Server:
    """A tiny HTTP(S) server on 127.0.0.1: path -> (status, headers, body), for GET and POST; counts every
    request it receives (whatever the path)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]] | None = None) -> None:
        self.routes = routes or {}
        self.hits: Counter[str] = Counter()
        self.sni: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                server.hits[self.path] += 1
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("content-length") or 0))
                status, headers, body = server.routes.get(self.path, (200, {"content-type": "text/plain"}, b"secret"))
                self.send_response(status)
                for name, value in {"content-length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def total(self) -> int:
        return sum(self.hits.values())

    def tls(self, cert: Path, key: Path) -> Server:
        """Serve HTTPS with this certificate, recording the name each client asked for (SNI)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)  # type: ignore[assignment,misc]
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.port}"
        return self

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def internal() -> Iterator[Server]:
    """The internal service nothing may reach: answers every request with a secret (and counts it)."""
    with Server({"/secret": (200, {"content-type": "application/json"}, b'{"secret": "s3cr3t"}')}) as server:
        yield server


MP4_TYPE = {"content-type": "video/mp4"}


@pytest.fixture
def origin(internal: Server) -> Iterator[Server]:
    """An allowed origin (tests put its host:port in allowed_hosts): serves a small file, redirects to the
    internal server, and a chain of redirects /chain/N -> /chain/N-1 -> ... -> /chain/0 (the file)."""
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {
        "/clip.mp4": (200, MP4_TYPE, b"\x00\x00\x00\x18ftypmp42"),
        "/hook": (200, {"content-type": "application/json"}, b"{}"),
        "/chain/0": (200, MP4_TYPE, b"\x00\x00\x00\x18ftypmp42"),
        "/to-internal": (302, {"location": f"{internal.base}/secret"}, b""),
        "/to-file": (302, {"location": "file:///etc/passwd"}, b""),
        "/to-private-name": (302, {"location": "http://private.example/secret"}, b""),
    }
    for n in range(1, 6):
        routes[f"/chain/{n}"] = (302, {"location": f"/chain/{n - 1}"}, b"")
    with Server(routes) as server:
        yield server


class FakeDNS:
    """A resolver with scripted answers: name -> the answer of each successive lookup (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        script = self.answers.get(host)
        if script is None:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return script[min(self.calls.count(host), len(script)) - 1]


class RecordingNetwork(httpcore.AsyncNetworkBackend):
    """The network under the guard, for tests: records where each connection was asked to go, and makes it
    to a local server instead (so a public address in a test costs no real network)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connects: list[tuple[str, int]] = []
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        return await self.real.connect_tcp("127.0.0.1", self.port, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


# ---------------------------------------------------------------------------------------- the table

REFUSED_SPELLINGS = [
    "http://127.0.0.1:{port}/secret",
    "http://2130706433:{port}/secret",  # decimal
    "http://0x7f.1:{port}/secret",  # hex
    "http://0x7f000001:{port}/secret",
    "http://0177.1:{port}/secret",  # octal
    "http://017700000001:{port}/secret",
    "http://127.1:{port}/secret",
    "http://127.0.0.1.:{port}/secret",
    "http://0:{port}/secret",
    "http://[::]:{port}/secret",
    "http://[::1]:{port}/secret",
    "http://[0:0:0:0:0:0:0:1]:{port}/secret",
    "http://[::ffff:127.0.0.1]:{port}/secret",  # IPv4-mapped
    "http://[::ffff:7f00:1]:{port}/secret",
    "http://[64:ff9b::7f00:1]:{port}/secret",  # NAT64
    "http://[64:ff9b:1::a00:1]:{port}/secret",  # local-use NAT64
    "http://[2002:7f00:1::]:{port}/secret",  # 6to4
    "http://[2001:0:5db8:d822::80ff:fffe]:{port}/secret",  # Teredo, client 127.0.0.1
    "http://[fe80::1]:{port}/secret",
    "http://[fd00::1]:{port}/secret",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1:{port}/secret",  # CGNAT
    "http://10.0.0.1:{port}/secret",
    "http://172.16.0.1:{port}/secret",
    "http://192.168.1.1:{port}/secret",
    "http://224.0.0.1:{port}/secret",
    "http://240.0.0.1:{port}/secret",
    "http://255.255.255.255:{port}/secret",
    "http://localhost:{port}/secret",
    "http://LOCALHOST.:{port}/secret",
    "http://api.localhost:{port}/secret",
]
PRIVATE_NAMES = {  # what the test DNS answers for names that must be refused
    "private.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "loopback6.example": ["::1"],
    "mapped.example": ["::ffff:192.168.0.1"],
    "cgnat.example": ["100.64.1.1"],
    "mixed.example": ["93.184.216.34", "192.168.0.5"],  # one private answer among public ones is enough
    "mixed6.example": ["2606:4700::1111", "fd00::5"],
}
REFUSED = REFUSED_SPELLINGS + [f"http://{name}:{{port}}/secret" for name in PRIVATE_NAMES]


def private_dns() -> FakeDNS:
    return FakeDNS({name: [answer] for name, answer in PRIVATE_NAMES.items()})


@pytest.mark.parametrize("spelling", REFUSED)
async def test_a_download_is_refused_before_any_connection(spelling: str, internal: Server, tmp_path: Path) -> None:
    url = spelling.format(port=internal.port)
    dns, network = private_dns(), RecordingNetwork(internal.port)
    async with guarded_client(EgressGuard(EgressPolicy(), resolver=dns, network=network)) as client:
        with pytest.raises(PermanentError) as refused:
            await fetch_output(client, url, tmp_path / "out")
    assert refused.value.message == f"refused: {url} is not a public address"
    assert network.connects == [] and internal.total == 0
    assert len(dns.calls) <= 1
    assert not list(tmp_path.glob("out*"))


@pytest.mark.parametrize("spelling", REFUSED)
async def test_a_webhook_is_refused_before_any_connection(spelling: str, internal: Server) -> None:
    url = spelling.format(port=internal.port)
    dns, network = private_dns(), RecordingNetwork(internal.port)
    dispatcher = dispatcher_with(EgressGuard(EgressPolicy(), resolver=dns, network=network))
    async with dispatcher.make_client() as client:
        result = await dispatcher.attempt(delivery(url), client)
        with pytest.raises(UnsafeDestination):  # the dispatcher's client refuses at connect time on its own
            await client.post(url, content=b"{}")
    assert not result.delivered and result.give_up and result.status_code is None
    assert (result.error or "").startswith("not sent: ") and "is not allowed: " in (result.error or "")
    assert network.connects == [] and internal.total == 0


def dispatcher_with(egress: EgressGuard, **settings: Any) -> WebhookDispatcher:
    settings.setdefault("link_secret", "egress-test")  # no store here to keep the link secret in
    settings_ = Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    return WebhookDispatcher(cast(Any, None), owner="egress-test", settings=settings_, egress=egress)


def delivery(url: str) -> Delivery:
    return Delivery(
        id="msg_1",
        execution_id="ex_1",
        tenant="default",
        url=url,
        event_type="execution.succeeded",
        payload='{"type": "execution.succeeded"}',
        attempts=0,
        created_at=time.time(),
        secret="whsec_" + "A" * 32,
    )


def test_the_refusal_names_why_for_webhooks_and_operators() -> None:
    message = str(UnsafeDestination("10.1.2.3 is a private address", "http://10.1.2.3/"))
    assert message == "'http://10.1.2.3/' is not allowed: 10.1.2.3 is a private address"
    long = "http://10.0.0.1/" + "a" * 500
    assert refusal(long) == f"refused: {long[:200]}… is not a public address"  # what a job's error says


# ---------------------------------------------------------------------------------------- rebinding, pinning

REBINDING = {"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]}
"""Public at the first lookup, loopback at the second: a check-then-connect guard would be fooled."""


async def test_a_download_looks_up_once_and_connects_to_the_address_it_judged(origin: Server, tmp_path: Path) -> None:
    dns, network = FakeDNS(REBINDING), RecordingNetwork(origin.port)
    url = f"http://rebind.example:{origin.port}/clip.mp4"
    async with guarded_client(EgressGuard(EgressPolicy(), resolver=dns, network=network)) as client:
        path, ctype = await fetch_output(client, url, tmp_path / "out")
    assert ctype == "video/mp4" and path.read_bytes().startswith(b"\x00\x00\x00\x18ftyp")
    assert dns.calls == ["rebind.example"]
    assert network.connects == [("93.184.216.34", origin.port)]


async def test_a_webhook_looks_up_once_and_connects_to_the_address_it_judged(origin: Server) -> None:
    dns, network = FakeDNS(REBINDING), RecordingNetwork(origin.port)
    dispatcher = dispatcher_with(EgressGuard(EgressPolicy(), resolver=dns, network=network))
    async with dispatcher.make_client() as client:
        result = await dispatcher.attempt(delivery(f"http://rebind.example:{origin.port}/hook"), client)
    assert result.delivered and result.status_code == 200, result.error
    assert dns.calls == ["rebind.example"]
    assert network.connects == [("93.184.216.34", origin.port)]
    assert origin.hits["/hook"] == 1


async def test_every_public_address_is_tried_in_turn_and_none_other(origin: Server, tmp_path: Path) -> None:
    class FirstFails(RecordingNetwork):
        async def connect_tcp(self, host: str, port: int, **kw: Any) -> httpcore.AsyncNetworkStream:
            if not self.connects:
                self.connects.append((host, port))
                raise httpcore.ConnectError("unreachable")
            return await super().connect_tcp(host, port, **kw)

    dns = FakeDNS({"two.example": [["2606:4700::1111", "93.184.216.34"]]})
    network = FirstFails(origin.port)
    async with guarded_client(EgressGuard(EgressPolicy(), resolver=dns, network=network)) as client:
        await fetch_output(client, f"http://two.example:{origin.port}/clip.mp4", tmp_path / "out")
    assert network.connects == [("2606:4700::1111", origin.port), ("93.184.216.34", origin.port)]


async def test_an_unresolvable_name_is_a_transient_failure_that_connects_nowhere(tmp_path: Path) -> None:
    from reelflow.providers.base import TransientError

    dns, network = FakeDNS({}), RecordingNetwork(9)
    async with guarded_client(EgressGuard(EgressPolicy(), resolver=dns, network=network)) as client:
        with pytest.raises(TransientError, match=r"cannot resolve the host of 'http://nowhere\.example/x'"):
            await fetch_output(client, "http://nowhere.example/x", tmp_path / "out")
    assert network.connects == []


def self_signed(name: str, folder: Path) -> tuple[Path, Path]:
    """A certificate for `name` (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_checks_the_certificate_against_the_host_name_not_the_address(tmp_path: Path) -> None:
    cert, key = self_signed("media.example", tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    with Server({"/clip.mp4": (200, MP4_TYPE, b"\x00\x00\x00\x18ftypmp42")}).tls(cert, key) as tls:
        dns = FakeDNS({"media.example": [["93.184.216.34"]], "other.example": [["93.184.216.35"]]})
        network = RecordingNetwork(tls.port)
        guard = EgressGuard(EgressPolicy(), resolver=dns, network=network)
        async with guarded_client(guard, verify=trust) as client:
            path, _ = await fetch_output(client, f"https://media.example:{tls.port}/clip.mp4", tmp_path / "a")
            assert path.stat().st_size == 12
            with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
                await client.get(f"https://other.example:{tls.port}/clip.mp4")  # same server, wrong name
    assert network.connects == [("93.184.216.34", tls.port), ("93.184.216.35", tls.port)]
    assert tls.sni[:2] == ["media.example", "other.example"]


# ---------------------------------------------------------------------------------------- redirects


def allowing(server: Server, **extra: Any) -> Settings:
    return Settings(_env_file=None, allowed_hosts=f"127.0.0.1:{server.port}", **extra)  # type: ignore[call-arg]


async def test_a_redirect_to_a_private_address_is_refused_at_the_hop(
    origin: Server, internal: Server, tmp_path: Path
) -> None:
    async with guarded_client(allowing(origin)) as client:
        with pytest.raises(PermanentError) as refused:
            await fetch_output(client, f"{origin.base}/to-internal", tmp_path / "a")
    assert refused.value.message == f"refused: {internal.base}/secret is not a public address"
    assert origin.hits["/to-internal"] == 1 and internal.total == 0


async def test_a_redirect_to_a_name_that_resolves_privately_is_refused(origin: Server, tmp_path: Path) -> None:
    dns, network = private_dns(), RecordingNetwork(origin.port)
    guard = EgressGuard(EgressPolicy.from_settings(allowing(origin)), resolver=dns, network=network)
    async with guarded_client(guard) as client:
        with pytest.raises(PermanentError) as refused:
            await fetch_output(client, f"{origin.base}/to-private-name", tmp_path / "a")
    assert refused.value.message == "refused: http://private.example/secret is not a public address"
    assert network.connects == [("127.0.0.1", origin.port)]  # the allowed origin, by its name; nothing else
    assert dns.calls == ["private.example"]


async def test_at_most_three_redirects_are_followed(origin: Server, tmp_path: Path) -> None:
    assert MAX_REDIRECTS == 3
    async with guarded_client(allowing(origin), max_redirects=20) as client:  # never more than 3
        path, _ = await fetch_output(client, f"{origin.base}/chain/3", tmp_path / "a")
        assert path.exists()
        with pytest.raises(PermanentError, match=r"more than 3 redirects from http://127\.0\.0\.1:\d+/chain/4$"):
            await fetch_output(client, f"{origin.base}/chain/4", tmp_path / "b")
        with pytest.raises(PermanentError, match="redirects to a URL that is not http"):
            await fetch_output(client, f"{origin.base}/to-file", tmp_path / "c")
    assert origin.hits["/chain/0"] == 1 and origin.hits["/chain/1"] == 2 and "/chain/5" not in origin.hits


@pytest.mark.parametrize("path", ["/to-internal", "/chain/4", "/to-private-name"])
async def test_a_webhook_follows_no_redirect_at_all(path: str, origin: Server, internal: Server) -> None:
    dispatcher = dispatcher_with(EgressGuard(EgressPolicy.from_settings(allowing(origin)), resolver=private_dns()))
    async with dispatcher.make_client() as client:
        result = await dispatcher.attempt(delivery(f"{origin.base}{path}"), client)
    assert not result.delivered and result.status_code == 302
    assert "not followed" in (result.error or "")
    assert origin.total == 1 and internal.total == 0


# ---------------------------------------------------------------------------------------- what is allowed


async def get_status(egress: Settings | EgressPolicy, url: str) -> int | str:
    async with guarded_client(egress) as client:
        try:
            return (await client.get(url)).status_code
        except UnsafeDestination as exc:
            return f"refused: {exc.reason}"


async def test_allowed_hosts_match_exactly_host_or_host_and_port(origin: Server, internal: Server) -> None:
    secret = f"{internal.base}/secret"
    assert await get_status(allowing(origin), f"{origin.base}/clip.mp4") == 200
    assert str(await get_status(allowing(origin), secret)).startswith("refused: 127.0.0.1 is a loopback address")
    any_port = Settings(_env_file=None, allowed_hosts="127.0.0.1")  # type: ignore[call-arg]
    assert await get_status(any_port, secret) == 200
    assert internal.total == 1
    by_name = Settings(_env_file=None, allowed_hosts=f"localhost:{internal.port}, 127.0.0.2")  # type: ignore[call-arg]
    assert str(await get_status(by_name, secret)).startswith("refused: ")  # localhost is not 127.0.0.1
    assert str(await get_status(by_name, f"http://2130706433:{internal.port}/secret")).startswith("refused: ")
    assert internal.total == 1


async def test_the_allow_private_switch_turns_the_guard_off(internal: Server) -> None:
    assert await get_status(Settings(_env_file=None, allow_private_urls=True), f"{internal.base}/secret") == 200  # type: ignore[call-arg]
    assert await get_status(EgressPolicy(allow_private=True), f"http://2130706433:{internal.port}/x") == 200
    assert internal.total == 2


async def test_a_proxy_in_the_environment_cannot_carry_a_fetch_past_the_guard(
    origin: Server, internal: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, origin.base)  # an allowed host as the proxy
    assert str(await get_status(allowing(origin), f"{internal.base}/secret")).startswith("refused: ")
    assert origin.total == 0 and internal.total == 0


def test_allowed_hosts_are_parsed_strictly() -> None:
    assert parse_allowed_hosts(" minio:9000, CDN.example ,[::1]:8080,,") == {
        ("minio", 9000),
        ("cdn.example", None),
        ("::1", 8080),
    }
    for bad, says in [
        ("http://minio:9000", "is not a host or host:port"),
        ("minio:0", "between 1 and 65535"),
        ("minio:99999", "between 1 and 65535"),
        ("::1", "in brackets"),
        ("[1:2:3]:80", "is not an IPv6 address"),
        ("[not-v6]:80", "is not a host or host:port"),
        ("a b", "is not a host or host:port"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_allowed_hosts(bad)
    from reelflow.config import describe_settings_error

    with pytest.raises(Exception) as bad_setting:
        Settings(_env_file=None, allowed_hosts="minio:0")  # type: ignore[call-arg]
    message = describe_settings_error(bad_setting.value)  # type: ignore[arg-type]
    assert "REELFLOW_ALLOWED_HOSTS='minio:0'" in message and "between 1 and 65535" in message


def test_a_provider_base_url_is_allowed_with_its_port_only(settings: Settings) -> None:
    fal = FalProvider("k", "http://10.0.0.5:8080")
    replicate = ReplicateProvider("t", "https://replicate.internal/v1")
    worker = Worker(cast(Any, None), settings=settings, providers=Providers({"fal": fal, "replicate": replicate}))
    policy = worker.egress.policy
    assert policy.allows("10.0.0.5", 8080) and not policy.allows("10.0.0.5", 8081)
    assert policy.allows("replicate.internal", 443) and not policy.allows("replicate.internal", 80)
    assert not policy.allows("127.0.0.1", 8080)
    worker._share_egress()  # at run(): providers fetching on their own judge by the worker's policy
    assert fal.egress == replicate.egress == policy
    assert EgressPolicy.from_environment({"REELFLOW_ALLOWED_HOSTS": "minio:9000"}, trusted=[fal.base_url]).allowed == {
        ("minio", 9000),
        ("10.0.0.5", 8080),
    }
    assert EgressPolicy.from_environment({"REELFLOW_ALLOW_PRIVATE_URLS": "1"}).allow_private


# ---------------------------------------------------------------------------------------- a provider's own fetches


async def test_an_input_openai_downloads_goes_through_the_guard(
    origin: Server, internal: Server, tmp_path: Path
) -> None:
    """OpenAI reads the audio to transcribe as a file: fetched by us, through the guard, redirects judged again."""
    with FakeOpenAI() as oai:
        provider = OpenAIProvider(oai.key, oai.base_url)
        provider.egress = EgressPolicy.from_settings(allowing(origin))  # as the worker hands it over

        async def transcribe(audio: str) -> str:
            task = Task("ex1", "words", "transcribe", "openai/whisper-1", {"audio": audio}, 1, tmp_path)
            with pytest.raises(PermanentError) as refused:
                await provider.wait(task, await provider.submit(task), lambda update: None)
            return refused.value.message

        assert await transcribe(f"{origin.base}/to-internal") == (
            f"openai: fetching 'audio': refused: {internal.base}/secret is not a public address"
        )
        assert (await transcribe(f"{internal.base}/secret")).startswith(
            "openai: fetching 'audio': 'http://127.0.0.1:"  # a literal address: the URL itself says what it is
        )
        await provider.aclose()
        assert oai.creates == 0 and internal.total == 0 and origin.hits["/to-internal"] == 1


async def test_fal_fetches_its_jwks_through_the_guard(origin: Server, internal: Server) -> None:
    """The configured JWKS host is allowed (operator configuration); a redirect from it elsewhere is judged."""
    provider = FalProvider("k", "https://queue.fal.example", jwks_url=f"{origin.base}/to-internal")
    assert provider.egress_policy(provider.jwks_url).allows("127.0.0.1", origin.port)
    await provider._fetch_jwks(0.0)
    assert provider._jwks_keys == [] and provider._jwks_fetched_at is None
    assert origin.hits["/to-internal"] == 1 and internal.total == 0
    await provider.aclose()


# ---------------------------------------------------------------------------------------- hostile provider outputs


@dataclass
class Hostile:
    """One provider fake, ready to answer a job with whatever output a test names."""

    job: dict[str, Any]
    providers: dict[str, Provider]
    origin: str
    """The fake's own origin: its configured base URL's host:port, allowed."""
    routes: HostileRoutes
    output: Callable[[str], None]
    """Make the job's output this URL."""
    creates: Callable[[], int]
    """Paid creates the fake has seen."""
    media: tuple[str, str, bytes]
    """A real output of the job's kind: (file name, content type, bytes)."""
    fake: Any


@contextlib.asynccontextmanager
async def replicate_fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hostile]:
    with FakeReplicate(latency_s=0.1, queue_s=0.0) as fake:
        monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
        provider = ReplicateProvider(fake.token, fake.base_url, poll_initial_s=0.05, poll_max_s=0.1)
        job = {"type": "generate-video", "model": "replicate/bytedance/seedance-1-pro", "params": {"prompt": "p"}}
        yield Hostile(
            job, {"replicate": provider}, fake.origin, fake.hostile,
            lambda url: setattr(fake, "output_override", url), lambda: fake.creates,
            ("clip.mp4", "video/mp4", fake.media["mp4"]), fake,
        )  # fmt: skip
        await provider.aclose()


@contextlib.asynccontextmanager
async def fal_fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hostile]:
    with FakeFal(latency_s=0.1) as fake:
        monkeypatch.setenv("FAL_KEY", fake.key)
        provider = FalProvider(fake.key, fake.base_url, poll_initial_s=0.05, poll_max_s=0.1)
        params = {"prompt": "pan", "image": "https://example.com/a.png", "duration": 5, "resolution": "720p"}
        job = {
            "type": "generate-video",
            "model": "fal/fal-ai/bytedance/seedance/v1/pro/image-to-video",
            "params": params,
        }
        yield Hostile(
            job, {"fal": provider}, fake.base_url, fake.hostile,
            lambda url: setattr(fake, "output_url", url), lambda: fake.count("submit"),
            ("clip.mp4", "video/mp4", fake.media["video.mp4"]), fake,
        )  # fmt: skip
        await provider.aclose()


@contextlib.asynccontextmanager
async def openai_fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hostile]:
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", fake.key)
        provider = OpenAIProvider(fake.key, fake.base_url)
        job = {"type": "generate-image", "model": "openai/gpt-image-1", "params": {"prompt": "a fox", "quality": "low"}}
        yield Hostile(
            job, {"openai": provider}, fake.runner.url, fake.hostile,
            lambda url: setattr(fake, "image_url", url), lambda: fake.count("images"),
            ("still.png", "image/png", fake.media["png"]), fake,
        )  # fmt: skip
        await provider.aclose()


@contextlib.asynccontextmanager
async def elevenlabs_fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hostile]:
    with FakeElevenLabs() as fake:
        monkeypatch.setenv("ELEVENLABS_API_KEY", fake.key)
        provider = ElevenLabsProvider(fake.key, fake.base_url)
        job = {
            "type": "generate-audio",
            "model": "elevenlabs/eleven_multilingual_v2",
            "params": {"text": "Hello there.", "voice": "Adam"},
        }

        def output(url: str) -> None:  # ElevenLabs answers the audio itself: a URL can only come as a redirect
            fake.speech_redirect = url

        yield Hostile(
            job, {"elevenlabs": provider}, fake.runner.url, HostileRoutes(), output, lambda: fake.count("tts"),
            ("speech.mp3", "audio/mpeg", fake.audio), fake,
        )  # fmt: skip
        await provider.aclose()


FAKES = {"replicate": replicate_fake, "fal": fal_fake, "openai": openai_fake, "elevenlabs": elevenlabs_fake}


@pytest.fixture
def provider_catalogs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider's models in the catalog for this test only (a copy of the table, restored afterwards)."""
    monkeypatch.setattr(catalog.registry, "_DEFAULT", catalog.default_catalog().copy())
    for module in (catalog_replicate, catalog_fal, catalog_openai, catalog_elevenlabs):
        for model in module.MODELS:
            register_model(model, replace=True)


async def run_hostile(
    engine: Engine, running_worker: WorkerFactory, fake: Hostile, *, timeout: float = 30
) -> dict[str, Any]:
    eid = await engine.submit({"jobs": [{"id": "out", "max_attempts": 3, **fake.job}]})
    async with running_worker(providers_=fake.providers):
        state = await engine.wait(eid, timeout=timeout)
    [job] = state["jobs"]
    return cast(dict[str, Any], job)


def stored_files(settings: Settings) -> list[Path]:
    root = Path(settings.storage_url.removeprefix("file://"))
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_refused_for_good(job: dict[str, Any], settings: Settings, fake: Hostile, internal: Server) -> None:
    assert job["status"] == "failed", job
    assert job["attempts"] == 1, "a refused output must not be retried: a retry pays the provider again"
    assert job.get("result") is None
    assert stored_files(settings) == []
    assert internal.total == 0, internal.hits
    assert fake.creates() == 1
    assert "s3cr3t" not in (job["error"] or "")


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_a_provider_output_at_the_fakes_own_origin_is_stored(
    provider: str,
    engine: Engine,
    running_worker: WorkerFactory,
    settings: Settings,
    provider_catalogs: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control for the hostile cases below: the same jobs, given real media, succeed."""
    async with FAKES[provider](monkeypatch) as fake:
        name, ctype, body = fake.media
        if provider != "elevenlabs":
            fake.routes.serve(name, body, ctype)
            fake.output(f"{fake.origin}/hostile/{name}")
        job = await run_hostile(engine, running_worker, fake)
    assert job["status"] == "succeeded", job
    assert Path(job["result"]["path"]).read_bytes() == body
    assert fake.creates() == 1


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_a_private_output_url_fails_the_job_for_good(
    provider: str,
    engine: Engine,
    running_worker: WorkerFactory,
    settings: Settings,
    internal: Server,
    provider_catalogs: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"{internal.base}/secret"
    async with FAKES[provider](monkeypatch) as fake:
        if provider == "elevenlabs":  # no output URL exists there: the "audio" is a playlist naming the service
            fake.fake.audio_override = playlist_naming(secret)
        else:
            fake.output(secret)
        job = await run_hostile(engine, running_worker, fake)
    assert_refused_for_good(job, settings, fake, internal)
    if provider != "elevenlabs":
        assert job["error"] == f"refused: {secret} is not a public address"


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_a_redirect_from_the_providers_origin_to_a_private_address_fails_the_job_for_good(
    provider: str,
    engine: Engine,
    running_worker: WorkerFactory,
    settings: Settings,
    internal: Server,
    provider_catalogs: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"{internal.base}/secret"
    async with FAKES[provider](monkeypatch) as fake:
        if provider == "elevenlabs":  # the speech call itself answers 302: never followed
            fake.output(secret)
        else:
            fake.routes.redirect("moved.mp4", secret)
            fake.output(f"{fake.origin}/hostile/moved.mp4")
        job = await run_hostile(engine, running_worker, fake)
    assert_refused_for_good(job, settings, fake, internal)
    if provider == "elevenlabs":
        assert "HTTP 302" in job["error"]
    else:
        assert job["error"] == f"refused: {secret} is not a public address"
        assert fake.routes.hits["moved.mp4"] == 1


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_a_playlist_naming_a_local_file_is_not_stored(
    provider: str,
    engine: Engine,
    running_worker: WorkerFactory,
    settings: Settings,
    internal: Server,
    provider_catalogs: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FAKES[provider](monkeypatch) as fake:
        name, _, body = fake.media
        secret = tmp_path / "elsewhere" / f"secret{Path(name).suffix}"
        secret.parent.mkdir()
        secret.write_bytes(body)  # real media of the job's kind: only the playlist can bring it in
        playlist = playlist_naming(f"file://{secret}")
        if provider == "elevenlabs":  # the audio answered is the playlist
            fake.fake.audio_override = playlist
        else:  # an HLS playlist declared as audio (which the content-type check lets through)
            fake.routes.serve("clip.m3u8", playlist, "audio/x-mpegurl")
            fake.output(f"{fake.origin}/hostile/clip.m3u8")
        job = await run_hostile(engine, running_worker, fake)
    assert_refused_for_good(job, settings, fake, internal)


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_text_where_media_is_expected_is_not_stored(
    provider: str,
    engine: Engine,
    running_worker: WorkerFactory,
    settings: Settings,
    internal: Server,
    provider_catalogs: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = b'{"secret": "s3cr3t", "note": "an internal answer, relayed"}'
    async with FAKES[provider](monkeypatch) as fake:
        if provider == "elevenlabs":
            fake.fake.audio_override = text
        else:  # `.json` and octet-stream: today's worker stores such outputs without a media probe
            fake.routes.serve("result.json", text, "application/octet-stream")
            fake.output(f"{fake.origin}/hostile/result.json")
        job = await run_hostile(engine, running_worker, fake)
    assert_refused_for_good(job, settings, fake, internal)
